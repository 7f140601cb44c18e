"""The procedural MANO model and the synthetic datasets: structure, hand-like geometry, layouts,
visible hands, the make-synthetic command."""
import json
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

from handS3C.data.render import render_mesh
from handS3C.data.synthetic_mano import write_synthetic_mano
from handS3C.model.mano import FINGERTIP_VERTICES, ManoLayer, load_mano_pickle


def test_synthetic_mano_structure(tmp_path):
    import scipy.sparse
    p = write_synthetic_mano(str(tmp_path / "MANO_RIGHT.pkl"), seed=1)
    raw = pickle.load(open(p, "rb"), encoding="latin1")
    assert isinstance(raw["J_regressor"], scipy.sparse.csc_matrix)
    assert raw["f"].dtype == np.uint32 and raw["f"].shape == (1538, 3)
    assert raw["kintree_table"][0, 0] == 2 ** 32 - 1
    for k in ("v_template", "f", "J_regressor", "weights", "posedirs", "shapedirs", "kintree_table", "hands_mean",
              "hands_components", "hands_coeffs", "J", "bs_style", "bs_type"):
        assert k in raw, k
    m = load_mano_pickle(p)
    assert m["v_template"].shape == (778, 3)
    np.testing.assert_allclose(m["weights"].sum(1), 1.0)
    np.testing.assert_allclose(m["J_regressor"].sum(1), 1.0)
    assert np.linalg.matrix_rank(m["shapedirs"].reshape(-1, 10)) == 10


def test_synthetic_mano_looks_like_a_hand(tmp_path):
    layer = ManoLayer(write_synthetic_mano(str(tmp_path / "m.pkl"))).double()
    v, j, skel = layer(torch.zeros(1, 48, dtype=torch.float64), return_skeleton=True)
    j = j[0].numpy()
    # bones (FreiHAND order: parent of c is c-1 within a finger, the wrist for each finger base)
    for c in range(1, 21):
        p = 0 if (c - 1) % 4 == 0 else c - 1
        L = np.linalg.norm(j[c] - j[p])
        assert 0.012 < L < 0.10, (c, L)
    # fingertips are the far ends of their fingers, lengths in human range
    tips = v[0].numpy()[list(FINGERTIP_VERTICES)]
    np.testing.assert_allclose(tips, j[[4, 8, 12, 16, 20]])
    span = np.linalg.norm(j[12] - j[0])
    assert 0.15 < span < 0.21                         # wrist to middle fingertip
    # curling the index finger moves its tip toward the palm side (+z), not the others
    pose = torch.zeros(1, 48, dtype=torch.float64)
    pose[0, 3:12] = torch.tensor([0.8, 0, 0] * 3, dtype=torch.float64)
    _, j2 = layer(pose)
    d = j2[0].numpy() - j
    assert d[8, 2] > 0.03 and np.abs(d[12]).max() < 1e-9
    # shape changes the hand
    _, j3 = layer(torch.zeros(1, 48, dtype=torch.float64), torch.ones(1, 10, dtype=torch.float64))
    assert np.abs(j3[0].numpy() - j).max() > 0.003


@pytest.mark.parametrize("fmt,files", [
    ("freihand", ["training_K.json", "training_mano.json", "training_xyz.json", "training_verts.json",
                  "training/rgb/00000011.jpg", "evaluation_K.json", "evaluation_xyz.json", "evaluation_verts.json",
                  "evaluation_mano.json", "evaluation/rgb/00000001.jpg", "MANO_RIGHT.pkl"]),
    ("ho3d", ["annotations/HO3D_train_data.json", "annotations/HO3D_evaluation_data.json",
              "train/ABF10/rgb/0000.jpg", "train/MC1/rgb/0000.jpg", "evaluation/SM1/rgb/0000.jpg",
              "evaluation_xyz.json", "evaluation_verts.json"]),
    ("ho3d-official", ["train.txt", "evaluation.txt", "train/ABF10/rgb/0001.jpg", "train/ABF10/meta/0001.pkl",
                       "evaluation/MPM10/meta/0000.pkl"]),
    ("dexycb", ["annotations/DEX_YCB_s0_train_data.json", "annotations/DEX_YCB_s0_test_data.json"]),
])
def test_layout_files(synth, fmt, files):
    root, summary = synth(fmt)
    for f in files:
        assert os.path.isfile(os.path.join(root, f)), f
    assert summary["train"] == 3 and summary["eval"] == 2
    if fmt == "freihand":
        rows = json.load(open(os.path.join(root, "training_mano.json")))
        assert len(rows) == 3 and np.array(rows[0]).shape == (1, 61)
        assert not os.path.exists(os.path.join(root, "training/rgb/00000012.jpg"))
    if fmt == "dexycb":
        db = json.load(open(os.path.join(root, "annotations/DEX_YCB_s0_train_data.json")))
        test = json.load(open(os.path.join(root, "annotations/DEX_YCB_s0_test_data.json")))
        assert [a["hand_type"] for a in db["annotations"]] == ["right", "left", "right"]
        names = {im["file_name"] for im in db["images"]} | {im["file_name"] for im in test["images"]}
        assert len(names) == 5                                  # train and test frames are distinct files
        for im in db["images"]:
            assert cv2.imread(os.path.join(root, im["file_name"])).shape == (240, 320, 3)


def test_hand_is_visible_where_the_annotation_says(synth):
    """Re-render the annotated MANO hand's silhouette: the image is skin-coloured there, not elsewhere."""
    root, summary = synth("ho3d")
    layer = ManoLayer(summary["mano_model_path"]).double()
    db = json.load(open(os.path.join(root, "annotations", "HO3D_train_data.json")))
    for ann, im in zip(db["annotations"], db["images"]):
        mp = ann["mano_param"]
        v, _ = layer(torch.tensor([mp["pose"]], dtype=torch.float64), torch.tensor([mp["shape"]], dtype=torch.float64))
        v = v[0].numpy() + np.array(mp["trans"])
        cp = ann["cam_param"]
        K = np.array([[cp["focal"][0], 0, cp["princpt"][0]], [0, cp["focal"][1], cp["princpt"][1]], [0, 0, 1]])
        _, mask = render_mesh(v, layer.th_faces.numpy(), K, im["height"], im["width"])
        img = cv2.imread(os.path.join(root, "train", im["file_name"]))[:, :, ::-1].astype(int)
        skin = (img[..., 0] > img[..., 1] + 8) & (img[..., 1] > img[..., 2] + 4)
        inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert inner.sum() > 500                                # a good part of the frame
        assert skin[inner].mean() > 0.9 and skin[~mask].mean() < 0.5


def test_make_synthetic_cli(tmp_path, capsys):
    from handS3C.cli import main
    out = tmp_path / "ds"
    assert main(["make-synthetic", "--format", "dexycb", "--out", str(out), "--n", "2", "--n-eval", "1",
                 "--image-size", "160", "120", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "2 training and 1 evaluation samples, 160x120" in text and "MANO_RIGHT.pkl" in text
    assert os.path.isfile(out / "annotations" / "DEX_YCB_s0_test_data.json")
    assert main(["make-synthetic", "--format", "freihand", "--out", str(out), "--n", "1", "--image-size",
                 "160", "120"]) == 2
    assert "one value" in capsys.readouterr().err
    assert main(["make-synthetic", "--format", "ho3d", "--out", str(out), "--n", "1", "--mano-model-path",
                 str(tmp_path / "missing.pkl")]) == 2
    assert "missing.pkl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["make-synthetic", "--format", "coco", "--out", str(out), "--n", "1"])


def test_make_synthetic_is_deterministic(tmp_path):
    from handS3C.data import make_synthetic
    a = make_synthetic("freihand", tmp_path / "a", 1, seed=3, image_size=48, n_eval=1, progress=False)
    b = make_synthetic("freihand", tmp_path / "b", 1, seed=3, image_size=48, n_eval=1, progress=False,
                       mano_model_path=a["mano_model_path"])
    assert open(tmp_path / "a" / "training_xyz.json").read() == open(tmp_path / "b" / "training_xyz.json").read()
    with pytest.raises(ValueError, match="format"):
        make_synthetic("coco", tmp_path / "c", 1)
