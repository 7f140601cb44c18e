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

Below the kernels: the row layout, the launch and the operators
``hands3c::s3c_merge_{fwd,bwd}_triton``.
"""
import math

from typing import List, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from . import _plan as plan
from ..ops import _checks

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

# The launch plan and the ``hands3c::s3c_merge_*_triton`` operators.
# Their autograd is registered in handS3C/ops/merge.py, shared with the C++ operators.

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
_merge_fwd_tuned = plan.autotuned(merge_fwd_kernel, _MERGE_FWD_CONFIGS, ["C"])
_merge_bwd_tuned = plan.autotuned(merge_bwd_kernel, _MERGE_BWD_CONFIGS, ["C"])


def _merge_fwd_fake(y_spatial, y_channel, z, weight, bias, eps):
    _checks.merge_fwd("hands3c::s3c_merge_fwd_triton", y_spatial, y_channel, z, weight, bias, eps)
    M = y_spatial.numel() // y_spatial.shape[-1]
    return (plan.like(y_spatial, torch.float32), y_spatial.new_empty((M,), dtype=torch.float32),
            y_spatial.new_empty((M,), dtype=torch.float32))


@plan.operator("hands3c::s3c_merge_fwd_triton", _merge_fwd_fake)
def s3c_merge_fwd_triton(y_spatial: Tensor, y_channel: Tensor, z: Tensor, weight: Tensor, bias: Tensor,
                         eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (out (..., C) f32 contiguous, mean (M,) f32, rstd (M,) f32)."""
    _checks.merge_fwd("hands3c::s3c_merge_fwd_triton", y_spatial, y_channel, z, weight, bias, eps)
    (ys, yc, zz), M, C, M1, M2, st = _row_layout([y_spatial, y_channel, z])
    dev = y_spatial.device
    out = plan.buffer(tuple(y_spatial.shape), torch.float32, dev)
    mean = plan.buffer((M,), torch.float32, dev)
    rstd = plan.buffer((M,), torch.float32, dev)
    args = (ys, yc, zz, weight.contiguous(), bias.contiguous(), out, mean, rstd, M, C, M1, M2, float(eps),
            *st[0], *st[1], *st[2])
    BC = plan.np2(C)
    if _merge_fwd_tuned is not None:
        wrap_triton(_merge_fwd_tuned)[lambda meta: (plan.cdiv(M, meta["BM"]),)](*args, BC=BC)
    else:
        bm = _MERGE_FWD_CONFIGS[0].kwargs["BM"]
        wrap_triton(merge_fwd_kernel)[(plan.cdiv(M, bm),)](*args, BM=bm, BC=BC)
    return out, mean, rstd


def _merge_bwd_fake(dout, y_spatial, y_channel, z, weight, bias, mean, rstd):
    _checks.triton_merge_bwd("hands3c::s3c_merge_bwd_triton", dout, y_spatial, y_channel, z, weight, bias, mean, rstd)
    return [plan.like(y_spatial, torch.float32), plan.like(z), plan.like(weight), plan.like(bias)]


@plan.operator("hands3c::s3c_merge_bwd_triton", _merge_bwd_fake)
def s3c_merge_bwd_triton(dout: Tensor, y_spatial: Tensor, y_channel: Tensor, z: Tensor, weight: Tensor,
                         bias: Tensor, mean: Tensor, rstd: Tensor) -> List[Tensor]:
    """-> [dy (..., C) f32 (gradient of both y inputs), dz (z's dtype), dweight, dbias]."""
    dout, mean, rstd = _checks.triton_merge_bwd("hands3c::s3c_merge_bwd_triton", dout, y_spatial, y_channel, z, weight,
                                                bias, mean, rstd)
    (ys, yc, zz), M, C, M1, M2, st = _row_layout([y_spatial, y_channel, z])
    dev = y_spatial.device
    dout = dout.contiguous()
    dy = plan.buffer(tuple(y_spatial.shape), torch.float32, dev)
    dz = plan.buffer(tuple(z.shape), z.dtype, dev)
    # fixed grid (not tied to the autotuned BM) so the partial buffers have one layout
    nprog = max(1, min(plan.cdiv(M, 4), 4 * plan.sm_count(dev) if dev.type == "cuda" else 4))
    dwp = plan.buffer((nprog, C), torch.float32, dev)
    dbp = plan.buffer((nprog, C), torch.float32, dev)
    args = (dout, ys, yc, zz, weight.contiguous(), bias.contiguous(), mean, rstd, dy, dz, dwp, dbp,
            M, C, M1, M2, *st[0], *st[1], *st[2])
    BC = plan.np2(C)
    if _merge_bwd_tuned is not None:
        wrap_triton(_merge_bwd_tuned)[(nprog,)](*args, BC=BC)
    else:
        wrap_triton(merge_bwd_kernel)[(nprog,)](*args, BM=_MERGE_BWD_CONFIGS[0].kwargs["BM"], BC=BC)
    return [dy, dz, dwp.sum(0), dbp.sum(0)]


def s3c_merge(y_spatial, y_channel, z, norm_weight, norm_bias, eps: float):
    """Entry used by :func:`handS3C.ops.s3c_merge`."""
    return torch.ops.hands3c.s3c_merge_fwd_triton(y_spatial, y_channel, z, norm_weight, norm_bias, float(eps))[0]
