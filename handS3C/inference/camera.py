"""The camera translation that puts a root-relative MANO hand where the picture shows it."""
from __future__ import annotations

import numpy as np

__all__ = ["fit_translation", "project", "pinhole"]


def pinhole(focal: float, width: int, height: int) -> np.ndarray:
    """(3, 3) camera matrix: focal length ``focal`` pixels, principal point at the picture's centre
    (pixel centres at integer coordinates, so the centre is ((W-1)/2, (H-1)/2))."""
    return np.array([[focal, 0.0, 0.5 * (width - 1)], [0.0, focal, 0.5 * (height - 1)], [0.0, 0.0, 1.0]])


def project(K: np.ndarray, X: np.ndarray) -> np.ndarray:
    """(..., 3) camera points (metres) -> (..., 2) pixels."""
    p = X @ np.asarray(K, dtype=np.float64).T
    return p[..., :2] / p[..., 2:3]


def fit_translation(joints3d: np.ndarray, joints2d_px: np.ndarray, K: np.ndarray,
                    min_depth: float = 0.05) -> np.ndarray:
    """Translation t (3,) metres such that ``project(K, joints3d + t)`` best meets ``joints2d_px``.

    The solve is the linear (algebraic, DLT-style) least squares of the pinhole equations
    multiplied out by depth: for each joint, ``fx (X + tx) - (u - cx)(Z + tz) = 0`` and the same
    for y; 2J equations, 3 unknowns, solved with ``numpy.linalg.lstsq``.  It is exact when the
    2-D joints are an exact projection, and otherwise weights each joint by its depth (nearly
    uniform for a hand far from the camera compared with its size).  If the solution puts a joint
    nearer than ``min_depth`` metres (a degenerate input), the depth comes from the hand's size
    instead: ``tz`` so that the 3-D and 2-D spreads match, ``tx, ty`` refitted at that depth.

    Args: joints3d (J, 3) metres; joints2d_px (J, 2) pixels; K (3, 3).
    """
    X = np.asarray(joints3d, dtype=np.float64).reshape(-1, 3)
    uv = np.asarray(joints2d_px, dtype=np.float64).reshape(-1, 2)
    if X.shape[0] != uv.shape[0] or X.shape[0] < 2:
        raise ValueError(f"fit_translation: need matching (J, 3) and (J, 2) joints with J >= 2, got "
                         f"{X.shape} and {uv.shape}")
    K = np.asarray(K, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    du, dv = uv[:, 0] - cx, uv[:, 1] - cy
    J = X.shape[0]
    A = np.zeros((2 * J, 3))
    b = np.zeros(2 * J)
    A[:J, 0], A[:J, 2], b[:J] = fx, -du, du * X[:, 2] - fx * X[:, 0]
    A[J:, 1], A[J:, 2], b[J:] = fy, -dv, dv * X[:, 2] - fy * X[:, 1]
    t = np.linalg.lstsq(A, b, rcond=None)[0]
    if (X[:, 2] + t[2]).min() < min_depth:
        spread3 = np.linalg.norm(X[:, :2] - X[:, :2].mean(0), axis=1).mean()
        spread2 = np.linalg.norm(uv - uv.mean(0), axis=1).mean()
        tz = max(min_depth - X[:, 2].min(), 0.5 * (fx + fy) * spread3 / max(spread2, 1e-6) - X[:, 2].mean())
        z = X[:, 2] + tz
        t = np.array([(du * z / fx - X[:, 0]).mean(), (dv * z / fy - X[:, 1]).mean(), tz])
    return t
