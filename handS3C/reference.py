"""The published S3C computation in plain PyTorch (SPEC §2), used as the reference.

Everything here follows the published code path step by step: the four traversal copies
are materialised (cross-scan), the selective scan runs over them through mamba-ssm
(``selective_scan_ref`` on CPU, the compiled ``selective_scan_fn`` on CUDA when mamba-ssm's
extension is present), and the outputs are re-aligned and summed (cross-merge).  The fused
operators in :mod:`handS3C.ops` must equal these functions.

``selective_scan_ref64`` is an independent transcription of the same recurrence (no
mamba-ssm involved), float64 by default, with an O(L) hand-written backward of the
recurrence: the one reference every test that needs a float64 ground truth (or a fast
float32 stand-in for mamba-ssm's O(L^2) backward) uses.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from typing import Callable, Optional

import torch
import torch.nn.functional as F

__all__ = [
    "mamba_selective_scan_ref",
    "mamba_selective_scan_cuda_fn",
    "mamba_selective_scan",
    "selective_scan_ref64",
    "cross_scan",
    "cross_merge",
    "align_directions",
    "cross_scan_inputs",
    "cross_scan_selective_scan_ref",
    "s3c_merge_ref",
]

_MAMBA_REF: Optional[Callable] = None
_MAMBA_CUDA_FN: Optional[Callable] = None
_MAMBA_LOADED = False


def _load_mamba_interface():
    """Import ``mamba_ssm.ops.selective_scan_interface`` on machines without its CUDA module.

    mamba-ssm's package ``__init__`` imports its models, and the interface module imports
    the compiled ``selective_scan_cuda`` at top level; neither works on a CPU-only machine
    (SPEC §5).  We load the interface file with a bare ``mamba_ssm`` package object and,
    only if the real compiled module is missing, a placeholder ``selective_scan_cuda``.
    Every ``sys.modules`` entry added for this is removed afterwards, so nothing outside
    this import sees the placeholders.
    """
    global _MAMBA_REF, _MAMBA_CUDA_FN, _MAMBA_LOADED
    if _MAMBA_LOADED:
        return
    _MAMBA_LOADED = True
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None or not spec.submodule_search_locations:
        return
    pkg_dir = list(spec.submodule_search_locations)[0]
    iface_path = os.path.join(pkg_dir, "ops", "selective_scan_interface.py")
    if not os.path.exists(iface_path):
        return
    try:
        has_cuda_module = importlib.util.find_spec("selective_scan_cuda") is not None
    except (ImportError, ValueError):
        has_cuda_module = False
    before = set(sys.modules)
    saved = {k: sys.modules[k] for k in ("mamba_ssm", "selective_scan_cuda") if k in sys.modules}
    try:
        if "mamba_ssm" not in sys.modules:
            bare = types.ModuleType("mamba_ssm")
            bare.__path__ = [pkg_dir]
            sys.modules["mamba_ssm"] = bare
        if not has_cuda_module and "selective_scan_cuda" not in sys.modules:
            sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
        mod_spec = importlib.util.spec_from_file_location("_hands3c_mamba_selective_scan_interface", iface_path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        _MAMBA_REF = module.selective_scan_ref
        if has_cuda_module:
            _MAMBA_CUDA_FN = module.selective_scan_fn
    except Exception:  # mamba-ssm present but unusable: callers get a clear error below
        _MAMBA_REF = None
        _MAMBA_CUDA_FN = None
    finally:
        if not has_cuda_module or "mamba_ssm" not in saved:
            for key in set(sys.modules) - before:
                if key == "mamba_ssm" or key.startswith("mamba_ssm.") or key == "selective_scan_cuda":
                    del sys.modules[key]
        sys.modules.update(saved)


def mamba_selective_scan_ref() -> Callable:
    """mamba-ssm's ``selective_scan_ref`` (raises ``ImportError`` naming the fix if absent)."""
    _load_mamba_interface()
    if _MAMBA_REF is None:
        raise ImportError(
            "mamba-ssm is not installed (or its selective_scan_interface failed to load). Install it "
            "as README/SPEC §5 describe: MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE "
            "pip install --no-build-isolation --no-deps mamba-ssm==2.3.2.post1")
    return _MAMBA_REF


def mamba_selective_scan_cuda_fn() -> Optional[Callable]:
    """mamba-ssm's compiled ``selective_scan_fn`` when its CUDA module exists, else ``None``."""
    _load_mamba_interface()
    return _MAMBA_CUDA_FN


def mamba_selective_scan(device) -> Callable:
    """The mamba-ssm function that is "the reference" for tensors on ``device``: its compiled
    ``selective_scan_fn`` for CUDA tensors when its CUDA module exists, else ``selective_scan_ref``.
    The one place this choice is made (the operators, the published path and the benchmarks ask)."""
    if torch.device(device).type == "cuda":
        cuda_fn = mamba_selective_scan_cuda_fn()
        if cuda_fn is not None:
            return cuda_fn
    return mamba_selective_scan_ref()


class _single_thread:
    """Run a loop of small per-step ops on one intra-op thread: with two threads each step pays
    a thread hand-off, which costs milliseconds on a busy 2-core machine."""

    def __enter__(self):
        self._n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self._n)
        return False


class _LinearRecurrence(torch.autograd.Function):
    """``h[t] = a[t] * h[t-1] + b[t]`` along dim 0 (``h[-1] = 0``), with its adjoint written out.

    a, b: (L, ...) of one float dtype.  Forward and backward run one in-place step per t into
    preallocated buffers (no per-step allocation, no per-step autograd node), so the backward
    costs what the forward does: O(L), where autograd through a per-step loop is O(L^2)
    (SPEC §5).  Backward: the adjoint ``g[t] = gh[t] + a[t+1] * g[t+1]`` gives ``db = g`` and
    ``da[t] = g[t] * h[t-1]``.
    """

    @staticmethod
    def forward(ctx, a, b):
        a = a.contiguous()
        h = b.contiguous().clone()
        with _single_thread():
            for t in range(1, h.shape[0]):
                h[t].addcmul_(a[t], h[t - 1])
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, gh):
        a, h = ctx.saved_tensors
        g = gh.contiguous().clone()
        with _single_thread():
            for t in range(g.shape[0] - 2, -1, -1):
                g[t].addcmul_(a[t + 1], g[t + 1])
        ga = torch.zeros_like(a)
        ga[1:] = g[1:] * h[:-1]
        return ga, g


def selective_scan_ref64(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, dtype=torch.float64):
    """The selective scan written out independently of mamba-ssm (same contract as its
    ``selective_scan_ref``), computed in ``dtype`` (float64: the tests' ground truth), with an
    O(L) backward: the recurrence has a hand-written adjoint (:class:`_LinearRecurrence`),
    everything around it is whole-tensor autograd.  The one such reference of the project.

    Shapes: u, delta, z (batch, dim, L); A (dim, N) real; B, C (dim, N), (batch, N, L) or
    (batch, groups, N, L); D, delta_bias (dim,).  Returns ``out`` (batch, dim, L) in ``dtype``
    (and the last state (batch, dim, N) in ``dtype``).  Differentiable in every input.
    """
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    u, delta, A, B, C, D, z, delta_bias = map(cast, (u, delta, A, B, C, D, z, delta_bias))
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, L = u.shape
    N = A.shape[1]
    # step-major layout (L, batch, dim, N): every step of the recurrence is one contiguous slab
    d_t = delta.permute(2, 0, 1)                                                      # (L, b, dim)
    dA = torch.exp(d_t[..., None] * A)                                                # (L, b, dim, N)
    du_t = d_t * u.permute(2, 0, 1)                                                   # (L, b, dim)

    def per_group(M):  # -> (L, b|1, G, 1, N) and G, without materialising per-channel copies
        if M.dim() == 2:
            return M.reshape(1, 1, dim, 1, N), dim
        if M.dim() == 3:
            M = M[:, None]
        return M.permute(3, 0, 1, 2)[:, :, :, None, :], M.shape[1]

    Bs, GB = per_group(B)
    Cs, GC = per_group(C)
    dBu = (du_t.reshape(L, batch, GB, dim // GB, 1) * Bs).reshape(L, batch, dim, N)
    h = _LinearRecurrence.apply(dA, dBu)                                              # (L, b, dim, N)
    y = (h.reshape(L, batch, GC, dim // GC, N) * Cs).sum(-1).reshape(L, batch, dim).permute(1, 2, 0)
    out = y if D is None else y + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    return (out, h[-1]) if return_last_state else out


# ---------------------------------------------------------------------------------------
# The published cross-scan path
# ---------------------------------------------------------------------------------------

def cross_scan(u: torch.Tensor) -> torch.Tensor:
    """Materialise the four traversals: u (B, D, P, Q) -> (B, 4, D, P*Q).

    k=0 row-major, k=1 column-major, k=2 and k=3 their reverses (SPEC §2).
    """
    Bn, D, P, Q = u.shape
    row = u.reshape(Bn, D, P * Q)
    col = u.transpose(2, 3).reshape(Bn, D, P * Q)
    xs = torch.stack([row, col], dim=1)
    return torch.cat([xs, torch.flip(xs, dims=[-1])], dim=1)


def align_directions(ys: torch.Tensor, P: int, Q: int) -> torch.Tensor:
    """Map each direction's output (B, 4, D, L) back to row-major plane order (B, 4, D, L)."""
    Bn, K, D, L = ys.shape
    fwd = torch.stack([ys[:, 0], ys[:, 1]], dim=1)
    rev = torch.flip(ys[:, 2:4], dims=[-1])
    col_to_row = lambda t: t.reshape(Bn, D, Q, P).transpose(2, 3).reshape(Bn, D, L)
    return torch.stack([fwd[:, 0], col_to_row(fwd[:, 1]), rev[:, 0], col_to_row(rev[:, 1])], dim=1)


def cross_merge(ys: torch.Tensor, P: int, Q: int) -> torch.Tensor:
    """Re-align the four direction outputs (B, 4, D, L) to row-major order and sum: (B, D, P, Q)."""
    Bn, K, D, L = ys.shape
    return align_directions(ys, P, Q).sum(dim=1).reshape(Bn, D, P, Q)


def cross_scan_inputs(u, x_proj_weight, dt_projs_weight):
    """The published path's selective-scan arguments for one plane.

    Returns ``xs`` (B, 4D, L) direction-major traversals, ``delta`` (B, 4D, L) before bias and
    softplus, and ``Bs``, ``Cs`` (B, 4, N, L).
    """
    Bn, D, P, Q = u.shape
    R = dt_projs_weight.shape[2]
    N = (x_proj_weight.shape[1] - R) // 2
    xs = cross_scan(u)                                                # (B, 4, D, L)
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, x_proj_weight)         # (B, 4, R+2N, L)
    dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, dt_projs_weight)        # (B, 4, D, L)
    L = P * Q
    return xs.reshape(Bn, 4 * D, L), dts.reshape(Bn, 4 * D, L), Bs.contiguous(), Cs.contiguous()


def cross_scan_selective_scan_ref(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
                                  scan_fn: Optional[Callable] = None):
    """The published CrossScanSelectiveScan (SPEC §2), materialising every intermediate.

    u: (B, D, P, Q); x_proj_weight (4, R+2N, D); dt_projs_weight (4, D, R); dt_projs_bias
    (4, D); A_logs (4D, N); Ds (4D,).  Returns (B, D, P, Q) (float32 through mamba-ssm, which
    computes in float32).  ``scan_fn`` defaults to mamba-ssm's compiled ``selective_scan_fn`` on
    CUDA (when present) and ``selective_scan_ref`` elsewhere; pass :func:`selective_scan_ref64`
    for a float64 ground truth.
    """
    Bn, D, P, Q = u.shape
    if scan_fn is None:
        scan_fn = mamba_selective_scan(u.device)
    xs, dts, Bs, Cs = cross_scan_inputs(u, x_proj_weight, dt_projs_weight)
    out = scan_fn(xs, dts, -torch.exp(A_logs), Bs, Cs, Ds, z=None, delta_bias=dt_projs_bias.reshape(-1),
                  delta_softplus=True)
    return cross_merge(out.reshape(Bn, 4, D, P * Q), P, Q)


def s3c_merge_ref(y_spatial, y_channel, z, norm_weight, norm_bias, eps: float = 1e-5):
    """LayerNorm(y_spatial + y_channel) * SiLU(z) over the last dimension."""
    y = F.layer_norm(y_spatial + y_channel, (y_spatial.shape[-1],), norm_weight, norm_bias, eps)
    return y * F.silu(z)
