"""backend="cuda" across the operators: determinism of the backward (no float atomics) on a GPU,
and the refusals (CPU tensors, N > 64, mixed devices) that run on every machine.
"""
import pytest
import torch

from handS3C.ops import cross_scan_selective_scan, s3c_merge, selective_scan_fn

import cuda_parity as cp

@pytest.mark.parametrize("target", [pytest.param(t, marks=cp.GPU) for t in (None, 1, 10**6)])
def test_cuda_backward_deterministic(cuda_env, target):
    """No float atomics: repeated runs give identical bits."""
    cp.set_target(cuda_env, target)
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


@pytest.mark.parametrize("dummy", [pytest.param(0, marks=cp.GPU)])
def test_cuda_mixed_devices_rejected(dummy):
    case = cp.SSCase(1, 4, 16, 4)
    t = cp.ss_inputs(case)
    dev = {k: (None if v is None else v.cuda()) for k, v in t.items()}
    with pytest.raises(ValueError, match="one device"):
        selective_scan_fn(dev["u"], dev["delta"], t["A"], dev["B"], dev["C"], backend="cuda")
    # The operator itself (below the Python checks) names the offending tensor.
    with pytest.raises(ValueError, match="A is on cpu"):
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
