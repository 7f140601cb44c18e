"""The benchmark helpers: what they measure and what they refuse (timings themselves are never
asserted: performance figures come from `make bench`, not from tests)."""
import argparse
import sys

import pytest
import torch

from conftest import REPO_ROOT

if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from benchmarks import suites, timing  # noqa: E402


def test_peak_memory_sees_a_large_temporary_and_calls_once():
    calls = []

    def fn():
        calls.append(1)
        t = torch.ones(16 * 2**20)  # 64 MiB, freed before the call returns
        return float(t[0])

    mb = timing.peak_memory_mb(fn)
    assert calls == [1]
    assert mb is not None, "Linux's /proc/self/clear_refs is needed to reset the resident-set peak"
    assert 60 <= mb < 1024, mb


def test_time_fn_runs_warmup_then_timed_runs():
    calls = []
    runs = timing.time_fn(lambda: calls.append(1), runs=4, warmup=2)
    assert len(calls) == 6 and len(runs) == 4 and all(r >= 0 for r in runs)


def _args(runs=3, warmup=1):
    return argparse.Namespace(runs=runs, warmup=warmup)


def test_measure_times_slow_calls_once(monkeypatch):
    calls = []
    monkeypatch.setattr(suites, "SINGLE_CALL_S", 0.0)
    m = suites._measure("case", "reference", lambda: calls.append(1), _args(), "cpu", "note")
    assert len(calls) == 1 and m.runs == [m.median_s] and m.note == "note; one run"


def test_measure_fast_calls_warmup_and_runs():
    calls = []
    m = suites._measure("case", "cpu", lambda: calls.append(1), _args(runs=5, warmup=2), "cpu")
    assert len(calls) == 1 + 2 + 5 and len(m.runs) == 5


def test_check_refuses_a_wrong_backend():
    want = torch.randn(4, 5)
    suites._check("case", "cpu", want + 1e-5, want)  # within SPEC §4 float32
    with pytest.raises(RuntimeError, match="refusing to benchmark a wrong kernel"):
        suites._check("case", "cpu", want + 0.1, want)


def test_main_job_runs_end_to_end(tmp_path):
    """`python -m benchmarks` (the README's first command runs it) at the smallest settings: every
    suite checks the fused backend against the reference, then times it; the JSON and the chart
    are written."""
    import json
    import subprocess

    out = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--suites", "ops,block,model", "--batch", "1",
                        "--model-batches", "1", "--train-batch", "1", "--input-size", "224", "--runs", "1",
                        "--warmup", "0", "--no-progress", "--out", str(out)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Warning" not in r.stderr, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    timed = {(row["name"], row["backend"]) for row in res["rows"] if row["median_s"] == row["median_s"]}
    for name in ("cross-scan spatial B=1 D=512 32x32 fwd", "cross-scan channel B=1 D=32 512x32 fwd",
                 "S3C block B=1 256x28x28 fwd", "HandS3C inference 224px B=1", "HandS3C training step 224px B=1"):
        assert (name, "cpu") in timed, (name, sorted(timed))
    assert ("HandS3C inference 224px B=1", "reference") in timed
    assert (out / "speedups.png").stat().st_size > 0
    assert "training step [cpu] vs reference forward alone" in res["extra"]
