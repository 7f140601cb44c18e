"""Loading published HandS3C snapshots: prefixes, the old SSCA name, strictness, errors."""
import copy

import pytest
import torch

from handS3C.model.checkpoint import CheckpointLoadReport, CheckpointMismatchError, load_published_checkpoint
from handS3C.model import HandS3C
from model_helpers import make_model, write_fake_mano


class _NotATensor:
    """A custom object: a file holding it cannot be read with weights_only=True."""

    def __init__(self):
        self.value = 3


@pytest.fixture(scope="module")
def mano_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("mano") / "MANO_RIGHT.pkl"
    write_fake_mano(p, seed=31)
    return p


@pytest.fixture(scope="module")
def source(mano_path):
    """The model whose weights the snapshots hold (randomised, with real synthetic MANO)."""
    return make_model(256, "reference", mano_path, seed=7)


@pytest.fixture(scope="module")
def snapshot(source, tmp_path_factory):
    """A snapshot in the published layout: epoch, DataParallel 'module.' keys, Adam state."""
    model = copy.deepcopy(source)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    opt.step()
    with torch.no_grad():  # keep the network equal to ``source``
        for p, q in zip(model.parameters(), source.parameters()):
            p.copy_(q)
    path = tmp_path_factory.mktemp("ckpt") / "snapshot_10.pth.tar"
    torch.save({"epoch": 9, "network": {"module." + k: v for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict()}, path)
    return path


def _fresh():
    with pytest.warns(UserWarning, match="placeholder"):
        return HandS3C(256, backend="reference")


def _network(source, rename=None):
    sd = {}
    for k, v in source.state_dict().items():
        if rename and k.startswith(rename[0]):
            k = rename[1] + k[len(rename[0]):]
        sd["module." + k] = v.clone()
    return sd


def _assert_equal_state(a, b, keys=None):
    sa, sb = a.state_dict(), b.state_dict()
    for k in keys or sa:
        assert torch.equal(sa[k], sb[k]), k


def test_published_snapshot_loads(source, snapshot):
    model = _fresh()
    assert model.mano_layer.is_placeholder
    before = model.backbone.toplayer.weight.clone()
    report = load_published_checkpoint(model, snapshot)
    assert isinstance(report, CheckpointLoadReport) and report.ok
    assert report.epoch == 9 and len(report.loaded) == 715 and not report.unmatched
    assert report.renamed["module.S3C.ln_1.weight"] == "S3C.ln_1.weight"
    assert not torch.equal(before, model.backbone.toplayer.weight)
    _assert_equal_state(model, source)
    # the checkpoint carries the MANO arrays: the placeholder layer became the real one
    assert not model.mano_layer.is_placeholder
    pose, betas = torch.randn(2, 48), torch.randn(2, 10)
    torch.testing.assert_close(model.mano_layer(pose, betas)[0], source.mano_layer(pose, betas)[0], rtol=0, atol=0)


def test_old_ssca_name_and_bare_state_dict(source, tmp_path):
    p = tmp_path / "ssca.pth.tar"
    torch.save({"epoch": 0, "network": _network(source, ("S3C.", "SSCA.")), "optimizer": {}}, p)
    model = _fresh()
    report = load_published_checkpoint(model, p)
    assert report.ok and report.renamed["module.SSCA.self_attention.A_logs"] == "S3C.self_attention.A_logs"
    _assert_equal_state(model, source)
    bare = tmp_path / "bare.pth"
    torch.save(source.state_dict(), bare)
    model = _fresh()
    report = load_published_checkpoint(model, bare)
    assert report.ok and report.epoch is None and not report.renamed
    _assert_equal_state(model, source)


def _save(tmp_path, network, name="bad.pth.tar"):
    p = tmp_path / name
    torch.save({"epoch": 3, "network": network}, p)
    return p


def test_mismatches_are_all_reported_and_nothing_loads(source, tmp_path):
    net = _network(source)
    net["module.regressor.mano_regHead.pose_reg.weight"] = torch.randn(90, 512)      # wrong shape
    del net["module.backbone.layer3.0.4.bn2.running_var"]                          # missing
    net["module.regressor.extra_head.weight"] = torch.randn(3)                     # unexpected
    p = _save(tmp_path, net)
    model = _fresh()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CheckpointMismatchError) as ei:
        load_published_checkpoint(model, p)
    msg = str(ei.value)
    assert "regressor.mano_regHead.pose_reg.weight" in msg and "(90, 512)" in msg and "(96, 512)" in msg
    assert "backbone.layer3.0.4.bn2.running_var" in msg
    assert "module.regressor.extra_head.weight" in msg
    assert str(p) in msg
    assert isinstance(ei.value, ValueError)
    rep = ei.value.report
    assert rep.missing == ["backbone.layer3.0.4.bn2.running_var"]
    assert rep.unexpected == ["module.regressor.extra_head.weight"]
    assert rep.mismatched == [("module.regressor.mano_regHead.pose_reg.weight", (90, 512), (96, 512))]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "strict mode must not load anything"


@pytest.mark.parametrize("case", ["shape", "drop", "add"])
def test_each_single_problem_names_its_key(source, tmp_path, case):
    net = _network(source)
    key = "module.S3C.self_attention.Ds_ch"
    if case == "shape":
        net[key] = torch.randn(112)
    elif case == "drop":
        del net[key]
    else:
        key = "module.S3C.self_attention.extra"
        net[key] = torch.randn(1)
    with pytest.raises(CheckpointMismatchError, match=key.replace("module.", "") if case == "drop" else key):
        load_published_checkpoint(_fresh(), _save(tmp_path, net))


def test_non_strict_loads_matching_and_reports_the_rest(source, tmp_path):
    net = _network(source)
    net["module.S3C.self_attention.Ds"] = torch.randn(7)
    del net["module.regressor.hand_regHead.betas"]
    net["module.unknown.weight"] = torch.randn(2)
    model = _fresh()
    betas_before = model.regressor.hand_regHead.betas.clone()
    ds_before = model.S3C.self_attention.Ds.clone()
    with pytest.warns(UserWarning, match="loaded 713 of 715"):
        report = load_published_checkpoint(model, _save(tmp_path, net), strict=False)
    assert not report.ok
    assert report.unmatched == sorted(["module.S3C.self_attention.Ds", "regressor.hand_regHead.betas",
                                       "module.unknown.weight"])
    assert len(report.loaded) == 713
    assert torch.equal(model.regressor.hand_regHead.betas, betas_before)
    assert torch.equal(model.S3C.self_attention.Ds, ds_before)
    _assert_equal_state(model, source, keys=report.loaded)


def test_duplicate_after_renaming(source, tmp_path):
    net = _network(source)
    net["module.SSCA.ln_1.weight"] = net["module.S3C.ln_1.weight"].clone()
    with pytest.raises(CheckpointMismatchError, match="duplicate.*SSCA.ln_1.weight"):
        load_published_checkpoint(_fresh(), _save(tmp_path, net))


def test_file_errors(source, tmp_path):
    model = _fresh()
    missing = tmp_path / "nowhere" / "snapshot_80.pth.tar"
    with pytest.raises(FileNotFoundError, match="snapshot_80"):
        load_published_checkpoint(model, missing)
    txt = tmp_path / "readme.txt"
    txt.write_text("this is not a checkpoint")
    with pytest.raises(ValueError, match="readme.txt"):
        load_published_checkpoint(model, txt)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="junk.pth"):
        load_published_checkpoint(model, junk)
    lst = tmp_path / "list.pth"
    torch.save([torch.ones(2)], lst)
    with pytest.raises(ValueError, match="list.pth.*not a HandS3C checkpoint"):
        load_published_checkpoint(model, lst)
    opt_only = tmp_path / "opt.pth"
    torch.save({"epoch": 1, "optimizer": {}}, opt_only)
    with pytest.raises(ValueError, match="opt.pth.*'network'"):
        load_published_checkpoint(model, opt_only)
    notens = tmp_path / "notens.pth"
    torch.save({"network": {"backbone.toplayer.bias": [1.0, 2.0]}}, notens)
    with pytest.raises(ValueError, match="backbone.toplayer.bias"):
        load_published_checkpoint(model, notens)
    nan = tmp_path / "diverged.pth"
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["S3C.self_attention.A_logs"][3, 2] = float("nan")
    sd["regressor.hand_regHead.fc.0.block.0.bias"][0] = float("inf")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"network": sd, "epoch": 3}, nan)
    with pytest.raises(ValueError, match=r"diverged.pth.*NaN or infinite.*S3C.self_attention.A_logs") as ei:
        load_published_checkpoint(model, nan, strict=False)
    assert "regressor.hand_regHead.fc.0.block.0.bias" in str(ei.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded


def test_unsafe_pickle_needs_trust(source, tmp_path):
    p = tmp_path / "objects.pth.tar"
    torch.save({"epoch": 2, "network": _network(source), "extra": _NotATensor()}, p)
    model = _fresh()
    with pytest.raises(ValueError, match="trust_file"):
        load_published_checkpoint(model, p)
    assert model.mano_layer.is_placeholder
    report = load_published_checkpoint(model, p, trust_file=True)
    assert report.ok and report.epoch == 2
    _assert_equal_state(model, source)
