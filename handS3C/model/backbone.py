"""ResNet-50 + FPN feature extractor of HandS3C (SPEC §1), with the published parameter names.

The ResNet-50 is torchvision's layout (v1.5: stride on the 3×3 conv of a bottleneck) with
every ReLU replaced by ``LeakyReLU(0.01)``.  Its stages are wrapped in one extra
``nn.Sequential`` as in the published code, so keys read ``layer1.0.0.conv1.weight``; the
stem is ``layer0.{0: conv1, 1: bn1}``.  ``toplayer`` is registered first (it is the first
entry of published state_dicts and optimizer parameter lists).
"""
from __future__ import annotations

import os
from typing import Dict, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ResNetBottleneck", "FPNBackbone", "load_torchvision_resnet50"]

LEAKY_SLOPE = 0.01


class ResNetBottleneck(nn.Module):
    """torchvision's ResNet bottleneck (1×1, 3×3 with stride, 1×1 ×4) with LeakyReLU.

    Input (B, inplanes, H, W) -> (B, 4·planes, H/stride, W/stride), same dtype.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.act(out + identity)


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * ResNetBottleneck.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * ResNetBottleneck.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * ResNetBottleneck.expansion))
    layers = [ResNetBottleneck(inplanes, planes, stride, downsample)]
    layers += [ResNetBottleneck(planes * ResNetBottleneck.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class FPNBackbone(nn.Module):
    """ResNet-50 (LeakyReLU) + top-down FPN to P2, 3×3 smoothing, 2×2 average pooling.

    Input: (B, 3, S, S) image in [0, 1] (no mean/std normalisation, as published).
    Output: (B, 256, S/8, S/8) features (32×32 for S = 256, 28×28 for S = 224), input dtype.
    """

    def __init__(self):
        super().__init__()
        self.toplayer = nn.Conv2d(2048, 256, 1)
        self.layer0 = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.layer1 = nn.Sequential(_stage(64, 64, 3, 1))
        self.layer2 = nn.Sequential(_stage(256, 128, 4, 2))
        self.layer3 = nn.Sequential(_stage(512, 256, 6, 2))
        self.layer4 = nn.Sequential(_stage(1024, 512, 3, 2))
        self.smooth3 = nn.Conv2d(256, 256, 3, padding=1)
        self.latlayer1 = nn.Conv2d(1024, 256, 1)
        self.latlayer2 = nn.Conv2d(512, 256, 1)
        self.latlayer3 = nn.Conv2d(256, 256, 1)
        self.pool = nn.AvgPool2d(2, stride=2)
        # Published init of the ResNet part (the FPN convs keep PyTorch's default init).
        for name in ("layer0", "layer1", "layer2", "layer3", "layer4"):
            for m in getattr(self, name).modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    @staticmethod
    def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False) + y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.layer0(x)
        c2 = self.layer1(c1)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        p5 = self.toplayer(c5)
        p4 = self._upsample_add(p5, self.latlayer1(c4))
        p3 = self._upsample_add(p4, self.latlayer2(c3))
        p2 = self._upsample_add(p3, self.latlayer3(c2))
        return self.pool(self.smooth3(p2))


def _torchvision_to_ours(key: str) -> str:
    """'conv1.weight' -> 'layer0.0.weight', 'bn1.x' -> 'layer0.1.x', 'layerK.i.rest' -> 'layerK.0.i.rest'."""
    if key.startswith("conv1."):
        return "layer0.0." + key[len("conv1."):]
    if key.startswith("bn1."):
        return "layer0.1." + key[len("bn1."):]
    head, _, rest = key.partition(".")
    return f"{head}.0.{rest}"


def _ours_to_torchvision(key: str) -> str:
    if key.startswith("layer0.0."):
        return "conv1." + key[len("layer0.0."):]
    if key.startswith("layer0.1."):
        return "bn1." + key[len("layer0.1."):]
    head, _, rest = key.partition(".")
    return f"{head}.{rest[2:]}"  # drop the wrapper index "0."


def load_torchvision_resnet50(backbone: FPNBackbone, source: Union[str, os.PathLike, Dict[str, torch.Tensor]]):
    """Copy torchvision ResNet-50 ImageNet weights (a local file or a state dict) into ``backbone``.

    Expects torchvision's key names (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ...);
    ``fc.*`` is ignored.  Never downloads anything.  Raises ``FileNotFoundError`` for a missing
    file and ``ValueError`` listing every missing, unexpected or mis-shaped key.
    Returns the list of our keys that were filled.
    """
    if isinstance(source, dict):
        sd, where = source, "backbone_weights (dict)"
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"backbone_weights: file not found: {path!r} (expected torchvision's "
                                    "resnet50 ImageNet state dict, e.g. resnet50-19c8e357.pth)")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"backbone_weights: {path!r} is not a readable torch state dict ({type(e).__name__}: "
                             f"{e})") from e
        where = path
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{where}: expected a state dict, got {type(sd).__name__}")
    ours = {k: v for k, v in backbone.state_dict().items() if k.startswith("layer")}
    mapped, unexpected, mismatched = {}, [], []
    for k, v in sd.items():
        if k.startswith("fc."):
            continue
        if not isinstance(v, torch.Tensor):
            unexpected.append(k)
            continue
        ok = _torchvision_to_ours(k)
        if ok not in ours:
            unexpected.append(k)
        elif tuple(v.shape) != tuple(ours[ok].shape):
            mismatched.append(f"{k}: {tuple(v.shape)} vs ours {tuple(ours[ok].shape)}")
        else:
            mapped[ok] = v
    # old torchvision files (resnet50-19c8e357.pth) carry no num_batches_tracked: not an error
    shaped = {_torchvision_to_ours(m.split(":")[0]) for m in mismatched}
    missing = sorted(_ours_to_torchvision(k) for k in set(ours) - set(mapped) - shaped
                     if not k.endswith("num_batches_tracked"))
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{where}: not a torchvision ResNet-50 state dict (torchvision key names): missing {len(missing)} "
            f"{missing[:10]}, "
            f"unexpected {len(unexpected)} {unexpected[:10]}, mis-shaped {len(mismatched)} {mismatched[:10]}")
    backbone.load_state_dict(mapped, strict=False)
    return sorted(mapped)
