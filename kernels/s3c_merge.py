"""Triton kernels of ``s3c_merge``: out = LayerNorm(y_spatial + y_channel) * SiLU(z).

Rows are the flattened leading dimensions, normalised over the last one (C).  The
inputs arrive as permuted views (the S3C block's branch outputs), so a row index is
decomposed into up to three leading coordinates with their own strides instead of
copying; the caller collapses mergeable dimensions first.

Forward: one program per block of BM rows, the whole row (BC >= C) in registers: sum,
mean, variance, normalise, affine, gate, store; mean and rstd are kept for the backward.
Backward: a fixed grid of programs, each walking row blocks pid, pid + grid, ...; the
weight/bias gradients are accumulated in registers per program and written as
(grid, C) partials that the caller sums in a fixed order (deterministic, no atomics).
"""
import triton
import triton.language as tl

from ._scan_common import sigmoid


@triton.jit
def _row_offsets(rows, M1, M2, s0, s1, s2):
    return (rows // (M1 * M2)) * s0 + ((rows // M2) % M1) * s1 + (rows % M2) * s2


@triton.jit
def merge_fwd_kernel(
    ys_ptr, yc_ptr, z_ptr, w_ptr, b_ptr, out_ptr, mean_ptr, rstd_ptr,
    M, C, M1, M2, eps,
    ss0, ss1, ss2, ssc, sc0, sc1, sc2, scc, sz0, sz1, sz2, szc,
    BM: tl.constexpr, BC: tl.constexpr,
):
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    cols = tl.arange(0, BC)
    rmask = rows < M
    cmask = cols < C
    m2 = rmask[:, None] & cmask[None, :]
    y = tl.load(ys_ptr + _row_offsets(rows, M1, M2, ss0, ss1, ss2)[:, None] + cols[None, :] * ssc, mask=m2, other=0.0)
    y += tl.load(yc_ptr + _row_offsets(rows, M1, M2, sc0, sc1, sc2)[:, None] + cols[None, :] * scc, mask=m2, other=0.0)
    z = tl.load(z_ptr + _row_offsets(rows, M1, M2, sz0, sz1, sz2)[:, None] + cols[None, :] * szc,
                mask=m2, other=0.0).to(tl.float32)
    mean = tl.sum(y, axis=1) / C
    yc = tl.where(m2, y - mean[:, None], 0.0)
    var = tl.sum(yc * yc, axis=1) / C  # biased, like torch.nn.LayerNorm
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0)
    b = tl.load(b_ptr + cols, mask=cmask, other=0.0)
    out = (yc * rstd[:, None] * w[None, :] + b[None, :]) * (z * sigmoid(z))
    tl.store(out_ptr + rows[:, None] * C + cols[None, :], out, mask=m2)
    tl.store(mean_ptr + rows, mean, mask=rmask)
    tl.store(rstd_ptr + rows, rstd, mask=rmask)


@triton.jit
def merge_bwd_kernel(
    dout_ptr, ys_ptr, yc_ptr, z_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, dy_ptr, dz_ptr, dwp_ptr, dbp_ptr,
    M, C, M1, M2,
    ss0, ss1, ss2, ssc, sc0, sc1, sc2, scc, sz0, sz1, sz2, szc,
    BM: tl.constexpr, BC: tl.constexpr,
):
    """dy (both inputs' gradient) and dz, contiguous (M, C); dw/db partials (grid, C)."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, BC)
    cmask = cols < C
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0)
    b = tl.load(b_ptr + cols, mask=cmask, other=0.0)
    accw = tl.zeros([BC], dtype=tl.float32)
    accb = tl.zeros([BC], dtype=tl.float32)
    for blk in range(pid, tl.cdiv(M, BM), nprog):
        rows = blk * BM + tl.arange(0, BM)
        rmask = rows < M
        m2 = rmask[:, None] & cmask[None, :]
        y = tl.load(ys_ptr + _row_offsets(rows, M1, M2, ss0, ss1, ss2)[:, None] + cols[None, :] * ssc,
                    mask=m2, other=0.0)
        y += tl.load(yc_ptr + _row_offsets(rows, M1, M2, sc0, sc1, sc2)[:, None] + cols[None, :] * scc,
                     mask=m2, other=0.0)
        zo = _row_offsets(rows, M1, M2, sz0, sz1, sz2)[:, None] + cols[None, :] * szc
        z = tl.load(z_ptr + zo, mask=m2, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + rows, mask=rmask, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)
        go = tl.load(dout_ptr + rows[:, None] * C + cols[None, :], mask=m2, other=0.0)
        yn = tl.where(m2, (y - mean[:, None]) * rstd[:, None], 0.0)
        sz = sigmoid(z)
        dz = go * (yn * w[None, :] + b[None, :]) * sz * (1.0 + z * (1.0 - sz))
        gn = go * z * sz  # gradient reaching the LayerNorm output
        accw += tl.sum(gn * yn, axis=0)
        accb += tl.sum(gn, axis=0)
        gy = gn * w[None, :]
        c1 = tl.sum(gy, axis=1) / C
        c2 = tl.sum(gy * yn, axis=1) / C
        dy = (gy - c1[:, None] - yn * c2[:, None]) * rstd[:, None]
        tl.store(dy_ptr + rows[:, None] * C + cols[None, :], dy, mask=m2)
        tl.store(dz_ptr + rows[:, None] * C + cols[None, :], dz.to(dz_ptr.dtype.element_ty), mask=m2)
    tl.store(dwp_ptr + pid * C + cols, accw, mask=cmask)
    tl.store(dbp_ptr + pid * C + cols, accb, mask=cmask)
