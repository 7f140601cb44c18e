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
