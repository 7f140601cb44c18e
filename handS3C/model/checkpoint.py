"""Loading published HandS3C snapshots (``snapshot_<epoch>.pth.tar``) into :class:`HandS3C`.

Published snapshots are ``torch.save`` of ``{'epoch': int, 'network': <state_dict of the
DataParallel-wrapped model, keys prefixed 'module.'>, 'optimizer': <Adam state_dict>}``.  An
older release names the S3C block ``SSCA``.  The published loader silently skips keys that
do not match; this one never does: in strict mode any missing, unexpected or mis-shaped key
is an error listing all of them, and in non-strict mode the report lists them (and a warning
says so).
"""
from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

__all__ = ["CheckpointMismatchError", "CheckpointLoadReport", "load_published_checkpoint",
           "read_published_state_dict"]

_PREFIX = "module."
_OLD_NAMES = {"SSCA.": "S3C."}


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model; ``report`` lists every problem."""

    def __init__(self, message: str, report: "CheckpointLoadReport"):
        super().__init__(message)
        self.report = report


@dataclass
class CheckpointLoadReport:
    """What :func:`load_published_checkpoint` did.

    ``loaded``: model keys filled from the checkpoint; ``missing``: model keys the checkpoint
    lacks; ``unexpected``: checkpoint keys (as stored) with no model key; ``mismatched``:
    (checkpoint key, checkpoint shape, model shape); ``duplicates``: checkpoint keys that map to
    a model key another checkpoint key already maps to (e.g. both ``S3C.x`` and ``SSCA.x``);
    ``renamed``: stored key -> model key where they differ; ``casts``: (checkpoint key,
    checkpoint dtype, model dtype) for entries loaded into a model tensor of another dtype
    (e.g. a float64 snapshot into a float32 model: values are rounded, so the report says so);
    ``wrong_dtype``: (checkpoint key, checkpoint dtype, model dtype) for entries whose kind
    cannot be cast without changing their meaning (an integer or bool tensor for a
    floating-point parameter, a floating or complex tensor for an integer buffer, complex for
    real), refused like a shape mismatch; ``epoch``: the snapshot's epoch entry (0-based, as
    saved) or ``None``.
    """

    path: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    duplicates: List[str] = field(default_factory=list)
    renamed: Dict[str, str] = field(default_factory=dict)
    casts: List[Tuple[str, str, str]] = field(default_factory=list)
    wrong_dtype: List[Tuple[str, str, str]] = field(default_factory=list)
    epoch: Optional[int] = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.duplicates or self.wrong_dtype)

    @property
    def unmatched(self) -> List[str]:
        """Every key that was not loaded, from either side."""
        return sorted(set(self.missing) | set(self.unexpected) | {m[0] for m in self.mismatched}
                      | set(self.duplicates) | {m[0] for m in self.wrong_dtype})

    def summary(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing from the checkpoint ({len(self.missing)}): " + ", ".join(self.missing))
        if self.unexpected:
            parts.append(f"unexpected in the checkpoint ({len(self.unexpected)}): " + ", ".join(self.unexpected))
        if self.mismatched:
            parts.append(f"shape mismatch ({len(self.mismatched)}): " + ", ".join(
                f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched))
        if self.duplicates:
            parts.append(f"duplicate after renaming ({len(self.duplicates)}): " + ", ".join(self.duplicates))
        if self.wrong_dtype:
            parts.append(f"dtype refused ({len(self.wrong_dtype)}): " + ", ".join(
                f"{k} checkpoint {a} vs model {b}" for k, a, b in self.wrong_dtype))
        casts = ("; cast to the model's dtype (" + str(len(self.casts)) + "): " + ", ".join(
            f"{k} {a} -> {b}" for k, a, b in self.casts)) if self.casts else ""
        return ("; ".join(parts) if parts else f"all {len(self.loaded)} entries matched") + casts


def _torch_load(path: str, trust_file: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust_file:
            msg = str(e)
            detail = msg[msg.index("WeightsUnpickler error:"):].split("\n\n")[0] if "WeightsUnpickler error:" in msg \
                else msg.splitlines()[0] if msg else type(e).__name__
            raise ValueError(
                f"{path}: not a torch checkpoint readable with weights_only=True ({detail.strip()}): the file is "
                "corrupt or not a checkpoint, or it stores Python objects beyond tensors and containers. If it is "
                "a checkpoint you trust, pass trust_file=True (full unpickling can run arbitrary code)") from e
    except Exception as e:
        raise ValueError(f"{path}: not a torch checkpoint ({type(e).__name__}: {e})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"{path}: not a torch checkpoint ({type(e).__name__}: {e})") from e


def read_published_state_dict(path: Union[str, os.PathLike], trust_file: bool = False):
    """Read a snapshot file: returns ``(state_dict as stored, epoch or None)``.

    Accepts a published snapshot (a dict with ``'network'``) or a bare state dict (str keys,
    tensor values).  ``FileNotFoundError`` for a missing file, ``ValueError`` (naming the path)
    for anything that is not a checkpoint or holds NaN/infinite values.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    obj = _torch_load(path, trust_file)
    epoch = None
    if isinstance(obj, Mapping) and "network" in obj:
        sd = obj["network"]
        epoch = obj.get("epoch")
        if not isinstance(sd, Mapping):
            raise ValueError(f"{path}: checkpoint entry 'network' is a {type(sd).__name__}, expected a state dict")
    elif isinstance(obj, Mapping) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in obj.items()):
        sd = obj
    else:
        what = f"dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(f"{path}: not a HandS3C checkpoint: expected a dict with a 'network' state dict or a "
                         f"bare state dict of tensors, got a {what}")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: state dict entries that are not tensors: {bad[:10]}")
    # NaN/inf weights or statistics mean a corrupt (or diverged) snapshot: loading them would
    # make every output NaN without saying why.
    nonfinite = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise ValueError(f"{path}: state dict entries with NaN or infinite values (a corrupt or diverged "
                         f"snapshot): {nonfinite[:10]}" + (f" and {len(nonfinite) - 10} more" if len(nonfinite) > 10 else ""))
    return dict(sd), (int(epoch) if isinstance(epoch, int) else None)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _same_kind(stored: torch.dtype, model: torch.dtype) -> bool:
    """Whether load_state_dict's cast keeps the entry's meaning: floating to floating (rounded),
    integer to integer; never integer/bool to floating, floating to integer, or complex to real."""
    if stored.is_complex or model.is_complex:
        return stored.is_complex and model.is_complex
    if model.is_floating_point:
        return stored.is_floating_point
    return not stored.is_floating_point and (stored == torch.bool) == (model == torch.bool)


def _model_key(stored: str) -> str:
    k = stored[len(_PREFIX):] if stored.startswith(_PREFIX) else stored
    for old, new in _OLD_NAMES.items():
        if k.startswith(old):
            k = new + k[len(old):]
    return k


def load_published_checkpoint(model: nn.Module, path: Union[str, os.PathLike], strict: bool = True,
                              trust_file: bool = False) -> CheckpointLoadReport:
    """Load a published HandS3C snapshot (or a bare state dict) into ``model``.

    Keys may carry the DataParallel prefix ``module.`` and the old block name ``SSCA.``; each
    must map to exactly one of the model's keys with the same shape.  The file is read with
    ``torch.load(..., weights_only=True)``; ``trust_file=True`` allows a fallback to full
    unpickling for trusted files that need it.

    strict=True: any missing, unexpected, duplicate, mis-shaped or wrongly typed key (an
    integer tensor for a floating-point parameter, ...) raises :class:`CheckpointMismatchError`
    listing all of them, and nothing is loaded.
    strict=False: the matching entries are loaded, a ``UserWarning`` lists the rest, and the
    returned :class:`CheckpointLoadReport` names every unmatched key.
    Either way, entries cast to the model's dtype (float64 -> float32, ...) are listed in
    ``report.casts`` and in ``report.summary()``.

    The MANO buffers stored in published checkpoints are loaded like any other entry (so a
    model built with ``mano_model_path=None`` becomes usable).  Returns the report.
    """
    sd, epoch = read_published_state_dict(path, trust_file=trust_file)
    path = os.fspath(path)
    report = CheckpointLoadReport(path=path, epoch=epoch)
    ours = model.state_dict()
    mapped: Dict[str, torch.Tensor] = {}
    source_of: Dict[str, str] = {}
    for stored, tensor in sd.items():
        key = _model_key(stored)
        if key not in ours:
            report.unexpected.append(stored)
            continue
        if key in mapped:
            report.duplicates.append(stored)
            continue
        if tuple(tensor.shape) != tuple(ours[key].shape):
            report.mismatched.append((stored, tuple(tensor.shape), tuple(ours[key].shape)))
            source_of[key] = stored
            continue
        if tensor.dtype != ours[key].dtype:
            entry = (stored, _dtype_name(tensor.dtype), _dtype_name(ours[key].dtype))
            if _same_kind(tensor.dtype, ours[key].dtype):
                report.casts.append(entry)
            else:
                report.wrong_dtype.append(entry)
                source_of[key] = stored
                continue
        mapped[key] = tensor
        source_of[key] = stored
        if key != stored:
            report.renamed[stored] = key
    report.missing = [k for k in ours if k not in source_of]
    report.loaded = list(mapped)
    if not report.ok:
        if strict:
            raise CheckpointMismatchError(f"{path}: checkpoint does not match the model: {report.summary()}",
                                          report)
        warnings.warn(f"{path}: loaded {len(report.loaded)} of {len(ours)} model entries; {report.summary()}",
                      UserWarning, stacklevel=2)
    model.load_state_dict(mapped, strict=False)
    return report
