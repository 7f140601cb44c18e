"""CPU benchmark of ``selective_scan_fn``: the C++ kernel against mamba-ssm's ``selective_scan_ref``
and against mambapy's parallel scan (``mambapy.pscan.pscan``) on the same inputs.

    python -m benchmarks.bench_selective_scan_cpu [--batch 2 --dim 2048 --L 1024 --N 16]

One process, same inputs for every implementation, timed interleaved (every implementation
once per round after a warm-up round); a speed-up is the median of the per-round ratios
(benchmarks/common.py), since the machines are shared and noisy.  Every
implementation's output is checked against the kernel's before anything is timed.

mamba-ssm's backward is autograd through its Python loop over L, whose cost grows with L^2
(SPEC §5); it is timed once, at a reduced length (--ref-bwd-L, default 128), beside the kernel
and mambapy at that same length.  The mambapy path is mambapy's own selective scan
(mamba.py's ``selective_scan``): exp(delta A) and delta B u materialised as (batch, L, dim, N)
tensors, ``pscan`` over L, then the C contraction, D skip and z gate.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `handS3C` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bounds  # noqa: E402
from benchmarks.common import interleaved, median, ratio, selective_scan_inputs  # noqa: E402
from handS3C import ops, reference  # noqa: E402


def ours(**kw):
    return ops.selective_scan_fn(**kw, backend="cpu")


def mamba_ref(**kw):
    return reference.mamba_selective_scan_ref()(**kw)


def mambapy_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """mambapy's selective scan (its mamba.py) on our (batch, dim, L) layout."""
    from mambapy.pscan import pscan
    dt = delta + delta_bias[:, None]
    dt = F.softplus(dt) if delta_softplus else dt
    dt = dt.transpose(1, 2)                                            # (b, L, d)
    x = u.transpose(1, 2)                                              # (b, L, d)
    dA = torch.exp(dt.unsqueeze(-1) * A)                               # (b, L, d, N)
    BX = dt.unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2) * x.unsqueeze(-1)  # (b, L, d, N)
    hs = pscan(dA, BX)                                                 # (b, L, d, N)
    y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(3)              # (b, L, d)
    y = (y + D * x) * F.silu(z.transpose(1, 2))
    return y.transpose(1, 2)


IMPLS = {"hands3c cpu kernel": ours, "mambapy pscan": mambapy_scan, "mamba-ssm selective_scan_ref": mamba_ref}


def _fwd(fn, inputs):
    def run():
        with torch.no_grad():
            fn(**inputs)
    return run


def _fwd_bwd(fn, inputs):
    leaves = {k: (v.clone().requires_grad_(True) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    gout = torch.randn(inputs["u"].shape, generator=torch.Generator().manual_seed(1))
    tensors = [v for v in leaves.values() if isinstance(v, torch.Tensor)]

    def run():
        out = fn(**leaves)
        torch.autograd.grad((out * gout).sum(), tensors)
    return run


def _check(inputs):
    """Refuse to time an implementation that disagrees with the others (SPEC §4 float32)."""
    want = ours(**inputs)
    for name, fn in IMPLS.items():
        got = fn(**inputs)
        if not torch.allclose(got, want, rtol=6e-4, atol=2e-3):
            raise RuntimeError(f"{name} disagrees with the kernel: max abs error {(got - want).abs().max():.3g}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--L", type=int, default=1024)
    p.add_argument("--N", type=int, default=16)
    p.add_argument("--runs", type=int, default=5, help="interleaved rounds of the fast implementations' fwd+bwd")
    p.add_argument("--ref-runs", type=int, default=2, help="interleaved rounds of the forward (mamba-ssm's included)")
    p.add_argument("--ref-bwd-L", type=int, default=128,
                   help="sequence length at which mamba-ssm's backward is timed (once); 0 skips it")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernel ISA "
          f"{torch.ops.hands3c.cpu_isa()}, float32, B/C variable (batch, N, L), with D, z, delta_bias, softplus")
    rows = []
    kernel = "hands3c cpu kernel"

    def record(group, pass_, shape, rounds, warmup, note=""):
        times = interleaved(group, rounds=rounds, warmup=warmup)
        for name, runs in times.items():
            sp = None if name == kernel else ratio(runs, times[kernel])
            rows.append((name, pass_, shape, median(runs), len(runs), sp, note))
            print(f"  {name:30s} {pass_:8s} {shape:22s} {median(runs):9.4f} s  ({len(runs)} runs) {note}", flush=True)

    full = selective_scan_inputs(args.batch, args.dim, args.L, args.N)
    shape = f"{args.batch}x{args.dim}x{args.L} N={args.N}"
    _check(selective_scan_inputs(args.batch, min(args.dim, 64), min(args.L, 100), args.N, seed=3))
    _check(full)

    # mamba-ssm's forward is slow: it sets the number of rounds of its group
    record({name: _fwd(fn, full) for name, fn in IMPLS.items()}, "fwd", shape, args.ref_runs, 1)
    record({name: _fwd_bwd(fn, full) for name, fn in IMPLS.items() if not name.startswith("mamba-ssm")},
           "fwd+bwd", shape, args.runs, 1)
    if args.ref_bwd_L:
        small = selective_scan_inputs(args.batch, args.dim, args.ref_bwd_L, args.N, seed=2)
        sshape = f"{args.batch}x{args.dim}x{args.ref_bwd_L} N={args.N}"
        record({name: _fwd_bwd(fn, small) for name, fn in IMPLS.items()}, "fwd+bwd", sshape, 1, 0,
               "(reduced L: mamba-ssm's autograd is O(L^2))")

    # Kernel throughput against the compute bounds (benchmarks/bounds.py): the cross scan's inner
    # loop (the same exp2 + two FMAs per state update; this kernel's loop also clamps from above,
    # one operation more, since A may be positive here) and the processor's FMA rate, timed in turn
    # with the kernel's forward in each round.
    updates = args.batch * args.dim * args.L * args.N
    fwd_share = bounds.shares(_fwd(ours, full), updates, rounds=max(3, args.runs))

    print("\nSummary (median seconds; kernel speed-up = median over rounds of other / kernel)")
    print(f"{'implementation':30s} {'pass':8s} {'shape':22s} {'median s':>10s} {'kernel speed-up':>16s}")
    for name, pass_, shp, med, n, sp, note in rows:
        sp = "-" if sp is None else f"{sp:.1f}x"
        print(f"{name:30s} {pass_:8s} {shp:22s} {med:10.4f} {sp:>16s}")
    print(f"\nkernel forward: {bounds.describe(fwd_share)}")


if __name__ == "__main__":
    main()
