"""benchmarks/train_bench.py's configuration table: the training step in float32 / bf16 autocast
x contiguous / channels_last, timed interleaved through the trainer's own step function."""
import pytest
import torch

from benchmarks import train_bench
from benchmarks.train_bench import STEP_CONFIGS, TODAY_S, compare_outputs, run_step_configs, step_config_rows


def test_compare_outputs_scores_each_output_against_its_bound():
    g = torch.Generator().manual_seed(0)
    want = {k: torch.randn(3, 5, generator=g) + 2 for k in train_bench.OUTPUT_KEYS}
    got = {k: v.clone() for k, v in want.items()}
    got["verts"][1, 2] += 0.1                      # bound there: 5e-2 + 3e-2 * |want|
    res = compare_outputs(got, want, 3e-2, 5e-2)
    bound = 5e-2 + 3e-2 * abs(float(want["verts"][1, 2]))
    assert res["verts"]["worst_over_bound"] == pytest.approx(0.1 / bound, rel=1e-5)
    assert res["verts"]["max_abs"] == pytest.approx(0.1, rel=1e-5)
    assert res["verts"]["rel_l2"] > 0
    assert res["joints3d"] == {"max_abs": 0.0, "worst_over_bound": 0.0, "rel_l2": 0.0}


def test_rows_give_interleaved_ratios_the_default_and_todays_figure(monkeypatch):
    monkeypatch.setattr(train_bench, "default_config_name", lambda device_type="cpu": "fp32 channels_last")
    base = [2.0, 4.0, 3.0]
    runs = {"fp32 contiguous": {"step_s": base, "loss": [9.0, 8.0, 7.0, 6.0]},
            "fp32 channels_last": {"step_s": [1.0, 4.0, 2.0], "loss": [9.0, 8.0, 7.0, 6.0]},
            "bf16 channels_last": {"step_s": [1.0, 1.0, 1.5], "cpu_s": [2.0, 2.0, 2.0], "loss": [9.5, 8.5, 7.5, 6.5]}}
    runs["fp32 contiguous"]["cpu_s"] = [4.0, 4.0, 5.0]
    runs["fp32 channels_last"]["cpu_s"] = [2.0, 4.0, 2.5]
    acc = {"fp32 channels_last": {"verts": {"max_abs": 1e-7, "worst_over_bound": 1e-4, "rel_l2": 1e-6}},
           "bf16 channels_last": {"pose": {"max_abs": 0.12, "worst_over_bound": 1.95, "rel_l2": 0.02}}}
    rows, extra = step_config_rows({"format": "ho3d", "accuracy": acc, "runs": runs}, 4, 256)
    by = {r.backend: r for r in rows}
    assert by["fp32 contiguous"].speedup is None and by["fp32 contiguous"].median_s == 3.0
    # per-round ratios 2, 1, 1.5 -> median 1.5
    assert by["fp32 channels_last"].speedup == pytest.approx(1.5)
    # per-round ratios 2, 4, 2 -> median 2; the ratio of the medians would be 3 / 1 = 3
    assert by["bf16 channels_last"].speedup == pytest.approx(2.0)
    assert "the default" in by["fp32 channels_last"].note and "the default" not in by["bf16 channels_last"].note
    assert "OUTSIDE tolerance: pose 1.950x its bound" in by["bf16 channels_last"].note
    line = extra["train step 256px B=4 (pre-loaded): default (fp32 channels_last)"]
    assert line.startswith("2000 ms, 1.50x fp32 contiguous")
    assert line.endswith("CPU-time ratio 2.00x fp32 contiguous")          # per-round 2, 1, 2
    assert "CPU 2.0 s, CPU-time ratio 2.00x" in by["bf16 channels_last"].note   # 2, 2, 2.5
    assert f"{TODAY_S / 2.0:.2f}x RESULTS.md's {TODAY_S * 1e3:.0f} ms" in line
    assert extra["train step 256px B=4 (pre-loaded): loss per step [bf16 channels_last]"] == "9.5 8.5 7.5 6.5"


def test_default_config_follows_the_trainer_defaults():
    assert train_bench.default_config_name("cpu") == "fp32 channels_last"
    assert train_bench.default_config_name("cuda") == "fp32 contiguous"
    assert list(STEP_CONFIGS)[0] == "fp32 contiguous"      # the baseline of every ratio


def test_unknown_configuration_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"configs must be among .*got \['fp64 nhwc'\]"):
        run_step_configs(torch.device("cpu"), configs=["fp64 nhwc"])


def test_small_run_times_each_configuration_interleaved(monkeypatch):
    """224 px, batch 1, two rounds: the baseline is added, every configuration steps on every
    batch in turn, the channels_last outputs pass float32's tolerance and so does its first loss."""
    order = []
    from handS3C.training import Trainer
    step = Trainer._train_step

    def spy(self, batch, k, epoch, i):
        order.append((self.cfg.memory_format, k))
        return step(self, batch, k, epoch, i)
    monkeypatch.setattr(Trainer, "_train_step", spy)
    res = run_step_configs(torch.device("cpu"), batch=1, input_size=224, rounds=2, warmup=0,
                           configs=["fp32 channels_last"], progress=False)
    assert order == [("contiguous", 0), ("channels_last", 0), ("contiguous", 1), ("channels_last", 1)]
    runs = res["runs"]
    assert list(runs) == ["fp32 contiguous", "fp32 channels_last"]
    assert all(len(r["step_s"]) == len(r["cpu_s"]) == len(r["loss"]) == 2 and min(r["step_s"]) > 0
               and min(r["cpu_s"]) > 0 for r in runs.values())
    acc = res["accuracy"]["fp32 channels_last"]
    assert set(acc) == set(train_bench.OUTPUT_KEYS) and max(v["worst_over_bound"] for v in acc.values()) <= 1
    # the first step starts from the same weights: its losses agree within float32's tolerance.
    # Later ones do not have to: Adam's first update is about lr * sign(grad), and the sign of a
    # gradient that is itself rounding noise differs between the two layouts' summation orders.
    a, b = runs["fp32 contiguous"]["loss"], runs["fp32 channels_last"]["loss"]
    assert abs(a[0] - b[0]) <= 2e-3 + 6e-4 * abs(a[0]), (a, b)
    assert all(x == x and abs(x) < float("inf") for x in a + b)
