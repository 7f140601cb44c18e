"""The evaluation loop: a model over a dataset's evaluation split, scored with the benchmark's protocol.

:func:`evaluate_model` is what both ``hands3c evaluate`` and the trainer's periodic evaluation call.
It runs the model in ``eval`` mode without gradients (restoring the mode it found), places each
prediction at the sample's ``root`` (the published protocols put the root-relative prediction at
the ground-truth root: HO3D's ``root_joint_cam``, DexYCB's root joint; FreiHAND's evaluation
ground truth is public, so its root joint is used the same way), scores the samples that have
ground truth with :class:`~handS3C.evaluation.scoring.HandScorer`, and keeps the placed predictions
for a submission file.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .metrics import root_align
from .scoring import PROTOCOLS, HandScorer

__all__ = ["EvaluationResult", "evaluate_model", "protocol_of"]

# Dataset class name -> protocol (readers of handS3C.data).
_CLASS_PROTOCOL = {"freihand": "freihand", "ho3d": "ho3d", "dexycb": "dexycb"}


def protocol_of(dataset: Dataset) -> str:
    """The protocol of a ``handS3C.data`` reader (through ``torch.utils.data.Subset`` wrappers too)."""
    d = dataset
    while hasattr(d, "dataset") and not hasattr(d, "records"):
        d = d.dataset
    name = type(d).__name__.lower()
    if name not in _CLASS_PROTOCOL:
        raise ValueError(f"evaluate_model: cannot tell the protocol of a {type(d).__name__}; pass protocol= one of "
                         f"{sorted(PROTOCOLS)}")
    return _CLASS_PROTOCOL[name]


@dataclass
class EvaluationResult:
    """What :func:`evaluate_model` returns.

    ``metrics``: the protocol's metrics (names in :mod:`handS3C.evaluation.scoring`; errors in mm)
    plus ``num_samples`` (predictions made); empty of errors when no sample had ground truth.
    ``curves``: PCK curves, name -> {"thresholds_mm", "pck", "auc"}.
    ``joints3d``: (N, 21, 3) float32 placed predictions, metres, camera frame, FreiHAND order;
    ``verts``: (N, 778, 3) float32 likewise; ``indices``: (N,) int64 dataset indices (``None``
    arrays when ``keep_predictions=False``).  ``replaced``: indices of samples that did not decode
    (``skip_bad``); the stand-ins the dataset returned for them are neither scored nor kept.  ``protocol``: the protocol's name.
    """

    protocol: str
    metrics: Dict[str, float]
    curves: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)
    joints3d: Optional[np.ndarray] = None
    verts: Optional[np.ndarray] = None
    indices: Optional[np.ndarray] = None
    replaced: List[int] = field(default_factory=list)


def _gt_mesh_from_mano(mano, batch, device):
    """Ground-truth vertices from the sample's MANO parameters, placed so the MANO root joint
    lands on the annotated root joint (DexYCB gives MANO parameters, not vertices)."""
    v, j = mano(batch["pose"].to(device).float(), batch["shape"].to(device).float())
    return root_align(v, j[:, 0], batch["joints3d"].to(device)[:, 0].to(v.dtype))


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, dataset: Dataset, batch_size: int = 8, *, protocol: Optional[str] = None,
                   device: Optional[torch.device] = None, num_workers: int = 0, progress: bool = True,
                   gt_mano: Optional[torch.nn.Module] = None, keep_predictions: bool = True,
                   max_samples: Optional[int] = None) -> EvaluationResult:
    """Run ``model`` over ``dataset`` and score it.

    Args:
        model: a :class:`handS3C.HandS3C` (or anything returning its ``joints3d`` (B, 21, 3) and
            ``verts`` (B, 778, 3) metres from (B, 3, S, S) images in [0, 1]).
        dataset: a ``handS3C.data`` reader (the sample contract of ``handS3C.data.base``), normally
            its evaluation split without augmentation.
        batch_size, num_workers: of the ``DataLoader`` (no shuffling: predictions keep the dataset
            order, which the submission files need).
        protocol: ``"freihand"``, ``"ho3d"`` or ``"dexycb"``; ``None`` tells it from the reader's class.
        device: where the model runs; ``None``: the device of the model's parameters.
        progress: show a tqdm bar.
        gt_mano: a ``ManoLayer`` giving ground-truth vertices for samples that carry MANO parameters
            but no vertices (DexYCB); ``None``: such samples get joint metrics only.  It is moved
            to ``device`` (in place, as ``Module.to`` does).
        keep_predictions: keep the placed predictions (needed for a submission file).
        max_samples: stop after this many samples (a quick look during training).

    Returns an :class:`EvaluationResult`.  The model's train/eval mode is restored afterwards.
    """
    from tqdm import tqdm

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"evaluate_model: batch_size must be a positive integer, got {batch_size!r}")
    if len(dataset) == 0:
        raise ValueError("evaluate_model: the dataset is empty")
    protocol = protocol or protocol_of(dataset)
    scorer = HandScorer(protocol)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    if gt_mano is not None:
        gt_mano = gt_mano.to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    total = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    joints_out, verts_out, idx_out = [], [], []
    replaced: List[int] = []
    from ..data.joint_orders import FREIHAND_TO_HO3D
    ho3d_order = torch.as_tensor(FREIHAND_TO_HO3D, device=device)
    was_training = model.training
    model.eval()
    seen = 0
    try:
        bar = tqdm(total=total, desc=f"evaluate {protocol}", unit="img", disable=not progress, leave=False)
        for batch in loader:
            if seen >= total:
                break
            take = min(batch["image"].shape[0], total - seen)
            if take < batch["image"].shape[0]:
                batch = {k: v[:take] for k, v in batch.items()}
            seen += take
            bar.update(take)
            if "replaces" in batch and bool((batch["replaces"] >= 0).any()):
                # A sample that stands in for one that did not decode (skip_bad) is scored once,
                # at its own index: drop the stand-in and report the sample it replaced.
                keep = batch["replaces"] < 0
                replaced.extend(batch["replaces"][~keep].tolist())
                if not bool(keep.any()):
                    continue
                rows = keep.tolist()
                batch = {k: (v[keep] if isinstance(v, torch.Tensor) else [x for x, m in zip(v, rows) if m])
                         for k, v in batch.items()}
            out = model(batch["image"].to(device, non_blocking=True))
            pj = out["joints3d"].float()
            pv = out["verts"].float()
            root = batch["root"].to(device).float()
            # The network predicts a hand without translation: place it by its own root joint.
            pred_root = pj[:, 0]
            pv, pj = root_align(pv, pred_root, root), root_align(pj, pred_root, root)
            if not bool(torch.isfinite(pj).all() and torch.isfinite(pv).all()):
                bad = batch["index"][~(torch.isfinite(pj).flatten(1).all(1) & torch.isfinite(pv).flatten(1).all(1))
                                     .cpu()].tolist()
                raise ValueError(f"evaluate_model: the model predicted NaN or infinite values for dataset "
                                 f"samples {bad[:10]} (a diverged or corrupt checkpoint?)")
            has_j = batch["has_joints3d"].to(device).bool()
            if bool(has_j.any()):
                gj, pjs = batch["joints3d"].to(device).float()[has_j], pj[has_j]
                if protocol == "ho3d":
                    # HO3D scores in its own joint order (align_sc_tr indexes joints 0 and 4 of it).
                    gj, pjs = gj[:, ho3d_order], pjs[:, ho3d_order]
                scorer.update_joints(pjs, gj)
            gv = batch["verts"].to(device).float()
            has_v = batch["has_verts"].to(device).bool()
            if gt_mano is not None:
                from_mano = batch["has_mano"].to(device).bool() & has_j & ~has_v
                if bool(from_mano.any()):
                    rows = from_mano.cpu()
                    sub = {k: batch[k][rows] for k in ("pose", "shape", "joints3d")}
                    gv = gv.clone()
                    gv[from_mano] = _gt_mesh_from_mano(gt_mano, sub, device).float()
                    has_v = has_v | from_mano
            if bool(has_v.any()):
                scorer.update_mesh(pv[has_v], gv[has_v])
            if keep_predictions:
                joints_out.append(pj.cpu().numpy().astype(np.float32))
                verts_out.append(pv.cpu().numpy().astype(np.float32))
                idx_out.append(batch["index"].cpu().numpy().astype(np.int64))
        bar.close()
    finally:
        model.train(was_training)
    try:
        metrics = scorer.compute()
        curves = scorer.curves()
    except ValueError:
        warnings.warn(f"evaluate_model: no sample of the {protocol} split has 3-D ground truth; only predictions "
                      "were made (write a submission file to score them on the official server)",
                      UserWarning, stacklevel=2)
        metrics, curves = {"num_joint_samples": 0, "num_mesh_samples": 0}, {}
    metrics["num_samples"] = seen - len(replaced)
    res = EvaluationResult(protocol=protocol, metrics=metrics, curves=curves, replaced=sorted(set(replaced)))
    if keep_predictions:
        res.joints3d = np.concatenate(joints_out) if joints_out else np.zeros((0, 21, 3), np.float32)
        res.verts = np.concatenate(verts_out) if verts_out else np.zeros((0, 778, 3), np.float32)
        res.indices = np.concatenate(idx_out) if idx_out else np.zeros((0,), np.int64)
    return res
