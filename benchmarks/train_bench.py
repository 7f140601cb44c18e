"""The ``train`` suite: images per second of a complete training iteration.

One iteration = the next batch from a ``DataLoader`` over a synthetic dataset on disk (JPEG
decode + the published augmentation, ``handS3C.data``), forward, the published weighted loss,
backward and an Adam step.  The loader's time (waiting for the batch) and the compute time are
reported apart.  Backends are timed interleaved (one iteration of each per round, A B A B ...),
in one process, and the speed-up is the median of the per-round ratios.

On CPU the published path ("reference": mamba-ssm's ``selective_scan_ref``) is timed on the
forward and loss only, a lower bound: its backward through autograd is O(L^2) and takes hours
at the channel branch's L = 16384 (SPEC §5), so its speed-up reads "at least".  On a GPU the
reference is the published path on mamba-ssm's CUDA kernels, timed on the full iteration.

The second table (:func:`run_step_configs`) is the training step itself in four numeric
configurations of the fused backend: float32 or bfloat16 autocast, each with the model and
images contiguous (NCHW) or ``channels_last`` (NHWC).  Each configuration is a
:class:`handS3C.training.Trainer` built from the same seed (so the same initial weights) and
its own step function (``Trainer._train_step``: forward, losses, backward, Adam) runs on the
same pre-loaded batches, one configuration after the other in every round (A B C D, A B C D,
...), so the data loader is not timed and every configuration sees the same data in the same
order.  The speed-up is the median of the per-round ratios against float32 contiguous.  Before
timing, every configuration's eval-mode outputs are compared with float32 contiguous under
SPEC §4's tolerance of its dtype (float32: rtol 6e-4, atol 2e-3; bfloat16: rtol 3e-2, atol
5e-2), output by output; the losses of every step are kept, so the short run (warm-up + timed
rounds) shows whether bfloat16's loss tracks float32's (from the second step on, even two
float32 layouts part somewhat: Adam's first update is about lr * sign(grad), and gradients that
are rounding noise take either sign).  Each step's CPU time (this process, all threads) is kept
beside its wall-clock time: on a shared machine it moves less with the neighbours' load.  ``TODAY_S`` is the float32 step of
RESULTS.md's 2026-11-30 run, which the default configuration is also divided by (a figure
from another run, so not an interleaved ratio).

Run: ``python -m benchmarks --suites train [--train-batch 4] [--input-size 256]``, or only the
configurations: ``python -m benchmarks.train_bench [--batch 4] [--rounds 5]``.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch

from .common import Measurement, ratio

__all__ = ["suite_train", "run_train_bench", "run_step_configs", "STEP_CONFIGS", "TODAY_S"]

# name -> (TrainConfig.amp, TrainConfig.memory_format); the first is the baseline of the ratios
STEP_CONFIGS = {
    "fp32 contiguous": ("off", "contiguous"),
    "fp32 channels_last": ("off", "channels_last"),
    "bf16 contiguous": ("bf16", "contiguous"),
    "bf16 channels_last": ("bf16", "channels_last"),
}
# RESULTS.md, `make bench` of 2026-11-30: the fused float32 training step, 256 px, batch 4 (seconds)
TODAY_S = 2.315
OUTPUT_KEYS = ("joints2d", "joints3d", "verts", "pose", "pose_rotmat", "shape", "heatmaps")
SPEC_TOL = {"off": (6e-4, 2e-3), "bf16": (3e-2, 5e-2)}   # SPEC §4: float32, bfloat16 (rtol, atol)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_train_bench(device, backends, batch=4, input_size=256, rounds=3, warmup=1, workers=1,
                    data_root=None, progress=True):
    """Returns {backend: {"total": [s], "loader": [s], "compute": [s], "full_step": bool}}."""
    import handS3C
    from handS3C.data import build_dataset, make_synthetic

    fmt = "freihand" if input_size == 224 else "ho3d"
    tmp = None
    if data_root is None:
        tmp = tempfile.TemporaryDirectory(prefix="hands3c-train-bench-")
        data_root = tmp.name
    need = batch * (rounds + warmup)
    n = (need + 3) // 4 if fmt == "freihand" else need      # FreiHAND: 4 images per unique sample
    info = make_synthetic(fmt, data_root, n=n, n_eval=2, seed=11, progress=progress)
    ds = build_dataset(fmt, data_root, "train", input_size=input_size, augment=True, seed=0)
    names = ["reference"] + [b for b in backends if b != "reference"]
    runs = {}
    for b in names:
        torch.manual_seed(0)
        model = handS3C.HandS3C(input_size=input_size, backend=b, mano_model_path=info["mano_model_path"]).to(device)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                             generator=torch.Generator().manual_seed(0),
                                             persistent_workers=workers > 0, pin_memory=device.type == "cuda")
        full = b != "reference" or device.type == "cuda"
        runs[b] = {"model": model, "opt": opt, "loader": loader, "it": iter(loader), "full_step": full,
                   "total": [], "loader_s": [], "compute": []}

    def one(b, record):
        r = runs[b]
        t0 = time.perf_counter()
        try:
            batch_ = next(r["it"])
        except StopIteration:
            r["it"] = iter(r["loader"])
            batch_ = next(r["it"])
        t1 = time.perf_counter()
        images = batch_["image"].to(device, non_blocking=True)
        targets = {k: batch_[k].to(device) for k in ("pose", "shape", "joints2d")}
        model, opt = r["model"], r["opt"]
        if r["full_step"]:
            opt.zero_grad(set_to_none=True)
            loss = model.loss(model(images), targets)["total"]
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                model.loss(model(images), targets)["total"]
        _sync(device)
        t2 = time.perf_counter()
        if record:
            r["total"].append(t2 - t0)
            r["loader_s"].append(t1 - t0)
            r["compute"].append(t2 - t1)

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=(warmup + rounds) * len(names), desc="train iteration", leave=False)
    for k in range(warmup + rounds):
        for b in names:
            one(b, record=k >= warmup)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    for r in runs.values():
        del r["model"], r["opt"], r["it"], r["loader"]
    if tmp is not None:
        tmp.cleanup()
    return {"format": fmt, "runs": runs}


def compare_outputs(got, want, rtol, atol):
    """Per output key: {"max_abs": worst |got - want|, "worst_over_bound": max of |got - want| /
    (atol + rtol |want|) (at most 1 passes), "rel_l2": ||got - want|| / ||want - mean(want)||}."""
    res = {}
    for k in OUTPUT_KEYS:
        g, w = got[k].detach().double(), want[k].detach().double()
        err = (g - w).abs()
        res[k] = {"max_abs": float(err.max()), "worst_over_bound": float((err / (atol + rtol * w.abs())).max()),
                  "rel_l2": float((g - w).norm() / (w - w.mean()).norm().clamp_min(1e-30))}
    return res


def default_config_name(device_type="cpu"):
    """The STEP_CONFIGS entry that ``hands3c train``'s defaults pick on ``device_type``."""
    import torch
    from handS3C.training import TrainConfig
    from handS3C.training.config import resolve_memory_format

    d = TrainConfig(dataset="ho3d", out="-")
    fmt = "channels_last" if resolve_memory_format(d.memory_format, device_type) == torch.channels_last \
        else "contiguous"
    return next(n for n, (amp, mf) in STEP_CONFIGS.items() if amp == d.amp and mf == fmt)


def run_step_configs(device, batch=4, input_size=256, rounds=3, warmup=1, configs=None, backend="auto",
                     data_root=None, progress=True):
    """Times ``Trainer._train_step`` in each configuration of ``configs`` (names of
    :data:`STEP_CONFIGS`, default all), interleaved, on ``warmup + rounds`` pre-loaded batches of
    ``batch`` images of ``input_size`` px from a synthetic set (``make_synthetic``).

    Returns {"format", "accuracy": {config: compare_outputs(...)}, "runs": {config: {"step_s": [wall
    s per timed round], "cpu_s": [this process's CPU s, all threads, per timed round], "loss": [total
    loss per step, warm-up included]}}}.  On a shared machine the CPU time is the steadier cost:
    other jobs stretch the wall-clock time of a step but not the work it does."""
    import handS3C  # noqa: F401  (the ops must be registered before a Trainer builds the model)
    from handS3C.data import build_dataset, make_synthetic
    from handS3C.training import Trainer
    from handS3C.training.config import config_for

    names = list(configs or STEP_CONFIGS)
    unknown = [n for n in names if n not in STEP_CONFIGS]
    if unknown:
        raise ValueError(f"run_step_configs: configs must be among {list(STEP_CONFIGS)}, got {unknown}")
    base = next(iter(STEP_CONFIGS))
    if base not in names:
        names.insert(0, base)
    fmt = "freihand" if input_size == 224 else "ho3d"
    tmp = tempfile.TemporaryDirectory(prefix="hands3c-step-bench-")
    root = data_root or os.path.join(tmp.name, "data")
    n_batches = warmup + rounds
    need = batch * n_batches
    info = make_synthetic(fmt, root, n=(need + 3) // 4 if fmt == "freihand" else need, n_eval=2, seed=11,
                          progress=progress)
    ds = build_dataset(fmt, root, "train", input_size=input_size, augment=True, seed=0)
    collate = torch.utils.data.default_collate
    batches = [collate([ds[(k * batch + i) % len(ds)] for i in range(batch)]) for k in range(n_batches)]
    trainers, runs = {}, {}
    for name in names:
        amp, mf = STEP_CONFIGS[name]
        cfg = config_for(fmt, os.path.join(tmp.name, name.replace(" ", "_")), data_root=root,
                         mano_model_path=info["mano_model_path"], input_size=input_size, batch_size=batch,
                         amp=amp, memory_format=mf, backend=backend, device=str(device), workers=0, eval_every=0,
                         progress=False, seed=0)
        t = Trainer(cfg, train_dataset=ds, log=lambda m: None)
        t._build()
        trainers[name] = t
        runs[name] = {"step_s": [], "cpu_s": [], "loss": []}
    # accuracy before any step, while every configuration still has the same weights
    accuracy = {}
    images = batches[0]["image"].to(device)
    outs = {}
    for name, t in trainers.items():
        t.model.eval()
        with torch.no_grad(), t._autocast():
            outs[name] = t.model(images.contiguous(memory_format=t.memory_format))
        t.model.train()
    for name in names:
        if name == base:
            continue
        amp = STEP_CONFIGS[name][0]
        accuracy[name] = compare_outputs(outs[name], outs[base], *SPEC_TOL[amp])
        if amp == "off":
            worst = max(accuracy[name].values(), key=lambda r: r["worst_over_bound"])
            if worst["worst_over_bound"] > 1:
                raise RuntimeError(f"train step bench: {name} disagrees with {base} beyond float32's tolerance "
                                   f"({accuracy[name]}); refusing to time it")
    del outs
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_batches * len(names), desc="train step configurations", leave=False)
    for k in range(n_batches):
        for name in names:
            t = trainers[name]
            c0, t0 = time.process_time(), time.perf_counter()
            sums = t._train_step(batches[k], k, 0, k)
            _sync(device)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if k >= warmup:
                runs[name]["step_s"].append(dt)
                runs[name]["cpu_s"].append(dc)
            runs[name]["loss"].append(float(sums[-1]))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    trainers.clear()
    tmp.cleanup()
    return {"format": fmt, "accuracy": accuracy, "runs": runs}


def _accuracy_note(acc):
    over = {k: v["worst_over_bound"] for k, v in acc.items() if v["worst_over_bound"] > 1}
    if not over:
        worst = max(acc, key=lambda k: acc[k]["worst_over_bound"])
        return f"outputs within tolerance (worst {worst} at {acc[worst]['worst_over_bound']:.3f} of its bound)"
    return "OUTSIDE tolerance: " + ", ".join(f"{k} {v:.3f}x its bound (max abs {acc[k]['max_abs']:.3g})"
                                            for k, v in over.items())


def step_config_rows(res, batch, input_size, device_type="cpu"):
    """Measurement rows (and extra lines) of :func:`run_step_configs`' result."""
    runs = res["runs"]
    base = next(iter(runs))
    default = default_config_name(device_type)
    name = f"train step {input_size}px B={batch} (pre-loaded)"
    rows, extra = [], {}
    for cfg_name, r in runs.items():
        med = statistics.median(r["step_s"])
        note = f"{batch / med:.2f} img/s"
        if r.get("cpu_s"):
            note += f"; CPU {statistics.median(r['cpu_s']):.1f} s"
            if cfg_name != base:
                note += f", CPU-time ratio {ratio(runs[base]['cpu_s'], r['cpu_s']):.2f}x"
        note += f"; loss first/last step {r['loss'][0]:.4g}/{r['loss'][-1]:.4g}"
        if cfg_name in res["accuracy"]:
            note += "; " + _accuracy_note(res["accuracy"][cfg_name])
        if cfg_name == default:
            note += "; the default"
        rows.append(Measurement(name, cfg_name, med, list(r["step_s"]), None, note,
                                None if cfg_name == base else ratio(runs[base]["step_s"], r["step_s"])))
    d = runs[default]["step_s"]
    extra[f"{name}: default ({default})"] = (
        f"{statistics.median(d) * 1e3:.0f} ms, {ratio(runs[base]['step_s'], d):.2f}x {base} (interleaved); "
        f"{TODAY_S / statistics.median(d):.2f}x RESULTS.md's {TODAY_S * 1e3:.0f} ms (another run and machine load)"
        + (f"; CPU-time ratio {ratio(runs[base]['cpu_s'], runs[default]['cpu_s']):.2f}x {base}"
           if runs[default].get("cpu_s") and default != base else ""))
    for cfg_name, r in runs.items():
        extra[f"{name}: loss per step [{cfg_name}]"] = " ".join(f"{v:.4g}" for v in r["loss"])
    return rows, extra


def suite_train(args, device, backends):
    from . import suites
    batches = [int(x) for x in str(getattr(args, "train_batch", 4)).split(",")]
    S = getattr(args, "input_size", 256)
    rows = []
    for B in batches:
        res = run_train_bench(device, backends, batch=B, input_size=S, rounds=getattr(args, "runs", 3),
                              warmup=getattr(args, "warmup", 1), progress=not getattr(args, "no_progress", False))
        ref = res["runs"]["reference"]
        name = f"train iteration {res['format']} {S}px B={B}"
        for b, r in res["runs"].items():
            med = statistics.median(r["total"])
            ips = B / med
            note = (f"{ips:.2f} img/s; loader {statistics.median(r['loader_s']) * 1e3:.0f} ms, "
                    f"compute {statistics.median(r['compute']) * 1e3:.0f} ms")
            if not r["full_step"]:
                note = "lower bound: forward + loss only (the published backward is O(L^2)); " + note
            m = Measurement(name, b, med, list(r["total"]), None, note)
            if b != "reference":
                m.speedup = ratio(ref["total"], r["total"])
                if not ref["full_step"]:
                    m.note = "speed-up is a lower bound; " + m.note
            rows.append(m)
            extra = getattr(suites, "EXTRA", None)
            if isinstance(extra, dict):
                extra[f"{name} [{b}]"] = note
        fused = [b for b in backends if b != "reference"]
        if fused:
            res = run_step_configs(device, batch=B, input_size=S, rounds=getattr(args, "runs", 3),
                                   warmup=getattr(args, "warmup", 1), backend=fused[0],
                                   progress=not getattr(args, "no_progress", False))
            more, lines = step_config_rows(res, B, S, device.type)
            rows.extend(more)
            if isinstance(getattr(suites, "EXTRA", None), dict):
                suites.EXTRA.update(lines)
    return rows


def main(argv=None):
    import argparse
    import platform

    p = argparse.ArgumentParser(prog="python -m benchmarks.train_bench",
                                description="The training step in float32 / bf16 autocast x contiguous / "
                                            "channels_last, interleaved (see the module docstring).")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=4, help="images per step (default 4)")
    p.add_argument("--input-size", type=int, default=256, choices=(224, 256))
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--configs", default=",".join(STEP_CONFIGS),
                   help=f"comma list of {list(STEP_CONFIGS)} (float32 contiguous is always run: the baseline)")
    p.add_argument("--backend", default="auto", help="the S3C block's backend (default auto)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.batch < 1 or args.rounds < 1 or args.warmup < 0:
        p.error(f"--batch and --rounds must be >= 1 and --warmup >= 0, got {args.batch}, {args.rounds}, "
                f"{args.warmup}")
    device = torch.device(args.device)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    print(f"train step configurations | {device} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
          f"{platform.processor() or platform.machine()} | load average {os.getloadavg()[0]:.1f}", flush=True)
    res = run_step_configs(device, batch=args.batch, input_size=args.input_size, rounds=args.rounds,
                           warmup=args.warmup, configs=configs, backend=args.backend,
                           progress=not args.no_progress)
    rows, extra = step_config_rows(res, args.batch, args.input_size, device.type)
    for r in rows:
        sp = "" if r.speedup is None else f"{r.speedup:5.2f}x"
        print(f"{r.name:<34} {r.backend:<20} {r.median_s * 1e3:9.0f} ms {sp:>7}  {r.note}")
    for cfg_name, acc in res["accuracy"].items():
        print(f"accuracy [{cfg_name}] vs fp32 contiguous: " + ", ".join(
            f"{k} max abs {v['max_abs']:.3g} ({v['worst_over_bound']:.2f} of bound, rel L2 {v['rel_l2']:.3g})"
            for k, v in acc.items()))
    for k, v in extra.items():
        print(f"{k}: {v}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return res


if __name__ == "__main__":
    main()
