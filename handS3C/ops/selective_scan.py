"""``selective_scan_fn``: a drop-in for mamba-ssm's function of the same name.

Contract (mamba-ssm's)
----------------------
``selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
return_last_state=False, *, backend="auto")``

* ``u``, ``delta``: (batch, dim, L), float32 / float16 / bfloat16 (same dtype).
* ``A``: (dim, N) float32, real (complex A raises ``TypeError``); N <= 64.
* ``B``, ``C``: (dim, N) (input-independent), (batch, N, L) or (batch, groups, N, L)
  (dim divisible by groups; channel block g of size dim/groups uses group g); any float dtype.
* ``D``, ``delta_bias``: (dim,) float32; ``z``: (batch, dim, L) like ``u``.
* Returns ``out`` (batch, dim, L) in ``u``'s dtype, gated by ``silu(z)`` when ``z`` is given,
  and with ``return_last_state`` also the final state (batch, dim, N) float32.

State and accumulation are float32.  Gradients flow to every tensor argument, including
through ``last_state``.

Operators (namespace ``hands3c``; B and C always passed as 4-D (batch, G, N, L) views)
-------------------------------------------------------------------------------------------
``selective_scan_fwd(u, delta, A, B, C, D?, z?, delta_bias?, delta_softplus)
-> (out, last_state (batch,dim,N) f32, checkpoints (batch, dim, ceil(L/64), N) f32)``
``selective_scan_bwd(dout, dlast_state?, u, delta, A, B, C, D?, z?, delta_bias?, delta_softplus,
checkpoints) -> (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)``; absent optional inputs give
empty (numel 0) gradients.  The Triton family (``kernels/selective_scan.py``) has the same two
operators with a ``_triton`` suffix and launch-plan integers appended; one autograd definition
(:func:`_register_autograd`) serves both families.
"""
from __future__ import annotations

import torch

from .. import _ext, reference
from . import _checks
from ._backend import (check_checkpoints, check_same_device, check_shape, check_tensor, resolve_backend,
                       triton_available)
from ._checks import _SCAN_FLOATS as _FLOATS, CHECKPOINT_STRIDE, MAX_STATE

OP = "selective_scan_fn"


def _canonical_bc(name, M, batch, dim, N, L):
    """View B or C as (batch, G, N, L) without copying."""
    if M.dim() == 2:
        check_shape(OP, name, M, (dim, N))
        return M.unsqueeze(0).unsqueeze(-1).expand(batch, dim, N, L)
    if M.dim() == 3:
        check_shape(OP, name, M, (batch, N, L))
        return M.unsqueeze(1)
    G = M.shape[1]
    if G < 1 or dim % G != 0:
        raise ValueError(f"{OP}: {name} has {G} groups, which must divide dim={dim}")
    check_shape(OP, name, M, (batch, G, N, L))
    return M


def _validate(u, delta, A, B, C, D, z, delta_bias):
    check_tensor(OP, "u", u, 3, _FLOATS)
    check_tensor(OP, "delta", delta, 3, _FLOATS)
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"{OP}: A must be a torch.Tensor, got {type(A).__name__}")
    if A.is_complex():
        raise TypeError(f"{OP}: complex A is not supported (A has dtype {A.dtype}); pass a real float32 A")
    check_tensor(OP, "A", A, 2, (torch.float32,))
    check_tensor(OP, "B", B, (2, 3, 4), _FLOATS)
    check_tensor(OP, "C", C, (2, 3, 4), _FLOATS)
    batch, dim, L = u.shape
    if L < 1 or dim < 1 or batch < 1:
        raise ValueError(f"{OP}: u must have no empty dimension, got shape {tuple(u.shape)}")
    check_shape(OP, "delta", delta, u.shape)
    if delta.dtype != u.dtype:
        raise TypeError(f"{OP}: delta must have u's dtype {u.dtype}, got {delta.dtype}")
    if A.shape[0] != dim:
        raise ValueError(f"{OP}: A must have shape (dim={dim}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    if not 1 <= N <= MAX_STATE:
        raise ValueError(f"{OP}: the state size N (A.shape[1]) must be in 1..{MAX_STATE}, got {N}")
    if D is not None:
        check_tensor(OP, "D", D, 1, (torch.float32,))
        check_shape(OP, "D", D, (dim,))
    if delta_bias is not None:
        check_tensor(OP, "delta_bias", delta_bias, 1, (torch.float32,))
        check_shape(OP, "delta_bias", delta_bias, (dim,))
    if z is not None:
        check_tensor(OP, "z", z, 3, _FLOATS)
        check_shape(OP, "z", z, u.shape)
        if z.dtype != u.dtype:
            raise TypeError(f"{OP}: z must have u's dtype {u.dtype}, got {z.dtype}")
    device = check_same_device(OP, u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    Bc = _canonical_bc("B", B, batch, dim, N, L)
    Cc = _canonical_bc("C", C, batch, dim, N, L)
    return device, Bc, Cc


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, *, backend: str = "auto"):
    """mamba-ssm's ``selective_scan_fn`` with a fast kernel behind it; see the module docstring."""
    device, Bc, Cc = _validate(u, delta, A, B, C, D, z, delta_bias)
    impl = resolve_backend(backend, device, OP)
    if impl == "reference":
        fn = reference.mamba_selective_scan(device)
        return fn(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                  return_last_state=return_last_state)
    if impl == "triton":
        out, last = _triton.selective_scan(u, delta, A, Bc, Cc, D, z, delta_bias, bool(delta_softplus))
    else:
        out, last, _ = torch.ops.hands3c.selective_scan_fwd(u, delta, A, Bc, Cc, D, z, delta_bias,
                                                            bool(delta_softplus))
    return (out, last) if return_last_state else out


def _register_autograd(fwd: str, bwd, backward_plan=None) -> None:
    """Autograd of a forward operator ``fwd`` (``hands3c::selective_scan_fwd`` or its Triton twin).

    Both families take ``(u, delta, A, B, C, D, z, delta_bias, delta_softplus, *plan)`` and return
    ``(out, last_state, checkpoints)``; ``bwd`` is the family's backward operator, called with the
    forward's inputs, its checkpoints and ``backward_plan(plan)`` (the Triton launch plan; nothing
    for the C++ family).
    """
    def setup_context(ctx, inputs, output):
        u, delta, A, B, C, D, z, delta_bias, delta_softplus = inputs[:9]
        ctx.delta_softplus = bool(delta_softplus)
        ctx.has = (D is not None, z is not None, delta_bias is not None)
        ctx.n_plan = len(inputs) - 9
        ctx.plan = tuple(backward_plan(inputs[9:])) if backward_plan is not None else ()
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])

    def backward(ctx, dout, dlast, _dckpt):
        u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
        check_checkpoints(OP, ckpt)
        if dout is None:
            dout = torch.zeros_like(u)
        if dlast is not None:
            dlast = dlast.contiguous()  # the kernels index it densely; autograd may hand an expanded view
        du, ddelta, dA, dB, dC, dD, dz, ddb = bwd(dout.contiguous(), dlast, u, delta, A, B, C, D, z, delta_bias,
                                                  ctx.delta_softplus, ckpt, *ctx.plan)
        has_d, has_z, has_db = ctx.has
        return (du, ddelta, dA, dB, dC, dD if has_d else None, dz if has_z else None,
                ddb if has_db else None, None) + (None,) * ctx.n_plan

    torch.library.register_autograd(fwd, backward, setup_context=setup_context)


def _empty(t):
    return t.new_empty((0,), dtype=torch.float32)


if _ext.HAS_CPU_EXT:
    @torch.library.register_fake("hands3c::selective_scan_fwd")
    def _selective_scan_fwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        _checks.selective_scan_fwd("hands3c::selective_scan_fwd", u, delta, A, B, C, D, z, delta_bias)
        batch, dim, L = u.shape
        N = A.shape[1]
        nchunks = (L + CHECKPOINT_STRIDE - 1) // CHECKPOINT_STRIDE
        out = torch.empty_like(u, memory_format=torch.contiguous_format)
        last = u.new_empty((batch, dim, N), dtype=torch.float32)
        ckpt = u.new_empty((batch, dim, nchunks, N), dtype=torch.float32)
        return out, last, ckpt

    @torch.library.register_fake("hands3c::selective_scan_bwd")
    def _selective_scan_bwd_fake(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                 checkpoints):
        _checks.selective_scan_bwd("hands3c::selective_scan_bwd", dout, dlast_state, u, delta, A, B, C, D, z,
                                   delta_bias, checkpoints)
        cf = torch.contiguous_format
        return (torch.empty_like(u, memory_format=cf), torch.empty_like(delta, memory_format=cf),
                torch.empty_like(A), B.new_empty(B.shape), C.new_empty(C.shape),
                torch.empty_like(D) if D is not None else _empty(u),
                torch.empty_like(z, memory_format=cf) if z is not None else _empty(u),
                torch.empty_like(delta_bias) if delta_bias is not None else _empty(u))

    _register_autograd("hands3c::selective_scan_fwd", torch.ops.hands3c.selective_scan_bwd)

_triton = None
if triton_available():
    from ..triton_kernels import selective_scan as _triton
    from ..triton_kernels._plan import backward_plan

    _register_autograd("hands3c::selective_scan_fwd_triton", torch.ops.hands3c.selective_scan_bwd_triton,
                       backward_plan)
