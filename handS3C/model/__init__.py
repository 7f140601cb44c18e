"""The full HandS3C network: :class:`HandS3C` and its parts (published parameter names)."""
from .backbone import FPNBackbone, load_torchvision_resnet50
from .hands3c import LOSS_WEIGHTS, SUPPORTED_INPUT_SIZES, HandS3C
from .heads import HandEncoder, HandRegHead, ManoRegHead, Regressor

__all__ = ["HandS3C", "LOSS_WEIGHTS", "SUPPORTED_INPUT_SIZES", "FPNBackbone", "load_torchvision_resnet50",
           "HandRegHead", "HandEncoder", "ManoRegHead", "Regressor"]
