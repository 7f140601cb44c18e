"""hands3c predict: crops, the camera fit, the overlay's pixels, the files written, the command."""
import json
import os

import numpy as np
import pytest
import torch

import handS3C
from handS3C.cli import main
from handS3C.data import FreiHAND
from handS3C.data.render import FREIHAND_BONES, render_mesh
from handS3C.data.synthetic import make_synthetic
from handS3C.inference import (collect_images, fit_translation, parse_bbox, pinhole, prepare_crop, project,
                               render_overlay)

FINGER = ((230, 60, 60), (240, 170, 40), (60, 200, 60), (50, 140, 240), (190, 80, 220))


def _joint_colour(i):
    return (255, 255, 255) if i == 0 else FINGER[(i - 1) // 4]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    make_synthetic("freihand", root, n=1, n_eval=2, progress=False)
    return root


def test_fit_translation_recovers_an_exact_projection():
    rng = np.random.default_rng(0)
    J = rng.normal(0, 0.04, size=(21, 3))
    t = np.array([0.03, -0.05, 0.6])
    K = np.array([[480.0, 0, 101.3], [0, 470.0, 117.9], [0, 0, 1]])
    uv = project(K, J + t)
    np.testing.assert_allclose(fit_translation(J, uv, K), t, atol=1e-9)
    # noisy joints: close, and the reprojection beats the unfitted placement
    noisy = uv + rng.normal(0, 1.0, size=uv.shape)
    t2 = fit_translation(J, noisy, K)
    assert np.abs(t2 - t).max() < 0.02
    assert np.linalg.norm(project(K, J + t2) - noisy, axis=1).mean() < 1.5


def test_fit_translation_degenerate_input_stays_in_front():
    J = np.random.default_rng(1).normal(0, 0.04, size=(21, 3))
    uv = np.random.default_rng(2).uniform(0, 200, size=(21, 2))   # unrelated to J
    t = fit_translation(J, uv, pinhole(200.0, 200, 200))
    assert (J[:, 2] + t[2]).min() >= 0.05 - 1e-9
    with pytest.raises(ValueError, match="J >= 2"):
        fit_translation(J[:1], uv[:1], np.eye(3))


def test_overlay_of_a_synthetic_sample(synthetic):
    """Root-relative ground truth + its 2-D joints -> the fitted camera puts the mesh on the hand:
    the overlay's mesh covers the hand's silhouette, and the skeleton's joints sit on the 2-D joints."""
    s = FreiHAND(str(synthetic), "evaluation", input_size=224)[0]
    image = (s["image"].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    K = s["K"].double().numpy()
    verts, joints = s["verts"].double().numpy(), s["joints3d"].double().numpy()
    root = joints[0]
    j2 = s["joints2d"].double().numpy() * 224
    faces = handS3C.model.mano.ManoLayer(os.path.join(synthetic, "MANO_RIGHT.pkl")).th_faces.numpy()
    t = fit_translation(joints - root, j2, K)
    np.testing.assert_allclose(t, root, atol=2e-4)           # the 2-D joints are float32 roundings
    picture, mask, scale = render_overlay(image, verts - root + t, faces, K, j2)
    assert scale == 1.0 and picture.shape == (224, 448, 3)
    _, silhouette = render_mesh(verts, faces, K, 224, 224)
    assert silhouette.sum() > 500
    iou = (mask & silhouette).sum() / (mask | silhouette).sum()
    assert iou > 0.97, iou
    # the mesh is drawn: inside the silhouette (away from the skeleton) the picture changed
    left = picture[:, :224]
    changed = np.abs(left.astype(int) - image.astype(int)).sum(-1) > 30
    assert changed[silhouette].mean() > 0.5 and changed[~silhouette].mean() < 0.1
    # each joint's pixel has its colour (or that of a joint drawn later, within the dot's radius)
    for i in range(21):
        x, y = np.round(j2[i]).astype(int)
        if not (0 <= x < 224 and 0 <= y < 224):
            continue
        near = [k for k in range(21) if k >= i and np.abs(np.round(j2[k]) - [x, y]).max() <= 2]
        assert tuple(left[y, x]) in {_joint_colour(k) for k in near}, (i, left[y, x])
    # the side view holds the mesh on grey
    side = picture[:, 224:]
    assert (np.abs(side.astype(int) - 200).sum(-1) > 10).sum() > 200


def test_prepare_crop_box_and_whole_picture(synthetic, tmp_path):
    import cv2

    img = np.random.default_rng(3).integers(0, 255, size=(90, 130, 3), dtype=np.uint8)
    path = str(tmp_path / "pic.png")
    cv2.imwrite(path, img[:, :, ::-1])
    c = prepare_crop(path, 64, hand_box=(40, 20, 30, 20))
    np.testing.assert_allclose(c.box, [32.5, 7.5, 45, 45])   # side 1.5 * 30 around the centre (55, 30)
    # the training crop's convention (augment.crop_affine): the box centre is crop point (S/2, S/2)
    centre = c.crop_to_image @ np.array([32.0, 32.0, 1.0])
    np.testing.assert_allclose(centre, [55.0, 30.0], atol=1e-9)
    # and the crop shows the picture there (bilinear, so compare with the neighbourhood's range)
    for y, x in ((10, 20), (40, 50)):
        u, v = c.crop_to_image @ np.array([x, y, 1.0])
        patch = img[int(np.floor(v)):int(np.floor(v)) + 2, int(np.floor(u)):int(np.floor(u)) + 2].reshape(-1, 3)
        assert (c.crop[y, x] >= patch.min(0) - 1).all() and (c.crop[y, x] <= patch.max(0) + 1).all()
    whole = prepare_crop(path, 64)
    np.testing.assert_allclose(whole.box, [0, -20, 130, 130])
    assert whole.crop.shape == (64, 64, 3) and whole.crop.dtype == np.uint8
    with pytest.raises(ValueError, match="x,y,w,h"):
        parse_bbox("1,2,3")
    with pytest.raises(ValueError, match="w, h > 0"):
        parse_bbox("1,2,0,4")


def test_collect_images_rejects_clashing_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="x.obj"):
        collect_images([str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(FileNotFoundError, match="neither"):
        collect_images([str(tmp_path / "missing.jpg")])


def test_predict_command_writes_mesh_json_overlay(synthetic, tmp_path):
    torch.manual_seed(0)
    mano = os.path.join(synthetic, "MANO_RIGHT.pkl")
    model = handS3C.HandS3C(input_size=224, backend="cpu", mano_model_path=mano)
    ckpt = tmp_path / "snapshot_0.pth.tar"
    torch.save({"network": model.state_dict(), "epoch": 0}, ckpt)
    pics = os.path.join(synthetic, "evaluation", "rgb")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"00000001.jpg": [60, 50, 100, 120]}))
    out = tmp_path / "out"
    status = main(["predict", pics, "--checkpoint", str(ckpt), "--mano-model-path", mano, "--out", str(out),
                   "--bboxes", str(boxes), "--input-size", "224", "--batch-size", "2", "--backend", "cpu",
                   "--device", "cpu"])
    assert status == 0
    for stem in ("00000000", "00000001"):
        obj = (out / f"{stem}.obj").read_text().splitlines()
        assert sum(ln.startswith("v ") for ln in obj) == 778 and sum(ln.startswith("f ") for ln in obj) == 1538
        rec = json.loads((out / f"{stem}.json").read_text())
        assert np.asarray(rec["joints2d"]).shape == (21, 2) and np.asarray(rec["verts"]).shape == (778, 3)
        assert np.asarray(rec["pose"]).shape == (48,) and np.asarray(rec["shape"]).shape == (10,)
        np.testing.assert_allclose(np.asarray(rec["verts_cam"]) - np.asarray(rec["verts"]),
                                   np.broadcast_to(rec["cam_t"], (778, 3)), atol=2e-6)
        import cv2
        ov = cv2.imread(str(out / f"{stem}_overlay.png"))[:, :, ::-1]
        assert ov.shape == (224, 448, 3)
    # the JSON's 2-D joints are the model's crop joints mapped through the crop used
    rec = json.loads((out / "00000001.json").read_text())
    assert rec["bbox"] == [60, 50, 100, 120]
    np.testing.assert_allclose(rec["crop_box"], [20, 20, 180, 180])   # centre (110, 110), 1.5 * 120
    crop = prepare_crop(os.path.join(pics, "00000001.jpg"), 224, (60, 50, 100, 120))
    x = torch.from_numpy(crop.crop).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        j = model.eval()(x)["joints2d"][0].double().numpy() * 224
    want = j @ crop.crop_to_image[:, :2].T + crop.crop_to_image[:, 2]
    np.testing.assert_allclose(rec["joints2d"], want, atol=1e-3)
    assert json.loads((out / "00000000.json").read_text())["bbox"] is None


def test_predict_command_errors_are_one_line(tmp_path, capsys):
    status = main(["predict", str(tmp_path / "nope.jpg"), "--checkpoint", "x", "--mano-model-path", "y",
                   "--out", str(tmp_path)])
    assert status == 1
    assert "neither a file nor a folder" in capsys.readouterr().err


def test_load_model_is_channels_last_on_cpu_by_default(synthetic, tmp_path):
    from handS3C.inference.predict import load_model

    mano = os.path.join(synthetic, "MANO_RIGHT.pkl")
    model = handS3C.HandS3C(input_size=224, backend="cpu", mano_model_path=mano)
    ckpt = tmp_path / "snapshot_0.pth.tar"
    torch.save({"network": model.state_dict(), "epoch": 0}, ckpt)
    from handS3C.inference.predict import model_memory_format

    w = load_model(str(ckpt), mano, 224, backend="cpu", device="cpu").backbone.layer0[0].weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert model_memory_format(model) == torch.contiguous_format
    cont = load_model(str(ckpt), mano, 224, backend="cpu", device="cpu", memory_format="contiguous")
    assert cont.backbone.layer0[0].weight.is_contiguous() and model_memory_format(cont) == torch.contiguous_format
    with pytest.raises(ValueError, match="memory_format must be one of"):
        load_model(str(ckpt), mano, 224, device="cpu", memory_format="nhwc")
