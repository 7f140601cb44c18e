"""Parity checks of the CUDA operators against float64 references.

Shared by the "gpu" cases of tests/ops/test_<op>.py (the compiled kernels through the public
API and autograd) and the CPU emulation tests (tests/backends/test_cuda_emulated.py: the same
kernel source run on the host, called through the operators directly).  Every case builds its
inputs on the CPU from a fixed seed, so both runs see identical numbers.

References: ``handS3C.reference.selective_scan_ref64`` (and the cross-scan composition with it
as ``scan_fn``), float64, whose recurrence has a hand-written O(L) backward (autograd through
a per-step Python loop would cost O(L^2), SPEC §5); ``test_cuda_emulated.py`` checks that
backward by finite differences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from testenv import CUDA_MARKS
from handS3C import reference
from handS3C.modules import dt_bias_init
from handS3C.ops.selective_scan import _canonical_bc
from tolerances import TOL, assert_close, dA_tol, ddelta_tol, du_tol, weight_tol

F64 = torch.float64

# Marks of a GPU case: skipped with a reason without a GPU, or without the built CUDA extension.
GPU = CUDA_MARKS


def set_target(env, blocks):
    """Fix the CUDA launchers' thread target (HANDS3C_CUDA_TARGET_THREADS) for one case;
    ``env`` is the ``cuda_env`` fixture (conftest.py), ``None`` keeps the automatic target."""
    if blocks is not None:
        env.setenv("HANDS3C_CUDA_TARGET_THREADS", str(blocks))


def _same_strides(x, device, dtype=None):
    """A fresh copy of x on `device` with x's strides (the kernels see the caller's layout)."""
    return torch.empty_strided(x.shape, x.stride(), dtype=dtype or x.dtype, device=device).copy_(x.detach())


def _leaf(x, device, dtype=None):
    """A fresh leaf that requires grad (never the caller's tensor: cases are reused)."""
    return _same_strides(x, device, dtype).requires_grad_()


# The float64 reference with the O(L) hand-written backward is the project's one:
# handS3C.reference.selective_scan_ref64 (this name is kept for the tests that call it).
selective_scan_ref64_fast = reference.selective_scan_ref64


# ---------------------------------------------------------------------------------------------
# selective scan cases
# ---------------------------------------------------------------------------------------------

@dataclass
class SSCase:
    batch: int
    dim: int
    L: int
    N: int
    dtype: torch.dtype = torch.float32
    bc: str = "4d"           # "2d" (dim, N), "3d" (batch, N, L), "4d" (batch, G, N, L)
    groups_b: int = 1
    groups_c: int = 1
    bc_dtype: Optional[torch.dtype] = None  # None: float32
    has_D: bool = True
    has_z: bool = True
    has_db: bool = True
    softplus: bool = True
    dlast: bool = True
    target_threads: Optional[int] = None     # HANDS3C_CUDA_TARGET_THREADS (forces segmentation)
    seed: int = 0

    def id(self):
        t = str(self.dtype).replace("torch.", "")
        opts = "".join(c for c, on in (("D", self.has_D), ("z", self.has_z), ("b", self.has_db),
                                       ("s", self.softplus), ("h", self.dlast)) if on)
        return (f"b{self.batch}-d{self.dim}-L{self.L}-N{self.N}-{t}-{self.bc}g{self.groups_b}.{self.groups_c}-{opts}"
                + (f"-t{self.target_threads}" if self.target_threads else ""))


def ss_inputs(c: SSCase) -> Dict[str, Optional[torch.Tensor]]:
    g = torch.Generator().manual_seed(1000 + c.seed)
    rn = lambda *s: torch.randn(*s, generator=g)
    bcd = c.bc_dtype or torch.float32

    def bc_tensor(groups):
        if c.bc == "2d":
            return rn(c.dim, c.N).to(bcd)
        if c.bc == "3d":
            return rn(c.batch, c.N, c.L).to(bcd)
        return rn(c.batch, groups, c.N, c.L).to(bcd)

    if c.softplus:
        delta = 0.5 * rn(c.batch, c.dim, c.L) - 1.0
    else:
        delta = 0.05 + 0.5 * torch.rand(c.batch, c.dim, c.L, generator=g)
    return dict(
        u=rn(c.batch, c.dim, c.L).to(c.dtype),
        delta=delta.to(c.dtype),
        A=-(0.5 + torch.rand(c.dim, c.N, generator=g)),
        B=bc_tensor(c.groups_b),
        C=bc_tensor(c.groups_c),
        D=rn(c.dim) if c.has_D else None,
        z=rn(c.batch, c.dim, c.L).to(c.dtype) if c.has_z else None,
        delta_bias=0.1 * rn(c.dim) if c.has_db else None,
        dout=rn(c.batch, c.dim, c.L).to(c.dtype),
        dlast=rn(c.batch, c.dim, c.N) if c.dlast else None,
    )


SS_GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def ss_reference(c: SSCase, inp, device="cpu"):
    """float64 out, last state and gradients (on `device`, returned on the CPU)."""
    leaves = {k: (None if inp[k] is None else _leaf(inp[k], device, F64)) for k in SS_GRAD_NAMES}
    out, last = selective_scan_ref64_fast(*(leaves[k] for k in SS_GRAD_NAMES), delta_softplus=c.softplus,
                                          return_last_state=True)
    outs, grads_in = [out], [inp["dout"].to(device, F64)]
    if c.dlast:
        outs.append(last)
        grads_in.append(inp["dlast"].to(device, F64))
    torch.autograd.backward(outs, grads_in)
    grads = {k: leaves[k].grad.cpu() for k in SS_GRAD_NAMES if leaves[k] is not None}
    return out.detach().cpu(), last.detach().cpu(), grads


def ss_run_ops(ops, c: SSCase, inp, device="cpu"):
    """The operators called directly (no autograd), B/C canonicalised as the wrapper does."""
    t = {k: (None if v is None else v.to(device)) for k, v in inp.items()}
    batch, dim, L = t["u"].shape
    Bc = _canonical_bc("B", t["B"], batch, dim, c.N, L)
    Cc = _canonical_bc("C", t["C"], batch, dim, c.N, L)
    out, last, ckpt = ops.selective_scan_fwd(t["u"], t["delta"], t["A"], Bc, Cc, t["D"], t["z"], t["delta_bias"],
                                             c.softplus)
    du, ddelta, dA, dB, dC, dD, dz, ddb = ops.selective_scan_bwd(
        t["dout"], t["dlast"], t["u"], t["delta"], t["A"], Bc, Cc, t["D"], t["z"], t["delta_bias"], c.softplus, ckpt)

    def back(dM, M):  # gradient of the canonical view -> gradient of the original tensor
        if M.dim() == 2:
            return dM.sum((0, 3))
        if M.dim() == 3:
            return dM[:, 0]
        return dM

    grads = dict(u=du, delta=ddelta, A=dA, B=back(dB, t["B"]), C=back(dC, t["C"]))
    for name, g, present in (("D", dD, c.has_D), ("z", dz, c.has_z), ("delta_bias", ddb, c.has_db)):
        if present:
            grads[name] = g
        else:
            assert g.numel() == 0, f"gradient of absent {name} must be empty"
    return out.cpu(), last.cpu(), ckpt.cpu(), {k: v.cpu() for k, v in grads.items()}


def ss_run_api(c: SSCase, inp, device="cuda", backend="cuda"):
    """The public selective_scan_fn with autograd."""
    from handS3C.ops import selective_scan_fn

    leaves = {k: (None if inp[k] is None else _leaf(inp[k], device)) for k in SS_GRAD_NAMES}
    out, last = selective_scan_fn(*(leaves[k] for k in SS_GRAD_NAMES), delta_softplus=c.softplus,
                                  return_last_state=True, backend=backend)
    outs, grads_in = [out], [inp["dout"].to(device)]
    if c.dlast:
        outs.append(last)
        grads_in.append(inp["dlast"].to(device))
    torch.autograd.backward(outs, grads_in)
    grads = {k: leaves[k].grad.cpu() for k in SS_GRAD_NAMES if leaves[k] is not None}
    return out.detach().cpu(), last.detach().cpu(), grads


def ss_compare(c: SSCase, got, ref, tag=""):
    out, last, grads = got
    rout, rlast, rgrads = ref
    assert out.dtype == c.dtype, f"{tag} out dtype {out.dtype}"
    r, a = TOL[c.dtype]
    assert_close(out, rout, r, a, f"{tag} out")
    assert_close(last, rlast, r, a, f"{tag} last_state")
    half_bc = c.bc_dtype not in (None, torch.float32)
    tols = dict(u=du_tol(c.dtype), delta=ddelta_tol(c.dtype), A=dA_tol(c.dtype, c.has_z),
                B=TOL[c.dtype] if half_bc else weight_tol(c.dtype, c.has_z),
                C=TOL[c.dtype] if half_bc else weight_tol(c.dtype, c.has_z),
                D=weight_tol(c.dtype, c.has_z), z=du_tol(c.dtype), delta_bias=weight_tol(c.dtype, c.has_z))
    assert set(grads) == set(rgrads), f"{tag}: gradients {sorted(grads)} vs {sorted(rgrads)}"
    for k, g in grads.items():
        assert g.shape == rgrads[k].shape, f"{tag} d{k}: shape {tuple(g.shape)} vs {tuple(rgrads[k].shape)}"
        rt, at = tols[k]
        # Gradients summed over many positions are compared relative to their scale.
        scale = max(1.0, float(rgrads[k].abs().max()))
        assert_close(g, rgrads[k], rt, at * scale, f"{tag} d{k}")


# ---------------------------------------------------------------------------------------------
# cross scan cases
# ---------------------------------------------------------------------------------------------

@dataclass
class CSCase:
    batch: int
    D: int
    P: int
    Q: int
    N: int
    R: int
    dtype: torch.dtype = torch.float32
    layout: str = "contig"   # "contig", "channel" (the S3C channel branch's permuted view), "transposed"
    target_threads: Optional[int] = None
    seed: int = 0

    def id(self):
        t = str(self.dtype).replace("torch.", "")
        return (f"B{self.batch}-D{self.D}-{self.P}x{self.Q}-N{self.N}-R{self.R}-{t}-{self.layout}"
                + (f"-t{self.target_threads}" if self.target_threads else ""))


CS_GRAD_NAMES = ("u", "x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")


def cs_inputs(c: CSCase):
    g = torch.Generator().manual_seed(2000 + c.seed)
    rn = lambda *s: torch.randn(*s, generator=g)
    if c.layout == "channel":
        u = rn(c.batch, c.P, c.Q, c.D).permute(0, 3, 1, 2)       # (B, W, d_inner, H) view of (B, d_inner, H, W)
    elif c.layout == "transposed":
        u = rn(c.batch, c.D, c.Q, c.P).transpose(2, 3)           # not addressable as one plane stride
    else:
        u = rn(c.batch, c.D, c.P, c.Q)
    u = u.to(c.dtype)
    Cn = c.R + 2 * c.N
    # The published initialisation (SPEC §2), with a little noise so no two states coincide.
    dt_bias = dt_bias_init(4 * c.D, generator=g).reshape(4, c.D)
    return dict(
        u=u,
        x_proj_weight=rn(4, Cn, c.D) * c.D ** -0.5,
        dt_projs_weight=(torch.rand(4, c.D, c.R, generator=g) * 2 - 1) * max(c.R, 1) ** -0.5,
        dt_projs_bias=dt_bias,
        A_logs=torch.log(torch.arange(1, c.N + 1, dtype=torch.float32)).repeat(4 * c.D, 1)
        + 0.05 * rn(4 * c.D, c.N),
        Ds=1.0 + 0.1 * rn(4 * c.D),
        dout=rn(c.batch, c.D, c.P, c.Q),
    )


def cs_reference(c: CSCase, inp, device="cpu"):
    leaves = {k: _leaf(inp[k], device, F64) for k in CS_GRAD_NAMES}
    out = reference.cross_scan_selective_scan_ref(*(leaves[k] for k in CS_GRAD_NAMES),
                                                  scan_fn=selective_scan_ref64_fast)
    out.backward(inp["dout"].to(device, F64))
    return out.detach().cpu(), {k: leaves[k].grad.cpu() for k in CS_GRAD_NAMES}


def cs_run_ops(ops, c: CSCase, inp, device="cpu"):
    t = {k: _same_strides(v, device) for k, v in inp.items()}  # keeps u's strided layout
    args = [t[k] for k in CS_GRAD_NAMES]
    out, dbl, ckpt = ops.cross_scan_fwd(*args)
    grads = ops.cross_scan_bwd(t["dout"], *args, dbl, ckpt)
    return out.cpu(), dbl.cpu(), ckpt.cpu(), {k: g.cpu() for k, g in zip(CS_GRAD_NAMES, grads)}




def cs_run_api(c: CSCase, inp, device="cuda", backend="cuda"):
    from handS3C.ops import cross_scan_selective_scan

    leaves = {k: _leaf(inp[k], device) for k in CS_GRAD_NAMES}
    out = cross_scan_selective_scan(*(leaves[k] for k in CS_GRAD_NAMES), backend=backend)
    out.backward(inp["dout"].to(device))
    return out.detach().cpu(), {k: leaves[k].grad.cpu() for k in CS_GRAD_NAMES}


def cs_compare(c: CSCase, got, ref, tag=""):
    out, grads = got
    rout, rgrads = ref
    assert out.dtype == torch.float32, f"{tag} out dtype {out.dtype}"
    r, a = TOL[torch.float32]
    assert_close(out, rout, r, a, f"{tag} out")
    tols = dict(u=du_tol(torch.float32), x_proj_weight=weight_tol(torch.float32),
                dt_projs_weight=weight_tol(torch.float32), dt_projs_bias=weight_tol(torch.float32),
                A_logs=dA_tol(torch.float32), Ds=weight_tol(torch.float32))
    for k in CS_GRAD_NAMES:
        g = grads[k]
        rg = rgrads[k]
        assert g.shape == rg.shape, f"{tag} d{k}: shape {tuple(g.shape)} vs {tuple(rg.shape)}"
        rt, at = tols[k]
        scale = max(1.0, float(rg.abs().max()))
        # u's gradient keeps u's dtype through autograd; compare in float64 regardless.
        assert_close(g, rg, rt, at * scale, f"{tag} d{k}")


# ---------------------------------------------------------------------------------------------
# merge cases
# ---------------------------------------------------------------------------------------------

@dataclass
class MergeCase:
    shape: tuple
    zdtype: torch.dtype = torch.float32
    permuted: bool = False
    seed: int = 0

    def id(self):
        return "x".join(map(str, self.shape)) + f"-{str(self.zdtype).replace('torch.', '')}" + (
            "-perm" if self.permuted else "")


MERGE_GRAD_NAMES = ("y_spatial", "y_channel", "z", "weight", "bias")


def merge_inputs(c: MergeCase):
    g = torch.Generator().manual_seed(3000 + c.seed)
    rn = lambda *s: torch.randn(*s, generator=g)
    C = c.shape[-1]
    if c.permuted and len(c.shape) >= 3:
        # the S3C block's layout: branch outputs permuted into (..., C) views
        ys = rn(*c.shape[:-2], C, c.shape[-2]).transpose(-1, -2)
        yc = rn(c.shape[-2], *c.shape[:-2], C).movedim(0, -2)
    else:
        ys, yc = rn(*c.shape), rn(*c.shape)
    return dict(y_spatial=ys, y_channel=yc, z=rn(*c.shape).to(c.zdtype), weight=1 + 0.1 * rn(C),
                bias=0.1 * rn(C), dout=rn(*c.shape))


def merge_reference(c: MergeCase, inp, eps=1e-5):
    leaves = {k: _leaf(inp[k], "cpu", F64) for k in MERGE_GRAD_NAMES}
    out = reference.s3c_merge_ref(*(leaves[k] for k in MERGE_GRAD_NAMES), eps)
    out.backward(inp["dout"].to(F64))
    return out.detach(), {k: leaves[k].grad for k in MERGE_GRAD_NAMES}


def merge_run_ops(ops, c: MergeCase, inp, device="cpu", eps=1e-5):
    t = {k: _same_strides(v, device) for k, v in inp.items()}
    args = [t[k] for k in MERGE_GRAD_NAMES]
    out, mean, rstd = ops.s3c_merge_fwd(*args, eps)
    dy, dz, dw, db = ops.s3c_merge_bwd(t["dout"], *args, mean, rstd)
    return out.cpu(), dict(y_spatial=dy.cpu(), y_channel=dy.cpu(), z=dz.cpu(), weight=dw.cpu(), bias=db.cpu())


def merge_compare(c: MergeCase, got, ref, tag=""):
    out, grads = got
    rout, rgrads = ref
    r, a = TOL[torch.float32]
    assert_close(out, rout, r, a, f"{tag} out")
    tols = dict(y_spatial=du_tol(torch.float32), y_channel=du_tol(torch.float32), z=TOL[c.zdtype],
                weight=weight_tol(torch.float32), bias=weight_tol(torch.float32))
    for k in MERGE_GRAD_NAMES:
        rt, at = tols[k]
        scale = max(1.0, float(rgrads[k].abs().max()))
        assert grads[k].dtype == (c.zdtype if k == "z" else torch.float32), f"{tag} d{k} dtype {grads[k].dtype}"
        assert_close(grads[k], rgrads[k], rt, at * scale, f"{tag} d{k}")
