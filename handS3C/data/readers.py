"""Readers for FreiHAND, HO3D and DexYCB in their real layouts (SPEC §6); samples follow
:mod:`handS3C.data.base`'s contract.

Joint orders are converted once, when the annotation is parsed, with the tables of
:mod:`handS3C.data.joint_orders`; HO3D's official layout (OpenGL camera frame: y and z negated)
is converted to the OpenCV frame the contract uses, joints and MANO root orientation alike.
"""
from __future__ import annotations

import json
import os
import pickle
from typing import List, Optional

import numpy as np

from . import augment as aug
from .base import DatasetError, HandDataset, Record, check_dir, check_file
from .joint_orders import HO3D_TO_FREIHAND, DEXYCB_TO_FREIHAND

__all__ = ["FreiHAND", "HO3D", "DexYCB", "build_dataset", "DATASETS", "EVAL_SPLIT", "DEFAULT_INPUT_SIZE",
           "OPENGL_TO_OPENCV"]

DATASETS = ("freihand", "ho3d", "dexycb")
EVAL_SPLIT = {"freihand": "evaluation", "ho3d": "evaluation", "dexycb": "test"}
DEFAULT_INPUT_SIZE = {"freihand": 224, "ho3d": 256, "dexycb": 256}
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])   # its own inverse
FREIHAND_VERSIONS = 4
FREIHAND_UNIQUE = 32560


def _load_json(path: str, dataset: str):
    try:
        with open(path, "r") as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{dataset}: {path}: not valid JSON ({e})") from e


def _arr(v, shape, what: str, dataset: str, i: int, path: str) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{dataset}: sample {i} ({path}): {what} is not numeric ({e})") from e
    if a.size != int(np.prod(shape)):
        raise DatasetError(f"{dataset}: sample {i} ({path}): {what} has {a.size} values, expected shape {shape}")
    return a.reshape(shape)


def _project(K, X):
    p = X @ K.T
    return p[:, :2] / p[:, 2:3]


class _Parser:
    """Collects records; a malformed entry is an error naming dataset, index and file, or a counted skip."""

    def __init__(self, dataset: str, skip_bad: bool):
        self.dataset, self.skip_bad = dataset, skip_bad
        self.records: List[Record] = []
        self.skipped: list = []

    def add(self, i: int, source: str, fn):
        try:
            self.records.append(fn())
        except DatasetError as e:
            if not self.skip_bad:
                raise
            self.skipped.append((i, source, str(e)))


def _finish(ds: HandDataset, parser: _Parser):
    ds.skipped = parser.skipped + ds.skipped


# ------------------------------------------------------------------------------------------------
class FreiHAND(HandDataset):
    """FreiHAND v2 (the 224 setting).

    Layout: ``{root}/training_K.json``, ``training_mano.json``, ``training_xyz.json`` (and
    ``training_verts.json`` where present), images ``training/rgb/%08d.jpg``: N unique samples in
    four image versions (file index = sample + version·N, same annotation; N = 32,560 in the real
    set).  Evaluation: ``evaluation_K.json`` (+ ``evaluation_xyz.json``, ``evaluation_verts.json``,
    ``evaluation_mano.json`` where present), images ``evaluation/rgb/%08d.jpg``.  The images are
    the crops already; they are resized to ``input_size`` (with ``K`` scaled to match).
    MANO rows: 61 values = 48 pose, 10 shape, 2 uv_root, 1 scale.

    Args:
        versions: training image versions to use (0 gs, 1 hom, 2 sample, 3 auto).
        load_verts: read ``{split}_verts.json`` (default: evaluation only; the training file is huge).
    """

    name = "FreiHAND"
    LAYOUT = ("{root}/training_K.json, training_mano.json, training_xyz.json [, training_verts.json], images "
              "training/rgb/%08d.jpg; evaluation_K.json [, evaluation_xyz.json, evaluation_verts.json, "
              "evaluation_mano.json], images evaluation/rgb/%08d.jpg")

    def __init__(self, root, split: str = "train", input_size: int = 224, augment: bool = False, seed: int = 0,
                 skip_bad: bool = False, versions=(0, 1, 2, 3), fast_decode: bool = True,
                 load_verts: Optional[bool] = None):
        root = os.fspath(root)
        if split not in ("train", "training", "evaluation"):
            raise ValueError(f"FreiHAND: split must be 'train' or 'evaluation', got {split!r}")
        pre = "evaluation" if split == "evaluation" else "training"
        check_dir(root, self.name, self.LAYOUT)
        img_dir = check_dir(os.path.join(root, pre, "rgb"), self.name, self.LAYOUT)
        Ks = _load_json(check_file(os.path.join(root, f"{pre}_K.json"), self.name, self.LAYOUT), self.name)
        lists = {"K": (os.path.join(root, f"{pre}_K.json"), Ks)}
        if load_verts is None:
            # the full training_verts.json is ~32k x 778 x 3 numbers (gigabytes as parsed JSON); training
            # targets come from the MANO layer anyway (SPEC §1), so only the evaluation split reads them
            load_verts = pre == "evaluation"
        keys = (("xyz", pre == "training"), ("mano", pre == "training")) + ((("verts", False),) if load_verts else ())
        for key, required in keys:
            path = os.path.join(root, f"{pre}_{key}.json")
            if required:
                check_file(path, self.name, self.LAYOUT)
            if os.path.isfile(path):
                lists[key] = (path, _load_json(path, self.name))
        n = len(Ks)
        wrong = {os.path.basename(p): len(v) for p, v in lists.values() if len(v) != n}
        if wrong:
            raise DatasetError(f"FreiHAND: annotation lists of different lengths: {os.path.basename(lists['K'][0])} "
                               f"has {n} entries, but {wrong}")
        if pre == "training":
            for v in versions:
                if not 0 <= int(v) < FREIHAND_VERSIONS:
                    raise ValueError(f"FreiHAND: image versions are 0..3, got {v}")
            files = [(s, v, os.path.join(img_dir, "%08d.jpg" % (s + int(v) * n))) for v in versions for s in range(n)]
        else:
            files = [(s, 0, os.path.join(img_dir, "%08d.jpg" % s)) for s in range(n)]
        self.num_unique = n
        parser = _Parser(self.name, skip_bad)
        width = height = None
        cache = {}   # one set of arrays per unique sample, shared by its four image versions
        for i, (s, v, f) in enumerate(files):
            if width is None and os.path.isfile(f):
                # the real set is 224 x 224; read the size from the first file's header once
                from PIL import Image
                try:
                    with Image.open(f) as pim:
                        width, height = pim.size
                except OSError:
                    pass
            parser.add(i, f, lambda s=s, f=f: self._record(s, f, lists, width or 224, height or 224, cache))
        super().__init__(parser.records, input_size, augment, seed, skip_bad, fast_decode=fast_decode)
        _finish(self, parser)

    def _record(self, s, f, lists, width, height, cache):
        if s in cache:
            proto = cache[s]
            return Record(file=f, K=proto.K, width=width, height=height, joints3d=proto.joints3d, pose=proto.pose,
                          shape=proto.shape, verts=proto.verts, whole_image=True, source=proto.source)
        cache[s] = rec = self._parse_sample(s, f, lists, width, height)
        return rec

    def _parse_sample(self, s, f, lists, width, height):
        src = lists["K"][0]
        K = _arr(lists["K"][1][s], (3, 3), "K", self.name, s, src)
        rec = Record(file=f, K=K, width=width, height=height, whole_image=True, source=src)
        if "xyz" in lists:
            rec.joints3d = _arr(lists["xyz"][1][s], (21, 3), "xyz", self.name, s, lists["xyz"][0])
        if "mano" in lists:
            m = _arr(lists["mano"][1][s], (61,), "MANO row (48 pose, 10 shape, 2 uv_root, 1 scale)", self.name, s,
                     lists["mano"][0])
            rec.pose, rec.shape = m[:48].copy(), m[48:58].copy()
        if "verts" in lists:
            rec.verts = _arr(lists["verts"][1][s], (778, 3), "verts", self.name, s,
                             lists["verts"][0]).astype(np.float32)
        return rec


# ------------------------------------------------------------------------------------------------
class HO3D(HandDataset):
    """HO3D v2/v3 (the 256 setting), in either layout.

    * ``layout="coco"``: the published loader's ``annotations/HO3D_{train,evaluation}_data.json``
      (``images[]`` id/file_name/width/height; ``annotations[]`` image_id, ``joints_coord_cam``
      (21x3 m, HO3D order, OpenCV frame), ``cam_param`` {focal, princpt}, ``mano_param`` {pose,
      shape} for training; ``root_joint_cam`` and ``bbox`` for evaluation), images under
      ``train/`` and ``evaluation/``.
    * ``layout="official"``: ``{train,evaluation}.txt`` listing ``<seq>/<id>``, images
      ``<split>/<seq>/rgb/<id>.jpg`` (or ``.png``), meta pickles ``<split>/<seq>/meta/<id>.pkl``
      (train: ``handPose``, ``handBeta``, ``handTrans``, ``handJoints3D``, ``camMat``; evaluation:
      ``handBoundingBox``, ``handJoints3D`` = the root, ``camMat``), OpenGL frame, read with a
      restricted unpickler (numpy arrays and plain containers only).  HO3D's ``handPose`` is the
      full articulation (``flat_hand_mean=True``); the contract's pose is the MANO layer's input
      (``flat_hand_mean=False``), so ``mano_model_path`` (for its ``hands_mean``) is needed to
      report MANO parameters; without it ``has_mano`` is False.
    * ``layout="auto"``: coco when its annotation file exists, else official.

    Evaluation ground truth (public now): ``{root}/evaluation_xyz.json`` and
    ``evaluation_verts.json`` (OpenGL frame, HO3D order, in evaluation order) are read when present.

    Args:
        crop: ``None`` (published: training from the GT 2-D joint box ×1.5, evaluation from the
            annotation's box ×1.5, both clipped to the frame and made square), ``"joints"`` or ``"bbox"``.
        mano_model_path: MANO_RIGHT.pkl, for the official layout's ``handPose`` conversion.
    """

    name = "HO3D"
    LAYOUT_COCO = ("{root}/annotations/HO3D_{train,evaluation}_data.json with images under {root}/train/ and "
                   "{root}/evaluation/")
    LAYOUT_OFFICIAL = ("{root}/{train,evaluation}.txt, {root}/<split>/<seq>/rgb/<id>.jpg|.png and "
                       "{root}/<split>/<seq>/meta/<id>.pkl")

    def __init__(self, root, split: str = "train", layout: str = "auto", input_size: int = 256,
                 augment: bool = False, seed: int = 0, skip_bad: bool = False, crop: Optional[str] = None,
                 mano_model_path: Optional[str] = None, fast_decode: bool = True):
        root = os.fspath(root)
        if split not in ("train", "evaluation"):
            raise ValueError(f"HO3D: split must be 'train' or 'evaluation', got {split!r}")
        check_dir(root, self.name, f"either {self.LAYOUT_COCO} or {self.LAYOUT_OFFICIAL}")
        coco_ann = os.path.join(root, "annotations", f"HO3D_{split}_data.json")
        split_txt = os.path.join(root, f"{split}.txt")
        if layout == "auto":
            if os.path.isfile(coco_ann):
                layout = "coco"
            elif os.path.isfile(split_txt):
                layout = "official"
            else:
                raise FileNotFoundError(f"HO3D: neither {coco_ann!r} nor {split_txt!r} exists (expected either "
                                        f"{self.LAYOUT_COCO} or {self.LAYOUT_OFFICIAL})")
        if layout not in ("coco", "official"):
            raise ValueError(f"HO3D: layout must be 'auto', 'coco' or 'official', got {layout!r}")
        self.layout = layout
        self.split = split
        parser = _Parser(self.name, skip_bad)
        if layout == "coco":
            self._parse_coco(root, split, coco_ann, parser)
        else:
            hands_mean = None
            if mano_model_path is not None:
                from ..model.mano import load_mano_pickle
                hands_mean = load_mano_pickle(mano_model_path)["hands_mean"]
            self._parse_official(root, split, split_txt, parser, hands_mean)
        if split == "evaluation":
            self._attach_eval_gt(root, parser)
        if crop is None:
            # published: training crops from the GT 2-D joints, evaluation from the annotation's box
            crop = "bbox" if split == "evaluation" else "joints"
        super().__init__(parser.records, input_size, augment, seed, skip_bad, crop=crop, fast_decode=fast_decode)
        _finish(self, parser)

    def _parse_coco(self, root, split, ann_path, parser):
        check_file(ann_path, self.name, self.LAYOUT_COCO)
        img_dir = check_dir(os.path.join(root, split), self.name, self.LAYOUT_COCO)
        db = _load_json(ann_path, self.name)
        if not isinstance(db, dict) or "images" not in db or "annotations" not in db:
            raise DatasetError(f"HO3D: {ann_path}: expected a COCO-style dict with 'images' and 'annotations'")
        images = {im["id"]: im for im in db["images"]}
        for i, ann in enumerate(db["annotations"]):
            def make(i=i, ann=ann):
                im = images.get(ann.get("image_id"))
                if im is None:
                    raise DatasetError(f"HO3D: sample {i} ({ann_path}): image_id {ann.get('image_id')!r} is not in "
                                       "'images'")
                f = os.path.join(img_dir, im["file_name"])
                cam = ann.get("cam_param") or {}
                K = self._K(cam.get("focal"), cam.get("princpt"), i, ann_path)
                rec = Record(file=f, K=K, width=int(im["width"]), height=int(im["height"]), source=ann_path)
                if ann.get("joints_coord_cam") is not None:
                    j = _arr(ann["joints_coord_cam"], (21, 3), "joints_coord_cam", self.name, i, ann_path)
                    rec.joints3d = j[HO3D_TO_FREIHAND]
                    rec.joints2d = _project(K, rec.joints3d)
                mp = ann.get("mano_param")
                if mp is not None:
                    rec.pose = _arr(mp["pose"], (48,), "mano_param.pose", self.name, i, ann_path)
                    rec.shape = _arr(mp["shape"], (10,), "mano_param.shape", self.name, i, ann_path)
                if ann.get("root_joint_cam") is not None:
                    rec.root = _arr(ann["root_joint_cam"], (3,), "root_joint_cam", self.name, i, ann_path)
                if ann.get("bbox") is not None:
                    rec.box = _arr(ann["bbox"], (4,), "bbox", self.name, i, ann_path)
                if split == "train" and rec.joints3d is None:
                    raise DatasetError(f"HO3D: sample {i} ({ann_path}): training annotation lacks joints_coord_cam")
                if rec.joints2d is None and rec.box is None:
                    raise DatasetError(f"HO3D: sample {i} ({ann_path}): neither joints_coord_cam nor bbox")
                return rec
            parser.add(i, ann_path, make)

    def _K(self, focal, princpt, i, path):
        f = _arr(focal, (2,), "cam_param.focal", self.name, i, path)
        c = _arr(princpt, (2,), "cam_param.princpt", self.name, i, path)
        return np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])

    def _parse_official(self, root, split, split_txt, parser, hands_mean):
        from .pickle_io import load_meta_pickle, meta_array
        check_file(split_txt, self.name, self.LAYOUT_OFFICIAL)
        check_dir(os.path.join(root, split), self.name, self.LAYOUT_OFFICIAL)
        with open(split_txt) as fh:
            ids = [ln.strip() for ln in fh if ln.strip()]
        for i, sid in enumerate(ids):
            def make(i=i, sid=sid):
                seq, fid = sid.replace("\\", "/").split("/", 1) if "/" in sid else (None, None)
                if seq is None:
                    raise DatasetError(f"HO3D: line {i + 1} of {split_txt}: expected '<seq>/<id>', got {sid!r}")
                base = os.path.join(root, split, seq)
                meta_path = os.path.join(base, "meta", fid + ".pkl")
                f = os.path.join(base, "rgb", fid + ".jpg")
                if not os.path.isfile(f) and os.path.isfile(os.path.join(base, "rgb", fid + ".png")):
                    f = os.path.join(base, "rgb", fid + ".png")
                try:
                    meta = load_meta_pickle(meta_path)
                    K = meta_array(meta, "camMat", (3, 3), meta_path)
                    rec = Record(file=f, K=K, width=640, height=480, source=meta_path)
                    if split == "train":
                        j = meta_array(meta, "handJoints3D", (21, 3), meta_path) @ OPENGL_TO_OPENCV
                        rec.joints3d = j[HO3D_TO_FREIHAND]
                        rec.joints2d = _project(K, rec.joints3d)
                        if hands_mean is not None:
                            pose = meta_array(meta, "handPose", (48,), meta_path).copy()
                            pose[3:] -= hands_mean
                            R = OPENGL_TO_OPENCV @ aug.axis_angle_to_matrix_np(pose[:3])
                            pose[:3] = aug.matrix_to_axis_angle_np(R)
                            rec.pose = pose
                            rec.shape = meta_array(meta, "handBeta", (10,), meta_path)
                    else:
                        bb = meta_array(meta, "handBoundingBox", (4,), meta_path)
                        rec.box = np.array([bb[0], bb[1], bb[2] - bb[0], bb[3] - bb[1]])
                        rec.root = meta_array(meta, "handJoints3D", (3,), meta_path) @ OPENGL_TO_OPENCV
                except KeyError as e:
                    raise DatasetError(f"HO3D: sample {i} ({meta_path}): meta file lacks {e.args[0]!r}") from None
                except (ValueError, OSError, pickle.UnpicklingError) as e:
                    if isinstance(e, DatasetError):
                        raise
                    raise DatasetError(f"HO3D: sample {i} ({meta_path}): {e}") from e
                return rec
            parser.add(i, sid, make)
        self._read_image_sizes(parser)

    @staticmethod
    def _read_image_sizes(parser):
        # HO3D frames are 640 x 480; read the real size of the first frame (header only) for all.
        from PIL import Image
        for rec in parser.records:
            if os.path.isfile(rec.file):
                with Image.open(rec.file) as im:
                    w, h = im.size
                for r in parser.records:
                    r.width, r.height = w, h
                return

    def _attach_eval_gt(self, root, parser):
        xyz_p, verts_p = os.path.join(root, "evaluation_xyz.json"), os.path.join(root, "evaluation_verts.json")
        if not os.path.isfile(xyz_p):
            return
        xyz = _load_json(xyz_p, self.name)
        verts = _load_json(verts_p, self.name) if os.path.isfile(verts_p) else None
        n = len(parser.records) + len(parser.skipped)
        lens = {os.path.basename(xyz_p): len(xyz)}
        if verts is not None:
            lens[os.path.basename(verts_p)] = len(verts)
        if any(v != n for v in lens.values()):
            raise DatasetError(f"HO3D: evaluation ground truth has different lengths than the {n} evaluation "
                               f"samples: {lens}")
        if parser.skipped:
            return  # indices no longer line up with the records; scoring needs the full split
        for i, rec in enumerate(parser.records):
            j = _arr(xyz[i], (21, 3), "evaluation_xyz", self.name, i, xyz_p) @ OPENGL_TO_OPENCV
            rec.joints3d = j[HO3D_TO_FREIHAND]
            rec.joints2d = _project(rec.K, rec.joints3d)
            if verts is not None:
                rec.verts = _arr(verts[i], (778, 3), "evaluation_verts", self.name, i, verts_p) @ OPENGL_TO_OPENCV


# ------------------------------------------------------------------------------------------------
def mirror_pose(pose48: np.ndarray) -> np.ndarray:
    """Left <-> right MANO pose: negate the y and z axis-angle components of every joint."""
    p = np.array(pose48, dtype=np.float64, copy=True).reshape(16, 3)
    p[:, 1:] *= -1.0
    return p.reshape(48)


class DexYCB(HandDataset):
    """DexYCB, s0 split (the 256 setting).

    Layout: ``{root}/annotations/DEX_YCB_s0_{train,test}_data.json`` (COCO-style: ``images[]``
    id/file_name/width/height, file names relative to ``root``; ``annotations[]`` image_id,
    ``joints_coord_cam`` (21x3 m), ``joints_img`` (21x2 px), ``hand_type`` 'right'/'left',
    ``cam_param`` {focal, princpt}, ``mano_param`` {pose, shape[, trans]}).  Left hands are mirrored
    into right hands as the published loader does: image flipped (u -> W-1-u), x negated, the
    principal point mirrored, and the pose's y and z components negated for every joint.

    Args:
        crop: ``"joints"`` (published: the GT 2-D joint box ×1.5, made square) or ``"bbox"``
            (the annotation's ``bbox`` x, y, w, h ×1.5, made square).
    """

    name = "DexYCB"
    LAYOUT = "{root}/annotations/DEX_YCB_s0_{train,test}_data.json, images at the file_name paths relative to {root}"

    def __init__(self, root, split: str = "train", input_size: int = 256, augment: bool = False, seed: int = 0,
                 crop: str = "joints", skip_bad: bool = False, fast_decode: bool = True):
        root = os.fspath(root)
        if split not in ("train", "test"):
            raise ValueError(f"DexYCB: split must be 'train' or 'test', got {split!r}")
        check_dir(root, self.name, self.LAYOUT)
        ann_path = check_file(os.path.join(root, "annotations", f"DEX_YCB_s0_{split}_data.json"), self.name,
                              self.LAYOUT)
        db = _load_json(ann_path, self.name)
        if not isinstance(db, dict) or "images" not in db or "annotations" not in db:
            raise DatasetError(f"DexYCB: {ann_path}: expected a COCO-style dict with 'images' and 'annotations'")
        images = {im["id"]: im for im in db["images"]}
        parser = _Parser(self.name, skip_bad)
        for i, ann in enumerate(db["annotations"]):
            def make(i=i, ann=ann):
                im = images.get(ann.get("image_id"))
                if im is None:
                    raise DatasetError(f"DexYCB: sample {i} ({ann_path}): image_id {ann.get('image_id')!r} not in "
                                       "'images'")
                W, H = int(im["width"]), int(im["height"])
                cam = ann.get("cam_param") or {}
                f = _arr(cam.get("focal"), (2,), "cam_param.focal", self.name, i, ann_path)
                c = _arr(cam.get("princpt"), (2,), "cam_param.princpt", self.name, i, ann_path)
                hand = ann.get("hand_type", "right")
                if hand not in ("right", "left"):
                    raise DatasetError(f"DexYCB: sample {i} ({ann_path}): hand_type must be 'right' or 'left', got "
                                       f"{hand!r}")
                flip = hand == "left"
                j3 = _arr(ann["joints_coord_cam"], (21, 3), "joints_coord_cam", self.name, i, ann_path)
                j2 = _arr(ann["joints_img"], (21, 2), "joints_img", self.name, i, ann_path)
                mp = ann.get("mano_param") or {}
                pose = _arr(mp["pose"], (48,), "mano_param.pose", self.name, i, ann_path) if "pose" in mp else None
                shape = _arr(mp["shape"], (10,), "mano_param.shape", self.name, i, ann_path) if "shape" in mp else None
                box = _arr(ann["bbox"], (4,), "bbox", self.name, i, ann_path) if ann.get("bbox") is not None else None
                if crop == "bbox" and box is None:
                    raise DatasetError(f"DexYCB: sample {i} ({ann_path}): crop='bbox' but the annotation has no bbox")
                if flip:
                    c = c.copy()
                    c[0] = W - 1.0 - c[0]
                    j3 = j3 * np.array([-1.0, 1.0, 1.0])
                    j2 = j2.copy()
                    j2[:, 0] = W - 1.0 - j2[:, 0]
                    pose = mirror_pose(pose) if pose is not None else None
                    if box is not None:
                        box = np.array([W - 1.0 - box[0] - box[2], box[1], box[2], box[3]])
                K = np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])
                return Record(file=os.path.join(root, im["file_name"]), K=K, width=W, height=H,
                              joints3d=j3[DEXYCB_TO_FREIHAND], joints2d=j2[DEXYCB_TO_FREIHAND], pose=pose,
                              shape=shape, box=box, flip=flip, source=ann_path)
            parser.add(i, ann_path, make)
        super().__init__(parser.records, input_size, augment, seed, skip_bad, crop=crop, fast_decode=fast_decode)
        _finish(self, parser)


def build_dataset(name: str, root, split: str, **kwargs) -> HandDataset:
    """``build_dataset("ho3d", root, "train", augment=True)``; ``input_size`` defaults per dataset."""
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")
    kwargs.setdefault("input_size", DEFAULT_INPUT_SIZE[key])
    cls = {"freihand": FreiHAND, "ho3d": HO3D, "dexycb": DexYCB}[key]
    return cls(root, split, **kwargs)
