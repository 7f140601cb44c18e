"""Child process of the training tests: ``python train_child.py JOB.json`` (or under torchrun).

JOB.json = {"config": TrainConfig fields, "dataset": ContractDataset keyword arguments}."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_helpers import ContractDataset  # noqa: E402

from handS3C.training import TrainConfig, train  # noqa: E402


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    cfg = TrainConfig(**job["config"])
    ds = ContractDataset(**job["dataset"])
    summary = train(cfg, train_dataset=ds, eval_dataset=ContractDataset(**job["dataset"]) if cfg.eval_every else None)
    print("SUMMARY", json.dumps({"step": summary["step"], "resumed_from": summary["resumed_from"]}))


if __name__ == "__main__":
    main()
