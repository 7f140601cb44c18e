"""The benchmark entry point: ``python -m benchmarks`` (the README's ``make bench``).

Times each backend available on this machine against the published computation
("reference": cross-scan + mamba-ssm's selective scan + cross-merge) on the same inputs, in
one process, interleaved (reference, backend, ..., reference, backend, ... after warm-up): a
speed-up is the median of the per-round ratios (benchmarks/common.py), so a busy neighbour
slows both sides of every ratio alike.  Before timing anything it checks that
each backend's outputs match the reference (a benchmark of a wrong kernel is refused).  Prints
a table, writes it as JSON, and draws a PNG chart of the speed-ups.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time

import torch

from handS3C._atomic import atomic_write, atomic_write_json

from . import suites
from .common import Measurement

# The suites, one line each: name -> "module:function".  The function takes (args, device,
# backends) and returns a list of common.Measurement rows; its module is imported only when
# the suite runs.
SUITES = {
    "ops": "benchmarks.suites:suite_ops",
    "block": "benchmarks.suites:suite_block",
    "model": "benchmarks.suites:suite_model",
    "deploy": "benchmarks.deploy_bench:suite_deploy",
    "data": "benchmarks.data_bench:suite_data",
    "train": "benchmarks.train_bench:suite_train",
    "scaling": "benchmarks.scaling:suite_scaling",
}


def _suite(name):
    module, function = SUITES[name].split(":")
    return getattr(importlib.import_module(module), function)


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suites", default="ops,block,model",
                   help="comma list of: ops (the two operators and the merge), block (S3C block), "
                        "model (full model inference and training step), data (the training data pipeline "
                        "against the published recipe), scaling (CPU selective_scan_fn cost per position over "
                        "L and batch, with a log-log chart). Default: all")
    p.add_argument("--backends", default="auto",
                   help="comma list of fused backends to time beside the reference (cpu, cuda, triton); "
                        "'auto' = every backend available on this machine")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=2, help="batch size of the operator and block benchmarks")
    p.add_argument("--model-batches", default="1,8", help="inference batch sizes of the model suite")
    p.add_argument("--train-batch", type=int, default=4, help="batch size of the training step")
    p.add_argument("--input-size", type=int, default=256, choices=(224, 256))
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="float32, or bfloat16 autocast for the model suite")
    p.add_argument("--runs", type=int, default=3, help="timed runs per case (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reference-backward", action="store_true",
                   help="also time the published path's backward on the spatial branch (autograd "
                        "through mamba-ssm's Python loop: about 5 minutes at B=2, timed once, SPEC §5); "
                        "the channel branch's (L=16384) takes hours and is never timed on CPU")
    p.add_argument("--mano-model-path", default=None,
                   help="MANO_RIGHT.pkl for the model suite (default: placeholder MANO buffers, same cost)")
    p.add_argument("--out", default="benchmarks/results", help="folder for results.json and speedups.png")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _available_backends(device):
    from handS3C import _ext
    from handS3C.ops._backend import triton_available
    found = []
    if device.type == "cpu" and _ext.HAS_CPU_EXT:
        found.append("cpu")
    if device.type == "cuda":
        if _ext.HAS_CUDA_EXT:
            found.append("cuda")
        if triton_available():
            found.append("triton")
    return found


def _table(rows):
    header = f"{'case':<44} {'backend':<10} {'median':>11} {'speed-up':>9} {'peak MB':>9}  note"
    lines = [header, "-" * len(header)]
    for r in rows:
        t = "n/a" if r.median_s != r.median_s else (f"{r.median_s * 1e3:9.1f} ms")
        sp = "" if r.speedup is None else f"{r.speedup:8.1f}x"
        mem = "" if r.peak_mem_mb is None else f"{r.peak_mem_mb:9.0f}"
        lines.append(f"{r.name:<44} {r.backend:<10} {t:>11} {sp:>9} {mem:>9}  {r.note}")
    return "\n".join(lines)


def _chart(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    pts = [(f"{r.name}\n[{r.backend}]", r.speedup) for r in rows if r.speedup is not None]
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(pts) + 1.5))
    ax.barh([p[0] for p in pts], [p[1] for p in pts], color="#3b7dd8")
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over the published path (reference backend), log scale")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    for i, (_, v) in enumerate(pts):
        ax.text(v, i, f" {v:.1f}x", va="center", fontsize=7)
    fig.tight_layout()
    # written atomically: a reader never finds half a chart (handS3C._atomic)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return True


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device)
    backends = _available_backends(device) if args.backends == "auto" else \
        [b.strip() for b in args.backends.split(",") if b.strip()]
    wanted = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SUITES]
    if unknown:
        raise SystemExit(f"unknown suite(s) {unknown}; choose from {sorted(SUITES)}")
    print(f"HandS3C kernels benchmark | device {device} | backends: reference + {backends} | "
          f"torch {torch.__version__} | {torch.get_num_threads()} threads | {platform.processor() or platform.machine()}")
    if device.type == "cpu":
        print(f"CPU kernels dispatch to: {torch.ops.hands3c.cpu_isa()}")
    rows: list[Measurement] = []
    t0 = time.time()
    for name in wanted:
        rows.extend(_suite(name)(args, device, backends))
    print()
    print(_table(rows))
    os.makedirs(args.out, exist_ok=True)
    result = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "argv": sys.argv[1:] if argv is None else argv, "rows": [r.as_dict() for r in rows],
              "extra": suites.EXTRA, "wall_s": time.time() - t0}
    atomic_write_json(os.path.join(args.out, "results.json"), result, indent=1)
    chart = os.path.join(args.out, "speedups.png")
    drew = _chart(rows, chart)
    for k, v in suites.EXTRA.items():
        print(f"{k}: {v}")
    print(f"\nwrote {os.path.join(args.out, 'results.json')}" + (f" and {chart}" if drew else "") +
          f" in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
