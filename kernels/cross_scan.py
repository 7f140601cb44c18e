"""Triton kernels of the fused CrossScanSelectiveScan (SPEC §2), forward and backward.

Input u (B, D, P, Q) with any strides, L = P*Q.  Four directions over the plane, walked
by index arithmetic, never materialised: a direction k has a *family* f = k % 2
(0: row-major, 1: column-major) and is *reversed* when k >= 2.  Everything is indexed by
the family's *base index* i in [0, L):

    f = 0: p = i // Q, q = i % Q          f = 1: p = i % P, q = i // P
    plane position pos = p*Q + q           (the row-major index; where y is written)

A forward direction processes i = 0..L-1, a reversed one i = L-1..0, so k and k+2 visit
the same positions and differ only in the order.  Per direction the scan is the selective
scan with delta = softplus(dt_projs_weight[k] @ dt_low + bias) computed in registers from
the rank-R ``dt_low`` row of ``dbl`` (the per-position projection x_proj_weight[k] @ u,
(B, L, 4, R+2N), produced by one GEMM beforehand), so the (B, 4, D, L) deltas and the four
traversal copies never exist.

Decomposition (DESIGN.md has the trade-offs):

* tiles of S base indices, solved in registers by ``tl.associative_scan`` over an
  (S, BD, NP) tile (``reverse=True`` for reversed directions); the state entering each
  tile (in processing order) is the checkpoint the backward restarts from;
* chunks of ``tpc`` tiles for sequence parallelism: pass 1 (``cs_fwd_chunk_kernel``)
  scans each chunk from zero keeping its end state and sum of deltas, pass 2
  (``cs_fwd_combine_kernel``) chains them, pass 3 (``cs_fwd_kernel``) rescans with the
  true initial states and writes y.  One chunk: passes 1-2 are skipped;
* deterministic accumulation of the four directions without atomics.  With one chunk
  (large batch) a pass-3 program owns every position of its (batch, channel block) and
  runs the four directions one after another (barriers between them), adding into its
  own output rows, which are still in L2: u is read from DRAM and y written once.  With
  several chunks a program owns one chunk of one *family* (k and k+2 visit the same
  positions): it runs the family's forward then reversed direction; the two families
  cover different position sets, so they run as two launches: family 0 writes ``y0``,
  family 1 reads ``y0`` and writes ``y`` (a separate buffer keeps every launch
  idempotent, so autotuning may rerun it).
  The backward accumulates du the same way and reduces dt_low/B/C gradients over
  channels in registers, over NSUB sub-blocks by read-modify-write of the program's own
  rows, and over outer channel blocks by a fixed-order sum in the caller.

Below the kernels: the launch plan (projection GEMM, chunks, direction families, partial
buffers and their fixed-order sums) and the operators ``hands3c::cross_scan_{fwd,bwd}_triton``.
"""
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from . import _plan as plan
from ..ops import _checks

from ._scan_common import LOG2E, sigmoid, softplus, take_row, tile_adjoints, tile_states


@triton.jit
def _positions(i, L, P, Q, FAM: tl.constexpr):
    """(p, q, pos) of base indices i; out-of-range lanes are clamped (their loads are masked)."""
    ic = tl.minimum(tl.maximum(i, 0), L - 1)
    if FAM == 0:
        p = ic // Q
        q = ic % Q
    else:
        p = ic % P
        q = ic // P
    return p, q, p * Q + q


@triton.jit
def _delta_tile(dbl_ptr, row, wdt_ptr, wrow, bias, tv, dmask, R: tl.constexpr):
    """(raw, delta) (S, BD): raw = dt_projs_weight[k] @ dt_low + bias, delta = softplus(raw).

    A rank-R update per tile: R (S,) loads of dt_low and R (BD,) weight columns (both hit
    L1); no (S, R, BD) temporary.  A real loop, not unrolled: the backward inlines this
    eight times and unrolling made it compile for minutes.
    """
    raw = tl.zeros([row.shape[0], wrow.shape[0]], dtype=tl.float32) + bias[None, :]
    for r in range(R):
        lo = tl.load(dbl_ptr + row + r, mask=tv, other=0.0)
        w = tl.load(wdt_ptr + wrow + r, mask=dmask, other=0.0)
        raw += lo[:, None] * w[None, :]
    m_sd = tv[:, None] & dmask[None, :]
    return raw, tl.where(m_sd, softplus(raw), 0.0)


@triton.jit
def _dir_params(alog_ptr, bias_ptr, ds_ptr, d, dmask, n, nmask, D, N, K):
    m_dn = dmask[:, None] & nmask[None, :]
    A = -tl.exp(tl.load(alog_ptr + (K * D + d[:, None]) * N + n[None, :], mask=m_dn, other=0.0))
    bias = tl.load(bias_ptr + K * D + d, mask=dmask, other=0.0)
    dsk = tl.load(ds_ptr + K * D + d, mask=dmask, other=0.0)
    return A, bias, dsk


@triton.jit
def _fwd_direction(
    u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, acc_ptr, y_ptr, ck_ptr, hend_ptr, sdl_ptr,
    b, c, d, dmask, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q, sy_b, sy_d, sy_p, sy_q,
    K: tl.constexpr, FAM: tl.constexpr, REV: tl.constexpr, LOCAL: tl.constexpr, HAS_INIT: tl.constexpr,
    ACC: tl.constexpr, STORE_CK: tl.constexpr, R: tl.constexpr, N: tl.constexpr, S: tl.constexpr,
    NP: tl.constexpr,
):
    """Scan one direction over chunk c for channels d (see the module docstring).

    LOCAL: from zero, keep (end state, sum of deltas).  Otherwise: from the true initial
    state, write checkpoints and y (+ the value at ``acc_ptr`` when ACC); y and the
    accumulator share the output's strides ``sy_*`` (its ``out_order`` layout).
    """
    CW: tl.constexpr = R + 2 * N
    n = tl.arange(0, NP)
    nmask = n < N
    m_dn = dmask[:, None] & nmask[None, :]
    A, bias, dsk = _dir_params(alog_ptr, bias_ptr, ds_ptr, d, dmask, n, nmask, D, N, K)
    A2 = A * LOG2E
    wrow = (K * D + d) * R
    ck_base = ck_ptr + ((b * 4 + K) * D + d[:, None]) * n_tiles * N + n[None, :]
    j0 = c * tpc
    j1 = tl.minimum(j0 + tpc, n_tiles)
    h = tl.zeros([d.shape[0], NP], dtype=tl.float32)
    if HAS_INIT:
        if REV:
            h = tl.load(ck_base + (j1 - 1) * N, mask=m_dn, other=0.0)
        else:
            h = tl.load(ck_base + j0 * N, mask=m_dn, other=0.0)
    sdl = tl.zeros([d.shape[0]], dtype=tl.float32)
    for m in range(0, j1 - j0):
        if REV:
            j = j1 - 1 - m
        else:
            j = j0 + m
        i = j * S + tl.arange(0, S)
        tv = i < L
        m_sd = tv[:, None] & dmask[None, :]
        p, q, pos = _positions(i, L, P, Q, FAM)
        x = tl.load(u_ptr + b * su_b + d[None, :] * su_d + p[:, None] * su_p + q[:, None] * su_q,
                    mask=m_sd, other=0.0).to(tl.float32)
        row = ((b * L + pos) * 4 + K) * CW
        raw, dl = _delta_tile(dbl_ptr, row, wdt_ptr, wrow, bias, tv, dmask, R)
        m_sn = tv[:, None] & nmask[None, :]
        Bt = tl.load(dbl_ptr + row[:, None] + R + n[None, :], mask=m_sn, other=0.0)
        dA = tl.exp2(dl[:, :, None] * A2[None, :, :])
        dBx = (dl * x)[:, :, None] * Bt[:, None, :]
        if LOCAL:
            sdl += tl.sum(dl, axis=0)
        elif STORE_CK:  # only when a backward will need them
            tl.store(ck_base + j * N, h, mask=m_dn)
        hs = tile_states(dA, dBx, h, REV)
        if not LOCAL:
            Ct = tl.load(dbl_ptr + row[:, None] + R + N + n[None, :], mask=m_sn, other=0.0)
            y = tl.sum(hs * Ct[:, None, :], axis=2) + dsk[None, :] * x
            o = b * sy_b + d[None, :] * sy_d + p[:, None] * sy_p + q[:, None] * sy_q
            if ACC:
                y += tl.load(acc_ptr + o, mask=m_sd, other=0.0)
            tl.store(y_ptr + o, y, mask=m_sd)
        # masked lanes are identities, so the last processed row holds the end state
        if REV:
            h = take_row(hs, 0, S)
        else:
            h = take_row(hs, S - 1, S)
    if LOCAL:
        off = ((b * 4 + K) * D + d) * nC + c
        tl.store(hend_ptr + off[:, None] * N + n[None, :], h, mask=m_dn)
        tl.store(sdl_ptr + off, sdl, mask=dmask)


@triton.jit
def cs_fwd_chunk_kernel(
    u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, hend_ptr, sdl_ptr,
    L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q,
    K: tl.constexpr, R: tl.constexpr, N: tl.constexpr, S: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
):
    """Forward pass 1 for direction K: chunk end states from zero and chunk delta sums."""
    d = tl.program_id(0) * BD + tl.arange(0, BD)
    c = tl.program_id(1)
    b = tl.program_id(2)
    _fwd_direction(u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, hend_ptr, hend_ptr, hend_ptr,
                   hend_ptr, sdl_ptr, b, c, d, d < D, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q,
                   0, 0, 0, 0, K, K % 2, K >= 2, True, False, False, False, R, N, S, NP)


@triton.jit
def cs_fwd_combine_kernel(alog_ptr, hend_ptr, sdl_ptr, ck_ptr, D, N, n_tiles, tpc, nC,
                          BD: tl.constexpr, NP: tl.constexpr):
    """Forward pass 2: ck[first tile of chunk c in processing order] = state entering it."""
    d = tl.program_id(0) * BD + tl.arange(0, BD)
    bk = tl.program_id(1)  # b * 4 + k
    k = bk % 4
    rev = k >= 2
    n = tl.arange(0, NP)
    dmask = d < D
    m_dn = dmask[:, None] & (n < N)[None, :]
    A2 = -tl.exp(tl.load(alog_ptr + (k * D + d[:, None]) * N + n[None, :], mask=m_dn, other=0.0)) * LOG2E
    carry = tl.zeros([BD, NP], dtype=tl.float32)
    for m in range(0, nC):
        c = tl.where(rev, nC - 1 - m, m)
        jf = tl.where(rev, tl.minimum((c + 1) * tpc, n_tiles) - 1, c * tpc)
        tl.store(ck_ptr + ((bk * D + d[:, None]) * n_tiles + jf) * N + n[None, :], carry, mask=m_dn)
        off = (bk * D + d) * nC + c
        he = tl.load(hend_ptr + off[:, None] * N + n[None, :], mask=m_dn, other=0.0)
        s = tl.load(sdl_ptr + off, mask=dmask, other=0.0)
        carry = tl.exp2(A2 * s[:, None]) * carry + he


@triton.jit
def cs_fwd_kernel(
    u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, y0_ptr, y_ptr, ck_ptr,
    L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q, sy_b, sy_d, sy_p, sy_q,
    FAM: tl.constexpr, HAS_INIT: tl.constexpr, STORE_CK: tl.constexpr,
    R: tl.constexpr, N: tl.constexpr, S: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
):
    """Forward pass 3: the directions of FAM over this program's positions, in sequence.

    FAM=0: directions 0, 2 -> y0 (``y_ptr`` is y0).  FAM=1: y = y0 + directions 1, 3.
    FAM=2 (one chunk only): all four directions -> y; the program then owns every
    position of its channels, so no second launch and no y0 round trip.
    """
    d = tl.program_id(0) * BD + tl.arange(0, BD)
    c = tl.program_id(1)
    b = tl.program_id(2)
    dmask = d < D
    if FAM == 1:
        _fwd_direction(u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, y0_ptr, y_ptr, ck_ptr, ck_ptr, ck_ptr,
                       b, c, d, dmask, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q, sy_b, sy_d, sy_p, sy_q,
                       1, 1, False, False, HAS_INIT, True, STORE_CK, R, N, S, NP)
    else:
        _fwd_direction(u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, y_ptr, y_ptr, ck_ptr, ck_ptr, ck_ptr,
                       b, c, d, dmask, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q, sy_b, sy_d, sy_p, sy_q,
                       0, 0, False, False, HAS_INIT, False, STORE_CK, R, N, S, NP)
    # each later direction adds to rows this program just wrote (possibly other threads)
    tl.debug_barrier()
    _fwd_direction(u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, y_ptr, y_ptr, ck_ptr, ck_ptr, ck_ptr,
                   b, c, d, dmask, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q, sy_b, sy_d, sy_p, sy_q,
                   FAM % 2 + 2, FAM % 2, True, False, HAS_INIT, True, STORE_CK, R, N, S, NP)
    if FAM == 2:
        tl.debug_barrier()
        _fwd_direction(u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, y_ptr, y_ptr, ck_ptr, ck_ptr, ck_ptr,
                       b, c, d, dmask, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q, sy_b, sy_d, sy_p, sy_q,
                       1, 1, False, False, HAS_INIT, True, STORE_CK, R, N, S, NP)
        tl.debug_barrier()
        _fwd_direction(u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, y_ptr, y_ptr, ck_ptr, ck_ptr, ck_ptr,
                       b, c, d, dmask, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q, sy_b, sy_d, sy_p, sy_q,
                       3, 1, True, False, HAS_INIT, True, STORE_CK, R, N, S, NP)


@triton.jit
def _next_delta(dbl_ptr, wdt_ptr, wrow, bias, i, tv, dmask, b, L, P, Q,
                K: tl.constexpr, FAM: tl.constexpr, REV: tl.constexpr, R: tl.constexpr, N: tl.constexpr):
    """Delta of the step processed *after* base index i (0 where there is none)."""
    if REV:
        i_n = i - 1
    else:
        i_n = i + 1
    vn = tv & (i_n >= 0) & (i_n < L)
    _, _, pos_n = _positions(i_n, L, P, Q, FAM)
    row_n = ((b * L + pos_n) * 4 + K) * (R + 2 * N)
    _, dln = _delta_tile(dbl_ptr, row_n, wdt_ptr, wrow, bias, vn, dmask, R)
    return dln


@triton.jit
def cs_bwd_chunk_kernel(
    dout_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, lam_ptr, sds_ptr,
    L, P, Q, D, n_tiles, tpc, nC,
    K: tl.constexpr, R: tl.constexpr, N: tl.constexpr, S: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
):
    """Backward pass 1 for direction K: adjoint state at each chunk's first processed step
    from a zero carry, and the sum over the chunk of the *next* step's delta."""
    FAM: tl.constexpr = K % 2
    REV: tl.constexpr = K >= 2
    CW: tl.constexpr = R + 2 * N
    d = tl.program_id(0) * BD + tl.arange(0, BD)
    c = tl.program_id(1)
    b = tl.program_id(2)
    dmask = d < D
    n = tl.arange(0, NP)
    nmask = n < N
    m_dn = dmask[:, None] & nmask[None, :]
    A, bias, dsk = _dir_params(alog_ptr, bias_ptr, ds_ptr, d, dmask, n, nmask, D, N, K)
    A2 = A * LOG2E
    wrow = (K * D + d) * R
    j0 = c * tpc
    j1 = tl.minimum(j0 + tpc, n_tiles)
    carry = tl.zeros([BD, NP], dtype=tl.float32)
    sds = tl.zeros([BD], dtype=tl.float32)
    for m in range(0, j1 - j0):
        # reverse of processing order
        if REV:
            j = j0 + m
        else:
            j = j1 - 1 - m
        i = j * S + tl.arange(0, S)
        tv = i < L
        m_sd = tv[:, None] & dmask[None, :]
        p, q, pos = _positions(i, L, P, Q, FAM)
        row = ((b * L + pos) * 4 + K) * CW
        Ct = tl.load(dbl_ptr + row[:, None] + R + N + n[None, :], mask=tv[:, None] & nmask[None, :], other=0.0)
        g = tl.load(dout_ptr + (b * D + d[None, :]) * L + pos[:, None], mask=m_sd, other=0.0)
        dln = _next_delta(dbl_ptr, wdt_ptr, wrow, bias, i, tv, dmask, b, L, P, Q, K, FAM, REV, R, N)
        alpha = tl.exp2(dln[:, :, None] * A2[None, :, :])
        beta = g[:, :, None] * Ct[:, None, :]
        lam = tile_adjoints(alpha, beta, carry, REV)
        if REV:
            carry = take_row(lam, S - 1, S)
        else:
            carry = take_row(lam, 0, S)
        sds += tl.sum(dln, axis=0)
    off = ((b * 4 + K) * D + d) * nC + c
    tl.store(lam_ptr + off[:, None] * N + n[None, :], carry, mask=m_dn)
    tl.store(sds_ptr + off, sds, mask=dmask)


@triton.jit
def cs_bwd_combine_kernel(alog_ptr, lam_ptr, sds_ptr, lamc_ptr, D, N, nC,
                          BD: tl.constexpr, NP: tl.constexpr):
    """Backward pass 2: lamc[c] = adjoint carry entering chunk c from the chunk processed after it."""
    d = tl.program_id(0) * BD + tl.arange(0, BD)
    bk = tl.program_id(1)
    k = bk % 4
    rev = k >= 2
    n = tl.arange(0, NP)
    dmask = d < D
    m_dn = dmask[:, None] & (n < N)[None, :]
    A2 = -tl.exp(tl.load(alog_ptr + (k * D + d[:, None]) * N + n[None, :], mask=m_dn, other=0.0)) * LOG2E
    carry = tl.zeros([BD, NP], dtype=tl.float32)
    for m in range(0, nC):
        c = tl.where(rev, m, nC - 1 - m)
        off = (bk * D + d) * nC + c
        tl.store(lamc_ptr + off[:, None] * N + n[None, :], carry, mask=m_dn)
        lm = tl.load(lam_ptr + off[:, None] * N + n[None, :], mask=m_dn, other=0.0)
        s = tl.load(sds_ptr + off, mask=dmask, other=0.0)
        carry = lm + tl.exp2(A2 * s[:, None]) * carry


@triton.jit
def _bwd_direction(
    dout_ptr, u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, ck_ptr, lamc_ptr,
    acc_ptr, du_ptr, ddbl_ptr, dap_ptr, ddp_ptr, dbp_ptr, dwp_ptr,
    b, c, blk, Bn, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q,
    K: tl.constexpr, FAM: tl.constexpr, REV: tl.constexpr, HAS_INIT: tl.constexpr, ACC: tl.constexpr,
    NSUB: tl.constexpr, R: tl.constexpr, RP: tl.constexpr, N: tl.constexpr, S: tl.constexpr,
    NP: tl.constexpr, BD: tl.constexpr,
):
    """All gradients of direction K over chunk c for NSUB channel sub-blocks of block ``blk``.

    Per tile (walked against the processing order): h from the tile checkpoint (one scan),
    lambda from the carry (one scan the other way), then with a*h_prev = h - b:
    du += sum_n lambda*delta*B + Ds*g, ddelta = sum_n lambda*(A*(h - b) + B*u),
    d dt_low = W^T (ddelta*softplus'), dB = sum_d lambda*delta*u, dC = sum_d g*h, and the
    per-(batch, chunk) partials of dA_logs, dDs, dt bias and dt_projs_weight.
    """
    CW: tl.constexpr = R + 2 * N
    n = tl.arange(0, NP)
    nmask = n < N
    rr = tl.arange(0, RP)
    j0 = c * tpc
    j1 = tl.minimum(j0 + tpc, n_tiles)
    for sb in range(0, NSUB):
        d = (blk * NSUB + sb) * BD + tl.arange(0, BD)
        dmask = d < D
        m_dn = dmask[:, None] & nmask[None, :]
        A, bias, dsk = _dir_params(alog_ptr, bias_ptr, ds_ptr, d, dmask, n, nmask, D, N, K)
        A2 = A * LOG2E
        wrow = (K * D + d) * R
        ck_base = ck_ptr + ((b * 4 + K) * D + d[:, None]) * n_tiles * N + n[None, :]
        if HAS_INIT:
            carry = tl.load(lamc_ptr + (((b * 4 + K) * D + d[:, None]) * nC + c) * N + n[None, :],
                            mask=m_dn, other=0.0)
        else:
            carry = tl.zeros([BD, NP], dtype=tl.float32)
        accA = tl.zeros([BD, NP], dtype=tl.float32)
        accD = tl.zeros([BD], dtype=tl.float32)
        accB = tl.zeros([BD], dtype=tl.float32)
        accW = tl.zeros([BD, RP], dtype=tl.float32)
        for m in range(0, j1 - j0):
            if REV:
                j = j0 + m
            else:
                j = j1 - 1 - m
            i = j * S + tl.arange(0, S)
            tv = i < L
            m_sd = tv[:, None] & dmask[None, :]
            m_sn = tv[:, None] & nmask[None, :]
            p, q, pos = _positions(i, L, P, Q, FAM)
            x = tl.load(u_ptr + b * su_b + d[None, :] * su_d + p[:, None] * su_p + q[:, None] * su_q,
                        mask=m_sd, other=0.0).to(tl.float32)
            row = ((b * L + pos) * 4 + K) * CW
            raw, dl = _delta_tile(dbl_ptr, row, wdt_ptr, wrow, bias, tv, dmask, R)
            Bt = tl.load(dbl_ptr + row[:, None] + R + n[None, :], mask=m_sn, other=0.0)
            Ct = tl.load(dbl_ptr + row[:, None] + R + N + n[None, :], mask=m_sn, other=0.0)
            dA = tl.exp2(dl[:, :, None] * A2[None, :, :])
            dBx = (dl * x)[:, :, None] * Bt[:, None, :]
            h0 = tl.load(ck_base + j * N, mask=m_dn, other=0.0)
            hs = tile_states(dA, dBx, h0, REV)
            o = (b * D + d[None, :]) * L + pos[:, None]
            g = tl.load(dout_ptr + o, mask=m_sd, other=0.0)
            dln = _next_delta(dbl_ptr, wdt_ptr, wrow, bias, i, tv, dmask, b, L, P, Q, K, FAM, REV, R, N)
            alpha = tl.exp2(dln[:, :, None] * A2[None, :, :])
            beta = g[:, :, None] * Ct[:, None, :]
            lam = tile_adjoints(alpha, beta, carry, REV)
            if REV:
                carry = take_row(lam, S - 1, S)
            else:
                carry = take_row(lam, 0, S)
            lam = tl.where(tv[:, None, None], lam, 0.0)
            ld = lam * dl[:, :, None]
            ha = hs - dBx  # a_t * h_{t-1}
            dx = tl.sum(ld * Bt[:, None, :], axis=2) + dsk[None, :] * g
            ddl = tl.sum(lam * (A[None, :, :] * ha + Bt[:, None, :] * x[:, :, None]), axis=2)
            accA += tl.sum(ld * ha, axis=0)
            accD += tl.sum(g * x, axis=0)
            ddr = tl.where(m_sd, ddl * sigmoid(raw), 0.0)
            accB += tl.sum(ddr, axis=0)
            if ACC:
                dx += tl.load(acc_ptr + o, mask=m_sd, other=0.0)
            tl.store(du_ptr + o, dx, mask=m_sd)
            # channel-reduced rows of d(dbl): this program's own rows, summed over sub-blocks
            prow = (((blk * Bn + b) * L + pos) * 4 + K) * CW
            mprev = tv & (sb > 0)
            for r in range(R):
                lo = tl.load(dbl_ptr + row + r, mask=tv, other=0.0)
                w = tl.load(wdt_ptr + wrow + r, mask=dmask, other=0.0)
                accW += tl.where(rr[None, :] == r, tl.sum(ddr * lo[:, None], axis=0)[:, None], 0.0)
                gr = tl.sum(ddr * w[None, :], axis=1) + tl.load(ddbl_ptr + prow + r, mask=mprev, other=0.0)
                tl.store(ddbl_ptr + prow + r, gr, mask=tv)
            mprev2 = mprev[:, None] & nmask[None, :]
            offB = prow[:, None] + R + n[None, :]
            dBr = tl.sum(ld * x[:, :, None], axis=1) + tl.load(ddbl_ptr + offB, mask=mprev2, other=0.0)
            tl.store(ddbl_ptr + offB, dBr, mask=m_sn)
            dCr = tl.sum(g[:, :, None] * hs, axis=1) + tl.load(ddbl_ptr + offB + N, mask=mprev2, other=0.0)
            tl.store(ddbl_ptr + offB + N, dCr, mask=m_sn)
        part = ((b * nC + c) * 4 + K) * D + d
        # A = -exp(A_log): dA_log = dA * A
        tl.store(dap_ptr + part[:, None] * N + n[None, :], accA * A, mask=m_dn)
        tl.store(ddp_ptr + part, accD, mask=dmask)
        tl.store(dbp_ptr + part, accB, mask=dmask)
        tl.store(dwp_ptr + part[:, None] * RP + rr[None, :], accW, mask=dmask[:, None] & (rr < R)[None, :])
        # the next sub-block adds to the d(dbl) rows stored above (other threads)
        tl.debug_barrier()


@triton.jit
def cs_bwd_kernel(
    dout_ptr, u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, ck_ptr, lamc_ptr,
    du0_ptr, du_ptr, ddbl_ptr, dap_ptr, ddp_ptr, dbp_ptr, dwp_ptr,
    Bn, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q,
    FAM: tl.constexpr, HAS_INIT: tl.constexpr, NSUB: tl.constexpr, R: tl.constexpr, RP: tl.constexpr,
    N: tl.constexpr, S: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
):
    """Backward pass 3: du accumulated over directions exactly like y in ``cs_fwd_kernel``
    (FAM 0: directions 0, 2 -> du0; FAM 1: du = du0 + 1, 3; FAM 2: all four -> du)."""
    blk = tl.program_id(0)
    c = tl.program_id(1)
    b = tl.program_id(2)
    if FAM == 1:
        _bwd_direction(dout_ptr, u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, ck_ptr, lamc_ptr,
                       du0_ptr, du_ptr, ddbl_ptr, dap_ptr, ddp_ptr, dbp_ptr, dwp_ptr,
                       b, c, blk, Bn, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q,
                       1, 1, False, HAS_INIT, True, NSUB, R, RP, N, S, NP, BD)
    else:
        _bwd_direction(dout_ptr, u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, ck_ptr, lamc_ptr,
                       du_ptr, du_ptr, ddbl_ptr, dap_ptr, ddp_ptr, dbp_ptr, dwp_ptr,
                       b, c, blk, Bn, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q,
                       0, 0, False, HAS_INIT, False, NSUB, R, RP, N, S, NP, BD)
    tl.debug_barrier()
    _bwd_direction(dout_ptr, u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, ck_ptr, lamc_ptr,
                   du_ptr, du_ptr, ddbl_ptr, dap_ptr, ddp_ptr, dbp_ptr, dwp_ptr,
                   b, c, blk, Bn, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q,
                   FAM % 2 + 2, FAM % 2, True, HAS_INIT, True, NSUB, R, RP, N, S, NP, BD)
    if FAM == 2:
        tl.debug_barrier()
        _bwd_direction(dout_ptr, u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, ck_ptr, lamc_ptr,
                       du_ptr, du_ptr, ddbl_ptr, dap_ptr, ddp_ptr, dbp_ptr, dwp_ptr,
                       b, c, blk, Bn, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q,
                       1, 1, False, HAS_INIT, True, NSUB, R, RP, N, S, NP, BD)
        tl.debug_barrier()
        _bwd_direction(dout_ptr, u_ptr, dbl_ptr, wdt_ptr, bias_ptr, alog_ptr, ds_ptr, ck_ptr, lamc_ptr,
                       du_ptr, du_ptr, ddbl_ptr, dap_ptr, ddp_ptr, dbp_ptr, dwp_ptr,
                       b, c, blk, Bn, L, P, Q, D, n_tiles, tpc, nC, su_b, su_d, su_p, su_q,
                       3, 1, True, HAS_INIT, True, NSUB, R, RP, N, S, NP, BD)

# The launch plan and the ``hands3c::cross_scan_*_triton`` operators.
# Their autograd is registered in handS3C/ops/cross_scan.py, shared with the C++ operators.

_CS_KEY = ["L", "D", "N"]
_cs_fwd_tuned = plan.autotuned(cs_fwd_kernel, plan.FWD_CONFIGS, _CS_KEY, plan.prune_fwd)
_cs_fwd_chunk_tuned = plan.autotuned(cs_fwd_chunk_kernel, plan.FWD_CONFIGS, _CS_KEY, plan.prune_fwd)
_cs_bwd_tuned = plan.autotuned(cs_bwd_kernel, plan.BWD_CONFIGS, _CS_KEY)
_cs_bwd_chunk_tuned = plan.autotuned(cs_bwd_chunk_kernel, plan.BWD_CONFIGS, _CS_KEY)


def _cs_dims(u, dt_projs_weight, A_logs):
    Bn, D, P, Q = u.shape
    R = dt_projs_weight.shape[2]
    N = A_logs.shape[1]
    return Bn, D, P, Q, P * Q, R, N


def _cs_fwd_fake(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, tile, chunk_tiles, block_d,
                 need_ck, out_order=None):
    _checks.triton_cross_scan_fwd("hands3c::cross_scan_fwd_triton", u, x_proj_weight, dt_projs_weight, dt_projs_bias,
                                  A_logs, Ds, tile, chunk_tiles, block_d)
    order = _checks.cross_scan_out_order("hands3c::cross_scan_fwd_triton", out_order)
    Bn, D, P, Q, L, R, N = _cs_dims(u, dt_projs_weight, A_logs)
    f32 = torch.float32
    ck_shape = (Bn, 4, D, plan.cdiv(L, tile), N) if need_ck else (0,)
    return (_checks.empty_in_order((Bn, D, P, Q), order, u), u.new_empty((Bn, L, 4, R + 2 * N), dtype=f32),
            u.new_empty(ck_shape, dtype=f32))


@plan.operator("hands3c::cross_scan_fwd_triton", _cs_fwd_fake)
def cross_scan_fwd_triton(u: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor, dt_projs_bias: Tensor,
                          A_logs: Tensor, Ds: Tensor, tile: int, chunk_tiles: int,
                          block_d: int, need_ck: bool,
                          out_order: Optional[List[int]] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (y (B, D, P, Q) f32, dbl (B, L, 4, R+2N) f32, checkpoints (B, 4, D, ceil(L/tile), N) f32).

    ``u`` float32 with any strides; ``dbl`` is the per-position projection (kept for the
    backward), ``checkpoints`` the state entering every tile of every direction (empty
    when ``need_ck=False``: no backward will run, the stores are skipped).  ``y`` is stored
    in ``out_order`` (handS3C/ops/cross_scan.py; None: contiguous): the kernels store through
    its strides, so no layout costs a copy.
    """
    _checks.triton_cross_scan_fwd("hands3c::cross_scan_fwd_triton", u, x_proj_weight, dt_projs_weight, dt_projs_bias,
                                  A_logs, Ds, tile, chunk_tiles, block_d)
    order = _checks.cross_scan_out_order("hands3c::cross_scan_fwd_triton", out_order)
    Bn, D, P, Q, L, R, N = _cs_dims(u, dt_projs_weight, A_logs)
    CW = R + 2 * N
    S, NP = tile, plan.np2(N)
    n_tiles = plan.cdiv(L, S)
    dev = u.device
    f32 = torch.float32
    # the backward's d(dbl) partials are at most 5x dbl (see plan.plan_outer)
    plan.check_int32("cross_scan_selective_scan", y=u.numel(), dbl=5 * Bn * L * 4 * CW, checkpoints=Bn * 4 * D * n_tiles * N)
    xw = x_proj_weight.contiguous()
    wdt, bias = dt_projs_weight.contiguous(), dt_projs_bias.contiguous()
    alog, ds = A_logs.contiguous(), Ds.contiguous()
    # dbl[b, l, k, :] = x_proj_weight[k] @ u[b, :, l]: one batched GEMM reading u in place
    # (cuBLAS takes the transposed operand as is), output rows contiguous per position.
    u3 = u.reshape(Bn, D, L)
    dbl = torch.matmul(u3.transpose(1, 2), xw.reshape(4 * CW, D).t()).reshape(Bn, L, 4, CW)
    tpc, nC = plan.plan_chunks(n_tiles, Bn * plan.cdiv(D, 8), dev, chunk_tiles)
    ck = plan.buffer((Bn, 4, D, n_tiles, N), f32, dev) if need_ck or nC > 1 else plan.buffer((0,), f32, dev)
    y = _in_order(plan.buffer(_storage((Bn, D, P, Q), order), f32, dev), order)
    # family-0 partial (chunked runs only), in y's layout: the kernels address both with y's strides
    y0 = _in_order(plan.buffer(_storage((Bn, D, P, Q), order), f32, dev), order) if nC > 1 else y
    su = u.stride()
    sy = y.stride()
    consts = dict(R=R, N=N, S=S, NP=NP)

    def grid(bd):
        return (plan.cdiv(D, bd), nC, Bn)

    if nC > 1:
        hend = plan.buffer((Bn, 4, D, nC, N), f32, dev)
        sdl = plan.buffer((Bn, 4, D, nC), f32, dev)
        for k in range(4):
            plan.launch_fwd(cs_fwd_chunk_kernel, _cs_fwd_chunk_tuned, grid, block_d,
                        u, dbl, wdt, bias, alog, ds, hend, sdl, L, P, Q, D, n_tiles, tpc, nC, *su,
                        K=k, **consts)
        wrap_triton(cs_fwd_combine_kernel)[(plan.cdiv(D, 16), Bn * 4)](
            alog, hend, sdl, ck, D, N, n_tiles, tpc, nC, BD=16, NP=NP)
    # one chunk: one launch running all four directions (FAM=2); else two family launches
    for fam, out in (((2, y),) if nC == 1 else ((0, y0), (1, y))):
        plan.launch_fwd(cs_fwd_kernel, _cs_fwd_tuned, grid, block_d,
                    u, dbl, wdt, bias, alog, ds, y0, out, ck, L, P, Q, D, n_tiles, tpc, nC, *su, *sy,
                    FAM=fam, HAS_INIT=nC > 1, STORE_CK=need_ck, **consts)
    return y, dbl, (ck if need_ck else plan.buffer((0,), f32, dev))


def _cs_bwd_fake(dout, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, dbl, checkpoints,
                 tile, chunk_tiles, block_d, bwd_sub):
    _checks.triton_cross_scan_bwd("hands3c::cross_scan_bwd_triton", dout, u, x_proj_weight, dt_projs_weight,
                                  dt_projs_bias, A_logs, Ds, dbl, checkpoints, tile, chunk_tiles, block_d, bwd_sub)
    return [plan.like(u, torch.float32), plan.like(x_proj_weight), plan.like(dt_projs_weight), plan.like(dt_projs_bias),
            plan.like(A_logs), plan.like(Ds)]


@plan.operator("hands3c::cross_scan_bwd_triton", _cs_bwd_fake)
def cross_scan_bwd_triton(dout: Tensor, u: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor,
                          dt_projs_bias: Tensor, A_logs: Tensor, Ds: Tensor, dbl: Tensor, checkpoints: Tensor,
                          tile: int, chunk_tiles: int, block_d: int, bwd_sub: int) -> List[Tensor]:
    """-> [du, dx_proj_weight, ddt_projs_weight, ddt_projs_bias, dA_logs, dDs]; ``dout``
    (B, D, P, Q) float32 of any strides: the argument checks make it contiguous (one copy when
    the forward used an ``out_order``; the kernels index it densely)."""
    dout, dbl, checkpoints = _checks.triton_cross_scan_bwd(
        "hands3c::cross_scan_bwd_triton", dout, u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, dbl,
        checkpoints, tile, chunk_tiles, block_d, bwd_sub)
    Bn, D, P, Q, L, R, N = _cs_dims(u, dt_projs_weight, A_logs)
    CW = R + 2 * N
    S, NP, RP = tile, plan.np2(N), plan.np2(R)
    n_tiles = checkpoints.shape[3]
    dev = u.device
    f32 = torch.float32
    xw = x_proj_weight.contiguous()
    wdt, bias = dt_projs_weight.contiguous(), dt_projs_bias.contiguous()
    alog, ds = A_logs.contiguous(), Ds.contiguous()
    BD = plan.bwd_block_d(block_d, D, S, NP)
    # partials per outer block: |d(dbl)| = 4*(R+2N) values per position vs D for u
    # (spatial branch: up to 5 outer blocks; channel branch, where dbl is 6x u: one)
    nsub, n_outer = plan.plan_outer(plan.cdiv(D, BD), Bn, max(1, (2 * D) // (4 * CW)), dev, bwd_sub)
    tpc, nC = plan.plan_chunks(n_tiles, Bn * n_outer, dev, chunk_tiles)
    su = u.stride()
    consts = dict(R=R, N=N, S=S, NP=NP, BD=BD)
    if nC > 1:
        lam = plan.buffer((Bn, 4, D, nC, N), f32, dev)
        sds = plan.buffer((Bn, 4, D, nC), f32, dev)
        lamc = plan.buffer((Bn, 4, D, nC, N), f32, dev)
        for k in range(4):
            plan.launch_bwd(cs_bwd_chunk_kernel, _cs_bwd_chunk_tuned, (plan.cdiv(D, BD), nC, Bn),
                        dout, dbl, wdt, bias, alog, ds, lam, sds, L, P, Q, D, n_tiles, tpc, nC, K=k, **consts)
        wrap_triton(cs_bwd_combine_kernel)[(plan.cdiv(D, 16), Bn * 4)](
            alog, lam, sds, lamc, D, N, nC, BD=16, NP=NP)
    else:
        lamc = checkpoints  # unused
    du = plan.buffer((Bn, D, P, Q), f32, dev)
    du0 = plan.buffer((Bn, D, P, Q), f32, dev) if nC > 1 else du
    ddbl_p = plan.buffer((n_outer, Bn, L, 4, CW), f32, dev)
    dAp = plan.buffer((Bn, nC, 4, D, N), f32, dev)
    dDp = plan.buffer((Bn, nC, 4, D), f32, dev)
    dbp = plan.buffer((Bn, nC, 4, D), f32, dev)
    dWp = plan.buffer((Bn, nC, 4, D, RP), f32, dev)
    for fam, out in (((2, du),) if nC == 1 else ((0, du0), (1, du))):
        plan.launch_bwd(cs_bwd_kernel, _cs_bwd_tuned, (n_outer, nC, Bn),
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


def _storage(shape, order):
    return [shape[o] for o in order]


def _in_order(storage: Tensor, order) -> Tensor:
    """The logical (B, D, P, Q) view of a contiguous buffer laid out in ``order``."""
    inverse = [0] * 4
    for i, o in enumerate(order):
        inverse[o] = i
    return storage.permute(inverse)


def cross_scan_selective_scan(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_order=None):
    """Entry used by :func:`handS3C.ops.cross_scan_selective_scan` (u float32, any strides;
    ``out_order`` as there, None: contiguous y)."""
    L = u.shape[2] * u.shape[3]
    y, _, _ = torch.ops.hands3c.cross_scan_fwd_triton(
        u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
        plan.tile_steps(L), plan.CONFIG["chunk_tiles"], plan.CONFIG["block_d"],
        plan.need_checkpoints(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds), out_order)
    return y
