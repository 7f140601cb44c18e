"""Build script for HandS3C kernels.

Always builds the CPU extension ``handS3C._C`` (C++20 (torch 2.14 headers need it), -O3, OpenMP).  Builds the CUDA
extension ``handS3C._C_cuda`` when a CUDA toolkit and a CUDA build of torch are present
(a GPU is not needed to compile).  Environment switches:

* ``HANDS3C_CUDA=0`` skip the CUDA extension; ``HANDS3C_CUDA=1`` make its absence an error.
* ``TORCH_CUDA_ARCH_LIST`` defaults to ``8.0;9.0``.
* ``CUDA_HOME`` defaults to ``/usr/local/cuda`` when that folder holds ``bin/nvcc``
  (torch's own guess picks the wrong root on some machines).
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


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


def _extensions():
    _configure_cuda_env()
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    include_dirs = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")]
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
    return exts, {"build_ext": BuildExtension.with_options(use_ninja=True)}


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
