"""Loading of the compiled extensions.

``handS3C._C`` (CPU kernels, always built) defines the ``hands3c`` operator schemas and their
CPU kernels; ``handS3C._C_cuda`` (built when a CUDA toolkit is present) adds the CUDA kernels
of the same operators.  Importing either registers the kernels with the dispatcher.

Each extension embeds the torch (and CUDA) versions it was compiled against
(``handS3C/_build_info.py``).  The record is read from the file *before* the library is loaded:
an extension built for another torch raises :class:`ExtensionBuildMismatchError` (an
``ImportError``) naming both versions and :data:`REBUILD_COMMAND`, instead of failing on missing
symbols or, worse, loading and misbehaving.  An extension that is absent (or has no record and
fails to load) only sets ``HAS_*_EXT = False``: the reference backend still works, and asking
for the missing backend says how to build it.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Dict, Optional

import torch  # noqa: F401  (loads libc10/libtorch, which the extensions link against)

from ._build_info import REBUILD_COMMAND, ExtensionBuildMismatchError, check_record, read_record

CPU_EXTENSION = "handS3C._C"
CUDA_EXTENSION = "handS3C._C_cuda"

_cpu_error: Optional[BaseException] = None
_cuda_error: Optional[BaseException] = None

# name -> {"path": file or None, "record": the embedded build record or None}; `hands3c info`.
EXTENSION_FILES: Dict[str, Dict] = {}


def _load(name: str):
    """Import extension ``name`` after checking its build record; returns (module, error)."""
    try:
        spec = importlib.util.find_spec(name)  # locates the file without loading it
    except (ImportError, ValueError) as e:
        spec, find_error = None, e
    else:
        find_error = None
    path = spec.origin if spec is not None else None
    record = read_record(path) if path else None
    EXTENSION_FILES[name] = {"path": path, "record": record}
    if path is None:
        return None, find_error or ImportError(f"no compiled file for {name} next to {__file__}", name=name)
    check_record(name, path, record, torch.__version__, torch.version.cuda)
    try:
        return importlib.import_module(name), None
    except ImportError as e:
        return None, e


_C, _cpu_error = _load(CPU_EXTENSION)  # registers the schemas and CPU kernels
HAS_CPU_EXT = _C is not None
_C_cuda, _cuda_error = _load(CUDA_EXTENSION)
HAS_CUDA_EXT = _C_cuda is not None


def require_cpu_ext() -> None:
    if not HAS_CPU_EXT:
        raise RuntimeError(
            f"handS3C's CPU extension ({CPU_EXTENSION}) is not built; build it against the running torch "
            f"with `{REBUILD_COMMAND}` from the repository root (import error: {_cpu_error})")


def require_cuda_ext() -> None:
    if not HAS_CUDA_EXT:
        raise RuntimeError(
            f"handS3C's CUDA extension ({CUDA_EXTENSION}) is not built: it needs a CUDA toolkit "
            f"and a CUDA build of torch when `{REBUILD_COMMAND}` runs (HANDS3C_CUDA=1 makes its "
            f"absence a build error). Import error: {_cuda_error}")


__all__ = ["HAS_CPU_EXT", "HAS_CUDA_EXT", "ExtensionBuildMismatchError", "REBUILD_COMMAND", "require_cpu_ext",
           "require_cuda_ext", "EXTENSION_FILES"]
