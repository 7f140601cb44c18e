"""``hands3c info``: every fact it reports is the live state of this process / installation."""
import json
import os
import subprocess
import sys

import pytest
import torch

import handS3C
from handS3C import _ext
from handS3C.cli import main
from handS3C.ops import resolve_backend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _info_json(capsys):
    assert main(["info", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_json_reports_the_running_installation(capsys):
    d = _info_json(capsys)
    assert d["package"]["version"] == handS3C.__version__
    assert d["package"]["location"] == os.path.dirname(os.path.abspath(handS3C.__file__))
    assert d["torch"]["version"] == torch.__version__ and d["torch"]["cuda"] == torch.version.cuda
    assert d["torch"]["cuda_available"] == torch.cuda.is_available()
    assert len(d["torch"]["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)

    cpu = d["extensions"]["handS3C._C"]
    assert cpu["loaded"] is _ext.HAS_CPU_EXT is True
    assert cpu["path"] == _ext._C.__file__
    assert cpu["built_torch"] == torch.__version__ and cpu["built_torch_cuda"] == torch.version.cuda
    assert cpu["matches_running_torch"] is True
    cuda = d["extensions"]["handS3C._C_cuda"]
    assert cuda["loaded"] is _ext.HAS_CUDA_EXT
    if _ext.HAS_CUDA_EXT:
        assert cuda["matches_running_torch"] is True and cuda["built_cuda_toolkit"]
        assert cuda["built_cuda_arch_list"]
    assert d["cuda_extension"]["usable"] == (_ext.HAS_CUDA_EXT and torch.cuda.is_available())

    assert d["cpu_isa"] == torch.ops.hands3c.cpu_isa()
    assert d["cpu_isa"] in ("avx512", "avx2", "baseline")
    assert d["auto_backend"] == {"cpu": resolve_backend("auto", torch.device("cpu"), "t"),
                                 "cuda": resolve_backend("auto", torch.device("cuda"), "t")}
    assert d["auto_backend"]["cpu"] == "cpu"
    assert d["auto_backend"]["cuda"] == ("cuda" if _ext.HAS_CUDA_EXT else "triton")
    # conftest sets TRITON_INTERPRET=1 without a GPU, so Triton runs (in the interpreter) here.
    assert d["triton"]["installed"] and d["triton"]["usable"] == (
        torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")
    assert d["threads"]["torch_intra_op"] == torch.get_num_threads()
    assert d["threads"]["cpus_total"] == os.cpu_count()


def test_info_follows_the_thread_setting(capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert _info_json(capsys)["threads"]["torch_intra_op"] == 1
    finally:
        torch.set_num_threads(before)
    assert _info_json(capsys)["threads"]["torch_intra_op"] == before


def test_info_text_report_through_python_m(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "handS3C", "info"], cwd=str(tmp_path), capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for label in ("handS3C-kernels", "torch ", "extensions:", "CPU kernels ISA", "CUDA extension", "Triton",
                  "backend 'auto'", "threads", "rebuild"):
        assert label in out, (label, out)
    assert handS3C.__version__ in out and torch.__version__ in out
    assert f"built against torch {torch.__version__}" in out and "matches the running torch" in out
    assert "OMP_NUM_THREADS=1" in out
    assert "CPU tensors -> cpu" in out


def test_info_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["info", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--json" in out and "print one JSON object" in out and "examples:" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "info" in capsys.readouterr().out
