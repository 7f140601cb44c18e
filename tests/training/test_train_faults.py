"""SIGKILL in the middle of an epoch and in the middle of a snapshot write, then resume.

The trainer runs in a child process that a fault hook (``HANDS3C_TRAIN_FAULT``) kills at a
fixed point, so the test is deterministic: ``kill-after-step:N`` after optimizer step N,
``snapshot-write:N`` once half of ``snapshot_N.pth.tar``'s bytes reached its temporary file.
The children start from a copy of the reference run's first snapshot (epoch 1 of 2 done),
so each stage costs one or two steps.
"""
import os
import shutil

import torch

from train_helpers import ContractDataset, base_config, final_state, run_child

from handS3C.training import list_snapshots, train


def test_sigkill_mid_epoch_then_mid_snapshot_write_then_resume(reference_run, mano_file, tmp_path):
    ref_out, _, _ = reference_run
    out = tmp_path / "run"
    os.makedirs(out)
    for name in ("snapshot_1.pth.tar", "snapshot_1.pth.tar.sha256", "log.jsonl"):
        shutil.copy(os.path.join(ref_out, name), out / name)
    cfg = base_config(out, mano_file)
    snap1 = open(out / "snapshot_1.pth.tar", "rb").read()

    # 1. killed after step 3, the first step of epoch 2: nothing beyond snapshot_1 exists
    p = run_child(cfg, {"n": 4}, {"HANDS3C_TRAIN_FAULT": "kill-after-step:3"})
    assert p.returncode == -9, p.stdout[-2000:] + p.stderr[-2000:]
    assert "continuing from" in p.stdout and "snapshot_1.pth.tar" in p.stdout
    assert [e for e, _ in list_snapshots(out)] == [1]

    # 2. resumed, it redoes epoch 2 and is killed half-way through writing snapshot_2
    p = run_child(cfg, {"n": 4}, {"HANDS3C_TRAIN_FAULT": "snapshot-write:2"})
    assert p.returncode == -9, p.stdout[-2000:] + p.stderr[-2000:]
    leftovers = [n for n in os.listdir(out) if n.startswith(".snapshot_2.pth.tar.tmp-")]
    assert len(leftovers) == 1 and 0 < os.path.getsize(out / leftovers[0])
    assert [e for e, _ in list_snapshots(out)] == [1]          # the torn bytes never got the final name
    assert open(out / "snapshot_1.pth.tar", "rb").read() == snap1

    # 3. resumed again (in this process): snapshot_1 is used, the half-written file is never
    # read and is cleaned up, and the result is the uninterrupted run's, bit for bit
    msgs = []
    summary = train(cfg, train_dataset=ContractDataset(4), log=msgs.append)
    assert summary["resumed_from"].endswith("snapshot_1.pth.tar") and summary["step"] == 4
    assert not any(n.startswith(".snapshot_") for n in os.listdir(out))
    got, want = final_state(out, 2), final_state(ref_out, 2)
    assert [k for k in want["network"] if not torch.equal(got["network"][k], want["network"][k])] == []
    for pid, st in want["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg"], got["optimizer"]["state"][pid]["exp_avg"])
        assert torch.equal(st["exp_avg_sq"], got["optimizer"]["state"][pid]["exp_avg_sq"])
