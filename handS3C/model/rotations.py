"""Rotation conversions used by the MANO layer and the MANO regression head.

All functions are differentiable everywhere (including at the identity), work on any leading
batch shape, and compute in float32 or float64 (half-precision inputs are promoted to
float32, so they are safe to call under ``torch.autocast``).

* :func:`axis_angle_to_matrix`: (..., 3) axis-angle (rotation vector, radians) -> (..., 3, 3).
* :func:`matrix_to_axis_angle`: (..., 3, 3) rotation matrix -> (..., 3), angle in [0, pi].
* :func:`rot6d_to_matrix`: (..., 6) 6-D representation (Zhou et al. 2019) -> (..., 3, 3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["axis_angle_to_matrix", "matrix_to_axis_angle", "rot6d_to_matrix", "skew"]

_SMALL_ANGLE2 = 1e-8  # below this squared angle the Taylor series is exact to float64 rounding


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix ``K`` with ``K @ w == v x w``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: (..., 3) rotation vectors -> (..., 3, 3) rotation matrices.

    ``R = I + sin(t)/t K + (1 - cos(t))/t^2 K^2`` with ``K = skew(aa)`` and ``t = |aa|``; the two
    coefficients switch to their Taylor series near ``t = 0``, so the value is exact and the
    gradient finite at the zero rotation.  Returns float32 (float64 for float64 input).
    """
    if aa.shape[-1] != 3:
        raise ValueError(f"axis_angle_to_matrix: last dimension must be 3, got shape {tuple(aa.shape)}")
    aa = aa.to(_compute_dtype(aa))
    t2 = (aa * aa).sum(-1)
    small = t2 < _SMALL_ANGLE2
    t2_safe = torch.where(small, torch.ones_like(t2), t2)
    t = torch.sqrt(t2_safe)
    a = torch.where(small, 1.0 - t2 / 6.0, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24.0, (1.0 - torch.cos(t)) / t2_safe)
    K = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(K.shape)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def _matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> unit quaternion (..., 4) as (w, x, y, z) with w >= 0 (Shepperd's method).

    Four candidate quaternions are formed, each divided by its own largest component; the one
    whose largest component is biggest (best conditioned) is selected per matrix.
    """
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    r20, r21, r22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 * q_i^2 for (w, x, y, z)
    sq = torch.stack([1.0 + r00 + r11 + r22,
                      1.0 + r00 - r11 - r22,
                      1.0 - r00 + r11 - r22,
                      1.0 - r00 - r11 + r22], dim=-1)
    # 2 * |q_i|, clamped so the unselected candidates keep finite values and gradients
    two_q = torch.sqrt(sq.clamp(min=0.01))
    cand = torch.stack([
        torch.stack([sq[..., 0], r21 - r12, r02 - r20, r10 - r01], dim=-1),
        torch.stack([r21 - r12, sq[..., 1], r10 + r01, r02 + r20], dim=-1),
        torch.stack([r02 - r20, r10 + r01, sq[..., 2], r21 + r12], dim=-1),
        torch.stack([r10 - r01, r20 + r02, r21 + r12, sq[..., 3]], dim=-1),
    ], dim=-2) / (2.0 * two_q[..., :, None])              # (..., 4 candidates, 4)
    best = sq.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) rotation vectors with angle in [0, pi].

    Through the unit quaternion (w >= 0): ``aa = v * 2 atan2(|v|, w) / |v|``, with the Taylor
    series ``2/w - 2|v|^2/(3 w^3)`` of the factor near the identity (finite gradients there).
    Returns float32 (float64 for float64 input).
    """
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"matrix_to_axis_angle: expected (..., 3, 3), got shape {tuple(R.shape)}")
    R = R.to(_compute_dtype(R))
    q = _matrix_to_quaternion(R)
    w, v = q[..., 0], q[..., 1:]
    n2 = (v * v).sum(-1)
    small = n2 < _SMALL_ANGLE2
    n = torch.sqrt(torch.where(small, torch.ones_like(n2), n2))
    w_safe = torch.where(small, w, torch.ones_like(w))  # w ~ 1 where small
    factor = torch.where(small, 2.0 / w_safe - 2.0 * n2 / (3.0 * w_safe ** 3), 2.0 * torch.atan2(n, w) / n)
    return v * factor[..., None]


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram–Schmidt, as the published MANO head does.

    ``a1 = x[..., 0:3]``, ``a2 = x[..., 3:6]``; ``b1 = a1/|a1|``, ``b2`` = normalised part of
    ``a2`` orthogonal to ``b1``, ``b3 = b1 x b2``; the result has ``b1, b2, b3`` as its
    **columns**.  Returns float32 (float64 for float64 input).
    """
    if x.shape[-1] != 6:
        raise ValueError(f"rot6d_to_matrix: last dimension must be 6, got shape {tuple(x.shape)}")
    x = x.to(_compute_dtype(x))
    a1, a2 = x[..., 0:3], x[..., 3:6]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)
