"""Shared test configuration (the root conftest of every folder under tests/).

Layout: tests/ops/test_<op>.py (one operator on every backend), tests/backends/ (build, ISA,
interpreter, emulation and compile checks), tests/model/ (MANO, network, checkpoints), plus
the folders of the pipeline packages.  No folder has an ``__init__.py``: pytest puts this
folder on ``sys.path`` (rootdir-relative "prepend" imports), so the shared helpers here
(``testenv``, ``tolerances``, ``cuda_parity``, ``triton_cases``, ``model_helpers``) import by
their bare names from any sub-folder, and test file names must be unique across folders.
Import shared names from ``testenv``, never ``from conftest import``: each folder may have
its own conftest.py, and they are all the module ``conftest``.

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

# The machine facts tests import (HAS_GPU, REPO_ROOT, devices_for_test, ...) live in
# testenv.py: ``from conftest import ...`` would reach whichever conftest.py was imported last
# (every folder without __init__.py may have one, all named ``conftest``).
from testenv import (FIXTURE_DIR, GPU_SKIP_REASON, HAS_GPU, REPO_ROOT,  # noqa: E402,F401
                     devices_for_test, requires_gpu)


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
