"""The ``deploy`` suite: full-model CPU inference latency in the ways one can deploy it.

Configurations, each at every batch of ``--model-batches`` (default 1 and 8):

* ``eager``: the fused ``cpu`` backend, float32, eager PyTorch (the baseline of the ratios);
* ``channels_last``: the same with the model and input in ``torch.channels_last``;
* ``compile``: ``torch.compile(model)`` (default inductor; compile time reported separately);
* ``bf16``: bfloat16 autocast, only where the CPU has AVX512-BF16 or AMX (checked against
  SPEC §4's bfloat16 tolerance instead of float32's);
* ``bf16_channels_last``: bfloat16 autocast on the ``channels_last`` model (same condition);
* ``onnxruntime``: the file from :func:`handS3C.export.export_onnx` (dynamic batch) on
  onnxruntime's CPU provider.

Every configuration's ``joints2d``/``joints3d``/``verts`` are checked against eager float32
before it is timed; for the bfloat16 configurations every output (``pose``, ``pose_rotmat``,
``shape`` and ``heatmaps`` too) is also compared under SPEC §4's bfloat16 tolerance and the
result is printed (``deploy: bf16 accuracy ...``), since bf16 is a candidate default only if
all of them pass; the configurations are timed interleaved in one process, and a row's
"speed-up" is the median per-round ratio eager / configuration (below 1: slower than eager).
Writes ``deploy.png`` (latency per configuration) into ``--out``.
"""
from __future__ import annotations

import os
import tempfile
import time

import torch

from handS3C._atomic import atomic_write

from .common import Measurement, interleaved, median, ratio

TOL = {"float32": (6e-4, 2e-3), "bfloat16": (3e-2, 5e-2)}
KEYS = ("joints2d", "joints3d", "verts")


def cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _check(config, got, want, dtype):
    rtol, atol = TOL[dtype]
    for k in KEYS:
        g = torch.as_tensor(got[k]).float()
        if not torch.allclose(g, want[k].float(), rtol=rtol, atol=atol):
            err = (g - want[k].float()).abs().max().item()
            raise RuntimeError(f"deploy: {config} disagrees with eager float32 on {k} (max abs error {err:.3g}, "
                               f"{dtype} tolerance rtol {rtol} atol {atol}); refusing to time it")


def _chart(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    batches = sorted({r.name for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 3.2), squeeze=False)
    for ax, b in zip(axes[0], batches):
        sel = [r for r in rows if r.name == b and r.median_s == r.median_s]
        ax.barh([r.backend for r in sel], [r.median_s * 1e3 for r in sel], color="#3b7dd8")
        for i, r in enumerate(sel):
            ax.text(r.median_s * 1e3, i, f" {r.median_s * 1e3:.0f} ms", va="center", fontsize=8)
        ax.set_title(b, fontsize=9)
        ax.set_xlabel("median latency, ms")
        ax.invert_yaxis()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return True


def _all_outputs_note(got, want):
    """Every output against eager float32 under SPEC §4's bfloat16 tolerance: per key the worst
    |got - want| / (atol + rtol |want|) (at most 1 passes) and the max abs error."""
    rtol, atol = TOL["bfloat16"]
    parts = []
    for k in ("joints2d", "joints3d", "verts", "pose", "pose_rotmat", "shape", "heatmaps"):
        g, w = torch.as_tensor(got[k]).double(), want[k].double()
        err = (g - w).abs()
        worst = float((err / (atol + rtol * w.abs())).max())
        parts.append(f"{k} {worst:.2f} of bound (max abs {float(err.max()):.3g})" + (" FAILS" if worst > 1 else ""))
    return ", ".join(parts)


def suite_deploy(args, device, backends, only=None):
    """``only``: names of the configurations to time beside ``eager`` (default all)."""
    from handS3C import HandS3C
    from handS3C.export import export_onnx
    from handS3C.export.onnx_export import MODEL_OUTPUTS

    from .suites import EXTRA

    if device.type != "cpu":
        return [Measurement("deploy", "-", float("nan"), [], None, "the deploy suite measures CPU inference")]
    S = args.input_size
    tmp_mano = tempfile.TemporaryDirectory()
    mano = args.mano_model_path
    if mano is None:
        # real-looking MANO arrays, so that the vertex and joint checks compare meaningful values
        from handS3C.data.synthetic import write_synthetic_mano
        mano = write_synthetic_mano(os.path.join(tmp_mano.name, "MANO_RIGHT.pkl"), seed=0)
        EXTRA["deploy: MANO"] = "the procedural synthetic MANO model (no --mano-model-path given)"
    torch.manual_seed(0)
    model = HandS3C(input_size=S, backend="cpu", mano_model_path=mano).eval()
    batches = [int(b) for b in str(args.model_batches).split(",") if b.strip()]

    cl_model = HandS3C(input_size=S, backend="cpu", mano_model_path=mano).eval()
    cl_model.load_state_dict(model.state_dict())
    cl_model = cl_model.to(memory_format=torch.channels_last)
    compiled = torch.compile(model) if only is None or "compile" in only else None
    with tempfile.TemporaryDirectory() as tmp:
        sess = None
        if only is None or "onnxruntime" in only:
            onnx_path = os.path.join(tmp, "hands3c.onnx")
            t1 = time.perf_counter()
            export_onnx(model, onnx_path, S, dynamic_batch=True)
            EXTRA["deploy: ONNX export time"] = f"{time.perf_counter() - t1:.1f} s"
            import onnxruntime as ort

            sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            EXTRA["deploy: onnxruntime"] = f"{ort.__version__}, CPUExecutionProvider, default threads"
        EXTRA["deploy: bf16"] = "AVX512-BF16/AMX present" if cpu_has_bf16() else "no AVX512-BF16/AMX: not timed"
        rows = []
        for b in batches:
            x = torch.rand(b, 3, S, S, generator=torch.Generator().manual_seed(b))
            x_cl = x.contiguous(memory_format=torch.channels_last)
            x_np = x.numpy()

            def eager():
                with torch.inference_mode():
                    return model(x)

            def channels_last():
                with torch.inference_mode():
                    return cl_model(x_cl)

            def compile_():
                with torch.inference_mode():
                    return compiled(x)

            def bf16():
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    return model(x)

            def bf16_channels_last():
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    return cl_model(x_cl)

            def onnxruntime():
                return dict(zip(MODEL_OUTPUTS, sess.run(None, {"images": x_np})))

            want = eager()
            impls = {"eager": (eager, "float32"), "channels_last": (channels_last, "float32"),
                     "compile": (compile_, "float32"), "onnxruntime": (onnxruntime, "float32")}
            if cpu_has_bf16():
                impls["bf16"] = (bf16, "bfloat16")
                impls["bf16_channels_last"] = (bf16_channels_last, "bfloat16")
            impls = {k: v for k, v in impls.items() if only is None or k == "eager" or k in only}
            for name, (fn, dtype) in impls.items():
                tc = time.perf_counter()
                got = fn()
                _check(name, got, want, dtype)       # also the warm-up (and torch.compile's compile)
                if dtype == "bfloat16":
                    EXTRA[f"deploy: bf16 accuracy [{name}, batch {b}]"] = _all_outputs_note(got, want)
                if name == "compile" and "deploy: torch.compile first call" not in EXTRA:
                    EXTRA["deploy: torch.compile first call"] = f"{time.perf_counter() - tc:.1f} s (batch {b})"
            times = interleaved({k: v[0] for k, v in impls.items()}, rounds=args.runs, warmup=args.warmup)
            for name, (fn, dtype) in impls.items():
                sp = None if name == "eager" else ratio(times["eager"], times[name])
                rows.append(Measurement(f"deploy {S}px batch {b}", name, median(times[name]), times[name], None,
                                        f"{dtype}; speed-up = eager / this", sp))
                print(f"deploy {S}px batch {b}: {name:<14} {median(times[name]) * 1e3:9.1f} ms"
                      + ("" if sp is None else f"   eager/this {sp:.2f}"), flush=True)
    tmp_mano.cleanup()
    os.makedirs(args.out, exist_ok=True)
    if _chart(rows, os.path.join(args.out, "deploy.png")):
        EXTRA["deploy: chart"] = os.path.join(args.out, "deploy.png")
    return rows


CONFIGS = ("eager", "channels_last", "compile", "bf16", "bf16_channels_last", "onnxruntime")


def main(argv=None):
    """``python -m benchmarks.deploy_bench [--configs channels_last,bf16,...]``: the deploy suite
    alone, optionally on a subset of the configurations (eager is always timed: the baseline)."""
    import argparse
    import types

    from .suites import EXTRA

    p = argparse.ArgumentParser(prog="python -m benchmarks.deploy_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {list(CONFIGS)}")
    p.add_argument("--model-batches", default="1,8")
    p.add_argument("--input-size", type=int, default=256, choices=(224, 256))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--mano-model-path", default=None)
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    only = [c.strip() for c in a.configs.split(",") if c.strip()]
    bad = [c for c in only if c not in CONFIGS]
    if bad:
        p.error(f"--configs: unknown {bad}; choose from {list(CONFIGS)}")
    args = types.SimpleNamespace(input_size=a.input_size, mano_model_path=a.mano_model_path,
                                 model_batches=a.model_batches, runs=a.runs, warmup=a.warmup, out=a.out)
    print(f"deploy | load average {os.getloadavg()[0]:.1f} | {torch.get_num_threads()} threads", flush=True)
    rows = suite_deploy(args, torch.device("cpu"), ["cpu"], only=only)
    for k, v in EXTRA.items():
        print(f"{k}: {v}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return rows


if __name__ == "__main__":
    main()
