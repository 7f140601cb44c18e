"""A procedural MANO model with the official file's structure, shaped like a right hand.

The real ``MANO_RIGHT.pkl`` is licensed and never shipped, so the synthetic datasets and the tests
use this stand-in: a palm (an elliptic tube, wrist to knuckles) and five fingers (tubes of three
bones each, thumb from the palm's side), every vertex skinned to the bone it lies on (blended 50/50
with the parent bone on the ring at each joint), joints regressed as the centroid of the ring of
vertices around each joint, fingertip vertices at the indices the MANO layer reads
(``handS3C.model.mano.FINGERTIP_VERTICES``).  The file holds the official keys and types
(``v_template``, ``f`` uint32, ``J_regressor`` as a ``scipy.sparse.csc_matrix``, ``weights``,
``posedirs``, ``shapedirs``, ``kintree_table`` with the root's parent 2**32-1, ``hands_mean``,
``hands_components``, ``hands_coeffs``, ``J``, ``bs_style``, ``bs_type``) so
:func:`handS3C.model.mano.load_mano_pickle` and :class:`~handS3C.model.mano.ManoLayer` read it
unchanged.

Frame (metres): wrist at the origin, fingers along +y, palm facing +z, thumb on the -x side;
finger flexion is a positive rotation about +x (it curls the fingers toward the palm).
The mesh has 778 vertices and 1538 faces like MANO's: the tubes use 719 vertices and 1424
faces; the remaining 59 vertices sit at the palm centre unreferenced and the remaining 114
faces repeat palm faces (a repeated face changes neither a rendering nor a vertex metric).
"""
from __future__ import annotations

import os
import pickle
from typing import Dict, List, Tuple

import numpy as np

from .._atomic import atomic_write

__all__ = ["write_synthetic_mano", "synthetic_mano_dict", "FLEX_AXES", "HANDS_MEAN_FLEX"]

NUM_VERTS, NUM_FACES = 778, 1538
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
TIP_VERTEX = {"thumb": 745, "index": 317, "middle": 444, "ring": 556, "pinky": 673}
FINGER_JOINTS = {"index": (1, 2, 3), "middle": (4, 5, 6), "pinky": (7, 8, 9), "ring": (10, 11, 12),
                 "thumb": (13, 14, 15)}
_THUMB_DIR = np.array([-0.6, 0.8, 0.0])
# per articulated joint (MANO joints 1..15): the axis about which a positive angle flexes it
FLEX_AXES = np.array([[1.0, 0.0, 0.0]] * 12 + [np.cross(_THUMB_DIR, [0.0, 0.0, 1.0])] * 3)
HANDS_MEAN_FLEX = 0.15  # radians: the rest articulation ``hands_mean`` adds (fingers slightly curled)

# finger base (MCP / thumb CMC), bone lengths (m), radius at the base (m)
_FINGERS = {
    "index": ((-0.026, 0.086, 0.0), (0.040, 0.024, 0.020), 0.0095),
    "middle": ((-0.008, 0.090, 0.0), (0.044, 0.028, 0.022), 0.0098),
    "ring": ((0.011, 0.087, 0.0), (0.041, 0.026, 0.021), 0.0092),
    "pinky": ((0.028, 0.079, 0.0), (0.032, 0.019, 0.018), 0.0082),
    "thumb": ((-0.030, 0.022, 0.002), (0.036, 0.032, 0.028), 0.0115),
}
_FINGER_RING = 12    # vertices per finger cross-section
_PALM_RING = 16      # vertices per palm cross-section
_PALM_RINGS = 7
_PALM_HALF_W, _PALM_HALF_T, _PALM_LEN = 0.043, 0.014, 0.088


def _frame(d: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to ``d``: the first in the palm plane, the second along +z-ish."""
    d = d / np.linalg.norm(d)
    b2 = np.array([0.0, 0.0, 1.0]) - d[2] * d
    b2 /= np.linalg.norm(b2)
    b1 = np.cross(b2, d)
    return b1, b2


def _build_geometry():
    verts: List[np.ndarray] = []
    weights: List[Dict[int, float]] = []
    faces: List[Tuple[int, int, int]] = []
    joint_rings: Dict[int, List[int]] = {}
    tips: Dict[str, int] = {}

    def add(p, w):
        verts.append(np.asarray(p, dtype=np.float64))
        weights.append(w)
        return len(verts) - 1

    def tube(rings: List[List[int]]):
        for a, b in zip(rings[:-1], rings[1:]):
            n = len(a)
            for k in range(n):
                k2 = (k + 1) % n
                faces.append((a[k], b[k], b[k2]))
                faces.append((a[k], b[k2], a[k2]))

    def cap(ring: List[int], centre: int, flip: bool):
        n = len(ring)
        for k in range(n):
            k2 = (k + 1) % n
            faces.append((centre, ring[k2], ring[k]) if flip else (centre, ring[k], ring[k2]))

    # palm: elliptic tube along +y, skinned to the wrist
    palm_rings = []
    for i in range(_PALM_RINGS):
        y = _PALM_LEN * i / (_PALM_RINGS - 1)
        widen = 0.82 + 0.18 * min(1.0, 2.5 * y / _PALM_LEN)   # narrower at the wrist
        ring = []
        for k in range(_PALM_RING):
            a = 2 * np.pi * k / _PALM_RING
            ring.append(add((_PALM_HALF_W * widen * np.cos(a) + 0.003, y, _PALM_HALF_T * np.sin(a)), {0: 1.0}))
        palm_rings.append(ring)
    joint_rings[0] = palm_rings[0]
    tube(palm_rings)
    cap(palm_rings[0], add((0.003, 0.0, 0.0), {0: 1.0}), flip=True)
    cap(palm_rings[-1], add((0.003, _PALM_LEN, 0.0), {0: 1.0}), flip=False)
    palm_faces = len(faces)

    for name, (base, lengths, radius) in _FINGERS.items():
        d = _THUMB_DIR / np.linalg.norm(_THUMB_DIR) if name == "thumb" else np.array([0.0, 1.0, 0.0])
        b1, b2 = _frame(d)
        jts = FINGER_JOINTS[name]
        P = [np.asarray(base, dtype=np.float64)]
        for L in lengths:
            P.append(P[-1] + L * d)
        total = sum(lengths)
        rings = []
        for b in range(3):
            parent = MANO_PARENTS[jts[b]]
            for t in (0.0, 1 / 3, 2 / 3):
                c = P[b] + t * (P[b + 1] - P[b])
                s = np.linalg.norm(c - P[0]) / total
                r = radius * (1.0 - 0.3 * s)
                w = {parent: 0.5, jts[b]: 0.5} if t == 0.0 else {jts[b]: 1.0}
                ring = [add(c + r * (np.cos(a) * b1 + 0.85 * np.sin(a) * b2), w)
                        for a in 2 * np.pi * np.arange(_FINGER_RING) / _FINGER_RING]
                if t == 0.0:
                    joint_rings[jts[b]] = ring
                rings.append(ring)
        r_end = radius * 0.7 * 0.6
        c = P[3] - 0.45 * radius * d
        rings.append([add(c + r_end * (np.cos(a) * b1 + 0.85 * np.sin(a) * b2), {jts[2]: 1.0})
                      for a in 2 * np.pi * np.arange(_FINGER_RING) / _FINGER_RING])
        tube(rings)
        tips[name] = add(P[3], {jts[2]: 1.0})
        cap(rings[-1], tips[name], flip=False)
        cap(rings[0], add(P[0] - 0.3 * radius * d, {MANO_PARENTS[jts[0]]: 0.5, jts[0]: 0.5}), flip=True)
    return verts, weights, faces, joint_rings, tips, palm_faces


def synthetic_mano_dict(seed: int = 0) -> dict:
    """The fields of the procedural model (numpy / scipy), in the official file's types."""
    import scipy.sparse

    verts, weights, faces, joint_rings, tips, palm_faces = _build_geometry()
    n_real = len(verts)
    if n_real > NUM_VERTS or len(faces) > NUM_FACES:  # pragma: no cover - geometry constants
        raise AssertionError(f"procedural hand too large: {n_real} vertices, {len(faces)} faces")
    centre = np.array([0.003, 0.5 * _PALM_LEN, 0.0])
    while len(verts) < NUM_VERTS:
        verts.append(centre.copy())
        weights.append({0: 1.0})
    faces = faces + faces[:NUM_FACES - len(faces)]   # repeat palm faces (palm_faces >= 114)
    assert palm_faces >= 114

    # Permutation putting each fingertip at the index the MANO layer reads.
    perm = [-1] * NUM_VERTS              # perm[new] = old
    taken = set()
    for name, old in tips.items():
        perm[TIP_VERTEX[name]] = old
        taken.add(old)
    rest = iter(i for i in range(NUM_VERTS) if i not in taken)
    for i in range(NUM_VERTS):
        if perm[i] < 0:
            perm[i] = next(rest)
    old_to_new = np.empty(NUM_VERTS, dtype=np.int64)
    old_to_new[perm] = np.arange(NUM_VERTS)

    v = np.stack(verts)[perm]
    W = np.zeros((NUM_VERTS, 16))
    for new, old in enumerate(perm):
        for j, w in weights[old].items():
            W[new, j] += w
    f = old_to_new[np.asarray(faces, dtype=np.int64)].astype(np.uint32)
    Jr = np.zeros((16, NUM_VERTS))
    for j, ring in joint_rings.items():
        Jr[j, old_to_new[ring]] = 1.0 / len(ring)

    # Shape space: size, finger length, palm width, thickness, then six smooth random fields.
    rng = np.random.default_rng(seed)
    sd = np.zeros((NUM_VERTS, 3, 10))
    sd[:, :, 0] = 0.06 * v
    finger_mask = (W[:, 0] < 1.0).astype(np.float64)
    sd[:, 1, 1] = 0.07 * np.clip(v[:, 1] - 0.08, 0.0, None) * finger_mask
    sd[:, 0, 2] = 0.08 * v[:, 0]
    sd[:, 2, 3] = 0.12 * v[:, 2]
    for k in range(4, 10):
        freq = rng.normal(0.0, 25.0, size=3)
        phase = rng.uniform(0, 2 * np.pi)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        sd[:, :, k] = 1.2e-3 * np.sin(v @ freq + phase)[:, None] * direction[None, :]
    hands_mean = (HANDS_MEAN_FLEX * FLEX_AXES).reshape(45)
    q, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    kintree = np.array([[2 ** 32 - 1] + list(MANO_PARENTS[1:]), list(range(16))], dtype=np.int64)
    return {
        "hands_components": q.T.copy(),
        "f": f,
        "J_regressor": scipy.sparse.csc_matrix(Jr),
        "kintree_table": kintree,
        "J": Jr @ v,
        "bs_style": "lbs",
        "hands_coeffs": rng.normal(0.0, 0.4, size=(64, 45)),
        "weights": W,
        "posedirs": np.zeros((NUM_VERTS, 3, 135)),
        "hands_mean": hands_mean,
        "v_template": v,
        "shapedirs": sd,
        "bs_type": "lrotmin",
    }


def write_synthetic_mano(path, seed: int = 0) -> str:
    """Write the procedural MANO model to ``path`` (a pickle, protocol 2, written atomically).

    Returns the path.  Load it with :func:`handS3C.model.mano.load_mano_pickle` or pass it as
    ``mano_model_path`` wherever a ``MANO_RIGHT.pkl`` is expected.
    """
    path = os.fspath(path)
    data = synthetic_mano_dict(seed)
    atomic_write(path, lambda fh: pickle.dump(data, fh, protocol=2))
    return path
