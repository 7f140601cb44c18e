"""Files the evaluation writes: the official servers' submission (``pred.json`` zipped as ``pred.zip``),
``metrics.json``; all written atomically (a temporary file in the same folder, flushed, fsync'ed,
then renamed over the final name), so an interrupted run never leaves a truncated file.

Submission format (FreiHAND's and HO3D's CodaLab servers): ``pred.json`` = ``[xyz_list, verts_list]``,
one entry per evaluation sample in the split's order, ``xyz`` 21×3 and ``verts`` 778×3 in metres.

* FreiHAND: camera frame as annotated (OpenCV: y down, z forward), FreiHAND joint order.
* HO3D: OpenGL coordinates (y and z negated: the hand lies along -z; the official ``pred.py`` rejects
  predictions whose z are all positive), HO3D joint order, the root placed at ``root_joint_cam``
  (the evaluation loop already places it at the sample's ``root``).

Coordinates are written rounded to 1e-6 m (a micrometre: far below any reported error), which
halves the size of the JSON (FreiHAND: 3,960 × 799 points).
"""
from __future__ import annotations

import io
import json
import math
import os
import zipfile
from typing import Dict, Tuple

import numpy as np

from .._atomic import atomic_write

__all__ = ["SUBMISSION_FORMATS", "write_submission", "read_submission", "atomic_write", "write_json_atomic",
           "to_submission_frame"]

SUBMISSION_FORMATS = ("freihand", "ho3d")
_OPENGL = np.array([1.0, -1.0, -1.0])


def _finite_json(obj):
    """Replace non-finite floats by None (json would write NaN, which is not JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _finite_json(obj.item())
    if isinstance(obj, np.ndarray):
        return _finite_json(obj.tolist())
    return obj


def write_json_atomic(path: str, obj) -> str:
    """``json.dump`` of ``obj`` (numpy values converted, NaN/inf as null), written atomically."""
    data = json.dumps(_finite_json(obj), indent=2, sort_keys=False).encode() + b"\n"
    return atomic_write(path, lambda f: f.write(data))


def to_submission_frame(joints3d: np.ndarray, verts: np.ndarray, dataset: str) -> Tuple[np.ndarray, np.ndarray]:
    """Placed predictions (N, 21, 3), (N, 778, 3) metres, FreiHAND order, OpenCV camera frame -> the
    server's frame and joint order (HO3D: OpenGL, HO3D order; FreiHAND: unchanged)."""
    if dataset not in SUBMISSION_FORMATS:
        raise ValueError(f"submission: dataset must be one of {SUBMISSION_FORMATS}, got {dataset!r}")
    j = np.asarray(joints3d, dtype=np.float64)
    v = np.asarray(verts, dtype=np.float64)
    if j.ndim != 3 or j.shape[1:] != (21, 3) or v.ndim != 3 or v.shape[1:] != (778, 3) or len(j) != len(v):
        raise ValueError(f"submission: expected joints (N, 21, 3) and verts (N, 778, 3), got {j.shape} and {v.shape}")
    if not (np.isfinite(j).all() and np.isfinite(v).all()):
        raise ValueError("submission: predictions hold NaN or infinite values")
    if dataset == "ho3d":
        from ..data.joint_orders import FREIHAND_TO_HO3D
        j = j[:, FREIHAND_TO_HO3D] * _OPENGL
        v = v * _OPENGL
    return j, v


def write_submission(out_dir: str, joints3d: np.ndarray, verts: np.ndarray, dataset: str) -> Dict[str, str]:
    """Write ``pred.json`` and ``pred.zip`` (holding ``pred.json`` at its top level, as ``zip -j``) in ``out_dir``.

    joints3d: (N, 21, 3), verts: (N, 778, 3) placed predictions in metres, FreiHAND order, OpenCV
    camera frame, in the split's order.  Returns {"json": path, "zip": path}.
    """
    j, v = to_submission_frame(joints3d, verts, dataset)
    payload = json.dumps([np.round(j, 6).tolist(), np.round(v, 6).tolist()], separators=(",", ":")).encode()
    json_path = atomic_write(os.path.join(out_dir, "pred.json"), lambda f: f.write(payload))

    def write_zip(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("pred.json", payload)

    zip_path = atomic_write(os.path.join(out_dir, "pred.zip"), write_zip)
    return {"json": json_path, "zip": zip_path}


def read_submission(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read ``pred.zip`` (or ``pred.json``) back: (xyz (N, 21, 3), verts (N, 778, 3)) float64, as stored."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"submission file not found: {path!r}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if names != ["pred.json"]:
                raise ValueError(f"{path}: a submission zip must hold exactly 'pred.json' at its top level, got {names}")
            data = json.loads(z.read("pred.json"))
    else:
        with open(path, "rb") as f:
            data = json.load(f)
    if not isinstance(data, list) or len(data) != 2:
        raise ValueError(f"{path}: expected [xyz_list, verts_list], got a {type(data).__name__} of length "
                         f"{len(data) if hasattr(data, '__len__') else '?'}")
    xyz, verts = np.asarray(data[0], dtype=np.float64), np.asarray(data[1], dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[1:] != (21, 3) or verts.ndim != 3 or verts.shape[1:] != (778, 3) \
            or len(xyz) != len(verts):
        raise ValueError(f"{path}: expected xyz (N, 21, 3) and verts (N, 778, 3), got {xyz.shape} and {verts.shape}")
    return xyz, verts
