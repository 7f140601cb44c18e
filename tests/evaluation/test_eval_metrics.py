"""The metrics of handS3C.evaluation against independent computations.

Independent means: scipy's ``orthogonal_procrustes`` (what FreiHAND's ``align_w_scale`` calls) and
``Rotation.align_vectors`` (a proper rotation, for the no-reflection mode), brute-force numpy
nearest neighbours (a Python loop over points), a per-keypoint list implementation of the PCK/AUC,
and known answers (a rotated, scaled, shifted copy of the ground truth; a pure offset).
"""
import math

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from handS3C.evaluation import (HandScorer, align_scale_translation, fscore, fscores, mpjpe, nearest_neighbour_distances,
                                pa_mpjpe, pa_mpvpe, pck_curve, point_errors, procrustes_align, root_align,
                                PCKAccumulator)


# align_w_scale adds 1e-8 to both Frobenius norms, a ~3e-8 relative change of the scale: an exact
# similarity copy is aligned to within ~1e-5 mm, not to rounding.  (1e-4 mm = 0.1 micrometre.)
EXACT_PA_MM = 1e-4


def _hand_like(rng, b, n):
    """Points spread like a hand (~10 cm) about 0.5 m in front of the camera."""
    return rng.normal(0.0, 0.04, size=(b, n, 3)) + np.array([0.02, -0.03, 0.55])


def _align_w_scale_scipy(gt, pred):
    """FreiHAND's align_w_scale written from its formula, with scipy's orthogonal_procrustes."""
    t1, t2 = gt.mean(0), pred.mean(0)
    a, b = gt - t1, pred - t2
    s1, s2 = np.linalg.norm(a) + 1e-8, np.linalg.norm(b) + 1e-8
    a, b = a / s1, b / s2
    R, s = orthogonal_procrustes(a, b)
    return (b @ R.T) * s * s1 + t1


def _rigid_align_rotation(gt, pred):
    """Best similarity restricted to a proper rotation: scipy's align_vectors, closed-form scale."""
    gc, pc = gt - gt.mean(0), pred - pred.mean(0)
    rot, _ = Rotation.align_vectors(gc, pc)          # rotation taking pc onto gc
    rp = rot.apply(pc)
    s = (gc * rp).sum() / (pc ** 2).sum()
    return s * rp + gt.mean(0)


@pytest.mark.parametrize("n", [21, 778, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_procrustes_matches_scipy_align_w_scale(n, dtype):
    rng = np.random.default_rng(n)
    gt, pred = _hand_like(rng, 7, n), _hand_like(rng, 7, n)
    out = procrustes_align(torch.tensor(pred, dtype=dtype), torch.tensor(gt, dtype=dtype))
    assert out.dtype == dtype and out.shape == (7, n, 3)
    ref = np.stack([_align_w_scale_scipy(g, p) for g, p in zip(gt, pred)])
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(out.double().numpy(), ref, atol=tol * 10, rtol=0)
    np.testing.assert_allclose(pa_mpjpe(torch.tensor(pred), torch.tensor(gt)).numpy(),
                               np.linalg.norm(ref - gt, axis=-1).mean(1) * 1000, rtol=1e-9)


def test_procrustes_rotation_only_matches_scipy_align_vectors():
    rng = np.random.default_rng(3)
    gt, pred = _hand_like(rng, 6, 21), _hand_like(rng, 6, 21)
    pred[:3] *= np.array([-1.0, 1.0, 1.0])          # mirrored predictions: reflection would help these
    out = procrustes_align(torch.tensor(pred), torch.tensor(gt), allow_reflection=False).numpy()
    ref = np.stack([_rigid_align_rotation(g, p) for g, p in zip(gt, pred)])
    # align_w_scale's 1e-8 added to both Frobenius norms (~0.3 m here) changes the scale by ~6e-8
    # relative, i.e. ~4e-9 m on these coordinates; the reference has no such term.
    np.testing.assert_allclose(out, ref, atol=1e-8, rtol=0)
    assert np.abs(out - ref).max() < 1e-3 * np.abs(pred - ref).max()


def test_known_answer_similarity_copy_has_zero_pa_error():
    rng = np.random.default_rng(11)
    gt = _hand_like(rng, 5, 21)
    R = Rotation.random(5, random_state=4).as_matrix()
    scale = rng.uniform(0.5, 2.0, size=(5, 1, 1))
    shift = rng.normal(0, 0.3, size=(5, 1, 3))
    pred = scale * np.einsum("bij,bnj->bni", R, gt) + shift
    p, g = torch.tensor(pred), torch.tensor(gt)
    for reflect in (True, False):
        assert float(pa_mpjpe(p, g, allow_reflection=reflect).max()) < EXACT_PA_MM
    assert float(mpjpe(p, g).min()) > 10.0                 # the unaligned error is large
    # a mirrored copy is "perfect" only when reflections are allowed (FreiHAND's orthogonal_procrustes)
    mirrored = p * torch.tensor([-1.0, 1.0, 1.0], dtype=p.dtype)
    assert float(pa_mpjpe(mirrored, g, allow_reflection=True).max()) < EXACT_PA_MM
    assert float(pa_mpjpe(mirrored, g, allow_reflection=False).min()) > 1.0


def test_pure_offset_gives_the_offset_as_mpjpe_and_root_align_removes_it():
    rng = np.random.default_rng(5)
    gt = torch.tensor(_hand_like(rng, 4, 778))
    offset = torch.tensor([[0.003, -0.004, 0.012]], dtype=torch.float64).repeat(4, 1)
    offset[1] *= 2.0
    pred = gt + offset[:, None]
    expected = torch.linalg.vector_norm(offset, dim=-1) * 1000
    torch.testing.assert_close(mpjpe(pred, gt), expected, rtol=1e-12, atol=1e-9)
    assert float(pa_mpvpe(pred, gt).max()) < EXACT_PA_MM
    placed = root_align(pred, pred[:, 0], gt[:, 0])
    assert float(mpjpe(placed, gt).max()) < 1e-9


def test_point_errors_match_numpy():
    rng = np.random.default_rng(8)
    a, b = _hand_like(rng, 3, 21), _hand_like(rng, 3, 21)
    np.testing.assert_allclose(point_errors(torch.tensor(a), torch.tensor(b)).numpy(),
                               np.sqrt(((a - b) ** 2).sum(-1)), rtol=1e-12)


def _align_sc_tr_numpy(gt, pred):
    pred = pred.copy()
    s = math.sqrt(((pred[4] - pred[0]) ** 2).sum())
    if s > 0:
        pred = pred / s
    pred = pred * math.sqrt(((gt[4] - gt[0]) ** 2).sum())
    return pred - pred[0:1] + gt[0:1]


def test_scale_translation_alignment_matches_ho3d_formula():
    rng = np.random.default_rng(9)
    gt, pred = _hand_like(rng, 6, 21), _hand_like(rng, 6, 21)
    pred[2] = pred[2, :1]                            # degenerate prediction: bone length 0, not rescaled
    out = align_scale_translation(torch.tensor(pred), torch.tensor(gt)).numpy()
    ref = np.stack([_align_sc_tr_numpy(g, p) for g, p in zip(gt, pred)])
    np.testing.assert_allclose(out, ref, atol=1e-12, rtol=0)
    # known answer: a scaled and shifted copy is aligned exactly, a rotated one is not
    copy = torch.tensor(1.7 * gt + np.array([0.1, 0.2, -0.3]))
    aligned = align_scale_translation(copy, torch.tensor(gt))
    assert float(mpjpe(aligned, torch.tensor(gt)).max()) < 1e-9
    R = torch.tensor(Rotation.from_euler("z", 40, degrees=True).as_matrix())
    rotated = torch.tensor(gt) @ R.T
    assert float(mpjpe(align_scale_translation(rotated, torch.tensor(gt)), torch.tensor(gt)).min()) > 1.0


def _brute_force_nn(a, b):
    return np.array([min(np.linalg.norm(p - q) for q in b) for p in a])


def _exhaustive_nn(a, b):
    """Every pairwise distance with numpy broadcasting, then the minimum (fast enough for 778 points)."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(1)


def _fscore_brute_force(gt, pred, th, nn=_brute_force_nn):
    d_gt = nn(gt, pred)
    d_pr = nn(pred, gt)
    precision = float(np.mean(d_gt < th))
    recall = float(np.mean(d_pr < th))
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return f, precision, recall


def test_nearest_neighbours_and_fscore_match_brute_force():
    rng = np.random.default_rng(12)
    gt = _hand_like(rng, 3, 130)
    pred = gt[:, :97] + rng.normal(0, 0.006, size=(3, 97, 3))     # different point counts, partial overlap
    g, p = torch.tensor(gt), torch.tensor(pred)
    np.testing.assert_allclose(nearest_neighbour_distances(g, p, chunk=2).numpy(),
                               np.stack([_brute_force_nn(a, b) for a, b in zip(gt, pred)]), rtol=1e-12)
    for th in (0.005, 0.015):
        f, prec, rec = fscore(p, g, th)
        for i in range(3):
            ref = _fscore_brute_force(gt[i], pred[i], th)
            assert (float(f[i]), float(prec[i]), float(rec[i])) == pytest.approx(ref, abs=1e-12)
        if th == 0.005:
            assert 0.0 < float(f.min()) and float(f.max()) < 1.0    # the case is not trivially 0 or 1
    # several thresholds from one distance matrix, one sample per chunk: the same answers
    multi = fscores(p, g, (0.005, 0.015), chunk=1)
    for th in (0.005, 0.015):
        for got, want in zip(multi[th], fscore(p, g, th)):
            assert torch.equal(got, want)


def test_fscore_known_answers():
    rng = np.random.default_rng(13)
    g = torch.tensor(_hand_like(rng, 2, 778))
    f, prec, rec = fscore(g.clone(), g, 0.005)
    assert torch.all(f == 1) and torch.all(prec == 1) and torch.all(rec == 1)
    f, _, _ = fscore(g + 1.0, g, 0.015)                             # a metre away: nothing matches
    assert torch.all(f == 0)
    with pytest.raises(ValueError, match="threshold"):
        fscore(g, g, 0.0)


def _pck_auc_lists(errors, val_min=0.0, val_max=0.05, steps=100):
    """FreiHAND's EvalUtil.get_measures from its description: per keypoint lists of errors."""
    thresholds = np.linspace(val_min, val_max, steps)
    norm = np.trapezoid(np.ones_like(thresholds), thresholds)
    means, aucs, curves = [], [], []
    for k in range(errors.shape[1]):
        data = list(errors[:, k])
        means.append(np.mean(data))
        curve = np.array([np.mean([d <= t for d in data]) for t in thresholds])
        curves.append(curve)
        aucs.append(np.trapezoid(curve, thresholds) / norm)
    return np.mean(means), np.mean(aucs), np.mean(curves, 0)


def test_pck_auc_matches_per_keypoint_lists_and_streams():
    rng = np.random.default_rng(14)
    errors = np.abs(rng.normal(0.0, 0.02, size=(37, 21)))
    mean, auc, curve = _pck_auc_lists(errors)
    r = pck_curve(torch.tensor(errors))
    assert r.mean_mm == pytest.approx(mean * 1000, rel=1e-12)
    assert r.auc == pytest.approx(auc, rel=1e-12)
    np.testing.assert_allclose(r.curve, curve, rtol=1e-12)
    assert r.thresholds_mm[0] == 0 and r.thresholds_mm[-1] == pytest.approx(50.0) and len(r.thresholds_mm) == 100
    acc = PCKAccumulator(21)
    for chunk in np.array_split(errors, [5, 6, 20]):                # uneven batches, one of size 1
        acc.update(torch.tensor(chunk))
    streamed = acc.result()
    assert streamed.auc == pytest.approx(auc, rel=1e-12) and streamed.count == 37
    # known answers: zero error -> AUC 1, every error above 50 mm -> AUC 0
    assert pck_curve(torch.zeros(4, 21)).auc == pytest.approx(1.0)
    assert pck_curve(torch.full((4, 21), 0.051)).auc == 0.0
    with pytest.raises(ValueError, match="NaN"):
        acc.update(torch.full((1, 21), float("nan")))


@pytest.mark.parametrize("protocol", ["freihand", "ho3d", "dexycb"])
def test_scorer_reports_the_protocol_metrics(protocol):
    rng = np.random.default_rng(15)
    gj, gv = _hand_like(rng, 5, 21), _hand_like(rng, 5, 778)
    pj = gj + rng.normal(0, 0.01, size=gj.shape)
    pv = gv + rng.normal(0, 0.004, size=gv.shape)
    scorer = HandScorer(protocol)
    for sl in (slice(0, 2), slice(2, 5)):
        scorer.update(torch.tensor(pj[sl]), torch.tensor(gj[sl]), torch.tensor(pv[sl]), torch.tensor(gv[sl]))
    m = scorer.compute()
    reflect = protocol != "dexycb"
    align = _align_w_scale_scipy if reflect else _rigid_align_rotation
    err = lambda a, b: np.linalg.norm(a - b, axis=-1).mean() * 1000  # noqa: E731
    assert m["mpjpe_mm"] == pytest.approx(err(pj, gj), rel=1e-9)
    # rel 1e-6 for the aligned errors: align_w_scale's 1e-8 norm term, which _rigid_align_rotation lacks
    assert m["pa_mpjpe_mm"] == pytest.approx(np.mean([err(align(g, p), g) for g, p in zip(gj, pj)]), rel=1e-6)
    assert m["mpvpe_mm"] == pytest.approx(err(pv, gv), rel=1e-9)
    pv_al = [align(g, p) for g, p in zip(gv, pv)]
    assert m["pa_mpvpe_mm"] == pytest.approx(np.mean([err(a, g) for a, g in zip(pv_al, gv)]), rel=1e-6)
    assert m["pa_f5"] == pytest.approx(np.mean([_fscore_brute_force(g, a, 0.005, _exhaustive_nn)[0] for g, a in zip(gv, pv_al)]),
                                       abs=1e-12)
    assert m["f15"] == pytest.approx(np.mean([_fscore_brute_force(g, p, 0.015, _exhaustive_nn)[0] for g, p in zip(gv, pv)]),
                                     abs=1e-12)
    assert m["num_joint_samples"] == 5 and m["num_mesh_samples"] == 5
    assert 0 < m["auc_joints"] < m["pa_auc_joints"] <= 1
    if protocol == "ho3d":
        ref = np.mean([err(_align_sc_tr_numpy(g, p), g) for g, p in zip(gj, pj)])
        assert m["sc_tr_mpjpe_mm"] == pytest.approx(ref, rel=1e-9)
    else:
        assert "sc_tr_mpjpe_mm" not in m
    assert set(scorer.curves()) >= {"joints", "pa_joints", "mesh", "pa_mesh"}


def test_scorer_rejects_non_finite_and_empty():
    scorer = HandScorer("freihand")
    with pytest.raises(ValueError, match="no sample"):
        scorer.compute()
    bad = torch.zeros(2, 21, 3)
    bad[1, 3, 0] = float("inf")
    with pytest.raises(ValueError, match=r"pred_joints.*rows \[1\]"):
        scorer.update(bad, torch.zeros(2, 21, 3))
    with pytest.raises(ValueError, match="protocol"):
        HandScorer("coco")
