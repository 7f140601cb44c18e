"""The sample contract shared by every reader, and the machinery that builds a sample.

A reader parses its annotation files once into :class:`Record` objects (numpy, FreiHAND joint
order, OpenCV camera frame, metres) and :class:`HandDataset` turns a record into a sample:
box -> (augmentation) -> crop affine -> reduced-scale decode + one warp -> tensors.

Sample (a dict; the default collate stacks it):

=================  =================  ==========================================================
key                shape / dtype      meaning
=================  =================  ==========================================================
``image``          (3, S, S) float32  RGB crop in [0, 1] (no mean/std normalisation, SPEC §1)
``pose``           (48,) float32      MANO axis-angle, root first, as the MANO layer takes it
``shape``          (10,) float32      MANO betas
``joints2d``       (21, 2) float32    crop pixels / S (x right, y down), FreiHAND order
``joints3d``       (21, 3) float32    metres, camera frame (OpenCV), FreiHAND order
``root``           (3,) float32       ``joints3d[0]`` (HO3D evaluation: ``root_joint_cam``)
``K``              (3, 3) float32     maps ``joints3d`` to homogeneous crop pixels
``verts``          (778, 3) float32   metres, camera frame, when the annotation has them
``has_mano``       () bool            ``pose``/``shape`` valid
``has_joints3d``   () bool            ``joints3d``/``joints2d`` valid
``has_verts``      () bool            ``verts`` valid
``crop_to_image``  (2, 3) float32     crop pixel -> pixel of the image file
``bbox``           (4,) float32       x, y, w, h of the square box (the sample's frame)
``index``          () int64           dataset index of the sample returned
``replaces``       () int64           -1, or (``skip_bad``) the requested index whose image did not decode
``file``           str                image path
=================  =================  ==========================================================

Absent values are zeros with their flag False, never NaN.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from . import augment as aug
from .decode import ImageDecodeError, warp_crop_planes

__all__ = ["Record", "HandDataset", "DatasetError", "check_dir", "check_file"]


class DatasetError(ValueError):
    """Bad dataset content (a message naming the dataset, the sample index and the file)."""


def check_dir(path: str, dataset: str, layout: str) -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{dataset}: folder not found: {path!r} (expected layout: {layout})")
    return path


def check_file(path: str, dataset: str, layout: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{dataset}: annotation file not found: {path!r} (expected layout: {layout})")
    return path


@dataclass
class Record:
    file: str
    K: np.ndarray                          # (3, 3) camera of the image file (after mirroring if flip)
    width: int
    height: int
    joints3d: Optional[np.ndarray] = None  # (21, 3) FreiHAND order, metres, OpenCV frame
    joints2d: Optional[np.ndarray] = None  # (21, 2) image pixels (mirrored frame if flip)
    pose: Optional[np.ndarray] = None      # (48,)
    shape: Optional[np.ndarray] = None     # (10,)
    verts: Optional[np.ndarray] = None     # (778, 3)
    root: Optional[np.ndarray] = None      # (3,)
    box: Optional[np.ndarray] = None       # (4,) x, y, w, h given by the annotation
    flip: bool = False                     # mirror the image (left hand -> right hand)
    whole_image: bool = False              # the image is the crop already (FreiHAND)
    source: str = ""                       # annotation file the record came from (for errors)

    def arrays(self):
        return {k: getattr(self, k) for k in ("K", "joints3d", "joints2d", "pose", "shape", "verts", "root", "box")
                if getattr(self, k) is not None}


def _project(K: np.ndarray, X: np.ndarray) -> np.ndarray:
    p = X @ K.T
    return p[:, :2] / p[:, 2:3]


class HandDataset(Dataset):
    """Base of the readers: holds records, builds samples (see the module docstring)."""

    name = "dataset"

    def __init__(self, records: List[Record], input_size: int, augment: bool, seed: int, skip_bad: bool,
                 crop: str = "joints", fast_decode: bool = True):
        if int(input_size) <= 0:
            raise ValueError(f"{self.name}: input_size must be a positive number of pixels, got {input_size}")
        if crop not in ("joints", "bbox"):
            raise ValueError(f"{self.name}: crop must be 'joints' or 'bbox', got {crop!r}")
        self.input_size = int(input_size)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0
        self.skip_bad = bool(skip_bad)
        self.crop = crop
        self.fast_decode = bool(fast_decode)
        self.skipped: List[Tuple[int, str, str]] = []   # (record index, file, reason)
        self.records = self._validate(records)

    # -- validation ---------------------------------------------------------------------------
    def _bad(self, i: int, rec: Record, reason: str):
        msg = f"{self.name}: sample {i} ({rec.file}): {reason}"
        if not self.skip_bad:
            raise DatasetError(msg)
        self.skipped.append((i, rec.file, reason))

    def _validate(self, records: List[Record]) -> List[Record]:
        kept = []
        for i, rec in enumerate(records):
            bad = [k for k, v in rec.arrays().items() if not np.all(np.isfinite(v))]
            if bad:
                self._bad(i, rec, f"non-finite (NaN or infinite) annotation values in {bad}"
                          + (f" of {rec.source}" if rec.source else ""))
                continue
            if not os.path.isfile(rec.file):
                self._bad(i, rec, "image file is missing")
                continue
            kept.append(rec)
        if self.skipped:
            warnings.warn(f"{self.name}: skipped {len(self.skipped)} bad sample(s) of {len(records)} (skip_bad=True); "
                          f"first: sample {self.skipped[0][0]} ({self.skipped[0][1]}): {self.skipped[0][2]}",
                          UserWarning, stacklevel=3)
        if not kept:
            raise DatasetError(f"{self.name}: no usable samples ({len(records)} in the annotation, "
                               f"{len(self.skipped)} skipped)")
        return kept

    # -- API ------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Reseed the augmentation for a new epoch (samples draw from (seed, epoch, index))."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def augmentation_for(self, index: int) -> aug.AugParams:
        if not self.augment:
            return aug.NO_AUGMENTATION
        return aug.sample_augmentation(self.seed, self.epoch, index)

    def box_for(self, rec: Record) -> np.ndarray:
        if rec.whole_image:
            return aug.square_box(0.0, 0.0, rec.width, rec.height, 1.0)
        W, H = rec.width, rec.height
        if self.crop == "joints" and rec.joints2d is not None:
            return aug.square_box_from_joints(rec.joints2d, aug.BOX_EXPANSION, W, H)
        if rec.box is not None:
            return aug.square_box_from_bbox(rec.box, aug.BOX_EXPANSION, W, H)
        if rec.joints2d is not None:
            return aug.square_box_from_joints(rec.joints2d, aug.BOX_EXPANSION, W, H)
        raise DatasetError(f"{self.name}: {rec.file}: neither 2-D joints nor a box to crop around")

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} samples")
        tries = 0
        i = index
        while True:
            try:
                sample = self._build(i)
                # The sample is sample i's image and annotation, so it carries i; ``replaces`` names
                # the requested sample it stands in for (-1 when none), so a consumer that must not
                # count a sample twice (evaluation) can drop it and report the skip, also from
                # loader workers, whose ``skipped`` list never reaches the main process.
                sample["index"] = torch.tensor(i, dtype=torch.int64)
                sample["replaces"] = torch.tensor(index if i != index else -1, dtype=torch.int64)
                return sample
            except (ImageDecodeError, OSError) as e:
                msg = f"{self.name}: sample {i} ({self.records[i].file}): {e}"
                if not self.skip_bad:
                    raise DatasetError(msg) from e
                self.skipped.append((i, self.records[i].file, str(e)))
                warnings.warn(f"{msg}; skipped (skip_bad=True), using sample {(i + 1) % len(self)} instead",
                              UserWarning, stacklevel=2)
                tries += 1
                if tries >= len(self):
                    raise DatasetError(f"{self.name}: no sample decodes") from e
                i = (i + 1) % len(self)

    def _crop_image(self, rec: Record, M: np.ndarray, S: int, side: float, p: aug.AugParams) -> np.ndarray:
        """(3, S, S) float32 RGB in [0, 1]: reduced-scale decode, one uint8 warp, then colour scale, clip,
        CHW layout and float conversion in one look-up-table pass over the crop."""
        img, _ = warp_crop_planes(rec.file, M, S, side, color=p.color, fast=self.fast_decode)
        return img

    def _build(self, index: int) -> dict:
        rec = self.records[index]
        S = self.input_size
        p = self.augmentation_for(index)
        box = self.box_for(rec)
        M, Rz, side = aug.crop_affine(box, S, p, flip_width=rec.width if rec.flip else None)
        # M maps file pixels to crop pixels; in the sample's (mirrored) frame the affine is M_s
        M_s = M @ np.array([[-1.0, 0, rec.width - 1.0], [0, 1, 0], [0, 0, 1]]) if rec.flip else M
        img = self._crop_image(rec, M, S, side, p)
        M3 = np.array([M_s[0], M_s[1], (0.0, 0.0, 1.0)])
        rotated = p.rot_deg != 0.0
        K_crop = M3 @ rec.K @ Rz.T if rotated else M3 @ rec.K
        out = {"image": torch.from_numpy(img)}

        z3 = np.zeros((21, 3))
        has_j = rec.joints3d is not None
        j3 = rec.joints3d @ Rz.T if has_j else z3
        if rec.joints2d is not None:
            j2 = rec.joints2d @ M_s[:, :2].T + M_s[:, 2]
        elif has_j:
            j2 = _project(K_crop, j3)
        else:
            j2 = np.zeros((21, 2))
        has_mano = rec.pose is not None and rec.shape is not None
        pose = (aug.rotate_root_pose(rec.pose, Rz) if rotated else rec.pose) if has_mano else np.zeros(48)
        shape = rec.shape if has_mano else np.zeros(10)
        has_v = rec.verts is not None
        verts = rec.verts @ Rz.T if has_v else np.zeros((778, 3))
        if has_j:
            root = j3[0]
        elif rec.root is not None:
            root = rec.root @ Rz.T
        else:
            root = np.zeros(3)
        A = M[:, :2]
        det = A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0]
        Ai = np.array([[A[1, 1], -A[0, 1]], [-A[1, 0], A[0, 0]]]) / det
        inv = np.concatenate([Ai, -(Ai @ M[:, 2])[:, None]], axis=1)     # crop pixel -> file pixel
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        out.update({
            "pose": f32(pose), "shape": f32(shape), "joints2d": f32(j2 / S), "joints3d": f32(j3), "root": f32(root),
            "K": f32(K_crop), "verts": f32(verts),
            "has_mano": torch.tensor(has_mano), "has_joints3d": torch.tensor(has_j), "has_verts": torch.tensor(has_v),
            "crop_to_image": f32(inv),
            "bbox": f32([box[0] + 0.5 * box[2] - 0.5 * side, box[1] + 0.5 * box[3] - 0.5 * side, side, side]),
            "file": rec.file,
        })
        return out
