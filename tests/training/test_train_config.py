"""Typed per-dataset configs, the command line's parser, and snapshot bookkeeping (no model)."""
import io
import json
import os

import pytest
import torch

from handS3C.cli import build_parser
from handS3C.training import PUBLISHED, TrainConfig, config_for, list_snapshots, load_newest_valid, read_snapshot
from handS3C.training.snapshot import SnapshotError, prune_snapshots, save_snapshot


def test_published_schedules():
    ho3d, dex, frei = (config_for(d, "o") for d in ("ho3d", "dexycb", "freihand"))
    for c in (ho3d, dex, frei):
        assert (c.lr, c.batch_size, c.weight_decay, c.resume) == (1e-4, 64, 0.0, "auto")
    assert (ho3d.epochs, ho3d.lr_step_epochs, ho3d.lr_gamma, ho3d.input_size) == (80, 10, 0.7, 256)
    assert (dex.epochs, dex.lr_step_epochs, dex.lr_gamma, dex.input_size) == (20, 1, 0.9, 256)
    assert (frei.epochs, frei.lr_step_epochs, frei.lr_gamma, frei.input_size) == (100, 10, 0.7, 224)
    # the schedule those numbers give: HO3D's lr after 79 epochs is 1e-4 * 0.7^7
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=ho3d.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, ho3d.lr_step_epochs, ho3d.lr_gamma)
    lrs = []
    for _ in range(ho3d.epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[9] == pytest.approx(1e-4) and lrs[10] == pytest.approx(7e-5) and lrs[79] == pytest.approx(1e-4 * 0.7 ** 7)
    assert set(PUBLISHED) == {"ho3d", "dexycb", "freihand"}


def test_precedence_file_then_flags(tmp_path):
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"epochs": 7, "batch-size": 16, "lr": 3e-4}))
    c = config_for("ho3d", "o", file=str(js), lr=5e-4, epochs=None)
    assert (c.epochs, c.batch_size, c.lr, c.lr_gamma) == (7, 16, 5e-4, 0.7)
    toml = tmp_path / "c.toml"
    toml.write_text('epochs = 3\namp = "bf16"\n')
    assert config_for("dexycb", "o", file=str(toml)).amp == "bf16"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(ValueError, match=r"unknown keys \['epoch'\]"):
        config_for("ho3d", "o", file=str(bad))
    with pytest.raises(ValueError, match="differs from --dataset"):
        (tmp_path / "d.json").write_text(json.dumps({"dataset": "freihand"}))
        config_for("ho3d", "o", file=str(tmp_path / "d.json"))
    with pytest.raises(FileNotFoundError, match="--config"):
        config_for("ho3d", "o", file=str(tmp_path / "missing.json"))


@pytest.mark.parametrize("field,value,msg", [
    ("batch_size", 0, "batch_size must be a positive integer"),
    ("amp", "fp8", "amp must be one of"),
    ("memory_format", "nhwc", "memory_format must be one of"),
    ("lr", -1.0, "lr must be a positive number"),
    ("lr_gamma", 1.5, r"lr_gamma must be a number in \(0, 1\]"),
    ("input_size", 300, "input_size must be 224 or 256"),
    ("accumulate", 3, r"batch_size \(64\) must be a multiple of accumulate \(3\)"),
    ("dataset", "coco", "dataset must be one of"),
])
def test_validation_names_the_field(field, value, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**{"dataset": "ho3d", "out": "o", field: value}).validate()


def test_cli_train_parser_has_every_flag_with_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    flags = {s for a in sub._actions for s in a.option_strings}
    for f in ("--dataset", "--data-root", "--mano-model-path", "--out", "--backbone-weights", "--epochs",
              "--batch-size", "--lr", "--amp", "--backend", "--workers", "--resume", "--eval-every", "--seed",
              "--config", "--skip-nonfinite", "--keep", "--accumulate", "--memory-format"):
        assert f in flags, f
    assert all(a.help for a in sub._actions)
    args = parser.parse_args(["train", "--dataset", "dexycb", "--data-root", "d", "--mano-model-path", "m",
                              "--out", "o", "--amp", "bf16", "--epochs", "2"])
    assert args.func.__module__ == "handS3C.cli.train" and args.epochs == 2 and args.lr is None
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--dataset", "dexycb", "--data-root", "d", "--mano-model-path", "m",
                           "--out", "o", "--epochs", "0"])


def _fake_state(step, value=1.0):
    return {"epoch": step - 1, "network": {"module.w": torch.full((3, 5), value)},
            "optimizer": {"state": {}, "param_groups": []}, "hands3c": {"step": step}}


def test_snapshot_bookkeeping(tmp_path):
    for e in (1, 2, 9, 10):
        save_snapshot(str(tmp_path), e, _fake_state(e, float(e)))
    assert [e for e, _ in list_snapshots(str(tmp_path))] == [1, 2, 9, 10]      # numeric, not lexical
    assert read_snapshot(str(tmp_path / "snapshot_10.pth.tar"))["hands3c"]["step"] == 10
    # a flipped byte is caught by the digest, and the previous snapshot is used, with a message
    p = tmp_path / "snapshot_10.pth.tar"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="do not match"):
        read_snapshot(str(p))
    msgs = []
    path, state = load_newest_valid(str(tmp_path), log=msgs.append)
    assert path.endswith("snapshot_9.pth.tar") and state["hands3c"]["step"] == 9
    assert any("skipping snapshot_10.pth.tar" in m for m in msgs)
    # a checkpoint of something else is refused, naming what it holds
    buf = io.BytesIO()
    torch.save({"network": {}}, buf)
    (tmp_path / "other.pth.tar").write_bytes(buf.getvalue())
    with pytest.raises(SnapshotError, match="not a training snapshot"):
        read_snapshot(str(tmp_path / "other.pth.tar"))
    # keep-K spares the protected (best) snapshot and removes leftovers of torn writes
    (tmp_path / ".snapshot_11.pth.tar.tmp-123").write_bytes(b"half")
    removed = prune_snapshots(str(tmp_path), keep=2, protect=str(tmp_path / "snapshot_1.pth.tar"))
    assert sorted(os.path.basename(r) for r in removed) == ["snapshot_2.pth.tar", "snapshot_2.pth.tar.sha256"]
    assert [e for e, _ in list_snapshots(str(tmp_path))] == [1, 9, 10]
    assert not (tmp_path / ".snapshot_11.pth.tar.tmp-123").exists()
