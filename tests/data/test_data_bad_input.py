"""Bad input: missing folders and files, mismatched lists, undecodable images, NaN annotations,
malicious pickles; and skip_bad turning per-sample failures into counted skips."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest

from handS3C.data import DatasetError, DexYCB, FreiHAND, HO3D
from handS3C.data.pickle_io import load_meta_pickle


def _copy(synth, fmt, tmp_path):
    root, _ = synth(fmt)
    dst = tmp_path / fmt
    shutil.copytree(root, dst)
    return str(dst)


def test_missing_folder_names_path_and_layout(tmp_path):
    for cls in (FreiHAND, HO3D, DexYCB):
        with pytest.raises(FileNotFoundError, match="nowhere") as e:
            cls(str(tmp_path / "nowhere"), "train")
        assert "expected layout" in str(e.value) or "expected either" in str(e.value)


def test_missing_annotation_file(synth, tmp_path):
    root = _copy(synth, "freihand", tmp_path)
    os.remove(os.path.join(root, "training_mano.json"))
    with pytest.raises(FileNotFoundError, match="training_mano.json.*expected layout"):
        FreiHAND(root, "train")
    root = _copy(synth, "dexycb", tmp_path)
    os.remove(os.path.join(root, "annotations", "DEX_YCB_s0_test_data.json"))
    with pytest.raises(FileNotFoundError, match="DEX_YCB_s0_test_data.json"):
        DexYCB(root, "test")
    root = _copy(synth, "ho3d", tmp_path)
    shutil.rmtree(os.path.join(root, "annotations"))
    with pytest.raises(FileNotFoundError, match="HO3D_train_data.json.*train.txt"):
        HO3D(root, "train")
    with pytest.raises(FileNotFoundError, match="HO3D_train_data.json"):
        HO3D(root, "train", layout="coco")


def test_lists_of_different_lengths(synth, tmp_path):
    root = _copy(synth, "freihand", tmp_path)
    p = os.path.join(root, "training_xyz.json")
    xyz = json.load(open(p))
    json.dump(xyz[:-1], open(p, "w"))
    with pytest.raises(DatasetError, match=r"FreiHAND: annotation lists of different lengths.*training_xyz.json': 2"):
        FreiHAND(root, "train")


def test_undecodable_image(synth, tmp_path):
    root = _copy(synth, "dexycb", tmp_path)
    db = json.load(open(os.path.join(root, "annotations", "DEX_YCB_s0_train_data.json")))
    bad = os.path.join(root, db["images"][1]["file_name"])
    open(bad, "wb").write(b"\xff\xd8 truncated")
    ds = DexYCB(root, "train", input_size=32)
    ds[0]
    with pytest.raises(DatasetError, match=r"DexYCB: sample 1 \(.*color_000001.jpg\).*does not decode"):
        ds[1]
    skip = DexYCB(root, "train", input_size=32, skip_bad=True)
    with pytest.warns(UserWarning, match="skipped"):
        s = skip[1]
    # the stand-in is sample 2, labelled as such, and names the sample it replaces
    assert s["file"].endswith("color_000002.jpg") and int(s["index"]) == 2 and int(s["replaces"]) == 1
    assert int(skip[0]["replaces"]) == -1
    assert len(skip.skipped) == 1 and skip.skipped[0][0] == 1


def test_missing_image(synth, tmp_path):
    root = _copy(synth, "ho3d", tmp_path)
    os.remove(os.path.join(root, "train", "MC1", "rgb", "0000.jpg"))
    with pytest.raises(DatasetError, match=r"HO3D: sample 1 \(.*MC1.*0000.jpg\): image file is missing"):
        HO3D(root, "train")
    with pytest.warns(UserWarning, match="skipped 1 bad sample"):
        ds = HO3D(root, "train", skip_bad=True)
    assert len(ds) == 2 and len(ds.skipped) == 1


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_annotation(synth, tmp_path, value):
    root = _copy(synth, "ho3d", tmp_path)
    p = os.path.join(root, "annotations", "HO3D_train_data.json")
    db = json.load(open(p))
    db["annotations"][2]["mano_param"]["pose"][5] = value
    json.dump(db, open(p, "w"))
    with pytest.raises(DatasetError, match=r"HO3D: sample 2 \(.*0001.jpg\): non-finite.*pose.*HO3D_train_data.json"):
        HO3D(root, "train")
    with pytest.warns(UserWarning):
        ds = HO3D(root, "train", skip_bad=True)
    assert len(ds) == 2 and ds.skipped[0][0] == 2


def test_malformed_entry_and_skip(synth, tmp_path):
    root = _copy(synth, "freihand", tmp_path)
    p = os.path.join(root, "training_mano.json")
    m = json.load(open(p))
    m[1] = [m[1][0][:50]]
    json.dump(m, open(p, "w"))
    with pytest.raises(DatasetError, match=r"FreiHAND: sample 1 .*MANO row.*50 values"):
        FreiHAND(root, "train")
    ds = FreiHAND(root, "train", skip_bad=True)
    assert len(ds) == 8 and len(ds.skipped) == 4        # that sample in all four versions


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + _Evil.marker,))


def test_malicious_meta_pickle_is_refused_unexecuted(synth, tmp_path):
    root = _copy(synth, "ho3d-official", tmp_path)
    seq, fid = open(os.path.join(root, "train.txt")).read().split()[0].split("/")
    meta_path = os.path.join(root, "train", seq, "meta", fid + ".pkl")
    _Evil.marker = str(tmp_path / "pwned")
    meta = pickle.load(open(meta_path, "rb"))
    meta["objName"] = _Evil()
    open(meta_path, "wb").write(pickle.dumps(meta, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (posix|os)\.system"):
        load_meta_pickle(meta_path)
    with pytest.raises(DatasetError, match=r"HO3D: sample 0 .*refusing to load global"):
        HO3D(root, "train")
    assert not os.path.exists(_Evil.marker)


def test_meta_pickle_with_non_array_objects_refused(tmp_path):
    import scipy.sparse
    p = str(tmp_path / "m.pkl")
    open(p, "wb").write(pickle.dumps({"camMat": scipy.sparse.csc_matrix(np.eye(3))}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="scipy.sparse"):
        load_meta_pickle(p)
    open(p, "wb").write(pickle.dumps({"a": np.arange(3.0), "b": [1, "x"], "c": (np.float32(2),)}, protocol=2))
    out = load_meta_pickle(p)
    assert np.array_equal(out["a"], np.arange(3.0)) and out["b"] == [1, "x"]
    open(p, "wb").write(pickle.dumps([1, 2]))
    with pytest.raises(pickle.UnpicklingError, match="expected a pickled dict"):
        load_meta_pickle(p)


def test_meta_missing_key(synth, tmp_path):
    root = _copy(synth, "ho3d-official", tmp_path)
    seq, fid = open(os.path.join(root, "evaluation.txt")).read().split()[1].split("/")
    meta_path = os.path.join(root, "evaluation", seq, "meta", fid + ".pkl")
    meta = pickle.load(open(meta_path, "rb"))
    del meta["handBoundingBox"]
    open(meta_path, "wb").write(pickle.dumps(meta, protocol=2))
    with pytest.raises(DatasetError, match=r"HO3D: sample 1 .*lacks 'handBoundingBox'"):
        HO3D(root, "evaluation")
