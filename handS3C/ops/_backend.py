"""Backend selection shared by the public operators."""
from __future__ import annotations

import os
from typing import Iterable

import torch

from .. import _ext

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, device: torch.device, op_name: str) -> str:
    """Map ``backend`` ("auto" or an explicit name) to the implementation that will run.

    auto: CPU tensors -> "cpu" (the C++ kernels); CUDA tensors -> "cuda" when the CUDA
    extension is built, else "triton", else "reference".  Explicit names are checked against
    the device and raise a ``ValueError`` / ``RuntimeError`` that says what is missing.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{op_name}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cpu":
            return "cpu" if _ext.HAS_CPU_EXT else "reference"
        if device.type == "cuda":
            if _ext.HAS_CUDA_EXT:
                return "cuda"
            return "triton" if triton_available() else "reference"
        return "reference"
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"{op_name}: backend='cpu' needs CPU tensors, got tensors on {device}")
        _ext.require_cpu_ext()
    elif backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"{op_name}: backend='cuda' needs CUDA tensors, got tensors on {device}")
        _ext.require_cuda_ext()
    elif backend == "triton":
        if not triton_available():
            raise RuntimeError(f"{op_name}: backend='triton' needs the triton package")
        if device.type != "cuda" and not triton_interpreting():
            raise ValueError(
                f"{op_name}: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before "
                f"import to run the kernels in Triton's CPU interpreter), got tensors on {device}")
    return backend


def check_same_device(op_name: str, **tensors) -> torch.device:
    """All given (non-None) tensors must live on one device; returns it."""
    device = None
    first = None
    for name, t in tensors.items():
        if t is None:
            continue
        if device is None:
            device, first = t.device, name
        elif t.device != device:
            raise ValueError(
                f"{op_name}: all tensors must be on one device, but {first} is on {device} "
                f"and {name} is on {t.device}")
    return device


def check_tensor(op_name: str, name: str, t, ndim: Iterable[int] | int, dtypes=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op_name}: {name} must be a torch.Tensor, got {type(t).__name__}")
    ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if t.dim() not in ndims:
        want = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{op_name}: {name} must have {want} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{op_name}: {name} must have dtype in ({names}), got {t.dtype}")


def check_shape(op_name: str, name: str, t: torch.Tensor, shape) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{op_name}: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def check_checkpoints(op_name: str, checkpoints: torch.Tensor) -> None:
    """A backward needs the forward's checkpoints; the Triton forward skips them when no input
    required grad (``need_ck=False``)."""
    if checkpoints.numel() == 0:
        raise RuntimeError(f"{op_name}: backward needs the forward's checkpoints, but the forward ran without "
                           "them (need_ck=False: no input required grad when it ran)")
