"""The three benchmarks' scoring protocols on top of :mod:`.metrics`, streamed batch by batch.

:class:`HandScorer` takes predictions that are already *placed* (root moved onto the ground
truth's root, as every published evaluation of these datasets does) and in the joint order the
protocol scores in, and accumulates everything the protocol reports:

============  ===============================================================================
protocol      what is reported (official script / published code)
============  ===============================================================================
freihand      joints and mesh, unaligned and ``align_w_scale``-aligned (reflections allowed, as
              ``orthogonal_procrustes``): mean error, AUC of the PCK over 0-50 mm; F@5, F@15
              mm of the mesh, unaligned and aligned (lmb-freiburg/freihand ``eval.py``)
ho3d          everything FreiHAND reports, plus joints scale-and-translation aligned
              (``align_sc_tr`` on HO3D order joints 0 and 4) (shreyashampali/ho3d ``eval.py``)
dexycb        MPJPE after root-centring and PA-MPJPE with HandOccNet's ``rigid_align`` (a
              rotation, no reflection), as published; plus, which the published code does not
              report, MPVPE / PA-MPVPE and the F-scores with the same alignment
============  ===============================================================================

Errors are in millimetres, F-scores and AUCs fractions in [0, 1].  Metric names (the keys of
:meth:`HandScorer.compute`): ``mpjpe_mm``, ``pa_mpjpe_mm``, ``sc_tr_mpjpe_mm`` (HO3D), ``mpvpe_mm``,
``pa_mpvpe_mm``, ``auc_joints``, ``pa_auc_joints``, ``sc_tr_auc_joints`` (HO3D), ``auc_mesh``,
``pa_auc_mesh``, ``f5``, ``f15``, ``pa_f5``, ``pa_f15``, with ``num_joint_samples`` and
``num_mesh_samples`` (how many samples had that ground truth).  Mesh entries are absent when no
sample had ground-truth vertices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch

from .metrics import (F_THRESHOLDS_M, HO3D_SCALE_JOINTS, PCKAccumulator, align_scale_translation,
                      fscores, point_errors, procrustes_align)

__all__ = ["PROTOCOLS", "Protocol", "HandScorer", "CURVE_TITLES", "format_metrics_table"]


@dataclass(frozen=True)
class Protocol:
    """How one benchmark scores: ``allow_reflection`` of the Procrustes alignment, and whether the
    scale-and-translation alignment (HO3D) is reported, with its (root, ref) joints in the scored order."""

    name: str
    allow_reflection: bool
    scale_translation: Optional[tuple] = None


PROTOCOLS: Dict[str, Protocol] = {
    "freihand": Protocol("freihand", allow_reflection=True),
    "ho3d": Protocol("ho3d", allow_reflection=True, scale_translation=HO3D_SCALE_JOINTS),
    "dexycb": Protocol("dexycb", allow_reflection=False),
}

# Titles of the official evaluation's curves (its HTML report), keyed by curve name.
CURVE_TITLES = {
    "joints": "PCK curve for keypoint error",
    "pa_joints": "PCK curve for aligned keypoint error",
    "sc_tr_joints": "PCK curve for scale-translation aligned keypoint error",
    "mesh": "PCV curve for mesh error",
    "pa_mesh": "PCV curve for aligned mesh error",
}


class HandScorer:
    """Streams (prediction, ground truth) batches through one benchmark's protocol.

    The alignments and nearest-neighbour searches run on the device of the predictions (a GPU
    run scores on the GPU); only the per-point errors go to the CPU accumulators.

    Args:
        protocol: ``"freihand"``, ``"ho3d"`` or ``"dexycb"`` (see the module docstring).
    """

    def __init__(self, protocol: str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"HandScorer: protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
        self.protocol = PROTOCOLS[protocol]
        self._pck = {"joints": PCKAccumulator(21), "pa_joints": PCKAccumulator(21),
                     "mesh": PCKAccumulator(778), "pa_mesh": PCKAccumulator(778)}
        if self.protocol.scale_translation is not None:
            self._pck["sc_tr_joints"] = PCKAccumulator(21)
        self._f_sums = {f"{pre}f{round(t * 1000)}": 0.0 for pre in ("", "pa_") for t in F_THRESHOLDS_M}
        self._n_joints = 0
        self._n_mesh = 0

    @staticmethod
    def _finite(name: str, t: torch.Tensor) -> torch.Tensor:
        if not bool(torch.isfinite(t).all()):
            bad = (~torch.isfinite(t)).flatten(1).any(dim=1).nonzero().flatten().tolist()
            raise ValueError(f"HandScorer: {name} holds NaN or infinite values (batch rows {bad[:10]})")
        return t

    def update(self, pred_joints: torch.Tensor, gt_joints: torch.Tensor,
               pred_verts: Optional[torch.Tensor] = None, gt_verts: Optional[torch.Tensor] = None) -> None:
        """Add one batch: :meth:`update_joints`, then :meth:`update_mesh` when vertices are given."""
        self.update_joints(pred_joints, gt_joints)
        if pred_verts is not None and gt_verts is not None:
            self.update_mesh(pred_verts, gt_verts)

    def update_joints(self, pred_joints: torch.Tensor, gt_joints: torch.Tensor) -> None:
        """pred_joints, gt_joints: (B, 21, 3) metres, camera frame, placed and in the protocol's joint
        order (HO3D: HO3D order, since ``align_sc_tr`` indexes joints 0 and 4 of it); B may be 0."""
        pj = self._finite("pred_joints", pred_joints.detach())
        gj = self._finite("gt_joints", gt_joints.detach().to(pred_joints.device))
        if not pj.shape[0] and not gj.shape[0]:
            return
        self._pck["joints"].update(point_errors(pj, gj))
        self._pck["pa_joints"].update(point_errors(procrustes_align(pj, gj, self.protocol.allow_reflection), gj))
        if self.protocol.scale_translation is not None:
            root, ref = self.protocol.scale_translation
            self._pck["sc_tr_joints"].update(point_errors(align_scale_translation(pj, gj, root, ref), gj))
        self._n_joints += pj.shape[0]

    def update_mesh(self, pred_verts: torch.Tensor, gt_verts: torch.Tensor) -> None:
        """pred_verts, gt_verts: (B, 778, 3) metres, camera frame, placed; B may be 0."""
        pv = self._finite("pred_verts", pred_verts.detach())
        gv = self._finite("gt_verts", gt_verts.detach().to(pred_verts.device))
        if not pv.shape[0] and not gv.shape[0]:
            return
        # Vertices are aligned on their own (the official scripts do so when the prediction has
        # the 778 MANO vertices, which a HandS3C prediction always has).
        pv_al = procrustes_align(pv, gv, self.protocol.allow_reflection)
        self._pck["mesh"].update(point_errors(pv, gv))
        self._pck["pa_mesh"].update(point_errors(pv_al, gv))
        for prefix, pred in (("", pv), ("pa_", pv_al)):
            for t, (f, _, _) in fscores(pred, gv, F_THRESHOLDS_M).items():
                self._f_sums[f"{prefix}f{round(t * 1000)}"] += float(f.sum())
        self._n_mesh += pv.shape[0]

    def compute(self) -> Dict[str, float]:
        """The protocol's metrics so far (see the module docstring for the names)."""
        if self._n_joints == 0 and self._n_mesh == 0:
            raise ValueError(f"HandScorer({self.protocol.name}): no sample with ground truth was scored")
        out: Dict[str, float] = {"num_joint_samples": self._n_joints, "num_mesh_samples": self._n_mesh}
        names = {"joints": ("mpjpe_mm", "auc_joints"), "pa_joints": ("pa_mpjpe_mm", "pa_auc_joints"),
                 "sc_tr_joints": ("sc_tr_mpjpe_mm", "sc_tr_auc_joints"),
                 "mesh": ("mpvpe_mm", "auc_mesh"), "pa_mesh": ("pa_mpvpe_mm", "pa_auc_mesh")}
        for curve, acc in self._pck.items():
            if acc.count:
                r = acc.result()
                out[names[curve][0]] = r.mean_mm
                out[names[curve][1]] = r.auc
        if self._n_mesh:
            for k, v in self._f_sums.items():
                out[k] = v / self._n_mesh
        return out

    def curves(self) -> Dict[str, Dict[str, np.ndarray]]:
        """PCK curves of what was scored: name -> {"thresholds_mm": (100,), "pck": (100,), "auc": float}."""
        out = {}
        for curve, acc in self._pck.items():
            if acc.count:
                r = acc.result()
                out[curve] = {"thresholds_mm": r.thresholds_mm, "pck": r.curve, "auc": r.auc}
        return out


# (metric key, label, unit) in the order the table prints them.
_TABLE_ROWS = (
    ("mpjpe_mm", "MPJPE", "mm"), ("pa_mpjpe_mm", "PA-MPJPE", "mm"), ("sc_tr_mpjpe_mm", "ST-MPJPE (scale+transl.)", "mm"),
    ("mpvpe_mm", "MPVPE", "mm"), ("pa_mpvpe_mm", "PA-MPVPE", "mm"),
    ("f5", "F@5mm", ""), ("f15", "F@15mm", ""), ("pa_f5", "PA F@5mm", ""), ("pa_f15", "PA F@15mm", ""),
    ("auc_joints", "AUC joints 0-50mm", ""), ("pa_auc_joints", "PA AUC joints", ""),
    ("sc_tr_auc_joints", "ST AUC joints", ""), ("auc_mesh", "AUC mesh", ""), ("pa_auc_mesh", "PA AUC mesh", ""),
    ("num_samples", "samples predicted", ""), ("num_joint_samples", "samples with 3-D joints", ""),
    ("num_mesh_samples", "samples with a mesh", ""),
)


def format_metrics_table(metrics: Dict[str, float], title: str = "") -> str:
    """A plain-text table of the metrics present in ``metrics`` (errors mm, F and AUC fractions)."""
    lines = [title] if title else []
    width = max(len(label) for _, label, _ in _TABLE_ROWS)
    lines.append(f"{'metric':<{width}}  value")
    lines.append("-" * (width + 12))
    for key, label, unit in _TABLE_ROWS:
        if key not in metrics:
            continue
        v = metrics[key]
        text = f"{int(v)}" if key.startswith("num_") else (f"{v:.2f} {unit}" if unit else f"{v:.4f}")
        lines.append(f"{label:<{width}}  {text}")
    return "\n".join(lines)
