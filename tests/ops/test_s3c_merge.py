"""s3c_merge: LayerNorm(y_spatial + y_channel) * SiLU(z), fused, on every backend, against the reference.

One case table, CASES, serves every backend: a case's ``size`` tag names the targets that run it
(tests/testenv.py, SIZE_TARGETS): "small" cases run on the C++ CPU kernel and, on a GPU, on the
CUDA kernel; "tiny" cases on the Triton kernel (the CPU interpreter, or compiled at 4x the shape
on a GPU; inputs from tests/triton_cases.py); "gpu" cases on the CUDA kernel at GPU sizes
(tests/cuda_parity.py).  Targets that need a GPU skip with the reason given in testenv.py when
none is present.  Below the table: the CPU kernel's own properties and the Triton operators'.
"""
from dataclasses import dataclass
from typing import Optional

import pytest
import torch

from testenv import case_params, check_on, devices_for_test
from handS3C import ops, reference
from handS3C.ops import s3c_merge
from handS3C.triton_kernels import scan_config
from tolerances import assert_close, out_tol, weight_tol

import cuda_parity as cp
import triton_cases as tc

def make(shape, zdtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    C = shape[-1]
    ys = torch.randn(shape, generator=g) * 2 + 0.3
    yc = torch.randn(shape, generator=g)
    z = torch.randn(shape, generator=g).to(zdtype)
    w = 1 + 0.3 * torch.randn(C, generator=g)
    b = 0.2 * torch.randn(C, generator=g)
    return [t.to(device) for t in (ys, yc, z, w, b)]


# ---- the case table: every backend ----------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One s3c_merge shape case; ``size`` picks the backends that run it (testenv.SIZE_TARGETS:
    "small" cpu and cuda, "tiny" triton, "gpu" cuda at GPU sizes).

    shape: the (..., C) shape of every input but the (C,) weight and bias; for a tiny case the
    shape of the tensors that ``perm`` permutes into (..., C) views.  zdtype: the gate z's
    dtype.  permuted: a gpu case's branch outputs are the block's permuted (..., C) views.
    """
    shape: tuple
    zdtype: torch.dtype = torch.float32
    size: str = "small"
    perm: Optional[tuple] = None
    permuted: bool = False
    name: str = ""

    @property
    def id(self):
        return self.name or ("x".join(map(str, self.shape)) + f"_{str(self.zdtype)[6:]}"
                             + ("_perm" if self.permuted else ""))


CASES = [
    # small: one to four dimensions, C from 1 to 512, every z dtype
    *(Case(shape, zdtype) for shape in [(3, 1), (2, 5, 7), (2, 4, 6, 64), (1, 9, 7, 33), (2, 3, 20, 24),
                                        (2, 32, 32, 512)]
      for zdtype in (torch.float32, torch.bfloat16, torch.float16)),
    # tiny: the Triton kernel on (..., C) views of permuted tensors
    Case((2, 6, 3, 5), size="tiny", perm=(0, 2, 3, 1), name="nchw_view_f32"),
    Case((2, 6, 3, 5), torch.bfloat16, size="tiny", perm=(0, 2, 3, 1), name="nchw_view_bf16_gate"),
    Case((7, 5), size="tiny", perm=(0, 1), name="rows_2d"),
    Case((2, 3, 4, 5, 6), size="tiny", perm=(0, 4, 2, 1, 3), name="five_dims"),
    # gpu: the CUDA kernel at GPU sizes
    Case((2, 32, 32, 512), size="gpu", permuted=True),
    Case((3, 7, 100), size="gpu"),
    Case((1000, 64), torch.bfloat16, size="gpu"),
    Case((5, 2000), torch.float16, size="gpu"),
]


def check_small(backend, device, case):
    shape, zdtype = case.shape, case.zdtype
    args = make(shape, zdtype, device)
    leaves = [a.clone().requires_grad_(True) for a in args]
    out = ops.s3c_merge(*leaves, eps=1e-5, backend=backend)
    ref_leaves = [a.detach().cpu().double().requires_grad_(True) for a in args]
    want = reference.s3c_merge_ref(*ref_leaves, eps=1e-5)
    assert out.dtype == torch.float32
    assert_close(out, want, *out_tol(torch.float32), "out")
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device)
    got = torch.autograd.grad((out * g).sum(), leaves)
    exp = torch.autograd.grad((want * g.double().cpu()).sum(), ref_leaves)
    for name, a, b in zip(["y_spatial", "y_channel", "z", "weight", "bias"], got, exp):
        assert a.dtype == leaves[["y_spatial", "y_channel", "z", "weight", "bias"].index(name)].dtype
        scale = max(1.0, b.abs().max().item())
        tol = out_tol(zdtype) if name == "z" else weight_tol(torch.float32)
        assert_close(a.float() / scale, b / scale, *tol, f"d{name}")


def check_tiny(device, case):
    src = case.shape if device == "cpu" else tuple(s * 4 for s in case.shape)
    args = tc.merge_inputs(device, src, case.perm, case.zdtype)
    gy = torch.randn(tuple(args[0].shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    with scan_config(poison=True):
        out = s3c_merge(*args, backend="triton")
        grads = torch.autograd.grad((out.double() * gy).sum(), args)
    ref_args = [tc.leaf64(a) for a in args]
    r_out = reference.s3c_merge_ref(*ref_args)
    r_grads = torch.autograd.grad((r_out * gy).sum(), ref_args)
    assert out.dtype == torch.float32 and out.shape == args[0].shape
    assert_close(out, r_out, *out_tol(torch.float32), "out")
    for name, got, want, arg in zip(["dy_spatial", "dy_channel", "dz", "dweight", "dbias"], grads, r_grads, args):
        assert got.dtype == arg.dtype, name
        tol = out_tol(arg.dtype) if arg.dtype != torch.float32 else weight_tol(torch.float32)
        assert_close(got, want, *tol, name)


def check_gpu(env, case):  # env (cuda_env) poisons the outputs
    c = cp.MergeCase(case.shape, zdtype=case.zdtype, permuted=case.permuted)
    inp = cp.merge_inputs(c)
    leaves = {k: cp._leaf(inp[k], "cuda") for k in cp.MERGE_GRAD_NAMES}
    out = s3c_merge(*(leaves[k] for k in cp.MERGE_GRAD_NAMES), backend="cuda")
    out.backward(inp["dout"].cuda())
    got = (out.detach().cpu(), {k: leaves[k].grad.cpu() for k in cp.MERGE_GRAD_NAMES})
    cp.merge_compare(c, got, cp.merge_reference(c, inp), tag=c.id())


@pytest.mark.parametrize("target,case", case_params(CASES))
def test_matches_float64_reference(request, target, case):
    check_on(request, target, case, check_small, check_tiny, check_gpu)


def test_permuted_views_as_in_the_block():
    g = torch.Generator().manual_seed(2)
    ys = torch.randn(2, 64, 4, 6, generator=g).permute(0, 2, 3, 1)   # spatial branch (B,d,H,W) -> (B,H,W,d)
    yc = torch.randn(2, 6, 64, 4, generator=g).permute(0, 3, 1, 2)   # channel branch (B,W,d,H) -> (B,H,W,d)
    z = torch.randn(2, 4, 6, 64, generator=g)
    w, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    assert_close(ops.s3c_merge(ys, yc, z, w, b, backend="cpu"),
                 reference.s3c_merge_ref(ys.double(), yc.double(), z.double(), w.double(), b.double()),
                 *out_tol(torch.float32), "permuted views")


def test_deterministic_across_thread_counts():
    args = make((3, 70, 48), seed=3)
    outs = []
    before = torch.get_num_threads()
    try:
        for th in (1, 2):
            torch.set_num_threads(th)
            leaves = [a.clone().requires_grad_(True) for a in args]
            o = ops.s3c_merge(*leaves, backend="cpu")
            outs.append((o,) + torch.autograd.grad(o.square().sum(), leaves))
    finally:
        torch.set_num_threads(before)
    for x, y in zip(*outs):
        assert torch.equal(x, y)


def test_opcheck():
    args = make((2, 3, 8), seed=4)
    torch.library.opcheck(torch.ops.hands3c.s3c_merge_fwd.default,
                          tuple(a.requires_grad_(True) for a in args) + (1e-5,))


def test_errors_name_the_argument():
    ys, yc, z, w, b = make((2, 3, 8))
    with pytest.raises(ValueError, match="y_channel must have shape"):
        ops.s3c_merge(ys, yc[:, :2], z, w, b)
    with pytest.raises(ValueError, match="z must have shape"):
        ops.s3c_merge(ys, yc, z[..., :4], w, b)
    with pytest.raises(ValueError, match="norm_weight must have shape"):
        ops.s3c_merge(ys, yc, z, w[:4], b)
    with pytest.raises(TypeError, match="y_spatial must have dtype"):
        ops.s3c_merge(ys.double(), yc, z, w, b)
    with pytest.raises(ValueError, match="eps must be a positive finite number"):
        ops.s3c_merge(ys, yc, z, w, b, eps=float("nan"))
    with pytest.raises(ValueError, match="one device"):
        ops.s3c_merge(ys, yc, z, w.to("meta"), b)


@pytest.mark.parametrize("zdtype", [torch.float32, torch.bfloat16], ids=str)
def test_strided_views_forward_and_backward(zdtype):
    """The kernel gathers strided rows tile by tile: permuted, sliced (non-adjacent rows) and
    chunked views, with a row count that is not a multiple of the tile, give the float64
    reference's output and every gradient."""
    g = torch.Generator().manual_seed(7)
    B, H, W, C = 2, 5, 9, 37                                                    # 90 rows
    ys_base = torch.randn(B, C, H, 2 * W, generator=g)                          # sliced below
    yc_base = torch.randn(B, W, C, H, generator=g)
    xz = torch.randn(B, H, W, 2 * C, generator=g).to(zdtype)
    w, b = 1 + 0.3 * torch.randn(C, generator=g), 0.2 * torch.randn(C, generator=g)
    leaves = [ys_base.clone().requires_grad_(), yc_base.clone().requires_grad_(), xz.clone().requires_grad_(),
              w.clone().requires_grad_(), b.clone().requires_grad_()]
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]

    def views(ys_, yc_, xz_):
        return ys_[..., ::2].permute(0, 2, 3, 1), yc_.permute(0, 3, 1, 2), xz_[..., C:]

    out = ops.s3c_merge(*views(*leaves[:3]), leaves[3], leaves[4], backend="cpu")
    want = reference.s3c_merge_ref(*views(*ref_leaves[:3]), ref_leaves[3], ref_leaves[4])
    assert_close(out, want, *out_tol(torch.float32), "out")
    cot = torch.randn(out.shape, generator=g)
    got = torch.autograd.grad((out * cot).sum(), leaves)
    exp = torch.autograd.grad((want * cot.double()).sum(), ref_leaves)
    for name, a, e in zip(["y_spatial", "y_channel", "z", "weight", "bias"], got, exp):
        scale = max(1.0, e.abs().max().item())
        tol = out_tol(zdtype) if name == "z" else weight_tol(torch.float32)
        assert_close(a.float() / scale, e / scale, *tol, f"d{name}")
    assert (got[0][..., 1::2] == 0).all()  # rows the slice skipped get no gradient


# ---- Triton (backend="triton") --------------------------------------------------------------------

def test_triton_matches_cpu_backend():
    args = tc.merge_inputs("cpu", (2, 6, 3, 5), (0, 2, 3, 1), torch.float32, seed=3)
    gy = torch.randn(tuple(args[0].shape), generator=torch.Generator().manual_seed(2))
    tc.matches_cpu(s3c_merge, args, gy, weight_tol(torch.float32))


@pytest.mark.parametrize("device", devices_for_test())
@pytest.mark.parametrize("name", ["fwd", "bwd"])
def test_triton_opcheck(device, name):
    """torch.library.opcheck of hands3c::s3c_merge_{fwd,bwd}_triton."""
    mg = tc.merge_inputs(device, (2, 5, 3), (0, 2, 1), torch.float32, seed=13)
    tc.opcheck("s3c_merge", name, (*mg, 1e-5), lambda o: (torch.randn_like(o[0]), *tc.detached(mg), o[1], o[2]))


# ---- the CUDA backend (backend="cuda") ------------------------------------------------------------

def test_cuda_backend_rejects_cpu_tensors():
    """backend='cuda' with CPU tensors raises a ValueError naming the device, before any kernel."""
    m = cp.merge_inputs(cp.MergeCase((2, 8)))
    with pytest.raises(ValueError, match="CUDA tensors, got tensors on cpu"):
        s3c_merge(*(m[k] for k in cp.MERGE_GRAD_NAMES), backend="cuda")


# ---- contiguous rows: the S3C block's layout since the scans write (B, H, W, d) (issue 14) ------
# Kept apart from the case table above.  The kernel reads contiguous rows in place (no tile
# gather; a float32 z not even copied) and keeps the strided path's rows, tiles and reduction
# order, so the layout of the inputs must not change a single bit of any result.

def _block_layouts(B, H, W, C, zdtype, seed):
    """The same values as the block's branch outputs in the old layout (permuted views of
    contiguous (B, C, H, W) and (B, W, C, H) tensors) and the new one (contiguous (B, H, W, C)
    rows), with z the second half of the in-projection's (B, H, W, 2C) output as in the block."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.randn(B, H, W, C, generator=g) * 2 + 0.3
    yc = torch.randn(B, H, W, C, generator=g)
    xz = torch.randn(B, H, W, 2 * C, generator=g).to(zdtype)
    w, b = 1 + 0.3 * torch.randn(C, generator=g), 0.2 * torch.randn(C, generator=g)
    old = (ys.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1),
           yc.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))
    return (ys, yc), old, xz, w, b


def _merge_with_grads(ys, yc, xz, w, b, cot):
    C = w.shape[0]
    leaves = [t.detach().clone().requires_grad_(True) for t in (ys, yc, xz, w, b)]
    out = ops.s3c_merge(leaves[0], leaves[1], leaves[2][..., C:], leaves[3], leaves[4], backend="cpu")
    return (out,) + torch.autograd.grad((out * cot).sum(), leaves)


@pytest.mark.parametrize("zdtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(3, 5, 9, 37), (2, 32, 32, 512), (1, 4, 3, 20)], ids=lambda s: "x".join(map(str, s)))
def test_contiguous_rows_equal_the_permuted_views_bitwise(shape, zdtype):
    """Old layout, new layout and a mix of the two: the same output and gradients bit for bit
    (odd shapes: 3 batches, W = 9 and 3 (tiles of fewer than 16 rows), C = 37 and 20)."""
    B, H, W, C = shape
    new, old, xz, w, b = _block_layouts(B, H, W, C, zdtype, seed=11)
    cot = torch.randn(B, H, W, C, generator=torch.Generator().manual_seed(12))
    want = _merge_with_grads(*old, xz, w, b, cot)
    for ys, yc in (new, (new[0], old[1]), (old[0], new[1])):
        got = _merge_with_grads(ys, yc, xz, w, b, cot)
        for name, a, e in zip(["out", "dy_spatial", "dy_channel", "dxz", "dweight", "dbias"], got, want):
            assert torch.equal(a, e), f"{name} depends on the inputs' layout"


@pytest.mark.parametrize("zdtype", [torch.float32, torch.float16], ids=str)
def test_contiguous_rows_match_float64_reference(zdtype):
    B, H, W, C = 3, 4, 11, 45
    (ys, yc), _, xz, w, b = _block_layouts(B, H, W, C, zdtype, seed=13)
    leaves = [t.clone().requires_grad_(True) for t in (ys, yc, xz, w, b)]
    ref_leaves = [t.detach().double().requires_grad_(True) for t in (ys, yc, xz, w, b)]
    out = ops.s3c_merge(leaves[0], leaves[1], leaves[2][..., C:], leaves[3], leaves[4], backend="cpu")
    want = reference.s3c_merge_ref(ref_leaves[0], ref_leaves[1], ref_leaves[2][..., C:], ref_leaves[3], ref_leaves[4])
    assert_close(out, want, *out_tol(torch.float32), "out")
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(14))
    got = torch.autograd.grad((out * cot).sum(), leaves)
    exp = torch.autograd.grad((want * cot.double()).sum(), ref_leaves)
    for name, a, e in zip(["y_spatial", "y_channel", "xz", "weight", "bias"], got, exp):
        scale = max(1.0, e.abs().max().item())
        tol = out_tol(zdtype) if name == "xz" else weight_tol(torch.float32)
        assert_close(a.float() / scale, e / scale, *tol, f"d{name}")
    assert (got[2][..., :C] == 0).all()  # the in-projection half that is not z gets no gradient
