"""The CUDA operators (backend="cuda") against float64 references and mamba-ssm.

GPU tests (marked ``requires_gpu``; they skip with a reason on CPU-only machines) run the public
functions with autograd at larger shapes than the CPU operator tests: odd lengths, non-square
planes, a plane of one row or column, batch 1, N in {1, 4, 16} plus the generic kernel, the
three input dtypes, the segmented (chunked) and per-direction decompositions, and the S3C
channel branch at its real length L = 16384.  Outputs are poisoned with NaN before the kernels
write them (HANDS3C_CUDA_POISON=1).  The validation tests at the end run everywhere.

The same kernels' source also runs on the CPU under emulation in test_cuda_emulated.py.
"""
import pytest
import torch

from conftest import HAS_GPU, requires_gpu
from handS3C import _ext, reference
from handS3C.ops import cross_scan_selective_scan, s3c_merge, selective_scan_fn

import cuda_parity as cp

needs_cuda_ext = pytest.mark.skipif(HAS_GPU and not _ext.HAS_CUDA_EXT,
                                    reason="the CUDA extension handS3C._C_cuda is not built")
gpu = [requires_gpu, needs_cuda_ext, pytest.mark.gpu]


@pytest.fixture
def cuda_env(monkeypatch):
    monkeypatch.setenv("HANDS3C_CUDA_POISON", "1")
    monkeypatch.delenv("HANDS3C_CUDA_TARGET_THREADS", raising=False)
    return monkeypatch


def _target(env, blocks):
    if blocks is not None:
        env.setenv("HANDS3C_CUDA_TARGET_THREADS", str(blocks))


SS_CASES = [
    cp.SSCase(2, 64, 1000, 16),
    cp.SSCase(1, 48, 65, 4, dtype=torch.float16),
    cp.SSCase(2, 128, 777, 16, dtype=torch.bfloat16, groups_b=2, groups_c=4),
    cp.SSCase(1, 32, 2048, 1, bc="3d", has_D=False, has_z=False, dlast=False),
    cp.SSCase(2, 40, 300, 8, bc="2d", softplus=False),
    cp.SSCase(1, 16, 16384, 16, target_threads=None),                   # long: chunked with a carry pass
    cp.SSCase(1, 64, 4096, 16, dtype=torch.float16, target_threads=1),  # one segment, one block per tile
    cp.SSCase(2, 24, 500, 64, bc="3d"),                                # generic kernel (N up to 64)
    cp.SSCase(1, 33, 129, 12, dtype=torch.bfloat16, bc_dtype=torch.bfloat16, groups_b=3, groups_c=1),
]


@pytest.mark.parametrize("case", [pytest.param(c, marks=gpu, id=c.id()) for c in SS_CASES])
def test_selective_scan_cuda(cuda_env, case):
    _target(cuda_env, case.target_threads)
    inp = cp.ss_inputs(case)
    got = cp.ss_run_api(case, inp, device="cuda")
    ref = cp.ss_reference(case, inp, device="cuda")
    cp.ss_compare(case, got, ref, tag=case.id())


@pytest.mark.parametrize("case", [pytest.param(c, marks=gpu, id=c.id()) for c in SS_CASES[:5]])
def test_selective_scan_cuda_vs_mamba(cuda_env, case):
    fn = reference.mamba_selective_scan_cuda_fn()
    if fn is None:
        pytest.skip("mamba-ssm's compiled selective_scan_fn (selective_scan_cuda) is not installed")
    if case.bc_dtype is not None or (case.bc == "4d" and case.groups_b != case.groups_c):
        pytest.skip("mamba-ssm needs B and C of one layout and dtype")
    inp = cp.ss_inputs(case)
    ours = cp.ss_run_api(case, inp, device="cuda")
    theirs = cp.ss_run_api(case, inp, device="cuda", backend="reference")  # mamba's CUDA kernel on CUDA
    cp.ss_compare(case, ours, theirs, tag="vs mamba " + case.id())


CS_CASES = [
    cp.CSCase(2, 64, 32, 32, 16, 4),                          # the spatial branch's plane
    cp.CSCase(1, 48, 7, 9, 4, 3),
    cp.CSCase(1, 32, 1, 300, 1, 2),                           # one row
    cp.CSCase(2, 16, 257, 1, 16, 4, target_threads=10**6),     # one column, segmented
    cp.CSCase(1, 32, 128, 32, 16, 16, layout="channel"),      # channel branch layout, L = 4096
    cp.CSCase(1, 28, 512, 28, 16, 16, layout="channel"),      # FreiHAND channel branch, L = 14336
    cp.CSCase(1, 32, 512, 32, 16, 16, layout="channel"),      # HO3D channel branch, L = 16384
    cp.CSCase(1, 96, 16, 16, 16, 6, dtype=torch.bfloat16, layout="transposed", target_threads=1),
    cp.CSCase(1, 20, 10, 13, 64, 2),                          # generic kernel
]


@pytest.mark.parametrize("case", [pytest.param(c, marks=gpu, id=c.id()) for c in CS_CASES])
def test_cross_scan_cuda(cuda_env, case):
    _target(cuda_env, case.target_threads)
    inp = cp.cs_inputs(case)
    got = cp.cs_run_api(case, inp, device="cuda")
    ref = cp.cs_reference(case, inp, device="cuda")
    cp.cs_compare(case, got, ref, tag=case.id())


@pytest.mark.parametrize("case", [pytest.param(c, marks=gpu, id=c.id()) for c in CS_CASES[:2]])
def test_cross_scan_cuda_vs_published_path(cuda_env, case):
    """Against the published composition with mamba-ssm's CUDA scan, when it is installed."""
    if reference.mamba_selective_scan_cuda_fn() is None:
        pytest.skip("mamba-ssm's compiled selective_scan_fn (selective_scan_cuda) is not installed")
    inp = cp.cs_inputs(case)
    out, _ = cp.cs_run_api(case, inp, device="cuda")
    args = [inp[k].cuda() for k in cp.CS_GRAD_NAMES]
    ref = reference.cross_scan_selective_scan_ref(args[0].float(), *args[1:])
    r, a = cp.TOL[torch.float32]
    cp.assert_close(out, ref.cpu(), r, a, "vs published path")


MERGE_CASES = [
    cp.MergeCase((2, 32, 32, 512), permuted=True),
    cp.MergeCase((3, 7, 100)),
    cp.MergeCase((1000, 64), zdtype=torch.bfloat16),
    cp.MergeCase((5, 2000), zdtype=torch.float16),
]


@pytest.mark.parametrize("case", [pytest.param(c, marks=gpu, id=c.id()) for c in MERGE_CASES])
def test_merge_cuda(cuda_env, case):
    inp = cp.merge_inputs(case)
    leaves = {k: cp._leaf(inp[k], "cuda") for k in cp.MERGE_GRAD_NAMES}
    out = s3c_merge(*(leaves[k] for k in cp.MERGE_GRAD_NAMES), backend="cuda")
    out.backward(inp["dout"].cuda())
    got = (out.detach().cpu(), {k: leaves[k].grad.cpu() for k in cp.MERGE_GRAD_NAMES})
    cp.merge_compare(case, got, cp.merge_reference(case, inp), tag=case.id())


@pytest.mark.parametrize("target", [pytest.param(t, marks=gpu) for t in (None, 1, 10**6)])
def test_cuda_backward_deterministic(cuda_env, target):
    """No float atomics: repeated runs give identical bits."""
    _target(cuda_env, target)
    case = cp.CSCase(2, 96, 24, 20, 16, 4)
    inp = cp.cs_inputs(case)
    a = cp.cs_run_api(case, inp)
    b = cp.cs_run_api(case, inp)
    assert torch.equal(a[0], b[0])
    for k in cp.CS_GRAD_NAMES:
        assert torch.equal(a[1][k], b[1][k]), k
    sc = cp.SSCase(2, 64, 700, 16, groups_b=1, groups_c=1)
    si = cp.ss_inputs(sc)
    x, y = cp.ss_run_api(sc, si), cp.ss_run_api(sc, si)
    for k in x[2]:
        assert torch.equal(x[2][k], y[2][k]), k


@pytest.mark.parametrize("dummy", [pytest.param(0, marks=gpu)])
def test_cuda_mixed_devices_rejected(dummy):
    case = cp.SSCase(1, 4, 16, 4)
    t = cp.ss_inputs(case)
    dev = {k: (None if v is None else v.cuda()) for k, v in t.items()}
    with pytest.raises(ValueError, match="one device"):
        selective_scan_fn(dev["u"], dev["delta"], t["A"], dev["B"], dev["C"], backend="cuda")
    # The operator itself (below the Python checks) names the offending tensor.
    with pytest.raises(RuntimeError, match="A is on cpu"):
        torch.ops.hands3c.selective_scan_fwd(dev["u"], dev["delta"], t["A"], dev["B"], dev["C"], None, None, None,
                                             True)


# ---- validation: runs on every machine -------------------------------------------------------

def test_cuda_backend_rejects_cpu_tensors():
    """backend='cuda' with CPU tensors raises a ValueError naming the device, before any kernel."""
    case = cp.SSCase(1, 4, 16, 4)
    t = cp.ss_inputs(case)
    with pytest.raises(ValueError, match="cuda.*cpu|CUDA tensors, got tensors on cpu"):
        selective_scan_fn(t["u"], t["delta"], t["A"], t["B"], t["C"], backend="cuda")
    cs = cp.cs_inputs(cp.CSCase(1, 3, 4, 5, 4, 2))
    with pytest.raises(ValueError, match="CUDA tensors, got tensors on cpu"):
        cross_scan_selective_scan(*(cs[k] for k in cp.CS_GRAD_NAMES), backend="cuda")
    m = cp.merge_inputs(cp.MergeCase((2, 8)))
    with pytest.raises(ValueError, match="CUDA tensors, got tensors on cpu"):
        s3c_merge(*(m[k] for k in cp.MERGE_GRAD_NAMES), backend="cuda")


def test_cuda_backend_rejects_large_state():
    """N > 64 is refused by the Python validation before the backend is even chosen."""
    case = cp.SSCase(1, 4, 16, 65, has_z=False)
    t = cp.ss_inputs(case)
    with pytest.raises(ValueError, match="N .* must be in 1..64"):
        selective_scan_fn(t["u"], t["delta"], t["A"], t["B"], t["C"], backend="cuda")
    cs = cp.cs_inputs(cp.CSCase(1, 3, 4, 5, 65, 2))
    with pytest.raises(ValueError, match="must be in 1..64"):
        cross_scan_selective_scan(*(cs[k] for k in cp.CS_GRAD_NAMES), backend="cuda")


def test_cuda_backend_rejects_mixed_devices():
    """Tensors on two devices are refused by the Python validation (meta stands in for a GPU)."""
    case = cp.SSCase(1, 4, 16, 4)
    t = cp.ss_inputs(case)
    with pytest.raises(ValueError, match="one device"):
        selective_scan_fn(t["u"], t["delta"], t["A"].to("meta"), t["B"], t["C"], backend="cuda")
    cs = cp.cs_inputs(cp.CSCase(1, 3, 4, 5, 4, 2))
    args = [cs[k] for k in cp.CS_GRAD_NAMES]
    args[4] = args[4].to("meta")
    with pytest.raises(ValueError, match="one device"):
        cross_scan_selective_scan(*args, backend="cuda")

