"""The benchmark helpers: what they measure and what they refuse (timings themselves are never
asserted: performance figures come from `make bench`, not from tests)."""
import argparse
import os
import subprocess
import sys

import pytest
import torch

from testenv import HAS_GPU, REPO_ROOT

if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from benchmarks import common, suites  # noqa: E402


def test_peak_memory_sees_a_large_temporary_and_calls_once():
    calls = []

    def fn():
        calls.append(1)
        t = torch.ones(16 * 2**20)  # 64 MiB, freed before the call returns
        return float(t[0])

    mb = common.peak_memory_mb(fn)
    assert calls == [1]
    assert mb is not None, "Linux's /proc/self/clear_refs is needed to reset the resident-set peak"
    assert 60 <= mb < 1024, mb


def test_time_fn_runs_warmup_then_timed_runs():
    calls = []
    runs = common.time_fn(lambda: calls.append(1), runs=4, warmup=2)
    assert len(calls) == 6 and len(runs) == 4 and all(r >= 0 for r in runs)


def _args(runs=3, warmup=1):
    return argparse.Namespace(runs=runs, warmup=warmup)


def test_measure_times_slow_calls_once(monkeypatch):
    calls = []
    monkeypatch.setattr(suites, "SINGLE_CALL_S", 0.0)
    (m,) = suites._measure_group("case", {"reference": (lambda: calls.append(1), "note")}, _args(), "cpu")
    assert len(calls) == 1 and m.runs == [m.median_s] and m.note == "note; one run"


def test_measure_fast_calls_warmup_and_runs():
    calls = []
    (m,) = suites._measure_group("case", {"cpu": (lambda: calls.append(1), "")}, _args(runs=5, warmup=2), "cpu")
    assert len(calls) == 1 + 2 + 5 and len(m.runs) == 5 and m.speedup is None


def test_measure_interleaves_and_takes_the_median_of_per_round_ratios(monkeypatch):
    """The competitors alternate (A B A B ...), and the speed-up is the median of each round's
    own ratio: a round slowed for both sides does not move it, unlike a ratio of medians."""
    order = []
    now = [0.0]
    # the first timed round is 7x slower for both sides (a busy neighbour)
    slow = {1: 7.0}

    def make(name, cost):
        def fn():
            order.append(name)
            rnd = sum(1 for o in order if o == name)
            now[0] += cost * slow.get(rnd - 2, 1.0)  # rnd 1: the memory call, 2: warm-up
        return fn
    monkeypatch.setattr(common.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(suites.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(common, "peak_memory_mb", lambda fn, device=None: fn())
    monkeypatch.setattr(suites, "peak_memory_mb", lambda fn, device=None: fn())
    rows = suites._measure_group("case", {"reference": (make("ref", 0.01), ""), "cpu": (make("cpu", 0.001), "")},
                                 _args(runs=3, warmup=1), "cpu")
    assert order == ["ref", "cpu"] + ["ref", "cpu"] * 4   # memory calls, then warm-up + 3 interleaved rounds
    ref, fused = rows
    assert ref.backend == "reference" and ref.speedup is None
    assert fused.speedup == pytest.approx(10.0)
    assert ref.runs == pytest.approx([0.07, 0.01, 0.01]) and fused.runs == pytest.approx([0.007, 0.001, 0.001])


def test_ratio_is_the_median_of_paired_ratios():
    assert common.ratio([10.0, 2.0, 30.0], [1.0, 1.0, 1.0]) == 10.0
    with pytest.raises(ValueError, match="equally long"):
        common.ratio([1.0], [1.0, 2.0])


def test_published_dt_bias_is_the_package_initialisation():
    """The benchmarks' inputs use handS3C's one dt-bias initialisation: softplus(bias) lies in
    the published [1e-3, 0.1] range (floored at 1e-4)."""
    from handS3C.modules import dt_bias_init

    _, _, dtb, _, _ = common.cross_scan_params(8, N=4, R=2, seed=5)
    g = torch.Generator().manual_seed(5)
    torch.rand(4, 2 * 4 + 2, 8, generator=g)
    torch.rand(4, 8, 2, generator=g)
    assert torch.equal(dtb, dt_bias_init(32, generator=g).reshape(4, 8))
    dt = torch.nn.functional.softplus(dtb)
    assert float(dt.min()) >= 1e-3 * (1 - 1e-5) and float(dt.max()) <= 0.1 * (1 + 1e-5)


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
    # the ceilings of the two issue-14 targets are part of the main job's output
    for key in ("cross-scan spatial B=1 D=512 32x32: cpu fwd share ceiling",
                "cross-scan channel B=1 D=32 512x32: cpu fwd share ceiling",
                "s3c merge B=1 32x32x512 fwd+bwd: ceiling"):
        assert key in res["extra"], sorted(res["extra"])
    # written atomically: no temporary file is left beside the results
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "speedups.png"]


# ---- the GPU benchmark script (benchmarks/bench_gpu.py) ----------------------------------------

def _bench(*flags):
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", REPO_ROOT)
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "benchmarks", "bench_gpu.py"), *flags],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_bench_gpu_interpreter_toy_runs_end_to_end():
    env_flag = dict(os.environ)
    r = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "benchmarks", "bench_gpu.py"), "--interpret-toy"],
                       cwd=REPO_ROOT, env={**env_flag, "TRITON_INTERPRET": "1"}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "toy" in r.stdout and "triton" in r.stdout and "fwd+bwd" in r.stdout, r.stdout


@pytest.mark.skipif(HAS_GPU, reason="checks the message printed when no GPU is present")
def test_bench_gpu_without_gpu_skips_cleanly():
    r = _bench()
    assert r.returncode == 0, r.stderr
    assert "GPU benchmark skipped: no CUDA device" in r.stdout
