"""cross_scan_selective_scan on every backend, against the float64 reference and the published path.

One case table, CASES, serves every backend: a case's ``size`` tag names the targets that run it
(tests/testenv.py, SIZE_TARGETS): "small" cases run on the C++ CPU kernels and, on a GPU, on the
CUDA kernels; "tiny" cases on the Triton kernels (the CPU interpreter with the case's launch
plan, or compiled at scaled-up shapes on a GPU; inputs from tests/triton_cases.py); "gpu" cases
on the CUDA kernels at GPU sizes, including the channel branch's real lengths
(tests/cuda_parity.py).  Targets that need a GPU skip with the reason given in testenv.py when
none is present.  Below the table: the CPU kernels' own properties, the Triton operators',
the CUDA backend's.
"""
import math
from dataclasses import dataclass
from typing import Optional

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from testenv import case_params, check_on, devices_for_test, requires_gpu
from handS3C import ops, reference
from handS3C.ops import cross_scan_selective_scan
from tolerances import assert_close, dA_tol, du_tol, out_tol, weight_tol

import cuda_parity as cp
import triton_cases as tc

F32 = torch.float32


def make_inputs(Bn, D, P, Q, N, R, seed=0, device="cpu"):
    """Random, never-zero inputs with published-style parameter scales."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(Bn, D, P, Q, generator=g)
    xw = (torch.rand(4, R + 2 * N, D, generator=g) * 2 - 1) / math.sqrt(D)
    dtw = (torch.rand(4, D, R, generator=g) * 2 - 1) * R ** -0.5
    dtb = torch.randn(4, D, generator=g) * 0.5 - 2.0
    alogs = torch.log(torch.rand(4 * D, N, generator=g) * 4 + 0.5)
    ds = torch.randn(4 * D, generator=g)
    return [t.to(device) for t in (u, xw, dtw, dtb, alogs, ds)]


def ref64(args):
    return reference.cross_scan_selective_scan_ref(*[a.double() for a in args], scan_fn=reference.selective_scan_ref64)


def check_against_float64(args, backend, with_grad=True, seed=1):
    leaves = [a.detach().clone().requires_grad_(with_grad) for a in args]
    out = ops.cross_scan_selective_scan(*leaves, backend=backend)
    assert out.dtype == F32 and out.shape == args[0].shape and out.is_contiguous()
    ref_leaves = [a.detach().cpu().double().requires_grad_(with_grad) for a in args]
    want = ref64(ref_leaves)
    r, a = out_tol(F32)
    assert_close(out, want, r, a, "out")
    if not with_grad:
        return
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.device)
    grads = torch.autograd.grad((out * g).sum(), leaves)
    want_grads = torch.autograd.grad((want * g.double().cpu()).sum(), ref_leaves)
    names = ["u", "x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds"]
    tols = [du_tol(F32), weight_tol(F32), weight_tol(F32), weight_tol(F32), dA_tol(F32), weight_tol(F32)]
    for name, got, exp, (rt, at) in zip(names, grads, want_grads, tols):
        # Parameter gradients are sums over batch and positions: compare relative to their scale.
        scale = max(1.0, exp.abs().max().item())
        assert_close(got / scale, exp / scale, rt, at, f"d{name}")


# ---- the case table: every backend ----------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One cross_scan_selective_scan shape case (u is batch x D x P x Q); ``size`` picks the
    backends that run it (testenv.SIZE_TARGETS: "small" cpu and cuda, "tiny" triton, "gpu"
    cuda at GPU sizes).

    layout: how u is laid out: "contig"; "channel", the S3C channel branch's permuted view
    (storage batch x P x Q x D, as the block's (B, d_inner, H, W) tensor seen as (B, W, d_inner, H));
    "perm", a tiny case's (batch x Q x D x P) storage; "transposed", P and Q swapped in
    storage, not addressable with one plane stride.  dtype is u's (gpu cases).  published:
    also compared with the published composition on mamba-ssm's compiled scan (gpu cases).
    plan: a tiny case's launch plan in the Triton interpreter; target_threads:
    HANDS3C_CUDA_TARGET_THREADS of a gpu case.  seed: the input seed.
    """
    batch: int
    D: int
    P: int
    Q: int
    N: int
    R: int
    dtype: torch.dtype = F32
    layout: str = "contig"
    size: str = "small"
    published: bool = False
    plan: Optional[dict] = None
    target_threads: Optional[int] = None
    seed: int = 0
    name: str = ""

    @property
    def id(self):
        if self.name:
            return self.name
        return (f"B{self.batch}_D{self.D}_{self.P}x{self.Q}_N{self.N}_R{self.R}"
                + (f"_{str(self.dtype)[6:]}" if self.dtype != F32 else "")
                + (f"_{self.layout}" if self.layout != "contig" else "")
                + (f"_t{self.target_threads}" if self.target_threads else ""))


def _tiny(name, *shape, plan, **kw):
    return Case(*shape, size="tiny", plan=plan, name=name, **kw)


CASES = [
    # small: odd D, single row / column planes, non-square planes, N in {1, 4, 16}, L = P*Q from
    # 1 to 1024 (including 65 and L not a multiple of the 64-step chunk), then the branches
    Case(1, 1, 1, 1, 1, 1),
    Case(3, 3, 7, 9, 4, 2),
    Case(1, 17, 1, 65, 16, 4),
    Case(3, 17, 65, 1, 1, 2),
    Case(1, 64, 7, 9, 16, 4),
    Case(3, 1, 16, 16, 4, 1),
    Case(1, 3, 32, 32, 16, 4),
    Case(1, 20, 5, 13, 5, 3),   # N outside the specialised set (generic path), D not a multiple of 16
    # HandS3C's spatial branch geometry (32x32 plane) at a reduced channel count
    Case(1, 64, 32, 32, 16, 16, seed=3, name="spatial_branch_32x32"),
    # the channel branch: a 512x32 plane (L = 16384) at D = W = 32, passed as a permuted view
    Case(1, 32, 512, 32, 16, 16, layout="channel", seed=4, name="channel_branch_512x32"),
    # tiny: the Triton kernels, with plans that put every tile/chunk/block boundary inside
    _tiny("plane3x5_chunks", 2, 3, 3, 5, 4, 2, plan=dict(tile=4, chunk_tiles=2, block_d=2, bwd_sub=1)),
    _tiny("row1x7_N1_subblocks", 1, 3, 1, 7, 1, 2, plan=dict(tile=4, chunk_tiles=1, block_d=2, bwd_sub=2)),
    _tiny("col7x1", 1, 2, 7, 1, 3, 1, plan=dict(tile=2, chunk_tiles=2, block_d=4)),
    _tiny("perm5x4_N16_one_chunk", 1, 4, 5, 4, 16, 3, layout="perm", plan=dict(tile=8, block_d=4)),
    _tiny("square4x4_exact_tiles", 1, 2, 4, 4, 4, 2, plan=dict(tile=4, chunk_tiles=3, block_d=2)),
    # gpu: the CUDA kernels at GPU sizes, including the channel branch's real lengths
    Case(2, 64, 32, 32, 16, 4, size="gpu", published=True),                 # the spatial branch's plane
    Case(1, 48, 7, 9, 4, 3, size="gpu", published=True),
    Case(1, 32, 1, 300, 1, 2, size="gpu"),                                   # one row
    Case(2, 16, 257, 1, 16, 4, size="gpu", target_threads=10**6),            # one column, segmented
    Case(1, 32, 128, 32, 16, 16, layout="channel", size="gpu"),              # channel branch layout, L = 4096
    Case(1, 28, 512, 28, 16, 16, layout="channel", size="gpu"),              # FreiHAND channel branch, L = 14336
    Case(1, 32, 512, 32, 16, 16, layout="channel", size="gpu"),              # HO3D channel branch, L = 16384
    Case(1, 96, 16, 16, 16, 6, torch.bfloat16, layout="transposed", size="gpu", target_threads=1),
    Case(1, 20, 10, 13, 64, 2, size="gpu"),                                  # generic kernel
]


def check_small(backend, device, case):
    u, *params = make_inputs(case.batch, case.D, case.P, case.Q, case.N, case.R, seed=case.seed, device=device)
    if case.layout == "channel":
        base = torch.randn(case.batch, case.P, case.Q, case.D,
                           generator=torch.Generator().manual_seed(case.seed + 1)).to(device)
        u = base.permute(0, 3, 1, 2)  # (B, W, d_inner, H): no copy
        assert not u.is_contiguous()
    check_against_float64([u] + params, backend)


def check_tiny(device, case):
    Bn, D, P, Q = case.batch, case.D, case.P, case.Q
    if device == "cuda":
        Bn, D, P, Q = 2, D * 16, P * 4, Q * 4
    tc.cs_check(device, tc.cs_inputs(device, Bn, D, P, Q, case.N, case.R, case.layout), case.plan)


def gpu_case(case):
    """A gpu case as tests/cuda_parity.py's CSCase (inputs, float64 reference, comparison)."""
    return cp.CSCase(case.batch, case.D, case.P, case.Q, case.N, case.R, dtype=case.dtype, layout=case.layout,
                     target_threads=case.target_threads, seed=case.seed)


def check_gpu(env, case):
    c = gpu_case(case)
    cp.set_target(env, c.target_threads)
    inp = cp.cs_inputs(c)
    cp.cs_compare(c, cp.cs_run_api(c, inp, device="cuda"), cp.cs_reference(c, inp, device="cuda"), tag=c.id())


@pytest.mark.parametrize("target,case", case_params(CASES))
def test_matches_float64_reference(request, target, case):
    check_on(request, target, case, check_small, check_tiny, check_gpu)


@pytest.mark.parametrize("target,case", case_params(CASES, keep=lambda c: c.published))
def test_matches_published_path(request, target, case):
    """Against the published composition with mamba-ssm's CUDA scan, when it is installed."""
    request.getfixturevalue("cuda_env")
    if reference.mamba_selective_scan_cuda_fn() is None:
        pytest.skip("mamba-ssm's compiled selective_scan_fn (selective_scan_cuda) is not installed")
    c = gpu_case(case)
    inp = cp.cs_inputs(c)
    out, _ = cp.cs_run_api(c, inp, device="cuda")
    args = [inp[k].cuda() for k in cp.CS_GRAD_NAMES]
    ref = reference.cross_scan_selective_scan_ref(args[0].float(), *args[1:])
    r, a = cp.TOL[torch.float32]
    cp.assert_close(out, ref.cpu(), r, a, "vs published path")


def test_strided_and_contiguous_inputs_agree():
    u, *params = make_inputs(2, 16, 12, 8, 16, 4, seed=6)
    base = u.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)   # channels-last storage
    sliced = torch.randn(2, 16, 12, 16)[..., ::2]                    # non-unit plane stride
    sliced.copy_(u)
    a = ops.cross_scan_selective_scan(u, *params, backend="cpu")
    b = ops.cross_scan_selective_scan(base, *params, backend="cpu")
    c = ops.cross_scan_selective_scan(sliced, *params, backend="cpu")
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-6) and torch.allclose(a, c, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", ["contiguous", "channel-view", "batch-1"])
def test_projection_gemm_with_and_without_onednn(layout):
    """The forward's x_proj GEMM goes through oneDNN's linear where PyTorch has it (one call for a
    channel-branch view, one per batch element for a contiguous u, one for B = 1) and through
    at::matmul when mkldnn is disabled: each path against float64, values and gradients."""
    u, *params = make_inputs(1 if layout == "batch-1" else 2, 24, 6, 10, 4, 3, seed=11)
    if layout == "channel-view":
        u = u.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # D fastest, as the channel branch
    outs = []
    was = torch._C._get_mkldnn_enabled()
    try:
        for enabled in (True, False):
            # the switch torch.backends.mkldnn.flags sets, without its TF32 setter (which warns
            # on builds without Intel GPU support)
            torch._C._set_mkldnn_enabled(enabled)
            check_against_float64([u] + params, "cpu")
            with torch.no_grad():
                outs.append(ops.cross_scan_selective_scan(u, *params, backend="cpu"))
    finally:
        torch._C._set_mkldnn_enabled(was)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_equals_published_path():
    """The composition check: the fused op equals cross-scan + mamba-ssm selective_scan_ref + merge."""
    args = make_inputs(2, 24, 6, 10, 16, 2, seed=7)
    leaves = [a.clone().requires_grad_(True) for a in args]
    ref_leaves = [a.clone().requires_grad_(True) for a in args]
    out = ops.cross_scan_selective_scan(*leaves, backend="cpu")
    want = reference.cross_scan_selective_scan_ref(*ref_leaves)  # mamba-ssm's selective_scan_ref
    r, a = out_tol(F32)
    assert_close(out, want, r, a, "out vs published path")
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(8))
    for name, x, y in zip("u xw dtw dtb alogs ds".split(), torch.autograd.grad((out * g).sum(), leaves),
                          torch.autograd.grad((want * g).sum(), ref_leaves)):
        scale = max(1.0, y.abs().max().item())
        assert_close(x / scale, y / scale, *weight_tol(F32), f"d{name} vs published path")


def test_reference_backend_is_the_published_path():
    args = make_inputs(1, 8, 4, 5, 4, 2, seed=9)
    a = ops.cross_scan_selective_scan(*args, backend="reference")
    b = reference.cross_scan_selective_scan_ref(*args)
    assert torch.equal(a, b)


def test_half_precision_u_is_read_as_float32():
    u, *params = make_inputs(1, 16, 5, 7, 16, 4, seed=10)
    got = ops.cross_scan_selective_scan(u.to(torch.bfloat16), *params, backend="cpu")
    want = ops.cross_scan_selective_scan(u.to(torch.bfloat16).float(), *params, backend="cpu")
    assert got.dtype == F32 and torch.equal(got, want)


def test_backward_is_deterministic_across_thread_counts():
    args = make_inputs(2, 40, 9, 11, 16, 4, seed=11)
    g = torch.randn(2, 40, 9, 11, generator=torch.Generator().manual_seed(12))
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            leaves = [a.clone().requires_grad_(True) for a in args]
            out = ops.cross_scan_selective_scan(*leaves, backend="cpu")
            grads = torch.autograd.grad((out * g).sum(), leaves)
            results.append((out,) + grads)
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for x, y in zip(results[0], other):
            assert torch.equal(x, y)


@pytest.mark.filterwarnings("ignore:Input #.* is not a double precision")
def test_gradcheck_tiny():
    """Finite differences on a tiny case.  The kernels compute in float32 by contract (no
    float64 kernel exists), so the check runs in float32 with a step and tolerance suited to
    float32 finite differences; exactness is covered by the float64-reference tests above."""
    args = make_inputs(1, 2, 2, 3, 2, 1, seed=13)
    leaves = [a.clone().requires_grad_(True) for a in args]
    fn = lambda *t: ops.cross_scan_selective_scan(*t, backend="cpu")
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-2, atol=2e-2, rtol=2e-2, nondet_tol=0.0)


@settings(max_examples=20, deadline=None)
@given(Bn=st.integers(1, 2), D=st.integers(1, 20), P=st.integers(1, 9), Q=st.integers(1, 9),
       N=st.sampled_from([1, 2, 4, 8, 16]), R=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_property_random_small_shapes(Bn, D, P, Q, N, R, seed):
    check_against_float64(make_inputs(Bn, D, P, Q, N, R, seed=seed), "cpu", with_grad=(seed % 2 == 0), seed=seed)


def test_opcheck():
    args = make_inputs(2, 5, 3, 4, 4, 2, seed=14)
    torch.library.opcheck(torch.ops.hands3c.cross_scan_fwd.default, tuple(a.requires_grad_(True) for a in args))


# ---- bad input: clear errors naming the argument ----------------------------------------

def test_errors_name_the_argument():
    u, xw, dtw, dtb, alogs, ds = make_inputs(1, 4, 3, 3, 4, 2)
    f = ops.cross_scan_selective_scan
    with pytest.raises(ValueError, match="u must have 4 dimensions"):
        f(u[0], xw, dtw, dtb, alogs, ds)
    with pytest.raises(ValueError, match="x_proj_weight must have shape"):
        f(u, xw[:, :-1], dtw, dtb, alogs, ds)
    with pytest.raises(ValueError, match="dt_projs_weight"):
        f(u, xw, dtw[:, :3], dtb, alogs, ds)
    with pytest.raises(ValueError, match="dt_projs_bias must have shape"):
        f(u, xw, dtw, dtb[:, :3], alogs, ds)
    with pytest.raises(ValueError, match="A_logs must have shape"):
        f(u, xw, dtw, dtb, alogs[:5], ds)
    with pytest.raises(ValueError, match="Ds must have shape"):
        f(u, xw, dtw, dtb, alogs, ds[:5])
    with pytest.raises(TypeError, match="u must have dtype"):
        f(u.double(), xw, dtw, dtb, alogs, ds)
    with pytest.raises(TypeError, match="A_logs must have dtype"):
        f(u, xw, dtw, dtb, alogs.half(), ds)
    with pytest.raises(TypeError, match="Ds must be a torch.Tensor"):
        f(u, xw, dtw, dtb, alogs, [1.0])
    with pytest.raises(ValueError, match="one device"):
        f(u, xw.to("meta"), dtw, dtb, alogs, ds)
    big_n = make_inputs(1, 4, 3, 3, 65, 2)
    with pytest.raises(ValueError, match="N .* must be in 1..64"):
        f(*big_n)
    with pytest.raises(ValueError, match="backend must be one of"):
        f(u, xw, dtw, dtb, alogs, ds, backend="fastest")
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        f(u, xw, dtw, dtb, alogs, ds, backend="cuda")


@requires_gpu
def test_auto_backend_on_gpu_matches_cpu():
    args = make_inputs(2, 64, 16, 16, 16, 4, seed=15)
    cpu = ops.cross_scan_selective_scan(*args, backend="cpu")
    gpu = ops.cross_scan_selective_scan(*[a.cuda() for a in args])
    assert_close(gpu.cpu(), cpu, *out_tol(F32), "auto on cuda vs cpu")


# ---- Triton (backend="triton") --------------------------------------------------------------------

@pytest.mark.parametrize("device", devices_for_test())
@pytest.mark.parametrize("chunk_tiles", [0, 1], ids=["one_launch_4dirs", "chunked_2families"])
@pytest.mark.parametrize("direction", [0, 1, 2, 3])
def test_triton_each_direction_alone(device, direction, chunk_tiles):
    """Only direction k has non-zero projections: a wrong traversal cannot hide in the sum.
    Both accumulation modes: one chunk (one launch, four directions in sequence) and
    several chunks (one launch per family)."""
    shape = (1, 3, 2, 3) if device == "cpu" else (2, 32, 12, 20)
    args = tc.cs_inputs(device, *shape, 4, 2, "contig", seed=10 + direction, only_direction=direction)
    tc.cs_check(device, args, dict(tile=4, chunk_tiles=chunk_tiles, block_d=4, bwd_sub=1))


@pytest.mark.parametrize("device", devices_for_test())
def test_triton_backward_is_deterministic(device):
    shape = (1, 5, 3, 4) if device == "cpu" else (2, 64, 16, 16)
    args = tc.cs_inputs(device, *shape, 4, 2, "contig", seed=7)
    runs = []
    for _ in range(2):
        with tc.plan(device, dict(tile=4, chunk_tiles=1, block_d=2, bwd_sub=2)):
            y = cross_scan_selective_scan(*args, backend="triton")
            runs.append((y,) + torch.autograd.grad(y.square().sum(), args))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_triton_matches_cpu_backend():
    args = tc.cs_inputs("cpu", 2, 3, 3, 5, 4, 2, "perm", seed=4)
    gy = torch.randn(tuple(args[0].shape), generator=torch.Generator().manual_seed(2))
    tc.matches_cpu(cross_scan_selective_scan, args, gy, du_tol(torch.float32),
                   dict(tile=4, chunk_tiles=2, block_d=2))


@pytest.mark.parametrize("device", devices_for_test())
@pytest.mark.parametrize("chunk_tiles", [1, 0])
def test_triton_inference_forward_skips_checkpoints(device, chunk_tiles):
    """Under no_grad no checkpoint is stored (need_ck=False) and the output is unchanged,
    with several chunks (checkpoint buffer used as scratch) and with one."""
    cs = tc.cs_inputs(device, 1, 3, 2, 5, 4, 2, "contig", seed=9)
    cfg = dict(tile=4, chunk_tiles=chunk_tiles, block_d=4)
    with tc.plan(device, cfg):
        y = cross_scan_selective_scan(*cs, backend="triton")
        with torch.no_grad():
            y_i = cross_scan_selective_scan(*cs, backend="triton")
            ck_cs = torch.ops.hands3c.cross_scan_fwd_triton(*cs, 4, chunk_tiles, 4, False)[2]
    assert torch.equal(y, y_i)
    assert ck_cs.numel() == 0


@pytest.mark.parametrize("device", devices_for_test())
@pytest.mark.parametrize("name", ["fwd", "bwd"])
def test_triton_opcheck(device, name):
    """torch.library.opcheck of hands3c::cross_scan_{fwd,bwd}_triton."""
    cs = tc.cs_inputs(device, 1, 2, 2, 3, 2, 1, "contig", seed=12)
    tc.opcheck("cross_scan", name, (*cs, 4, 1, 2, True),
               lambda o: (torch.randn_like(o[0]), *tc.detached(cs), o[1], o[2], 4, 1, 2, 1))


# ---- the CUDA backend (backend="cuda") ------------------------------------------------------------

@pytest.mark.parametrize("target", [pytest.param(t, marks=cp.GPU) for t in (None, 1, 10**6)])
def test_cuda_backward_deterministic(cuda_env, target):
    """No float atomics: repeated runs give identical bits, whatever the thread target."""
    cp.set_target(cuda_env, target)
    case = cp.CSCase(2, 96, 24, 20, 16, 4)
    inp = cp.cs_inputs(case)
    a = cp.cs_run_api(case, inp)
    b = cp.cs_run_api(case, inp)
    assert torch.equal(a[0], b[0])
    for k in cp.CS_GRAD_NAMES:
        assert torch.equal(a[1][k], b[1][k]), k


def test_cuda_backend_rejects_cpu_tensors():
    """backend='cuda' with CPU tensors raises a ValueError naming the device, before any kernel."""
    cs = cp.cs_inputs(cp.CSCase(1, 3, 4, 5, 4, 2))
    with pytest.raises(ValueError, match="CUDA tensors, got tensors on cpu"):
        cross_scan_selective_scan(*(cs[k] for k in cp.CS_GRAD_NAMES), backend="cuda")


def test_cuda_backend_rejects_large_state():
    """N > 64 is refused by the Python validation before the backend is even chosen."""
    cs = cp.cs_inputs(cp.CSCase(1, 3, 4, 5, 65, 2))
    with pytest.raises(ValueError, match="must be in 1..64"):
        cross_scan_selective_scan(*(cs[k] for k in cp.CS_GRAD_NAMES), backend="cuda")


def test_cuda_backend_rejects_mixed_devices():
    """Tensors on two devices are refused by the Python validation (meta stands in for a GPU)."""
    cs = cp.cs_inputs(cp.CSCase(1, 3, 4, 5, 4, 2))
    args = [cs[k] for k in cp.CS_GRAD_NAMES]
    args[4] = args[4].to("meta")
    with pytest.raises(ValueError, match="one device"):
        cross_scan_selective_scan(*args, backend="cuda")


# ---- out_order: y written in a requested memory layout (issue 14, the merge's row layout) -------
# Kept apart from the case table above.  The S3C block asks for SPATIAL / CHANNEL, so that both
# branch outputs seen as (B, H, W, d_inner) are contiguous; the other orders check the index
# arithmetic for every stride pattern the kernels' pack/unpack paths distinguish.

SPATIAL = (0, 2, 3, 1)   # y (B, D, P, Q) stored as (B, P, Q, D): channels fastest
CHANNEL = (0, 3, 1, 2)   # stored as (B, Q, D, P): plane rows (P) fastest
ORDERS = [SPATIAL, CHANNEL, (0, 1, 3, 2), (3, 2, 1, 0), (1, 0, 2, 3)]


def _laid_out(t, order):
    """A copy of t with its dimensions in memory in ``order`` (outermost first)."""
    out = torch.empty([t.shape[o] for o in order], dtype=t.dtype, device=t.device)
    out.copy_(t.permute(order))
    inverse = [order.index(i) for i in range(4)]
    return out.permute(inverse)


def _run_cpu(args, order, dout):
    leaves = [a.detach().clone().requires_grad_(True) for a in args]
    y = ops.cross_scan_selective_scan(*leaves, out_order=order, backend="cpu")
    return y, torch.autograd.grad(y, leaves, dout)


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "".join(map(str, o)))
@pytest.mark.parametrize("u_layout", ["contig", "channel"])
def test_out_order_cpu_is_bitwise_the_default_layout(order, u_layout):
    """Every layout: y has the requested strides and the default layout's values bit for bit,
    and a backward fed the incoming gradient in y's layout (as autograd hands it over behind
    the block's merge) returns the default's gradients bit for bit.  Odd shapes: B = 3,
    P != Q, D = 19 (a partial 16-channel block)."""
    args = make_inputs(3, 19, 5, 7, 4, 3, seed=31)
    if u_layout == "channel":  # the block's channel-branch view: storage (B, P, Q, D)
        args[0] = args[0].permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    g = torch.randn(args[0].shape, generator=torch.Generator().manual_seed(5))
    y0, g0 = _run_cpu(args, None, g)
    y, grads = _run_cpu(args, order, _laid_out(g, order))
    assert y.shape == y0.shape and y.dtype == F32
    assert y.permute(order).is_contiguous()
    assert torch.equal(y, y0)
    for name, a, b in zip(["u", "x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds"], grads, g0):
        assert torch.equal(a, b), f"d{name} differs between out_order {order} and the default layout"


@pytest.mark.parametrize("order", [SPATIAL, CHANNEL], ids=["spatial", "channel"])
def test_out_order_cpu_matches_float64_reference(order):
    """The block's two orders, with autograd end to end (the incoming gradient of y.permute(order)
    is contiguous there, i.e. in y's layout) against the float64 reference."""
    args = make_inputs(3, 21, 6, 5, 16, 4, seed=32)
    leaves = [a.detach().clone().requires_grad_(True) for a in args]
    y = ops.cross_scan_selective_scan(*leaves, out_order=order, backend="cpu")
    rows = y.permute(order)
    assert rows.is_contiguous()
    ref_leaves = [a.detach().double().requires_grad_(True) for a in args]
    want = ref64(ref_leaves)
    assert_close(y, want, *out_tol(F32), "y")
    g = torch.randn(rows.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    grads = torch.autograd.grad((rows * g.float()).sum(), leaves)
    want_grads = torch.autograd.grad((want.permute(order) * g).sum(), ref_leaves)
    tols = [du_tol(F32), weight_tol(F32), weight_tol(F32), weight_tol(F32), dA_tol(F32), weight_tol(F32)]
    for got, exp, (rt, at) in zip(grads, want_grads, tols):
        scale = max(1.0, exp.abs().max().item())
        assert_close(got / scale, exp / scale, rt, at, "grad")


def test_out_order_reference_backend_copies_into_the_layout():
    args = make_inputs(1, 3, 2, 3, 2, 1, seed=33)
    y0 = ops.cross_scan_selective_scan(*args, backend="reference")
    y = ops.cross_scan_selective_scan(*args, out_order=CHANNEL, backend="reference")
    assert y.permute(CHANNEL).is_contiguous() and torch.equal(y, y0)


def test_out_order_identity_is_the_default():
    args = make_inputs(2, 5, 3, 4, 4, 2, seed=34)
    y0 = ops.cross_scan_selective_scan(*args, backend="cpu")
    y = ops.cross_scan_selective_scan(*args, out_order=(0, 1, 2, 3), backend="cpu")
    raw = torch.ops.hands3c.cross_scan_fwd(*args, [0, 1, 2, 3])[0]
    assert y.is_contiguous() and raw.is_contiguous()
    assert torch.equal(y, y0) and torch.equal(raw, y0)


@pytest.mark.parametrize("order", [SPATIAL, CHANNEL], ids=["spatial", "channel"])
def test_out_order_opcheck(order):
    args = make_inputs(2, 5, 3, 4, 4, 2, seed=35)
    torch.library.opcheck(torch.ops.hands3c.cross_scan_fwd.default,
                          tuple(a.requires_grad_(True) for a in args) + (list(order),))


def test_backward_op_reads_dout_through_its_strides():
    """The raw backward with a dout in each layout, an expanded (stride 0) one included, equals
    the backward on the same values made contiguous."""
    args = make_inputs(2, 17, 3, 5, 4, 2, seed=36)
    y, dbl, ck = torch.ops.hands3c.cross_scan_fwd(*args)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(7))
    want = torch.ops.hands3c.cross_scan_bwd(g, *args, dbl, ck)
    for dout in [_laid_out(g, o) for o in ORDERS] + [g[:, :, :1, :].expand(y.shape)]:
        got = torch.ops.hands3c.cross_scan_bwd(dout, *args, dbl, ck)
        ref = want if dout.data_ptr() != g[:, :, :1, :].data_ptr() else \
            torch.ops.hands3c.cross_scan_bwd(dout.contiguous(), *args, dbl, ck)
        for a, b in zip(got, ref):
            assert torch.equal(a, b)


BAD_ORDERS = [([0, 1, 2], ValueError), ([0, 1, 1, 2], ValueError), ([0, 1, 2, 4], ValueError),
              ([0, 1, 2, 3, 4], ValueError), ([-1, 0, 1, 2], ValueError)]


@pytest.mark.parametrize("bad,exc", BAD_ORDERS, ids=lambda v: str(v))
def test_out_order_errors_name_the_argument(bad, exc):
    """The wrapper, the registered CPU operator and its fake kernel (meta tensors) refuse it alike."""
    args = make_inputs(1, 4, 3, 3, 4, 2)
    with pytest.raises(exc, match="out_order must be a permutation of"):
        ops.cross_scan_selective_scan(*args, out_order=bad)
    with pytest.raises(exc, match="hands3c::cross_scan_fwd: out_order must be a permutation of"):
        torch.ops.hands3c.cross_scan_fwd(*args, bad)
    with pytest.raises(exc, match="out_order must be a permutation of"):
        torch.ops.hands3c.cross_scan_fwd(*[a.to("meta") for a in args], bad)


def test_out_order_wrapper_type_errors():
    args = make_inputs(1, 4, 3, 3, 4, 2)
    for bad in ("0231", 3, (0.0, 2, 3, 1), (True, 2, 3, 1)):
        with pytest.raises(TypeError, match="out_order must be"):
            ops.cross_scan_selective_scan(*args, out_order=bad)


@pytest.mark.parametrize("device", devices_for_test())
@pytest.mark.parametrize("chunk_tiles", [0, 1], ids=["one_launch_4dirs", "chunked_2families"])
@pytest.mark.parametrize("order", [SPATIAL, CHANNEL], ids=["spatial", "channel"])
def test_out_order_triton(device, order, chunk_tiles):
    """Triton stores y through its strides (both accumulation modes: the chunked one also keeps
    its family-0 partial in y's layout): y in the requested layout, equal to the CPU kernels'
    default-layout y within tolerance, and the gradients of a backward fed y's layout too."""
    shape = (3, 5, 2, 3) if device == "cpu" else (3, 37, 12, 20)
    args = tc.cs_inputs(device, *shape, 4, 2, "contig", seed=40)
    gy = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(device)
    with tc.plan(device, dict(tile=4, chunk_tiles=chunk_tiles, block_d=4, bwd_sub=1)):
        y = cross_scan_selective_scan(*args, out_order=order, backend="triton")
        grads = torch.autograd.grad(y, args, _laid_out(gy, order))
    assert y.permute(order).is_contiguous()
    cpu_args = [a.detach().cpu().requires_grad_(True) for a in args]
    y_cpu = cross_scan_selective_scan(*cpu_args, backend="cpu")
    g_cpu = torch.autograd.grad(y_cpu, cpu_args, gy.cpu())
    assert_close(y.cpu(), y_cpu, *out_tol(F32), "y vs cpu")
    for got, want in zip(grads, g_cpu):
        scale = max(1.0, want.abs().max().item())
        assert_close(got.cpu() / scale, want / scale, *du_tol(F32), "grad vs cpu")


@pytest.mark.parametrize("device", devices_for_test())
def test_out_order_triton_opcheck_and_errors(device):
    cs = tc.cs_inputs(device, 1, 2, 2, 3, 2, 1, "contig", seed=12)
    tc.opcheck("cross_scan", "fwd", (*cs, 4, 1, 2, True, list(CHANNEL)),
               lambda o: (torch.randn_like(o[0]), *tc.detached(cs), o[1], o[2], 4, 1, 2, 1))
    with pytest.raises(ValueError, match="hands3c::cross_scan_fwd_triton: out_order must be a permutation of"):
        torch.ops.hands3c.cross_scan_fwd_triton(*tc.detached(cs), 4, 1, 2, False, [0, 2, 2, 1])


@requires_gpu
@pytest.mark.parametrize("order", [SPATIAL, CHANNEL], ids=["spatial", "channel"])
def test_out_order_cuda(order):
    """The CUDA kernels write y contiguously and copy it into the layout (the binding)."""
    args = make_inputs(3, 37, 12, 20, 16, 4, seed=41)
    gy = torch.randn(args[0].shape, generator=torch.Generator().manual_seed(4))
    cuda_args = [a.cuda().requires_grad_(True) for a in args]
    y = ops.cross_scan_selective_scan(*cuda_args, out_order=order, backend="cuda")
    grads = torch.autograd.grad(y, cuda_args, _laid_out(gy.cuda(), order))
    y0 = ops.cross_scan_selective_scan(*cuda_args, backend="cuda")
    g0 = torch.autograd.grad(y0, cuda_args, gy.cuda())
    assert y.permute(order).is_contiguous() and torch.equal(y, y0)
    for a, b in zip(grads, g0):
        assert torch.equal(a, b)
