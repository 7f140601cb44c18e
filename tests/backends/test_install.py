"""Build safety: the extensions are built against the torch that runs them, say which torch
that was, refuse to load into another one, and a non-editable wheel works.

* An isolated build (pip's default) stops before compiling, with the rebuild command: checked
  by running setup.py under a replica of pip's isolation (its sitecustomize hides the
  interpreter's site-packages and exposes only the build requirements).
* The records embedded in the built extensions name the running torch.
* ``import handS3C`` with an extension whose record names another torch fails with
  ``ExtensionBuildMismatchError`` (both versions, the command): a copy of the package whose
  ``_C`` library has its recorded version byte-patched, loadable or not.
* ``pip wheel --no-build-isolation`` makes a wheel holding both extensions and the Triton
  kernels, which installs into a scratch target and runs there.  The wheel build reuses the
  editable build's objects (setup.py's shared build/temp.* folder), so it only relinks.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
import torch

from handS3C import _build_info, _ext
from handS3C._build_info import REBUILD_COMMAND, ExtensionBuildMismatchError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITE = sysconfig.get_paths()["purelib"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(extra)
    return env


def _require_cuda_extension():
    if _ext.HAS_CUDA_EXT:
        return True
    if os.environ.get("HANDS3C_CUDA", "").strip() == "0":
        return False
    pytest.fail("handS3C._C_cuda is not importable, but CI builds it (HANDS3C_CUDA=0 marks a deliberate "
                f"CPU-only build). Import error: {_ext._cuda_error}")


# ----------------------------------------------------------------------------- build guard

def _pip_like_isolation(tmp_path):
    """A PYTHONPATH folder whose sitecustomize does what pip's isolated build environment does:
    drop the interpreter's site-packages from sys.path and add an overlay holding only the build
    requirements (here: links to this venv's setuptools)."""
    site_dir, overlay = tmp_path / "site", tmp_path / "overlay"
    site_dir.mkdir()
    overlay.mkdir()
    for name in ("setuptools", "_distutils_hack", "pkg_resources"):
        if os.path.exists(os.path.join(SITE, name)):
            os.symlink(os.path.join(SITE, name), overlay / name)
    (site_dir / "sitecustomize.py").write_text(
        "import os, sys, sysconfig\n"
        "hide = {os.path.realpath(sysconfig.get_paths()[k]) for k in ('purelib', 'platlib')}\n"
        "sys.path[:] = [p for p in sys.path if os.path.realpath(p) not in hide]\n"
        f"sys.path.append({str(overlay)!r})\n")
    return str(site_dir)


def test_isolated_build_stops_with_the_rebuild_command(tmp_path):
    isolated = _pip_like_isolation(tmp_path)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "setup.py"), "--name"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=_env(PYTHONPATH=isolated, PYTHONNOUSERSITE="1"))
    assert r.returncode != 0, r.stdout
    assert REBUILD_COMMAND in r.stderr
    assert "isolated" in r.stderr and SITE in r.stderr
    # It names the torch the interpreter really runs.
    assert os.path.dirname(torch.__file__) in r.stderr
    assert "Traceback" not in r.stderr, r.stderr  # one clear message, not a stack

    # The same command outside the replica passes the guard (a real, non-isolated build).
    ok = subprocess.run([sys.executable, os.path.join(ROOT, "setup.py"), "--name"], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env=_env())
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == "handS3C-kernels"


def test_build_environment_problem_cases(tmp_path):
    site = tmp_path / "site-packages"
    (site / "torch").mkdir(parents=True)
    other = tmp_path / "pip-build-env" / "torch"
    other.mkdir(parents=True)
    target = {"version": "2.14.1", "dir": str(site / "torch")}
    # Normal build: the interpreter's site folder is on the path and torch is found.
    assert _build_info.build_environment_problem(
        sys_path=[str(site)], site_dirs=[str(site)], build_torch_dir=str(site / "torch"), target=target) is None
    # Isolated build that brought its own torch: both torches are named.
    msg = _build_info.build_environment_problem(
        sys_path=[str(other.parent)], site_dirs=[str(site)], build_torch_dir=str(other), build_torch_version="2.15.0",
        target=target)
    assert "isolated" in msg and "2.15.0" in msg and str(other) in msg and "2.14.1" in msg and REBUILD_COMMAND in msg
    # Not isolated, but torch is not installed at all.
    msg = _build_info.build_environment_problem(
        sys_path=[str(site)], site_dirs=[str(site)], build_torch_dir=None, target={"version": None, "dir": None})
    assert "install torch first" in msg and REBUILD_COMMAND in msg


# ----------------------------------------------------------------------------- records

@pytest.mark.parametrize("name", [_ext.CPU_EXTENSION, _ext.CUDA_EXTENSION])
def test_extensions_record_the_running_torch(name):
    if name == _ext.CUDA_EXTENSION and not _require_cuda_extension():
        pytest.skip("HANDS3C_CUDA=0: the CUDA extension was deliberately not built")
    files = _ext.EXTENSION_FILES[name]
    rec = _build_info.read_record(files["path"])
    assert rec is not None, f"{files['path']} holds no build record: rebuild with `{REBUILD_COMMAND}`"
    assert rec == files["record"]
    assert rec["extension"] == name
    assert rec["torch"] == torch.__version__ and rec["torch_cuda"] == torch.version.cuda
    assert rec["torch_git"] == torch.version.git_version
    assert rec["torch_headers"] == torch.__version__.split("+")[0].split("a")[0]
    assert _build_info.record_matches(rec, torch.__version__, torch.version.cuda) is True
    if name == _ext.CUDA_EXTENSION:
        major, minor = _build_info.cudart_version(rec).split(".")
        assert int(major) >= 11 and 0 <= int(minor) < 100


def test_check_record_raises_named_error_for_a_faked_version():
    rec = {"torch": "2.15.0+cu130", "torch_cuda": "13.0", "torch_headers": "2.15.0"}
    with pytest.raises(ExtensionBuildMismatchError) as info:
        _build_info.check_record("handS3C._C", "/x/_C.so", rec, "2.14.1+cu130", "13.0")
    e = info.value
    assert isinstance(e, ImportError)
    assert "2.15.0+cu130" in str(e) and "2.14.1+cu130" in str(e) and REBUILD_COMMAND in str(e)
    assert e.built == {"torch": "2.15.0+cu130", "torch_cuda": "13.0"} and e.running["torch"] == "2.14.1+cu130"
    # Same torch, other CUDA (a CPU wheel of the same version) is a mismatch too.
    with pytest.raises(ExtensionBuildMismatchError, match="no CUDA"):
        _build_info.check_record("handS3C._C", "/x/_C.so", dict(rec, torch="2.14.1"), "2.14.1", None)
    # No record (CMake build, or built before records existed): nothing to compare.
    _build_info.check_record("handS3C._C", "/x/_C.so", None, "2.14.1", None)
    _build_info.check_record("handS3C._C", "/x/_C.so", {"torch_headers": "2.14.1"}, "2.14.1", None)


def _package_copy(tmp_path, cpu_so_bytes=None):
    """handS3C copied under tmp_path/pkg, with the CPU library replaced by ``cpu_so_bytes``
    (None: left out).  Returns the folder to put on PYTHONPATH."""
    dest = tmp_path / "pkg" / "handS3C"
    shutil.copytree(os.path.join(ROOT, "handS3C"), dest,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "triton_kernels"))
    os.symlink(os.path.join(ROOT, "kernels"), dest / "triton_kernels")
    cpu_path = _ext.EXTENSION_FILES[_ext.CPU_EXTENSION]["path"]
    if cpu_so_bytes is not None:
        (dest / os.path.basename(cpu_path)).write_bytes(cpu_so_bytes)
    cuda_path = _ext.EXTENSION_FILES[_ext.CUDA_EXTENSION]["path"]
    if cuda_path:
        shutil.copy2(cuda_path, dest / os.path.basename(cuda_path))
    return str(tmp_path / "pkg")


# The repository's editable install adds a meta-path finder that maps every handS3C module to
# this checkout; a module missing from a copy would silently come from there instead.
_NO_EDITABLE_FINDER = ("import sys\n"
                       "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')"
                       " and '__editable__' not in getattr(type(f), '__module__', '')]\n")


def _import_in(pythonpath, code, tmp_path):
    return subprocess.run([sys.executable, "-c", _NO_EDITABLE_FINDER + code], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=300, env=_env(PYTHONPATH=pythonpath))


def _faked_cpu_library(fake_version, loadable):
    """The built CPU library with its recorded torch version replaced (same length, so the
    file stays a valid library); ``loadable=False`` also breaks its ELF magic, as a library
    whose symbols no longer resolve would fail to load."""
    path = _ext.EXTENSION_FILES[_ext.CPU_EXTENSION]["path"]
    data = open(path, "rb").read()
    old = json.dumps({"torch": torch.__version__})[1:-1].encode()
    new = json.dumps({"torch": fake_version})[1:-1].encode()
    assert len(old) == len(new) and data.count(old) == 1, "record layout changed"
    data = data.replace(old, new)
    if not loadable:
        data = b"\0\0\0\0" + data[4:]
    return data


@pytest.mark.parametrize("loadable", [True, False], ids=["loadable", "unloadable"])
def test_import_refuses_an_extension_built_for_another_torch(tmp_path, loadable):
    fake = "9" + torch.__version__[1:]
    path = _package_copy(tmp_path, _faked_cpu_library(fake, loadable))
    r = _import_in(path, "import handS3C", tmp_path)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("handS3C._build_info.ExtensionBuildMismatchError:"), r.stderr
    assert f"torch {fake}" in last and f"running one is torch {torch.__version__}" in last
    assert REBUILD_COMMAND in last and str(tmp_path) in last


def test_missing_extension_says_how_to_build(tmp_path):
    path = _package_copy(tmp_path, None)
    code = ("import handS3C, handS3C._ext as e\n"
            "assert not e.HAS_CPU_EXT, e.EXTENSION_FILES\n"
            "assert handS3C.__file__.startswith(%r), handS3C.__file__\n"
            "try:\n    e.require_cpu_ext()\nexcept RuntimeError as x:\n    print('MSG', x)\n") % path
    r = _import_in(path, code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "MSG" in r.stdout and "not built" in r.stdout and REBUILD_COMMAND in r.stdout


# ----------------------------------------------------------------------------- wheel

def test_wheel_holds_both_extensions_and_runs_from_a_scratch_target(tmp_path):
    want_cuda = _require_cuda_extension()
    wheelhouse = tmp_path / "wheelhouse"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                        "-q", "-w", str(wheelhouse), ROOT], cwd=str(tmp_path), capture_output=True, text=True,
                       timeout=1800, env=_env())
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = glob.glob(str(wheelhouse / "*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert f"handS3C/_C{suffix}" in names
    assert (f"handS3C/_C_cuda{suffix}" in names) == want_cuda
    kernels = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "kernels", "*.py"))}
    assert kernels and kernels <= {os.path.basename(n) for n in names if n.startswith("handS3C/triton_kernels/")}
    assert "handS3C/cli/info.py" in names and "handS3C/_build_info.py" in names
    assert not [n for n in names if n.startswith(("tests/", "csrc/", "benchmarks/"))]

    target = tmp_path / "target"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                        str(target), wheel], capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 0, r.stdout + r.stderr
    code = f"""
import json, os, torch
import handS3C, handS3C._ext as e, handS3C.triton_kernels as tk
from handS3C import ops, reference
t = {str(target)!r}
for m in (handS3C, tk):
    assert m.__file__.startswith(t), m.__file__
assert e.HAS_CPU_EXT and e._C.__file__.startswith(t), e._C
assert e.HAS_CUDA_EXT == {want_cuda!r}, e._cuda_error
if e.HAS_CUDA_EXT:
    assert e._C_cuda.__file__.startswith(t)
g = torch.Generator().manual_seed(3)
Bt, D, L, N = 2, 5, 37, 4
u, delta = torch.randn(Bt, D, L, generator=g), torch.rand(Bt, D, L, generator=g)
A = -torch.rand(D, N, generator=g) - 0.1
B, C = torch.randn(Bt, N, L, generator=g), torch.randn(Bt, N, L, generator=g)
Dv = torch.randn(D, generator=g)
y = ops.selective_scan_fn(u, delta, A, B, C, D=Dv, backend="cpu")
y_ref = ops.selective_scan_fn(u, delta, A, B, C, D=Dv, backend="reference")
assert torch.allclose(y, y_ref, rtol=6e-4, atol=2e-3), (y - y_ref).abs().max()  # SPEC §4, float32
print("OK", json.dumps({{k: v["path"] for k, v in e.EXTENSION_FILES.items()}}))
"""
    r = _import_in(str(target), code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK")
    # The console script of the wheel runs too.
    script = target / "bin" / "hands3c"
    assert script.exists()
    r = subprocess.run([sys.executable, str(script), "info", "--json"], cwd=str(tmp_path), capture_output=True,
                       text=True, timeout=300, env=_env(PYTHONPATH=str(target)))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["package"]["location"].startswith(str(target))
    assert info["extensions"]["handS3C._C"]["matches_running_torch"] is True
