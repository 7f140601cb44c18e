"""GPU benchmark of CrossScanSelectiveScan at the HandS3C shapes.

Compares, for the spatial branch (D=512 over a 32x32 plane) and the channel branch
(D=32 over a 512x32 plane, L=16384), at batch 1, 8 and 64:

* ``triton``: the fused Triton kernels (``backend="triton"``);
* ``cuda``: the CUDA C++ kernels, when ``handS3C._ext.HAS_CUDA_EXT``;
* ``published``: the published path (four traversal copies, (B,4,D,L) deltas, mamba-ssm's
  compiled ``selective_scan_fn`` when installed, else its Python ``selective_scan_ref``).

Forward and forward+backward medians, timed interleaved (every backend once per round, CUDA
synchronised after each call, ``--rounds`` rounds after warm-up) with the speed-up over the
published path as the median of the per-round ratios (benchmarks/common.py), and the peak
memory (``torch.cuda.max_memory_allocated`` above the inputs).  Usage::

    python benchmarks/bench_gpu.py [--batch 1 8 64] [--branch spatial channel] [--no-published]
    python benchmarks/bench_gpu.py --interpret-toy   # CPU, TRITON_INTERPRET=1, toy sizes

Without a CUDA device (and without ``--interpret-toy``) it prints
"GPU benchmark skipped: no CUDA device" and exits 0.
"""
from __future__ import annotations

import argparse
import os
import sys

if "--interpret-toy" in sys.argv:
    # must precede the first Triton kernel definition (imported with handS3C)
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

# name: (D, P, Q); N = 16, R = 16 (SPEC §2)
BRANCHES = {"spatial": (512, 32, 32), "channel": (32, 512, 32)}
TOY_BRANCHES = {"spatial": (3, 3, 3), "channel": (2, 6, 2)}
N_STATE, DT_RANK = 16, 16


def make_inputs(Bn, D, P, Q, N, R, device, seed=0):
    """u ~ randn (Bn, D, P, Q) and the published initialisation (SPEC §2, benchmarks/common.py),
    all leaves that require grad."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(Bn, D, P, Q, generator=g)
    params = common.cross_scan_params(D, N, R, seed=seed)
    return [t.to(device).requires_grad_() for t in (u, *params)]


def backends(device, published: bool):
    from handS3C import _ext, reference
    from handS3C.ops import cross_scan_selective_scan

    out = {}
    if published:
        try:
            fn = reference.mamba_selective_scan(device)
            label = "published(mamba-cuda)" if fn is reference.mamba_selective_scan_cuda_fn() else "published(mamba-ref)"
        except ImportError:
            fn, label = reference.selective_scan_ref64, "published(ref64)"
        out[label] = lambda *a, fn=fn: reference.cross_scan_selective_scan_ref(*a, scan_fn=fn)
    out["triton"] = lambda *a: cross_scan_selective_scan(*a, backend="triton")
    if device.type == "cuda" and _ext.HAS_CUDA_EXT:
        out["cuda"] = lambda *a: cross_scan_selective_scan(*a, backend="cuda")
    return out


def run(batches, branches, device, published, rounds, toy=False):
    table = BRANCHES if not toy else TOY_BRANCHES
    N, R = (N_STATE, DT_RANK) if not toy else (4, 2)
    print(f"{'branch':8} {'B':>3} {'backend':24} {'pass':8} {'median ms':>11} {'speed-up':>9} {'peak MiB':>9}")
    for branch in branches:
        D, P, Q = table[branch]
        for Bn in batches:
            args = make_inputs(Bn, D, P, Q, N, R, device)
            impls = backends(device, published)
            for label in ("fwd", "fwd+bwd"):
                group = {}
                for name, f in impls.items():
                    if label == "fwd+bwd" and "mamba-ref" in name and P * Q > 1024 and not toy:
                        # autograd through a Python loop over L: O(L^2) (SPEC §5: > 10 min here)
                        print(f"{branch:8} {Bn:3d} {name:24} {label:8} skipped: Python reference backward is O(L^2)")
                        continue

                    def fn(f=f, label=label):
                        if label == "fwd":
                            with torch.no_grad():
                                return f(*args)
                        torch.autograd.grad(f(*args).sum(), args)
                    try:
                        mb = common.peak_memory_mb(fn, device)   # also the first (warm-up) call
                    except Exception as e:  # e.g. out of memory for the published path at B=64
                        print(f"{branch:8} {Bn:3d} {name:24} {label:8} failed: {type(e).__name__}: {str(e)[:80]}")
                        continue
                    group[name] = (fn, mb)
                times = common.interleaved({k: v[0] for k, v in group.items()}, rounds=max(1, rounds),
                                           warmup=0 if toy else 2, device=device)
                base = next((k for k in group if k.startswith("published")), None)
                for name, (_, mb) in group.items():
                    sp = "" if base is None or name == base else f"{common.ratio(times[base], times[name]):8.1f}x"
                    mb_s = "" if mb is None else f"{mb:9.1f}"
                    print(f"{branch:8} {Bn:3d} {name:24} {label:8} {common.median(times[name]) * 1e3:11.3f} "
                          f"{sp:>9} {mb_s:>9}")
            del args
            if device.type == "cuda":
                torch.cuda.empty_cache()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--branch", choices=sorted(BRANCHES), nargs="+", default=["spatial", "channel"])
    ap.add_argument("--no-published", action="store_true", help="skip the published (materialising) path")
    ap.add_argument("--rounds", type=int, default=20,
                    help="interleaved timing rounds (every backend once per round; medians and per-round ratios)")
    ap.add_argument("--interpret-toy", action="store_true",
                    help="run end to end on the CPU under TRITON_INTERPRET=1 at toy sizes (a smoke test)")
    args = ap.parse_args(argv)
    if args.interpret_toy:
        print("toy run: TRITON_INTERPRET=1 on the CPU; timings are meaningless, this only checks the script")
        from handS3C.triton_kernels import scan_config

        # small tiles and two chunks: the chunk-parallel passes run too; one channel block
        with scan_config(tile=4, chunk_tiles=2, block_d=4):
            run([1], args.branch, torch.device("cpu"), not args.no_published, rounds=1, toy=True)
        return 0
    if not torch.cuda.is_available():
        print("GPU benchmark skipped: no CUDA device")
        return 0
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(dev)}; torch {torch.__version__}")
    run(args.batch, args.branch, dev, not args.no_published, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
