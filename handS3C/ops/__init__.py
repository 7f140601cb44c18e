"""The fused operators of HandS3C kernels.

Each public function has one documented contract (see its module), a pure-PyTorch
reference in :mod:`handS3C.reference`, and backends chosen by device and ``backend=``:
``"auto"`` (default), ``"reference"``, ``"cpu"`` (C++), ``"cuda"`` (CUDA C++), ``"triton"``.
"""
from .. import _ext  # noqa: F401  (loads the C++ operator schemas before registration below)
from ._backend import BACKENDS, resolve_backend
from .cross_scan import cross_scan_selective_scan
from .merge import s3c_merge
from .selective_scan import selective_scan_fn

__all__ = ["BACKENDS", "resolve_backend", "selective_scan_fn", "cross_scan_selective_scan", "s3c_merge"]
