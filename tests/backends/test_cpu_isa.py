"""The CPU scan engines' instruction-set builds (csrc/cpu/isa.h): HANDS3C_CPU_ISA picks the build
of both engines, every build this CPU runs gives the same numbers, and a bad value is refused."""
import pytest
import torch

import handS3C  # noqa: F401  (registers the hands3c operators)
from handS3C import ops

import cuda_parity as cp

OPERATORS = {
    # the raw CPU operators, forward and backward, on cases with groups, D, z, bias and softplus
    "selective_scan": lambda: cp.ss_run_ops(torch.ops.hands3c, SS_CASE, cp.ss_inputs(SS_CASE)),
    "cross_scan": lambda: cp.cs_run_ops(torch.ops.hands3c, CS_CASE, cp.cs_inputs(CS_CASE)),
}
SS_CASE = cp.SSCase(2, 40, 130, 16, groups_b=2, groups_c=2, seed=11)
CS_CASE = cp.CSCase(2, 19, 9, 11, 16, 4, seed=13)


def _builds():
    """The builds this CPU can run, best first (the values HANDS3C_CPU_ISA accepts here)."""
    best = torch.ops.hands3c.cpu_isa()
    return {"avx512": ["avx512", "avx2", "baseline"], "avx2": ["avx2", "baseline"]}.get(best, ["baseline"])


@pytest.mark.parametrize("op", list(OPERATORS))
def test_every_instruction_set_build_agrees(monkeypatch, op):
    results = {}
    for name in _builds():
        monkeypatch.setenv("HANDS3C_CPU_ISA", name)
        assert torch.ops.hands3c.cpu_isa() == name
        out, _, _, grads = OPERATORS[op]()
        results[name] = [out] + list(grads.values())
    best, *others = _builds()
    for name in others:
        for x, y in zip(results[best], results[name]):
            scale = max(1.0, y.abs().max().item())
            assert torch.allclose(x / scale, y / scale, rtol=1e-5, atol=1e-5), name


def test_isa_override_rejects_unknown_names(monkeypatch):
    inp = cp.ss_inputs(cp.SSCase(1, 2, 3, 1))
    monkeypatch.setenv("HANDS3C_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match="HANDS3C_CPU_ISA"):
        ops.selective_scan_fn(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"], backend="cpu")
    with pytest.raises(ValueError, match="HANDS3C_CPU_ISA"):
        torch.ops.hands3c.cpu_isa()


@pytest.mark.parametrize("order", [(0, 2, 3, 1), (0, 3, 1, 2)], ids=["spatial_rows", "channel_rows"])
def test_every_build_writes_and_reads_the_block_layouts(monkeypatch, order):
    """Each instruction-set build writes y in the S3C block's out_order layouts with the values
    of its contiguous y, and reads a dout in that layout like a contiguous one (bitwise: the
    layout code only moves floats)."""
    inp = cp.cs_inputs(CS_CASE)
    args = [inp[k] for k in cp.CS_GRAD_NAMES]
    for name in _builds():
        monkeypatch.setenv("HANDS3C_CPU_ISA", name)
        y0, dbl, ck = torch.ops.hands3c.cross_scan_fwd(*args)
        y = torch.ops.hands3c.cross_scan_fwd(*args, list(order))[0]
        assert y.permute(order).is_contiguous() and torch.equal(y, y0), name
        dout = torch.empty_like(y).copy_(inp["dout"])
        want = torch.ops.hands3c.cross_scan_bwd(inp["dout"], *args, dbl, ck)
        for a, b in zip(torch.ops.hands3c.cross_scan_bwd(dout, *args, dbl, ck), want):
            assert torch.equal(a, b), name
