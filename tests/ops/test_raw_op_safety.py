"""Every registered operator is safe on its own: ``torch.ops.hands3c.*`` called directly.

The operators are public (torch.compile, torch.export and anyone reading the schema call them
without the Python wrappers), so each one checks every argument it reads before any kernel
runs (csrc/include/hands3c/op_checks.h for the C++ operators, handS3C/ops/_checks.py for the
fake kernels).  These tests feed each operator, argument by argument, the inputs a hostile or
careless caller would: the wrong dtype, an extra dimension, every dimension one too large,
a tensor on another device, and check that each is a ValueError / TypeError whose message
starts with the operator's name; and that the layouts the kernels accept (permuted,
expanded, sliced views) give the same numbers as contiguous copies.

Three of the inputs here read out of bounds before the shared checks existed
(AddressSanitizer: heap-buffer-overflow); the CI sanitizer job (.ci/run) runs this file
against the AddressSanitizer build of the CPU extension.
"""
from __future__ import annotations

import re

import pytest
import torch

import handS3C  # noqa: F401  (registers the operators)

OPS = torch.ops.hands3c


def _rn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed + 17 * len(shape) + sum(shape))
    return torch.randn(*shape, generator=g)


# ---- valid argument sets, one per operator --------------------------------------------------
# Sizes are chosen so every dimension is tied to another (growing any one of them is an error)
# and L > 64 (two checkpoint chunks).

def cross_scan_args():
    B, D, P, Q, N, R = 2, 3, 9, 8, 3, 2
    fwd = dict(u=_rn(B, D, P, Q), x_proj_weight=_rn(4, R + 2 * N, D) * 0.5, dt_projs_weight=_rn(4, D, R) * 0.5,
               dt_projs_bias=_rn(4, D) * 0.1 - 2.0, A_logs=_rn(4 * D, N) * 0.1, Ds=_rn(4 * D))
    _, dbl, ckpt = OPS.cross_scan_fwd(*fwd.values())
    bwd = dict(dout=_rn(B, D, P, Q, seed=1), **fwd, dbl=dbl, checkpoints=ckpt)
    return fwd, bwd


def selective_scan_args():
    batch, dim, L, N = 2, 5, 70, 3
    fwd = dict(u=_rn(batch, dim, L), delta=_rn(batch, dim, L, seed=1) * 0.5 - 1.0, A=-(0.5 + _rn(dim, N).abs()),
               B=_rn(batch, 1, N, L), C=_rn(batch, 1, N, L, seed=2), D=_rn(dim), z=_rn(batch, dim, L, seed=3),
               delta_bias=_rn(dim, seed=4) * 0.1, delta_softplus=True)
    _, _, ckpt = OPS.selective_scan_fwd(*fwd.values())
    bwd = dict(dout=_rn(batch, dim, L, seed=5), dlast_state=_rn(batch, dim, N, seed=6), **fwd, checkpoints=ckpt)
    return fwd, bwd


def merge_args():
    shape = (2, 3, 5, 6)
    fwd = dict(y_spatial=_rn(*shape), y_channel=_rn(*shape, seed=1), z=_rn(*shape, seed=2),
               weight=1 + 0.1 * _rn(6), bias=0.1 * _rn(6, seed=3), eps=1e-5)
    _, mean, rstd = OPS.s3c_merge_fwd(*fwd.values())
    bwd = dict(dout=_rn(*shape, seed=4), **{k: v for k, v in fwd.items() if k != "eps"}, mean=mean, rstd=rstd)
    return fwd, bwd


def all_cases():
    cs_f, cs_b = cross_scan_args()
    ss_f, ss_b = selective_scan_args()
    m_f, m_b = merge_args()
    return {"cross_scan_fwd": cs_f, "cross_scan_bwd": cs_b, "selective_scan_fwd": ss_f,
            "selective_scan_bwd": ss_b, "s3c_merge_fwd": m_f, "s3c_merge_bwd": m_b}


CASES = all_cases()
OP_NAMES = sorted(CASES)

# Dimensions a forward leaves free (growing them gives another valid call, not an error).
FREE_DIMS = {("cross_scan_fwd", "u"): (0, 2, 3)}


def call(name, args):
    return getattr(OPS, name)(*args.values())


def tensor_args(name):
    return [k for k, v in CASES[name].items() if isinstance(v, torch.Tensor)]


def expect_named_error(name, args, exc, match):
    with pytest.raises(exc) as info:
        call(name, args)
    msg = str(info.value)
    assert msg.startswith(f"hands3c::{name}:"), f"the message does not name the operator: {msg!r}"
    assert re.search(match, msg), f"{msg!r} does not match {match!r}"
    return msg


# ---- the three inputs that overflowed, and the mixed-device fake kernel ----------------------

@pytest.mark.parametrize("bad", ["batch", "direction", "channel"])
def test_cross_scan_bwd_checkpoints_of_wrong_leading_shape(bad):
    """Only the last two checkpoint dimensions were checked: a wrong batch / direction / channel
    count read past the buffer in backward_block<4>."""
    args = dict(CASES["cross_scan_bwd"])
    ck = args["checkpoints"]
    args["checkpoints"] = {"batch": ck[:1], "direction": ck[:, :2], "channel": ck[:, :, :1]}[bad].contiguous()
    expect_named_error("cross_scan_bwd", args, ValueError, r"checkpoints .*must have shape \[2, 4, 3, 2, 3\]")


@pytest.mark.parametrize("length", [0, 3, 5, 7])
def test_merge_fwd_bias_of_wrong_length(length):
    """bias was never checked: a short bias read past its end in merge_row_fwd."""
    args = dict(CASES["s3c_merge_fwd"])
    args["bias"] = _rn(length) if length else torch.empty(0)
    expect_named_error("s3c_merge_fwd", args, ValueError, r"bias .*must have shape \[6\]")


@pytest.mark.parametrize("which", ["mean", "rstd"])
@pytest.mark.parametrize("delta", [-29, -1, 1])
def test_merge_bwd_mean_rstd_of_wrong_length(which, delta):
    """mean / rstd were never checked: a short one read past its end in s3c_merge_bwd."""
    args = dict(CASES["s3c_merge_bwd"])
    args[which] = torch.ones(args[which].numel() + delta)
    expect_named_error("s3c_merge_bwd", args, ValueError, rf"{which} .*must have shape \[30\]")


@pytest.mark.parametrize("name", OP_NAMES)
def test_mixed_devices_are_refused(name):
    """One meta tensor among CPU tensors dispatches to the fake kernel, which returned
    uninitialised CPU memory; now every argument position gives a named device error."""
    for arg in tensor_args(name):
        args = dict(CASES[name])
        args[arg] = args[arg].to("meta")
        msg = expect_named_error(name, args, ValueError, "all tensors must be on one device")
        assert f"{arg} is on meta" in msg, msg


@pytest.mark.parametrize("name", OP_NAMES)
def test_fake_kernel_outputs_on_the_inputs_device(name):
    """All arguments on meta: the fake kernel answers with meta outputs of the real shapes."""
    args = CASES[name]
    real = call(name, args)
    meta = call(name, {k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in args.items()})
    assert len(real) == len(meta)
    for r, m in zip(real, meta):
        assert m.device.type == "meta"
        assert m.shape == r.shape and m.dtype == r.dtype, (m.shape, r.shape, m.dtype, r.dtype)


# ---- every argument, every way of getting it wrong ------------------------------------------

@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("name", OP_NAMES)
def test_wrong_dtype_is_a_type_error_naming_the_argument(name, device):
    """float64 / int32 / bool for each tensor argument (e.g. raw merge ops given float64
    weights).  On meta the fake kernel must refuse exactly like the C++ checks."""
    base = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in CASES[name].items()}
    for arg in tensor_args(name):
        for dtype in (torch.float64, torch.int32, torch.bool):
            args = dict(base)
            args[arg] = args[arg].to(dtype)
            msg = expect_named_error(name, args, TypeError, "must be|must have")
            # the message names the argument itself, or (for tied dtypes) the one it must match
            assert arg in msg or "u's dtype" in msg, msg


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("name", OP_NAMES)
def test_extra_dimension_is_a_value_error(name, device):
    base = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in CASES[name].items()}
    for arg in tensor_args(name):
        args = dict(base)
        args[arg] = args[arg].unsqueeze(0)
        expect_named_error(name, args, ValueError, "must|has")


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("name", OP_NAMES)
def test_every_dimension_one_too_large_is_a_value_error(name, device):
    """Each dimension of each argument grown by one (all sizes are tied, so each is an error),
    then shrunk by one where that leaves a non-empty tensor."""
    base = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in CASES[name].items()}
    tried = 0
    for arg in tensor_args(name):
        for d in range(base[arg].dim()):
            if d in FREE_DIMS.get((name, arg), ()):
                continue
            for step in (1, -1):
                shape = list(base[arg].shape)
                shape[d] += step
                if shape[d] < 1:
                    continue
                args = dict(base)
                args[arg] = torch.zeros(shape, dtype=base[arg].dtype, device=device)
                expect_named_error(name, args, ValueError, "must|has")
                tried += 1
    assert tried >= 10


@pytest.mark.parametrize("name", ["cross_scan_fwd", "selective_scan_fwd", "s3c_merge_fwd"])
def test_empty_and_degenerate_sizes(name):
    """Empty dimensions, a zero state size, and (for the merge) a zero eps or an empty
    normalised dimension are named errors, not empty or NaN results."""
    args = dict(CASES[name])
    if name == "cross_scan_fwd":
        bad = [("u", args["u"][:0]), ("u", args["u"][:, :, :0]), ("A_logs", args["A_logs"][:, :0])]
    elif name == "selective_scan_fwd":
        bad = [("u", args["u"][:, :, :0]), ("A", args["A"][:, :0])]
    else:
        bad = [("y_spatial", args["y_spatial"][..., :0]), ("eps", 0.0), ("eps", float("nan")), ("eps", -1.0)]
    for arg, value in bad:
        a = dict(args)
        a[arg] = value
        if name == "s3c_merge_fwd" and arg == "y_spatial":
            a.update(y_channel=value, z=value, weight=torch.empty(0), bias=torch.empty(0))
        expect_named_error(name, a, ValueError, "empty|must be")


def test_state_size_above_the_limit():
    args = dict(CASES["selective_scan_fwd"])
    args["A"] = -torch.ones(5, 65)
    args["B"] = torch.zeros(2, 1, 65, 70)
    args["C"] = torch.zeros(2, 1, 65, 70)
    expect_named_error("selective_scan_fwd", args, ValueError, r"state size N .* 1\.\.64, got 65")


def test_groups_must_divide_the_channels():
    args = dict(CASES["selective_scan_fwd"])
    args["B"] = _rn(2, 2, 3, 70)  # dim = 5
    expect_named_error("selective_scan_fwd", args, ValueError, "B must be .*G groups dividing dim=5")


def test_merge_zero_rows_is_allowed():
    """M = 0 rows (an empty batch) is a valid call with empty outputs on both passes."""
    ys = torch.empty(0, 4, 6)
    w, b = torch.ones(6), torch.zeros(6)
    out, mean, rstd = OPS.s3c_merge_fwd(ys, ys, ys, w, b, 1e-5)
    assert out.shape == (0, 4, 6) and mean.shape == (0,)
    dy, dz, dw, db = OPS.s3c_merge_bwd(ys, ys, ys, ys, w, b, mean, rstd)
    assert dy.shape == (0, 4, 6) and torch.equal(dw, torch.zeros(6)) and torch.equal(db, torch.zeros(6))


# ---- accepted layouts give the contiguous result ---------------------------------------------

def _relayouts(t):
    """Non-contiguous tensors: transposed storage, a step-2 slice, and stride-0 expansions of
    the first and of the last dimension (values repeated along it)."""
    out = []
    if t.dim() >= 2:
        out.append(("transposed", t.transpose(-1, -2).contiguous().transpose(-1, -2)))
    big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    big[..., ::2] = t
    out.append(("step-2 slice", big[..., ::2]))
    out.append(("expanded first dim", t[:1].expand(t.shape)))
    out.append(("expanded last dim", t[..., :1].expand(t.shape)))
    return out


def _same(g, r):
    return g.shape == r.shape and g.dtype == r.dtype and torch.allclose(g, r, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("name", OP_NAMES)
def test_strided_views_match_contiguous_copies(name):
    """Every tensor argument as a non-contiguous view (including stride 0) gives the result of
    its contiguous copy: the kernels either honour the strides or copy, never misread."""
    args = CASES[name]
    for arg in tensor_args(name):
        for how, view in _relayouts(args[arg]):
            a, b = dict(args), dict(args)
            a[arg], b[arg] = view, view.contiguous()
            for i, (g, r) in enumerate(zip(call(name, a), call(name, b))):
                assert _same(g, r), f"{name}: {arg} as a {how} view, output {i}"


@pytest.mark.parametrize("name", OP_NAMES)
def test_negated_views_are_resolved_or_refused(name):
    """A lazily negated view (torch._neg_view) must never be read as its un-negated memory:
    either torch resolves it before the kernel (same result as the materialised negation) or
    the operator refuses it by name."""
    args = CASES[name]
    for arg in tensor_args(name):
        if not args[arg].is_floating_point():
            continue
        a = dict(args)
        a[arg] = torch._neg_view(args[arg])
        b = dict(args)
        b[arg] = -args[arg]
        try:
            got = call(name, a)
        except TypeError as e:
            assert str(e).startswith(f"hands3c::{name}:") and "negated" in str(e)
            continue
        want = call(name, b)
        for g, w in zip(got, want):
            assert torch.equal(g.resolve_neg(), w) or (torch.isnan(g).any() and torch.isnan(w).any()), (name, arg)


@pytest.mark.parametrize("name", ["cross_scan_fwd", "cross_scan_bwd"])
def test_half_precision_u_is_read_as_float32(name):
    """cross_scan_* take float16 / bfloat16 u and dout (read as float32) on CPU as on CUDA."""
    args = CASES[name]
    for dtype in (torch.float16, torch.bfloat16):
        a = dict(args)
        b = dict(args)
        for k in ("u", "dout"):
            if k in a:
                a[k] = args[k].to(dtype)
                b[k] = args[k].to(dtype).float()
        for g, w in zip(call(name, a), call(name, b)):
            assert torch.equal(g, w)


# ---- cross_scan_fwd's out_order (issue 14): refused unless a permutation; every layout safe ------

@pytest.mark.parametrize("bad", [[0, 1, 2], [0, 1, 2, 3, 0], [0, 0, 1, 2], [1, 2, 3, 4], [-1, 0, 1, 2], []],
                         ids=str)
def test_cross_scan_fwd_out_order_must_be_a_permutation(bad):
    """The C++ operator and its fake kernel (meta tensors) name out_order before any allocation."""
    args = dict(CASES["cross_scan_fwd"], out_order=bad)
    want = r"out_order must be a permutation of \(0, 1, 2, 3\)"
    expect_named_error("cross_scan_fwd", args, ValueError, want)
    meta = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    expect_named_error("cross_scan_fwd", meta, ValueError, want)


def test_cross_scan_every_out_order_and_dout_layout():
    """All 24 memory orders of y: the values of the default layout, the strides asked for, the
    fake kernel's strides equal to the real ones; the backward given dout in that layout (the
    kernel reads it through its strides) returns the contiguous dout's gradients."""
    import itertools
    fwd, bwd = CASES["cross_scan_fwd"], CASES["cross_scan_bwd"]
    y0 = call("cross_scan_fwd", fwd)[0]
    g0 = call("cross_scan_bwd", bwd)
    meta = {k: v.to("meta") for k, v in fwd.items()}
    for order in itertools.permutations(range(4)):
        y = OPS.cross_scan_fwd(*fwd.values(), list(order))[0]
        assert torch.equal(y, y0) and y.permute(order).is_contiguous(), order
        assert OPS.cross_scan_fwd(*meta.values(), list(order))[0].stride() == y.stride(), order
        dout = torch.empty_like(y).copy_(bwd["dout"])  # empty_like keeps y's strides
        assert dout.stride() == y.stride()
        for a, b in zip(call("cross_scan_bwd", dict(bwd, dout=dout)), g0):
            assert torch.equal(a, b), order
