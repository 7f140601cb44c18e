"""The training loop on CPU: outputs of a fresh run, bitwise resume, resume modes,
non-finite losses, data loader failures, bf16 autocast."""
import json
import os
import shutil

import pytest
import torch

from train_helpers import ContractDataset, base_config, final_state

from handS3C.training import (DataLoaderWorkerError, NonFiniteLossError, list_snapshots, read_snapshot, train)


def _same_state(a, b):
    """Network tensors and optimizer state bitwise equal; returns the names that differ."""
    diff = [k for k in a["network"] if not torch.equal(a["network"][k], b["network"][k])]
    for pid, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and not torch.equal(v, b["optimizer"]["state"][pid][k]):
                diff.append(f"optimizer[{pid}].{k}")
    return diff


def test_fresh_run_writes_published_snapshots_logs_and_curves(reference_run, mano_file):
    out, summary, msgs = reference_run
    assert [e for e, _ in list_snapshots(out)] == [1, 2]
    assert summary["step"] == 4 and summary["resumed_from"] is None
    snap = final_state(out, 2)
    # the published layout: 0-based epoch of the last completed epoch, 'module.' keys, Adam state
    assert snap["epoch"] == 1
    assert all(k.startswith("module.") for k in snap["network"])
    assert set(snap["optimizer"]) == {"state", "param_groups"} and snap["optimizer"]["state"]
    assert snap["hands3c"]["step"] == 4 and snap["hands3c"]["completed_epochs"] == 2
    # what the published tester does (strict here) works on it
    import handS3C
    model = handS3C.HandS3C(input_size=224, backend="cpu", mano_model_path=mano_file)
    report = handS3C.load_published_checkpoint(model, os.path.join(out, "snapshot_2.pth.tar"))
    assert report.ok and report.epoch == 1
    # the loss went somewhere and every step is logged with the published term names
    records = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    steps = [r for r in records if r["type"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert set(steps[0]["loss"]) == {"mano_verts", "mano_joints", "mano_pose", "mano_shape", "joints_img", "total"}
    assert all(r["images_per_s"] > 0 and r["data_s"] >= 0 and r["compute_s"] > 0 for r in steps)
    evals = [r for r in records if r["type"] == "eval"]
    assert len(evals) == 1 and evals[0]["epoch"] == 2 and evals[0]["metrics"]["pa_mpjpe_mm"] > 0
    best = json.load(open(os.path.join(out, "best.json")))
    assert best == {"epoch": 2, "metric": "pa_mpjpe_mm", "value": evals[0]["metrics"]["pa_mpjpe_mm"],
                    "file": "snapshot_2.pth.tar"}
    with open(os.path.join(out, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.load(open(os.path.join(out, "config.json")))["batch_size"] == 2
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(out, "tensorboard")))
    assert any(m.startswith("effective training config") for m in msgs)


def test_resume_is_bitwise_and_skips_a_torn_newest_snapshot(reference_run, mano_file, tmp_path):
    """A new trainer resumes from the reference run's first snapshot: a truncated newest
    snapshot beside it is detected, reported and passed over, the lost epoch is redone, and
    the run ends with the uninterrupted run's parameters and Adam moments, bit for bit."""
    ref_out, _, _ = reference_run
    out = tmp_path / "run"
    os.makedirs(out)
    for name in ("snapshot_1.pth.tar", "snapshot_1.pth.tar.sha256"):
        shutil.copy(os.path.join(ref_out, name), out / name)
    shutil.copy(os.path.join(ref_out, "log.jsonl"), out / "log.jsonl")
    data = open(os.path.join(ref_out, "snapshot_2.pth.tar"), "rb").read()
    with open(out / "snapshot_2.pth.tar", "wb") as f:
        f.write(data[: len(data) // 3])        # no digest file: the archive itself is torn
    msgs = []
    summary = train(base_config(out, mano_file), train_dataset=ContractDataset(4), log=msgs.append)
    assert summary["resumed_from"].endswith("snapshot_1.pth.tar")
    assert any("skipping snapshot_2.pth.tar" in m for m in msgs)
    assert any("using snapshot_1.pth.tar instead" in m for m in msgs)
    assert _same_state(final_state(out, 2), final_state(ref_out, 2)) == []
    # the log reads as one run (the records past snapshot_1 were dropped, then rewritten)
    steps = [json.loads(line)["step"] for line in open(out / "log.jsonl") if '"type": "step"' in line]
    assert steps == [1, 2, 3, 4]


def test_resume_modes(reference_run, mano_file, tmp_path):
    ref_out, _, _ = reference_run
    with pytest.raises(ValueError, match="already holds snapshots"):
        train(base_config(ref_out, mano_file, resume="never"), train_dataset=ContractDataset(4))
    with pytest.raises(FileNotFoundError, match="snapshot not found"):
        train(base_config(tmp_path / "a", mano_file, resume=str(tmp_path / "nope.pth.tar")),
              train_dataset=ContractDataset(4))
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"not a zip archive at all")
    with pytest.raises(ValueError, match="unreadable"):
        train(base_config(tmp_path / "b", mano_file, resume=str(bad)), train_dataset=ContractDataset(4))
    # a finished run resumed with the same epochs has nothing left to do
    out = tmp_path / "done"
    shutil.copytree(ref_out, out)
    summary = train(base_config(out, mano_file, resume=str(out / "snapshot_2.pth.tar")),
                    train_dataset=ContractDataset(4), log=lambda m: None)
    assert summary["step"] == 4 and summary["resumed_from"].endswith("snapshot_2.pth.tar")
    with pytest.raises(ValueError, match="input_size=224"):
        train(base_config(out, mano_file, input_size=256), train_dataset=ContractDataset(4, size=256))


def test_nonfinite_loss_stops_naming_step_and_term(mano_file, tmp_path):
    ds = ContractDataset(2, nan_index=1)        # batch 1: step 1 fine, step 2 has a NaN shape
    cfg = base_config(tmp_path / "a", mano_file, batch_size=1, epochs=1)
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*mano_verts = nan.*samples \[1\].*--skip-nonfinite"):
        train(cfg, train_dataset=ds, log=lambda m: None)  # seed 0 orders the 2 samples [0, 1]
    msgs = []
    summary = train(cfg.replace(out=str(tmp_path / "b"), skip_nonfinite=True), train_dataset=ds,
                    log=msgs.append)
    assert summary["skipped_batches"] == 1 and summary["step"] == 1
    assert any("batch skipped (1 skipped so far)" in m for m in msgs)
    assert read_snapshot(os.path.join(tmp_path / "b", "snapshot_1.pth.tar"))["hands3c"]["skipped_batches"] == 1


def test_check_finite_names_the_stage_step_and_sample(mano_file, tmp_path):
    ds = ContractDataset(2, inf_image_index=1)
    cfg = base_config(tmp_path / "a", mano_file, batch_size=1, epochs=1, check_finite=True)
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*the input images are not finite.*samples \[1\]"):
        train(cfg, train_dataset=ds, log=lambda m: None)
    # without the check the infinite pixel reaches the loss, which stops the run as non-finite
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*--skip-nonfinite"):
        train(cfg.replace(out=str(tmp_path / "b"), check_finite=False), train_dataset=ds, log=lambda m: None)


def test_dead_loader_worker_names_the_sample(mano_file, tmp_path):
    cfg = base_config(tmp_path / "a", mano_file, batch_size=4, epochs=1, workers=1)
    with pytest.raises(DataLoaderWorkerError, match=r"was loading sample 2 of ContractDataset"):
        train(cfg, train_dataset=ContractDataset(4, kill_index=2), log=lambda m: None)


def test_bf16_autocast_on_cpu_and_fp16_refused(mano_file, tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        train(base_config(tmp_path / "a", mano_file, amp="fp16"), train_dataset=ContractDataset(2))
    summary = train(base_config(tmp_path / "b", mano_file, amp="bf16", epochs=1, batch_size=2),
                    train_dataset=ContractDataset(2), log=lambda m: None)
    assert summary["step"] == 1 and all(v == v and v < float("inf") for v in summary["final_losses"].values())
