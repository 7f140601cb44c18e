"""HandS3C's regression heads (SPEC §1), with the published module names.

* :class:`HandRegHead` (``regressor.hand_regHead``): hourglass (depth 2, one stack) of
  pre-activation bottlenecks, 1×1 conv to 21 score maps, spatial softmax with a learnable
  per-joint temperature ``betas`` (21×1), soft-argmax on the pixel-centre grid.
* :class:`HandEncoder` (``regressor.hand_Encoder``): heatmaps and features -> 1024-vector.
* :class:`ManoRegHead` (``regressor.mano_regHead``): 1024-vector -> 16×6D pose and 10 betas,
  then the MANO layer.
* :class:`Regressor` (``regressor``): the three in sequence.

Every activation is ``LeakyReLU(0.01)``, as published.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mano import ManoLayer
from .rotations import matrix_to_axis_angle, rot6d_to_matrix

__all__ = ["PreActBottleneck", "Hourglass", "HandRegHead", "EncoderResidual", "HandEncoder", "ManoRegHead",
           "Regressor", "init_regressor_weights"]

LEAKY_SLOPE = 0.01
NUM_JOINTS_2D = 21


def _widen(t: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 -> float32; float32 / float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (BN-act-conv ×3): (B, C, H, W) -> (B, C, H, W), C = 2·planes."""

    expansion = 2

    def __init__(self, inplanes: int, planes: int):
        super().__init__()
        if inplanes != planes * self.expansion:
            raise ValueError("PreActBottleneck: inplanes must equal 2*planes (no projection skip is used)")
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=True)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=True)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act(self.bn1(x)))
        out = self.conv2(self.act(self.bn2(out)))
        out = self.conv3(self.act(self.bn3(out)))
        return out + x


class Hourglass(nn.Module):
    """Recursive hourglass; ``hg[i]`` holds the residuals of level ``depth - i`` (upper branch,
    lower-in, lower-out, and at ``i = 0`` the innermost residual).  Spatial size must be divisible
    by ``2**depth``.  (B, 2·planes, H, W) -> same shape."""

    def __init__(self, planes: int, depth: int):
        super().__init__()
        self.depth = depth

        def res():
            return nn.Sequential(PreActBottleneck(planes * PreActBottleneck.expansion, planes))

        self.hg = nn.ModuleList(
            nn.ModuleList([res() for _ in range(4 if i == 0 else 3)]) for i in range(depth))

    def _level(self, n: int, x: torch.Tensor) -> torch.Tensor:
        level = self.hg[n - 1]
        up = level[0](x)
        low = level[1](F.max_pool2d(x, 2, stride=2))
        low = self._level(n - 1, low) if n > 1 else level[3](low)
        low = level[2](low)
        return up + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class _ConvBNAct(nn.Module):
    """``block = Sequential(conv(bias), BatchNorm, LeakyReLU)`` (the published head's ``fc``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, padding=(kernel_size - 1) // 2, bias=True),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(LEAKY_SLOPE))

    def forward(self, x):
        return self.block(x)


class HandRegHead(nn.Module):
    """2-D joint head.

    Input: features (B, 256, S, S).  ``forward`` returns ``(heatmaps, encoding, joints2d)``:
    heatmaps (B, 21, S, S) (softmax over the S² pixels of ``betas[j] * score_j``), encoding
    (B, 256, S, S) (the features the encoder consumes) and joints2d (B, 21, 2) = (x, y) in
    [0, 1] by soft-argmax on the grid ((i + 0.5) / S).  Float32 heatmaps/joints (softmax is
    float32 under autocast).
    """

    def __init__(self, roi_res: int = 32, joint_nb: int = NUM_JOINTS_2D, channels: int = 256, depth: int = 2):
        super().__init__()
        if roi_res % (2 ** depth):
            raise ValueError(f"HandRegHead: feature size {roi_res} must be divisible by {2 ** depth}")
        self.out_res = roi_res
        self.joint_nb = joint_nb
        self.betas = nn.Parameter(torch.ones(joint_nb, 1))
        centres = (torch.arange(roi_res, dtype=torch.float32) + 0.5) / roi_res
        vv, uu = torch.meshgrid(centres, centres, indexing="ij")   # uu varies along x (columns)
        self.register_buffer("uu", uu.contiguous())
        self.register_buffer("vv", vv.contiguous())
        planes = channels // PreActBottleneck.expansion
        self.hg = nn.ModuleList([Hourglass(planes, depth)])
        self.res = nn.ModuleList([nn.Sequential(PreActBottleneck(channels, planes))])
        self.fc = nn.ModuleList([_ConvBNAct(channels, channels, 1)])
        self.score = nn.ModuleList([nn.Conv2d(channels, joint_nb, 1, bias=True)])

    def spatial_softmax(self, scores: torch.Tensor) -> torch.Tensor:
        Bn = scores.shape[0]
        flat = scores.reshape(Bn, self.joint_nb, self.out_res * self.out_res) * self.betas
        return torch.softmax(_widen(flat), dim=2).reshape(Bn, self.joint_nb, self.out_res, self.out_res)

    def soft_argmax(self, heatmaps: torch.Tensor) -> torch.Tensor:
        x = (heatmaps * self.uu).sum(dim=(2, 3))
        y = (heatmaps * self.vv).sum(dim=(2, 3))
        return torch.stack((x, y), dim=2)

    def forward(self, x: torch.Tensor):
        y = self.fc[0](self.res[0](self.hg[0](x)))
        heatmaps = self.spatial_softmax(self.score[0](y))
        return heatmaps, y, self.soft_argmax(heatmaps)


class EncoderResidual(nn.Module):
    """Pre-activation residual (BN-act-conv1×1, BN-act-conv3×3, BN-act-conv1×1), C -> C."""

    def __init__(self, channels: int):
        super().__init__()
        mid = channels // 2
        self.bn = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, mid, 1, bias=True)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, channels, 1, bias=True)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act(self.bn(x)))
        out = self.conv2(self.act(self.bn1(out)))
        out = self.conv3(self.act(self.bn2(out)))
        return out + x


class HandEncoder(nn.Module):
    """Heatmaps (B, 21, S, S) + encoding (B, 256, S, S) -> (B, 1024).

    ``heatmap_conv(heatmaps) + encoding_conv(encoding)``, then 4 × [2 residuals + MaxPool2]:
    32 -> 2 (256·2·2 = 1024).  For S = 28 the poolings give 28 -> 14 -> 7 -> 3 -> 1 and the
    1×1 map is upsampled ×2 (nearest: four copies) before flattening, as the published FreiHAND
    configuration does.  Other sizes whose result is not 2×2 are refused at construction.
    """

    def __init__(self, feature_size: int = 32, num_heatmap_chan: int = NUM_JOINTS_2D, channels: int = 256,
                 n_blocks: int = 4, n_modules: int = 2):
        super().__init__()
        s = feature_size
        for _ in range(n_blocks):
            s //= 2
        if s == 2:
            self.upsample = False
        elif s == 1:
            self.upsample = True
        else:
            raise ValueError(f"HandEncoder: a {feature_size}x{feature_size} feature map pools to {s}x{s}; "
                             "needs 2x2 (or 1x1, upsampled x2) to flatten to 1024 values")
        self.n_blocks, self.n_modules = n_blocks, n_modules
        self.heatmap_conv = nn.Conv2d(num_heatmap_chan, channels, 1, bias=True)
        self.encoding_conv = nn.Conv2d(channels, channels, 1, bias=True)
        self.reg = nn.ModuleList(EncoderResidual(channels) for _ in range(n_blocks * n_modules))
        self.maxpool = nn.MaxPool2d(2, stride=2)

    def forward(self, heatmaps: torch.Tensor, encoding: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(heatmaps.device.type):
            heatmaps = heatmaps.to(self.heatmap_conv.weight.dtype)
        x = self.heatmap_conv(heatmaps) + self.encoding_conv(encoding)
        for i in range(self.n_blocks):
            for j in range(self.n_modules):
                x = self.reg[i * self.n_modules + j](x)
            x = self.maxpool(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return x.flatten(1)


class ManoRegHead(nn.Module):
    """(B, 1024) features -> MANO parameters and mesh.

    Returns a dict: ``pose_rotmat`` (B, 16, 3, 3) from the 16 predicted 6-D rotations
    (Gram–Schmidt), ``pose`` (B, 48) the same as axis-angle, ``shape`` (B, 10), ``verts``
    (B, 778, 3) and ``joints3d`` (B, 21, 3) in metres from the MANO layer fed with ``pose``
    and ``shape`` (as published).  Float32 except ``shape`` (the Linear's dtype; cast to
    float32 here so autocast callers get float32 too).
    """

    def __init__(self, mano_layer: ManoLayer, feature_size: int = 1024, neurons=(1024, 512)):
        super().__init__()
        sizes = [feature_size, *neurons]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(LEAKY_SLOPE)]
        self.mano_base_layer = nn.Sequential(*layers)
        self.pose_reg = nn.Linear(sizes[-1], 16 * 6)
        self.shape_reg = nn.Linear(sizes[-1], 10)
        self.mano_layer = mano_layer

    def forward(self, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        h = self.mano_base_layer(features)
        Bn = features.shape[0]
        rotmat = rot6d_to_matrix(self.pose_reg(h).reshape(Bn, 16, 6))
        shape = _widen(self.shape_reg(h))
        pose = matrix_to_axis_angle(rotmat).reshape(Bn, 48)
        verts, joints = self.mano_layer(pose, shape)
        return {"pose_rotmat": rotmat, "pose": pose, "shape": shape, "verts": verts, "joints3d": joints}


class Regressor(nn.Module):
    """``hand_regHead`` -> ``hand_Encoder`` -> ``mano_regHead`` on (B, 256, S, S) features."""

    def __init__(self, feature_size: int, mano_layer: ManoLayer):
        super().__init__()
        self.hand_regHead = HandRegHead(roi_res=feature_size)
        self.hand_Encoder = HandEncoder(feature_size=feature_size)
        self.mano_regHead = ManoRegHead(mano_layer)

    def forward(self, feats: torch.Tensor) -> Dict[str, torch.Tensor]:
        heatmaps, encoding, joints2d = self.hand_regHead(feats)
        out = self.mano_regHead(self.hand_Encoder(heatmaps, encoding))
        out["heatmaps"] = heatmaps
        out["joints2d"] = joints2d
        return out


def init_regressor_weights(module: nn.Module) -> None:
    """The published training init of the regressor: conv weights N(0, 0.001) and zero bias,
    BatchNorm 1/0, Linear weights N(0, 0.01) and zero bias.  (``betas`` stays 1.)"""
    for m in module.modules():
        if type(m) is nn.Conv2d:
            nn.init.normal_(m.weight, std=0.001)
            nn.init.zeros_(m.bias)
        elif type(m) is nn.BatchNorm2d:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif type(m) is nn.Linear:
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
