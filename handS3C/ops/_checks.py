"""Argument checks of the registered ``hands3c`` operators on the Python side.

The C++ operators check their arguments in ``csrc/include/hands3c/op_checks.h``.  What runs
in Python needs the same guarantees:

* fake kernels (``register_fake``): the dispatcher sends a call to the fake kernel as soon as
  one argument is a meta tensor, so a fake kernel must refuse tensors on different devices
  (else it would return uninitialised CPU memory for a call mixing CPU and meta tensors) and
  build its outputs on the one device of its inputs;
* the Triton operators (``hands3c::*_triton``), whose bodies launch kernels that index raw
  pointers: they get the full checks below before any launch, and so do their fake kernels.

Messages and exception types follow the C++ checks: shapes and devices raise ``ValueError``,
dtypes and layouts ``TypeError``, and every message starts with the operator's name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

CHECKPOINT_STRIDE = 64
MAX_STATE = 64
MERGE_MAX_DIMS = 8
_SCAN_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_INT32_MAX = 2 ** 31 - 1


def same_device(op: str, **tensors: Optional[torch.Tensor]) -> torch.device:
    """All present (non-None) tensor arguments are dense tensors on one device; returns it.

    The check every fake kernel makes first: outputs are then created on the returned device.
    """
    device = None
    first = None
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise TypeError(f"{op}: {name} must be a dense (strided) tensor, got layout {t.layout}")
        if device is None:
            device, first = t.device, name
        elif t.device != device:
            raise ValueError(f"{op}: all tensors must be on one device, but {first} is on {device} "
                             f"and {name} is on {t.device}")
    if device is None:
        raise ValueError(f"{op}: no tensor argument")
    return device


def _dtype(op: str, name: str, t: torch.Tensor, dtypes: Sequence[torch.dtype]) -> None:
    if t.dtype not in dtypes:
        names = [str(d).replace("torch.", "") for d in dtypes]
        want = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        raise TypeError(f"{op}: {name} must be {want}, got {t.dtype}")


def _shape(op: str, name: str, t: torch.Tensor, shape) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {list(shape)}, got {list(t.shape)}")


def _stride(op: str, name: str, value: int, *, power_of_two: bool = False, allow_zero: bool = False) -> None:
    """A launch-plan integer of a Triton operator (tile, chunk_tiles, block_d, bwd_sub)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")
    if value == 0 and allow_zero:
        return
    if value < 1 or (power_of_two and value & (value - 1)):
        want = "a power of two" if power_of_two else "a positive integer"
        raise ValueError(f"{op}: {name} must be {want}{' or 0 (automatic)' if allow_zero else ''}, got {value}")


# ---- cross scan ---------------------------------------------------------------------------

@dataclass
class CrossScanDims:
    B: int
    D: int
    P: int
    Q: int
    L: int
    R: int
    N: int
    C: int


def cross_scan_params(op, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
                      u_dtypes=_SCAN_FLOATS) -> CrossScanDims:
    if u.dim() != 4:
        raise ValueError(f"{op}: u must have shape (B, D, P, Q), got {list(u.shape)}")
    _dtype(op, "u", u, u_dtypes)
    B, D, P, Q = u.shape
    if min(B, D, P, Q) < 1:
        raise ValueError(f"{op}: u must have no empty dimension, got {list(u.shape)}")
    if P * Q > _INT32_MAX:
        raise ValueError(f"{op}: the plane P*Q must have < 2^31 positions, got {P * Q}")
    _dtype(op, "dt_projs_weight", dt_projs_weight, (torch.float32,))
    if dt_projs_weight.dim() != 3 or dt_projs_weight.shape[0] != 4 or dt_projs_weight.shape[1] != D:
        raise ValueError(f"{op}: dt_projs_weight must have shape (4, D={D}, R), got {list(dt_projs_weight.shape)}")
    R = dt_projs_weight.shape[2]
    _dtype(op, "A_logs", A_logs, (torch.float32,))
    if A_logs.dim() != 2 or A_logs.shape[0] != 4 * D:
        raise ValueError(f"{op}: A_logs must have shape (4*D={4 * D}, N), got {list(A_logs.shape)}")
    N = A_logs.shape[1]
    if not 1 <= N <= MAX_STATE:
        raise ValueError(f"{op}: the state size N (A_logs.shape[1]) must be in 1..{MAX_STATE}, got {N}")
    C = R + 2 * N
    _dtype(op, "x_proj_weight", x_proj_weight, (torch.float32,))
    _shape(op, "x_proj_weight", x_proj_weight, (4, C, D))
    _dtype(op, "dt_projs_bias", dt_projs_bias, (torch.float32,))
    _shape(op, "dt_projs_bias", dt_projs_bias, (4, D))
    _dtype(op, "Ds", Ds, (torch.float32,))
    _shape(op, "Ds", Ds, (4 * D,))
    return CrossScanDims(B, D, P, Q, P * Q, R, N, C)


def cross_scan_fwd(op, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, *,
                   u_dtypes=_SCAN_FLOATS) -> CrossScanDims:
    same_device(op, u=u, x_proj_weight=x_proj_weight, dt_projs_weight=dt_projs_weight,
                dt_projs_bias=dt_projs_bias, A_logs=A_logs, Ds=Ds)
    return cross_scan_params(op, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, u_dtypes)


def cross_scan_bwd(op, dout, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, dbl, checkpoints, *,
                   ckpt_stride: int = CHECKPOINT_STRIDE, u_dtypes=_SCAN_FLOATS) -> CrossScanDims:
    same_device(op, dout=dout, u=u, x_proj_weight=x_proj_weight, dt_projs_weight=dt_projs_weight,
                dt_projs_bias=dt_projs_bias, A_logs=A_logs, Ds=Ds, dbl=dbl, checkpoints=checkpoints)
    d = cross_scan_params(op, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, u_dtypes)
    _dtype(op, "dout", dout, u_dtypes)
    _shape(op, "dout (u's shape)", dout, u.shape)
    _dtype(op, "dbl", dbl, (torch.float32,))
    _shape(op, "dbl (B, L, 4, R+2N)", dbl, (d.B, d.L, 4, d.C))
    _dtype(op, "checkpoints", checkpoints, (torch.float32,))
    _shape(op, f"checkpoints (B, 4, D, ceil(L/{ckpt_stride}), N)", checkpoints,
           (d.B, 4, d.D, -(-d.L // ckpt_stride), d.N))
    return d


IDENTITY_ORDER = (0, 1, 2, 3)


def cross_scan_out_order(op, out_order) -> tuple:
    """``out_order`` of the cross-scan forward -> the permutation as a tuple (None: identity).

    It is the memory order of y's logical (B, D, P, Q) dimensions, outermost first, so that
    ``y.permute(out_order)`` is contiguous.  Raises ``TypeError`` for a non-sequence or
    non-int entries, ``ValueError`` for anything but a permutation of (0, 1, 2, 3).
    """
    if out_order is None:
        return IDENTITY_ORDER
    want = "a permutation of (0, 1, 2, 3) (the memory order of y's (B, D, P, Q) dimensions, outermost first)"
    if isinstance(out_order, (str, bytes)) or not isinstance(out_order, (list, tuple)):
        raise TypeError(f"{op}: out_order must be None or {want}, got {type(out_order).__name__}")
    for v in out_order:
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{op}: out_order must be {want} of ints, got {list(out_order)!r}")
    if sorted(out_order) != [0, 1, 2, 3]:
        raise ValueError(f"{op}: out_order must be {want}, got {list(out_order)}")
    return tuple(out_order)


def empty_in_order(shape, order, like: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """An uninitialised tensor of logical ``shape`` whose dimensions lie in memory in ``order``
    (outermost first): ``t.permute(order)`` is contiguous.  On ``like``'s device."""
    storage = like.new_empty([shape[o] for o in order], dtype=dtype)
    inverse = [0] * len(order)
    for i, o in enumerate(order):
        inverse[o] = i
    return storage.permute(inverse)


# ---- selective scan -----------------------------------------------------------------------

@dataclass
class SelectiveScanDims:
    batch: int
    dim: int
    L: int
    N: int


def selective_scan_params(op, u, delta, A, B, C, D, z, delta_bias) -> SelectiveScanDims:
    if u.dim() != 3:
        raise ValueError(f"{op}: u must have shape (batch, dim, L), got {list(u.shape)}")
    _dtype(op, "u", u, _SCAN_FLOATS)
    batch, dim, L = u.shape
    if min(batch, dim, L) < 1:
        raise ValueError(f"{op}: u must have no empty dimension, got {list(u.shape)}")
    if L > _INT32_MAX:
        raise ValueError(f"{op}: L must be below 2^31, got {L}")
    _shape(op, "delta (u's shape)", delta, u.shape)
    if delta.dtype != u.dtype:
        raise TypeError(f"{op}: delta must have u's dtype {u.dtype}, got {delta.dtype}")
    if A.is_complex():
        raise TypeError(f"{op}: complex A is not supported (A has dtype {A.dtype})")
    _dtype(op, "A", A, (torch.float32,))
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"{op}: A must have shape (dim={dim}, N), got {list(A.shape)}")
    N = A.shape[1]
    if not 1 <= N <= MAX_STATE:
        raise ValueError(f"{op}: the state size N (A.shape[1]) must be in 1..{MAX_STATE}, got {N}")
    for name, M in (("B", B), ("C", C)):
        _dtype(op, name, M, _SCAN_FLOATS)
        if not (M.dim() == 4 and M.shape[0] == batch and M.shape[1] >= 1 and dim % M.shape[1] == 0
                and M.shape[2] == N and M.shape[3] == L):
            raise ValueError(f"{op}: {name} must be (batch={batch}, G, N={N}, L={L}) with G groups dividing "
                             f"dim={dim}, got shape {list(M.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _dtype(op, name, t, (torch.float32,))
            _shape(op, name, t, (dim,))
    if z is not None:
        _shape(op, "z (u's shape)", z, u.shape)
        if z.dtype != u.dtype:
            raise TypeError(f"{op}: z must have u's dtype {u.dtype}, got {z.dtype}")
    return SelectiveScanDims(batch, dim, L, N)


def selective_scan_fwd(op, u, delta, A, B, C, D, z, delta_bias) -> SelectiveScanDims:
    same_device(op, u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    return selective_scan_params(op, u, delta, A, B, C, D, z, delta_bias)


def selective_scan_bwd(op, dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, checkpoints, *,
                       ckpt_stride: int = CHECKPOINT_STRIDE) -> SelectiveScanDims:
    same_device(op, dout=dout, dlast_state=dlast_state, u=u, delta=delta, A=A, B=B, C=C, D=D, z=z,
                delta_bias=delta_bias, checkpoints=checkpoints)
    s = selective_scan_params(op, u, delta, A, B, C, D, z, delta_bias)
    _shape(op, "dout (u's shape)", dout, u.shape)
    if dout.dtype != u.dtype:
        raise TypeError(f"{op}: dout must have u's dtype {u.dtype}, got {dout.dtype}")
    if dlast_state is not None:
        _dtype(op, "dlast_state", dlast_state, (torch.float32,))
        _shape(op, "dlast_state (batch, dim, N)", dlast_state, (s.batch, s.dim, s.N))
    _dtype(op, "checkpoints", checkpoints, (torch.float32,))
    _shape(op, f"checkpoints (batch, dim, ceil(L/{ckpt_stride}), N)", checkpoints,
           (s.batch, s.dim, -(-s.L // ckpt_stride), s.N))
    return s


# ---- merge --------------------------------------------------------------------------------

def merge_params(op, y_spatial, y_channel, z, weight, bias):
    """-> (C, M): the normalised dimension and the number of rows."""
    if not 1 <= y_spatial.dim() <= MERGE_MAX_DIMS:
        raise ValueError(f"{op}: y_spatial must have 1 to {MERGE_MAX_DIMS} dimensions, got shape "
                         f"{list(y_spatial.shape)}")
    _dtype(op, "y_spatial", y_spatial, (torch.float32,))
    _dtype(op, "y_channel", y_channel, (torch.float32,))
    _dtype(op, "z", z, _SCAN_FLOATS)
    _shape(op, "y_channel (y_spatial's shape)", y_channel, y_spatial.shape)
    _shape(op, "z (y_spatial's shape)", z, y_spatial.shape)
    C = y_spatial.shape[-1]
    if C < 1:
        raise ValueError(f"{op}: the last (normalised) dimension of y_spatial must be non-empty, got shape "
                         f"{list(y_spatial.shape)}")
    _dtype(op, "weight", weight, (torch.float32,))
    _shape(op, "weight (C,)", weight, (C,))
    _dtype(op, "bias", bias, (torch.float32,))
    _shape(op, "bias (C,)", bias, (C,))
    return C, y_spatial.numel() // C


def merge_fwd(op, y_spatial, y_channel, z, weight, bias, eps):
    same_device(op, y_spatial=y_spatial, y_channel=y_channel, z=z, weight=weight, bias=bias)
    C, M = merge_params(op, y_spatial, y_channel, z, weight, bias)
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"{op}: eps must be a positive finite number, got {eps!r}")
    return C, M


def merge_bwd(op, dout, y_spatial, y_channel, z, weight, bias, mean, rstd):
    same_device(op, dout=dout, y_spatial=y_spatial, y_channel=y_channel, z=z, weight=weight, bias=bias,
                mean=mean, rstd=rstd)
    C, M = merge_params(op, y_spatial, y_channel, z, weight, bias)
    _dtype(op, "dout", dout, _SCAN_FLOATS)
    _shape(op, "dout (y_spatial's shape)", dout, y_spatial.shape)
    for name, t in (("mean", mean), ("rstd", rstd)):
        _dtype(op, name, t, (torch.float32,))
        _shape(op, f"{name} (one value per row)", t, (M,))
    return C, M


# ---- Triton launch-plan integers ------------------------------------------------------------

def triton_plan(op, *, tile=None, chunk_tiles=None, block_d=None, bwd_sub=None) -> None:
    """The launch-plan integers of the ``*_triton`` operators (0 = automatic where allowed)."""
    if tile is not None:
        _stride(op, "tile", tile, power_of_two=True)
    if chunk_tiles is not None:
        _stride(op, "chunk_tiles", chunk_tiles, allow_zero=True)
    if block_d is not None:
        _stride(op, "block_d", block_d, power_of_two=True, allow_zero=True)
    if bwd_sub is not None:
        _stride(op, "bwd_sub", bwd_sub, allow_zero=True)


# ---- the Triton operators (hands3c::*_triton) -----------------------------------------------
# Their bodies launch kernels that index some arguments densely (projections, checkpoints,
# output gradients, per-channel vectors): each helper validates every argument (the checkpoint
# stride is the operator's ``tile``) and returns those arguments contiguous.  The fake kernels
# call the same helpers, so torch.compile refuses what eager refuses.

def _contig(*ts):
    return tuple(None if t is None else t.contiguous() for t in ts)


def _same_groups(op, B, C) -> None:
    """The Triton selective-scan kernels index B and C with one group count (B's)."""
    if B.shape[1] != C.shape[1]:
        raise ValueError(f"{op}: B and C must have the same number of groups for the Triton kernels, got "
                         f"{B.shape[1]} and {C.shape[1]} (repeat the coarser one's groups to the finer count)")


def triton_cross_scan_fwd(op, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, tile, chunk_tiles,
                          block_d) -> CrossScanDims:
    triton_plan(op, tile=tile, chunk_tiles=chunk_tiles, block_d=block_d)
    return cross_scan_fwd(op, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
                          u_dtypes=(torch.float32,))


def triton_cross_scan_bwd(op, dout, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, dbl, checkpoints,
                          tile, chunk_tiles, block_d, bwd_sub):
    """-> (dout, dbl, checkpoints) contiguous."""
    triton_plan(op, tile=tile, chunk_tiles=chunk_tiles, block_d=block_d, bwd_sub=bwd_sub)
    cross_scan_bwd(op, dout, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, dbl, checkpoints,
                   ckpt_stride=tile, u_dtypes=(torch.float32,))
    return _contig(dout, dbl, checkpoints)


def triton_selective_scan_fwd(op, u, delta, A, B, C, D, z, delta_bias, tile, chunk_tiles, block_d):
    """-> (D, delta_bias) contiguous (or None)."""
    triton_plan(op, tile=tile, chunk_tiles=chunk_tiles, block_d=block_d)
    selective_scan_fwd(op, u, delta, A, B, C, D, z, delta_bias)
    _same_groups(op, B, C)
    return _contig(D, delta_bias)


def triton_selective_scan_bwd(op, dout, dlast, u, delta, A, B, C, D, z, delta_bias, checkpoints, tile, chunk_tiles,
                              block_d, bwd_sub):
    """-> (dout, dlast, D, delta_bias, checkpoints) contiguous (or None)."""
    triton_plan(op, tile=tile, chunk_tiles=chunk_tiles, block_d=block_d, bwd_sub=bwd_sub)
    selective_scan_bwd(op, dout, dlast, u, delta, A, B, C, D, z, delta_bias, checkpoints, ckpt_stride=tile)
    _same_groups(op, B, C)
    return _contig(dout, dlast, D, delta_bias, checkpoints)


def triton_merge_bwd(op, dout, y_spatial, y_channel, z, weight, bias, mean, rstd):
    """-> (dout, mean, rstd) contiguous."""
    merge_bwd(op, dout, y_spatial, y_channel, z, weight, bias, mean, rstd)
    return _contig(dout, mean, rstd)
