"""Atomic file writes, the one implementation every writer of the package uses (datasets,
snapshots, logs, predictions, submissions, metrics, pictures).

A file is written to a temporary name in its own folder (``.<name>.tmp-<random>``), flushed and
fsync'ed, given the permissions a plain ``open()`` would give it, renamed over the final name
(``os.replace``, atomic on POSIX), and the folder is fsync'ed so the rename survives a crash.
A reader therefore sees the old file or the whole new one, never a part; a writer killed midway
leaves only a temporary file that no reader looks for.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "TMP_MARK"]

# Temporary files are ``.<final name><TMP_MARK><random>``: cleaners match on it.
TMP_MARK = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass   # some file systems refuse fsync on folders; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> str:
    """Write ``path`` through ``write(fileobj)`` atomically (see the module docstring); returns ``path``.
    The folder is created when missing."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + TMP_MARK, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the permissions an ordinary open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)
    return path


def atomic_write_bytes(path: str, data: bytes) -> str:
    """``data`` to ``path``, atomically; returns ``path``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str, obj, **dumps_kwargs) -> str:
    """``json.dumps(obj, **dumps_kwargs)`` (UTF-8) to ``path``, atomically; returns ``path``."""
    return atomic_write_bytes(path, json.dumps(obj, **dumps_kwargs).encode("utf-8"))
