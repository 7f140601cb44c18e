"""Scoring HandS3C predictions with the official protocols of FreiHAND, HO3D and DexYCB.

* :mod:`.metrics`: the metrics in torch, vectorised over the batch (MPJPE, PA-MPJPE, MPVPE,
  PA-MPVPE, F-scores, PCK/AUC, the alignments);
* :mod:`.scoring`: :class:`HandScorer`, one benchmark's protocol streamed batch by batch.
"""
from .metrics import (F_THRESHOLDS_M, HO3D_SCALE_JOINTS, MM_PER_M, PCKAccumulator, PCKResult,
                      align_scale_translation, fscore, mpjpe, mpvpe, nearest_neighbour_distances, pa_mpjpe,
                      pa_mpvpe, pck_curve, point_errors, procrustes_align, root_align)
from .scoring import CURVE_TITLES, PROTOCOLS, HandScorer, Protocol

__all__ = ["F_THRESHOLDS_M", "HO3D_SCALE_JOINTS", "MM_PER_M", "PCKAccumulator", "PCKResult",
           "align_scale_translation", "fscore", "mpjpe", "mpvpe", "nearest_neighbour_distances", "pa_mpjpe",
           "pa_mpvpe", "pck_curve", "point_errors", "procrustes_align", "root_align",
           "CURVE_TITLES", "PROTOCOLS", "HandScorer", "Protocol"]
