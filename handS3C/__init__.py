"""HandS3C kernels: fused cross-scan selective scan and S3C channel-branch operators.

Public API: :mod:`handS3C.ops` (``selective_scan_fn``, ``cross_scan_selective_scan``,
``s3c_merge``), :class:`S3CBlock`, the full model :class:`HandS3C` with
:func:`load_published_checkpoint`, and :mod:`handS3C.reference` (the published path).
"""
from . import _ext, ops, reference  # noqa: F401
from .model.checkpoint import CheckpointMismatchError, load_published_checkpoint
from .model import HandS3C
from .modules import S3CBlock
from .ops import cross_scan_selective_scan, s3c_merge, selective_scan_fn

__version__ = "0.1.0"
__all__ = ["HandS3C", "load_published_checkpoint", "CheckpointMismatchError", "S3CBlock", "selective_scan_fn", "cross_scan_selective_scan", "s3c_merge", "ops", "reference"]
