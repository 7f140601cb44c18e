"""Loading of the compiled extensions.

``handS3C._C`` (CPU kernels, always built) defines the ``hands3c`` operator schemas and their
CPU kernels; ``handS3C._C_cuda`` (built when a CUDA toolkit is present) adds the CUDA kernels
of the same operators.  Importing either registers the kernels with the dispatcher.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch  # noqa: F401  (loads libc10/libtorch, which the extensions link against)

_cpu_error: Optional[BaseException] = None
_cuda_error: Optional[BaseException] = None

try:
    from . import _C  # noqa: F401  (registers the schemas and CPU kernels)
    HAS_CPU_EXT = True
except ImportError as e:  # pragma: no cover - only without a build
    HAS_CPU_EXT = False
    _cpu_error = e

try:
    _C_cuda = importlib.import_module("handS3C._C_cuda")
    HAS_CUDA_EXT = True
except ImportError as e:
    _C_cuda = None
    HAS_CUDA_EXT = False
    _cuda_error = e


def require_cpu_ext() -> None:
    if not HAS_CPU_EXT:
        raise RuntimeError(
            "handS3C's CPU extension (handS3C._C) is not built; run `pip install -e .` "
            f"(import error: {_cpu_error})")


def require_cuda_ext() -> None:
    if not HAS_CUDA_EXT:
        raise RuntimeError(
            "handS3C's CUDA extension (handS3C._C_cuda) is not built: it needs a CUDA toolkit "
            "and a CUDA build of torch at `pip install -e .` time (HANDS3C_CUDA=1 makes its "
            f"absence a build error). Import error: {_cuda_error}")
