"""Small synthetic datasets written in the real FreiHAND / HO3D / DexYCB layouts.

None of the datasets can be downloaded here, so the tests (and the trainer's end-to-end test)
run the real readers on datasets this module writes: MANO poses and shapes sampled from plausible
ranges (small articulation angles, any in-plane orientation, palm or back toward the camera),
vertices and joints from the project's MANO layer (with the procedural model of
:mod:`handS3C.data.synthetic_mano` when no MANO file is given), a camera that puts the whole hand
in view, and JPEG images of the mesh rasterised with flat shading over a textured background.

Formats (``make_synthetic(format, ...)``):

* ``freihand``: ``training_{K,mano,xyz,verts}.json`` + ``training/rgb/%08d.jpg`` (4 versions with
  different backgrounds and skin tints: file = sample + version·N), ``evaluation_{K,xyz,verts,mano}.json``
  + ``evaluation/rgb/%08d.jpg``; square images (224 by default).
* ``ho3d``: the published loader's ``annotations/HO3D_{train,evaluation}_data.json`` + images
  ``{train,evaluation}/<seq>/rgb/<id>.jpg``, and the evaluation ground truth
  ``evaluation_{xyz,verts}.json`` (OpenGL frame, HO3D order).
* ``ho3d-official``: ``{train,evaluation}.txt``, ``<split>/<seq>/rgb/<id>.jpg``,
  ``<split>/<seq>/meta/<id>.pkl`` (OpenGL frame, ``handPose`` as HO3D stores it: the full
  articulation, ``flat_hand_mean=True``), the same evaluation ground truth files.
* ``dexycb``: ``annotations/DEX_YCB_s0_{train,test}_data.json`` + images under
  ``<subject>/<sequence>/<serial>/color_%06d.jpg``; every second sample is a left hand, written as
  the mirror image of a right hand (image flipped, x negated, pose y/z negated, principal point
  mirrored), so the reader's mirroring must give the right hand back.  Each annotation also
  carries a ``bbox`` (the projected mesh's box) for ``crop="bbox"``.

HO3D and DexYCB frames are 640x480 by default (``image_size=(W, H)``); tests pass smaller sizes.
Every file is written atomically (temporary file, fsync, rename).
"""
from __future__ import annotations

import json
import math
import os
import pickle
from typing import Dict, Optional

import numpy as np

from .._atomic import atomic_write_bytes, atomic_write_json
from .joint_orders import FREIHAND_TO_HO3D
from .render import render_mesh, textured_background
from .synthetic_mano import FLEX_AXES, write_synthetic_mano

__all__ = ["make_synthetic", "FORMATS", "sample_hand", "atomic_write_bytes", "atomic_write_json"]

FORMATS = ("freihand", "ho3d", "ho3d-official", "dexycb")
_GL = np.diag([1.0, -1.0, -1.0])
_HO3D_TRAIN_SEQS, _HO3D_EVAL_SEQS = ("ABF10", "MC1"), ("SM1", "MPM10")
_DEX_DIRS = ("20200709-subject-01/20200709_141754/836212060125", "20200813-subject-02/20200813_145653/932122060857")
_SKIN = np.array([0.87, 0.67, 0.55])


def _write_jpeg(path: str, rgb: np.ndarray, quality: int = 92) -> None:
    import cv2
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover
        raise RuntimeError(f"JPEG encoding failed for {path}")
    atomic_write_bytes(path, buf.tobytes())


def _rot(axis: str, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _sample_pose(rng: np.random.Generator, hands_mean: np.ndarray):
    """(48,) pose for the MANO layer (flat_hand_mean=False) and (10,) betas, plausible ranges."""
    from .augment import matrix_to_axis_angle_np
    x, z = np.array([1.0, 0, 0]), np.array([0, 0, 1.0])
    art = np.zeros((15, 3))
    for f in range(4):
        art[3 * f] = rng.uniform(-0.1, 0.9) * x + rng.uniform(-0.2, 0.2) * z
        art[3 * f + 1] = rng.uniform(0.0, 1.1) * x
        art[3 * f + 2] = rng.uniform(0.0, 0.8) * x
    a = FLEX_AXES[12]
    art[12] = rng.uniform(-0.2, 0.5) * a + rng.uniform(-0.2, 0.2) * z
    art[13] = rng.uniform(0.0, 0.6) * a
    art[14] = rng.uniform(0.0, 0.7) * a
    R = (_rot("z", rng.uniform(-math.pi, math.pi)) @ _rot("x", rng.uniform(-0.5, 0.5))
         @ _rot("y", rng.uniform(-0.5, 0.5)) @ _rot("y", math.pi * int(rng.integers(0, 2))))
    pose = np.concatenate([matrix_to_axis_angle_np(R), art.reshape(45) - hands_mean])
    shape = np.clip(rng.normal(0.0, 0.8, size=10), -2.0, 2.0)
    return pose, shape


def sample_hand(rng: np.random.Generator, mano, width: int, height: int, focal: float, size_frac,
                max_tries: int = 30) -> Dict[str, np.ndarray]:
    """One posed hand in front of a camera, fully in view.

    Args:
        mano: a :class:`handS3C.model.mano.ManoLayer`.
        focal: focal length (pixels) of the camera.
        size_frac: (lo, hi) range of the hand's projected extent as a fraction of min(width, height).

    Returns numpy float64 ``pose`` (48,), ``shape`` (10,), ``trans`` (3,) (verts = MANO + trans),
    ``verts`` (778, 3) and ``joints`` (21, 3, FreiHAND order) in the camera frame (metres, OpenCV),
    ``K`` (3, 3), ``root_rest`` (3,) (the shaped rest-pose root joint MANO rotates about).
    """
    import torch
    hm = mano.th_hands_mean.detach().double().numpy().reshape(45)
    K = np.array([[focal * rng.uniform(0.98, 1.02), 0.0, width / 2 + rng.uniform(-4, 4)],
                  [0.0, focal, height / 2 + rng.uniform(-4, 4)], [0.0, 0.0, 1.0]])
    for _ in range(max_tries):
        pose, shape = _sample_pose(rng, hm)
        with torch.no_grad():
            v, j = mano(torch.tensor(pose[None], dtype=torch.float32), torch.tensor(shape[None], dtype=torch.float32))
            _, rest_j = mano.shape_and_skeleton(torch.tensor(shape[None], dtype=torch.float32))
        v, j = v[0].double().numpy(), j[0].double().numpy()
        centre = 0.5 * (v.min(0) + v.max(0))
        extent = float(np.max(v.max(0)[:2] - v.min(0)[:2]))
        frac = rng.uniform(*size_frac)
        Z = focal * extent / (frac * min(width, height))
        u = width / 2 + rng.uniform(-0.12, 0.12) * width
        w = height / 2 + rng.uniform(-0.12, 0.12) * height
        target = np.array([(u - K[0, 2]) * Z / K[0, 0], (w - K[1, 2]) * Z / K[1, 1], Z])
        trans = target - centre
        vc, jc = v + trans, j + trans
        if vc[:, 2].min() < 0.05:
            continue
        p = vc @ K.T
        uv = p[:, :2] / p[:, 2:]
        if uv.min() >= 1 and uv[:, 0].max() <= width - 2 and uv[:, 1].max() <= height - 2:
            return {"pose": pose, "shape": shape, "trans": trans, "verts": vc, "joints": jc, "K": K,
                    "root_rest": rest_j[0, 0].double().numpy()}
    raise RuntimeError("could not place the synthetic hand in view")  # pragma: no cover


def _render(h, faces, width, height, rng, version: int = 0):
    if version == 0:
        bg = textured_background(height, width, rng)
    else:
        # FreiHAND's other versions: a different background and a tint of the hand
        bg = textured_background(height, width, np.random.default_rng(rng.integers(1 << 31) + version))
    tint = _SKIN * (1.0 + (0.08 * (version - 1.5) if version else 0.0)) * rng.uniform(0.9, 1.08, size=3)
    img, mask = render_mesh(h["verts"], faces, h["K"], height, width, image=bg, color=np.clip(tint, 0, 1))
    return img, mask


def _proj(K, X):
    p = X @ K.T
    return p[:, :2] / p[:, 2:]


def make_synthetic(format: str, out_dir, n: int, mano_model_path: Optional[str] = None, seed: int = 0,
                   image_size=None, n_eval: Optional[int] = None, progress: bool = True) -> dict:
    """Write a synthetic dataset of ``format`` (one of :data:`FORMATS`) into ``out_dir``.

    Args:
        n: training samples (FreiHAND: unique samples, 4 images each).
        mano_model_path: MANO_RIGHT.pkl to pose with; ``None`` writes the procedural model to
            ``out_dir/MANO_RIGHT.pkl`` and uses it.
        image_size: FreiHAND: side (default 224); others: (W, H) (default (640, 480)).
        n_eval: evaluation / test samples (default max(2, n // 2)).

    Returns a summary dict: format, out_dir, mano_model_path, train / eval counts, annotation files.
    """
    from ..model.mano import ManoLayer

    if format not in FORMATS:
        raise ValueError(f"make_synthetic: format must be one of {FORMATS}, got {format!r}")
    if int(n) < 1:
        raise ValueError(f"make_synthetic: n must be at least 1, got {n}")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if mano_model_path is None:
        mano_model_path = write_synthetic_mano(os.path.join(out_dir, "MANO_RIGHT.pkl"), seed=0)
    mano = ManoLayer(mano_model_path).eval()
    faces = mano.th_faces.numpy()
    n_eval = max(2, n // 2) if n_eval is None else int(n_eval)
    rng = np.random.default_rng((int(seed), FORMATS.index(format)))   # each format its own hands
    if format == "freihand":
        S = int(image_size or 224)
        W = H = S
    else:
        W, H = (int(image_size[0]), int(image_size[1])) if image_size is not None else (640, 480)
    writer = {"freihand": _write_freihand, "ho3d": _write_ho3d_coco, "ho3d-official": _write_ho3d_official,
              "dexycb": _write_dexycb}[format]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n + n_eval, desc=f"synthetic {format}", unit="sample", leave=False, dynamic_ncols=True)
    try:
        files = writer(out_dir, n, n_eval, mano, faces, rng, W, H, bar)
    finally:
        if bar is not None:
            bar.close()
    return {"format": format, "out_dir": out_dir, "mano_model_path": os.fspath(mano_model_path), "train": n,
            "eval": n_eval, "image_size": [W, H], "files": files}


def _tick(bar):
    if bar is not None:
        bar.update(1)


# -- FreiHAND ---------------------------------------------------------------------------------
def _write_freihand(out, n, n_eval, mano, faces, rng, W, H, bar):
    files = []
    for pre, count, versions in (("training", n, 4), ("evaluation", n_eval, 1)):
        Ks, manos, xyzs, vertss = [], [], [], []
        for s in range(count):
            h = sample_hand(rng, mano, W, H, focal=rng.uniform(2.0, 2.6) * W, size_frac=(0.55, 0.8))
            for v in range(versions):
                img, _ = _render(h, faces, W, H, rng, version=v if versions > 1 else 0)
                _write_jpeg(os.path.join(out, pre, "rgb", "%08d.jpg" % (s + v * count)), img)
            uv_root = _proj(h["K"], h["joints"][:1])[0]
            scale = float(np.linalg.norm(h["joints"][9] - h["joints"][10]))   # reference bone: middle MCP-PIP
            Ks.append(h["K"].tolist())
            manos.append([list(h["pose"]) + list(h["shape"]) + list(uv_root) + [scale]])
            xyzs.append(h["joints"].tolist())
            vertss.append(h["verts"].tolist())
            _tick(bar)
        for key, val in (("K", Ks), ("mano", manos), ("xyz", xyzs), ("verts", vertss)):
            p = os.path.join(out, f"{pre}_{key}.json")
            atomic_write_json(p, val)
            files.append(p)
    return files


# -- HO3D ----------------------------------------------------------------------------------------
def _ho3d_samples(out, split, count, mano, faces, rng, W, H, bar, seqs):
    """Render HO3D-like frames; yields (seq, fid, hand, bbox_xywh) after writing the image."""
    for s in range(count):
        seq, fid = seqs[s % len(seqs)], "%04d" % (s // len(seqs))
        h = sample_hand(rng, mano, W, H, focal=615.0 * W / 640.0, size_frac=(0.4, 0.75))
        img, _ = _render(h, faces, W, H, rng)
        _write_jpeg(os.path.join(out, split, seq, "rgb", fid + ".jpg"), img)
        uv = _proj(h["K"], h["verts"])
        lo, hi = uv.min(0), uv.max(0)
        _tick(bar)
        yield seq, fid, h, [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def _write_ho3d_gt(out, eval_hands):
    xyz = [(h["joints"][FREIHAND_TO_HO3D] @ _GL).tolist() for h in eval_hands]
    verts = [(h["verts"] @ _GL).tolist() for h in eval_hands]
    p1, p2 = os.path.join(out, "evaluation_xyz.json"), os.path.join(out, "evaluation_verts.json")
    atomic_write_json(p1, xyz)
    atomic_write_json(p2, verts)
    return [p1, p2]


def _write_ho3d_coco(out, n, n_eval, mano, faces, rng, W, H, bar):
    files, eval_hands = [], []
    for split, count, seqs in (("train", n, _HO3D_TRAIN_SEQS), ("evaluation", n_eval, _HO3D_EVAL_SEQS)):
        images, anns = [], []
        for k, (seq, fid, h, box) in enumerate(_ho3d_samples(out, split, count, mano, faces, rng, W, H, bar, seqs)):
            images.append({"id": k, "file_name": f"{seq}/rgb/{fid}.jpg", "width": W, "height": H})
            K = h["K"]
            ann = {"id": k, "image_id": k,
                   "cam_param": {"focal": [K[0, 0], K[1, 1]], "princpt": [K[0, 2], K[1, 2]]}}
            if split == "train":
                ann["joints_coord_cam"] = h["joints"][FREIHAND_TO_HO3D].tolist()
                ann["mano_param"] = {"pose": h["pose"].tolist(), "shape": h["shape"].tolist(),
                                     "trans": h["trans"].tolist()}
            else:
                ann["root_joint_cam"] = h["joints"][0].tolist()
                ann["bbox"] = box
                eval_hands.append(h)
            anns.append(ann)
        p = os.path.join(out, "annotations", f"HO3D_{split}_data.json")
        atomic_write_json(p, {"images": images, "annotations": anns})
        files.append(p)
    return files + _write_ho3d_gt(out, eval_hands)


def _write_ho3d_official(out, n, n_eval, mano, faces, rng, W, H, bar):
    from .augment import axis_angle_to_matrix_np, matrix_to_axis_angle_np
    hm = mano.th_hands_mean.detach().double().numpy().reshape(45)
    files, eval_hands = [], []
    for split, count, seqs in (("train", n, _HO3D_TRAIN_SEQS), ("evaluation", n_eval, _HO3D_EVAL_SEQS)):
        ids = []
        for seq, fid, h, box in _ho3d_samples(out, split, count, mano, faces, rng, W, H, bar, seqs):
            ids.append(f"{seq}/{fid}")
            if split == "train":
                pose = h["pose"].copy()
                pose[3:] += hm                                           # HO3D stores flat_hand_mean=True
                pose[:3] = matrix_to_axis_angle_np(_GL @ axis_angle_to_matrix_np(pose[:3]))
                j0 = h["root_rest"]
                meta = {"handPose": pose, "handBeta": h["shape"].copy(),
                        "handTrans": _GL @ (j0 + h["trans"]) - j0,
                        "handJoints3D": h["joints"][FREIHAND_TO_HO3D] @ _GL, "camMat": h["K"].copy(),
                        "objName": "003_cracker_box", "objLabel": 1, "objRot": np.zeros((3, 1)),
                        "objTrans": np.zeros(3), "camIDList": ["0"]}
            else:
                meta = {"handBoundingBox": np.array([box[0], box[1], box[0] + box[2], box[1] + box[3]]),
                        "handJoints3D": h["joints"][0] @ _GL, "camMat": h["K"].copy(),
                        "objName": "003_cracker_box", "objLabel": 1}
                eval_hands.append(h)
            atomic_write_bytes(os.path.join(out, split, seq, "meta", fid + ".pkl"), pickle.dumps(meta, protocol=2))
        p = os.path.join(out, f"{split}.txt")
        atomic_write_bytes(p, ("\n".join(ids) + "\n").encode())
        files.append(p)
    return files + _write_ho3d_gt(out, eval_hands)


# -- DexYCB --------------------------------------------------------------------------------------
def _write_dexycb(out, n, n_eval, mano, faces, rng, W, H, bar):
    from .readers import mirror_pose
    files = []
    for split, count, first in (("train", n, 0), ("test", n_eval, n)):
        images, anns = [], []
        for k in range(count):
            frame = first + k          # train and test frames are different files
            h = sample_hand(rng, mano, W, H, focal=615.0 * W / 640.0, size_frac=(0.25, 0.5))
            img, _ = _render(h, faces, W, H, rng)
            K, j3, j2, pose, trans = h["K"].copy(), h["joints"].copy(), _proj(h["K"], h["joints"]), h["pose"], h["trans"]
            uv = _proj(h["K"], h["verts"])
            lo, hi = uv.min(0), uv.max(0)
            box = [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]
            left = k % 2 == 1
            if left:  # store the mirror image: a left hand
                img = img[:, ::-1]
                K[0, 2] = W - 1.0 - K[0, 2]
                j3 = j3 * np.array([-1.0, 1.0, 1.0])
                j2 = j2.copy()
                j2[:, 0] = W - 1.0 - j2[:, 0]
                pose = mirror_pose(pose)
                trans = trans * np.array([-1.0, 1.0, 1.0])
                box = [W - 1.0 - box[0] - box[2], box[1], box[2], box[3]]
            rel = f"{_DEX_DIRS[(frame // 2) % len(_DEX_DIRS)]}/color_{frame:06d}.jpg"
            _write_jpeg(os.path.join(out, rel), img)
            images.append({"id": k, "file_name": rel, "width": W, "height": H})
            anns.append({"id": k, "image_id": k, "joints_coord_cam": j3.tolist(), "joints_img": j2.tolist(),
                         "hand_type": "left" if left else "right",
                         "cam_param": {"focal": [K[0, 0], K[1, 1]], "princpt": [K[0, 2], K[1, 2]]},
                         "mano_param": {"pose": pose.tolist(), "shape": h["shape"].tolist(),
                                        "trans": trans.tolist()},
                         "bbox": box})
            _tick(bar)
        p = os.path.join(out, "annotations", f"DEX_YCB_s0_{split}_data.json")
        atomic_write_json(p, {"images": images, "annotations": anns})
        files.append(p)
    return files
