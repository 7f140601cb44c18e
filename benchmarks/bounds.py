"""The CPU scans' throughput against two compute bounds, measured on this machine, in one process.

* The loop bound (``torch.ops.hands3c.state_update_peak_rate``): the forward's own inner loop
  (``scan_step`` in csrc/cpu/cross_scan_kernel.h, the same code) fed from L1-resident inputs, on
  all threads: what the kernel would reach if nothing but its state updates cost time.
* The processor bound: the FMA issue rate of the build the kernels dispatch to
  (``torch.ops.hands3c.fma_peak_rate``: 16 independent accumulators of 16 floats, no memory
  traffic, all threads) times 16 lanes, divided by the FMA-equivalent vector operations per
  state update of that inner loop (``torch.ops.hands3c.state_update_vector_ops``, counted from
  its compiled code: the exp2 evaluation, the state update and the output accumulation).

Rates are state updates (one state n of one channel at one step of one direction) per second.
Each share is the median over rounds of (kernel rate / bound) with the kernel and both bounds
timed in turn within each round, so load changes between rounds cancel (benchmarks/common.py's
rule for ratios).
"""
import statistics
import time

import torch

LOOP_STEPS = 100_000      # ~256 x 1e5 state updates per thread: a few ms
FMA_STEPS = 2_000_000     # 16 FMAs per step and thread: a few ms


def _loop_bound():
    return torch.ops.hands3c.state_update_peak_rate(LOOP_STEPS)


def _fma_rate():
    return torch.ops.hands3c.fma_peak_rate(FMA_STEPS)


def processor_bound(fma_rate, ops=None):
    """State updates per second the FMA ports allow: fma_rate (FMAs of 16 floats per second)
    x 16 lanes / FMA-equivalent operations per update of 16 lanes."""
    ops = torch.ops.hands3c.state_update_vector_ops() if ops is None else ops
    return fma_rate * 16 / ops


def shares(fn, updates, rounds=5):
    """Times fn (one kernel call doing `updates` state updates) against both bounds, interleaved.

    Returns a dict: rate (median state updates/s of fn), loop (median loop bound), fma (median
    FMAs of 16 floats per second), ops, processor (bound from the median fma rate), loop_share
    and processor_share (medians of the per-round ratios), isa.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if updates <= 0:
        raise ValueError(f"updates must be positive, got {updates}")
    ops = torch.ops.hands3c.state_update_vector_ops()
    fn()  # warm-up (allocations, thread pool)
    rates, loops, fmas, ls, ps = [], [], [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        rate = updates / (time.perf_counter() - t0)
        loop = _loop_bound()
        fma = _fma_rate()
        rates.append(rate)
        loops.append(loop)
        fmas.append(fma)
        ls.append(rate / loop)
        ps.append(rate / processor_bound(fma, ops))
    fma = statistics.median(fmas)
    return {"rate": statistics.median(rates), "loop": statistics.median(loops), "fma": fma, "ops": ops,
            "processor": processor_bound(fma, ops), "loop_share": statistics.median(ls),
            "processor_share": statistics.median(ps), "isa": torch.ops.hands3c.cpu_isa()}


def describe(s):
    """One line: the rate and its share of both bounds, with the bounds' own figures."""
    return (f"{s['rate'] / 1e9:.2f} G state updates/s = {100 * s['loop_share']:.0f}% of the loop bound "
            f"({s['loop'] / 1e9:.2f} G/s), {100 * s['processor_share']:.0f}% of the processor bound "
            f"({s['processor'] / 1e9:.2f} G/s = {s['fma'] / 1e9:.2f} G FMA/s x 16 lanes / {s['ops']} ops per update, "
            f"{s['isa']}, {torch.get_num_threads()} threads)")


def backward_shares(fn, updates, rounds=5):
    """Times fn (one backward call over `updates` state updates) against the backward's own loop
    bound (``torch.ops.hands3c.backward_update_peak_rate``: its recomputation and adjoint inner
    loops, the same code, on L1-resident inputs), interleaved as in shares()."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if updates <= 0:
        raise ValueError(f"updates must be positive, got {updates}")
    fn()
    rates, loops, ls = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        rate = updates / (time.perf_counter() - t0)
        loop = torch.ops.hands3c.backward_update_peak_rate(LOOP_STEPS // 2)
        rates.append(rate)
        loops.append(loop)
        ls.append(rate / loop)
    return {"rate": statistics.median(rates), "loop": statistics.median(loops), "loop_share": statistics.median(ls),
            "isa": torch.ops.hands3c.cpu_isa()}


def describe_backward(s):
    return (f"{s['rate'] / 1e9:.2f} G state updates/s = {100 * s['loop_share']:.0f}% of the backward's loop bound "
            f"({s['loop'] / 1e9:.2f} G/s: state recomputation + adjoint step, {s['isa']}, "
            f"{torch.get_num_threads()} threads)")
