"""The full HandS3C network (SPEC §1): ResNet-50 FPN -> S3C block -> regression heads -> MANO."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Dict, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mano import ManoLayer
from ..modules import S3CBlock
from ..ops import BACKENDS
from .rotations import axis_angle_to_matrix
from .backbone import FPNBackbone, load_torchvision_resnet50
from .heads import Regressor, init_regressor_weights

__all__ = ["HandS3C", "LOSS_WEIGHTS", "NonFiniteError", "SUPPORTED_INPUT_SIZES"]

# input image size -> feature map size (= the S3C block's width)
SUPPORTED_INPUT_SIZES = {256: 32, 224: 28}

# The published loss weights (main/config.py), keyed by the published loss names.
LOSS_WEIGHTS = {
    "mano_verts": 1e4,   # mesh vertices, metres, not root-aligned
    "mano_joints": 1e4,  # 21 3-D joints, metres
    "mano_pose": 10.0,   # pose as 16 rotation matrices
    "mano_shape": 0.1,   # betas
    "joints_img": 100.0,  # soft-argmax 2-D joints, normalised [0, 1]
}


# The forward outputs the loss reads.
_LOSS_OUTPUTS = ("verts", "joints3d", "pose_rotmat", "shape", "joints2d")


class NonFiniteError(FloatingPointError):
    """``HandS3C.forward(..., check_finite=True)``: a stage produced NaN or infinity.

    ``stage`` names the first such stage: ``"images"`` (the input itself), ``"backbone"``,
    ``"S3C"`` or ``"regressor (output 'verts')"`` etc.
    """

    def __init__(self, stage: str, tensor: torch.Tensor):
        t = tensor.detach()
        n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
        what = "the input images are" if stage == "images" else f"the output of {stage} is"
        after = "" if stage == "images" else "; its input and every earlier stage were finite"
        super().__init__(f"HandS3C: {what} not finite ({n_nan} NaN and {n_inf} infinite of {t.numel()} values, "
                         f"shape {tuple(t.shape)}){after}")
        self.stage = stage


def _require_finite(stage: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise NonFiniteError(stage, t)


class HandS3C(nn.Module):
    """HandS3C: 3-D hand mesh from one RGB crop.

    Args:
        input_size: 256 (HO3D / DexYCB: 32×32 features) or 224 (FreiHAND: 28×28 features,
            S3C width 28, encoder upsampling ×2 before flattening).  Other sizes: ``ValueError``.
        backend: the S3C block's backend ("auto", "reference", "cpu", "cuda", "triton");
            changeable later through ``model.backend``.
        mano_model_path: path to ``MANO_RIGHT.pkl``.  ``None`` builds the MANO layer with
            placeholder (zero) buffers of the right shapes, so the model can be constructed
            (e.g. to load a published checkpoint, which stores the MANO arrays); until real
            arrays are loaded, ``verts``, ``joints3d`` and the 3-D losses are meaningless.
        backbone_weights: optional local path to torchvision's ResNet-50 ImageNet state dict
            (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ...; ``fc.*`` ignored).
            Nothing is ever downloaded.

    Submodule names (``backbone``, ``S3C``, ``regressor.hand_regHead``, ``regressor.hand_Encoder``,
    ``regressor.mano_regHead``) and the state_dict keys/shapes are exactly the published
    model's, so published checkpoints load (see :func:`handS3C.model.checkpoint.load_published_checkpoint`).

    The regressor starts from the published training init (conv N(0, 1e-3), Linear N(0, 1e-2),
    zero biases), the ResNet from Kaiming init (or ``backbone_weights``), the S3C block from
    its published init.
    """

    def __init__(self, input_size: int = 256, backend: str = "auto",
                 mano_model_path: Optional[Union[str, os.PathLike]] = None,
                 backbone_weights: Optional[Union[str, os.PathLike]] = None):
        super().__init__()
        if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size not in SUPPORTED_INPUT_SIZES:
            raise ValueError(f"HandS3C: input_size must be one of {sorted(SUPPORTED_INPUT_SIZES)}, got {input_size!r}")
        if backend not in BACKENDS:
            raise ValueError(f"HandS3C: backend must be one of {BACKENDS}, got {backend!r}")
        self.input_size = input_size
        self.feature_size = SUPPORTED_INPUT_SIZES[input_size]
        self.backbone = FPNBackbone()
        self.S3C = S3CBlock(d_model=256, width=self.feature_size, d_state=16, backend=backend)
        self.regressor = Regressor(self.feature_size, ManoLayer(mano_model_path))
        init_regressor_weights(self.regressor)
        if backbone_weights is not None:
            load_torchvision_resnet50(self.backbone, backbone_weights)

    @property
    def backend(self) -> str:
        return self.S3C.backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ValueError(f"HandS3C: backend must be one of {BACKENDS}, got {value!r}")
        self.S3C.backend = value

    @property
    def mano_layer(self) -> ManoLayer:
        return self.regressor.mano_regHead.mano_layer

    def forward(self, images: torch.Tensor, check_finite: bool = False) -> Dict[str, torch.Tensor]:
        """images: (B, 3, S, S) RGB in [0, 1], S = ``input_size``, B >= 1, on the model's device;
        the model's dtype (float32), or any float dtype under ``torch.autocast``.

        Returns a dict (float32 for a float32 model, also under autocast):
        ``joints2d`` (B, 21, 2) in [0, 1] (x, y over the crop), ``joints3d`` (B, 21, 3) and
        ``verts`` (B, 778, 3) in metres (FreiHAND joint order, no translation), ``pose``
        (B, 48) axis-angle MANO pose (root first), ``pose_rotmat`` (B, 16, 3, 3) the same as
        rotation matrices (what the pose loss compares), ``shape`` (B, 10) betas, ``heatmaps``
        (B, 21, S/8, S/8) (each sums to 1).

        ``check_finite=True`` (for debugging a divergent run; it costs one reduction per stage)
        checks the images and the output of every stage (backbone, S3C, regressor) and raises
        :class:`NonFiniteError` naming the first one holding a NaN or an infinity.
        """
        self._check_images(images)
        if check_finite:
            _require_finite("images", images)
        feats = self.backbone(images)
        if check_finite:
            _require_finite("backbone", feats)
        feats = self.S3C(feats)
        if check_finite:
            _require_finite("S3C", feats)
        out = self.regressor(feats)
        if check_finite:
            for key, value in out.items():
                _require_finite(f"regressor (output {key!r})", value)
        return out

    def _check_images(self, images) -> None:
        """Errors a user sees at the model's edge instead of torch's from deep inside a stage."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 \
                or images.shape[2] != self.input_size or images.shape[3] != self.input_size:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"HandS3C: expected images of shape (B, 3, {self.input_size}, {self.input_size}), "
                             f"got {shape}")
        if images.shape[0] == 0:
            raise ValueError("HandS3C: images is an empty batch (shape "
                             f"{tuple(images.shape)}); pass at least one image")
        if not images.is_floating_point():
            raise TypeError(f"HandS3C: images must be floating point in [0, 1], got {images.dtype}")
        weight = next(self.backbone.parameters())  # the first convolution: device and dtype of the model
        if images.device != weight.device:
            raise ValueError(f"HandS3C: images are on {images.device} but the model is on {weight.device}; "
                             f"move one of them (images.to({str(weight.device)!r}) or model.to(...))")
        if images.dtype != weight.dtype and not torch.is_autocast_enabled(images.device.type):
            raise TypeError(f"HandS3C: images are {str(images.dtype).replace('torch.', '')} but the model is "
                            f"{str(weight.dtype).replace('torch.', '')}; pass images.to({weight.dtype}) or run "
                            "the model under torch.autocast for mixed precision")

    @staticmethod
    def _check_target(targets, name, shape, device):
        if name not in targets:
            raise KeyError(f"HandS3C.loss: targets lacks {name!r} (expected shape {shape})")
        t = targets[name]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"HandS3C.loss: targets[{name!r}] must have shape {shape}, got {got}")
        if not t.is_floating_point():
            raise TypeError(f"HandS3C.loss: targets[{name!r}] must be floating point, got {t.dtype}")
        if t.device != device:
            raise ValueError(f"HandS3C.loss: targets[{name!r}] is on {t.device} but the outputs are on {device}; "
                             f"move the targets to {device}")
        return t

    def loss(self, outputs: Dict[str, torch.Tensor], targets: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The published training losses, already weighted (:data:`LOSS_WEIGHTS`).

        targets: ``pose`` (B, 48) GT MANO axis-angle pose, ``shape`` (B, 10) GT betas,
        ``joints2d`` (B, 21, 2) GT 2-D joints normalised to [0, 1].  GT vertices and joints come
        from the same MANO layer.  Returns float32 scalars ``mano_verts``, ``mano_joints``,
        ``mano_pose``, ``mano_shape``, ``joints_img`` (mean-squared errors × weight) and ``total``.
        """
        if not isinstance(outputs, Mapping):
            raise TypeError("HandS3C.loss: outputs must be the dict HandS3C.forward returns, got "
                            f"{type(outputs).__name__}")
        for key in _LOSS_OUTPUTS:
            if not isinstance(outputs.get(key), torch.Tensor):
                raise KeyError(f"HandS3C.loss: outputs lacks the tensor {key!r} (pass what HandS3C.forward returns)")
        if not isinstance(targets, Mapping):
            raise TypeError("HandS3C.loss: targets must be a dict with 'pose' (B, 48), 'shape' (B, 10) and "
                            f"'joints2d' (B, 21, 2) tensors, got {type(targets).__name__}")
        Bn = outputs["verts"].shape[0]
        device = outputs["verts"].device
        gt_pose = self._check_target(targets, "pose", (Bn, 48), device)
        gt_shape = self._check_target(targets, "shape", (Bn, 10), device)
        gt_j2d = self._check_target(targets, "joints2d", (Bn, 21, 2), device)
        dtype = outputs["verts"].dtype
        with torch.autocast(device_type=outputs["verts"].device.type, enabled=False):
            gt_pose = gt_pose.to(dtype)
            gt_shape = gt_shape.to(dtype)
            with torch.no_grad():
                gt_verts, gt_joints = self.mano_layer(gt_pose, gt_shape)
            gt_rot = axis_angle_to_matrix(gt_pose.reshape(Bn, 16, 3)).to(dtype)
            terms = {
                "mano_verts": F.mse_loss(outputs["verts"], gt_verts),
                "mano_joints": F.mse_loss(outputs["joints3d"], gt_joints),
                "mano_pose": F.mse_loss(outputs["pose_rotmat"].to(dtype), gt_rot),
                "mano_shape": F.mse_loss(outputs["shape"].to(dtype), gt_shape),
                "joints_img": F.mse_loss(outputs["joints2d"].to(dtype), gt_j2d.to(dtype)),
            }
            losses = {k: LOSS_WEIGHTS[k] * v for k, v in terms.items()}
            losses["total"] = sum(losses.values())
        return losses

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, feature_size={self.feature_size}, backend={self.backend!r}"
