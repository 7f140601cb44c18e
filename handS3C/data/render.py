"""A small z-buffered triangle rasteriser (numpy) for the synthetic datasets and for pictures.

:func:`render_mesh` draws a triangle mesh given in camera coordinates (OpenCV frame: x right,
y down, z forward, metres) through a 3x3 camera matrix, flat (per-face Lambert) shaded with the
light at the camera, over a background image; :func:`draw_skeleton` draws 21 joints in FreiHAND
order.  Pixel ``(i, j)`` has its centre at ``u = j, v = i`` (OpenCV's convention, so the result
lines up with ``cv2.warpAffine`` crops and the readers' ``K``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["render_mesh", "draw_skeleton", "FREIHAND_BONES", "textured_background"]

# (parent, child) pairs in FreiHAND order
FREIHAND_BONES = tuple((0 if (c - 1) % 4 == 0 else c - 1, c) for c in range(1, 21))
_FINGER_COLOURS = ((230, 60, 60), (240, 170, 40), (60, 200, 60), (50, 140, 240), (190, 80, 220))


def render_mesh(verts_cam, faces, K, height: int, width: int, image: Optional[np.ndarray] = None,
                color: Sequence[float] = (0.86, 0.66, 0.54), ambient: float = 0.3,
                near: float = 1e-3) -> Tuple[np.ndarray, np.ndarray]:
    """Rasterise a mesh.

    Args:
        verts_cam: (V, 3) vertices in camera coordinates, metres (numpy or torch).
        faces: (F, 3) vertex indices.
        K: (3, 3) camera matrix mapping camera coordinates to homogeneous pixels.
        height, width: output size in pixels.
        image: optional (height, width, 3) uint8 RGB background (copied, not modified).
        color: RGB albedo in [0, 1] (one colour, or (F, 3) per face).
        ambient: share of the light that does not depend on the face's orientation.
        near: faces with a vertex closer than this (metres) are not drawn.

    Returns:
        ``rgb`` (height, width, 3) uint8 and ``mask`` (height, width) bool, True where the mesh
        covers the pixel centre.
    """
    V = np.asarray(getattr(verts_cam, "detach", lambda: verts_cam)(), dtype=np.float64).reshape(-1, 3)
    Fi = np.asarray(getattr(faces, "detach", lambda: faces)(), dtype=np.int64).reshape(-1, 3)
    K = np.asarray(getattr(K, "detach", lambda: K)(), dtype=np.float64).reshape(3, 3)
    if image is None:
        out = np.zeros((height, width, 3), dtype=np.float64)
    else:
        if image.shape != (height, width, 3):
            raise ValueError(f"render_mesh: background image must be ({height}, {width}, 3), got {image.shape}")
        out = image.astype(np.float64) / 255.0
    zbuf = np.full((height, width), np.inf)
    mask = np.zeros((height, width), dtype=bool)

    proj = V @ K.T
    z = V[:, 2]
    uv = proj[:, :2] / np.where(np.abs(proj[:, 2:]) > 1e-12, proj[:, 2:], 1e-12)
    tri = V[Fi]                                            # (F, 3, 3)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
    view = tri.mean(1)
    view /= np.maximum(np.linalg.norm(view, axis=1, keepdims=True), 1e-20)
    shade = ambient + (1.0 - ambient) * np.abs((n * view).sum(1))
    col = np.broadcast_to(np.asarray(color, dtype=np.float64), (len(Fi), 3))
    face_rgb = np.clip(col * shade[:, None], 0.0, 1.0)

    for f in range(len(Fi)):
        ia, ib, ic = Fi[f]
        if min(z[ia], z[ib], z[ic]) < near:
            continue
        (xa, ya), (xb, yb), (xc, yc) = uv[ia], uv[ib], uv[ic]
        x0 = max(int(np.ceil(min(xa, xb, xc))), 0)
        x1 = min(int(np.floor(max(xa, xb, xc))), width - 1)
        y0 = max(int(np.ceil(min(ya, yb, yc))), 0)
        y1 = min(int(np.floor(max(ya, yb, yc))), height - 1)
        if x0 > x1 or y0 > y1:
            continue
        area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
        if abs(area) < 1e-12:
            continue
        gx, gy = np.meshgrid(np.arange(x0, x1 + 1, dtype=np.float64), np.arange(y0, y1 + 1, dtype=np.float64))
        w0 = ((xb - gx) * (yc - gy) - (xc - gx) * (yb - gy)) / area
        w1 = ((xc - gx) * (ya - gy) - (xa - gx) * (yc - gy)) / area
        w2 = 1.0 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        if not inside.any():
            continue
        # perspective-correct depth: 1/z is linear in screen space
        zi = 1.0 / (w0 / z[ia] + w1 / z[ib] + w2 / z[ic])
        sub = zbuf[y0:y1 + 1, x0:x1 + 1]
        win = inside & (zi < sub)
        if not win.any():
            continue
        sub[win] = zi[win]
        out[y0:y1 + 1, x0:x1 + 1][win] = face_rgb[f]
        mask[y0:y1 + 1, x0:x1 + 1][win] = True
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mask


def textured_background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(height, width, 3) uint8: smooth colour noise plus a few stripes, a cluttered but hand-free scene."""
    import cv2

    small = rng.uniform(0, 255, size=(max(2, height // 24), max(2, width // 24), 3)).astype(np.float32)
    base = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(3):
        ang = rng.uniform(0, np.pi)
        freq = rng.uniform(0.02, 0.12)
        stripe = 0.5 + 0.5 * np.sin(freq * (np.cos(ang) * xx + np.sin(ang) * yy) + rng.uniform(0, 6.3))
        base = base * (0.85 + 0.15 * stripe[..., None])
    tint = rng.uniform(0.55, 1.0, size=3).astype(np.float32)
    base = base * tint
    grey = base.mean(axis=2, keepdims=True)
    return np.clip(0.45 * base + 0.55 * grey, 0, 255).astype(np.uint8)   # muted, like an indoor scene


def draw_skeleton(image: np.ndarray, joints2d_px, radius: int = 2, thickness: int = 1) -> np.ndarray:
    """Draw 21 joints (FreiHAND order, (21, 2) pixels) and their bones on a copy of ``image`` (H, W, 3) uint8."""
    import cv2

    img = np.ascontiguousarray(np.array(image, dtype=np.uint8, copy=True))
    j = np.asarray(getattr(joints2d_px, "detach", lambda: joints2d_px)(), dtype=np.float64).reshape(21, 2)
    for p, c in FREIHAND_BONES:
        colour = _FINGER_COLOURS[(c - 1) // 4]
        cv2.line(img, tuple(int(round(v)) for v in j[p]), tuple(int(round(v)) for v in j[c]), colour, thickness,
                 cv2.LINE_AA)
    for i in range(21):
        colour = (255, 255, 255) if i == 0 else _FINGER_COLOURS[(i - 1) // 4]
        cv2.circle(img, tuple(int(round(v)) for v in j[i]), radius, colour, -1, cv2.LINE_AA)
    return img
