"""Fuzzed raw operators: every ``torch.ops.hands3c.*`` C++ operator called directly with random
shapes, strides, dtypes and devices, consistent and not.

Each example is either *valid* (every size consistent, every dtype one the contract allows,
any strides: transposed storage, step-2 slices, stride-0 expansions) or carries one mutation
that the contract forbids (a dtype no operator takes, a tied dimension grown by one, an extra
dimension, a group count that does not divide the channels, one tensor on the meta device).
A valid example must give the float64 reference's result within the SPEC §4 tolerances
(tests/tolerances.py); a mutated one must raise a ValueError / TypeError whose message starts
with ``hands3c::<operator>:``.  Examples with every tensor on meta check that the fake kernel
gives the real outputs' shapes and dtypes.

Examples per test (each test calls a forward and its backward operator):
``HANDS3C_FUZZ_EXAMPLES`` (default 200, derandomised so CI is reproducible; the sanitizer job
in .ci/run uses 100).  The long mode draws fresh random examples:
``HANDS3C_FUZZ_EXAMPLES=5000 HANDS3C_FUZZ_RANDOM=1 python -m pytest tests/ops/test_fuzz_raw_ops.py``
(about 2-3 minutes per thousand examples and operator on two cores).
"""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import handS3C  # noqa: F401  (registers the operators)
from handS3C import reference
from tolerances import TOL, assert_close, dA_tol, ddelta_tol, du_tol, weight_tol

import cuda_parity as cp

OPS = torch.ops.hands3c
F64 = torch.float64
FLOATS = (torch.float32, torch.float16, torch.bfloat16)
BAD_DTYPES = (torch.float64, torch.int32, torch.bool)

EXAMPLES = int(os.environ.get("HANDS3C_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("HANDS3C_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much], database=None)

# Layouts that keep a tensor's values (any argument) and ones that replace them by values
# repeated along a dimension (inputs only: checkpoints, projections and statistics must stay
# the forward's).
KEEP = ("contiguous", "transposed", "sliced")
ANY = KEEP + ("expanded-first", "expanded-last")


def relayout(t: torch.Tensor, how: str) -> torch.Tensor:
    if how == "transposed" and t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if how == "sliced":
        big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        big[..., 1::2] = t
        return big[..., 1::2]
    if how == "expanded-first" and t.dim() >= 1:
        return t[:1].expand(t.shape)
    if how == "expanded-last" and t.dim() >= 1:
        return t[..., :1].expand(t.shape)
    return t


@st.composite
def mutation(draw, names, ndims):
    """None (a valid call) in about half the examples, else one forbidden change."""
    if draw(st.booleans()):
        return None
    kind = draw(st.sampled_from(["dtype", "grow", "extra-dim", "meta"]))
    arg = draw(st.sampled_from(names))
    return kind, arg, draw(st.integers(0, 7)), draw(st.sampled_from(BAD_DTYPES))


def apply_mutation(args, mut, tied):
    """Apply mutation ``mut`` to a copy of ``args``; ``tied[name]`` lists the dimensions of an
    argument that other arguments fix (growing one of them is always an error).  Returns the
    mutated args, or None when the drawn mutation does not apply (no tied dimension)."""
    kind, arg, k, dtype = mut
    a = dict(args)
    t = a[arg]
    if kind == "dtype":
        a[arg] = t.to(dtype)
    elif kind == "extra-dim":
        a[arg] = t.unsqueeze(k % (t.dim() + 1))
    elif kind == "meta":
        a[arg] = t.to("meta")
    else:
        dims = tied.get(arg, tuple(range(t.dim())))
        if not dims:
            return None
        d = dims[k % len(dims)]
        shape = list(t.shape)
        shape[d] += 1
        a[arg] = torch.zeros(shape, dtype=t.dtype)
    return a


def run(name, args, mut, tied):
    """Call the operator: the mutated call must raise a named error (returns None), the valid
    one returns the outputs."""
    op = getattr(OPS, name)
    if mut is not None:
        bad = apply_mutation(args, mut, tied)
        if bad is not None:
            with pytest.raises((ValueError, TypeError)) as info:
                op(*bad.values())
            assert str(info.value).startswith(f"hands3c::{name}:"), str(info.value)
            if mut[0] == "meta":
                assert "one device" in str(info.value) and f"{mut[1]} is on meta" in str(info.value)
            return None
    return op(*args.values())


def check_fake(name, args, real):
    meta = getattr(OPS, name)(*(v.to("meta") if isinstance(v, torch.Tensor) else v for v in args.values()))
    for r, m in zip(real, meta):
        assert m.device.type == "meta" and m.shape == r.shape and m.dtype == r.dtype, (name, m, r)


def close(got, want, tol, name, scale=False):
    rt, at = tol
    s = max(1.0, float(want.abs().max())) if scale and want.numel() else 1.0
    assert_close(got, want, rt, at * s, name)


def tol_max(*tols):
    return max(t[0] for t in tols), max(t[1] for t in tols)


def leaf(t):
    return None if t is None else t.detach().to(F64).requires_grad_()


# =============================================================================================
# cross scan
# =============================================================================================

CS_NAMES = ("u", "x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")


@st.composite
def cross_scan_case(draw):
    B, D, P, Q = draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    N, R = draw(st.integers(1, 5)), draw(st.integers(0, 3))
    seed = draw(st.integers(0, 2 ** 20))
    u_dtype, dout_dtype = draw(st.sampled_from(FLOATS)), draw(st.sampled_from(FLOATS))
    layouts = {k: draw(st.sampled_from(ANY)) for k in CS_NAMES}
    bwd_layouts = {k: draw(st.sampled_from(KEEP)) for k in CS_NAMES + ("dout", "dbl", "checkpoints")}
    inp = cp.cs_inputs(cp.CSCase(B, D, P, Q, N, R, seed=seed))
    if draw(st.booleans()):  # the S3C channel branch's permuted u
        inp["u"] = inp["u"].permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    fwd = {k: relayout(inp[k], layouts[k]) for k in CS_NAMES}
    fwd["u"] = fwd["u"].to(u_dtype)
    # y's memory order (None: contiguous), and then whether dout comes in y's layout (as behind
    # the S3C block's merge) instead of one of the KEEP layouts
    order = draw(st.one_of(st.none(), st.permutations([0, 1, 2, 3])))
    fwd["out_order"] = order
    if order is not None and draw(st.booleans()):
        bwd_layouts["dout"] = "like-y"
    return fwd, inp["dout"].to(dout_dtype), bwd_layouts, draw(st.booleans())


BAD_OUT_ORDERS = ([0, 1, 2], [0, 1, 2, 3, 1], [0, 0, 1, 2], [0, 1, 2, 4], [-1, 1, 2, 3])


def cs_tied(args):
    """Every dimension is tied except the forward's batch and plane sizes of u."""
    free = {"u": (1,)} if "dout" not in args else {}
    return {k: free.get(k, tuple(range(v.dim()))) for k, v in args.items() if isinstance(v, torch.Tensor)}


def cs_reference(fwd, dout):
    leaves = {k: leaf(fwd[k]) for k in CS_NAMES}
    out = reference.cross_scan_selective_scan_ref(*leaves.values(), scan_fn=cp.selective_scan_ref64_fast)
    Bn, D, P, Q = fwd["u"].shape
    dbl = torch.einsum("bdl,kcd->blkc", leaves["u"].reshape(Bn, D, P * Q), leaves["x_proj_weight"])
    out.backward(dout.to(F64))
    return out.detach(), dbl.detach(), {k: leaves[k].grad for k in CS_NAMES}


@FUZZ
@given(cross_scan_case(), mutation(CS_NAMES, None), mutation(CS_NAMES + ("dout", "dbl", "checkpoints"), None),
       st.one_of(st.none(), st.none(), st.none(), st.sampled_from(BAD_OUT_ORDERS)))
def test_fuzz_cross_scan(case, mut_fwd, mut_bwd, bad_order):
    fwd, dout, bwd_layouts, fake = case
    if bad_order is not None:  # the one mutation of this example: out_order no permutation
        with pytest.raises(ValueError) as info:
            OPS.cross_scan_fwd(*dict(fwd, out_order=bad_order).values())
        assert str(info.value).startswith("hands3c::cross_scan_fwd: out_order must be a permutation"), \
            str(info.value)
        return
    res = run("cross_scan_fwd", fwd, mut_fwd, cs_tied(fwd))
    if res is None:
        return
    out, dbl, ckpt = res
    order = fwd["out_order"]
    assert out.permute(order or (0, 1, 2, 3)).is_contiguous(), (order, out.stride())
    ref_out, ref_dbl, ref_grads = cs_reference(fwd, dout)
    close(out, ref_out, TOL[torch.float32], "cross_scan_fwd out")
    close(dbl, ref_dbl, TOL[torch.float32], "cross_scan_fwd dbl", scale=True)
    L = fwd["u"].shape[2] * fwd["u"].shape[3]
    assert ckpt.shape == (fwd["u"].shape[0], 4, fwd["u"].shape[1], math.ceil(L / 64), fwd["A_logs"].shape[1])
    bwd = dict(dout=dout, **{k: fwd[k] for k in CS_NAMES}, dbl=dbl, checkpoints=ckpt)
    if bwd_layouts["dout"] == "like-y":
        bwd_layouts["dout"] = "contiguous"
        bwd["dout"] = torch.empty_like(out, dtype=dout.dtype).copy_(dout)
    bwd = {k: relayout(v, bwd_layouts[k]) for k, v in bwd.items()}
    if fake:
        check_fake("cross_scan_fwd", fwd, res)
        meta_out = OPS.cross_scan_fwd(*(v.to("meta") if isinstance(v, torch.Tensor) else v
                                        for v in fwd.values()))[0]
        assert meta_out.stride() == out.stride(), (order, meta_out.stride(), out.stride())
    grads = run("cross_scan_bwd", bwd, mut_bwd, cs_tied(bwd))
    if grads is None:
        return
    if fake:
        check_fake("cross_scan_bwd", bwd, grads)
    tols = dict(u=du_tol(torch.float32), x_proj_weight=weight_tol(torch.float32),
                dt_projs_weight=weight_tol(torch.float32), dt_projs_bias=weight_tol(torch.float32),
                A_logs=dA_tol(torch.float32), Ds=weight_tol(torch.float32))
    for k, g in zip(CS_NAMES, grads):
        assert g.dtype == torch.float32, (k, g.dtype)
        close(g, ref_grads[k], tols[k], f"cross_scan_bwd d{k}", scale=True)


# =============================================================================================
# selective scan
# =============================================================================================

SS_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@st.composite
def selective_scan_case(draw):
    batch, dim, L, N = draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 80)), draw(st.integers(1, 8))
    divisors = [g for g in range(1, dim + 1) if dim % g == 0]
    c = cp.SSCase(batch, dim, L, N, dtype=draw(st.sampled_from(FLOATS)), bc="4d",
                  groups_b=draw(st.sampled_from(divisors)), groups_c=draw(st.sampled_from(divisors)),
                  bc_dtype=draw(st.sampled_from(FLOATS)), has_D=draw(st.booleans()), has_z=draw(st.booleans()),
                  has_db=draw(st.booleans()), softplus=draw(st.booleans()), dlast=draw(st.booleans()),
                  seed=draw(st.integers(0, 2 ** 20)))
    inp = cp.ss_inputs(c)
    if draw(st.booleans()):  # C in another half dtype than B
        inp["C"] = inp["C"].float().to(draw(st.sampled_from(FLOATS)))
    layouts = {k: draw(st.sampled_from(ANY)) for k in SS_NAMES}
    fwd = {k: (None if inp[k] is None else relayout(inp[k], layouts[k])) for k in SS_NAMES}
    fwd["delta_softplus"] = c.softplus
    bwd_layouts = {k: draw(st.sampled_from(KEEP)) for k in SS_NAMES + ("dout", "dlast_state", "checkpoints")}
    return c, fwd, inp["dout"], inp["dlast"], bwd_layouts, draw(st.booleans())


def ss_tied(args):
    out = {}
    for k, v in args.items():
        if not isinstance(v, torch.Tensor):
            continue
        # the group dimension of B / C may grow to another divisor: grow only the others
        out[k] = (0, 2, 3) if k in ("B", "C") else tuple(range(v.dim()))
    return out


def present(args):
    return [k for k, v in args.items() if isinstance(v, torch.Tensor)]


@FUZZ
@given(selective_scan_case(), st.data())
def test_fuzz_selective_scan(case, data):
    c, fwd, dout, dlast, bwd_layouts, fake = case
    mut_fwd = data.draw(mutation(present(fwd), None))
    res = run("selective_scan_fwd", fwd, mut_fwd, ss_tied(fwd))
    if res is None:
        return
    out, last, ckpt = res
    leaves = {k: leaf(fwd[k]) for k in SS_NAMES}
    ref_out, ref_last = cp.selective_scan_ref64_fast(*leaves.values(), delta_softplus=c.softplus,
                                                     return_last_state=True)
    assert out.dtype == fwd["u"].dtype and last.dtype == torch.float32 and ckpt.dtype == torch.float32
    close(out, ref_out, TOL[c.dtype], "selective_scan_fwd out")
    close(last, ref_last, TOL[c.dtype], "selective_scan_fwd last_state")
    if fake:
        check_fake("selective_scan_fwd", fwd, res)
    bwd = dict(dout=dout, dlast_state=dlast, **{k: fwd[k] for k in SS_NAMES}, delta_softplus=c.softplus,
               checkpoints=ckpt)
    bwd = {k: (relayout(v, bwd_layouts[k]) if isinstance(v, torch.Tensor) else v) for k, v in bwd.items()}
    mut_bwd = data.draw(mutation(present(bwd), None))
    grads = run("selective_scan_bwd", bwd, mut_bwd, ss_tied(bwd))
    if grads is None:
        return
    if fake:
        check_fake("selective_scan_bwd", bwd, grads)
    outs, gin = [ref_out], [dout.to(F64)]
    if dlast is not None:
        outs.append(ref_last)
        gin.append(dlast.to(F64))
    torch.autograd.backward(outs, gin)
    dt = c.dtype
    wt = weight_tol(dt, c.has_z)
    tols = dict(u=du_tol(dt), delta=ddelta_tol(dt), A=dA_tol(dt, c.has_z),
                B=tol_max(wt, TOL[fwd["B"].dtype]), C=tol_max(wt, TOL[fwd["C"].dtype]), D=wt, z=du_tol(dt),
                delta_bias=wt)
    for k, g in zip(SS_NAMES, grads):
        if fwd[k] is None:
            assert g.numel() == 0, f"gradient of absent {k}"
            continue
        assert g.dtype == fwd[k].dtype, (k, g.dtype)
        close(g, leaves[k].grad, tols[k], f"selective_scan_bwd d{k}", scale=True)


# =============================================================================================
# merge
# =============================================================================================

MERGE_NAMES = ("y_spatial", "y_channel", "z", "weight", "bias")


@st.composite
def merge_case(draw):
    lead = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
    C = draw(st.integers(1, 40))
    shape = (*lead, C)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 20)))
    rn = lambda *s: torch.randn(*s, generator=g)
    ys, yc = rn(*shape), rn(*shape)
    if draw(st.booleans()):
        # near-constant rows: a variance comparable to eps, where eps is half the answer
        ys = 0.3 + 1e-3 * ys
        yc = -0.1 + 1e-3 * yc
    inp = dict(y_spatial=ys, y_channel=yc, z=rn(*shape).to(draw(st.sampled_from(FLOATS))),
               weight=1 + 0.1 * rn(C), bias=0.1 * rn(C))
    layouts = {k: draw(st.sampled_from(ANY)) for k in MERGE_NAMES}
    fwd = {k: relayout(v, layouts[k]) for k, v in inp.items()}
    fwd["eps"] = draw(st.sampled_from([1e-5, 1e-6, 1e-3]))
    bwd_layouts = {k: draw(st.sampled_from(KEEP)) for k in MERGE_NAMES + ("dout", "mean", "rstd")}
    return fwd, rn(*shape).to(draw(st.sampled_from(FLOATS))), bwd_layouts, draw(st.booleans())


def merge_tied(args):
    return {k: tuple(range(v.dim())) for k, v in args.items() if isinstance(v, torch.Tensor)}


@FUZZ
@given(merge_case(), mutation(MERGE_NAMES, None), mutation(("dout",) + MERGE_NAMES + ("mean", "rstd"), None))
def test_fuzz_merge(case, mut_fwd, mut_bwd):
    fwd, dout, bwd_layouts, fake = case
    res = run("s3c_merge_fwd", fwd, mut_fwd, merge_tied(fwd))
    if res is None:
        return
    out, mean, rstd = res
    leaves = {k: leaf(fwd[k]) for k in MERGE_NAMES}
    x = leaves["y_spatial"] + leaves["y_channel"]
    ref = F.layer_norm(x, (x.shape[-1],), leaves["weight"], leaves["bias"], fwd["eps"]) * F.silu(leaves["z"])
    xd = x.detach().reshape(-1, x.shape[-1])
    close(out, ref, TOL[torch.float32], "s3c_merge_fwd out")
    close(mean, xd.mean(-1), (1e-5, 1e-6), "s3c_merge_fwd mean")
    var = ((xd - xd.mean(-1, keepdim=True)) ** 2).mean(-1)
    close(rstd, (var + fwd["eps"]).rsqrt(), (1e-4, 1e-6), "s3c_merge_fwd rstd")
    if fake:
        check_fake("s3c_merge_fwd", fwd, res)
    bwd = dict(dout=dout, **{k: fwd[k] for k in MERGE_NAMES}, mean=mean, rstd=rstd)
    bwd = {k: relayout(v, bwd_layouts[k]) for k, v in bwd.items()}
    grads = run("s3c_merge_bwd", bwd, mut_bwd, merge_tied(bwd))
    if grads is None:
        return
    if fake:
        check_fake("s3c_merge_bwd", bwd, grads)
    ref.backward(dout.to(F64))
    dy, dz, dw, db = grads
    assert dy.dtype == torch.float32 and dz.dtype == fwd["z"].dtype
    # rows of variance ~eps amplify float32 rounding of x by 1/sqrt(eps): compare relative to scale
    close(dy, leaves["y_spatial"].grad, du_tol(torch.float32), "s3c_merge_bwd dy", scale=True)
    close(dz, leaves["z"].grad, tol_max(du_tol(torch.float32), TOL[fwd["z"].dtype]), "s3c_merge_bwd dz", scale=True)
    close(dw, leaves["weight"].grad, weight_tol(torch.float32), "s3c_merge_bwd dweight", scale=True)
    close(db, leaves["bias"].grad, weight_tol(torch.float32), "s3c_merge_bwd dbias", scale=True)


# =============================================================================================
# the Triton operators: every forbidden input is refused before any launch
# =============================================================================================
# Valid calls of hands3c::*_triton run in Triton's interpreter here (seconds each), so their
# numbers are checked by the Triton cases of tests/ops/test_<op>.py; this fuzz test draws only
# mutated calls, which must be refused by name before a kernel is launched (fast).

TILE = 4


def _triton_cases(cs, ss, merge):
    fwd, dout, _, _ = cs
    fwd = dict(fwd, u=fwd["u"].float())
    Bn, D, P, Q = fwd["u"].shape
    L, N, C = P * Q, fwd["A_logs"].shape[1], fwd["x_proj_weight"].shape[1]
    ck = torch.zeros(Bn, 4, D, -(-L // TILE), N)
    fwd = {k: fwd[k] for k in CS_NAMES}
    yield "cross_scan_fwd_triton", dict(fwd, tile=TILE, chunk_tiles=0, block_d=0, need_ck=True, out_order=None)
    yield "cross_scan_bwd_triton", dict(dout=dout.float(), **fwd, dbl=torch.zeros(Bn, L, 4, C), checkpoints=ck,
                                        tile=TILE, chunk_tiles=0, block_d=0, bwd_sub=0)
    c, sfwd, sdout, sdlast, _, _ = ss
    plan_f = dict(tile=TILE, chunk_tiles=0, block_d=0)
    yield "selective_scan_fwd_triton", dict(sfwd, **plan_f, need_ck=True)
    args = {k: sfwd[k] for k in SS_NAMES}
    sck = torch.zeros(c.batch, c.dim, -(-c.L // TILE), c.N)
    yield "selective_scan_bwd_triton", dict(dout=sdout, dlast=sdlast, **args, delta_softplus=c.softplus,
                                            checkpoints=sck, **plan_f, bwd_sub=0)
    mfwd = merge[0]
    yield "s3c_merge_fwd_triton", dict(mfwd)
    M = mfwd["y_spatial"].numel() // mfwd["y_spatial"].shape[-1]
    yield "s3c_merge_bwd_triton", dict(dout=merge[1], **{k: mfwd[k] for k in MERGE_NAMES}, mean=torch.zeros(M),
                                       rstd=torch.ones(M))


BAD_PLAN = {"tile": (3, 0, -4), "chunk_tiles": (-1,), "block_d": (3, -2), "bwd_sub": (-1,),
            "out_order": BAD_OUT_ORDERS}


@FUZZ
@given(cross_scan_case(), selective_scan_case(), merge_case(), st.data())
def test_fuzz_triton_ops_refuse_bad_inputs(cs, ss, merge, data):
    pytest.importorskip("triton")
    for name, args in _triton_cases(cs, ss, merge):
        op = getattr(OPS, name)
        plan_keys = [k for k in BAD_PLAN if k in args]
        if plan_keys and data.draw(st.integers(0, 4)) == 0:
            k = data.draw(st.sampled_from(plan_keys))
            bad = dict(args)
            bad[k] = data.draw(st.sampled_from(BAD_PLAN[k]))
        else:
            mut = None
            while mut is None:
                mut = data.draw(mutation(present(args), None))
            tied = ss_tied(args) if "selective" in name else (cs_tied(args) if "cross" in name else merge_tied(args))
            bad = apply_mutation(args, mut, tied)
            if bad is None:
                continue
        with pytest.raises((ValueError, TypeError)) as info:
            op(*bad.values())
        assert str(info.value).startswith(f"hands3c::{name}:"), str(info.value)
