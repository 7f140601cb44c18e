"""evaluate_model, the submission files and the PCK plot, on in-memory datasets and a stand-in model.

The stand-in model reads the sample index from the image and returns a prepared prediction (the
ground truth rotated, scaled, noised and stripped of its translation, as the network's output
has none), so every metric the loop reports can be recomputed here independently.
"""
import json
import os
import zipfile

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from torch.utils.data import Dataset

from handS3C.data.joint_orders import FREIHAND_TO_HO3D, HO3D_TO_FREIHAND
from handS3C.evaluation import (HandScorer, evaluate_model, plot_pck_curves, read_submission, write_json_atomic,
                                write_submission)
from handS3C.model.mano import ManoLayer


def _align_w_scale(gt, pred):
    t1, t2 = gt.mean(0), pred.mean(0)
    a, b = gt - t1, pred - t2
    s1, s2 = np.linalg.norm(a) + 1e-8, np.linalg.norm(b) + 1e-8
    R, s = orthogonal_procrustes(a / s1, b / s2)
    return (b / s2 @ R.T) * s * s1 + t1


class _Table(Dataset):
    """Samples of the handS3C.data contract (only the keys evaluation reads), image = index code."""

    def __init__(self, n, seed=0, has_joints=None, has_verts=None, has_mano=None, size=32):
        rng = np.random.default_rng(seed)
        self.n, self.size = n, size
        self.joints = rng.normal(0, 0.03, size=(n, 21, 3)) + np.array([0.0, 0.0, 0.6])
        self.verts = rng.normal(0, 0.04, size=(n, 778, 3)) + self.joints[:, :1]
        self.pose = rng.normal(0, 0.3, size=(n, 48))
        self.shape = rng.normal(0, 0.5, size=(n, 10))
        self.has_joints = np.ones(n, bool) if has_joints is None else np.asarray(has_joints)
        self.has_verts = np.ones(n, bool) if has_verts is None else np.asarray(has_verts)
        self.has_mano = np.ones(n, bool) if has_mano is None else np.asarray(has_mano)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
        return {"image": torch.full((3, self.size, self.size), (i + 1) / 1000.0),
                "joints3d": f(self.joints[i] if self.has_joints[i] else np.zeros((21, 3))),
                "root": f(self.joints[i, 0]),
                "verts": f(self.verts[i] if self.has_verts[i] else np.zeros((778, 3))),
                "pose": f(self.pose[i]), "shape": f(self.shape[i]),
                "has_joints3d": torch.tensor(bool(self.has_joints[i])),
                "has_verts": torch.tensor(bool(self.has_verts[i])),
                "has_mano": torch.tensor(bool(self.has_mano[i])),
                "index": torch.tensor(i, dtype=torch.int64), "file": f"img_{i:05d}.jpg"}


class _Oracle(torch.nn.Module):
    """Returns pred[index] (translation removed), reading index from the image."""

    def __init__(self, joints, verts):
        super().__init__()
        self.register_buffer("j", torch.tensor(joints, dtype=torch.float32))
        self.register_buffer("v", torch.tensor(verts, dtype=torch.float32))
        self.calls = []

    def forward(self, images):
        self.calls.append((self.training, torch.is_grad_enabled()))
        idx = (images[:, 0, 0, 0] * 1000).round().long() - 1
        return {"joints3d": self.j[idx], "verts": self.v[idx]}


def _predictions(ds, seed=1):
    rng = np.random.default_rng(seed)
    pj = ds.joints * 1.1 + rng.normal(0, 0.006, size=ds.joints.shape)
    pv = ds.verts * 1.1 + rng.normal(0, 0.003, size=ds.verts.shape)
    shift = rng.normal(0, 0.2, size=(ds.n, 1, 3))     # the network's hand has an arbitrary translation
    return pj + shift, pv + shift


def _placed(ds, pj, pv):
    off = ds.joints[:, :1] - pj[:, :1]
    return pj + off, pv + off


def test_freihand_metrics_and_placement_match_an_independent_computation():
    ds = _Table(7)
    pj, pv = _predictions(ds)
    model = _Oracle(pj, pv).train()
    res = evaluate_model(model, ds, batch_size=3, protocol="freihand", progress=False)
    assert model.training and all(not tr and not grad for tr, grad in model.calls)   # eval, no grad, restored
    qj, qv = _placed(ds, pj, pv)
    np.testing.assert_allclose(res.joints3d, qj, atol=2e-6)
    np.testing.assert_allclose(res.verts, qv, atol=2e-6)
    assert res.indices.tolist() == list(range(7))
    m = res.metrics
    err = lambda a, b: np.linalg.norm(a - b, axis=-1).mean() * 1000  # noqa: E731
    assert m["mpjpe_mm"] == pytest.approx(err(qj, ds.joints), rel=1e-4)
    assert m["pa_mpjpe_mm"] == pytest.approx(np.mean([err(_align_w_scale(g, p), g)
                                                      for g, p in zip(ds.joints, qj)]), rel=1e-4)
    assert m["pa_mpvpe_mm"] == pytest.approx(np.mean([err(_align_w_scale(g, p), g)
                                                      for g, p in zip(ds.verts, qv)]), rel=1e-4)
    assert m["num_samples"] == m["num_joint_samples"] == m["num_mesh_samples"] == 7
    assert 0 < m["f15"] <= 1 and "sc_tr_mpjpe_mm" not in m


def test_ho3d_scores_in_ho3d_order_with_scale_translation():
    ds = _Table(5, seed=3)
    pj, pv = _predictions(ds, seed=4)
    res = evaluate_model(_Oracle(pj, pv), ds, batch_size=2, protocol="ho3d", progress=False)
    qj, qv = _placed(ds, pj, pv)
    ref = HandScorer("ho3d")
    ref.update(torch.tensor(qj[:, FREIHAND_TO_HO3D]), torch.tensor(ds.joints[:, FREIHAND_TO_HO3D]),
               torch.tensor(qv), torch.tensor(ds.verts))
    expected = ref.compute()
    for k in ("mpjpe_mm", "pa_mpjpe_mm", "sc_tr_mpjpe_mm", "pa_mpvpe_mm", "sc_tr_auc_joints"):
        assert res.metrics[k] == pytest.approx(expected[k], rel=1e-4), k
    # HO3D order's joint 4 is the middle MCP, FreiHAND's joint 9
    assert HO3D_TO_FREIHAND[9] == 4


def test_dexycb_mesh_ground_truth_from_mano(tmp_path):
    from handS3C.data.synthetic_mano import write_synthetic_mano

    mano = ManoLayer(write_synthetic_mano(str(tmp_path / "MANO_RIGHT.pkl")))
    ds = _Table(5, seed=8, has_verts=np.zeros(5, bool), has_mano=np.array([1, 1, 0, 1, 1], bool))
    pj, pv = _predictions(ds, seed=9)
    res = evaluate_model(_Oracle(pj, pv), ds, batch_size=2, protocol="dexycb", progress=False, gt_mano=mano)
    assert res.metrics["num_joint_samples"] == 5 and res.metrics["num_mesh_samples"] == 4
    with torch.no_grad():
        gv, gj = mano(torch.tensor(ds.pose, dtype=torch.float32), torch.tensor(ds.shape, dtype=torch.float32))
    gv = gv.double().numpy() - gj[:, :1].double().numpy() + ds.joints[:, :1]     # MANO root on the annotated root
    qj, qv = _placed(ds, pj, pv)
    rows = ds.has_mano
    ref = HandScorer("dexycb")
    ref.update(torch.tensor(qj), torch.tensor(ds.joints), torch.tensor(qv[rows]), torch.tensor(gv[rows]))
    expected = ref.compute()
    for k in ("mpjpe_mm", "pa_mpjpe_mm", "mpvpe_mm", "pa_mpvpe_mm"):
        assert res.metrics[k] == pytest.approx(expected[k], rel=1e-4), k
    for k in ("pa_f5", "pa_f15"):
        assert res.metrics[k] == pytest.approx(expected[k], abs=2e-3), k
    no_mesh = evaluate_model(_Oracle(pj, pv), ds, batch_size=2, protocol="dexycb", progress=False)
    assert no_mesh.metrics["num_mesh_samples"] == 0 and "pa_mpvpe_mm" not in no_mesh.metrics


def test_partial_ground_truth_and_max_samples():
    has_j = np.array([True, False, True, True, False, True])
    has_v = np.array([True, False, False, True, False, True])
    ds = _Table(6, seed=5, has_joints=has_j, has_verts=has_v, has_mano=np.zeros(6, bool))
    pj, pv = _predictions(ds, seed=6)
    res = evaluate_model(_Oracle(pj, pv), ds, batch_size=4, protocol="freihand", progress=False)
    assert res.metrics["num_samples"] == 6
    assert res.metrics["num_joint_samples"] == 4 and res.metrics["num_mesh_samples"] == 3
    qj, _ = _placed(ds, pj, pv)
    err = np.linalg.norm(qj[has_j] - ds.joints[has_j], axis=-1).mean() * 1000
    assert res.metrics["mpjpe_mm"] == pytest.approx(err, rel=1e-4)
    short = evaluate_model(_Oracle(pj, pv), ds, batch_size=4, protocol="freihand", progress=False, max_samples=5)
    assert short.metrics["num_samples"] == 5 and short.joints3d.shape == (5, 21, 3)
    none = _Table(3, has_joints=[False] * 3, has_verts=[False] * 3, has_mano=[False] * 3)
    with pytest.warns(UserWarning, match="no sample"):
        r = evaluate_model(_Oracle(*_predictions(none)), none, batch_size=2, protocol="ho3d", progress=False)
    assert r.metrics == {"num_joint_samples": 0, "num_mesh_samples": 0, "num_samples": 3}
    assert r.joints3d.shape == (3, 21, 3)


def test_non_finite_prediction_names_the_samples():
    ds = _Table(4)
    pj, pv = _predictions(ds)
    pv[2, 5, 1] = np.nan
    with pytest.raises(ValueError, match=r"samples \[2\]"):
        evaluate_model(_Oracle(pj, pv), ds, batch_size=4, protocol="freihand", progress=False)
    with pytest.raises(ValueError, match="protocol"):
        evaluate_model(_Oracle(pj, pv), ds, batch_size=4, progress=False)   # a _Table has no protocol
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_model(_Oracle(pj, pv), ds, batch_size=0, protocol="freihand", progress=False)


@pytest.mark.parametrize("dataset", ["freihand", "ho3d"])
def test_submission_round_trip(tmp_path, dataset):
    rng = np.random.default_rng(7)
    j = rng.normal(0, 0.05, size=(3, 21, 3)) + np.array([0, 0, 0.5])
    v = rng.normal(0, 0.05, size=(3, 778, 3)) + np.array([0, 0, 0.5])
    paths = write_submission(str(tmp_path), j, v, dataset)
    assert sorted(os.listdir(tmp_path)) == ["pred.json", "pred.zip"]          # no temporary files left
    with zipfile.ZipFile(paths["zip"]) as z:
        assert z.namelist() == ["pred.json"]
        assert json.loads(z.read("pred.json")) == json.load(open(paths["json"]))
    xyz, verts = read_submission(paths["zip"])
    if dataset == "ho3d":
        # OpenGL (y, z negated), HO3D order; the official pred.py rejects all-positive z
        np.testing.assert_allclose(xyz, j[:, FREIHAND_TO_HO3D] * [1, -1, -1], atol=5.1e-7)
        np.testing.assert_allclose(verts, v * [1, -1, -1], atol=5.1e-7)
        assert np.all(xyz[..., 2] < 0)
    else:
        np.testing.assert_allclose(xyz, j, atol=5.1e-7)
        np.testing.assert_allclose(verts, v, atol=5.1e-7)
    with pytest.raises(ValueError, match="NaN"):
        write_submission(str(tmp_path), j * np.nan, v, dataset)
    with pytest.raises(ValueError, match="dataset"):
        write_submission(str(tmp_path), j, v, "dexycb")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("sub/pred.json", "[[], []]")
    with pytest.raises(ValueError, match="top level"):
        read_submission(str(bad))


def test_metrics_json_and_pck_png(tmp_path):
    ds = _Table(4)
    res = evaluate_model(_Oracle(*_predictions(ds)), ds, batch_size=4, protocol="ho3d", progress=False)
    png = plot_pck_curves(res.curves, str(tmp_path / "pck.png"), title="test")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 10_000
    path = write_json_atomic(str(tmp_path / "metrics.json"), {"metrics": res.metrics, "nan": float("nan")})
    back = json.load(open(path))
    assert back["metrics"]["pa_mpjpe_mm"] == pytest.approx(res.metrics["pa_mpjpe_mm"]) and back["nan"] is None
    with pytest.raises(ValueError, match="no curve"):
        plot_pck_curves({}, str(tmp_path / "x.png"))
