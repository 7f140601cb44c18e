"""Facts about this machine and checkout that tests import by name (``from testenv import ...``).

Kept out of conftest.py on purpose: with no ``__init__.py`` under tests/, every folder's
conftest.py is the module ``conftest``, so importing names from it reaches whichever was
loaded last.  conftest.py (the root one) sets TRITON_INTERPRET before this is imported.
"""
import os

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
GPU_SKIP_REASON = "needs a CUDA GPU; none is present on this machine (CPU-only CI)"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.environ.get(
    "HANDS3C_FIXTURES", os.path.join(os.path.dirname(REPO_ROOT), "shared", "fixtures", "original_s3c"))

requires_gpu = pytest.mark.skipif(not HAS_GPU, reason=GPU_SKIP_REASON)


def devices_for_test():
    """Parametrisation shared by CPU and GPU tests: the GPU entry skips with a reason."""
    return ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, requires_gpu])]


# ---- the operator tests' backends -------------------------------------------------------------
# tests/ops/test_<op>.py keep one case table per operator; every case has a `size` tag, and a
# size says which targets (a backend and the device its tensors live on) run it:
#   "small": the C++ CPU kernels, and the CUDA kernels on a GPU (same shapes);
#   "tiny":  the Triton kernels, in Triton's CPU interpreter (about 1 ms per loop iteration of
#            every program, hence tiny shapes with a launch plan that still crosses every tile,
#            chunk and channel-block boundary) and, with a GPU, compiled at scaled-up shapes;
#   "gpu":   the CUDA kernels at GPU sizes (the branches' real lengths, forced segmentation).
TARGETS = {"cpu": ("cpu", "cpu"), "cuda": ("cuda", "cuda"), "triton": ("triton", "cpu"),
           "triton-gpu": ("triton", "cuda")}
SIZE_TARGETS = {"small": ("cpu", "cuda"), "tiny": ("triton", "triton-gpu"), "gpu": ("cuda",)}

try:
    from handS3C import _ext as _hands3c_ext
    _HAS_CUDA_EXT = _hands3c_ext.HAS_CUDA_EXT
except ImportError:  # the package itself failing to import is reported by every test that uses it
    _HAS_CUDA_EXT = False

# Marks of a case on the CUDA kernels: skipped with a reason without a GPU, or without the built
# CUDA extension.
CUDA_MARKS = [requires_gpu, pytest.mark.skipif(HAS_GPU and not _HAS_CUDA_EXT,
                                               reason="the CUDA extension handS3C._C_cuda is not built"),
              pytest.mark.gpu]
TARGET_MARKS = {"cpu": [], "triton": [], "cuda": CUDA_MARKS, "triton-gpu": [requires_gpu, pytest.mark.gpu]}


def case_params(cases, keep=lambda case: True):
    """pytest params ``(target, case)`` for every case of a table (objects with ``size`` and
    ``id``) on every target its size names, with the target's skip marks; ids ``<target>-<case>``."""
    params = []
    for case in cases:
        if keep(case):
            params += [pytest.param(target, case, id=f"{target}-{case.id}", marks=TARGET_MARKS[target])
                       for target in SIZE_TARGETS[case.size]]
    ids = [p.id for p in params]
    assert len(ids) == len(set(ids)), f"duplicate case ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    return params


def check_on(request, target, case, small, tiny, gpu):
    """Run one table case on ``target`` with the check of its size: ``small(backend, device, case)``,
    ``tiny(device, case)`` (the Triton kernels) or ``gpu(env, case)``, where ``env`` is the CUDA
    kernels' test environment (conftest.py's ``cuda_env``: poisoned outputs, thread target)."""
    backend, device = TARGETS[target]
    if case.size == "tiny":
        tiny(device, case)
    elif case.size == "gpu":
        gpu(request.getfixturevalue("cuda_env"), case)
    else:
        small(backend, device, case)
