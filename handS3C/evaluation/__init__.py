"""Scoring HandS3C predictions with the official protocols of FreiHAND, HO3D and DexYCB.

* :mod:`.metrics`: the metrics in torch, vectorised over the batch (MPJPE, PA-MPJPE, MPVPE,
  PA-MPVPE, F-scores, PCK/AUC, the alignments);
* :mod:`.scoring`: :class:`HandScorer`, one benchmark's protocol streamed batch by batch;
* :mod:`.loop`: :func:`evaluate_model`, a model over a dataset (used by ``hands3c evaluate`` and
  by the trainer's periodic evaluation);
* :mod:`.submission`: the servers' ``pred.json`` / ``pred.zip`` and atomic file writing;
* :mod:`.plots`: the PCK curves as a PNG.
"""
from .loop import EvaluationResult, evaluate_model, protocol_of
from .metrics import (F_THRESHOLDS_M, HO3D_SCALE_JOINTS, MM_PER_M, PCKAccumulator, PCKResult,
                      align_scale_translation, fscore, fscores, mpjpe, mpvpe, nearest_neighbour_distances, pa_mpjpe,
                      pa_mpvpe, pck_curve, point_errors, procrustes_align, root_align)
from .plots import plot_pck_curves
from .scoring import CURVE_TITLES, PROTOCOLS, HandScorer, Protocol, format_metrics_table
from .submission import (SUBMISSION_FORMATS, atomic_write, read_submission, to_submission_frame,
                         write_json_atomic, write_submission)

__all__ = ["EvaluationResult", "evaluate_model", "protocol_of",
           "F_THRESHOLDS_M", "HO3D_SCALE_JOINTS", "MM_PER_M", "PCKAccumulator", "PCKResult",
           "align_scale_translation", "fscore", "fscores", "mpjpe", "mpvpe", "nearest_neighbour_distances", "pa_mpjpe",
           "pa_mpvpe", "pck_curve", "point_errors", "procrustes_align", "root_align",
           "plot_pck_curves", "CURVE_TITLES", "PROTOCOLS", "HandScorer", "Protocol", "format_metrics_table",
           "SUBMISSION_FORMATS", "atomic_write", "read_submission", "to_submission_frame", "write_json_atomic",
           "write_submission"]
