"""Typed training configurations, one per dataset, holding the published schedules (SPEC §1).

Precedence when a run is configured: the published defaults of the dataset
(:data:`PUBLISHED`), then a ``--config`` file (JSON, or TOML when the name ends in ``.toml``),
then explicit command-line flags.  :meth:`TrainConfig.validate` checks every field and names
the one that is wrong.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

__all__ = ["TrainConfig", "PUBLISHED", "AMP_MODES", "MEMORY_FORMATS", "RESUME_HELP", "config_for",
           "load_config_file", "resolve_memory_format"]

DATASETS = ("freihand", "ho3d", "dexycb")
AMP_MODES = ("off", "bf16", "fp16")
# The layout of the model's 4-D weights and of the images.  "auto" is channels_last on CPU and
# contiguous (NCHW) elsewhere; see resolve_memory_format for why.
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
BACKENDS = ("auto", "cpu", "cuda", "triton", "reference")
RESUME_HELP = "auto (newest valid snapshot in --out, else a fresh start), never (fresh start), or a snapshot path"


@dataclass
class TrainConfig:
    """Everything a training run needs.  Units: ``lr`` per optimizer step (Adam), epochs are
    full passes over the training split, ``batch_size`` is per process (per GPU), as published.

    ``lr`` is multiplied by ``lr_gamma`` every ``lr_step_epochs`` epochs (a step schedule).
    ``accumulate`` splits each per-process batch into that many micro-batches whose gradients
    are summed before one optimizer step (same effective batch, less memory).
    ``amp``: ``off`` (float32), ``bf16`` (bfloat16 autocast, CPU or GPU) or ``fp16`` (GPU, with a
    gradient scaler).  ``memory_format``: ``auto``, ``channels_last`` or ``contiguous``, the
    layout of the convolutions' weights and of the images (:func:`resolve_memory_format`).
    ``save_every``: a snapshot after every N-th epoch and after the last; ``keep``: how many of
    the newest snapshots stay on disk (the best one is kept too).  ``eval_every``: evaluate on
    the dataset's evaluation split every N epochs and after the last (0: never).
    """

    dataset: str
    out: str
    data_root: Optional[str] = None
    mano_model_path: Optional[str] = None
    backbone_weights: Optional[str] = None
    input_size: int = 256
    epochs: int = 80
    batch_size: int = 64
    lr: float = 1e-4
    lr_step_epochs: int = 10
    lr_gamma: float = 0.7
    weight_decay: float = 0.0
    amp: str = "off"
    memory_format: str = "auto"
    backend: str = "auto"
    device: str = "auto"
    workers: int = 4
    resume: str = "auto"
    eval_every: int = 10
    eval_batch_size: int = 32
    save_every: int = 1
    keep: int = 3
    seed: int = 0
    accumulate: int = 1
    augment: bool = True
    skip_nonfinite: bool = False
    check_finite: bool = False
    log_every: int = 10
    deterministic: bool = False
    threads: Optional[int] = None
    progress: bool = True
    loader_timeout_s: float = 300.0

    def validate(self) -> "TrainConfig":
        def bad(name, want):
            raise ValueError(f"training config: {name} must be {want}, got {getattr(self, name)!r}")

        if self.dataset not in DATASETS:
            bad("dataset", f"one of {DATASETS}")
        if not isinstance(self.out, str) or not self.out:
            bad("out", "a folder path")
        if self.input_size not in (224, 256):
            bad("input_size", "224 or 256")
        for name in ("epochs", "batch_size", "lr_step_epochs", "save_every", "keep", "accumulate", "log_every",
                     "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "a positive integer")
        for name in ("workers", "eval_every", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(name, "a non-negative integer")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            bad("lr", "a positive number")
        if not (isinstance(self.lr_gamma, (int, float)) and 0 < self.lr_gamma <= 1):
            bad("lr_gamma", "a number in (0, 1]")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            bad("weight_decay", "a non-negative number")
        if self.amp not in AMP_MODES:
            bad("amp", f"one of {AMP_MODES}")
        if self.memory_format not in MEMORY_FORMATS:
            bad("memory_format", f"one of {MEMORY_FORMATS}")
        if self.backend not in BACKENDS:
            bad("backend", f"one of {BACKENDS}")
        if self.batch_size % self.accumulate:
            raise ValueError(f"training config: batch_size ({self.batch_size}) must be a multiple of "
                             f"accumulate ({self.accumulate})")
        if not isinstance(self.resume, str) or not self.resume:
            bad("resume", RESUME_HELP)
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            bad("threads", "a positive integer or None")
        if not (isinstance(self.loader_timeout_s, (int, float)) and self.loader_timeout_s >= 0):
            bad("loader_timeout_s", "a non-negative number of seconds")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def resolve_memory_format(memory_format: str, device_type: str):
    """The ``torch.memory_format`` a run uses: ``memory_format`` is one of :data:`MEMORY_FORMATS`,
    ``device_type`` "cpu" or "cuda".

    "auto" is ``torch.channels_last`` on CPU: oneDNN runs the ResNet-50 FPN's convolutions in
    NHWC without reordering every activation, which made the float32 training step at batch 4,
    256 px, 1.08x and 1.15x faster than NCHW in two one-thread runs (wall and CPU time alike;
    medians of interleaved per-round ratios, ``python -m benchmarks.train_bench`` on a shared
    2-core Xeon with AMX) and 0.91-1.34x in three noisier two-thread runs, with the outputs
    within 1e-6 of NCHW's.  On a GPU "auto" stays ``torch.contiguous_format``: not measured there."""
    import torch

    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
    if memory_format == "channels_last" or (memory_format == "auto" and device_type == "cpu"):
        return torch.channels_last
    return torch.contiguous_format


# The published schedules (SPEC §1, HandOccNet's main/config.py as used by HandS3C): Adam, lr 1e-4,
# no weight decay, batch 64 per GPU.  The published FreiHAND branch is never selected (SPEC §6);
# its numbers are the ones the paper states.
PUBLISHED: Dict[str, Dict[str, Any]] = {
    "ho3d": dict(input_size=256, epochs=80, lr_step_epochs=10, lr_gamma=0.7, eval_every=10),
    "dexycb": dict(input_size=256, epochs=20, lr_step_epochs=1, lr_gamma=0.9, eval_every=5),
    "freihand": dict(input_size=224, epochs=100, lr_step_epochs=10, lr_gamma=0.7, eval_every=10),
}

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def load_config_file(path: str) -> Dict[str, Any]:
    """Read a config file: a JSON object, or TOML (``.toml``), with :class:`TrainConfig` field
    names as keys (dashes allowed for underscores).  Unknown keys are an error naming them."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config: file not found: {path!r}")
    try:
        if path.endswith(".toml"):
            import tomllib
            with open(path, "rb") as f:
                data = tomllib.load(f)
        else:
            with open(path) as f:
                data = json.load(f)
    except (ValueError, OSError) as e:
        raise ValueError(f"--config {path}: cannot parse ({type(e).__name__}: {e})") from e
    if not isinstance(data, Mapping):
        raise ValueError(f"--config {path}: expected a JSON object / TOML table, got {type(data).__name__}")
    out = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(out) - set(_FIELDS))
    if unknown:
        raise ValueError(f"--config {path}: unknown keys {unknown}; known keys: {sorted(_FIELDS)}")
    return out


def config_for(dataset: str, out: str, file: Optional[str] = None, **overrides) -> TrainConfig:
    """The effective config: published defaults for ``dataset`` < ``file`` < ``overrides``
    (overrides whose value is ``None`` are ignored, so unset CLI flags fall through)."""
    if dataset not in PUBLISHED:
        raise ValueError(f"training config: dataset must be one of {DATASETS}, got {dataset!r}")
    values: Dict[str, Any] = dict(PUBLISHED[dataset])
    if file is not None:
        from_file = load_config_file(file)
        if from_file.get("dataset", dataset) != dataset:
            raise ValueError(f"--config {file}: dataset {from_file['dataset']!r} differs from --dataset {dataset!r}")
        values.update(from_file)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["dataset"] = dataset
    values["out"] = out
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise TypeError(f"config_for: unknown fields {unknown}")
    return TrainConfig(**values).validate()
