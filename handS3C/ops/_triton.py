"""Triton backend of the public operators (``backend="triton"``).

Every kernel launch sits inside an operator of namespace ``hands3c`` (``*_fwd_triton`` /
``*_bwd_triton``): a ``torch.library.triton_op`` with compiled Triton, so torch.compile
sees through it (its fake kernel comes from tracing the body), and an opaque
``custom_op`` with an explicit fake kernel under TRITON_INTERPRET=1 (see :func:`_op`).
Autograd is attached with ``register_autograd``.
The kernels live in :mod:`handS3C.triton_kernels` (``kernels/`` in the source tree); this
module only plans launches (tile, chunking, channel blocks), allocates buffers and does
the small deterministic reductions of per-program partial results.

Launch plan knobs, all passed to the operators as explicit integers (0 = automatic):

* ``tile`` (S): steps per register tile and checkpoint stride;
* ``chunk_tiles``: tiles per chunk (the sequence-parallel unit, see DESIGN.md);
* ``block_d``: channels per register tile (automatic: autotuned on a GPU);
* ``bwd_sub``: channel sub-blocks one backward program walks (shrinks the buffers of
  the channel reductions dB/dC).

:func:`scan_config` sets them for a ``with`` block (tests use small tiles and chunks to
exercise every boundary under the CPU interpreter).  ``poison=True`` makes every output
buffer start as NaN instead of uninitialised memory, so a missed store shows up.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import List, Optional, Tuple

import torch
import triton
from torch import Tensor
from torch.library import triton_op, wrap_triton

from handS3C.triton_kernels import cross_scan as _csk
from handS3C.triton_kernels import s3c_merge as _mk
from handS3C.triton_kernels import selective_scan as _ssk

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
if INTERPRET:
    # same results; scans ~15x faster, the tests ~10x (see kernels/_interpreter.py)
    from handS3C.triton_kernels._interpreter import vectorize_interpreter_scan

    vectorize_interpreter_scan()

_CONFIG = {"tile": 0, "chunk_tiles": 0, "block_d": 0, "bwd_sub": 0, "poison": False}


@contextlib.contextmanager
def scan_config(**kwargs):
    """Temporarily override launch-plan knobs: tile, chunk_tiles, block_d, bwd_sub, poison."""
    unknown = set(kwargs) - set(_CONFIG)
    if unknown:
        raise TypeError(f"scan_config: unknown knobs {sorted(unknown)}")
    saved = dict(_CONFIG)
    _CONFIG.update({k: (v if k == "poison" else int(v or 0)) for k, v in kwargs.items()})
    try:
        yield
    finally:
        _CONFIG.clear()
        _CONFIG.update(saved)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _np2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def _new(shape, dtype, device) -> Tensor:
    if _CONFIG["poison"]:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _tile(L: int) -> int:
    """Steps per tile: 32 on a GPU (a (32, BD, NP) tile per scan fits registers for BD<=16)."""
    t = _CONFIG["tile"] or (8 if INTERPRET else 32)
    return max(1, min(_np2(t), _np2(L)))


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def _plan_chunks(n_tiles: int, units: int, device: torch.device, chunk_tiles: int) -> Tuple[int, int]:
    """(tiles per chunk, number of chunks).

    Chunks only buy parallelism and cost an extra pass (pass 1 scans everything once
    more: ~+100% of the forward's exps, ~+30% of the backward's work) and, for the cross
    scan, the single-launch four-direction mode, so a GPU gets chunks only when the
    (batch x channel block) programs would not give every SM one; the interpreter (a CPU)
    gets one chunk.
    """
    if chunk_tiles > 0:
        tpc = min(chunk_tiles, n_tiles)
    elif device.type == "cuda":
        want = max(1, _cdiv(_sm_count(device), max(units, 1)))
        tpc = _cdiv(n_tiles, min(n_tiles, want))
    else:
        tpc = n_tiles
    return tpc, _cdiv(n_tiles, tpc)


# Forward kernels are autotuned over channel-block size and warps (key: problem sizes).
# A forward program keeps ~5 (S, BD, NP) float tiles live (decay, input, two scan outputs,
# C); configs whose tile exceeds 32 floats per thread (S*BD*NP > 1024*num_warps) would
# spill and are pruned before benchmarking.  Backward kernels take BD from the plan (the
# layout of their partial-sum buffers depends on it) and tune warps only.
_FWD_CONFIGS = [
    triton.Config({"BD": 8}, num_warps=4),
    triton.Config({"BD": 4}, num_warps=4),
    triton.Config({"BD": 16}, num_warps=4),
    triton.Config({"BD": 16}, num_warps=8),
    triton.Config({"BD": 32}, num_warps=8),
]
# the backward programs sit at ptxas' 255-register ceiling; at 4 warps the cross-scan one
# spills ~50 B (kernels/_compile_check.py), at 8 warps none
_BWD_CONFIGS = [triton.Config({}, num_warps=8), triton.Config({}, num_warps=4)]


def _prune_fwd(configs, named_args, **kwargs):
    tile = kwargs.get("S", named_args.get("S", 32))
    np_ = kwargs.get("NP", named_args.get("NP", 16))
    keep = [c for c in configs if tile * c.kwargs["BD"] * np_ <= 1024 * c.num_warps]
    return keep or [min(configs, key=lambda c: c.kwargs["BD"])]


def _autotuned(kernel, configs, key, prune=None):
    """The autotuned kernel on a GPU; ``None`` under the interpreter (first config used)."""
    if INTERPRET:
        return None
    prune_by = {"early_config_prune": prune} if prune is not None else None
    return triton.autotune(configs=configs, key=key, prune_configs_by=prune_by)(kernel)


def _launch_fwd(kernel, tuned, grid_of_bd, block_d: int, *args, **kwargs):
    """Launch a forward kernel: autotuned unless the plan fixes ``block_d``."""
    if tuned is not None and not block_d:
        wrap_triton(tuned)[lambda meta: grid_of_bd(meta["BD"])](*args, **kwargs)
    else:
        bd = block_d or _FWD_CONFIGS[0].kwargs["BD"]
        wrap_triton(kernel)[grid_of_bd(bd)](*args, BD=bd, **kwargs)


def _launch_bwd(kernel, tuned, grid, *args, **kwargs):
    if tuned is not None:
        wrap_triton(tuned)[grid](*args, **kwargs)
    else:
        wrap_triton(kernel)[grid](*args, **kwargs)


def _bwd_block_d(block_d: int, width: int, tile: int, np_: int) -> int:
    """Backward channel block: ~8 (S, BD, NP) tiles live (state and adjoint scans, their
    coefficients, B/C), so keep S*BD*NP <= 2048 (16 floats per thread per tile at 4 warps)."""
    if block_d:
        return block_d
    return max(1, min(_np2(width), 2048 // (tile * np_)))


def _plan_outer(n_blocks: int, units: int, byte_cap: int, device: torch.device, bwd_sub: int) -> Tuple[int, int]:
    """(sub-blocks per program, outer blocks) for a backward with channel reductions.

    Every outer block adds one full-size partial buffer of the channel-reduced gradient
    (d(dbl) for the cross scan, dB/dC for the selective scan) that is written and summed
    again; more outer blocks only buy parallelism.  So: as many as fill the SMs at this
    batch (``units`` programs per outer block), at most ``byte_cap`` (partial traffic kept
    below ~2x the input's), at least one; remaining parallelism comes from chunking.
    """
    if bwd_sub:
        nsub = bwd_sub
    else:
        want = _cdiv(_sm_count(device), max(units, 1)) if device.type == "cuda" else 1
        n_outer = max(1, min(n_blocks, want, byte_cap))
        nsub = _cdiv(n_blocks, n_outer)
    return nsub, _cdiv(n_blocks, nsub)


def _empty_grad(t: Tensor) -> Tensor:
    return t.new_empty((0,), dtype=torch.float32)


_INT32_LIMIT = 2 ** 31 - 1


def _check_int32(op: str, **sizes: int) -> None:
    """The kernels compute offsets in 32-bit integers: refuse buffers they cannot address."""
    for name, n in sizes.items():
        if n > _INT32_LIMIT:
            raise ValueError(f"{op}: backend='triton' addresses {name} with 32-bit offsets, but it would have "
                             f"{n} elements (> 2**31 - 1); split the batch")


def _op(name: str, fake):
    """Define operator ``name`` from a Python body that launches Triton kernels.

    Compiled Triton: ``torch.library.triton_op``, so torch.compile traces into the body and
    sees the kernels (its fake kernel is derived from the body).  Under TRITON_INTERPRET=1
    ``wrap_triton`` hands back the bare interpreted kernel, which cannot be traced (it would
    run on fake tensors), so the op is an opaque ``custom_op`` with the explicit shape
    function ``fake`` instead.  Same name, schema and eager behaviour either way.
    """
    def deco(fn):
        if INTERPRET:
            op = torch.library.custom_op(name, mutates_args=())(fn)
            op.register_fake(fake)
            return op
        return triton_op(name, mutates_args=())(fn)
    return deco


def _contig(t: Tensor, dtype=None) -> Tensor:
    return torch.empty(t.shape, dtype=dtype or t.dtype, device=t.device)


# =========================================================================================
# selective_scan
# =========================================================================================

_SS_KEY = ["L", "dim", "N", "cpg"]
_ss_fwd_tuned = _autotuned(_ssk.ss_fwd_kernel, _FWD_CONFIGS, _SS_KEY, _prune_fwd)
_ss_bwd_tuned = _autotuned(_ssk.ss_bwd_kernel, _BWD_CONFIGS, _SS_KEY)
_ss_bwd_chunk_tuned = _autotuned(_ssk.ss_bwd_chunk_kernel, _BWD_CONFIGS, _SS_KEY)


def _ss_strides(u, delta, z, B, C):
    zz = z if z is not None else u
    return (*u.stride(), *delta.stride(), *zz.stride(), *B.stride(), *C.stride())


def _ss_fwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, tile, chunk_tiles, block_d, need_ck):
    batch, dim, L = u.shape
    N = A.shape[1]
    f32 = torch.float32
    ck_shape = (batch, dim, _cdiv(L, tile), N) if need_ck else (0,)
    return _contig(u), u.new_empty((batch, dim, N), dtype=f32), u.new_empty(ck_shape, dtype=f32)


@_op("hands3c::selective_scan_fwd_triton", _ss_fwd_fake)
def selective_scan_fwd_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                              z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                              tile: int, chunk_tiles: int, block_d: int,
                              need_ck: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (out (batch, dim, L) u.dtype, last_state (batch, dim, N) f32,
    checkpoints (batch, dim, ceil(L/tile), N) f32: the state entering every tile).

    ``need_ck=False`` (no backward will run) skips the checkpoint stores and returns an
    empty checkpoint tensor.
    """
    batch, dim, L = u.shape
    N = A.shape[1]
    G = B.shape[1]
    cpg = dim // G
    per_ch = cpg == 1
    S, NP = tile, _np2(N)
    n_tiles = _cdiv(L, S)
    dev = u.device
    A = A.contiguous()
    _check_int32("selective_scan", u=u.numel(), dB=batch * G * N * L, checkpoints=batch * dim * n_tiles * N)
    tpc, nC = _plan_chunks(n_tiles, batch * _cdiv(dim, 8), dev, chunk_tiles)
    out = _new((batch, dim, L), u.dtype, dev)
    last = _new((batch, dim, N), torch.float32, dev)
    # without need_ck, chunked runs still pass chunk-start states through ck (scratch)
    ck = _new((batch, dim, n_tiles, N), torch.float32, dev) if need_ck or nC > 1 else _new((0,), torch.float32, dev)
    Dt = D if D is not None else A
    zt = z if z is not None else u
    dbt = delta_bias if delta_bias is not None else A

    def grid(bd):
        nblk = _cdiv(dim, bd) if per_ch else G * _cdiv(cpg, bd)
        return (nblk, nC, batch)

    strides = _ss_strides(u, delta, z, B, C)
    flags = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_DB=delta_bias is not None,
                 SOFTPLUS=bool(delta_softplus), PER_CH=per_ch, S=S, NP=NP)
    if nC > 1:
        hend = _new((batch, dim, nC, N), torch.float32, dev)
        sdl = _new((batch, dim, nC), torch.float32, dev)
        _launch_fwd(_ssk.ss_fwd_kernel, _ss_fwd_tuned, grid, block_d,
                    u, delta, A, B, C, Dt, zt, dbt, out, ck, last, hend, sdl,
                    L, dim, N, cpg, n_tiles, tpc, nC, *strides, LOCAL=True, HAS_INIT=False, STORE_CK=False, **flags)
        bdc = 16
        wrap_triton(_ssk.ss_fwd_combine_kernel)[(_cdiv(dim, bdc), batch)](
            A, hend, sdl, ck, dim, N, n_tiles, tpc, nC, BD=bdc, NP=NP)
    else:
        hend, sdl = ck, ck  # unused
    _launch_fwd(_ssk.ss_fwd_kernel, _ss_fwd_tuned, grid, block_d,
                u, delta, A, B, C, Dt, zt, dbt, out, ck, last, hend, sdl,
                L, dim, N, cpg, n_tiles, tpc, nC, *strides, LOCAL=False, HAS_INIT=nC > 1, STORE_CK=need_ck,
                **flags)
    return out, last, (ck if need_ck else _new((0,), torch.float32, dev))


def _ss_bwd_fake(dout, dlast, u, delta, A, B, C, D, z, delta_bias, delta_softplus, checkpoints,
                 tile, chunk_tiles, block_d, bwd_sub):
    return [_contig(u), _contig(delta), _contig(A), _contig(B), _contig(C),
            _contig(D) if D is not None else _empty_grad(u), _contig(z) if z is not None else _empty_grad(u),
            _contig(delta_bias) if delta_bias is not None else _empty_grad(u)]


@_op("hands3c::selective_scan_bwd_triton", _ss_bwd_fake)
def selective_scan_bwd_triton(dout: Tensor, dlast: Optional[Tensor], u: Tensor, delta: Tensor, A: Tensor,
                              B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
                              delta_bias: Optional[Tensor], delta_softplus: bool, checkpoints: Tensor,
                              tile: int, chunk_tiles: int, block_d: int, bwd_sub: int) -> List[Tensor]:
    """-> [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]; absent inputs give empty grads.

    ``dout`` must be contiguous (batch, dim, L); ``checkpoints`` from the forward with the
    same ``tile``.
    """
    batch, dim, L = u.shape
    N = A.shape[1]
    G = B.shape[1]
    cpg = dim // G
    per_ch = cpg == 1
    S, NP = tile, _np2(N)
    n_tiles = checkpoints.shape[2]
    dev = u.device
    A = A.contiguous()
    f32 = torch.float32
    BD = _bwd_block_d(block_d, dim if per_ch else cpg, S, NP)
    if per_ch:
        nsub = 1
        nblk = _cdiv(dim, BD)
        nblk_g = nblk
    else:
        # partials per outer block: dB + dC = 2*G*N values per step vs dim for u
        nsub, nblk_g = _plan_outer(_cdiv(cpg, BD), batch * G, max(1, dim // (G * N)), dev, bwd_sub)
        nblk = G * nblk_g
    tpc, nC = _plan_chunks(n_tiles, batch * nblk, dev, chunk_tiles)
    Dt = D if D is not None else A
    zt = z if z is not None else u
    dbt = delta_bias if delta_bias is not None else A
    strides = _ss_strides(u, delta, z, B, C)
    s_t, s_z, s_c = delta.stride(), (z if z is not None else u).stride(), C.stride()
    grid = (nblk, nC, batch)
    if nC > 1:
        lam = _new((batch, dim, nC, N), f32, dev)
        sds = _new((batch, dim, nC), f32, dev)
        lamc = _new((batch, dim, nC, N), f32, dev)
        # pass 1 has no cross-channel reduction: plain BD blocks, no sub-blocks
        grid1 = (_cdiv(dim, BD) if per_ch else G * _cdiv(cpg, BD), nC, batch)
        _launch_bwd(_ssk.ss_bwd_chunk_kernel, _ss_bwd_chunk_tuned, grid1,
                    dout, delta, A, C, zt, dbt, lam, sds, L, dim, N, cpg, n_tiles, tpc, nC,
                    *s_t, *s_z, *s_c, HAS_Z=z is not None, HAS_DB=delta_bias is not None,
                    SOFTPLUS=bool(delta_softplus), PER_CH=per_ch, S=S, BD=BD, NP=NP)
        wrap_triton(_ssk.ss_bwd_combine_kernel)[(_cdiv(dim, 16), batch)](
            A, lam, sds, dlast if dlast is not None else A, lamc, dim, N, nC,
            HAS_DLAST=dlast is not None, BD=16, NP=NP)
    else:
        lamc = checkpoints  # unused
    du = _new((batch, dim, L), u.dtype, dev)
    ddelta = _new((batch, dim, L), delta.dtype, dev)
    dz = _new((batch, dim, L), z.dtype, dev) if z is not None else _empty_grad(u)
    if per_ch:
        dB = _new((batch, dim, N, L), B.dtype, dev)
        dC = _new((batch, dim, N, L), C.dtype, dev)
    else:
        dB = _new((batch, G, nblk_g, N, L), f32, dev)
        dC = _new((batch, G, nblk_g, N, L), f32, dev)
    dAp = _new((batch, nC, dim, N), f32, dev)
    dDp = _new((batch, nC, dim), f32, dev)
    ddbp = _new((batch, nC, dim), f32, dev)
    _launch_bwd(_ssk.ss_bwd_kernel, _ss_bwd_tuned, grid,
                dout, dlast if dlast is not None else A, u, delta, A, B, C, Dt, zt, dbt, checkpoints, lamc,
                du, ddelta, dz if z is not None else du, dB, dC, dAp, dDp, ddbp,
                L, dim, N, cpg, n_tiles, tpc, nC, *strides,
                HAS_D=D is not None, HAS_Z=z is not None, HAS_DB=delta_bias is not None,
                SOFTPLUS=bool(delta_softplus), PER_CH=per_ch, HAS_INIT=nC > 1, HAS_DLAST=dlast is not None,
                NSUB=nsub, S=S, BD=BD, NP=NP)
    if not per_ch:
        # fixed-order sums over outer channel blocks (deterministic)
        dB = (dB.sum(2) if nblk_g > 1 else dB[:, :, 0]).to(B.dtype)
        dC = (dC.sum(2) if nblk_g > 1 else dC[:, :, 0]).to(C.dtype)
    dA = dAp.sum((0, 1))
    dD = dDp.sum((0, 1)) if D is not None else _empty_grad(u)
    ddb = ddbp.sum((0, 1)) if delta_bias is not None else _empty_grad(u)
    return [du, ddelta, dA, dB, dC, dD, dz, ddb]


def _need_ck(*tensors) -> bool:
    """Checkpoints are only worth writing when autograd will run a backward."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _check_ck(ck: Tensor, op: str) -> None:
    if ck.numel() == 0:
        raise RuntimeError(f"{op}: backward needs the forward's checkpoints, but the forward ran with "
                           "need_ck=False (no input required grad when it ran)")


def _ss_setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, tile, chunk_tiles, block_d, need_ck = inputs
    ctx.plan = (bool(delta_softplus), tile, chunk_tiles, block_d, _CONFIG["bwd_sub"])
    ctx.has = (D is not None, z is not None, delta_bias is not None)
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])


def _ss_backward(ctx, dout, dlast, _dck):
    u, delta, A, B, C, D, z, delta_bias, ck = ctx.saved_tensors
    softplus, tile, chunk_tiles, block_d, bwd_sub = ctx.plan
    _check_ck(ck, "selective_scan")
    if dout is None:
        dout = torch.zeros_like(u)
    if dlast is not None:
        dlast = dlast.contiguous()  # the kernels index it densely; autograd may hand an expanded view
    du, ddelta, dA, dB, dC, dD, dz, ddb = torch.ops.hands3c.selective_scan_bwd_triton(
        dout.contiguous(), dlast, u, delta, A, B, C, D, z, delta_bias, softplus, ck,
        tile, chunk_tiles, block_d, bwd_sub)
    has_d, has_z, has_db = ctx.has
    return (du, ddelta, dA, dB, dC, dD if has_d else None, dz if has_z else None, ddb if has_db else None,
            None, None, None, None, None)


selective_scan_fwd_triton.register_autograd(_ss_backward, setup_context=_ss_setup_context)


def selective_scan(u, delta, A, Bc, Cc, D, z, delta_bias, delta_softplus: bool):
    """Entry used by :func:`handS3C.ops.selective_scan_fn` (Bc/Cc canonical 4-D views)."""
    out, last, _ = torch.ops.hands3c.selective_scan_fwd_triton(
        u, delta, A, Bc, Cc, D, z, delta_bias, bool(delta_softplus),
        _tile(u.shape[2]), _CONFIG["chunk_tiles"], _CONFIG["block_d"],
        _need_ck(u, delta, A, Bc, Cc, D, z, delta_bias))
    return out, last


# =========================================================================================
# cross_scan_selective_scan
# =========================================================================================

_CS_KEY = ["L", "D", "N"]
_cs_fwd_tuned = _autotuned(_csk.cs_fwd_kernel, _FWD_CONFIGS, _CS_KEY, _prune_fwd)
_cs_fwd_chunk_tuned = _autotuned(_csk.cs_fwd_chunk_kernel, _FWD_CONFIGS, _CS_KEY, _prune_fwd)
_cs_bwd_tuned = _autotuned(_csk.cs_bwd_kernel, _BWD_CONFIGS, _CS_KEY)
_cs_bwd_chunk_tuned = _autotuned(_csk.cs_bwd_chunk_kernel, _BWD_CONFIGS, _CS_KEY)


def _cs_dims(u, dt_projs_weight, A_logs):
    Bn, D, P, Q = u.shape
    R = dt_projs_weight.shape[2]
    N = A_logs.shape[1]
    return Bn, D, P, Q, P * Q, R, N


def _cs_fwd_fake(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, tile, chunk_tiles, block_d,
                 need_ck):
    Bn, D, P, Q, L, R, N = _cs_dims(u, dt_projs_weight, A_logs)
    f32 = torch.float32
    ck_shape = (Bn, 4, D, _cdiv(L, tile), N) if need_ck else (0,)
    return (u.new_empty((Bn, D, P, Q), dtype=f32), u.new_empty((Bn, L, 4, R + 2 * N), dtype=f32),
            u.new_empty(ck_shape, dtype=f32))


@_op("hands3c::cross_scan_fwd_triton", _cs_fwd_fake)
def cross_scan_fwd_triton(u: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor, dt_projs_bias: Tensor,
                          A_logs: Tensor, Ds: Tensor, tile: int, chunk_tiles: int,
                          block_d: int, need_ck: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (y (B, D, P, Q) f32, dbl (B, L, 4, R+2N) f32, checkpoints (B, 4, D, ceil(L/tile), N) f32).

    ``u`` float32 with any strides; ``dbl`` is the per-position projection (kept for the
    backward), ``checkpoints`` the state entering every tile of every direction (empty
    when ``need_ck=False``: no backward will run, the stores are skipped).
    """
    Bn, D, P, Q, L, R, N = _cs_dims(u, dt_projs_weight, A_logs)
    CW = R + 2 * N
    S, NP = tile, _np2(N)
    n_tiles = _cdiv(L, S)
    dev = u.device
    f32 = torch.float32
    # the backward's d(dbl) partials are at most 5x dbl (see _plan_outer)
    _check_int32("cross_scan_selective_scan", y=u.numel(), dbl=5 * Bn * L * 4 * CW, checkpoints=Bn * 4 * D * n_tiles * N)
    xw = x_proj_weight.contiguous()
    wdt, bias = dt_projs_weight.contiguous(), dt_projs_bias.contiguous()
    alog, ds = A_logs.contiguous(), Ds.contiguous()
    # dbl[b, l, k, :] = x_proj_weight[k] @ u[b, :, l]: one batched GEMM reading u in place
    # (cuBLAS takes the transposed operand as is), output rows contiguous per position.
    u3 = u.reshape(Bn, D, L)
    dbl = torch.matmul(u3.transpose(1, 2), xw.reshape(4 * CW, D).t()).reshape(Bn, L, 4, CW)
    tpc, nC = _plan_chunks(n_tiles, Bn * _cdiv(D, 8), dev, chunk_tiles)
    ck = _new((Bn, 4, D, n_tiles, N), f32, dev) if need_ck or nC > 1 else _new((0,), f32, dev)
    y = _new((Bn, D, P, Q), f32, dev)
    y0 = _new((Bn, D, P, Q), f32, dev) if nC > 1 else y  # family-0 partial (chunked runs only)
    su = u.stride()
    consts = dict(R=R, N=N, S=S, NP=NP)

    def grid(bd):
        return (_cdiv(D, bd), nC, Bn)

    if nC > 1:
        hend = _new((Bn, 4, D, nC, N), f32, dev)
        sdl = _new((Bn, 4, D, nC), f32, dev)
        for k in range(4):
            _launch_fwd(_csk.cs_fwd_chunk_kernel, _cs_fwd_chunk_tuned, grid, block_d,
                        u, dbl, wdt, bias, alog, ds, hend, sdl, L, P, Q, D, n_tiles, tpc, nC, *su,
                        K=k, **consts)
        wrap_triton(_csk.cs_fwd_combine_kernel)[(_cdiv(D, 16), Bn * 4)](
            alog, hend, sdl, ck, D, N, n_tiles, tpc, nC, BD=16, NP=NP)
    # one chunk: one launch running all four directions (FAM=2); else two family launches
    for fam, out in (((2, y),) if nC == 1 else ((0, y0), (1, y))):
        _launch_fwd(_csk.cs_fwd_kernel, _cs_fwd_tuned, grid, block_d,
                    u, dbl, wdt, bias, alog, ds, y0, out, ck, L, P, Q, D, n_tiles, tpc, nC, *su,
                    FAM=fam, HAS_INIT=nC > 1, STORE_CK=need_ck, **consts)
    return y, dbl, (ck if need_ck else _new((0,), f32, dev))


def _cs_bwd_fake(dout, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, dbl, checkpoints,
                 tile, chunk_tiles, block_d, bwd_sub):
    return [_contig(u, torch.float32), _contig(x_proj_weight), _contig(dt_projs_weight), _contig(dt_projs_bias),
            _contig(A_logs), _contig(Ds)]


@_op("hands3c::cross_scan_bwd_triton", _cs_bwd_fake)
def cross_scan_bwd_triton(dout: Tensor, u: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor,
                          dt_projs_bias: Tensor, A_logs: Tensor, Ds: Tensor, dbl: Tensor, checkpoints: Tensor,
                          tile: int, chunk_tiles: int, block_d: int, bwd_sub: int) -> List[Tensor]:
    """-> [du, dx_proj_weight, ddt_projs_weight, ddt_projs_bias, dA_logs, dDs]; ``dout``
    contiguous (B, D, P, Q) float32."""
    Bn, D, P, Q, L, R, N = _cs_dims(u, dt_projs_weight, A_logs)
    CW = R + 2 * N
    S, NP, RP = tile, _np2(N), _np2(R)
    n_tiles = checkpoints.shape[3]
    dev = u.device
    f32 = torch.float32
    xw = x_proj_weight.contiguous()
    wdt, bias = dt_projs_weight.contiguous(), dt_projs_bias.contiguous()
    alog, ds = A_logs.contiguous(), Ds.contiguous()
    BD = _bwd_block_d(block_d, D, S, NP)
    # partials per outer block: |d(dbl)| = 4*(R+2N) values per position vs D for u
    # (spatial branch: up to 5 outer blocks; channel branch, where dbl is 6x u: one)
    nsub, n_outer = _plan_outer(_cdiv(D, BD), Bn, max(1, (2 * D) // (4 * CW)), dev, bwd_sub)
    tpc, nC = _plan_chunks(n_tiles, Bn * n_outer, dev, chunk_tiles)
    su = u.stride()
    consts = dict(R=R, N=N, S=S, NP=NP, BD=BD)
    if nC > 1:
        lam = _new((Bn, 4, D, nC, N), f32, dev)
        sds = _new((Bn, 4, D, nC), f32, dev)
        lamc = _new((Bn, 4, D, nC, N), f32, dev)
        for k in range(4):
            _launch_bwd(_csk.cs_bwd_chunk_kernel, _cs_bwd_chunk_tuned, (_cdiv(D, BD), nC, Bn),
                        dout, dbl, wdt, bias, alog, ds, lam, sds, L, P, Q, D, n_tiles, tpc, nC, K=k, **consts)
        wrap_triton(_csk.cs_bwd_combine_kernel)[(_cdiv(D, 16), Bn * 4)](
            alog, lam, sds, lamc, D, N, nC, BD=16, NP=NP)
    else:
        lamc = checkpoints  # unused
    du = _new((Bn, D, P, Q), f32, dev)
    du0 = _new((Bn, D, P, Q), f32, dev) if nC > 1 else du
    ddbl_p = _new((n_outer, Bn, L, 4, CW), f32, dev)
    dAp = _new((Bn, nC, 4, D, N), f32, dev)
    dDp = _new((Bn, nC, 4, D), f32, dev)
    dbp = _new((Bn, nC, 4, D), f32, dev)
    dWp = _new((Bn, nC, 4, D, RP), f32, dev)
    for fam, out in (((2, du),) if nC == 1 else ((0, du0), (1, du))):
        _launch_bwd(_csk.cs_bwd_kernel, _cs_bwd_tuned, (n_outer, nC, Bn),
                    dout, u, dbl, wdt, bias, alog, ds, checkpoints, lamc, du0, out, ddbl_p, dAp, dDp, dbp, dWp,
                    Bn, L, P, Q, D, n_tiles, tpc, nC, *su, FAM=fam, HAS_INIT=nC > 1, NSUB=nsub, RP=RP, **consts)
    # fixed-order reductions of the per-program partials (deterministic)
    ddbl = (ddbl_p.sum(0) if n_outer > 1 else ddbl_p[0]).reshape(Bn, L, 4 * CW)
    # the projection dbl = x_proj_weight @ u, backwards: two GEMMs
    du = du + torch.matmul(ddbl, xw.reshape(4 * CW, D)).transpose(1, 2).reshape(Bn, D, P, Q)
    dxw = torch.einsum("blm,bdl->md", ddbl, u.reshape(Bn, D, L)).reshape(4, CW, D)
    dwdt = dWp[..., :R].sum((0, 1))
    dbias = dbp.sum((0, 1))
    dalog = dAp.sum((0, 1)).reshape(4 * D, N)
    dds = dDp.sum((0, 1)).reshape(4 * D)
    return [du.contiguous(), dxw.contiguous(), dwdt, dbias, dalog, dds]


def _cs_setup_context(ctx, inputs, output):
    u, xw, wdt, bias, alog, ds, tile, chunk_tiles, block_d, need_ck = inputs
    ctx.plan = (tile, chunk_tiles, block_d, _CONFIG["bwd_sub"])
    ctx.save_for_backward(u, xw, wdt, bias, alog, ds, output[1], output[2])


def _cs_backward(ctx, dy, _ddbl, _dck):
    u, xw, wdt, bias, alog, ds, dbl, ck = ctx.saved_tensors
    tile, chunk_tiles, block_d, bwd_sub = ctx.plan
    _check_ck(ck, "cross_scan_selective_scan")
    grads = torch.ops.hands3c.cross_scan_bwd_triton(dy.contiguous(), u, xw, wdt, bias, alog, ds, dbl, ck,
                                                    tile, chunk_tiles, block_d, bwd_sub)
    return (*grads, None, None, None, None)


cross_scan_fwd_triton.register_autograd(_cs_backward, setup_context=_cs_setup_context)


def cross_scan_selective_scan(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds):
    """Entry used by :func:`handS3C.ops.cross_scan_selective_scan` (u float32, any strides)."""
    L = u.shape[2] * u.shape[3]
    y, _, _ = torch.ops.hands3c.cross_scan_fwd_triton(
        u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
        _tile(L), _CONFIG["chunk_tiles"], _CONFIG["block_d"],
        _need_ck(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds))
    return y


# =========================================================================================
# s3c_merge
# =========================================================================================

def _row_layout(tensors):
    """Shared row decomposition (M, C, M1, M2) and per-tensor (s0, s1, s2, s_col) strides.

    Leading dimensions mergeable in *every* tensor are collapsed; more than three
    remaining leading dimensions fall back to contiguous copies.
    """
    shape = list(tensors[0].shape)
    C = shape[-1]
    lead = [i for i in range(len(shape) - 1) if shape[i] != 1]
    groups = []  # list of lists of dims, outermost first
    for i in lead:
        if groups:
            j = groups[-1][-1]
            if all(t.stride(j) == t.stride(i) * shape[i] for t in tensors):
                groups[-1].append(i)
                continue
        groups.append([i])
    if len(groups) > 3:
        tensors = [t.contiguous() for t in tensors]
        return _row_layout(tensors)
    sizes = [1] * (3 - len(groups)) + [math.prod(shape[i] for i in g) for g in groups]
    strides = []
    for t in tensors:
        st = [0] * (3 - len(groups)) + [t.stride(g[-1]) for g in groups]
        strides.append((*st, t.stride(-1)))
    M = sizes[0] * sizes[1] * sizes[2]
    return tensors, M, C, sizes[1], sizes[2], strides


_MERGE_FWD_CONFIGS = [triton.Config({"BM": 4}, num_warps=4), triton.Config({"BM": 1}, num_warps=4),
                      triton.Config({"BM": 8}, num_warps=8), triton.Config({"BM": 2}, num_warps=2)]
_MERGE_BWD_CONFIGS = [triton.Config({"BM": 4}, num_warps=4), triton.Config({"BM": 8}, num_warps=8),
                      triton.Config({"BM": 1}, num_warps=4)]
_merge_fwd_tuned = _autotuned(_mk.merge_fwd_kernel, _MERGE_FWD_CONFIGS, ["C"])
_merge_bwd_tuned = _autotuned(_mk.merge_bwd_kernel, _MERGE_BWD_CONFIGS, ["C"])


def _merge_fwd_fake(y_spatial, y_channel, z, weight, bias, eps):
    M = y_spatial.numel() // y_spatial.shape[-1]
    return (_contig(y_spatial, torch.float32), y_spatial.new_empty((M,), dtype=torch.float32),
            y_spatial.new_empty((M,), dtype=torch.float32))


@_op("hands3c::s3c_merge_fwd_triton", _merge_fwd_fake)
def s3c_merge_fwd_triton(y_spatial: Tensor, y_channel: Tensor, z: Tensor, weight: Tensor, bias: Tensor,
                         eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (out (..., C) f32 contiguous, mean (M,) f32, rstd (M,) f32)."""
    (ys, yc, zz), M, C, M1, M2, st = _row_layout([y_spatial, y_channel, z])
    dev = y_spatial.device
    out = _new(tuple(y_spatial.shape), torch.float32, dev)
    mean = _new((M,), torch.float32, dev)
    rstd = _new((M,), torch.float32, dev)
    args = (ys, yc, zz, weight.contiguous(), bias.contiguous(), out, mean, rstd, M, C, M1, M2, float(eps),
            *st[0], *st[1], *st[2])
    BC = _np2(C)
    if _merge_fwd_tuned is not None:
        wrap_triton(_merge_fwd_tuned)[lambda meta: (_cdiv(M, meta["BM"]),)](*args, BC=BC)
    else:
        bm = _MERGE_FWD_CONFIGS[0].kwargs["BM"]
        wrap_triton(_mk.merge_fwd_kernel)[(_cdiv(M, bm),)](*args, BM=bm, BC=BC)
    return out, mean, rstd


def _merge_bwd_fake(dout, y_spatial, y_channel, z, weight, bias, mean, rstd):
    return [_contig(y_spatial, torch.float32), _contig(z), _contig(weight), _contig(bias)]


@_op("hands3c::s3c_merge_bwd_triton", _merge_bwd_fake)
def s3c_merge_bwd_triton(dout: Tensor, y_spatial: Tensor, y_channel: Tensor, z: Tensor, weight: Tensor,
                         bias: Tensor, mean: Tensor, rstd: Tensor) -> List[Tensor]:
    """-> [dy (..., C) f32 (gradient of both y inputs), dz (z's dtype), dweight, dbias]."""
    (ys, yc, zz), M, C, M1, M2, st = _row_layout([y_spatial, y_channel, z])
    dev = y_spatial.device
    dout = dout.contiguous()
    dy = _new(tuple(y_spatial.shape), torch.float32, dev)
    dz = _new(tuple(z.shape), z.dtype, dev)
    # fixed grid (not tied to the autotuned BM) so the partial buffers have one layout
    nprog = max(1, min(_cdiv(M, 4), 4 * _sm_count(dev) if dev.type == "cuda" else 4))
    dwp = _new((nprog, C), torch.float32, dev)
    dbp = _new((nprog, C), torch.float32, dev)
    args = (dout, ys, yc, zz, weight.contiguous(), bias.contiguous(), mean, rstd, dy, dz, dwp, dbp,
            M, C, M1, M2, *st[0], *st[1], *st[2])
    BC = _np2(C)
    if _merge_bwd_tuned is not None:
        wrap_triton(_merge_bwd_tuned)[(nprog,)](*args, BC=BC)
    else:
        wrap_triton(_mk.merge_bwd_kernel)[(nprog,)](*args, BM=_MERGE_BWD_CONFIGS[0].kwargs["BM"], BC=BC)
    return [dy, dz, dwp.sum(0), dbp.sum(0)]


def _merge_setup_context(ctx, inputs, output):
    ys, yc, z, weight, bias, eps = inputs
    ctx.save_for_backward(ys, yc, z, weight, bias, output[1], output[2])


def _merge_backward(ctx, dout, _dmean, _drstd):
    ys, yc, z, weight, bias, mean, rstd = ctx.saved_tensors
    dy, dz, dw, db = torch.ops.hands3c.s3c_merge_bwd_triton(dout, ys, yc, z, weight, bias, mean, rstd)
    return dy, dy, dz, dw, db, None


s3c_merge_fwd_triton.register_autograd(_merge_backward, setup_context=_merge_setup_context)


def s3c_merge(y_spatial, y_channel, z, norm_weight, norm_bias, eps: float):
    """Entry used by :func:`handS3C.ops.s3c_merge`."""
    return torch.ops.hands3c.s3c_merge_fwd_triton(y_spatial, y_channel, z, norm_weight, norm_bias, float(eps))[0]
