"""Clear errors at the model's edges: where torch's own message (from a convolution, from deep
inside the S3C block, from a dict lookup) used to be what a user saw, one error now names the
argument and what is expected.  Also the opt-in ``check_finite`` of ``HandS3C.forward`` and the
checkpoint loader's dtype handling (casts listed, integer tensors for floating-point parameters
refused)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import handS3C
from handS3C.model.checkpoint import CheckpointMismatchError, load_published_checkpoint
from handS3C.model.hands3c import NonFiniteError

SIZE = 224


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = handS3C.HandS3C(input_size=SIZE, backend="cpu").eval()
    return m


@pytest.fixture(scope="module")
def images():
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def outputs(model, images):
    with torch.no_grad():
        return model(images)


def targets(batch=1, **over):
    g = torch.Generator().manual_seed(2)
    t = dict(pose=0.1 * torch.randn(batch, 48, generator=g), shape=0.1 * torch.randn(batch, 10, generator=g),
             joints2d=torch.rand(batch, 21, 2, generator=g))
    t.update(over)
    return t


# ---- images ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_images_of_another_float_dtype_outside_autocast(model, images, dtype):
    """Was: 'expected scalar type Double but found Float' from the first convolution."""
    with pytest.raises(TypeError, match=rf"HandS3C: images are {str(dtype)[6:]} but the model is float32.*autocast"):
        model(images.to(dtype))


def test_images_in_bfloat16_under_autocast_are_accepted(model, images):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images.to(torch.bfloat16))
    assert out["verts"].shape == (1, 778, 3) and bool(torch.isfinite(out["verts"]).all())


def test_empty_batch(model):
    """Was: an error from inside the S3C block quoting an internal (0, ...) shape."""
    with pytest.raises(ValueError, match=r"HandS3C: images is an empty batch \(shape \(0, 3, 224, 224\)\)"):
        model(torch.rand(0, 3, SIZE, SIZE))


def test_images_on_another_device(model, images):
    with pytest.raises(ValueError, match="HandS3C: images are on meta but the model is on cpu"):
        model(images.to("meta"))


@pytest.mark.parametrize("bad", [torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8), [[0.0]]])
def test_images_of_the_wrong_kind(model, bad):
    with pytest.raises((TypeError, ValueError), match="HandS3C: (images must be floating point|expected images)"):
        model(bad)


# ---- loss ----------------------------------------------------------------------------------------

def test_loss_without_targets(model, outputs):
    """Was: "argument of type 'NoneType' is not iterable"."""
    with pytest.raises(TypeError, match=r"HandS3C.loss: targets must be a dict with 'pose' \(B, 48\).*got NoneType"):
        model.loss(outputs, None)


def test_loss_without_outputs(model):
    with pytest.raises(TypeError, match="HandS3C.loss: outputs must be the dict HandS3C.forward returns, got list"):
        model.loss([], targets())
    with pytest.raises(KeyError, match="outputs lacks the tensor 'pose_rotmat'"):
        model.loss({"verts": torch.zeros(1, 778, 3), "joints3d": torch.zeros(1, 21, 3)}, targets())


def test_loss_targets_on_another_device(model, outputs):
    bad = targets(pose=targets()["pose"].to("meta"))
    with pytest.raises(ValueError, match=r"HandS3C.loss: targets\['pose'\] is on meta but the outputs are on cpu"):
        model.loss(outputs, bad)


def test_loss_integer_targets(model, outputs):
    bad = targets(joints2d=torch.zeros(1, 21, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"targets\['joints2d'\] must be floating point, got torch.int64"):
        model.loss(outputs, bad)


def test_loss_still_works(model, outputs):
    losses = model.loss(outputs, targets())
    assert set(losses) == {"mano_verts", "mano_joints", "mano_pose", "mano_shape", "joints_img", "total"}
    assert bool(torch.isfinite(losses["total"])) and float(losses["total"]) > 0


# ---- raw merge operator given float64 weights ----------------------------------------------------

def test_merge_float64_weights(model):
    y = torch.randn(2, 5, 8)
    w, b = torch.ones(8, dtype=torch.float64), torch.zeros(8)
    with pytest.raises(TypeError, match="hands3c::s3c_merge_fwd: weight must be float32, got Double"):
        torch.ops.hands3c.s3c_merge_fwd(y, y, y, w, b, 1e-5)
    with pytest.raises(TypeError, match="s3c_merge: norm_weight must have dtype in"):
        handS3C.ops.s3c_merge(y, y, y, w, b)


# ---- check_finite --------------------------------------------------------------------------------

def test_check_finite_passes_finite_runs_unchanged(model, images, outputs):
    with torch.no_grad():
        out = model(images, check_finite=True)
    for k in outputs:
        assert torch.equal(out[k], outputs[k]), k


def test_check_finite_names_the_input(model, images):
    bad = images.clone()
    bad[0, 1, 3, 4] = float("nan")
    with torch.no_grad(), pytest.raises(NonFiniteError, match="the input images are not finite") as info:
        model(bad, check_finite=True)
    assert info.value.stage == "images"
    with torch.no_grad():
        assert not bool(torch.isfinite(model(bad)["verts"]).all())  # opt-in: off by default


@pytest.mark.parametrize("stage,param", [("backbone", "backbone"), ("S3C", "S3C"),
                                          ("regressor", "regressor.hand_regHead")])
def test_check_finite_names_the_first_non_finite_stage(model, images, stage, param):
    """A NaN weight in one stage: the error names that stage (every earlier one is finite)."""
    name, p = next((n, p) for n, p in model.named_parameters() if n.startswith(param) and p.dim() > 1)
    saved = p.detach().clone()
    try:
        with torch.no_grad():
            p.view(-1)[0] = float("inf") if stage == "S3C" else float("nan")
            with pytest.raises(NonFiniteError, match=f"the output of {stage}") as info:
                model(images, check_finite=True)
    finally:
        with torch.no_grad():
            p.copy_(saved)
    assert info.value.stage.startswith(stage), (name, info.value.stage)


# ---- checkpoint dtypes ---------------------------------------------------------------------------

class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)


def _save(tmp_path, sd):
    path = tmp_path / "snap.pth.tar"
    torch.save({"network": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, path)
    return path


def test_checkpoint_float64_entries_are_cast_and_listed(tmp_path):
    src = _Tiny()
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    sd["fc.weight"] = sd["fc.weight"].double() + 1e-12
    model = _Tiny()
    report = load_published_checkpoint(model, _save(tmp_path, sd))
    assert report.ok and report.casts == [("module.fc.weight", "float64", "float32")]
    assert "cast to the model's dtype (1): module.fc.weight float64 -> float32" in report.summary()
    assert torch.equal(model.fc.weight, sd["fc.weight"].float())


def test_checkpoint_integer_tensor_for_a_float_parameter_is_refused(tmp_path):
    sd = {k: v.clone() for k, v in _Tiny().state_dict().items()}
    sd["fc.bias"] = torch.arange(4, dtype=torch.int32)
    sd["bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.int32)  # integer -> integer: a cast
    model = _Tiny()
    before = model.fc.bias.detach().clone()
    with pytest.raises(CheckpointMismatchError, match=r"dtype refused \(1\): module.fc.bias checkpoint int32 vs "
                                                      r"model float32") as info:
        load_published_checkpoint(model, _save(tmp_path, sd))
    assert torch.equal(model.fc.bias, before)  # strict: nothing loaded
    report = info.value.report
    assert report.casts == [("module.bn.num_batches_tracked", "int32", "int64")]
    with pytest.warns(UserWarning, match="dtype refused"):
        report = load_published_checkpoint(model, _save(tmp_path, sd), strict=False)
    assert report.unmatched == ["module.fc.bias"] and torch.equal(model.fc.bias, before)
    assert int(model.bn.num_batches_tracked) == 7
