"""Shared test configuration (the root conftest of every folder under tests/).

Layout: tests/ops/test_<op>.py (one operator on every backend), tests/backends/ (build, ISA,
interpreter, emulation and compile checks), tests/model/ (MANO, network, checkpoints), plus
the folders of the pipeline packages.  No folder has an ``__init__.py``: pytest puts this
folder on ``sys.path`` (rootdir-relative "prepend" imports), so the shared helpers here
(``tolerances``, ``cuda_parity``, ``triton_cases``, ``model_helpers``) import by their bare
names from any sub-folder, and test file names must be unique across folders.

TRITON_INTERPRET must be set before any Triton kernel is defined, so it is set here, at
the top of the first file pytest imports, unless a GPU is present (then the Triton tests
run compiled on the GPU).
"""
import os
import sys

import pytest

# the helpers beside this file, for every sub-folder (also under --import-mode=importlib)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if "TRITON_INTERPRET" not in os.environ:
    import torch as _torch

    if not _torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

HAS_GPU = torch.cuda.is_available()
GPU_SKIP_REASON = "needs a CUDA GPU; none is present on this machine (CPU-only CI)"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.environ.get(
    "HANDS3C_FIXTURES", os.path.join(os.path.dirname(REPO_ROOT), "shared", "fixtures", "original_s3c"))

requires_gpu = pytest.mark.skipif(not HAS_GPU, reason=GPU_SKIP_REASON)


def devices_for_test():
    """Parametrisation shared by CPU and GPU tests: the GPU entry skips with a reason."""
    return ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, requires_gpu])]


@pytest.fixture
def cuda_env(monkeypatch):
    """The CUDA kernels' test environment: outputs poisoned with NaN before the kernels write
    them (HANDS3C_CUDA_POISON=1), automatic thread target unless a case sets one."""
    monkeypatch.setenv("HANDS3C_CUDA_POISON", "1")
    monkeypatch.delenv("HANDS3C_CUDA_TARGET_THREADS", raising=False)
    return monkeypatch


@pytest.fixture
def fixture_dir():
    """The published implementation's fixture folder; a missing folder is an error, not a skip."""
    if not os.path.isdir(FIXTURE_DIR):
        raise FileNotFoundError(
            f"fixture folder {FIXTURE_DIR} is missing: it ships in ../shared/fixtures/original_s3c "
            "beside the repository (or set HANDS3C_FIXTURES)")
    return FIXTURE_DIR
