"""GPU benchmark of CrossScanSelectiveScan at the HandS3C shapes.

Compares, for the spatial branch (D=512 over a 32x32 plane) and the channel branch
(D=32 over a 512x32 plane, L=16384), at batch 1, 8 and 64:

* ``triton``: the fused Triton kernels (``backend="triton"``);
* ``cuda``: the CUDA C++ kernels, when ``handS3C._ext.HAS_CUDA_EXT``;
* ``published``: the published path (four traversal copies, (B,4,D,L) deltas, mamba-ssm's
  compiled ``selective_scan_fn`` when installed, else its Python ``selective_scan_ref``).

Forward and forward+backward medians (``triton.testing.do_bench``) and the peak memory
(``torch.cuda.max_memory_allocated`` above the inputs).  Usage::

    python benchmarks/bench_gpu.py [--batch 1 8 64] [--branch spatial channel] [--no-published]
    python benchmarks/bench_gpu.py --interpret-toy   # CPU, TRITON_INTERPRET=1, toy sizes

Without a CUDA device (and without ``--interpret-toy``) it prints
"GPU benchmark skipped: no CUDA device" and exits 0.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

if "--interpret-toy" in sys.argv:
    # must precede the first Triton kernel definition (imported with handS3C.ops._triton)
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# name: (D, P, Q); N = 16, R = 16 (SPEC §2)
BRANCHES = {"spatial": (512, 32, 32), "channel": (32, 512, 32)}
TOY_BRANCHES = {"spatial": (3, 3, 3), "channel": (2, 6, 2)}
N_STATE, DT_RANK = 16, 16


def make_inputs(Bn, D, P, Q, N, R, device, seed=0):
    """The published initialisation (SPEC §2): dt weights U(+-R^-0.5), dt bias = softplus^-1 of
    exp(U(log 1e-3, log 0.1)), A_logs = log(1..N), Ds = 1."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(Bn, D, P, Q, generator=g)
    xw = torch.randn(4, R + 2 * N, D, generator=g) / math.sqrt(D)
    wdt = (torch.rand(4, D, R, generator=g) * 2 - 1) * R ** -0.5
    dt = torch.exp(torch.rand(4, D, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
    bias = dt + torch.log(-torch.expm1(-dt))
    alog = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(4 * D, 1)
    ds = torch.ones(4 * D)
    return [t.to(device).requires_grad_() for t in (u, xw, wdt, bias, alog, ds)]


def backends(device, published: bool):
    from handS3C import _ext, reference
    from handS3C.ops import cross_scan_selective_scan

    out = {"triton": lambda *a: cross_scan_selective_scan(*a, backend="triton")}
    if device.type == "cuda" and _ext.HAS_CUDA_EXT:
        out["cuda"] = lambda *a: cross_scan_selective_scan(*a, backend="cuda")
    if published:
        fn = reference.mamba_selective_scan_cuda_fn() if device.type == "cuda" else None
        label = "published(mamba-cuda)"
        if fn is None:
            try:
                fn = reference.mamba_selective_scan_ref()
                label = "published(mamba-ref)"
            except ImportError:
                fn = reference.selective_scan_ref64
                label = "published(ref64)"
        out[label] = lambda *a, fn=fn: reference.cross_scan_selective_scan_ref(*a, scan_fn=fn)
    return out


def measure(fn, device, reps):
    """Median milliseconds of fn()."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=max(1, reps // 4), rep=reps, return_mode="median")
    times = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def peak_mb(fn, device):
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def run(batches, branches, device, published, reps, toy=False):
    table = BRANCHES if not toy else TOY_BRANCHES
    N, R = (N_STATE, DT_RANK) if not toy else (4, 2)
    print(f"{'branch':8} {'B':>3} {'backend':24} {'pass':8} {'median ms':>11} {'peak MiB':>9}")
    for branch in branches:
        D, P, Q = table[branch]
        for Bn in batches:
            args = make_inputs(Bn, D, P, Q, N, R, device)
            for name, f in backends(device, published).items():
                def fwd():
                    with torch.no_grad():
                        return f(*args)

                def fwd_bwd():
                    y = f(*args)
                    torch.autograd.grad(y.sum(), args)

                for label, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
                    if label == "fwd+bwd" and "mamba-ref" in name and P * Q > 1024 and not toy:
                        # autograd through a Python loop over L: O(L^2) (SPEC §5: > 10 min here)
                        print(f"{branch:8} {Bn:3d} {name:24} {label:8} skipped: Python reference backward is O(L^2)")
                        continue
                    try:
                        ms = measure(fn, device, reps)
                        mb = peak_mb(fn, device)
                    except Exception as e:  # e.g. out of memory for the published path at B=64
                        print(f"{branch:8} {Bn:3d} {name:24} {label:8} failed: {type(e).__name__}: {str(e)[:80]}")
                        continue
                    print(f"{branch:8} {Bn:3d} {name:24} {label:8} {ms:11.3f} {mb:9.1f}")
            del args
            if device.type == "cuda":
                torch.cuda.empty_cache()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--branch", choices=sorted(BRANCHES), nargs="+", default=["spatial", "channel"])
    ap.add_argument("--no-published", action="store_true", help="skip the published (materialising) path")
    ap.add_argument("--reps", type=int, default=100, help="do_bench time budget in ms (GPU)")
    ap.add_argument("--interpret-toy", action="store_true",
                    help="run end to end on the CPU under TRITON_INTERPRET=1 at toy sizes (a smoke test)")
    args = ap.parse_args(argv)
    if args.interpret_toy:
        print("toy run: TRITON_INTERPRET=1 on the CPU; timings are meaningless, this only checks the script")
        from handS3C.ops import _triton

        # small tiles and two chunks: the chunk-parallel passes run too; one channel block
        with _triton.scan_config(tile=4, chunk_tiles=2, block_d=4):
            run([1], args.branch, torch.device("cpu"), not args.no_published, reps=1, toy=True)
        return 0
    if not torch.cuda.is_available():
        print("GPU benchmark skipped: no CUDA device")
        return 0
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(dev)}; torch {torch.__version__}")
    run(args.batch, args.branch, dev, not args.no_published, args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
