"""``hands3c evaluate`` end to end on synthetic splits in the real layouts, and its bad-input cases.

A randomly initialised HandS3C is saved in the published snapshot layout (``{'network': state
dict with 'module.' prefixes, 'epoch', 'optimizer'}``, for FreiHAND) and as the project's trainer
saves it (with its resume entry, for HO3D and DexYCB); the command runs it over a 2-sample
evaluation split, and the test reads back what it wrote: ``metrics.json`` against the official
formulas applied to ``pred.zip`` and the split's own ground-truth files (``evaluation_xyz.json``,
``evaluation_verts.json``: FreiHAND in the camera frame, HO3D in OpenGL coordinates and HO3D
order, exactly what the servers compare the submission with).
"""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes

from handS3C.cli import main
from handS3C.evaluation import read_submission

N_EVAL = 2


def _align_w_scale(gt, pred):
    t1, t2 = gt.mean(0), pred.mean(0)
    a, b = gt - t1, pred - t2
    s1, s2 = np.linalg.norm(a) + 1e-8, np.linalg.norm(b) + 1e-8
    R, s = orthogonal_procrustes(a / s1, b / s2)
    return (b / s2 @ R.T) * s * s1 + t1


def _err_mm(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1).mean() * 1000)


def _snapshot(path, input_size, mano):
    """A published-layout snapshot of a random network (what the published trainer saves)."""
    import handS3C

    torch.manual_seed(input_size)
    model = handS3C.HandS3C(input_size=input_size, backend="cpu", mano_model_path=mano)
    torch.save({"network": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 4,
                "optimizer": {}}, path)
    return str(path)


def _trainer_snapshot(folder, input_size, mano):
    """A snapshot as 'hands3c train' writes it (handS3C.training.snapshot: the published entries,
    a real Adam state dict, the resume entry 'hands3c', a .sha256 beside it)."""
    import handS3C
    from handS3C.training.snapshot import save_snapshot

    torch.manual_seed(input_size)
    model = handS3C.HandS3C(input_size=input_size, backend="cpu", mano_model_path=mano)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    state = {"epoch": 6, "network": {"module." + k: v for k, v in model.state_dict().items()},
             "optimizer": opt.state_dict(),
             "hands3c": {"format": 1, "completed_epochs": 7, "step": 70, "config": {"dataset": "ho3d"},
                         "best": None, "rng": [], "skipped_batches": 0}}
    return save_snapshot(str(folder), 7, state)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from handS3C.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("evaluate")
    out = {}
    for fmt in ("freihand", "ho3d", "dexycb"):
        out[fmt] = make_synthetic(fmt, str(root / fmt), 1, n_eval=N_EVAL, seed=3, progress=False)["out_dir"]
    mano = os.path.join(out["freihand"], "MANO_RIGHT.pkl")
    out["mano"] = mano
    out["ckpt224"] = _snapshot(root / "snapshot_5.pth.tar", 224, mano)
    out["ckpt256"] = _trainer_snapshot(root / "trained", 256, mano)
    out["root"] = root
    return out


def _evaluate(synth, dataset, out_dir, *extra, data_root=None, ckpt=None):
    ckpt = ckpt or (synth["ckpt224"] if dataset == "freihand" else synth["ckpt256"])
    return main(["evaluate", "--dataset", dataset, "--data-root", data_root or synth[dataset], "--checkpoint", ckpt,
                 "--mano-model-path", synth["mano"], "--backend", "cpu", "--device", "cpu", "--batch-size", "2",
                 "--workers", "0", "--no-progress", "--out", str(out_dir), *extra])


def test_freihand_end_to_end(synth, tmp_path, capsys):
    assert _evaluate(synth, "freihand", tmp_path) == 0
    printed = capsys.readouterr().out
    assert "PA-MPJPE" in printed and "pred.zip" in printed
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "pck_curves.png", "pred.json", "pred.zip"]
    rec = json.load(open(tmp_path / "metrics.json"))
    m = rec["metrics"]
    assert rec["checkpoint_epoch"] == 4 and rec["input_size"] == 224 and rec["skipped"] == []
    assert m["num_samples"] == m["num_joint_samples"] == m["num_mesh_samples"] == N_EVAL
    xyz, verts = read_submission(str(tmp_path / "pred.zip"))
    assert xyz.shape == (N_EVAL, 21, 3) and verts.shape == (N_EVAL, 778, 3)
    gt_xyz = np.array(json.load(open(os.path.join(synth["freihand"], "evaluation_xyz.json"))))
    gt_verts = np.array(json.load(open(os.path.join(synth["freihand"], "evaluation_verts.json"))))
    np.testing.assert_allclose(xyz[:, 0], gt_xyz[:, 0], atol=2e-6)         # placed at the ground-truth root
    # the official FreiHAND formulas on the submission and the split's own ground-truth files
    assert m["mpjpe_mm"] == pytest.approx(_err_mm(xyz, gt_xyz), abs=2e-3)
    assert m["mpvpe_mm"] == pytest.approx(_err_mm(verts, gt_verts), abs=2e-3)
    assert m["pa_mpjpe_mm"] == pytest.approx(np.mean([_err_mm(_align_w_scale(g, p), g)
                                                      for g, p in zip(gt_xyz, xyz)]), abs=2e-3)
    assert m["pa_mpvpe_mm"] == pytest.approx(np.mean([_err_mm(_align_w_scale(g, p), g)
                                                      for g, p in zip(gt_verts, verts)]), abs=2e-3)
    for k in ("f5", "f15", "pa_f5", "pa_f15", "auc_joints", "pa_auc_joints", "auc_mesh", "pa_auc_mesh"):
        assert 0.0 <= m[k] <= 1.0, k
    assert len(rec["curves"]["pa_joints"]["pck"]) == 100
    with open(tmp_path / "pck_curves.png", "rb") as f:
        assert f.read(4) == b"\x89PNG"


def test_ho3d_submission_is_opengl_ho3d_order_and_scores_like_the_official_script(synth, tmp_path):
    assert _evaluate(synth, "ho3d", tmp_path) == 0
    rec = json.load(open(tmp_path / "metrics.json"))
    m = rec["metrics"]
    xyz, verts = read_submission(str(tmp_path / "pred.zip"))
    assert np.all(xyz[..., 2] < 0) and np.all(verts[..., 2] < 0)         # OpenGL: the hand lies along -z
    # HO3D's evaluation ground truth is OpenGL, HO3D order: the official script compares it directly
    gt_xyz = np.array(json.load(open(os.path.join(synth["ho3d"], "evaluation_xyz.json"))))
    gt_verts = np.array(json.load(open(os.path.join(synth["ho3d"], "evaluation_verts.json"))))
    ann = json.load(open(os.path.join(synth["ho3d"], "annotations", "HO3D_evaluation_data.json")))
    root_cam = np.array([a["root_joint_cam"] for a in ann["annotations"]])
    np.testing.assert_allclose(xyz[:, 0], root_cam * [1, -1, -1], atol=2e-6)   # root from root_joint_cam
    assert m["mpjpe_mm"] == pytest.approx(_err_mm(xyz, gt_xyz), abs=2e-3)
    assert m["pa_mpvpe_mm"] == pytest.approx(np.mean([_err_mm(_align_w_scale(g, p), g)
                                                      for g, p in zip(gt_verts, verts)]), abs=2e-3)
    sc_tr = []
    for g, p in zip(gt_xyz, xyz):                                          # align_sc_tr, joints 0 and 4
        q = p / np.linalg.norm(p[4] - p[0]) * np.linalg.norm(g[4] - g[0])
        sc_tr.append(_err_mm(q - q[:1] + g[:1], g))
    assert m["sc_tr_mpjpe_mm"] == pytest.approx(np.mean(sc_tr), abs=2e-3)


def test_dexycb_reports_published_metrics_and_mesh_metrics(synth, tmp_path):
    assert _evaluate(synth, "dexycb", tmp_path) == 0
    assert "pred.zip" not in os.listdir(tmp_path)              # DexYCB has no submission server
    rec = json.load(open(tmp_path / "metrics.json"))
    assert rec["checkpoint_epoch"] == 6                        # the trainer's snapshot loaded
    m = rec["metrics"]
    for k in ("mpjpe_mm", "pa_mpjpe_mm", "pa_mpvpe_mm", "f5", "f15", "pa_f5", "pa_f15"):
        assert k in m, k
    assert m["num_mesh_samples"] == N_EVAL and m["pa_mpjpe_mm"] < m["mpjpe_mm"]


def test_missing_inputs_are_errors_naming_the_path(synth, tmp_path, capsys):
    assert _evaluate(synth, "freihand", tmp_path, data_root=str(tmp_path / "nowhere")) == 1
    assert "nowhere" in capsys.readouterr().err
    assert _evaluate(synth, "freihand", tmp_path, ckpt=str(tmp_path / "none.pth.tar")) == 1
    assert "none.pth.tar" in capsys.readouterr().err
    broken = tmp_path / "frei_no_xyz"
    shutil.copytree(synth["freihand"], broken)
    os.remove(broken / "evaluation_K.json")
    assert _evaluate(synth, "freihand", tmp_path, data_root=str(broken)) == 1
    err = capsys.readouterr().err
    assert "evaluation_K.json" in err and "expected layout" in err
    # a checkpoint of the other input size does not fit: a strict load names the mismatch
    assert _evaluate(synth, "freihand", tmp_path, ckpt=synth["ckpt256"]) == 1
    assert "does not match" in capsys.readouterr().err
    assert _evaluate(synth, "freihand", tmp_path, "--batch-size", "0") == 2
    assert not os.path.exists(tmp_path / "metrics.json")


def test_bad_samples_stop_or_are_skipped_and_reported(synth, tmp_path, capsys):
    bad = tmp_path / "frei_bad"
    shutil.copytree(synth["freihand"], bad)
    with open(bad / "evaluation" / "rgb" / "00000001.jpg", "wb") as f:
        f.write(b"not a jpeg at all")
    assert _evaluate(synth, "freihand", tmp_path / "a", data_root=str(bad)) == 1
    err = capsys.readouterr().err
    assert "sample 1" in err and "00000001.jpg" in err
    with pytest.warns(UserWarning, match="skip_bad=True"):
        assert _evaluate(synth, "freihand", tmp_path / "b", "--skip-bad", data_root=str(bad)) == 0
    rec = json.load(open(tmp_path / "b" / "metrics.json"))
    assert len(rec["skipped"]) == 1 and rec["skipped"][0]["file"].endswith("00000001.jpg")
    assert "skipped 1 bad sample" in capsys.readouterr().err
    # the stand-in the dataset returned is scored once, at its own index, not at the broken one
    assert rec["metrics"]["num_samples"] == N_EVAL - 1
    xyz, _ = read_submission(tmp_path / "b" / "pred.zip")
    assert len(xyz) == N_EVAL - 1
    # the same through a loader worker, whose own copy of the dataset records the skip
    # (its warning stays in the worker; the command's own report is what the user sees)
    assert _evaluate(synth, "freihand", tmp_path / "w", "--skip-bad", "--workers", "1", data_root=str(bad)) == 0
    assert "skipped 1 bad sample" in capsys.readouterr().err
    rec = json.load(open(tmp_path / "w" / "metrics.json"))
    assert [s["file"][-12:] for s in rec["skipped"]] == ["00000001.jpg"] and rec["metrics"]["num_samples"] == N_EVAL - 1
    # a NaN in the ground truth: an error naming the sample and the file, or a counted skip
    nan = tmp_path / "frei_nan"
    shutil.copytree(synth["freihand"], nan)
    xyz = json.load(open(nan / "evaluation_xyz.json"))
    xyz[0][3][1] = float("nan")
    with open(nan / "evaluation_xyz.json", "w") as f:
        json.dump(xyz, f)
    assert _evaluate(synth, "freihand", tmp_path / "c", data_root=str(nan)) == 1
    err = capsys.readouterr().err
    assert "sample 0" in err and "non-finite" in err
    with pytest.warns(UserWarning, match="skip_bad=True"):
        assert _evaluate(synth, "freihand", tmp_path / "d", "--skip-bad", data_root=str(nan)) == 0
    rec = json.load(open(tmp_path / "d" / "metrics.json"))
    assert len(rec["skipped"]) == 1 and rec["metrics"]["num_samples"] == N_EVAL - 1


def test_memory_format_flag_same_metrics_and_recorded(synth, tmp_path, capsys):
    """--memory-format: the default (auto: channels_last on CPU) and contiguous score the same
    predictions to float32 rounding; the choice is recorded; a bad value is a usage error."""
    assert _evaluate(synth, "freihand", tmp_path / "auto") == 0
    assert _evaluate(synth, "freihand", tmp_path / "nchw", "--memory-format", "contiguous") == 0
    auto = json.load(open(tmp_path / "auto" / "metrics.json"))
    nchw = json.load(open(tmp_path / "nchw" / "metrics.json"))
    assert auto["memory_format"] == "auto" and nchw["memory_format"] == "contiguous"
    for k in ("mpjpe_mm", "pa_mpjpe_mm", "mpvpe_mm"):
        assert auto["metrics"][k] == pytest.approx(nchw["metrics"][k], rel=6e-4, abs=2e-3), k
    xyz_a, _ = read_submission(str(tmp_path / "auto" / "pred.zip"))
    xyz_n, _ = read_submission(str(tmp_path / "nchw" / "pred.zip"))
    np.testing.assert_allclose(xyz_a, xyz_n, rtol=6e-4, atol=2e-3)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        _evaluate(synth, "freihand", tmp_path / "bad", "--memory-format", "nhwc")
    assert e.value.code == 2 and "invalid choice: 'nhwc'" in capsys.readouterr().err


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--dataset", "--data-root", "--checkpoint", "--mano-model-path", "--backend", "--batch-size",
                 "--workers", "--out", "--device", "--skip-bad", "--memory-format"):
        assert flag in text, flag
