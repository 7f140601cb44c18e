"""3-D hand pose and mesh metrics, vectorised over the batch (torch), as the official protocols define them.

Conventions: point sets are float tensors of shape (B, N, 3) in **metres** (N = 21 joints or 778
MANO vertices); every error this module reports is in **millimetres** (× 1000) except the F-score
(a fraction in [0, 1]) and the AUC (a fraction in [0, 1]).  Alignment and nearest-neighbour
searches compute in float64 whatever the input dtype, so a float32 prediction is scored like the
official float64 numpy scripts score it.

Sources of the formulas (checked in the public repositories):

* :func:`procrustes_align` with ``allow_reflection=True`` is FreiHAND's (and HO3D's) ``align_w_scale``:
  centre both sets, divide each by its Frobenius norm (+1e-8), ``scipy.linalg.orthogonal_procrustes``
  gives the orthogonal R and the scale s = sum of singular values; the prediction becomes
  ``(pred_n @ R.T) * s * |gt| + mean(gt)``.  ``orthogonal_procrustes`` does not exclude reflections,
  so neither does this mode.  ``allow_reflection=False`` is the Umeyama similarity transform that
  HandOccNet's ``rigid_align`` computes for DexYCB (the last singular vector flipped when
  det(R) < 0); it is the same optimum whenever the best orthogonal fit is a rotation.
* :func:`align_scale_translation` is HO3D's ``align_sc_tr``: scale the prediction so that its
  bone between joints 0 and 4 (HO3D order: wrist to middle MCP) has the ground truth's length,
  then move its joint 0 onto the ground truth's.
* :func:`fscore` is the official ``calculate_fscore``: nearest-neighbour distances both ways,
  precision = share of GT points closer than the threshold to the prediction, recall = share of
  predicted points closer than the threshold to the GT (strict ``<``), F = 2PR/(P+R) (0 when P+R = 0).
* :class:`PCKAccumulator` is FreiHAND's ``EvalUtil.get_measures(0, 0.05, 100)``: per keypoint the
  share of errors ``<=`` each of 100 thresholds in ``linspace(0, 50 mm, 100)``, the area under that
  curve by the trapezoid rule divided by the area under 1, then averaged over keypoints; the mean
  error is the mean over keypoints of each keypoint's mean error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "MM_PER_M", "HO3D_SCALE_JOINTS", "PCK_MIN_M", "PCK_MAX_M", "PCK_STEPS", "F_THRESHOLDS_M",
    "point_errors", "mpjpe", "pa_mpjpe", "mpvpe", "pa_mpvpe",
    "procrustes_align", "align_scale_translation", "root_align",
    "nearest_neighbour_distances", "fscore", "fscores", "pck_curve", "PCKAccumulator", "PCKResult",
]

MM_PER_M = 1000.0
PCK_MIN_M, PCK_MAX_M, PCK_STEPS = 0.0, 0.05, 100
F_THRESHOLDS_M = (0.005, 0.015)
# HO3D's align_sc_tr: the bone between these joints (HO3D order: wrist, middle MCP) sets the scale.
HO3D_SCALE_JOINTS = (0, 4)
_EPS = 1e-8  # align_w_scale adds it to both Frobenius norms (keeps a degenerate set finite)


def _check_pair(pred: torch.Tensor, gt: torch.Tensor, name: str = "points", same_n: bool = True) -> None:
    for what, t in (("pred", pred), ("gt", gt)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: {what} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3 or t.shape[-1] != 3:
            raise ValueError(f"{name}: {what} must have shape (B, N, 3), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: {what} must be floating point (metres), got {t.dtype}")
    if pred.shape[0] != gt.shape[0] or (same_n and pred.shape[1] != gt.shape[1]):
        raise ValueError(f"{name}: pred {tuple(pred.shape)} and gt {tuple(gt.shape)} do not match")


def point_errors(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of every point: (B, N, 3) metres, twice -> (B, N) metres (float64)."""
    _check_pair(pred, gt, "point_errors")
    return torch.linalg.vector_norm(pred.double() - gt.double(), dim=-1)


def root_align(pred: torch.Tensor, pred_root: torch.Tensor, target_root: torch.Tensor) -> torch.Tensor:
    """Translate ``pred`` (B, N, 3) so that ``pred_root`` (B, 3) lands on ``target_root`` (B, 3).

    The published evaluations place a root-relative prediction this way: HO3D and DexYCB at the
    ground-truth root (``root_joint_cam``), i.e. ``pred - pred[:, root] + gt_root``.
    """
    return pred - pred_root.unsqueeze(1).to(pred.dtype) + target_root.unsqueeze(1).to(pred.dtype)


def procrustes_align(pred: torch.Tensor, gt: torch.Tensor, allow_reflection: bool = True) -> torch.Tensor:
    """Similarity (scale, orthogonal map, translation) that best maps ``pred`` onto ``gt``; returns the moved pred.

    pred, gt: (B, N, 3), N >= 1.  Returns (B, N, 3) in ``pred``'s dtype.  ``allow_reflection=True``
    is FreiHAND's ``align_w_scale`` exactly (see the module docstring); ``False`` restricts the map
    to a rotation (HandOccNet's ``rigid_align``, used for DexYCB).
    """
    _check_pair(pred, gt, "procrustes_align")
    p, g = pred.double(), gt.double()
    t_g, t_p = g.mean(dim=1, keepdim=True), p.mean(dim=1, keepdim=True)
    g_c, p_c = g - t_g, p - t_p
    s_g = torch.linalg.matrix_norm(g_c).view(-1, 1, 1) + _EPS
    s_p = torch.linalg.matrix_norm(p_c).view(-1, 1, 1) + _EPS
    g_n, p_n = g_c / s_g, p_c / s_p
    # orthogonal_procrustes(A=g_n, B=p_n): svd(A^T B) = U S V^T, R = U V^T minimises |A R - B|.
    U, S, Vh = torch.linalg.svd(g_n.transpose(1, 2) @ p_n)
    if not allow_reflection:
        d = torch.sign(torch.linalg.det(U @ Vh))
        d = torch.where(d == 0, torch.ones_like(d), d)
        U = torch.cat([U[..., :2], U[..., 2:] * d.view(-1, 1, 1)], dim=-1)
        S = torch.cat([S[..., :2], S[..., 2:] * d.view(-1, 1)], dim=-1)
    R = U @ Vh
    scale = S.sum(dim=-1).view(-1, 1, 1)
    aligned = (p_n @ R.transpose(1, 2)) * scale * s_g + t_g
    return aligned.to(pred.dtype)


def align_scale_translation(pred: torch.Tensor, gt: torch.Tensor, root: int = 0, ref: int = 4) -> torch.Tensor:
    """HO3D's ``align_sc_tr``: scale ``pred`` so |pred[ref] - pred[root]| = |gt[ref] - gt[root]|, then
    translate so pred[root] = gt[root].  pred, gt: (B, 21, 3) metres; the defaults (0, 4) are HO3D's
    joint order (wrist, middle MCP).  A prediction whose bone has length 0 is not rescaled (as there).
    """
    _check_pair(pred, gt, "align_scale_translation")
    n = pred.shape[1]
    if not (0 <= root < n and 0 <= ref < n):
        raise ValueError(f"align_scale_translation: root={root} and ref={ref} must index the {n} points")
    p, g = pred.double(), gt.double()
    s = torch.linalg.vector_norm(p[:, ref] - p[:, root], dim=-1).view(-1, 1, 1)
    p = torch.where(s > 0, p / torch.where(s > 0, s, torch.ones_like(s)), p)
    s_gt = torch.linalg.vector_norm(g[:, ref] - g[:, root], dim=-1).view(-1, 1, 1)
    p = p * s_gt
    return (p - p[:, root:root + 1] + g[:, root:root + 1]).to(pred.dtype)


def mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error of each sample: (B, N, 3) metres -> (B,) millimetres (float64)."""
    return point_errors(pred, gt).mean(dim=1) * MM_PER_M


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor, allow_reflection: bool = True) -> torch.Tensor:
    """MPJPE after :func:`procrustes_align`: (B, N, 3) metres -> (B,) millimetres (float64)."""
    return mpjpe(procrustes_align(pred, gt, allow_reflection), gt)


# Vertices are scored exactly like joints (the official scripts feed both to the same EvalUtil);
# the separate names keep call sites readable.
mpvpe = mpjpe
pa_mpvpe = pa_mpjpe


def _nn_both_ways(a: torch.Tensor, b: torch.Tensor, chunk: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """From one exact distance matrix per sample: (each a to its nearest b (B, N), each b to its nearest a (B, M))."""
    d_ab, d_ba = [], []
    for i in range(0, a.shape[0], chunk):
        aa, bb = a[i:i + chunk].double(), b[i:i + chunk].double()
        # |x - y|^2 = |x|^2 + |y|^2 - 2 x.y as one batched matrix product, in float64 and about a
        # common centre: coordinates are then ~0.1 m, so the cancellation error of d^2 is
        # ~1e-18 m^2 and a 1 mm distance keeps ~12 significant digits (float32 would keep ~3,
        # which is why this is not done in the input dtype).
        c = bb.mean(dim=1, keepdim=True)
        aa, bb = aa - c, bb - c
        d2 = torch.baddbmm((bb * bb).sum(-1).unsqueeze(1), aa, bb.transpose(1, 2), alpha=-2.0)
        d2.add_((aa * aa).sum(-1).unsqueeze(2)).clamp_min_(0.0)
        d_ab.append(d2.min(dim=2).values.sqrt_())
        d_ba.append(d2.min(dim=1).values.sqrt_())
    return torch.cat(d_ab, dim=0), torch.cat(d_ba, dim=0)


def nearest_neighbour_distances(a: torch.Tensor, b: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """For every point of ``a`` (B, N, 3) its distance to the nearest point of ``b`` (B, M, 3): (B, N) float64.

    Exact (a full pairwise distance matrix), ``chunk`` samples at a time to bound memory
    (chunk × N × M doubles: 16 × 778 × 778 × 8 B = 77 MB).
    """
    _check_pair(a, b, "nearest_neighbour_distances", same_n=False)
    return _nn_both_ways(a, b, chunk)[0]


def fscores(pred: torch.Tensor, gt: torch.Tensor, thresholds: Sequence[float] = F_THRESHOLDS_M,
            chunk: int = 16) -> Dict[float, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Official F-score at several thresholds (metres) from one distance matrix per sample.

    pred (B, M, 3), gt (B, N, 3) metres (M and N may differ).  Returns
    {threshold: (f, precision, recall)}, each (B,) float64 in [0, 1].
    """
    _check_pair(pred, gt, "fscore", same_n=False)
    for t in thresholds:
        if not t > 0:
            raise ValueError(f"fscore: threshold must be a positive distance in metres, got {t!r}")
    d_gt, d_pr = _nn_both_ways(gt, pred, chunk)    # each GT point to the prediction, and the converse
    out = {}
    for t in thresholds:
        precision = (d_gt < t).double().mean(dim=1)
        recall = (d_pr < t).double().mean(dim=1)
        denom = precision + recall
        f = torch.where(denom > 0, 2 * precision * recall / torch.where(denom > 0, denom, torch.ones_like(denom)),
                        torch.zeros_like(denom))
        out[t] = (f, precision, recall)
    return out


def fscore(pred: torch.Tensor, gt: torch.Tensor, threshold: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official F-score at ``threshold`` metres: returns (f, precision, recall), each (B,) float64 in [0, 1].

    pred (B, M, 3), gt (B, N, 3) metres (M and N may differ).
    """
    return fscores(pred, gt, (threshold,))[threshold]


def _thresholds(val_min: float = PCK_MIN_M, val_max: float = PCK_MAX_M, steps: int = PCK_STEPS) -> np.ndarray:
    return np.linspace(val_min, val_max, steps)


@dataclass
class PCKResult:
    """What :class:`PCKAccumulator` measures (FreiHAND's ``get_measures``).

    ``mean_mm``: mean over points of each point's mean error (mm); ``median_mm``: not computed
    (needs every error; ``None``); ``auc``: area under the PCK curve over [0, 50 mm] normalised to
    [0, 1]; ``curve``: (steps,) PCK averaged over points; ``thresholds_mm``: (steps,) mm; ``count``:
    how many samples were fed.
    """

    mean_mm: float
    auc: float
    curve: np.ndarray
    thresholds_mm: np.ndarray
    count: int


class PCKAccumulator:
    """Streams per-point errors and reports FreiHAND's measures, in memory independent of the dataset size.

    For each of ``num_points`` points it keeps the error sum and, for each of the ``steps``
    thresholds, how many errors were ``<=`` it: enough for the official mean error, PCK curve and
    AUC (all points are visible in these datasets, so every sample counts for every point).
    """

    def __init__(self, num_points: int, val_min: float = PCK_MIN_M, val_max: float = PCK_MAX_M,
                 steps: int = PCK_STEPS):
        if num_points < 1 or steps < 2:
            raise ValueError(f"PCKAccumulator: need num_points >= 1 and steps >= 2, got {num_points}, {steps}")
        self.num_points = num_points
        self.thresholds = torch.as_tensor(_thresholds(val_min, val_max, steps), dtype=torch.float64)
        self.sums = torch.zeros(num_points, dtype=torch.float64)
        self.hits = torch.zeros(num_points, steps, dtype=torch.int64)
        self.count = 0

    def update(self, errors_m: torch.Tensor) -> None:
        """errors_m: (B, num_points) Euclidean errors in metres (e.g. from :func:`point_errors`)."""
        if errors_m.dim() != 2 or errors_m.shape[1] != self.num_points:
            raise ValueError(f"PCKAccumulator.update: expected errors of shape (B, {self.num_points}), "
                             f"got {tuple(errors_m.shape)}")
        e = errors_m.detach().double().cpu()
        if not bool(torch.isfinite(e).all()):
            raise ValueError("PCKAccumulator.update: errors contain NaN or infinite values (a non-finite "
                             "prediction or ground truth)")
        self.sums += e.sum(dim=0)
        self.hits += (e.unsqueeze(-1) <= self.thresholds).sum(dim=0)
        self.count += e.shape[0]

    def result(self) -> PCKResult:
        if self.count == 0:
            raise ValueError("PCKAccumulator.result: no samples were fed")
        th = self.thresholds.numpy()
        pck = self.hits.double().numpy() / self.count                       # (points, steps)
        auc = np.trapezoid(pck, th, axis=1) / np.trapezoid(np.ones_like(th), th)
        mean = self.sums.numpy() / self.count
        return PCKResult(mean_mm=float(mean.mean() * MM_PER_M), auc=float(auc.mean()),
                         curve=pck.mean(axis=0), thresholds_mm=th * MM_PER_M, count=self.count)


def pck_curve(errors_m: torch.Tensor, val_min: float = PCK_MIN_M, val_max: float = PCK_MAX_M,
              steps: int = PCK_STEPS) -> PCKResult:
    """One-shot :class:`PCKAccumulator` over all samples: errors_m (S, N) metres -> :class:`PCKResult`."""
    acc = PCKAccumulator(errors_m.shape[-1], val_min, val_max, steps)
    acc.update(errors_m)
    return acc.result()
