"""Training snapshots: ``snapshot_{epoch}.pth.tar`` in the published layout plus the resume state.

A snapshot is one ``torch.save`` file holding the published entries — ``epoch`` (0-based index
of the last completed epoch, as the published trainer saves it; the file is named after the
number of completed epochs, so ``snapshot_80.pth.tar`` holds ``epoch`` 79), ``network`` (the
model's state dict with ``module.`` prefixes) and ``optimizer`` (Adam's state dict) — and one
extra entry ``hands3c`` with everything else a resume needs (LR scheduler, gradient scaler,
global step, RNG states, the config, the best-so-far record, the count of skipped batches).
The published tester and :func:`handS3C.load_published_checkpoint` ignore the extra entry.
Everything in it is a tensor or a plain container, so it loads with ``weights_only=True``.

Writes are atomic: the bytes go to a temporary file in the same folder, which is flushed,
fsync'ed and renamed over the final name, and the folder is fsync'ed; then a ``.sha256`` file
beside it (written the same way) records the digest.  A reader (:func:`load_newest_valid`)
checks the digest when present and that the file loads and has the expected entries; a file
that fails is reported and the previous snapshot is used.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .._atomic import TMP_MARK, atomic_write

__all__ = ["snapshot_name", "list_snapshots", "save_snapshot", "read_snapshot", "load_newest_valid",
           "prune_snapshots", "atomic_write_bytes", "SnapshotError", "FAULT_ENV"]

_NAME = re.compile(r"^snapshot_(\d+)\.pth\.tar$")
# Test hook: "snapshot-write:<completed epochs>" kills this process with SIGKILL after half
# of that snapshot's bytes reached the temporary file (a deterministic torn write).
FAULT_ENV = "HANDS3C_TRAIN_FAULT"


class SnapshotError(ValueError):
    """A snapshot file that cannot be used (torn, corrupt, wrong content)."""


def snapshot_name(completed_epochs: int) -> str:
    return f"snapshot_{int(completed_epochs)}.pth.tar"


def list_snapshots(folder: str) -> List[Tuple[int, str]]:
    """``[(completed epochs, path), ...]`` of the snapshots in ``folder``, oldest first."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = _NAME.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(folder, name)))
    return sorted(found)


def atomic_write_bytes(path: str, data: bytes, fault: Optional[Callable[[int], None]] = None) -> None:
    """Write ``data`` to ``path`` atomically (:func:`handS3C._atomic.atomic_write`).
    ``fault(bytes_written)`` is a test hook called after the first half is written and fsync'ed."""
    def write(f):
        half = len(data) // 2
        f.write(data[:half])
        if fault is not None:
            f.flush()
            os.fsync(f.fileno())
            fault(half)
        f.write(data[half:])

    atomic_write(path, write)


def _fault_hook(completed_epochs: int) -> Optional[Callable[[int], None]]:
    spec = os.environ.get(FAULT_ENV, "")
    if spec == f"snapshot-write:{completed_epochs}":
        def die(_n):
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return die
    return None


def save_snapshot(folder: str, completed_epochs: int, state: Dict[str, Any]) -> str:
    """Write ``state`` as ``folder/snapshot_{completed_epochs}.pth.tar`` (atomic) and its digest."""
    os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = os.path.join(folder, snapshot_name(completed_epochs))
    atomic_write_bytes(path, data, fault=_fault_hook(completed_epochs))
    atomic_write_bytes(path + ".sha256", (hashlib.sha256(data).hexdigest() + "\n").encode())
    return path


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_snapshot(path: str) -> Dict[str, Any]:
    """Load and check one snapshot; :class:`SnapshotError` says what is wrong with it."""
    digest_file = path + ".sha256"
    if os.path.isfile(digest_file):
        with open(digest_file) as f:
            want = f.read().strip()
        got = _sha256(path)
        if want != got:
            raise SnapshotError(f"{path}: contents do not match {os.path.basename(digest_file)} "
                                f"(sha256 {got[:12]}… vs {want[:12]}…): torn or corrupt")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn zip archive raises several kinds of errors
        raise SnapshotError(f"{path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(obj, dict) or not all(k in obj for k in ("epoch", "network", "optimizer", "hands3c")):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise SnapshotError(f"{path}: not a training snapshot of this trainer (entries {keys}; expected epoch, "
                            "network, optimizer, hands3c)")
    bad = [k for k, v in obj["network"].items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise SnapshotError(f"{path}: network entries with NaN/inf values: {bad[:5]}")
    return obj


def load_newest_valid(folder: str, log: Callable[[str], None] = print) -> Optional[Tuple[str, Dict[str, Any]]]:
    """The newest snapshot in ``folder`` that passes :func:`read_snapshot`, as ``(path, state)``;
    each newer one that fails is reported through ``log``.  ``None`` when there is none."""
    failed = []
    for _, path in reversed(list_snapshots(folder)):
        try:
            state = read_snapshot(path)
        except SnapshotError as e:
            failed.append(path)
            log(f"resume: skipping {os.path.basename(path)}: {e}")
            continue
        if failed:
            log(f"resume: using {os.path.basename(path)} instead of the unusable "
                + ", ".join(os.path.basename(p) for p in failed))
        return path, state
    if failed:
        log(f"resume: no usable snapshot in {folder} ({len(failed)} unusable); starting fresh")
    return None


def prune_snapshots(folder: str, keep: int, protect: Optional[str] = None) -> List[str]:
    """Delete all but the newest ``keep`` snapshots (never ``protect``); returns deleted paths.
    Leftover temporary files of an interrupted write are removed too."""
    removed = []
    snaps = list_snapshots(folder)
    for _, path in snaps[:-keep] if keep > 0 else snaps:
        if protect is not None and os.path.abspath(path) == os.path.abspath(protect):
            continue
        for p in (path, path + ".sha256"):
            try:
                os.unlink(p)
                removed.append(p)
            except FileNotFoundError:
                pass
    for name in os.listdir(folder):
        if name.startswith(".snapshot_") and TMP_MARK in name:
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass
    return removed
