"""The whole path on a synthetic FreiHAND dataset on disk: ``hands3c train`` (CPU, small
batch, a few epochs at a high learning rate) halves the total loss and lowers PA-MPJPE on the
training samples, then ``hands3c evaluate`` scores the trained snapshot."""
import json
import os

import torch

from handS3C.cli import main as cli

N_UNIQUE = 2          # FreiHAND: 4 images (versions) per unique sample -> 8 training images
EPOCHS = 6
BATCH = 4


def _pa_mpjpe_on_train(root, mano, state=None):
    import handS3C
    from handS3C.data import FreiHAND
    from handS3C.evaluation.loop import evaluate_model
    torch.manual_seed(0)                      # the trainer's initial weights (seed 0)
    model = handS3C.HandS3C(input_size=224, backend="cpu", mano_model_path=mano)
    ds = FreiHAND(root, split="train", input_size=224)
    return float(evaluate_model(model, ds, batch_size=8, protocol="freihand", progress=False,
                                keep_predictions=False).metrics["pa_mpjpe_mm"])


def test_train_then_evaluate_synthetic_freihand(tmp_path, capsys):
    from handS3C.data import make_synthetic
    root = tmp_path / "frei"
    info = make_synthetic("freihand", root, n=N_UNIQUE, n_eval=2, seed=5, progress=False)
    mano = info["mano_model_path"]
    out = tmp_path / "run"
    before = _pa_mpjpe_on_train(str(root), mano)
    status = cli(["train", "--dataset", "freihand", "--data-root", str(root), "--mano-model-path", mano,
                  "--out", str(out), "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--lr", "1e-3",
                  "--workers", "0", "--eval-every", str(EPOCHS), "--no-augment", "--backend", "cpu",
                  "--device", "cpu", "--log-every", "1", "--no-progress", "--threads", "2"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "effective training config" in printed and f'"epochs": {EPOCHS}' in printed and "hands3c train: done" in printed
    records = [json.loads(line) for line in open(out / "log.jsonl")]
    steps = [r for r in records if r["type"] == "step"]
    assert len(steps) == EPOCHS * (4 * N_UNIQUE // BATCH)
    first, last = steps[0]["loss"]["total"], steps[-1]["loss"]["total"]
    assert last <= 0.5 * first, (first, last)
    snap = out / f"snapshot_{EPOCHS}.pth.tar"
    # the trained network scores better on the samples it was trained on
    import handS3C
    from handS3C.data import FreiHAND
    from handS3C.evaluation.loop import evaluate_model
    model = handS3C.HandS3C(input_size=224, backend="cpu", mano_model_path=mano)
    handS3C.load_published_checkpoint(model, snap)
    after = float(evaluate_model(model, FreiHAND(str(root), split="train", input_size=224), batch_size=8,
                                 protocol="freihand", progress=False, keep_predictions=False).metrics["pa_mpjpe_mm"])
    assert after < before, (before, after)
    # and the evaluation command reads the trainer's snapshot
    ev = tmp_path / "eval"
    status = cli(["evaluate", "--dataset", "freihand", "--data-root", str(root), "--checkpoint", str(snap),
                  "--mano-model-path", mano, "--backend", "cpu", "--device", "cpu", "--workers", "0",
                  "--out", str(ev), "--no-progress"])
    assert status == 0
    metrics = json.load(open(ev / "metrics.json"))
    assert metrics["checkpoint_epoch"] == EPOCHS - 1 and metrics["metrics"]["pa_mpjpe_mm"] > 0
    evals = [r for r in records if r["type"] == "eval"]
    assert len(evals) == 1 and abs(evals[0]["metrics"]["pa_mpjpe_mm"] - metrics["metrics"]["pa_mpjpe_mm"]) < 1e-3
    assert (out / "curves.png").stat().st_size > 1000
