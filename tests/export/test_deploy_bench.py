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
