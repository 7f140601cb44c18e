"""The published augmentation (SPEC §1) and the crop geometry shared by the readers.

Training augmentation (HO3D, DexYCB; the published HandOccNet recipe HandS3C trains with):

* scale ``s = 1 + 0.25 * clip(N(0, 1), -1, 1)`` of the crop's side,
* rotation ``30° * clip(N(0, 1), -2, 2)`` with probability 0.6 (else 0), applied to the image,
  the 2-D joints, the 3-D joints (a rotation of the camera frame about its optical axis) and the
  MANO root orientation together,
* per-channel colour scale ``U(0.8, 1.2)`` (clipped to [0, 1] afterwards),
* the crop: the ground-truth 2-D joint box expanded ×1.5 and made square (side = the longer side).

The random numbers of a sample come from ``numpy.random.default_rng((seed, epoch, index))``, so a
run is reproducible and every epoch sees fresh augmentation.

Geometry (OpenCV pixel convention, pixel centres at integers; camera frame x right, y down, z
forward).  With box centre ``c``, crop side ``b`` in image pixels and output size ``S``, the crop
affine is ``q = (S / b) R2(θ) (p - c) + S/2``; the matching 3-D rotation is ``Rz(θ)`` (same angle
about +z), so ``K_crop = M3 · K · Rz(θ)^T`` maps the rotated 3-D joints onto the crop's 2-D joints
exactly (``M3`` is the affine as a 3x3 matrix).  A mirrored sample (DexYCB left hands) folds the
flip ``u -> W - 1 - u`` into the same affine, so the mirrored frame is never materialised.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["AugParams", "sample_augmentation", "NO_AUGMENTATION", "square_box_from_joints", "square_box_from_bbox", "sanitize_box", "square_box",
           "crop_affine", "rot_z", "axis_angle_to_matrix_np", "matrix_to_axis_angle_np", "rotate_root_pose",
           "SCALE_FACTOR", "ROT_FACTOR_DEG", "ROT_PROB", "COLOR_FACTOR", "BOX_EXPANSION"]

SCALE_FACTOR = 0.25
ROT_FACTOR_DEG = 30.0
ROT_PROB = 0.6
COLOR_FACTOR = 0.2
BOX_EXPANSION = 1.5


@dataclass(frozen=True)
class AugParams:
    scale: float = 1.0          # crop side multiplier
    rot_deg: float = 0.0        # in-plane rotation, degrees
    color: tuple = (1.0, 1.0, 1.0)  # per-channel (R, G, B) multiplier


NO_AUGMENTATION = AugParams()


def sample_augmentation(seed: int, epoch: int, index: int) -> AugParams:
    """The published recipe's random draws for one sample, from ``default_rng((seed, epoch, index))``."""
    rng = np.random.default_rng((int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, int(index) & 0xFFFFFFFF))
    scale = 1.0 + SCALE_FACTOR * min(max(float(rng.standard_normal()), -1.0), 1.0)
    r = min(max(float(rng.standard_normal()), -2.0), 2.0) * ROT_FACTOR_DEG
    rot = r if rng.random() <= ROT_PROB else 0.0
    color = tuple(float(c) for c in rng.uniform(1.0 - COLOR_FACTOR, 1.0 + COLOR_FACTOR, size=3))
    return AugParams(scale, rot, color)


def square_box(x: float, y: float, w: float, h: float, expansion: float = 1.0) -> np.ndarray:
    """(x, y, w, h) -> the square (x, y, side, side) with the same centre and side = expansion * max(w, h)."""
    cx, cy = x + 0.5 * w, y + 0.5 * h
    side = expansion * max(w, h)
    return np.array([cx - 0.5 * side, cy - 0.5 * side, side, side], dtype=np.float64)


def sanitize_box(box, width: Optional[int], height: Optional[int]):
    """The published loader's ``sanitize_bbox``: clip (x, y, w, h) to the image, or None if nothing is left.
    (Its quirk is kept: the far corner is measured from the clipped near corner, ``x1 + w - 1``.)"""
    if width is None or height is None:
        return np.asarray(box, dtype=np.float64)
    x, y, w, h = (float(v) for v in box)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if w * h > 0 and x2 > x1 and y2 > y1:
        return np.array([x1, y1, x2 - x1, y2 - y1])
    return None


def square_box_from_joints(joints2d_px: np.ndarray, expansion: float = BOX_EXPANSION,
                           width: Optional[int] = None, height: Optional[int] = None) -> np.ndarray:
    """The published crop box from 2-D joints: their tight box, each side ×``expansion`` about its centre
    (``get_bbox``), clipped to the image when its size is given (``sanitize_bbox``), then made square
    (``process_bbox`` with expansion 1): (x, y, side, side)."""
    lo, hi = joints2d_px.min(0), joints2d_px.max(0)
    w, h = max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)
    c = 0.5 * (lo + hi)
    box = np.array([c[0] - 0.5 * w * expansion, c[1] - 0.5 * h * expansion, w * expansion, h * expansion])
    clipped = sanitize_box(box, width, height)
    return square_box(*(box if clipped is None else clipped), expansion=1.0)


def square_box_from_bbox(box, expansion: float = BOX_EXPANSION, width: Optional[int] = None,
                         height: Optional[int] = None) -> np.ndarray:
    """The published crop box from a given (x, y, w, h): clipped to the image, squared, ×``expansion``."""
    clipped = sanitize_box(box, width, height)
    return square_box(*(np.asarray(box, dtype=np.float64) if clipped is None else clipped), expansion=expansion)


def rot_z(theta_rad: float) -> np.ndarray:
    c, s = math.cos(theta_rad), math.sin(theta_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def crop_affine(box: np.ndarray, output_size: int, aug: AugParams = NO_AUGMENTATION,
                flip_width: Optional[int] = None):
    """The crop's affine and its 3-D rotation.

    Args:
        box: (x, y, side, side) square in the (mirrored, if ``flip_width``) image, pixels.
        output_size: S.
        aug: scale multiplies the side; ``rot_deg`` rotates.
        flip_width: image width W when the sample is mirrored (``u -> W - 1 - u`` first).

    Returns ``(M (2, 3) file pixels -> crop pixels, Rz (3, 3), crop side in pixels)``.
    """
    side = float(box[2]) * aug.scale
    c = np.array([box[0] + 0.5 * box[2], box[1] + 0.5 * box[3]])
    th = math.radians(aug.rot_deg)
    R2 = rot_z(th)[:2, :2]
    k = output_size / side
    A = k * R2
    M = np.concatenate([A, (0.5 * output_size - A @ c)[:, None]], axis=1)
    if flip_width is not None:
        F = np.array([[-1.0, 0.0, flip_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        M = M @ F
    return M, rot_z(th), side


def axis_angle_to_matrix_np(aa: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vectors -> (..., 3, 3) (Rodrigues, float64)."""
    aa = np.asarray(aa, dtype=np.float64)
    t = np.linalg.norm(aa, axis=-1, keepdims=True)
    safe = np.where(t < 1e-12, 1.0, t)
    k = aa / safe
    Kx = np.zeros(aa.shape[:-1] + (3, 3))
    Kx[..., 0, 1], Kx[..., 0, 2] = -k[..., 2], k[..., 1]
    Kx[..., 1, 0], Kx[..., 1, 2] = k[..., 2], -k[..., 0]
    Kx[..., 2, 0], Kx[..., 2, 1] = -k[..., 1], k[..., 0]
    s, c = np.sin(t)[..., None], np.cos(t)[..., None]
    R = np.eye(3) + s * Kx + (1 - c) * (Kx @ Kx)
    return np.where((t < 1e-12)[..., None], np.eye(3), R)


def matrix_to_axis_angle_np(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (3,) rotation vector, angle in [0, pi] (float64; robust near pi)."""
    R = np.asarray(R, dtype=np.float64)
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    ang = math.acos(cos)
    if ang < 1e-7:
        return np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2.0
    if ang > math.pi - 1e-4:
        # axis from the symmetric part: R = 2 a a^T - I at angle pi
        B = (R + np.eye(3)) / 2.0
        i = int(np.argmax(np.diag(B)))
        a = B[:, i] / math.sqrt(max(B[i, i], 1e-12))
        # sign so that the antisymmetric part agrees (matters just below pi)
        w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
        if w @ a < 0:
            a = -a
        return a / np.linalg.norm(a) * ang
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return w / (2.0 * math.sin(ang)) * ang


def rotate_root_pose(pose48: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Left-multiply the MANO root orientation (pose[:3]) by the camera rotation R; articulation kept."""
    out = np.array(pose48, dtype=np.float64, copy=True)
    out[:3] = matrix_to_axis_angle_np(R @ axis_angle_to_matrix_np(out[:3]))
    return out
