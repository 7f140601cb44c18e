"""The S3C block with its branch outputs in the merge's row layout against the contiguous one.

    python -m benchmarks.merge_layout [--batch 2] [--rounds 10] [--threads 2]

Since issue 14 the block asks both cross scans for ``out_order`` (spatial (0, 2, 3, 1),
channel (0, 3, 1, 2)), so the merge reads two contiguous (B, H, W, d_inner) inputs and the
scans' backward reads the merge's gradient through its strides.  "contiguous" runs the same
block (same build, same weights and input) with both orders set to (0, 1, 2, 3): the branch
outputs are contiguous (B, D, P, Q) tensors and the merge gathers their permuted views, as
before the change.  Forward (no grad) and forward+backward (``block(x).sum().backward()``) of
the fused CPU block, the two layouts interleaved in one process (A B A B ...), ratio = median
of the per-round ratios (contiguous time / row-layout time: > 1 means the row layout is
faster).  Also checks that both layouts give the same output and gradients bit for bit before
timing.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import interleaved, median, ratio  # noqa: E402

IDENTITY = (0, 1, 2, 3)


def _layout(mod, rows: bool):
    mod.SPATIAL_OUT_ORDER = (0, 2, 3, 1) if rows else IDENTITY
    mod.CHANNEL_OUT_ORDER = (0, 3, 1, 2) if rows else IDENTITY


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import handS3C
    from handS3C.modules import s3c_block as mod

    torch.manual_seed(0)
    W = args.width
    block = handS3C.S3CBlock(256, W, 16, backend="cpu")
    x = torch.randn(args.batch, 256, W, W)
    xg = x.clone().requires_grad_(True)

    def fwd(rows):
        def run():
            _layout(mod, rows)
            with torch.no_grad():
                return block(x)
        return run

    def fwd_bwd(rows):
        def run():
            _layout(mod, rows)
            block.zero_grad(set_to_none=True)
            xg.grad = None
            block(xg).sum().backward()
            return [xg.grad] + [q.grad for q in block.parameters()]
        return run

    try:
        a, b = fwd(True)(), fwd(False)()
        if not torch.equal(a, b):
            raise RuntimeError("the two layouts give different block outputs")
        ga, gb = fwd_bwd(True)(), fwd_bwd(False)()
        if not all(torch.equal(u, v) for u, v in zip(ga, gb)):
            raise RuntimeError("the two layouts give different gradients")
        print(f"S3C block B={args.batch} 256x{W}x{W}, {torch.get_num_threads()} threads, "
              f"{args.rounds} interleaved rounds (outputs and gradients bitwise equal)")
        for name, make in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            t = interleaved({"rows": make(True), "contiguous": make(False)}, rounds=args.rounds,
                            warmup=args.warmup)
            print(f"  {name:8s} row layout {median(t['rows']) * 1e3:8.1f} ms   contiguous "
                  f"{median(t['contiguous']) * 1e3:8.1f} ms   contiguous/rows {ratio(t['contiguous'], t['rows']):.3f}x")
    finally:
        _layout(mod, True)


if __name__ == "__main__":
    main()
