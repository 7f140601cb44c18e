"""The training loop: :class:`Trainer` and :func:`train`.

One process (CPU or one GPU) or several under ``torchrun`` (DistributedDataParallel; only rank 0
writes snapshots, logs and curves).  Each epoch: a shuffled pass over the training split in a
fixed order derived from ``(seed, epoch)`` (a ``DistributedSampler`` with ``drop_last``), Adam
steps on the published weighted losses, the step LR schedule, then (when due) evaluation on the
evaluation split, a snapshot and pruning.  A run interrupted and resumed from its newest
snapshot ends with the same parameters as one that was not (bitwise on CPU with the
deterministic kernels and the same thread count): every random stream the loop uses is either
restored from the snapshot or derived from ``(seed, epoch, rank)``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torch.utils.data.distributed import DistributedSampler

from . import distributed as distmod
from .config import TrainConfig, resolve_memory_format
from .logs import RunLog, plot_curves
from ..model.hands3c import NonFiniteError
from .snapshot import (FAULT_ENV, SnapshotError, atomic_write_bytes, list_snapshots, load_newest_valid,
                       prune_snapshots, read_snapshot, save_snapshot, snapshot_name)

__all__ = ["Trainer", "train", "NonFiniteLossError", "DataLoaderWorkerError"]

LOSS_TERMS = ("mano_verts", "mano_joints", "mano_pose", "mano_shape", "joints_img", "total")
SNAPSHOT_FORMAT = 1


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class DataLoaderWorkerError(RuntimeError):
    """A data loader worker died; the message names the sample it was loading."""


class _TrackedDataset(Dataset):
    """Wraps the training dataset so that a failure names the sample: exceptions are re-raised
    with the index, and each worker records the index it is loading in shared memory, which
    the main process reads when the worker dies (a segfault or the OOM killer leaves no
    exception behind)."""

    def __init__(self, base: Dataset, slots: Optional[torch.Tensor]):
        self.base = base
        self.slots = slots
        self.name = type(base).__name__

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        info = get_worker_info()
        if info is not None and self.slots is not None:
            self.slots[info.id, 1] = os.getpid()
            self.slots[info.id, 0] = int(index)
        try:
            item = self.base[index]
        except Exception as e:
            raise RuntimeError(f"{self.name}: loading sample {index} failed: {type(e).__name__}: {e}") from e
        if info is not None and self.slots is not None:
            self.slots[info.id, 0] = -1
        return item


def _rng_state(device: torch.device) -> Dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss": py_state[2]},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _fault(kind: str, value: int) -> None:
    """Test hook (``HANDS3C_TRAIN_FAULT=kill-after-step:<n>``): SIGKILL this process."""
    if os.environ.get(FAULT_ENV, "") == f"{kind}:{value}":
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _flatten_metrics(res: Any) -> Dict[str, float]:
    """Numeric scalars of an evaluation result (dict, dataclass or object with ``as_dict``)."""
    if hasattr(res, "as_dict"):
        res = res.as_dict()
    elif hasattr(res, "metrics"):
        res = res.metrics
    elif hasattr(res, "__dataclass_fields__"):
        import dataclasses
        res = dataclasses.asdict(res)
    out: Dict[str, float] = {}
    if not isinstance(res, dict):
        return out
    for k, v in res.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, (int, float)) and not isinstance(v2, bool):
                    out[f"{k}/{k2}"] = float(v2)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[str(k)] = float(v)
        elif isinstance(v, torch.Tensor) and v.numel() == 1:
            out[str(k)] = float(v)
    return out


def _best_key(metrics: Dict[str, float]) -> Optional[str]:
    """The metric that marks the best snapshot: PA-MPJPE (lower is better) when present."""
    for want in ("pa_mpjpe_mm", "mpjpe_mm"):
        if want in metrics and math.isfinite(metrics[want]):
            return want
    return None


class Trainer:
    """Trains :class:`handS3C.HandS3C` as configured by ``cfg``.

    ``train_dataset`` / ``eval_dataset``: optional dataset objects following the data contract
    (by default built from ``cfg.dataset`` and ``cfg.data_root`` with :func:`handS3C.data.build_dataset`).
    ``log``: where messages go (rank 0 only).  :meth:`run` returns a summary dict.
    """

    def __init__(self, cfg: TrainConfig, train_dataset: Optional[Dataset] = None,
                 eval_dataset: Optional[Dataset] = None, log: Callable[[str], None] = print):
        self.cfg = cfg.validate()
        self._train_dataset = train_dataset
        self._eval_dataset = eval_dataset
        self._print = log

    # ------------------------------------------------------------------ set-up
    def _say(self, msg: str) -> None:
        if self.dist.is_main:
            self._print(msg)

    def _device(self) -> torch.device:
        want = self.cfg.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ValueError("--device cuda: no GPU is visible to this process")
            return torch.device("cuda", self.dist.local_rank if want == "cuda" else torch.device(want).index)
        if want != "cpu":
            raise ValueError(f"device must be auto, cpu or cuda, got {want!r}")
        return torch.device("cpu")

    def _datasets(self):
        cfg = self.cfg
        train_ds, eval_ds = self._train_dataset, self._eval_dataset
        if train_ds is None or (eval_ds is None and cfg.eval_every):
            if cfg.data_root is None:
                raise ValueError("--data-root is required (the folder holding the dataset)")
            from ..data import EVAL_SPLIT, build_dataset
            if train_ds is None:
                train_ds = build_dataset(cfg.dataset, cfg.data_root, "train", input_size=cfg.input_size,
                                         augment=cfg.augment, seed=cfg.seed)
            if eval_ds is None and cfg.eval_every:
                eval_ds = build_dataset(cfg.dataset, cfg.data_root, EVAL_SPLIT[cfg.dataset],
                                        input_size=cfg.input_size)
        return train_ds, eval_ds

    def _build(self):
        cfg = self.cfg
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        device_type = "cuda" if (cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())) \
            else "cpu"
        self.dist = distmod.setup(device_type)
        self.device = self._device()
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("--amp fp16 needs a GPU (float16 autocast with a gradient scaler); on CPU use --amp bf16")
        from ..model import HandS3C
        # the same initial weights on every rank and in every run with this seed
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.model = HandS3C(input_size=cfg.input_size, backend=cfg.backend, mano_model_path=cfg.mano_model_path,
                             backbone_weights=cfg.backbone_weights).to(self.device)
        # before the optimizer exists, so Adam's moments take the weights' layout
        self.memory_format = resolve_memory_format(cfg.memory_format, self.device.type)
        self.model = self.model.to(memory_format=self.memory_format)
        # per-rank streams from here on (nothing in the loop draws from them today, but they are
        # saved and restored so that anything that does stays reproducible)
        torch.manual_seed(cfg.seed + 7919 * self.dist.rank)
        self.optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=cfg.lr,
                                          weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=cfg.lr_step_epochs,
                                                         gamma=cfg.lr_gamma)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel
            self.net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                               else None)
        else:
            self.net = self.model
        self.train_ds, self.eval_ds = self._datasets()
        need = cfg.batch_size * self.dist.world_size
        if len(self.train_ds) < need:
            raise ValueError(f"the training split has {len(self.train_ds)} samples, fewer than one global batch "
                             f"({cfg.batch_size} per process x {self.dist.world_size} processes)")
        self.slots = torch.full((max(cfg.workers, 1), 2), -1, dtype=torch.int64).share_memory_() \
            if cfg.workers > 0 else None
        self.sampler = DistributedSampler(self.train_ds, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // cfg.batch_size

    def _loader(self, epoch: int) -> DataLoader:
        cfg = self.cfg
        self.sampler.set_epoch(epoch)
        if hasattr(self.train_ds, "set_epoch"):
            self.train_ds.set_epoch(epoch)  # augmentation draws depend on (seed, epoch, index)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + self.dist.rank)
        kw = dict(num_workers=cfg.workers, generator=gen, pin_memory=self.device.type == "cuda", drop_last=True)
        if cfg.workers > 0:
            kw.update(timeout=cfg.loader_timeout_s, persistent_workers=False)
        return DataLoader(_TrackedDataset(self.train_ds, self.slots), batch_size=cfg.batch_size,
                          sampler=self.sampler, **kw)

    # ------------------------------------------------------------------ state
    def _state(self, epoch: int, step: int, rng: List[Dict[str, Any]]) -> Dict[str, Any]:
        return {
            "epoch": epoch,
            "network": {"module." + k: v for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "hands3c": {
                "format": SNAPSHOT_FORMAT, "completed_epochs": epoch + 1, "step": step,
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "rng": rng, "world_size": self.dist.world_size, "config": self.cfg.to_dict(),
                "best": dict(self.best) if self.best else None, "skipped_batches": self.skipped,
                "eval_history": list(self.eval_history),
            },
        }

    def _restore(self, path: str, state: Dict[str, Any]) -> int:
        extra = state["hands3c"]
        saved_cfg = extra.get("config", {})
        for key in ("dataset", "input_size"):
            if saved_cfg.get(key, getattr(self.cfg, key)) != getattr(self.cfg, key):
                raise ValueError(f"resume: {path} was trained with {key}={saved_cfg[key]!r}, this run has "
                                 f"{key}={getattr(self.cfg, key)!r}")
        net = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state["network"].items()}
        self.model.load_state_dict(net, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
        if self.scaler is not None and extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])
        rng = extra.get("rng") or []
        if len(rng) == self.dist.world_size:
            _set_rng_state(rng[self.dist.rank], self.device)
        elif rng:
            self._say(f"resume: the snapshot has RNG states of {len(rng)} processes, this run has "
                      f"{self.dist.world_size}; rank 0's state is used everywhere")
            _set_rng_state(rng[0], self.device)
        if extra.get("world_size", self.dist.world_size) != self.dist.world_size:
            self._say("resume: the number of processes changed; the data order (and so the result) differs from "
                      "an uninterrupted run")
        self.best = extra.get("best") or {}
        self.skipped = int(extra.get("skipped_batches", 0))
        self.eval_history = list(extra.get("eval_history", []))
        return int(extra["step"])

    def _resume(self):
        """Returns (start epoch, global step, snapshot path or None)."""
        cfg = self.cfg
        mode = cfg.resume
        found = None
        if mode == "never":
            if list_snapshots(cfg.out):
                raise ValueError(f"--resume never: {cfg.out} already holds snapshots "
                                 f"({', '.join(os.path.basename(p) for _, p in list_snapshots(cfg.out))}); "
                                 "use another --out, remove them, or resume")
        elif mode == "auto":
            found = load_newest_valid(cfg.out, log=self._say)
        else:
            if not os.path.isfile(mode):
                raise FileNotFoundError(f"--resume: snapshot not found: {mode!r} (expected auto, never or a path)")
            try:
                found = (mode, read_snapshot(mode))
            except SnapshotError as e:
                raise ValueError(f"--resume {mode}: {e}") from e
        if found is None:
            return 0, 0, None
        path, state = found
        step = self._restore(path, state)
        start = int(state["epoch"]) + 1
        self._say(f"resume: continuing from {path} (epoch {start} of {cfg.epochs} done, step {step})")
        return start, step, path

    # ------------------------------------------------------------------ steps
    def _autocast(self):
        if self.cfg.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _train_step(self, batch, step: int, epoch: int, index_in_epoch: int):
        cfg = self.cfg
        # the images in the weights' layout: a mismatch would make the first convolution reorder them
        images = batch["image"].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        targets = {k: batch[k].to(self.device, non_blocking=True) for k in ("pose", "shape", "joints2d")}
        if "has_mano" in batch and not bool(batch["has_mano"].all()):
            idx = batch["index"][~batch["has_mano"].bool()].tolist() if "index" in batch else "?"
            raise ValueError(f"training samples {idx} have no MANO ground truth (has_mano false); the published "
                             "losses need pose and shape for every training sample")
        n = images.shape[0]
        micro = cfg.accumulate
        mb = n // micro
        self.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(len(LOSS_TERMS), dtype=torch.float64, device=self.device)
        for j in range(micro):
            sl = slice(j * mb, (j + 1) * mb)
            sync = contextlib.nullcontext() if (not self.dist.enabled or j == micro - 1) else self.net.no_sync()
            with sync:
                where = (f"step {step + 1} (epoch {epoch + 1}, batch {index_in_epoch + 1} of the epoch"
                         + (f", micro-batch {j + 1}" if micro > 1 else "") + ")")
                with self._autocast():
                    if cfg.check_finite:
                        try:
                            out = self.net(images[sl], check_finite=True)
                        except NonFiniteError as e:
                            # Under torchrun the agent stops the other ranks when this one exits.
                            idx = batch["index"][sl].tolist() if "index" in batch else []
                            raise NonFiniteLossError(f"non-finite values at {where}: {e}"
                                                     + (f" (samples {idx})" if idx else "")) from e
                    else:
                        out = self.net(images[sl])
                losses = self.model.loss(out, {k: v[sl] for k, v in targets.items()})
                values = torch.stack([losses[k].detach().float() for k in LOSS_TERMS])
                finite = torch.isfinite(values)
                bad_local = not bool(finite.all())
                if distmod.any_flag(self.dist, bad_local, self.device):
                    terms = [LOSS_TERMS[i] for i in range(len(LOSS_TERMS)) if not bool(finite[i])]
                    what = (", ".join(f"{t} = {float(values[LOSS_TERMS.index(t)])}" for t in terms)
                            if terms else f"on another process (rank != {self.dist.rank})")
                    if cfg.skip_nonfinite:
                        self.optimizer.zero_grad(set_to_none=True)
                        self.skipped += 1
                        self._say(f"non-finite loss at {where}: {what}; batch skipped "
                                  f"({self.skipped} skipped so far)")
                        return None
                    idx = batch["index"].tolist() if "index" in batch else []
                    raise NonFiniteLossError(f"non-finite loss at {where}: {what}"
                                             + (f" (samples {idx})" if idx else "")
                                             + "; pass --skip-nonfinite to skip such batches")
                total = losses["total"] / micro
                if self.scaler is not None:
                    self.scaler.scale(total).backward()
                else:
                    total.backward()
            sums += values.double() / micro
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return sums

    def _evaluate(self, epoch: int, step: int) -> Dict[str, float]:
        from ..evaluation.loop import evaluate_model
        res = evaluate_model(self.model, self.eval_ds, batch_size=self.cfg.eval_batch_size, protocol=self.cfg.dataset,
                             device=self.device, progress=self.cfg.progress, keep_predictions=False,
                             gt_mano=self.model.mano_layer)
        self.model.train()
        return _flatten_metrics(res)

    # ------------------------------------------------------------------ run
    def run(self) -> Dict[str, Any]:
        cfg = self.cfg
        self._build()
        try:
            return self._run()
        finally:
            distmod.teardown(self.dist)

    def _run(self) -> Dict[str, Any]:
        cfg = self.cfg
        main = self.dist.is_main
        self.best: Dict[str, Any] = {}
        self.skipped = 0
        self.eval_history: List[Dict[str, Any]] = []
        if main:
            os.makedirs(cfg.out, exist_ok=True)
        distmod.barrier(self.dist)
        start_epoch, step, resumed_from = self._resume()
        runlog = None
        if main:
            self._say("effective training config:\n" + cfg.to_json())
            atomic_write_bytes(os.path.join(cfg.out, "config.json"), (cfg.to_json() + "\n").encode())
            runlog = RunLog(cfg.out, resume_step=step if resumed_from else None)
            runlog.write({"type": "resume" if resumed_from else "start", "step": step, "epoch": start_epoch,
                          "snapshot": resumed_from, "world_size": self.dist.world_size,
                          "device": str(self.device), "config": cfg.to_dict()})
        from tqdm import tqdm
        last_losses: Dict[str, float] = {}
        last_snapshot = resumed_from
        try:
            for epoch in range(start_epoch, cfg.epochs):
                self.net.train()
                loader = self._loader(epoch)
                lr = self.optimizer.param_groups[0]["lr"]
                bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                           disable=not (main and cfg.progress), dynamic_ncols=True, leave=True)
                it = iter(loader)
                i = 0
                while True:
                    t0 = time.perf_counter()
                    try:
                        batch = next(it)
                    except StopIteration:
                        break
                    except RuntimeError as e:
                        raise self._loader_error(e) from e
                    t1 = time.perf_counter()
                    sums = self._train_step(batch, step, epoch, i)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    t2 = time.perf_counter()
                    i += 1
                    if sums is None:
                        bar.update(1)
                        continue
                    step += 1
                    imgs = batch["image"].shape[0] * self.dist.world_size
                    ips = imgs / max(t2 - t0, 1e-9)
                    if step % cfg.log_every == 0 or i == self.steps_per_epoch:
                        if self.dist.enabled:
                            torch.distributed.all_reduce(sums)
                            sums /= self.dist.world_size
                        last_losses = {k: float(v) for k, v in zip(LOSS_TERMS, sums.tolist())}
                        if main:
                            runlog.write({"type": "step", "epoch": epoch + 1, "step": step, "lr": lr,
                                          "loss": last_losses, "images_per_s": round(ips, 3),
                                          "data_s": round(t1 - t0, 4), "compute_s": round(t2 - t1, 4)})
                    bar.set_postfix(loss=f"{float(sums[-1]):.4g}", lr=f"{lr:.3g}", img_s=f"{ips:.1f}")
                    bar.update(1)
                    _fault("kill-after-step", step)
                bar.close()
                self.scheduler.step()
                completed = epoch + 1
                last = completed == cfg.epochs
                if cfg.eval_every and (completed % cfg.eval_every == 0 or last):
                    if main:
                        metrics = self._evaluate(epoch, step)
                        rec = {"epoch": completed, "step": step, "metrics": metrics}
                        self.eval_history.append(rec)
                        key = _best_key(metrics)
                        if key is not None and (not self.best or metrics[key] < self.best["value"]):
                            self.best = {"epoch": completed, "metric": key, "value": metrics[key],
                                         "file": snapshot_name(completed)}
                        runlog.write({"type": "eval", **rec, "best": dict(self.best) if self.best else None})
                        self._say(f"evaluation after epoch {completed}: "
                                  + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                    distmod.barrier(self.dist)
                saved_best = bool(self.best) and self.best.get("epoch") == completed
                if completed % cfg.save_every == 0 or last or saved_best:
                    rng = distmod.all_gather_object(self.dist, _rng_state(self.device))
                    if main:
                        path = save_snapshot(cfg.out, completed, self._state(epoch, step, rng))
                        last_snapshot = path
                        if self.best:
                            atomic_write_bytes(os.path.join(cfg.out, "best.json"),
                                               (json.dumps(self.best, indent=1) + "\n").encode())
                        protect = os.path.join(cfg.out, self.best["file"]) if self.best else None
                        prune_snapshots(cfg.out, cfg.keep, protect=protect)
                    distmod.barrier(self.dist)
                if main and self.eval_history and cfg.eval_every and (completed % cfg.eval_every == 0 or last):
                    plot_curves(runlog.path, os.path.join(cfg.out, "curves.png"),
                                title=f"HandS3C on {cfg.dataset} ({cfg.out})")
            if main:
                plot_curves(runlog.path, os.path.join(cfg.out, "curves.png"),
                            title=f"HandS3C on {cfg.dataset} ({cfg.out})")
                runlog.write({"type": "end", "step": step, "epoch": cfg.epochs, "skipped_batches": self.skipped})
        finally:
            if runlog is not None:
                runlog.close()
        return {"step": step, "epochs": cfg.epochs, "last_snapshot": last_snapshot, "best": self.best or None,
                "final_losses": last_losses, "skipped_batches": self.skipped, "eval_history": self.eval_history,
                "resumed_from": resumed_from}

    def _loader_error(self, e: RuntimeError) -> BaseException:
        msg = str(e)
        if "DataLoader worker" not in msg or self.slots is None:
            return e
        pids = [int(p) for p in re.findall(r"\d+", msg.split("exited")[0].split("killed")[0])]
        where = []
        for wid in range(self.slots.shape[0]):
            idx, pid = int(self.slots[wid, 0]), int(self.slots[wid, 1])
            if pid in pids or (not pids and pid > 0):
                where.append(f"worker {wid} (pid {pid}) was loading sample {idx}" if idx >= 0 else
                             f"worker {wid} (pid {pid}) died between samples (collating or sending a batch)")
        detail = "; ".join(where) if where else "the sample could not be determined"
        return DataLoaderWorkerError(f"a data loader worker died: {detail} of {type(self.train_ds).__name__} "
                                     f"({msg.splitlines()[0]})")


def train(cfg: TrainConfig, train_dataset: Optional[Dataset] = None, eval_dataset: Optional[Dataset] = None,
          log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run (or resume) training as configured; returns :meth:`Trainer.run`'s summary."""
    return Trainer(cfg, train_dataset, eval_dataset, log=log).run()
