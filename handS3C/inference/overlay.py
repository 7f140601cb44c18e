"""Overlay pictures: the shaded mesh and the 2-D skeleton over the picture, a side view beside it.

Drawn with the package's one renderer, :mod:`handS3C.data.render`.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..data.render import draw_skeleton, render_mesh
from .camera import project

__all__ = ["render_overlay", "side_view", "MAX_OVERLAY_SIDE"]

# Pictures larger than this (longer side, pixels) are drawn at a reduced scale: the overlay is
# for looking at, and the rasteriser's cost grows with the covered area.
MAX_OVERLAY_SIDE = 1024
MESH_COLOUR = (0.55, 0.75, 0.95)


def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def side_view(verts_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, height: int, width: int,
              angle_deg: float = 90.0) -> np.ndarray:
    """The mesh turned ``angle_deg`` about the vertical axis through its centre, seen by the same
    camera from the same distance, on a grey background: (height, width, 3) uint8."""
    V = np.asarray(verts_cam, dtype=np.float64)
    centre = V.mean(0)
    turned = (V - centre) @ _rot_y(angle_deg).T + centre
    # centre the turned mesh in the panel (the picture's principal point may not be its middle)
    ctr_px = project(K, centre[None])[0]
    K2 = np.array(K, dtype=np.float64)
    K2[0, 2] += 0.5 * (width - 1) - ctr_px[0]
    K2[1, 2] += 0.5 * (height - 1) - ctr_px[1]
    bg = np.full((height, width, 3), 200, dtype=np.uint8)
    rgb, _ = render_mesh(turned, faces, K2, height, width, image=bg, color=MESH_COLOUR)
    return rgb


def render_overlay(image_rgb: np.ndarray, verts_cam, faces, K, joints2d_px,
                   max_side: int = MAX_OVERLAY_SIDE) -> Tuple[np.ndarray, np.ndarray, float]:
    """The overlay picture of one prediction.

    Args:
        image_rgb: (H, W, 3) uint8 RGB picture.
        verts_cam: (778, 3) vertices in the camera frame (metres, translation included).
        faces: (F, 3) vertex indices.
        K: (3, 3) camera of the picture (pixels).
        joints2d_px: (21, 2) the predicted 2-D joints in the picture's pixels (FreiHAND order).
        max_side: pictures with a longer side above this are drawn scaled down by ``scale``.

    Returns ``(overlay (h, 2 w, 3) uint8: mesh + skeleton | side view, mesh mask (h, w) bool,
    scale)`` where ``h, w`` are the (possibly scaled) picture's size.
    """
    import cv2

    H, W = image_rgb.shape[:2]
    scale = min(1.0, float(max_side) / max(H, W))
    img = image_rgb
    K = np.asarray(K, dtype=np.float64).copy()
    j2 = np.asarray(joints2d_px, dtype=np.float64).copy()
    if scale < 1.0:
        h, w = max(1, int(round(H * scale))), max(1, int(round(W * scale)))
        img = cv2.resize(image_rgb, (w, h), interpolation=cv2.INTER_AREA)
        # pixel centres: x_small = s (x + 0.5) - 0.5
        S = np.array([[scale, 0.0, 0.5 * scale - 0.5], [0.0, scale, 0.5 * scale - 0.5], [0.0, 0.0, 1.0]])
        K = S @ K
        j2 = j2 * scale + (0.5 * scale - 0.5)
    h, w = img.shape[:2]
    rgb, mask = render_mesh(verts_cam, faces, K, h, w, image=img, color=MESH_COLOUR)
    # mesh half-transparent over the picture, so the hand stays visible under it
    blend = img.copy()
    blend[mask] = (0.35 * img[mask].astype(np.float32) + 0.65 * rgb[mask].astype(np.float32)).astype(np.uint8)
    radius = max(2, int(round(max(h, w) / 160)))
    drawn = draw_skeleton(blend, j2, radius=radius, thickness=max(1, radius // 2))
    side = side_view(verts_cam, faces, K, h, w)
    return np.concatenate([drawn, side], axis=1), mask, scale
