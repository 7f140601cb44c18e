"""The deploy benchmark's checks (the timing itself is a benchmark, not a test)."""
import pytest
import torch

from benchmarks import deploy_bench
from benchmarks.__main__ import SUITES


def test_deploy_suite_is_registered():
    assert SUITES["deploy"] == "benchmarks.deploy_bench:suite_deploy"


def test_check_refuses_a_wrong_configuration_and_uses_the_bf16_tolerance():
    want = {k: torch.rand(2, 21, 3) for k in deploy_bench.KEYS}
    close = {k: v + 1e-4 for k, v in want.items()}
    deploy_bench._check("eager", close, want, "float32")
    off = {k: v + 1e-2 for k, v in want.items()}
    with pytest.raises(RuntimeError, match="refusing to time"):
        deploy_bench._check("x", off, want, "float32")
    deploy_bench._check("bf16", off, want, "bfloat16")     # 1e-2 is within bfloat16's atol 5e-2
    with pytest.raises(RuntimeError, match="verts"):
        deploy_bench._check("bf16", {**want, "verts": want["verts"] + 0.2}, want, "bfloat16")


def test_cpu_flag_probe_is_a_bool():
    assert isinstance(deploy_bench.cpu_has_bf16(), bool)


def test_bf16_note_scores_every_output_and_flags_failures():
    keys = ("joints2d", "joints3d", "verts", "pose", "pose_rotmat", "shape", "heatmaps")
    g = torch.Generator().manual_seed(0)
    want = {k: torch.randn(2, 6, generator=g) for k in keys}
    got = {k: v + 1e-3 for k, v in want.items()}
    got["pose"] = want["pose"].clone()
    got["pose"][0, 0] += 0.2                  # far beyond atol 5e-2 + rtol 3e-2 * |x|
    parts = dict(p.split(" ", 1) for p in deploy_bench._all_outputs_note(got, want).split(", "))
    assert list(parts) == list(keys)
    assert parts["pose"].endswith("(max abs 0.2) FAILS")
    assert all("FAILS" not in v for k, v in parts.items() if k != "pose")
    worst = float(parts["verts"].split(" ")[0])          # 1e-3 / (5e-2 + 3e-2 |x|) <= 0.02
    assert 0 < worst <= 0.02


def test_main_refuses_unknown_configurations(capsys):
    with pytest.raises(SystemExit) as e:
        deploy_bench.main(["--configs", "eager,fp8"])
    assert e.value.code == 2 and "unknown ['fp8']" in capsys.readouterr().err
