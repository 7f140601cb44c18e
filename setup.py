"""Build script for HandS3C kernels.

Always builds the CPU extension ``handS3C._C`` (C++20 (torch 2.14 headers need it), -O3, OpenMP).  Builds the CUDA
extension ``handS3C._C_cuda`` when a CUDA toolkit and a CUDA build of torch are present
(a GPU is not needed to compile).  Environment switches:

* ``HANDS3C_CUDA=0`` skip the CUDA extension; ``HANDS3C_CUDA=1`` make its absence an error.
* ``TORCH_CUDA_ARCH_LIST`` defaults to ``8.0;9.0``.
* ``CUDA_HOME`` defaults to ``/usr/local/cuda`` when that folder holds ``bin/nvcc``
  (torch's own guess picks the wrong root on some machines).

The extensions are compiled against the torch of the interpreter that runs the build, which
must be the one that will import them: build with ``pip install --no-build-isolation -e .``
(or ``pip wheel --no-build-isolation .``).  torch is deliberately not a build requirement in
pyproject.toml; an isolated build (pip's default) stops before compiling anything, saying so
(``handS3C/_build_info.py``).  Each extension embeds the torch/CUDA versions it was built
against, and ``import handS3C`` refuses a mismatch.

Object files live in one persistent folder, ``build/temp.<platform>-<python>``, shared by
editable and wheel builds (ninja recompiles only what changed; a wheel built after
``pip install -e .`` only relinks), and a file lock there serialises concurrent builds.
"""
import fcntl
import glob
import importlib.util
import os
import sys
import sysconfig

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
BUILD_TEMP = os.path.join(ROOT, "build", f"temp.{sysconfig.get_platform()}-{sys.implementation.cache_tag}")
GENERATED_INCLUDE = os.path.join(ROOT, "build", "generated")


def _load_build_info():
    # By path: importing the handS3C package would import torch and the extensions.
    spec = importlib.util.spec_from_file_location("_hands3c_build_info", os.path.join(ROOT, "handS3C", "_build_info.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_build_info = _load_build_info()


def _check_build_environment():
    """Stop (before importing torch) when the build cannot see the torch it must compile against."""
    spec = importlib.util.find_spec("torch")
    torch_dir = spec.submodule_search_locations[0] if spec is not None and spec.submodule_search_locations else None
    version = None
    if torch_dir is not None:
        try:
            import importlib.metadata as md
            version = md.version("torch")
        except Exception:  # a torch without metadata (a source checkout on the path)
            version = "unknown version"
    paths = sysconfig.get_paths()
    problem = _build_info.build_environment_problem(
        sys_path=sys.path, site_dirs=[paths["purelib"], paths["platlib"]], build_torch_dir=torch_dir,
        build_torch_version=version)
    if problem:
        raise SystemExit(problem)


def _rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _configure_cuda_env():
    if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")


def _nvidia_wheel_includes():
    """Header folders of the pip-installed CUDA runtime (cusparse.h etc., see SPEC §5)."""
    out = []
    for p in sys.path:
        cand = os.path.join(p, "nvidia", "cu13", "include")
        if os.path.isdir(cand):
            out.append(cand)
    return out


def _build_ext_class(base):
    class HandS3CBuildExt(base):
        """torch's BuildExtension with the shared object folder and a lock around the build."""

        def finalize_options(self):
            # Before the base class copies build_temp from `build` (a throw-away folder in
            # editable builds): a fixed folder lets ninja reuse the objects of earlier builds.
            if self.build_temp is None:
                self.build_temp = BUILD_TEMP
            super().finalize_options()

        def run(self):
            os.makedirs(self.build_temp, exist_ok=True)
            with open(os.path.join(self.build_temp, ".hands3c-build.lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # two builds in one object folder corrupt it
                super().run()

    return HandS3CBuildExt


def _extensions():
    _configure_cuda_env()
    _check_build_environment()
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    # The torch/CUDA versions the extensions embed (csrc/bindings/build_info.cpp,
    # csrc/cuda/build_info_cuda.cpp); rewritten only when they change, so ninja keeps the objects.
    _build_info.write_if_changed(
        os.path.join(GENERATED_INCLUDE, "hands3c_build_info.h"),
        _build_info.header_text(_build_info.record_fields(torch, os.environ.get("TORCH_CUDA_ARCH_LIST"))))
    include_dirs = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc"), GENERATED_INCLUDE]
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-Wall", "-Wno-unknown-pragmas"]
    exts = [
        CppExtension(
            name="handS3C._C",
            sources=_rel("csrc/cpu/*.cpp") + _rel("csrc/bindings/*.cpp"),
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    ]

    want = os.environ.get("HANDS3C_CUDA", "auto").strip().lower()
    if want not in ("0", "1", "auto"):
        raise RuntimeError(f"HANDS3C_CUDA must be 0, 1 or unset, got {want!r}")
    have_cuda = torch.version.cuda is not None and CUDA_HOME is not None and os.path.exists(
        os.path.join(CUDA_HOME, "bin", "nvcc"))
    if want == "1" and not have_cuda:
        raise RuntimeError(
            "HANDS3C_CUDA=1 but the CUDA extension cannot be built: "
            f"torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={CUDA_HOME!r} (needs bin/nvcc)")
    cuda_sources = _rel("csrc/cuda/*.cu") + _rel("csrc/cuda/*.cpp")
    if want != "0" and have_cuda and cuda_sources:
        exts.append(
            CUDAExtension(
                name="handS3C._C_cuda",
                sources=cuda_sources,
                include_dirs=include_dirs + _nvidia_wheel_includes(),
                extra_compile_args={
                    "cxx": ["-O3", "-std=c++20", "-Wall", "-Wno-unknown-pragmas"],
                    "nvcc": ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo",
                             "--expt-relaxed-constexpr"],
                },
            )
        )
    return exts, {"build_ext": _build_ext_class(BuildExtension).with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="handS3C-kernels",
    version="0.1.0",
    description="Fused cross-scan selective-scan and S3C channel-branch kernels for HandS3C",
    python_requires=">=3.9",
    packages=find_packages(include=["handS3C", "handS3C.*"]) + ["handS3C.triton_kernels"],
    package_dir={"handS3C.triton_kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["hands3c = handS3C.cli:main"]},
    install_requires=["torch>=2.6", "numpy>=1.24", "einops>=0.7", "safetensors>=0.4", "tqdm>=4.60",
                      "pillow>=9", "opencv-python-headless>=4.8", "matplotlib>=3.6"],
    extras_require={
        "triton": ["triton>=3.2"],
        "bench": ["tqdm", "matplotlib"],
        "train": ["tensorboard"],
        "export": ["onnx", "onnxscript", "onnxruntime"],
        "test": ["pytest", "hypothesis", "pytest-benchmark", "onnx", "onnxruntime", "scipy", "mambapy"],
    },
)
