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

Run: ``python -m benchmarks --suites train [--train-batch 4] [--input-size 256]``.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch

from .common import Measurement, ratio

__all__ = ["suite_train", "run_train_bench"]


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
    return rows
