"""Readers on synthetic datasets in the real layouts: the sample contract, joint orders, FreiHAND's
image versions, HO3D's two layouts (OpenGL -> OpenCV), DexYCB's left-hand mirroring."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from handS3C.data import DexYCB, FreiHAND, HO3D, build_dataset
from handS3C.data import augment as aug
from handS3C.data.joint_orders import FREIHAND_TO_HO3D, HO3D_TO_FREIHAND, inverse_permutation

CASES = [("freihand", "freihand", "train", {}), ("freihand", "freihand", "evaluation", {}),
         ("ho3d", "ho3d", "train", {}), ("ho3d", "ho3d", "evaluation", {}),
         ("ho3d-official", "ho3d", "train", {"layout": "official"}),
         ("ho3d-official", "ho3d", "evaluation", {"layout": "official"}),
         ("dexycb", "dexycb", "train", {}), ("dexycb", "dexycb", "test", {})]

SHAPES = {"image": (3, 48, 48), "pose": (48,), "shape": (10,), "joints2d": (21, 2), "joints3d": (21, 3),
          "root": (3,), "K": (3, 3), "verts": (778, 3), "has_mano": (), "has_joints3d": (), "has_verts": (),
          "crop_to_image": (2, 3), "bbox": (4,), "index": (), "replaces": ()}


def _root_rel(j):
    return j - j[..., :1, :]


@pytest.mark.parametrize("fmt,name,split,kw", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_contract(synth, fmt, name, split, kw):
    root, _ = synth(fmt)
    ds = build_dataset(name, root, split, input_size=48, **kw)
    assert len(ds) > 0
    s = ds[len(ds) - 1]
    assert set(s) == set(SHAPES) | {"file"}
    for k, shp in SHAPES.items():
        assert tuple(s[k].shape) == shp, k
        assert torch.isfinite(s[k].float()).all(), k
    for k in ("image", "pose", "shape", "joints2d", "joints3d", "root", "K", "verts", "crop_to_image", "bbox"):
        assert s[k].dtype == torch.float32, k
    assert s["index"].dtype == torch.int64 and int(s["index"]) == len(ds) - 1
    assert s["has_mano"].dtype == torch.bool
    assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0 and s["image"].std() > 0.02
    assert os.path.isfile(s["file"])
    if s["has_joints3d"]:
        assert (s["joints3d"][:, 2] > 0).all()                 # OpenCV frame: in front of the camera
        assert torch.allclose(s["root"], s["joints3d"][0])
        assert (s["joints2d"] > -0.05).all() and (s["joints2d"] < 1.05).all()
        p = s["joints3d"].double() @ s["K"].double().T
        assert torch.allclose(p[:, :2] / p[:, 2:], s["joints2d"].double() * 48, atol=1e-3)
    else:
        assert (s["joints3d"] == 0).all()
    if not s["has_mano"]:
        assert (s["pose"] == 0).all() and (s["shape"] == 0).all()
    # default collate
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, 48, 48) and len(batch["file"]) == 2


@pytest.mark.parametrize("fmt,name,kw", [("freihand", "freihand", {}), ("ho3d", "ho3d", {}),
                                         ("ho3d-official", "ho3d", {"mano": True}), ("dexycb", "dexycb", {})])
def test_joint_order_matches_mano(synth, mano_layer, fmt, name, kw):
    """The MANO layer returns FreiHAND order: its joints of the sample's pose/shape must equal the
    sample's joints3d up to the translation, for every dataset (this catches a wrong table)."""
    root, summary = synth(fmt)
    extra = {"mano_model_path": summary["mano_model_path"]} if kw.get("mano") else {}
    ds = build_dataset(name, root, "train", input_size=64, **extra)
    for i in range(len(ds)):
        s = ds[i]
        assert s["has_mano"]
        _, j = mano_layer(s["pose"][None].double(), s["shape"][None].double())
        err = (_root_rel(j[0]) - _root_rel(s["joints3d"].double())).norm(dim=-1).max()
        assert err < 2e-4, (fmt, i, float(err))


def test_ho3d_tables_are_inverse_and_match_names():
    from handS3C.data.joint_orders import FREIHAND_JOINT_NAMES, HO3D_JOINT_NAMES
    assert np.array_equal(FREIHAND_TO_HO3D[HO3D_TO_FREIHAND], np.arange(21))
    assert np.array_equal(inverse_permutation(HO3D_TO_FREIHAND), FREIHAND_TO_HO3D)
    assert [HO3D_JOINT_NAMES[i] for i in HO3D_TO_FREIHAND] == list(FREIHAND_JOINT_NAMES)
    assert HO3D_JOINT_NAMES[16:] == ("thumb4", "index4", "middle4", "ring4", "pinky4")


def test_ho3d_coco_reads_annotation_in_freihand_order(synth):
    root, _ = synth("ho3d")
    db = json.load(open(os.path.join(root, "annotations", "HO3D_train_data.json")))
    ds = HO3D(root, "train", input_size=64)
    assert ds.layout == "coco"
    for i, ann in enumerate(db["annotations"]):
        j = np.array(ann["joints_coord_cam"])
        np.testing.assert_allclose(ds[i]["joints3d"].numpy(), j[HO3D_TO_FREIHAND], atol=1e-6)
        np.testing.assert_allclose(ds[i]["pose"].numpy(), ann["mano_param"]["pose"], atol=1e-6)


def test_freihand_versions_share_the_annotation(synth):
    root, _ = synth("freihand")
    ds = FreiHAND(root, "train", input_size=96)
    n = ds.num_unique
    assert n == 3 and len(ds) == 4 * n
    files = [os.path.basename(ds[i]["file"]) for i in range(len(ds))]
    assert files == ["%08d.jpg" % i for i in range(4 * n)]
    xyz = json.load(open(os.path.join(root, "training_xyz.json")))
    for s in range(n):
        a = [ds[s + v * n] for v in range(4)]
        for v in range(1, 4):
            assert torch.equal(a[0]["joints3d"], a[v]["joints3d"]) and torch.equal(a[0]["pose"], a[v]["pose"])
            assert (a[0]["image"] - a[v]["image"]).abs().mean() > 0.02     # a different image version
        np.testing.assert_allclose(a[0]["joints3d"].numpy(), xyz[s], atol=1e-6)
    only = FreiHAND(root, "train", input_size=96, versions=(2,))
    assert len(only) == n and os.path.basename(only[1]["file"]) == "%08d.jpg" % (1 + 2 * n)
    # the images are the crops: at the native size the crop is the image itself
    img = cv2.imread(ds[1]["file"])[:, :, ::-1].astype(np.float32) / 255
    assert np.abs(ds[1]["image"].permute(1, 2, 0).numpy() - img).max() < 1e-6
    K = np.array(json.load(open(os.path.join(root, "training_K.json")))[1])
    np.testing.assert_allclose(ds[1]["K"].numpy(), K, rtol=1e-6)
    assert not ds[1]["has_verts"]                       # training verts only on request (the file is huge)
    withv = FreiHAND(root, "train", input_size=96, load_verts=True)
    verts = json.load(open(os.path.join(root, "training_verts.json")))
    assert withv[1 + n]["has_verts"] and withv.records[1].verts is withv.records[1 + n].verts
    np.testing.assert_allclose(withv[1 + n]["verts"].numpy(), verts[1], atol=1e-6)


def test_dataloader_workers(synth):
    root, _ = synth("ho3d")
    ds = HO3D(root, "train", input_size=48, augment=True, seed=3)
    ref = torch.stack([ds[i]["image"] for i in range(len(ds))])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    got = torch.cat([b["image"] for b in loader])
    assert torch.equal(got, ref)            # per-sample seeding: the same crops in any worker


def test_freihand_resize_scales_K(synth):
    root, _ = synth("freihand")
    ds = FreiHAND(root, "evaluation", input_size=224)
    s = ds[0]
    K = np.array(json.load(open(os.path.join(root, "evaluation_K.json")))[0])
    f = 224 / 96
    np.testing.assert_allclose(s["K"][:2, :2].numpy(), K[:2, :2] * f, rtol=1e-5)
    assert s["has_joints3d"] and s["has_verts"] and s["has_mano"]


def test_ho3d_official_layout_converts_opengl(synth):
    import pickle
    root, summary = synth("ho3d-official")
    ds = HO3D(root, "train", input_size=64, mano_model_path=summary["mano_model_path"])
    assert ds.layout == "official"
    ids = open(os.path.join(root, "train.txt")).read().split()
    seq, fid = ids[0].split("/")
    meta = pickle.load(open(os.path.join(root, "train", seq, "meta", fid + ".pkl"), "rb"))
    j = meta["handJoints3D"] * np.array([1.0, -1.0, -1.0])
    np.testing.assert_allclose(ds[0]["joints3d"].numpy(), j[HO3D_TO_FREIHAND], atol=1e-6)
    assert ds[0]["file"].endswith(os.path.join(seq, "rgb", fid + ".jpg"))
    # without a MANO file there is no hands_mean to convert handPose with: no MANO, joints still there
    bare = HO3D(root, "train", input_size=64)
    assert not bare[0]["has_mano"] and bare[0]["has_joints3d"]
    ev = HO3D(root, "evaluation", input_size=64)
    m = pickle.load(open(os.path.join(root, "evaluation", *ev.records[0].file.split(os.sep)[-3:-2], "meta",
                                      os.path.basename(ev.records[0].file)[:-4] + ".pkl"), "rb"))
    np.testing.assert_allclose(ev.records[0].root, m["handJoints3D"] * np.array([1, -1, -1]), atol=1e-9)


def test_ho3d_evaluation_root_box_and_public_ground_truth(synth, tmp_path):
    import shutil
    root, _ = synth("ho3d")
    db = json.load(open(os.path.join(root, "annotations", "HO3D_evaluation_data.json")))
    ds = HO3D(root, "evaluation", input_size=64)
    s = ds[1]
    assert s["has_joints3d"] and s["has_verts"] and not s["has_mano"]
    np.testing.assert_allclose(s["root"].numpy(), db["annotations"][1]["root_joint_cam"], atol=1e-6)
    gt = json.load(open(os.path.join(root, "evaluation_xyz.json")))
    np.testing.assert_allclose(s["joints3d"].numpy(), (np.array(gt[1]) * [1, -1, -1])[HO3D_TO_FREIHAND], atol=1e-6)
    # without the public ground truth: the root from the annotation, the crop from its bbox
    copy = tmp_path / "ho3d"
    shutil.copytree(root, copy)
    os.remove(copy / "evaluation_xyz.json")
    os.remove(copy / "evaluation_verts.json")
    bare = HO3D(str(copy), "evaluation", input_size=64)
    b = bare[1]
    assert not b["has_joints3d"] and not b["has_verts"]
    np.testing.assert_allclose(b["root"].numpy(), db["annotations"][1]["root_joint_cam"], atol=1e-6)
    x, y, w, h = db["annotations"][1]["bbox"]
    w, h = w - 1, h - 1                          # the published sanitize_bbox's w - 1, h - 1
    side = 1.5 * max(w, h)
    np.testing.assert_allclose(b["bbox"].numpy(), [x + w / 2 - side / 2, y + h / 2 - side / 2, side, side], rtol=1e-5)


def test_dexycb_left_hands_are_mirrored(synth, mano_layer):
    root, _ = synth("dexycb")
    db = json.load(open(os.path.join(root, "annotations", "DEX_YCB_s0_train_data.json")))
    ds = DexYCB(root, "train", input_size=64, fast_decode=False)   # full decode: comparable pixel for pixel
    i = next(k for k, a in enumerate(db["annotations"]) if a["hand_type"] == "left")
    ann, im = db["annotations"][i], db["images"][i]
    s = ds[i]
    W = im["width"]
    pose = np.array(ann["pose"] if "pose" in ann else ann["mano_param"]["pose"]).reshape(16, 3)
    np.testing.assert_allclose(s["pose"].numpy().reshape(16, 3), pose * [1, -1, -1], atol=1e-6)
    np.testing.assert_allclose(s["joints3d"].numpy(), np.array(ann["joints_coord_cam"]) * [-1, 1, 1], atol=1e-6)
    # image: the flipped file cropped around the mirrored joints, computed independently here
    j2 = np.array(ann["joints_img"])
    j2[:, 0] = W - 1 - j2[:, 0]
    box = aug.square_box_from_joints(j2, 1.5, W, im["height"])
    M, _, _ = aug.crop_affine(box, 64)
    flipped = cv2.flip(cv2.imread(os.path.join(root, im["file_name"])), 1)[:, :, ::-1]
    want = cv2.warpAffine(np.ascontiguousarray(flipped), M, (64, 64), flags=cv2.INTER_LINEAR).astype(np.float32) / 255
    assert np.abs(s["image"].permute(1, 2, 0).numpy() - want).max() < 2 / 255
    np.testing.assert_allclose(s["joints2d"].numpy() * 64, j2 @ M[:, :2].T + M[:, 2], atol=1e-3)
    # the mirrored pose is a right hand that reproduces the mirrored joints
    _, jm = mano_layer(s["pose"][None].double(), s["shape"][None].double())
    assert (_root_rel(jm[0]) - _root_rel(s["joints3d"].double())).norm(dim=-1).max() < 2e-4
    # crop_to_image maps the crop back into the (unflipped) file
    q = s["joints2d"].numpy() * 64
    back = q @ s["crop_to_image"].numpy()[:, :2].T + s["crop_to_image"].numpy()[:, 2]
    np.testing.assert_allclose(back, np.array(ann["joints_img"]), atol=1e-2)


def test_dexycb_bbox_crop(synth):
    root, _ = synth("dexycb")
    db = json.load(open(os.path.join(root, "annotations", "DEX_YCB_s0_test_data.json")))
    ds = DexYCB(root, "test", input_size=64, crop="bbox")
    x, y, w, h = db["annotations"][0]["bbox"]
    w, h = w - 1, h - 1                          # the published sanitize_bbox's w - 1, h - 1
    side = 1.5 * max(w, h)
    np.testing.assert_allclose(ds[0]["bbox"].numpy(), [x + w / 2 - side / 2, y + h / 2 - side / 2, side, side],
                               rtol=1e-5)
    assert not torch.allclose(ds[0]["bbox"], DexYCB(root, "test", input_size=64)[0]["bbox"])


def test_build_dataset_defaults_and_errors(synth):
    root, _ = synth("dexycb")
    assert build_dataset("dexycb", root, "test").input_size == 256
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("coco", root, "test")
    with pytest.raises(ValueError, match="split"):
        DexYCB(root, "evaluation")


def test_ho3d_official_png_frames(synth, tmp_path):
    """HO3D v2 ships PNG frames: the reader takes <id>.png when there is no <id>.jpg."""
    import shutil
    root, summary = synth("ho3d-official")
    copy = tmp_path / "ho3d_v2"
    shutil.copytree(root, copy)
    seq, fid = open(copy / "train.txt").read().split()[0].split("/")
    jpg = copy / "train" / seq / "rgb" / (fid + ".jpg")
    img = cv2.imread(str(jpg))
    cv2.imwrite(str(jpg)[:-4] + ".png", img)
    os.remove(jpg)
    ds = HO3D(str(copy), "train", input_size=64, mano_model_path=summary["mano_model_path"])
    ref = HO3D(root, "train", input_size=64, mano_model_path=summary["mano_model_path"], fast_decode=False)
    s = ds[0]
    assert s["file"].endswith(".png")
    assert (s["image"] - ref[0]["image"]).abs().max() < 2 / 255   # the same pixels (PNG of the decoded JPEG)
