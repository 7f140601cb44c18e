"""What every benchmark shares: inputs with the published initialisation, timing, peak memory.

Used by the suites (``python -m benchmarks``), ``bench_gpu.py`` and ``bench_selective_scan_cpu.py``.

Ratios.  The machines are shared and noisy: a busy neighbour once made the spatial branch's
reference take 12.3 s in one run and 1.7 s in another.  So a speed-up is never the ratio of
two medians taken minutes apart: :func:`interleaved` times the competitors in rounds
(A B C, A B C, ...), in one process on the same inputs, and :func:`ratio` is the median over
rounds of each round's own ratio, so a slowdown that hits a round hits both sides of its ratio.
"""
from __future__ import annotations

import gc
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from handS3C.modules import dt_bias_init


@dataclass
class Measurement:
    name: str
    backend: str
    median_s: float
    runs: List[float] = field(default_factory=list)
    peak_mem_mb: Optional[float] = None
    note: str = ""
    # speed-up over the row's reference: median of per-round ratios of interleaved runs (None: no reference)
    speedup: Optional[float] = None

    def as_dict(self):
        return {"name": self.name, "backend": self.backend, "median_s": self.median_s, "runs_s": self.runs,
                "peak_mem_mb": self.peak_mem_mb, "note": self.note, "speedup": self.speedup}


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


def interleaved(fns: Dict[str, Callable[[], object]], rounds: int, warmup: int = 0,
                device=None) -> Dict[str, List[float]]:
    """Wall-clock seconds of every function in ``fns``, timed in ``rounds`` interleaved rounds
    (each round calls every function once, in order) after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def ratio(base: Sequence[float], other: Sequence[float]) -> float:
    """Median over rounds of base[i] / other[i]: how many times faster ``other`` ran than
    ``base`` in the same round (both lists from one :func:`interleaved` call)."""
    if len(base) != len(other) or not base:
        raise ValueError(f"ratio needs two equally long, non-empty lists of rounds, got {len(base)} and {len(other)}")
    return statistics.median(b / o for b, o in zip(base, other))


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


# ---- inputs ----------------------------------------------------------------------------------

def cross_scan_params(D: int, N: int = 16, R: int = 16, device="cpu", seed: int = 0, noise: float = 0.1):
    """``[x_proj_weight (4, R+2N, D), dt_projs_weight (4, D, R), dt_projs_bias (4, D), A_logs (4D, N),
    Ds (4D,)]`` float32, initialised like the published S3C block (SPEC §2; the dt bias through
    :func:`handS3C.modules.dt_bias_init`), with ``noise`` added to A_logs and Ds so no two
    states coincide."""
    g = torch.Generator().manual_seed(seed)
    xw = (torch.rand(4, R + 2 * N, D, generator=g) * 2 - 1) / math.sqrt(D)
    dtw = (torch.rand(4, D, R, generator=g) * 2 - 1) * R ** -0.5
    dtb = dt_bias_init(4 * D, generator=g).reshape(4, D)
    alogs = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(4 * D, 1) \
        + noise * torch.randn(4 * D, N, generator=g)
    ds = 1 + noise * torch.randn(4 * D, generator=g)
    return [t.to(device) for t in (xw, dtw, dtb, alogs, ds)]


def branch_inputs(branch: str, batch: int, device, d_inner: int = 512, H: int = 32, W: int = 32, N: int = 16,
                  R: int = 16):
    """``(u, params)`` of one S3C branch: ``u`` = silu(randn) (batch, d_inner, H, W) for the
    spatial branch, its (batch, W, d_inner, H) permuted view for the channel branch (features
    W, plane d_inner x H), and :func:`cross_scan_params` for its feature count."""
    if branch not in ("spatial", "channel"):
        raise ValueError(f"branch must be 'spatial' or 'channel', got {branch!r}")
    g = torch.Generator().manual_seed(1)
    u = torch.nn.functional.silu(torch.randn(batch, d_inner, H, W, generator=g)).to(device)
    if branch == "spatial":
        return u, cross_scan_params(d_inner, N, R, device=device)
    return u.permute(0, 3, 1, 2), cross_scan_params(W, N, R, device=device)


def selective_scan_inputs(batch: int, dim: int, L: int, N: int, seed: int = 0) -> dict:
    """Mamba-style ``selective_scan_fn`` keyword arguments (CPU, float32): variable B/C
    (batch, N, L), D, z, delta_bias, softplus."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, L, generator=g)
    delta = 0.5 * torch.randn(batch, dim, L, generator=g) - 1.0
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1) * (0.5 + torch.rand(dim, 1, generator=g))
    B = torch.randn(batch, N, L, generator=g)
    C = torch.randn(batch, N, L, generator=g)
    D = torch.randn(dim, generator=g)
    z = torch.randn(batch, dim, L, generator=g)
    delta_bias = 0.1 * torch.rand(dim, generator=g)
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True)
