"""Datasets for HandS3C: FreiHAND, HO3D and DexYCB readers in their real layouts, the published
augmentation, fast reduced-scale JPEG decoding, synthetic datasets in the same layouts and a small
mesh renderer.  The sample contract is documented in :mod:`handS3C.data.base`.
"""
from . import joint_orders
from .augment import AugParams, sample_augmentation
from .base import DatasetError, HandDataset
from .decode import ImageDecodeError
from .readers import DATASETS, DEFAULT_INPUT_SIZE, EVAL_SPLIT, HO3D, DexYCB, FreiHAND, build_dataset
from .synthetic import FORMATS, make_synthetic
from .synthetic_mano import write_synthetic_mano

__all__ = ["FreiHAND", "HO3D", "DexYCB", "build_dataset", "DATASETS", "EVAL_SPLIT", "DEFAULT_INPUT_SIZE",
           "HandDataset", "DatasetError", "ImageDecodeError", "AugParams", "sample_augmentation",
           "make_synthetic", "FORMATS", "write_synthetic_mano", "joint_orders"]
