"""The Triton kernels compiled for a real GPU target without a GPU (the interpreter accepts
code the compiler rejects): kernels/_compile_check.py builds every kernel to a cubin."""
import os
import subprocess
import sys

import pytest

from testenv import HAS_GPU, REPO_ROOT


@pytest.mark.skipif(HAS_GPU, reason="with a GPU the tests above compile and run every kernel")
def test_kernels_compile_for_sm90_without_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "handS3C.triton_kernels._compile_check", "--quick"],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "all kernels compiled" in r.stdout
