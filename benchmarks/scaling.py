"""How the CPU ``selective_scan_fn`` cost grows with the work: forward and forward+backward time
per position over the sequence length L and the batch (512 channels, N = 16, the published
block's widths; L = 1,024 is the spatial branch's 32x32 plane, 16,384 the channel branch's).

    python -m benchmarks.scaling [--lengths 256,1024,4096,16384] [--batches 1,4] [--runs 3]
    python -m benchmarks --suites scaling          (the same table inside the main benchmark)

The cost is linear in the work when the microseconds per (batch element x position) stay flat
across the table; the summary states the forward+backward at the longest length against
L = 1,024 (issue 14's goal: within 1.3x).  Best of ``--runs`` after a warm-up (each cell is one
shape, so there is nothing to interleave it with); the machines are shared, so compare cells of
one run only.  Writes a log-log chart (time per call against L, one line per batch and pass) as
``scaling.png`` in ``--out``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Sequence, Tuple

import torch

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import Measurement, selective_scan_inputs, time_fn  # noqa: E402

DIM, N = 512, 16
LENGTHS = (256, 1024, 4096, 16384)
BATCHES = (1, 4)


def measure(lengths: Sequence[int], batches: Sequence[int], runs: int, warmup: int,
            dim: int = DIM, N_: int = N) -> Dict[Tuple[int, int], Tuple[float, float]]:
    """{(batch, L): (forward s, forward+backward s)}, best of ``runs`` after ``warmup``."""
    from handS3C import ops
    out = {}
    for batch in batches:
        for L in lengths:
            kw = selective_scan_inputs(batch, dim, L, N_)
            leaves = {k: v.requires_grad_() for k, v in kw.items() if torch.is_tensor(v)}
            g = torch.randn(batch, dim, L, generator=torch.Generator().manual_seed(2))

            def fwd():
                with torch.no_grad():
                    ops.selective_scan_fn(**kw, backend="cpu")

            def fwd_bwd():
                y = ops.selective_scan_fn(**kw, backend="cpu")
                torch.autograd.backward(y, g, inputs=list(leaves.values()))

            tf = min(time_fn(fwd, runs=runs, warmup=warmup))
            tfb = min(time_fn(fwd_bwd, runs=runs, warmup=warmup))
            out[(batch, L)] = (tf, tfb)
    return out


def table(res: Dict[Tuple[int, int], Tuple[float, float]]) -> str:
    """Microseconds per (batch element x position) of every cell."""
    lines = [f"{'batch':>5} {'L':>7} {'fwd ms':>9} {'fwd us/pos':>11} {'f+b ms':>9} {'f+b us/pos':>11}"]
    for (batch, L), (tf, tfb) in sorted(res.items()):
        pos = batch * L
        lines.append(f"{batch:>5} {L:>7} {tf * 1e3:>9.2f} {tf / pos * 1e6:>11.2f} {tfb * 1e3:>9.2f} "
                     f"{tfb / pos * 1e6:>11.2f}")
    return "\n".join(lines)


def growth(res: Dict[Tuple[int, int], Tuple[float, float]], batch: int, L_lo: int = 1024):
    """Forward+backward time per position at the longest length over that at ``L_lo`` (None when
    either is missing)."""
    Ls = sorted(L for b, L in res if b == batch)
    if L_lo not in Ls or Ls[-1] == L_lo:
        return None
    return (res[(batch, Ls[-1])][1] / Ls[-1]) / (res[(batch, L_lo)][1] / L_lo), Ls[-1]


def chart(res: Dict[Tuple[int, int], Tuple[float, float]], path: str) -> bool:
    """Log-log plot of time per call against L; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for batch in sorted({b for b, _ in res}):
        Ls = sorted(L for b, L in res if b == batch)
        for i, label in enumerate(("forward", "forward+backward")):
            ax.plot(Ls, [res[(batch, L)][i] * 1e3 for L in Ls], marker="o", linestyle="-" if i else "--",
                    label=f"{label}, batch {batch}")
    Ls = sorted({L for _, L in res})
    ref = res[(min(b for b, _ in res), Ls[0])][1] * 1e3
    ax.plot(Ls, [ref * L / Ls[0] for L in Ls], color="grey", linewidth=0.8, label="linear in L")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("ms per call (best of runs)")
    ax.set_title(f"CPU selective_scan_fn, {DIM} channels, N={N}, {torch.get_num_threads()} threads")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def rows(res) -> List[Measurement]:
    out = []
    for (batch, L), (tf, tfb) in sorted(res.items()):
        pos = batch * L
        out.append(Measurement(f"scaling selective_scan_fn fwd B={batch} L={L}", "cpu", tf,
                               note=f"{tf / pos * 1e6:.2f} us/pos"))
        out.append(Measurement(f"scaling selective_scan_fn fwd+bwd B={batch} L={L}", "cpu", tfb,
                               note=f"{tfb / pos * 1e6:.2f} us/pos"))
    return out


def report(res, out_dir: str) -> str:
    """The table, the growth summary and the chart's path, as printed text."""
    text = [table(res)]
    for batch in sorted({b for b, _ in res}):
        gr = growth(res, batch)
        if gr is not None:
            text.append(f"batch {batch}: fwd+bwd per position at L={gr[1]} is {gr[0]:.2f}x its value at L=1024 "
                        f"(goal <= 1.3x)")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "scaling.png")
    if chart(res, path):
        text.append(f"log-log chart: {path}")
    return "\n".join(text)


def suite_scaling(args, device, backends) -> List[Measurement]:
    """The main benchmark's ``scaling`` suite (CPU only: an empty list on another device)."""
    if torch.device(device).type != "cpu" or "cpu" not in backends:
        return []
    res = measure(LENGTHS, BATCHES, runs=args.runs, warmup=args.warmup)
    print("\n[scaling] CPU selective_scan_fn cost per position\n" + report(res, args.out))
    return rows(res)


def _ints(s: str) -> List[int]:
    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of positive integers, got {s!r}")
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma list of positive integers, got {s!r}")
    return vals


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=_ints, default=list(LENGTHS), help="comma list of sequence lengths L")
    p.add_argument("--batches", type=_ints, default=list(BATCHES), help="comma list of batch sizes")
    p.add_argument("--runs", type=int, default=3, help="timed runs per cell (the best is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per cell first")
    p.add_argument("--out", default="benchmarks/results", help="folder for scaling.png")
    args = p.parse_args(argv)
    res = measure(args.lengths, args.batches, runs=args.runs, warmup=args.warmup)
    print(f"CPU selective_scan_fn, {DIM} channels, N={N}, {torch.get_num_threads()} threads")
    print(report(res, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
