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

    # Vectorised over faces: every pixel centre of every face's bounding box is a candidate;
    # barycentric inside test, perspective-correct depth, then the nearest candidate per pixel wins.
    ok = (z[Fi].min(1) >= near)
    tri_uv = uv[Fi]                                        # (F, 3, 2)
    x0 = np.clip(np.ceil(tri_uv[..., 0].min(1)), 0, width - 1).astype(np.int64)
    x1 = np.clip(np.floor(tri_uv[..., 0].max(1)), -1, width - 1).astype(np.int64)
    y0 = np.clip(np.ceil(tri_uv[..., 1].min(1)), 0, height - 1).astype(np.int64)
    y1 = np.clip(np.floor(tri_uv[..., 1].max(1)), -1, height - 1).astype(np.int64)
    a, b, c = tri_uv[:, 0], tri_uv[:, 1], tri_uv[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok &= (x1 >= x0) & (y1 >= y0) & (np.abs(area) > 1e-12) & np.isfinite(area)
    faces_ok = np.nonzero(ok)[0]
    if faces_ok.size:
        bw = (x1 - x0 + 1)[faces_ok]
        cnt = bw * (y1 - y0 + 1)[faces_ok]
        fid = np.repeat(faces_ok, cnt)
        k = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        bwr = np.repeat(bw, cnt)
        gx = (x0[fid] + k % bwr).astype(np.float64)
        gy = (y0[fid] + k // bwr).astype(np.float64)
        A, B, C, ar = a[fid], b[fid], c[fid], area[fid]
        w0 = ((B[:, 0] - gx) * (C[:, 1] - gy) - (C[:, 0] - gx) * (B[:, 1] - gy)) / ar
        w1 = ((C[:, 0] - gx) * (A[:, 1] - gy) - (A[:, 0] - gx) * (C[:, 1] - gy)) / ar
        w2 = 1.0 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        fz = z[Fi[fid[inside]]]                            # (n, 3)
        zi = 1.0 / (w0[inside] / fz[:, 0] + w1[inside] / fz[:, 1] + w2[inside] / fz[:, 2])
        pid = gy[inside].astype(np.int64) * width + gx[inside].astype(np.int64)
        order = np.lexsort((zi, pid))
        pid_sorted = pid[order]
        first = np.ones(pid_sorted.size, dtype=bool)
        first[1:] = pid_sorted[1:] != pid_sorted[:-1]
        win = order[first]
        flat = out.reshape(-1, 3)
        flat[pid[win]] = face_rgb[fid[inside][win]]
        mask.reshape(-1)[pid[win]] = True
        zbuf.reshape(-1)[pid[win]] = zi[win]
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
