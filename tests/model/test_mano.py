"""The MANO layer and its chumpy-free pickle loader, against independent computations."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from handS3C.model.mano import ManoLayer, load_mano_pickle
from handS3C.model.rotations import axis_angle_to_matrix, matrix_to_axis_angle, rot6d_to_matrix
from model_helpers import MANO_PARENTS, write_fake_mano

# Right-hand fingertip vertices (thumb, index, middle, ring, pinky), as in manopth; written out
# here rather than imported so that the test checks the layer's constant.
FINGERTIP_VERTICES = (745, 317, 444, 556, 673)


@pytest.fixture(scope="module")
def mano_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mano") / "MANO_RIGHT.pkl"
    fields = write_fake_mano(path, seed=3)
    return path, fields


@pytest.fixture(scope="module")
def layer(mano_file):
    return ManoLayer(mano_file[0])


# ---------------------------------------------------------------------------------------
# Loader
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("chumpy", [False, True])
def test_loader_reads_fields(tmp_path, chumpy):
    path = tmp_path / "m.pkl"
    d = write_fake_mano(path, seed=5, chumpy=chumpy)
    m = load_mano_pickle(path)
    np.testing.assert_array_equal(m["J_regressor"], d["J_regressor_dense"])
    for k in ("v_template", "shapedirs", "posedirs", "weights", "hands_mean", "hands_components"):
        np.testing.assert_array_equal(m[k], d[k], err_msg=k)
    np.testing.assert_array_equal(m["f"], d["f"].astype(np.int64))
    assert m["f"].dtype == np.int64
    assert m["kintree_table"][0].tolist() == MANO_PARENTS


def test_loader_chumpy_path_without_chumpy(tmp_path):
    """The chumpy variant really contains chumpy globals, and chumpy is not importable here."""
    path = tmp_path / "m.pkl"
    write_fake_mano(path, seed=6, chumpy=True)
    import pickletools

    with open(path, "rb") as fh:
        ops = [arg for op, arg, _ in pickletools.genops(fh) if op.name in ("GLOBAL", "STACK_GLOBAL")]
    assert any(str(a).startswith("chumpy.ch") for a in ops), ops
    with pytest.raises(ImportError):
        import chumpy  # noqa: F401
    with pytest.raises(ModuleNotFoundError):
        with open(path, "rb") as fh:
            pickle.load(fh)  # the plain unpickler cannot read it
    assert load_mano_pickle(path)["shapedirs"].shape == (778, 3, 10)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("1+1",))


@pytest.mark.parametrize("evil_cls,name", [(_Evil, "system"), (_EvalEvil, "eval")])
def test_loader_refuses_arbitrary_globals(tmp_path, evil_cls, name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    d = write_fake_mano(tmp_path / "ok.pkl", seed=1)
    payload = {"v_template": d["v_template"], "evil": evil_cls(marker) if evil_cls is _Evil else evil_cls()}
    with open(path, "wb") as fh:
        pickle.dump(payload, fh, protocol=2)
    with pytest.raises(pickle.UnpicklingError) as ei:
        load_mano_pickle(path)
    assert name in str(ei.value) and str(path) in str(ei.value)
    assert not marker.exists()


def test_loader_missing_file(tmp_path):
    p = tmp_path / "nope" / "MANO_RIGHT.pkl"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_mano_pickle(p)
    with pytest.raises(FileNotFoundError):
        ManoLayer(p)


def test_loader_corrupt_file(tmp_path):
    p = tmp_path / "bad.pkl"
    p.write_bytes(os.urandom(64) + b"garbage")
    with pytest.raises(pickle.UnpicklingError, match="bad.pkl"):
        load_mano_pickle(p)
    good = tmp_path / "good.pkl"
    write_fake_mano(good, seed=1)
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(pickle.UnpicklingError, match="trunc.pkl"):
        load_mano_pickle(trunc)


def test_loader_missing_and_misshaped_fields(tmp_path):
    p = tmp_path / "m.pkl"
    write_fake_mano(p, seed=1, drop="posedirs")
    with pytest.raises(ValueError, match="posedirs") as ei:
        load_mano_pickle(p)
    assert "m.pkl" in str(ei.value)
    write_fake_mano(p, seed=1, extra={"weights": np.ones((778, 15))})
    with pytest.raises(ValueError, match=r"weights.*\(778, 16\)"):
        load_mano_pickle(p)
    with open(p, "wb") as fh:
        pickle.dump([1, 2, 3], fh, protocol=2)
    with pytest.raises(ValueError, match="dict"):
        load_mano_pickle(p)


# ---------------------------------------------------------------------------------------
# Layer against independent numpy computations
# ---------------------------------------------------------------------------------------

def _np_mano(fields, pose, betas):
    """Independent float64 LBS with 4x4 homogeneous transforms and scipy's rotations."""
    mean = fields["hands_mean"]
    v_shaped = fields["v_template"] + fields["shapedirs"] @ betas
    J = fields["J_regressor_dense"] @ v_shaped
    full = np.concatenate([pose[:3], pose[3:] + mean]).reshape(16, 3)
    R = Rotation.from_rotvec(full).as_matrix()
    feat = np.concatenate([(R[j] - np.eye(3)).ravel() for j in range(1, 16)])
    v_posed = v_shaped + fields["posedirs"] @ feat
    G = [None] * 16
    for j in range(16):
        local = np.eye(4)
        local[:3, :3] = R[j]
        local[:3, 3] = J[j] if j == 0 else J[j] - J[MANO_PARENTS[j]]
        G[j] = local if j == 0 else G[MANO_PARENTS[j]] @ local
    G = np.stack(G)
    posed_joints = G[:, :3, 3].copy()
    rest = np.zeros((16, 4, 4))
    rest[:, :3, 3] = np.einsum("jab,jb->ja", G[:, :3, :3], J)
    A = G - rest
    T = np.einsum("vj,jab->vab", fields["weights"], A)
    vh = np.concatenate([v_posed, np.ones((778, 1))], 1)
    verts = np.einsum("vab,vb->va", T, vh)[:, :3]
    tips = verts[list(FINGERTIP_VERTICES)]
    allj = np.concatenate([posed_joints, tips])
    order = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
    return verts, allj[order], posed_joints, v_shaped, J


def test_flat_hand_zero_shape_is_template(layer, mano_file):
    _, f = mano_file
    pose = torch.cat([torch.zeros(1, 3), -torch.as_tensor(f["hands_mean"], dtype=torch.float32)[None]], 1)
    verts, joints, skel = layer(pose, torch.zeros(1, 10), return_skeleton=True)
    np.testing.assert_allclose(verts[0].double().numpy(), f["v_template"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(skel[0].double().numpy(), f["J_regressor_dense"] @ f["v_template"], atol=2e-6)
    # the hands_mean matters: the zero pose vector is NOT the flat hand
    v0, _ = layer(torch.zeros(1, 48), torch.zeros(1, 10))
    assert (v0[0].double().numpy() - f["v_template"]).__abs__().max() > 1e-3


def test_root_rotation_rotates_about_root_joint(layer, mano_file):
    _, f = mano_file
    g = torch.Generator().manual_seed(11)
    betas = torch.randn(2, 10, generator=g)
    root = torch.randn(2, 3, generator=g)
    pose = torch.cat([root, -torch.as_tensor(f["hands_mean"], dtype=torch.float32).expand(2, 45)], 1)
    verts, joints, skel = layer(pose, betas, return_skeleton=True)
    for b in range(2):
        v_shaped = f["v_template"] + f["shapedirs"] @ betas[b].double().numpy()
        J = f["J_regressor_dense"] @ v_shaped
        R = Rotation.from_rotvec(root[b].double().numpy()).as_matrix()
        np.testing.assert_allclose(verts[b].double().numpy(), (v_shaped - J[0]) @ R.T + J[0], atol=5e-6)
        np.testing.assert_allclose(skel[b].double().numpy(), (J - J[0]) @ R.T + J[0], atol=5e-6)


def test_rest_joints_are_regressed_from_shaped_vertices(layer, mano_file):
    _, f = mano_file
    betas = torch.randn(3, 10, generator=torch.Generator().manual_seed(2))
    v_shaped, J = layer.shape_and_skeleton(betas)
    for b in range(3):
        vs = f["v_template"] + f["shapedirs"] @ betas[b].double().numpy()
        np.testing.assert_allclose(v_shaped[b].double().numpy(), vs, atol=2e-6)
        np.testing.assert_allclose(J[b].double().numpy(), f["J_regressor_dense"] @ vs, atol=2e-6)
    # a random pose never moves the wrist (no translation, root at the wrist joint)
    pose = torch.randn(3, 48, generator=torch.Generator().manual_seed(3))
    _, joints = layer(pose, betas)
    np.testing.assert_allclose(joints[:, 0].double().numpy(), J[:, 0].double().numpy(), atol=2e-6)


def test_random_pose_matches_numpy_lbs(layer, mano_file):
    _, f = mano_file
    g = torch.Generator().manual_seed(7)
    pose = torch.randn(3, 48, generator=g) * 0.8
    betas = torch.randn(3, 10, generator=g)
    verts, joints, skel = layer(pose, betas, return_skeleton=True)
    for b in range(3):
        v, j, s, _, _ = _np_mano(f, pose[b].double().numpy(), betas[b].double().numpy())
        np.testing.assert_allclose(verts[b].double().numpy(), v, atol=1e-5, rtol=0)
        np.testing.assert_allclose(joints[b].double().numpy(), j, atol=1e-5, rtol=0)
        np.testing.assert_allclose(skel[b].double().numpy(), s, atol=1e-5, rtol=0)


def test_freihand_order_and_fingertips(layer):
    pose = torch.randn(2, 48, generator=torch.Generator().manual_seed(8))
    betas = torch.randn(2, 10, generator=torch.Generator().manual_seed(9))
    verts, joints, skel = layer(pose, betas, return_skeleton=True)
    # FreiHAND: wrist, thumb 1-4, index 1-4, middle 1-4, ring 1-4, pinky 1-4
    # MANO skeleton: wrist, index 1-3, middle 1-3, pinky 1-3, ring 1-3, thumb 1-3
    mano_for = {"thumb": [13, 14, 15], "index": [1, 2, 3], "middle": [4, 5, 6], "ring": [10, 11, 12],
                "pinky": [7, 8, 9]}
    tips = dict(zip(["thumb", "index", "middle", "ring", "pinky"], FINGERTIP_VERTICES))
    assert torch.equal(joints[:, 0], skel[:, 0])
    for i, finger in enumerate(["thumb", "index", "middle", "ring", "pinky"]):
        base = 1 + 4 * i
        assert torch.equal(joints[:, base:base + 3], skel[:, mano_for[finger]]), finger
        assert torch.equal(joints[:, base + 3], verts[:, tips[finger]]), finger


def test_gradients_flow_and_match_finite_differences(mano_file):
    layer = ManoLayer(mano_file[0]).double()
    g = torch.Generator().manual_seed(4)
    pose = (torch.randn(1, 48, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    betas = torch.randn(1, 10, generator=g, dtype=torch.float64).requires_grad_()
    w = torch.randn(1, 778, 3, generator=g, dtype=torch.float64)
    wj = torch.randn(1, 21, 3, generator=g, dtype=torch.float64)

    def fn(p, b):
        v, j = layer(p, b)
        return (v * w).sum() + (j * wj).sum()

    assert torch.autograd.gradcheck(fn, (pose, betas), eps=1e-6, atol=1e-6)
    # at the flat hand (every articulation rotation is the identity) the gradient is finite
    flat = torch.cat([torch.zeros(1, 3, dtype=torch.float64), -layer.th_hands_mean], 1).requires_grad_()
    fn(flat, betas).backward()
    assert torch.isfinite(flat.grad).all() and flat.grad.abs().max() > 0
    # float32 layer: gradients reach pose and betas
    layer32 = ManoLayer(mano_file[0])
    p32 = pose.detach().float().requires_grad_()
    b32 = betas.detach().float().requires_grad_()
    v, j = layer32(p32, b32)
    (v.square().sum() + j.square().sum()).backward()
    assert torch.isfinite(p32.grad).all() and p32.grad.abs().min() > 0
    assert torch.isfinite(b32.grad).all() and b32.grad.abs().min() > 0


def test_autocast_runs_in_float32(layer):
    pose = torch.randn(2, 48, generator=torch.Generator().manual_seed(1))
    betas = torch.randn(2, 10, generator=torch.Generator().manual_seed(2))
    v, j = layer(pose, betas)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vb, jb = layer(pose.bfloat16(), betas)
    assert vb.dtype == torch.float32
    torch.testing.assert_close(vb, layer(pose.bfloat16().float(), betas)[0], rtol=0, atol=0)
    assert v.dtype == j.dtype == torch.float32


def test_placeholder_buffers_match_published_contract(fixture_dir, mano_file):
    with open(os.path.join(fixture_dir, "full_model_keys.json")) as fh:
        entries = [e for e in json.load(fh)["state_dict"] if ".mano_layer." in e["key"]]
    with pytest.warns(UserWarning, match="placeholder"):
        ph = ManoLayer(None, warn=True)
    sd = ph.state_dict()
    assert [k.split("mano_layer.")[1] for k in (e["key"] for e in entries)] == list(sd)
    for e in entries:
        t = sd[e["key"].split("mano_layer.")[1]]
        assert list(t.shape) == e["shape"] and str(t.dtype).replace("torch.", "") == e["dtype"], e["key"]
    assert ph.is_placeholder
    v, j = ph(torch.randn(2, 48), torch.randn(2, 10))
    assert v.shape == (2, 778, 3) and j.shape == (2, 21, 3) and torch.isfinite(v).all()
    real = ManoLayer(mano_file[0])
    assert not real.is_placeholder
    ph.load_state_dict(real.state_dict())
    assert not ph.is_placeholder
    pose, betas = torch.randn(2, 48), torch.randn(2, 10)
    torch.testing.assert_close(ph(pose, betas)[0], real(pose, betas)[0], rtol=0, atol=0)


def test_layer_rejects_bad_shapes(layer):
    with pytest.raises(ValueError, match="48"):
        layer(torch.randn(2, 45), torch.randn(2, 10))
    with pytest.raises(ValueError, match="betas"):
        layer(torch.randn(2, 48), torch.randn(3, 10))


# ---------------------------------------------------------------------------------------
# Rotation helpers
# ---------------------------------------------------------------------------------------

def test_axis_angle_to_matrix_matches_scipy():
    g = torch.Generator().manual_seed(0)
    aa = torch.cat([torch.randn(64, 3, generator=g, dtype=torch.float64) * 1.5,
                    torch.randn(4, 3, generator=g, dtype=torch.float64) * 1e-6,
                    torch.zeros(1, 3, dtype=torch.float64)])
    np.testing.assert_allclose(axis_angle_to_matrix(aa).numpy(), Rotation.from_rotvec(aa.numpy()).as_matrix(),
                               atol=1e-12)


def test_matrix_to_axis_angle_round_trip():
    g = torch.Generator().manual_seed(1)
    axis = torch.nn.functional.normalize(torch.randn(200, 3, generator=g, dtype=torch.float64), dim=-1)
    angle = torch.cat([torch.rand(150, generator=g, dtype=torch.float64) * 3.1,
                       torch.pi - torch.rand(25, generator=g, dtype=torch.float64) * 1e-4,  # near pi
                       torch.rand(25, generator=g, dtype=torch.float64) * 1e-5])            # near 0
    aa = axis * angle[:, None]
    R = torch.as_tensor(Rotation.from_rotvec(aa.numpy()).as_matrix())
    back = matrix_to_axis_angle(R)
    np.testing.assert_allclose(axis_angle_to_matrix(back).numpy(), R.numpy(), atol=1e-10)
    ok = angle < 3.0
    np.testing.assert_allclose(back[ok].numpy(), aa[ok].numpy(), atol=1e-10)
    assert (back.norm(dim=-1) <= torch.pi + 1e-9).all()
    # float32 too, and finite gradients at the identity
    eye = torch.eye(3).repeat(2, 1, 1).requires_grad_()
    matrix_to_axis_angle(eye).sum().backward()
    assert torch.isfinite(eye.grad).all()


def test_rot6d_to_matrix_is_gram_schmidt():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    R = rot6d_to_matrix(x)
    np.testing.assert_allclose((R.transpose(1, 2) @ R).numpy(), np.broadcast_to(np.eye(3), (50, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(R).numpy(), np.ones(50), atol=1e-12)
    a1 = x[:, :3] / x[:, :3].norm(dim=1, keepdim=True)
    np.testing.assert_allclose(R[:, :, 0].numpy(), a1.numpy(), atol=1e-12)       # first column = a1/|a1|
    # second column lies in span(a1, a2) with positive a2 component
    assert ((R[:, :, 1] * x[:, 3:]).sum(1) > 0).all()
