"""DistributedDataParallel on CPU: two gloo processes under torchrun on the same global batch
end with the parameters of one process, and a two-process run resumes from its snapshot.

BatchNorm normalises over each process's own batch (as DataParallel and DDP without
SyncBatchNorm do), so the one-process run that matches splits each batch of 2 into two
micro-batches of 1 (``accumulate=2``): the same per-sample statistics and the same mean
gradient.  Only the summation order of the gradient all-reduce differs, hence a float32
tolerance rather than bitwise equality.
"""
import torch

from train_helpers import ContractDataset, base_config, final_state, run_child

from handS3C.training import train


def test_two_gloo_processes_match_one_and_resume(mano_file, tmp_path):
    ddp_out = tmp_path / "ddp"
    # the same thread count as the one-process run: oneDNN convolutions sum in a thread-dependent
    # order, and MaxPool/LeakyReLU switches turn that rounding into ~1% gradient differences
    cfg = base_config(ddp_out, mano_file, batch_size=1, epochs=1, threads=2)
    p = run_child(cfg, {"n": 2}, nproc=2)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(x.name for x in ddp_out.iterdir() if x.name.startswith("snapshot_")) == [
        "snapshot_1.pth.tar", "snapshot_1.pth.tar.sha256"]
    p = run_child(cfg.replace(epochs=2), {"n": 2}, nproc=2)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "continuing from" in p.stdout
    snap = final_state(ddp_out, 2)
    assert snap["hands3c"]["world_size"] == 2 and len(snap["hands3c"]["rng"]) == 2
    assert snap["hands3c"]["step"] == 2

    one_out = tmp_path / "one"
    train(base_config(one_out, mano_file, batch_size=2, accumulate=2, epochs=2), train_dataset=ContractDataset(2),
          log=lambda m: None)
    one = final_state(one_out, 2)
    import handS3C
    torch.manual_seed(0)       # the trainer's initial weights (seed 0)
    init = handS3C.HandS3C(input_size=224, backend="cpu", mano_model_path=mano_file).state_dict()
    names = ["module." + n for n, _ in handS3C.HandS3C(input_size=224).named_parameters()]
    diff = max(float((snap["network"][k] - one["network"][k]).abs().max()) for k in names)
    moved = max(float((one["network"][k] - init[k[len("module."):]]).abs().max()) for k in names)
    print(f"largest DDP vs one-process difference {diff:.3g}, largest update {moved:.3g}")
    # two Adam steps at lr 1e-3 move parameters by up to ~2e-3; a wrong reduction (a sum instead
    # of the mean, a missing all-reduce, another sample order) moves them apart by that much
    assert moved > 1e-3
    assert diff < 1e-6
