"""The S3C block (SPEC §2): a residual state-space block with a spatial and a channel branch."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import BACKENDS, cross_scan_selective_scan, s3c_merge

__all__ = ["S3CBlock", "SS2D", "dt_bias_init"]

_DIRECTIONS = 4
# The branch outputs' memory orders (cross_scan_selective_scan's out_order): the spatial
# branch's (B, d_inner, H, W) and the channel branch's (B, W, d_inner, H) both stored as
# (B, H, W, d_inner), the merge's rows.  Module attributes so a benchmark can compare them
# with the contiguous (0, 1, 2, 3) layout.
SPATIAL_OUT_ORDER = (0, 2, 3, 1)
CHANNEL_OUT_ORDER = (0, 3, 1, 2)


def dt_bias_init(n: int, dt_min=1e-3, dt_max=0.1, floor=1e-4, generator=None) -> torch.Tensor:
    """The published dt-bias initialisation: (n,) float32, the inverse softplus of
    dt ~ exp(U(log dt_min, log dt_max)) floored at ``floor``, so softplus(bias) is that dt.
    The one copy: the block, the tests and the benchmarks all call it."""
    u = torch.rand(n, generator=generator)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


class SS2D(nn.Module):
    """The state-space core of the block, with the published parameter names.

    Shapes for d_model C, width W, state N, rank R = ceil(C/16), d_inner = 2C:
    ``x_proj_weight`` (4, R+2N, d_inner), ``dt_projs_weight`` (4, d_inner, R),
    ``dt_projs_bias`` (4, d_inner), ``A_logs`` (4 d_inner, N), ``Ds`` (4 d_inner,), and the
    same with suffix ``_ch`` for the channel branch whose feature dimension is W.
    """

    def __init__(self, d_model: int, width: int, d_state: int = 16):
        super().__init__()
        d_inner = 2 * d_model
        R = math.ceil(d_model / 16)
        self.d_model, self.d_inner, self.width, self.d_state, self.dt_rank = d_model, d_inner, width, d_state, R
        K = _DIRECTIONS

        def lin_init(rows, fan_in):
            bound = 1.0 / math.sqrt(fan_in)
            return torch.empty(K, rows, fan_in).uniform_(-bound, bound)

        def dt_w(feat):
            return torch.empty(K, feat, R).uniform_(-R ** -0.5, R ** -0.5)

        def a_logs(feat):
            return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(K * feat, 1)

        # Registration order reproduces the published state_dict order.
        self.x_proj_weight = nn.Parameter(lin_init(R + 2 * d_state, d_inner))
        self.x_proj_weight_ch = nn.Parameter(lin_init(R + 2 * d_state, width))
        self.dt_projs_weight = nn.Parameter(dt_w(d_inner))
        self.dt_projs_bias = nn.Parameter(dt_bias_init(K * d_inner).reshape(K, d_inner))
        self.dt_projs_weight_ch = nn.Parameter(dt_w(width))
        self.dt_projs_bias_ch = nn.Parameter(dt_bias_init(K * width).reshape(K, width))
        self.A_logs = nn.Parameter(a_logs(d_inner))
        self.Ds = nn.Parameter(torch.ones(K * d_inner))
        self.A_logs_ch = nn.Parameter(a_logs(width))
        self.Ds_ch = nn.Parameter(torch.ones(K * width))
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, bias=True)
        self.out_norm = nn.LayerNorm(d_inner, eps=1e-5)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def spatial_params(self):
        return self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs, self.Ds

    def channel_params(self):
        return self.x_proj_weight_ch, self.dt_projs_weight_ch, self.dt_projs_bias_ch, self.A_logs_ch, self.Ds_ch

    def forward(self, t: torch.Tensor, backend: str) -> torch.Tensor:
        """t: (B, H, W, d_model) channels-last -> (B, H, W, d_model)."""
        xz = self.in_proj(t)
        xi, z = xz.chunk(2, dim=-1)
        u = F.silu(self.conv2d(xi.permute(0, 3, 1, 2)))          # (B, d_inner, H, W)
        # The operators pick the implementation (backend="reference" is the published path).
        # The channel branch scans the (d_inner x H) plane with the width as features, passed
        # as a permuted view.  The depthwise conv returns u channels-last, so that view's plane
        # is not one stride and the operator makes one contiguous copy of u (forward and
        # backward; 4 MB at B=2): known, left for the projection GEMMs to take plane strides.  Both scans write y in the merge's (B, H, W, d_inner) row
        # layout (out_order), so the merge streams contiguous rows, and its gradient comes
        # back to the scans' backward in that layout, which they read through its strides.
        y_c = cross_scan_selective_scan(u.permute(0, 3, 1, 2), *self.channel_params(), out_order=CHANNEL_OUT_ORDER,
                                        backend=backend)
        y_s = cross_scan_selective_scan(u, *self.spatial_params(), out_order=SPATIAL_OUT_ORDER, backend=backend)
        y = s3c_merge(y_s.permute(0, 2, 3, 1), y_c.permute(0, 3, 1, 2), z, self.out_norm.weight,
                      self.out_norm.bias, self.out_norm.eps, backend=backend)
        return self.out_proj(y.to(t.dtype))


class S3CBlock(nn.Module):
    """HandS3C's S3C block: ``x + SS2D(LayerNorm(x))`` on a B×C×H×W feature map.

    Args:
        d_model: channels C of the input (256 in HandS3C).
        width: the feature-map width W the channel branch is built for (32 for 256×256
            images, 28 for 224×224); inputs of another width are refused.
        d_state: state size N of the scans (16).
        backend: "reference" (the published computation through mamba-ssm), "auto", "cpu",
            "cuda" or "triton" (the fused operators).  Can be changed later via ``.backend``.

    Input and output: (B, C, H, W), float32 (or under autocast).  ``state_dict()`` keys and
    shapes are exactly the published block's (``ln_1.*``, ``self_attention.*``).
    """

    def __init__(self, d_model: int = 256, width: int = 32, d_state: int = 16, backend: str = "reference"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"S3CBlock: backend must be one of {BACKENDS}, got {backend!r}")
        for name, v in (("d_model", d_model), ("width", width), ("d_state", d_state)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"S3CBlock: {name} must be a positive int, got {v!r}")
        self.backend = backend
        self.ln_1 = nn.LayerNorm(d_model, eps=1e-6)
        self.self_attention = SS2D(d_model, width, d_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"S3CBlock: x must be a 4-D (B, C, H, W) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        C, W = self.self_attention.d_model, self.self_attention.width
        if x.shape[1] != C:
            raise ValueError(f"S3CBlock: x must have {C} channels (dim 1), got shape {tuple(x.shape)}")
        if x.shape[3] != W:
            raise ValueError(f"S3CBlock: this block's channel branch is built for width {W}; x has width "
                             f"{x.shape[3]} (shape {tuple(x.shape)})")
        t = x.permute(0, 2, 3, 1)
        t = t + self.self_attention(self.ln_1(t), self.backend)
        return t.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        sa = self.self_attention
        return f"d_model={sa.d_model}, width={sa.width}, d_state={sa.d_state}, backend={self.backend!r}"
