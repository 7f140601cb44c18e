"""Helpers of the training tests: a tiny in-memory dataset that follows the data contract
(``handS3C.data``'s sample dict), a MANO file, and running the trainer in a child process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import torch
from torch.utils.data import Dataset

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from model_helpers import write_fake_mano  # noqa: E402

CHILD = os.path.join(HERE, "train_child.py")


class ContractDataset(Dataset):
    """``n`` random samples of the data contract at ``size`` px, reproducible from ``seed``.

    ``nan_index``: that sample's MANO shape is NaN (a broken annotation); ``kill_index``: loading
    that sample kills the worker process (SIGKILL; only meaningful with loader workers);
    ``inf_image_index``: one pixel of that sample's image is infinite."""

    def __init__(self, n=4, size=224, seed=0, nan_index=None, kill_index=None, inf_image_index=None):
        self.n, self.size, self.seed = n, size, seed
        self.nan_index, self.kill_index, self.inf_image_index = nan_index, kill_index, inf_image_index
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i < 0 or i >= self.n:
            raise IndexError(i)
        if self.kill_index is not None and i == self.kill_index:
            os.kill(os.getpid(), signal.SIGKILL)
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        S = self.size
        joints3d = torch.randn(21, 3, generator=g) * 0.03 + torch.tensor([0.0, 0.0, 0.6])
        shape = torch.randn(10, generator=g)
        if self.nan_index is not None and i == self.nan_index:
            shape[0] = float("nan")
        f = 1.5 * S
        image = torch.rand(3, S, S, generator=g)
        if self.inf_image_index is not None and i == self.inf_image_index:
            image[1, S // 2, S // 3] = float("inf")
        return {
            "image": image,
            "pose": torch.randn(48, generator=g) * 0.3,
            "shape": shape,
            "joints2d": torch.rand(21, 2, generator=g) * 0.8 + 0.1,
            "joints3d": joints3d,
            "root": joints3d[0].clone(),
            "K": torch.tensor([[f, 0.0, S / 2], [0.0, f, S / 2], [0.0, 0.0, 1.0]]),
            "verts": torch.zeros(778, 3),
            "has_mano": torch.tensor(True),
            "has_joints3d": torch.tensor(True),
            "has_verts": torch.tensor(False),
            "crop_to_image": torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
            "bbox": torch.tensor([0.0, 0.0, float(S), float(S)]),
            "index": torch.tensor(i, dtype=torch.int64),
            "file": f"memory://{i:04d}.jpg",
        }


def base_config(out, mano, **kw):
    """The small CPU run most tests share: 4 samples at 224 px, batch 2, 2 epochs."""
    from handS3C.training import TrainConfig
    values = dict(dataset="freihand", out=str(out), mano_model_path=str(mano), input_size=224, epochs=2,
                  batch_size=2, lr=1e-3, workers=0, eval_every=0, log_every=1, threads=2, progress=False,
                  backend="cpu", device="cpu", keep=3)
    values.update(kw)
    return TrainConfig(**values)


def final_state(out, completed):
    return torch.load(os.path.join(out, f"snapshot_{completed}.pth.tar"), map_location="cpu", weights_only=True)


def run_child(cfg, dataset_kw, env_extra=None, nproc=1, timeout=600):
    """Run the trainer in a child process (``torchrun`` when ``nproc`` > 1); returns the
    CompletedProcess (check ``returncode``: -9 when a fault hook killed it)."""
    path = os.path.join(cfg.out + ".job.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"config": cfg.to_dict(), "dataset": dataset_kw}, f)
    env = dict(os.environ)
    env.pop("HANDS3C_TRAIN_FAULT", None)
    env.update(env_extra or {})
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", str(cfg.threads or 2))
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               CHILD, path]
    else:
        cmd = [sys.executable, CHILD, path]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
