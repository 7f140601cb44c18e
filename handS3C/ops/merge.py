"""``s3c_merge``: LayerNorm(y_spatial + y_channel) * SiLU(z) in one pass.

Contract
--------
``s3c_merge(y_spatial, y_channel, z, norm_weight, norm_bias, eps=1e-5, *, backend="auto")``

* ``y_spatial``, ``y_channel``: (..., C) float32, same shape, any strides.  The S3C block
  passes the two branch outputs as (B, H, W, d_inner) views that are contiguous (the cross
  scans write that layout, ``out_order``), which the CPU kernel reads row by row in place;
  other strides are gathered tile by tile, with bitwise the same results.
* ``z``: (..., C) float32 / float16 / bfloat16, same shape (the gate).
* ``norm_weight``, ``norm_bias``: (C,) float32.
* Returns (..., C) float32: ``layer_norm(y_spatial + y_channel) * silu(z)`` over the last
  dimension (biased variance, like ``torch.nn.LayerNorm``).  Differentiable in every input.

Operators (namespace ``hands3c``)
---------------------------------
``s3c_merge_fwd(y_spatial, y_channel, z, weight, bias, eps) -> (out, mean (M,) f32, rstd (M,) f32)``
with M the number of rows; ``s3c_merge_bwd(dout, y_spatial, y_channel, z, weight, bias, mean, rstd)
-> (dy (..., C) f32, dz (z's dtype), dweight (C,), dbias (C,))``; ``dy`` is the gradient of
both ``y_spatial`` and ``y_channel``.  The Triton family (``kernels/s3c_merge.py``) has the same
two operators with a ``_triton`` suffix; one autograd definition serves both families.
"""
from __future__ import annotations

import math

import torch

from .. import _ext, reference
from . import _checks
from ._backend import check_same_device, check_shape, check_tensor, resolve_backend, triton_available
from ._checks import _SCAN_FLOATS as _FLOATS

OP = "s3c_merge"


def _validate(y_spatial, y_channel, z, norm_weight, norm_bias, eps):
    check_tensor(OP, "y_spatial", y_spatial, range(1, 9), (torch.float32,))
    check_tensor(OP, "y_channel", y_channel, range(1, 9), (torch.float32,))
    check_tensor(OP, "z", z, range(1, 9), _FLOATS)
    check_shape(OP, "y_channel", y_channel, y_spatial.shape)
    check_shape(OP, "z", z, y_spatial.shape)
    C = y_spatial.shape[-1]
    if C < 1:
        raise ValueError(f"{OP}: the last dimension of y_spatial must be non-empty")
    check_tensor(OP, "norm_weight", norm_weight, 1, (torch.float32,))
    check_tensor(OP, "norm_bias", norm_bias, 1, (torch.float32,))
    check_shape(OP, "norm_weight", norm_weight, (C,))
    check_shape(OP, "norm_bias", norm_bias, (C,))
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"{OP}: eps must be a positive finite number, got {eps!r}")
    return check_same_device(OP, y_spatial=y_spatial, y_channel=y_channel, z=z,
                             norm_weight=norm_weight, norm_bias=norm_bias)


def s3c_merge(y_spatial, y_channel, z, norm_weight, norm_bias, eps: float = 1e-5, *,
              backend: str = "auto") -> torch.Tensor:
    """Fused S3C merge; see the module docstring for the full contract."""
    device = _validate(y_spatial, y_channel, z, norm_weight, norm_bias, eps)
    impl = resolve_backend(backend, device, OP)
    if impl == "reference":
        return reference.s3c_merge_ref(y_spatial, y_channel, z.float(), norm_weight, norm_bias, eps)
    if impl == "triton":
        return _triton.s3c_merge(y_spatial, y_channel, z, norm_weight, norm_bias, float(eps))
    return torch.ops.hands3c.s3c_merge_fwd(y_spatial, y_channel, z, norm_weight, norm_bias, float(eps))[0]


def _register_autograd(fwd: str, bwd) -> None:
    """Autograd of ``fwd`` (``hands3c::s3c_merge_fwd`` or its Triton twin): both families take
    ``(y_spatial, y_channel, z, weight, bias, eps)`` and return ``(out, mean, rstd)``; ``bwd``
    returns ``(dy, dz, dweight, dbias)`` with ``dy`` the gradient of both branch outputs."""
    def setup_context(ctx, inputs, output):
        y_spatial, y_channel, z, weight, bias, eps = inputs
        ctx.save_for_backward(y_spatial, y_channel, z, weight, bias, output[1], output[2])

    def backward(ctx, dout, _dmean, _drstd):
        y_spatial, y_channel, z, weight, bias, mean, rstd = ctx.saved_tensors
        dy, dz, dw, db = bwd(dout, y_spatial, y_channel, z, weight, bias, mean, rstd)
        return dy, dy, dz, dw, db, None

    torch.library.register_autograd(fwd, backward, setup_context=setup_context)


if _ext.HAS_CPU_EXT:
    @torch.library.register_fake("hands3c::s3c_merge_fwd")
    def _merge_fwd_fake(y_spatial, y_channel, z, weight, bias, eps):
        _checks.merge_fwd("hands3c::s3c_merge_fwd", y_spatial, y_channel, z, weight, bias, eps)
        M = y_spatial.numel() // y_spatial.shape[-1]
        out = y_spatial.new_empty(y_spatial.shape)
        return out, y_spatial.new_empty((M,)), y_spatial.new_empty((M,))

    @torch.library.register_fake("hands3c::s3c_merge_bwd")
    def _merge_bwd_fake(dout, y_spatial, y_channel, z, weight, bias, mean, rstd):
        _checks.merge_bwd("hands3c::s3c_merge_bwd", dout, y_spatial, y_channel, z, weight, bias, mean, rstd)
        return (y_spatial.new_empty(y_spatial.shape), z.new_empty(z.shape),
                torch.empty_like(weight), torch.empty_like(weight))

    _register_autograd("hands3c::s3c_merge_fwd", torch.ops.hands3c.s3c_merge_bwd)

_triton = None
if triton_available():
    from ..triton_kernels import s3c_merge as _triton

    _register_autograd("hands3c::s3c_merge_fwd_triton", torch.ops.hands3c.s3c_merge_bwd_triton)
