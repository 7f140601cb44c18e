"""The compute-bound helpers behind the benchmark's kernel shares (benchmarks/bounds.py).

torch.ops.hands3c.state_update_peak_rate / backward_update_peak_rate / fma_peak_rate refuse a
non-positive step count with a ValueError naming the operator, return finite positive rates, and
state_update_vector_ops (the operations per state update the processor bound divides by) agrees
with the compiled inner loop of the build the kernels dispatch to, counted in its disassembly.
No timing is asserted (performance figures come from the benchmark).
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess

import pytest
import torch

import handS3C  # noqa: F401  (registers the operators)
import handS3C._C as _C
from benchmarks import bounds

OPS = torch.ops.hands3c
RATE_OPS = ["state_update_peak_rate", "backward_update_peak_rate", "fma_peak_rate"]


@pytest.mark.parametrize("name", RATE_OPS)
@pytest.mark.parametrize("steps", [0, -1, -(2 ** 40)])
def test_non_positive_steps_are_refused(name, steps):
    with pytest.raises(ValueError, match=rf"^hands3c::{name}: steps must be positive, got {steps}"):
        getattr(OPS, name)(steps)


@pytest.mark.parametrize("name", RATE_OPS)
def test_rates_are_finite_and_positive(name):
    rate = getattr(OPS, name)(1000)
    assert math.isfinite(rate) and rate > 0


def test_processor_bound_formula():
    ops = OPS.state_update_vector_ops()
    assert bounds.processor_bound(3.0e9, ops) == pytest.approx(3.0e9 * 16 / ops)


def test_shares_reject_bad_arguments():
    with pytest.raises(ValueError, match="rounds"):
        bounds.shares(lambda: None, 10, rounds=0)
    with pytest.raises(ValueError, match="updates"):
        bounds.shares(lambda: None, 0)
    with pytest.raises(ValueError, match="rounds"):
        bounds.backward_shares(lambda: None, 10, rounds=0)


def test_shares_report_the_medians_of_interleaved_rounds():
    calls = []
    s = bounds.shares(lambda: calls.append(1), 1000, rounds=3)
    assert len(calls) == 4  # one warm-up, then one per round
    assert s["ops"] == OPS.state_update_vector_ops() and s["isa"] == OPS.cpu_isa()
    assert s["processor"] == pytest.approx(s["fma"] * 16 / s["ops"])
    assert s["loop_share"] > 0 and s["processor_share"] > 0
    assert "of the loop bound" in bounds.describe(s) and "of the processor bound" in bounds.describe(s)
    b = bounds.backward_shares(lambda: None, 1000, rounds=2)
    assert b["loop"] > 0 and "backward's loop bound" in bounds.describe_backward(b)


# The vector instructions that take an issue slot of the FP/vector ALU ports: everything starting
# with "v" except moves (register copies are eliminated at rename, loads and stores use the
# load/store ports) and broadcasts from memory (a load).
def _alu_ops(instrs):
    return [i for i in instrs if i.startswith("v") and not i.startswith(("vmov", "vbroadcast"))]


def _inner_loop(lines):
    """The instructions of the innermost loop that builds 2^k with a shift by 23 (the exp2)."""
    addr = [int(a, 16) for a, _ in lines]
    for i, (_, ins) in enumerate(lines):
        if re.match(r"vpslld\s+\$0x17", ins):
            for j in range(i, min(i + 80, len(lines))):
                m = re.match(r"j\w+\s+([0-9a-f]+)", lines[j][1])
                if m and int(m.group(1), 16) < addr[i]:
                    start = addr.index(int(m.group(1), 16))
                    return [ins for _, ins in lines[start:j + 1]]
    return None


def _builds():
    best = OPS.cpu_isa()
    return {"avx512": ["avx512", "avx2"], "avx2": ["avx2"]}.get(best, [])


# Instructions per 16 lanes in each build: one zmm, two ymm.
WIDTH = {"avx512": 1, "avx2": 2}


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils' objdump to read the compiled loop")
@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_ops_per_update_matches_the_compiled_loop(monkeypatch, isa):
    if isa not in _builds():
        pytest.skip(f"this CPU does not run the {isa} build (best: {OPS.cpu_isa()})")
    monkeypatch.setenv("HANDS3C_CPU_ISA", isa)
    dis = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", _C.__file__], capture_output=True, text=True,
                         check=True).stdout
    # The forward's compute bound of that build (scan_step inlined); the function, not its @plt stub.
    m = re.search(rf"^[0-9a-f]+ <hands3c::cpu::xs_isa_{isa}::state_update_peak\(long\)::\{{lambda[^\n]*const>:\n(.*?)\n\n",
                  dis, re.S | re.M)
    assert m, "state_update_peak's loop body not found in the disassembly"
    lines = []
    for ln in m.group(1).splitlines():
        p = ln.split(":", 1)
        if len(p) == 2 and p[1].strip():
            lines.append((p[0].strip(), p[1].strip()))
    loop = _inner_loop(lines)
    assert loop is not None, "no inner loop with the exp2's shift found"
    alu = _alu_ops(loop)
    assert len(alu) == OPS.state_update_vector_ops() * WIDTH[isa], alu
    # polynomial 5, state update, output accumulation
    assert sum(i.startswith(("vfmadd", "vfnmadd")) for i in alu) == 7 * WIDTH[isa]
