"""Triton kernels of ``selective_scan_fn`` (mamba-ssm's contract), forward and backward.

Recurrence per (batch b, channel d, state n), steps t = 0..L-1::

    delta_t = softplus(delta[b,d,t] + bias[d])          (optional bias / softplus)
    h_t     = exp(delta_t * A[d,n]) * h_{t-1} + delta_t * B[b,g(d),n,t] * u[b,d,t]
    y_t     = sum_n C[b,g(d),n,t] * h_t + D[d] * u[b,d,t]     (then * silu(z) if z)

Work decomposition (see DESIGN.md):

* a *tile* is S consecutive steps of BD channels, solved in registers with one
  ``tl.associative_scan`` over an (S, BD, NP) tile; the state at the start of every tile
  (the *checkpoint*) is written by the forward and read by the backward, so the backward
  never stores per-step states;
* a *chunk* is ``tpc`` consecutive tiles, the unit of sequence parallelism.  With more
  than one chunk the forward runs three passes: ``ss_fwd_kernel(LOCAL=True)`` scans each
  chunk from a zero state and keeps its end state and the sum of its deltas (the chunk's
  decay is exp(A * sum delta)), ``ss_fwd_combine_kernel`` chains the chunk states
  sequentially (cheap: one (BD, N) update per chunk), and ``ss_fwd_kernel(LOCAL=False)``
  rescans each chunk from its true initial state writing outputs.  With one chunk the
  first two passes are skipped.  The backward mirrors this for the adjoint state
  lambda (``ss_bwd_chunk_kernel``, ``ss_bwd_combine_kernel``, ``ss_bwd_kernel``);
* channel blocks never straddle a B/C group, so dB/dC (reductions over the channels of
  a group) are summed in registers over the block, then over the ``NSUB`` sub-blocks a
  program walks in a fixed order (read-modify-write of the program's own rows), and
  finally over outer blocks in a fixed order by the caller: deterministic, no atomics.
  When every channel has its own B/C (``PER_CH``, e.g. input-independent B of shape
  (dim, N)) no reduction is needed and the tiles are stored directly.

Half-precision u / delta / z / B / C are loaded as such and converted in registers;
states and accumulations are float32.

Below the kernels: the launch plan (tile, chunks, channel blocks, partial buffers) and the
operators ``hands3c::selective_scan_{fwd,bwd}_triton`` that run it (see ``_plan``).
"""
import math
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
def _channels(blk, sb, dim, cpg, NSUB: tl.constexpr, BD: tl.constexpr, PER_CH: tl.constexpr):
    """Channels of program block ``blk``, sub-block ``sb``; never crosses a group.

    Grouped mode: blocks are numbered group-major, ``nblk_g`` outer blocks of NSUB*BD
    channels per group (computed here because BD may come from the autotuner).
    """
    nblk_g = tl.cdiv(cpg, BD * NSUB)
    ar = tl.arange(0, BD)
    if PER_CH:
        d = (blk * NSUB + sb) * BD + ar
        dmask = d < dim
        g = blk  # unused in PER_CH mode (each channel is its own group)
        jo = blk
    else:
        g = blk // nblk_g
        jo = blk % nblk_g
        cin = (jo * NSUB + sb) * BD + ar
        dmask = cin < cpg
        d = g * cpg + cin
    return d, dmask, g, jo


@triton.jit
def _load_delta(dt_ptr, dbias, b, d, t, m_sd, s_tb, s_td, s_tl,
                HAS_DB: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(raw, delta) tiles (S, BD) in float32; delta is 0 where masked."""
    raw = tl.load(dt_ptr + b * s_tb + d[None, :] * s_td + t[:, None] * s_tl, mask=m_sd, other=0.0).to(tl.float32)
    if HAS_DB:
        raw = raw + dbias[None, :]
    if SOFTPLUS:
        dl = softplus(raw)
    else:
        dl = raw
    return raw, tl.where(m_sd, dl, 0.0)


@triton.jit
def _load_bc(ptr, b, d, g, n, t, tv, m_sd, nmask, s_b, s_g, s_n, s_l, PER_CH: tl.constexpr):
    """B or C for a tile: (S, BD, NP) per channel, or (S, 1, NP) shared by the group."""
    if PER_CH:
        v = tl.load(ptr + b * s_b + d[None, :, None] * s_g + n[None, None, :] * s_n + t[:, None, None] * s_l,
                    mask=m_sd[:, :, None] & nmask[None, None, :], other=0.0).to(tl.float32)
    else:
        v = tl.load(ptr + b * s_b + g * s_g + n[None, :] * s_n + t[:, None] * s_l,
                    mask=tv[:, None] & nmask[None, :], other=0.0).to(tl.float32)
        v = v[:, None, :]
    return v


@triton.jit
def _block_params(a_ptr, dbias_ptr, d, dmask, n, nmask, N, HAS_DB: tl.constexpr, BD: tl.constexpr):
    """A channel block's (channel, state) mask, its rows of A ``(BD, NP)`` and its delta_bias
    ``(BD,)`` (zeros without one)."""
    m_dn = dmask[:, None] & nmask[None, :]
    A = tl.load(a_ptr + d[:, None] * N + n[None, :], mask=m_dn, other=0.0)
    if HAS_DB:
        dbias = tl.load(dbias_ptr + d, mask=dmask, other=0.0)
    else:
        dbias = tl.zeros([BD], dtype=tl.float32)
    return m_dn, A, dbias


@triton.jit
def _adjoint_tile(dt_ptr, dbias, A2, gy, Ct, carry, b, d, dmask, t, L, s_tb, s_td, s_tl,
                  HAS_DB: tl.constexpr, SOFTPLUS: tl.constexpr):
    """The adjoints of one tile, ``lambda_t = g_t C_t + exp(delta_{t+1} A) lambda_{t+1}``,
    entered at the tile's end with ``carry``; also returns the *next* steps' deltas."""
    tn = t + 1
    m_n = (tn < L)[:, None] & dmask[None, :]
    _, dln = _load_delta(dt_ptr, dbias, b, d, tn, m_n, s_tb, s_td, s_tl, HAS_DB, SOFTPLUS)
    alpha = tl.exp2(dln[:, :, None] * A2[None, :, :])  # masked next steps: exp2(0) = 1
    lam = tile_adjoints(alpha, gy[:, :, None] * Ct, carry, False)
    return lam, dln


@triton.jit
def ss_fwd_kernel(
    u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, dskip_ptr, z_ptr, dbias_ptr,
    out_ptr, ck_ptr, last_ptr, hend_ptr, sdl_ptr,
    L, dim, N, cpg, n_tiles, tpc, nC,
    s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl,
    s_bb, s_bg, s_bn, s_bl, s_cb, s_cg, s_cn, s_cl,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DB: tl.constexpr, SOFTPLUS: tl.constexpr,
    PER_CH: tl.constexpr, LOCAL: tl.constexpr, HAS_INIT: tl.constexpr, STORE_CK: tl.constexpr,
    S: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
):
    """Scan chunk ``program_id(1)`` of batch ``program_id(2)`` for a channel block.

    LOCAL=True (pass 1): from a zero state; writes the chunk's end state ``hend`` and
    the sum of its deltas ``sdl``.  LOCAL=False (pass 3): from the chunk's true initial
    state (``ck`` at the chunk's first tile, written by pass 2, when HAS_INIT) writing
    the output, the checkpoint of every tile (STORE_CK) and, for the last chunk, ``last``.
    """
    blk = tl.program_id(0)
    c = tl.program_id(1)
    b = tl.program_id(2)
    d, dmask, g, jo = _channels(blk, 0, dim, cpg, 1, BD, PER_CH)
    n = tl.arange(0, NP)
    nmask = n < N
    m_dn, A, dbias = _block_params(a_ptr, dbias_ptr, d, dmask, n, nmask, N, HAS_DB, BD)
    A2 = A * LOG2E
    if HAS_D:
        dsk = tl.load(dskip_ptr + d, mask=dmask, other=0.0)
    ck_base = ck_ptr + (b * dim + d[:, None]) * n_tiles * N + n[None, :]
    j0 = c * tpc
    j1 = tl.minimum(j0 + tpc, n_tiles)
    h = tl.zeros([BD, NP], dtype=tl.float32)
    if HAS_INIT:
        h = tl.load(ck_base + j0 * N, mask=m_dn, other=0.0)
    sdl = tl.zeros([BD], dtype=tl.float32)
    for j in range(j0, j1):
        t = j * S + tl.arange(0, S)
        tv = t < L
        m_sd = tv[:, None] & dmask[None, :]
        x = tl.load(u_ptr + b * s_ub + d[None, :] * s_ud + t[:, None] * s_ul, mask=m_sd, other=0.0).to(tl.float32)
        raw, dl = _load_delta(dt_ptr, dbias, b, d, t, m_sd, s_tb, s_td, s_tl, HAS_DB, SOFTPLUS)
        Bt = _load_bc(b_ptr, b, d, g, n, t, tv, m_sd, nmask, s_bb, s_bg, s_bn, s_bl, PER_CH)
        dA = tl.exp2(dl[:, :, None] * A2[None, :, :])
        dBx = (dl * x)[:, :, None] * Bt
        if LOCAL:
            sdl += tl.sum(dl, axis=0)
        elif STORE_CK:  # only when a backward will need them
            tl.store(ck_base + j * N, h, mask=m_dn)
        hs = tile_states(dA, dBx, h, False)
        if not LOCAL:
            Ct = _load_bc(c_ptr, b, d, g, n, t, tv, m_sd, nmask, s_cb, s_cg, s_cn, s_cl, PER_CH)
            y = tl.sum(hs * Ct, axis=2)
            if HAS_D:
                y += dsk[None, :] * x
            if HAS_Z:
                zz = tl.load(z_ptr + b * s_zb + d[None, :] * s_zd + t[:, None] * s_zl, mask=m_sd, other=0.0).to(tl.float32)
                y = y * zz * sigmoid(zz)
            tl.store(out_ptr + (b * dim + d[None, :]) * L + t[:, None], y.to(out_ptr.dtype.element_ty), mask=m_sd)
        # masked tail steps are identities (a=1, b=0), so row S-1 is the last real state
        h = take_row(hs, S - 1, S)
    if LOCAL:
        tl.store(hend_ptr + ((b * dim + d[:, None]) * nC + c) * N + n[None, :], h, mask=m_dn)
        tl.store(sdl_ptr + (b * dim + d) * nC + c, sdl, mask=dmask)
    else:
        tl.store(last_ptr + (b * dim + d[:, None]) * N + n[None, :], h, mask=m_dn & (c == nC - 1))


@triton.jit
def ss_fwd_combine_kernel(a_ptr, hend_ptr, sdl_ptr, ck_ptr, dim, N, n_tiles, tpc, nC,
                          BD: tl.constexpr, NP: tl.constexpr):
    """Pass 2: chain chunk states; ck[chunk's first tile] = state entering the chunk."""
    d = tl.program_id(0) * BD + tl.arange(0, BD)
    b = tl.program_id(1)
    n = tl.arange(0, NP)
    dmask = d < dim
    m_dn = dmask[:, None] & (n < N)[None, :]
    A2 = tl.load(a_ptr + d[:, None] * N + n[None, :], mask=m_dn, other=0.0) * LOG2E
    carry = tl.zeros([BD, NP], dtype=tl.float32)
    for c in range(0, nC):
        tl.store(ck_ptr + ((b * dim + d[:, None]) * n_tiles + c * tpc) * N + n[None, :], carry, mask=m_dn)
        he = tl.load(hend_ptr + ((b * dim + d[:, None]) * nC + c) * N + n[None, :], mask=m_dn, other=0.0)
        s = tl.load(sdl_ptr + (b * dim + d) * nC + c, mask=dmask, other=0.0)
        carry = tl.exp2(A2 * s[:, None]) * carry + he


@triton.jit
def ss_bwd_chunk_kernel(
    dout_ptr, dt_ptr, a_ptr, c_ptr, z_ptr, dbias_ptr, lam_ptr, sds_ptr,
    L, dim, N, cpg, n_tiles, tpc, nC,
    s_tb, s_td, s_tl, s_zb, s_zd, s_zl, s_cb, s_cg, s_cn, s_cl,
    HAS_Z: tl.constexpr, HAS_DB: tl.constexpr, SOFTPLUS: tl.constexpr,
    PER_CH: tl.constexpr, S: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
):
    """Backward pass 1: adjoint state of each chunk from a zero carry.

    Writes lambda at the chunk's first step (``lam``) and the sum over the chunk of the
    *next* step's delta (``sds``): the carry entering from the following chunk reaches
    the chunk's first step multiplied by exp(A * sds).  Only g = dout * silu(z) enters
    lambda, so no forward state is needed here.
    """
    blk = tl.program_id(0)
    c = tl.program_id(1)
    b = tl.program_id(2)
    d, dmask, g, jo = _channels(blk, 0, dim, cpg, 1, BD, PER_CH)
    n = tl.arange(0, NP)
    nmask = n < N
    m_dn, A, dbias = _block_params(a_ptr, dbias_ptr, d, dmask, n, nmask, N, HAS_DB, BD)
    A2 = A * LOG2E
    j0 = c * tpc
    j1 = tl.minimum(j0 + tpc, n_tiles)
    carry = tl.zeros([BD, NP], dtype=tl.float32)
    sds = tl.zeros([BD], dtype=tl.float32)
    for m in range(0, j1 - j0):
        j = j1 - 1 - m
        t = j * S + tl.arange(0, S)
        tv = t < L
        m_sd = tv[:, None] & dmask[None, :]
        Ct = _load_bc(c_ptr, b, d, g, n, t, tv, m_sd, nmask, s_cb, s_cg, s_cn, s_cl, PER_CH)
        gy = tl.load(dout_ptr + (b * dim + d[None, :]) * L + t[:, None], mask=m_sd, other=0.0).to(tl.float32)
        if HAS_Z:
            zz = tl.load(z_ptr + b * s_zb + d[None, :] * s_zd + t[:, None] * s_zl, mask=m_sd, other=0.0).to(tl.float32)
            gy = gy * zz * sigmoid(zz)
        lam, dln = _adjoint_tile(dt_ptr, dbias, A2, gy, Ct, carry, b, d, dmask, t, L, s_tb, s_td, s_tl,
                                 HAS_DB, SOFTPLUS)
        carry = take_row(lam, 0, S)
        sds += tl.sum(dln, axis=0)
    tl.store(lam_ptr + ((b * dim + d[:, None]) * nC + c) * N + n[None, :], carry, mask=m_dn)
    tl.store(sds_ptr + (b * dim + d) * nC + c, sds, mask=dmask)


@triton.jit
def ss_bwd_combine_kernel(a_ptr, lam_ptr, sds_ptr, dlast_ptr, lamc_ptr, dim, N, nC,
                          HAS_DLAST: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr):
    """Backward pass 2: lamc[c] = adjoint carry entering chunk c from its successor."""
    d = tl.program_id(0) * BD + tl.arange(0, BD)
    b = tl.program_id(1)
    n = tl.arange(0, NP)
    dmask = d < dim
    m_dn = dmask[:, None] & (n < N)[None, :]
    A2 = tl.load(a_ptr + d[:, None] * N + n[None, :], mask=m_dn, other=0.0) * LOG2E
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + (b * dim + d[:, None]) * N + n[None, :], mask=m_dn, other=0.0)
    else:
        carry = tl.zeros([BD, NP], dtype=tl.float32)
    for m in range(0, nC):
        c = nC - 1 - m
        off = ((b * dim + d[:, None]) * nC + c) * N + n[None, :]
        tl.store(lamc_ptr + off, carry, mask=m_dn)
        lm = tl.load(lam_ptr + off, mask=m_dn, other=0.0)
        s = tl.load(sds_ptr + (b * dim + d) * nC + c, mask=dmask, other=0.0)
        carry = lm + tl.exp2(A2 * s[:, None]) * carry


@triton.jit
def ss_bwd_kernel(
    dout_ptr, dlast_ptr, u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, dskip_ptr, z_ptr, dbias_ptr, ck_ptr, lamc_ptr,
    du_ptr, ddt_ptr, dz_ptr, db_ptr, dc_ptr, dap_ptr, ddp_ptr, ddbp_ptr,
    L, dim, N, cpg, n_tiles, tpc, nC,
    s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl,
    s_bb, s_bg, s_bn, s_bl, s_cb, s_cg, s_cn, s_cl,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DB: tl.constexpr, SOFTPLUS: tl.constexpr,
    PER_CH: tl.constexpr, HAS_INIT: tl.constexpr, HAS_DLAST: tl.constexpr,
    NSUB: tl.constexpr, S: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
):
    """Backward pass 3: every gradient of one chunk, walking its tiles last to first.

    Per tile: the forward state is rebuilt from the tile checkpoint (one forward scan),
    the adjoint lambda from the carry (one reverse scan); then, with a*h_{t-1} = h_t - b_t,

        du     = sum_n lambda*delta*B + D*g          dB = sum_(d in group) lambda*delta*u
        ddelta = sum_n lambda*(A*(h_t - b_t) + B*u)  dC = sum_(d in group) g*h_t
        dA    += sum_t lambda*delta*(h_t - b_t)

    (times softplus' = sigmoid(raw delta) when softplus is on).  dB/dC are reduced over the
    BD channels in registers and over the NSUB sub-blocks by read-modify-write of this
    program's own rows (``db_ptr``/``dc_ptr`` hold one row set per outer block; the
    caller sums outer blocks).  dA, dD, ddelta_bias go to per-(batch, chunk) partials.
    """
    blk = tl.program_id(0)
    c = tl.program_id(1)
    b = tl.program_id(2)
    n = tl.arange(0, NP)
    nmask = n < N
    j0 = c * tpc
    j1 = tl.minimum(j0 + tpc, n_tiles)
    # grouped dB/dC partials are laid out (batch, G, nblk_g, N, L): row set b*n_blocks + blk
    dbc_base = b * tl.num_programs(0) + blk
    for sb in range(0, NSUB):
        d, dmask, g, jo = _channels(blk, sb, dim, cpg, NSUB, BD, PER_CH)
        m_dn, A, dbias = _block_params(a_ptr, dbias_ptr, d, dmask, n, nmask, N, HAS_DB, BD)
        A2 = A * LOG2E
        if HAS_D:
            dsk = tl.load(dskip_ptr + d, mask=dmask, other=0.0)
        ck_base = ck_ptr + (b * dim + d[:, None]) * n_tiles * N + n[None, :]
        if HAS_INIT:
            carry = tl.load(lamc_ptr + ((b * dim + d[:, None]) * nC + c) * N + n[None, :], mask=m_dn, other=0.0)
        elif HAS_DLAST:
            carry = tl.load(dlast_ptr + (b * dim + d[:, None]) * N + n[None, :], mask=m_dn, other=0.0)
        else:
            carry = tl.zeros([BD, NP], dtype=tl.float32)
        accA = tl.zeros([BD, NP], dtype=tl.float32)
        accD = tl.zeros([BD], dtype=tl.float32)
        accB = tl.zeros([BD], dtype=tl.float32)
        for m in range(0, j1 - j0):
            j = j1 - 1 - m
            t = j * S + tl.arange(0, S)
            tv = t < L
            m_sd = tv[:, None] & dmask[None, :]
            x = tl.load(u_ptr + b * s_ub + d[None, :] * s_ud + t[:, None] * s_ul, mask=m_sd, other=0.0).to(tl.float32)
            raw, dl = _load_delta(dt_ptr, dbias, b, d, t, m_sd, s_tb, s_td, s_tl, HAS_DB, SOFTPLUS)
            Bt = _load_bc(b_ptr, b, d, g, n, t, tv, m_sd, nmask, s_bb, s_bg, s_bn, s_bl, PER_CH)
            Ct = _load_bc(c_ptr, b, d, g, n, t, tv, m_sd, nmask, s_cb, s_cg, s_cn, s_cl, PER_CH)
            # forward state of the tile from its checkpoint
            dA = tl.exp2(dl[:, :, None] * A2[None, :, :])
            dBx = (dl * x)[:, :, None] * Bt
            h0 = tl.load(ck_base + j * N, mask=m_dn, other=0.0)
            hs = tile_states(dA, dBx, h0, False)
            o_sd = (b * dim + d[None, :]) * L + t[:, None]
            gy = tl.load(dout_ptr + o_sd, mask=m_sd, other=0.0).to(tl.float32)
            if HAS_Z:
                zz = tl.load(z_ptr + b * s_zb + d[None, :] * s_zd + t[:, None] * s_zl, mask=m_sd, other=0.0).to(tl.float32)
                sz = sigmoid(zz)
                y = tl.sum(hs * Ct, axis=2)
                if HAS_D:
                    y += dsk[None, :] * x
                dz = gy * y * sz * (1.0 + zz * (1.0 - sz))
                tl.store(dz_ptr + o_sd, dz.to(dz_ptr.dtype.element_ty), mask=m_sd)
                gy = gy * zz * sz
            # adjoint state: lambda_t = g_t C_t + a_{t+1} lambda_{t+1}
            lam, _ = _adjoint_tile(dt_ptr, dbias, A2, gy, Ct, carry, b, d, dmask, t, L, s_tb, s_td, s_tl,
                                   HAS_DB, SOFTPLUS)
            carry = take_row(lam, 0, S)
            # past-the-end rows carry d(last_state) through identities: not real steps
            lam = tl.where(tv[:, None, None], lam, 0.0)
            ld = lam * dl[:, :, None]
            ha = hs - dBx  # a_t * h_{t-1}
            dx = tl.sum(ld * Bt, axis=2)
            if HAS_D:
                dx += dsk[None, :] * gy
                accD += tl.sum(gy * x, axis=0)
            ddl = tl.sum(lam * (A[None, :, :] * ha + Bt * x[:, :, None]), axis=2)
            accA += tl.sum(ld * ha, axis=0)
            if SOFTPLUS:
                ddl = ddl * sigmoid(raw)
            ddl = tl.where(m_sd, ddl, 0.0)
            accB += tl.sum(ddl, axis=0)
            tl.store(du_ptr + o_sd, dx.to(du_ptr.dtype.element_ty), mask=m_sd)
            tl.store(ddt_ptr + o_sd, ddl.to(ddt_ptr.dtype.element_ty), mask=m_sd)
            dBt = ld * x[:, :, None]
            dCt = gy[:, :, None] * hs
            if PER_CH:
                off3 = ((b * dim + d[None, :, None]) * N + n[None, None, :]) * L + t[:, None, None]
                m3 = m_sd[:, :, None] & nmask[None, None, :]
                tl.store(db_ptr + off3, dBt.to(db_ptr.dtype.element_ty), mask=m3)
                tl.store(dc_ptr + off3, dCt.to(dc_ptr.dtype.element_ty), mask=m3)
            else:
                off2 = (dbc_base * N + n[None, :]) * L + t[:, None]
                m2 = tv[:, None] & nmask[None, :]
                mprev = m2 & (sb > 0)
                dBr = tl.sum(dBt, axis=1) + tl.load(db_ptr + off2, mask=mprev, other=0.0)
                dCr = tl.sum(dCt, axis=1) + tl.load(dc_ptr + off2, mask=mprev, other=0.0)
                tl.store(db_ptr + off2, dBr, mask=m2)
                tl.store(dc_ptr + off2, dCr, mask=m2)
        part = (b * nC + c) * dim + d
        tl.store(dap_ptr + part[:, None] * N + n[None, :], accA, mask=m_dn)
        tl.store(ddp_ptr + part, accD, mask=dmask)
        tl.store(ddbp_ptr + part, accB, mask=dmask)
        # the next sub-block reads back the dB/dC rows written above (other threads)
        tl.debug_barrier()

# The launch plan and the ``hands3c::selective_scan_*_triton`` operators.
# Their autograd is registered in handS3C/ops/selective_scan.py, shared with the C++ operators.

_SS_KEY = ["L", "dim", "N", "cpg"]
_ss_fwd_tuned = plan.autotuned(ss_fwd_kernel, plan.FWD_CONFIGS, _SS_KEY, plan.prune_fwd)
_ss_bwd_tuned = plan.autotuned(ss_bwd_kernel, plan.BWD_CONFIGS, _SS_KEY)
_ss_bwd_chunk_tuned = plan.autotuned(ss_bwd_chunk_kernel, plan.BWD_CONFIGS, _SS_KEY)


def _ss_strides(u, delta, z, B, C):
    zz = z if z is not None else u
    return (*u.stride(), *delta.stride(), *zz.stride(), *B.stride(), *C.stride())


def _ss_fwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, tile, chunk_tiles, block_d, need_ck):
    _checks.triton_selective_scan_fwd("hands3c::selective_scan_fwd_triton", u, delta, A, B, C, D, z, delta_bias, tile,
                                      chunk_tiles, block_d)
    batch, dim, L = u.shape
    N = A.shape[1]
    f32 = torch.float32
    ck_shape = (batch, dim, plan.cdiv(L, tile), N) if need_ck else (0,)
    return plan.like(u), u.new_empty((batch, dim, N), dtype=f32), u.new_empty(ck_shape, dtype=f32)


@plan.operator("hands3c::selective_scan_fwd_triton", _ss_fwd_fake)
def selective_scan_fwd_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                              z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                              tile: int, chunk_tiles: int, block_d: int,
                              need_ck: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (out (batch, dim, L) u.dtype, last_state (batch, dim, N) f32,
    checkpoints (batch, dim, ceil(L/tile), N) f32: the state entering every tile).

    ``need_ck=False`` (no backward will run) skips the checkpoint stores and returns an
    empty checkpoint tensor.
    """
    D, delta_bias = _checks.triton_selective_scan_fwd("hands3c::selective_scan_fwd_triton", u, delta, A, B, C, D, z,
                                                      delta_bias, tile, chunk_tiles, block_d)
    batch, dim, L = u.shape
    N = A.shape[1]
    G = B.shape[1]
    cpg = dim // G
    per_ch = cpg == 1
    S, NP = tile, plan.np2(N)
    n_tiles = plan.cdiv(L, S)
    dev = u.device
    A = A.contiguous()
    plan.check_int32("selective_scan", u=u.numel(), dB=batch * G * N * L, checkpoints=batch * dim * n_tiles * N)
    tpc, nC = plan.plan_chunks(n_tiles, batch * plan.cdiv(dim, 8), dev, chunk_tiles)
    out = plan.buffer((batch, dim, L), u.dtype, dev)
    last = plan.buffer((batch, dim, N), torch.float32, dev)
    # without need_ck, chunked runs still pass chunk-start states through ck (scratch)
    ck = plan.buffer((batch, dim, n_tiles, N), torch.float32, dev) if need_ck or nC > 1 else plan.buffer((0,), torch.float32, dev)
    Dt = D if D is not None else A
    zt = z if z is not None else u
    dbt = delta_bias if delta_bias is not None else A

    def grid(bd):
        nblk = plan.cdiv(dim, bd) if per_ch else G * plan.cdiv(cpg, bd)
        return (nblk, nC, batch)

    strides = _ss_strides(u, delta, z, B, C)
    flags = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_DB=delta_bias is not None,
                 SOFTPLUS=bool(delta_softplus), PER_CH=per_ch, S=S, NP=NP)
    if nC > 1:
        hend = plan.buffer((batch, dim, nC, N), torch.float32, dev)
        sdl = plan.buffer((batch, dim, nC), torch.float32, dev)
        plan.launch_fwd(ss_fwd_kernel, _ss_fwd_tuned, grid, block_d,
                    u, delta, A, B, C, Dt, zt, dbt, out, ck, last, hend, sdl,
                    L, dim, N, cpg, n_tiles, tpc, nC, *strides, LOCAL=True, HAS_INIT=False, STORE_CK=False, **flags)
        bdc = 16
        wrap_triton(ss_fwd_combine_kernel)[(plan.cdiv(dim, bdc), batch)](
            A, hend, sdl, ck, dim, N, n_tiles, tpc, nC, BD=bdc, NP=NP)
    else:
        hend, sdl = ck, ck  # unused
    plan.launch_fwd(ss_fwd_kernel, _ss_fwd_tuned, grid, block_d,
                u, delta, A, B, C, Dt, zt, dbt, out, ck, last, hend, sdl,
                L, dim, N, cpg, n_tiles, tpc, nC, *strides, LOCAL=False, HAS_INIT=nC > 1, STORE_CK=need_ck,
                **flags)
    return out, last, (ck if need_ck else plan.buffer((0,), torch.float32, dev))


def _ss_bwd_fake(dout, dlast, u, delta, A, B, C, D, z, delta_bias, delta_softplus, checkpoints,
                 tile, chunk_tiles, block_d, bwd_sub):
    _checks.triton_selective_scan_bwd("hands3c::selective_scan_bwd_triton", dout, dlast, u, delta, A, B, C, D, z,
                                      delta_bias, checkpoints, tile, chunk_tiles, block_d, bwd_sub)
    return [plan.like(u), plan.like(delta), plan.like(A), plan.like(B), plan.like(C),
            plan.like(D) if D is not None else plan.empty_grad(u), plan.like(z) if z is not None else plan.empty_grad(u),
            plan.like(delta_bias) if delta_bias is not None else plan.empty_grad(u)]


@plan.operator("hands3c::selective_scan_bwd_triton", _ss_bwd_fake)
def selective_scan_bwd_triton(dout: Tensor, dlast: Optional[Tensor], u: Tensor, delta: Tensor, A: Tensor,
                              B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
                              delta_bias: Optional[Tensor], delta_softplus: bool, checkpoints: Tensor,
                              tile: int, chunk_tiles: int, block_d: int, bwd_sub: int) -> List[Tensor]:
    """-> [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]; absent inputs give empty grads.

    ``dout`` must be contiguous (batch, dim, L); ``checkpoints`` from the forward with the
    same ``tile``.
    """
    dout, dlast, D, delta_bias, checkpoints = _checks.triton_selective_scan_bwd(
        "hands3c::selective_scan_bwd_triton", dout, dlast, u, delta, A, B, C, D, z, delta_bias, checkpoints, tile,
        chunk_tiles, block_d, bwd_sub)
    batch, dim, L = u.shape
    N = A.shape[1]
    G = B.shape[1]
    cpg = dim // G
    per_ch = cpg == 1
    S, NP = tile, plan.np2(N)
    n_tiles = checkpoints.shape[2]
    dev = u.device
    A = A.contiguous()
    f32 = torch.float32
    BD = plan.bwd_block_d(block_d, dim if per_ch else cpg, S, NP)
    if per_ch:
        nsub = 1
        nblk = plan.cdiv(dim, BD)
        nblk_g = nblk
    else:
        # partials per outer block: dB + dC = 2*G*N values per step vs dim for u
        nsub, nblk_g = plan.plan_outer(plan.cdiv(cpg, BD), batch * G, max(1, dim // (G * N)), dev, bwd_sub)
        nblk = G * nblk_g
    tpc, nC = plan.plan_chunks(n_tiles, batch * nblk, dev, chunk_tiles)
    Dt = D if D is not None else A
    zt = z if z is not None else u
    dbt = delta_bias if delta_bias is not None else A
    strides = _ss_strides(u, delta, z, B, C)
    s_t, s_z, s_c = delta.stride(), (z if z is not None else u).stride(), C.stride()
    grid = (nblk, nC, batch)
    if nC > 1:
        lam = plan.buffer((batch, dim, nC, N), f32, dev)
        sds = plan.buffer((batch, dim, nC), f32, dev)
        lamc = plan.buffer((batch, dim, nC, N), f32, dev)
        # pass 1 has no cross-channel reduction: plain BD blocks, no sub-blocks
        grid1 = (plan.cdiv(dim, BD) if per_ch else G * plan.cdiv(cpg, BD), nC, batch)
        plan.launch_bwd(ss_bwd_chunk_kernel, _ss_bwd_chunk_tuned, grid1,
                    dout, delta, A, C, zt, dbt, lam, sds, L, dim, N, cpg, n_tiles, tpc, nC,
                    *s_t, *s_z, *s_c, HAS_Z=z is not None, HAS_DB=delta_bias is not None,
                    SOFTPLUS=bool(delta_softplus), PER_CH=per_ch, S=S, BD=BD, NP=NP)
        wrap_triton(ss_bwd_combine_kernel)[(plan.cdiv(dim, 16), batch)](
            A, lam, sds, dlast if dlast is not None else A, lamc, dim, N, nC,
            HAS_DLAST=dlast is not None, BD=16, NP=NP)
    else:
        lamc = checkpoints  # unused
    du = plan.buffer((batch, dim, L), u.dtype, dev)
    ddelta = plan.buffer((batch, dim, L), delta.dtype, dev)
    dz = plan.buffer((batch, dim, L), z.dtype, dev) if z is not None else plan.empty_grad(u)
    if per_ch:
        dB = plan.buffer((batch, dim, N, L), B.dtype, dev)
        dC = plan.buffer((batch, dim, N, L), C.dtype, dev)
    else:
        dB = plan.buffer((batch, G, nblk_g, N, L), f32, dev)
        dC = plan.buffer((batch, G, nblk_g, N, L), f32, dev)
    dAp = plan.buffer((batch, nC, dim, N), f32, dev)
    dDp = plan.buffer((batch, nC, dim), f32, dev)
    ddbp = plan.buffer((batch, nC, dim), f32, dev)
    plan.launch_bwd(ss_bwd_kernel, _ss_bwd_tuned, grid,
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
    dD = dDp.sum((0, 1)) if D is not None else plan.empty_grad(u)
    ddb = ddbp.sum((0, 1)) if delta_bias is not None else plan.empty_grad(u)
    return [du, ddelta, dA, dB, dC, dD, dz, ddb]


def selective_scan(u, delta, A, Bc, Cc, D, z, delta_bias, delta_softplus: bool):
    """Entry used by :func:`handS3C.ops.selective_scan_fn` (Bc/Cc canonical 4-D views)."""
    if Bc.shape[1] != Cc.shape[1]:
        # the kernels index B and C with one group count: repeat both to the finest grouping
        # (differentiable, so autograd sums the gradients back to the given groups)
        G = math.lcm(Bc.shape[1], Cc.shape[1])
        Bc, Cc = Bc.repeat_interleave(G // Bc.shape[1], dim=1), Cc.repeat_interleave(G // Cc.shape[1], dim=1)
    out, last, _ = torch.ops.hands3c.selective_scan_fwd_triton(
        u, delta, A, Bc, Cc, D, z, delta_bias, bool(delta_softplus),
        plan.tile_steps(u.shape[2]), plan.CONFIG["chunk_tiles"], plan.CONFIG["block_d"],
        plan.need_checkpoints(u, delta, A, Bc, Cc, D, z, delta_bias))
    return out, last
