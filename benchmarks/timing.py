"""Timing and memory helpers shared by the benchmarks.

Ratios are measured in one process on the same inputs, as medians of several runs after
warm-up, because the machines are shared and noisy.
"""
from __future__ import annotations

import gc
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch


@dataclass
class Measurement:
    name: str
    backend: str
    median_s: float
    runs: List[float] = field(default_factory=list)
    peak_mem_mb: Optional[float] = None
    note: str = ""

    def as_dict(self):
        return {"name": self.name, "backend": self.backend, "median_s": self.median_s, "runs_s": self.runs,
                "peak_mem_mb": self.peak_mem_mb, "note": self.note}


def _sync(device):
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], object], runs: int = 5, warmup: int = 1, device=None) -> List[float]:
    """Wall-clock seconds of ``fn`` for ``runs`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def median(xs):
    return statistics.median(xs)


def _read_status(field_name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024.0  # kB -> MB
    return None


def _libc():
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()
_M_MMAP_THRESHOLD = -3
# While a CPU peak is measured, buffers from 128 KiB up are mapped and unmapped per allocation,
# so the resident-set high-water mark sees each call's real peak instead of reused heap.  Only
# then: page faults on every fresh mapping would slow the timed runs (allocation-heavy calls
# such as a training step by ~1.8x).  Afterwards the threshold is glibc's 64-bit ceiling of its
# own dynamic threshold (32 MiB), which is where that threshold settles in a long run.
_MEASURE_MMAP_THRESHOLD = 128 * 1024
_TIMING_MMAP_THRESHOLD = 32 * 1024 * 1024


def peak_memory_mb(fn: Callable[[], object], device=None) -> Optional[float]:
    """Peak extra memory of one call of ``fn``, in MB (``fn`` is called exactly once).

    CUDA: ``torch.cuda.max_memory_allocated``.  CPU (Linux): the resident-set high-water mark,
    reset through /proc/self/clear_refs before the call, minus the resident set before it.
    """
    gc.collect()
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not os.path.exists("/proc/self/clear_refs"):
        fn()
        return None
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, _MEASURE_MMAP_THRESHOLD)
        _LIBC.malloc_trim(0)
    try:
        base = _read_status("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident set
        except OSError:
            fn()
            return None
        fn()
        peak = _read_status("VmHWM")
    finally:
        if _LIBC is not None:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, _TIMING_MMAP_THRESHOLD)
    if base is None or peak is None:
        return None
    return max(peak - base, 0.0)
