"""Fixtures of the training tests: a MANO file and one reference run (4 samples, 224 px,
batch 2, 2 epochs on CPU) that the resume, fault and snapshot tests compare against."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_helpers import ContractDataset, base_config, write_fake_mano  # noqa: E402


@pytest.fixture(scope="session")
def mano_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mano") / "MANO_RIGHT.pkl"
    write_fake_mano(str(path), seed=3)
    return str(path)


@pytest.fixture(autouse=True)
def _keep_threads():
    """The trainer sets torch's thread count; give the rest of the suite its own back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, mano_file):
    """An uninterrupted run; returns (out folder, summary, captured messages)."""
    from handS3C.training import train
    n = torch.get_num_threads()
    out = tmp_path_factory.mktemp("ref") / "run"
    msgs = []
    cfg = base_config(out, mano_file, eval_every=2)
    summary = train(cfg, train_dataset=ContractDataset(4), eval_dataset=ContractDataset(4), log=msgs.append)
    torch.set_num_threads(n)
    return str(out), summary, msgs
