"""``cross_scan_selective_scan``: the fused 2-D cross-scan selective scan (SPEC §2).

Contract
--------
``cross_scan_selective_scan(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
*, out_order=None, backend="auto") -> y``

* ``u``: (B, D, P, Q) float32 / float16 / bfloat16, any strides (the S3C channel branch
  passes a permuted view; no copy is made when the (P, Q) plane can be addressed as one
  index).  Half-precision ``u`` is read as float32.
* ``x_proj_weight`` (4, R+2N, D), ``dt_projs_weight`` (4, D, R), ``dt_projs_bias`` (4, D),
  ``A_logs`` (4D, N), ``Ds`` (4D,): float32 parameters.  N <= 64.
* returns ``y`` (B, D, P, Q) float32: the sum over the four traversal directions of the
  selective scan with softplus(delta + bias), A = -exp(A_logs), skip term Ds, where per
  direction ``[dt_low, B, C] = x_proj_weight[k] @ u`` and ``delta = dt_projs_weight[k] @ dt_low``.
* ``out_order``: the memory layout of ``y``, a permutation of (0, 1, 2, 3) giving the order
  of its logical (B, D, P, Q) dimensions in memory, outermost first: ``y.permute(out_order)``
  is contiguous.  None (default) = (0, 1, 2, 3), a contiguous ``y``.  ``y``'s shape and values
  do not depend on it (bitwise, on the CPU kernels).  The S3C block asks for (0, 2, 3, 1) in
  the spatial branch and (0, 3, 1, 2) in the channel branch, so both branch outputs, seen as
  (B, H, W, d_inner), are contiguous rows for the merge.  The CPU kernels and the Triton
  forward write ``y`` through its strides; the CUDA kernels and the reference write it
  contiguously and copy it into the requested layout.

Differentiable with respect to every input; the incoming gradient may have any strides
(the CPU backward reads it through them; CUDA and Triton make it contiguous first).  The
fused kernels never build the four
traversal copies of ``u`` nor the (B, 4, D, L) delta tensors: they walk each direction by
index arithmetic and compute delta on the fly from the rank-R ``dt_low``.

Operators (namespace ``hands3c``)
---------------------------------
``cross_scan_fwd(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_order=None)
-> (out (B,D,P,Q) f32 laid out in out_order, dbl (B, L, 4, R+2N) f32, checkpoints (B, 4, D,
ceil(L/64), N) f32)`` where ``dbl`` holds the per-position projections and ``checkpoints`` the scan state at the
start of every 64-step chunk of each direction (what the backward recomputes from).
``cross_scan_bwd(dout, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, dbl,
checkpoints) -> (du, dx_proj_weight, ddt_projs_weight, ddt_projs_bias, dA_logs, dDs)``, with
``dout`` (B, D, P, Q) of any strides and ``du`` contiguous.  An ``out_order`` that is not a
permutation of (0, 1, 2, 3) is refused with a ``ValueError`` naming it (a ``TypeError`` for
non-integers) by this wrapper, the registered operators and their fake kernels alike.
The Triton family (``kernels/cross_scan.py``) has the same two operators with a ``_triton``
suffix, launch-plan integers appended and ``out_order`` last; one autograd definition serves
both families.
"""
from __future__ import annotations

import torch

from .. import _ext, reference
from . import _checks
from ._backend import (check_checkpoints, check_same_device, check_shape, check_tensor, resolve_backend,
                       triton_available)
from ._checks import _SCAN_FLOATS as _FLOATS, CHECKPOINT_STRIDE, MAX_STATE

OP = "cross_scan_selective_scan"


def _validate(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds):
    check_tensor(OP, "u", u, 4, _FLOATS)
    check_tensor(OP, "x_proj_weight", x_proj_weight, 3, (torch.float32,))
    check_tensor(OP, "dt_projs_weight", dt_projs_weight, 3, (torch.float32,))
    check_tensor(OP, "dt_projs_bias", dt_projs_bias, 2, (torch.float32,))
    check_tensor(OP, "A_logs", A_logs, 2, (torch.float32,))
    check_tensor(OP, "Ds", Ds, 1, (torch.float32,))
    Bn, D, P, Q = u.shape
    if min(Bn, D, P, Q) < 1:
        raise ValueError(f"{OP}: u must have no empty dimension, got shape {tuple(u.shape)}")
    if dt_projs_weight.shape[0] != 4 or dt_projs_weight.shape[1] != D:
        raise ValueError(f"{OP}: dt_projs_weight must have shape (4, D={D}, R), got {tuple(dt_projs_weight.shape)}")
    R = dt_projs_weight.shape[2]
    if A_logs.shape[0] != 4 * D:
        raise ValueError(f"{OP}: A_logs must have shape (4*D={4 * D}, N), got {tuple(A_logs.shape)}")
    N = A_logs.shape[1]
    if not 1 <= N <= MAX_STATE:
        raise ValueError(f"{OP}: the state size N (A_logs.shape[1]) must be in 1..{MAX_STATE}, got {N}")
    check_shape(OP, "x_proj_weight", x_proj_weight, (4, R + 2 * N, D))
    check_shape(OP, "dt_projs_bias", dt_projs_bias, (4, D))
    check_shape(OP, "Ds", Ds, (4 * D,))
    return check_same_device(OP, u=u, x_proj_weight=x_proj_weight, dt_projs_weight=dt_projs_weight,
                             dt_projs_bias=dt_projs_bias, A_logs=A_logs, Ds=Ds)


def cross_scan_selective_scan(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, *,
                              out_order=None, backend: str = "auto") -> torch.Tensor:
    """Fused CrossScanSelectiveScan; see the module docstring for the full contract.

    Returns y (B, D, P, Q) float32 stored in ``out_order`` (None: contiguous).
    """
    order = _checks.cross_scan_out_order(OP, out_order)
    device = _validate(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds)
    impl = resolve_backend(backend, device, OP)
    if u.dtype != torch.float32:
        u = u.float()
    wanted = None if order == _checks.IDENTITY_ORDER else list(order)
    if impl == "reference":
        y = reference.cross_scan_selective_scan_ref(u, x_proj_weight, dt_projs_weight, dt_projs_bias,
                                                    A_logs, Ds).float()
        if wanted is None:
            return y
        out = _checks.empty_in_order(y.shape, order, y)
        return out.copy_(y)
    if impl == "triton":
        return _triton.cross_scan_selective_scan(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
                                                 out_order=wanted)
    return torch.ops.hands3c.cross_scan_fwd(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
                                            wanted)[0]


def _register_autograd(fwd: str, bwd, n_plan: int = 0, backward_plan=None) -> None:
    """Autograd of a forward operator ``fwd`` (``hands3c::cross_scan_fwd`` or its Triton twin).

    Both families take ``(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, *plan,
    out_order)`` (``n_plan`` launch-plan arguments) and return ``(y, dbl, checkpoints)``; ``bwd``
    is the family's backward operator, called with the incoming gradient as it comes (any
    strides: with ``out_order`` it usually has y's layout), the forward's inputs, ``dbl``, the
    checkpoints and ``backward_plan(plan)``.
    """
    def setup_context(ctx, inputs, output):
        _, dbl, ckpt = output
        ctx.n_rest = len(inputs) - 6
        ctx.plan = tuple(backward_plan(inputs[6:6 + n_plan])) if backward_plan is not None else ()
        ctx.save_for_backward(*inputs[:6], dbl, ckpt)

    def backward(ctx, dout, _ddbl, _dckpt):
        u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, dbl, ckpt = ctx.saved_tensors
        check_checkpoints(OP, ckpt)
        grads = bwd(dout, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, dbl, ckpt, *ctx.plan)
        return tuple(grads) + (None,) * ctx.n_rest

    torch.library.register_autograd(fwd, backward, setup_context=setup_context)


if _ext.HAS_CPU_EXT:
    @torch.library.register_fake("hands3c::cross_scan_fwd")
    def _cross_scan_fwd_fake(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_order=None):
        _checks.cross_scan_fwd("hands3c::cross_scan_fwd", u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds)
        order = _checks.cross_scan_out_order("hands3c::cross_scan_fwd", out_order)
        Bn, D, P, Q = u.shape
        L = P * Q
        N = A_logs.shape[1]
        C = x_proj_weight.shape[1]
        nchunks = (L + CHECKPOINT_STRIDE - 1) // CHECKPOINT_STRIDE
        out = _checks.empty_in_order((Bn, D, P, Q), order, u)
        dbl = u.new_empty((Bn, L, 4, C), dtype=torch.float32)
        ckpt = u.new_empty((Bn, 4, D, nchunks, N), dtype=torch.float32)
        return out, dbl, ckpt

    @torch.library.register_fake("hands3c::cross_scan_bwd")
    def _cross_scan_bwd_fake(dout, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, dbl, checkpoints):
        _checks.cross_scan_bwd("hands3c::cross_scan_bwd", dout, u, x_proj_weight, dt_projs_weight, dt_projs_bias,
                               A_logs, Ds, dbl, checkpoints)
        return (torch.empty_like(u, dtype=torch.float32, memory_format=torch.contiguous_format),
                torch.empty_like(x_proj_weight), torch.empty_like(dt_projs_weight),
                torch.empty_like(dt_projs_bias), torch.empty_like(A_logs), torch.empty_like(Ds))

    _register_autograd("hands3c::cross_scan_fwd", torch.ops.hands3c.cross_scan_bwd)

_triton = None
if triton_available():
    from ..triton_kernels import cross_scan as _triton
    from ..triton_kernels._plan import backward_plan

    _register_autograd("hands3c::cross_scan_fwd_triton", torch.ops.hands3c.cross_scan_bwd_triton, 4, backward_plan)
