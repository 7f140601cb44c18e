"""``hands3c info``: what this installation is and what it will run.

In the spirit of ``python -m torch.utils.collect_env``: the package version, the running torch
and its CUDA, the torch/CUDA versions each compiled extension was built against (read from the
extension files, see ``handS3C/_build_info.py``), the instruction set the CPU kernels dispatch
to, whether the CUDA extension and Triton can run, which backend ``backend="auto"`` picks for
CPU and for CUDA tensors, and the threads the CPU kernels use.  Paste its output into bug
reports.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any, Dict, Optional

DESCRIPTION = ("Print the package, torch and extension build versions, the CPU instruction set the kernels "
               "dispatch to, whether the CUDA extension and Triton are usable, the backends 'auto' picks and "
               "the thread count.")
EPILOG = ("examples:\n"
          "  hands3c info              human-readable report (paste it into bug reports)\n"
          "  hands3c info --json       the same facts as one JSON object\n"
          "An extension built against another torch makes 'import handS3C' itself fail, naming both "
          "versions and the rebuild command; 'info' then cannot run.")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="versions, extension builds, backends and threads of this installation",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    p.set_defaults(func=run)


def _safe(fn, default=None):
    try:
        return fn()
    except Exception as e:  # a broken piece is reported, not fatal: this is the diagnostic tool
        return default if default is not None else f"unavailable ({type(e).__name__}: {e})"


def _triton() -> Dict[str, Any]:
    try:
        import triton
    except ImportError as e:
        return {"installed": False, "version": None, "usable": False, "why": f"not installed ({e})"}
    import torch

    interpreting = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if torch.cuda.is_available():
        usable, why = True, "compiles for the GPU"
    elif interpreting:
        usable, why = True, "CPU tensors through Triton's interpreter (TRITON_INTERPRET=1)"
    else:
        usable, why = False, "no GPU (set TRITON_INTERPRET=1 before import to run it in the interpreter)"
    return {"installed": True, "version": getattr(triton, "__version__", None), "usable": usable, "why": why}


def _extension(name: str, loaded: bool, error: Optional[BaseException]) -> Dict[str, Any]:
    import torch

    from .. import _build_info, _ext

    files = _ext.EXTENSION_FILES.get(name, {})
    rec = files.get("record")
    match = _build_info.record_matches(rec, torch.__version__, torch.version.cuda)
    return {
        "loaded": loaded,
        "path": files.get("path"),
        "error": None if loaded else str(error),
        "built_torch": (rec or {}).get("torch"),
        "built_torch_cuda": (rec or {}).get("torch_cuda"),
        "built_torch_headers": (rec or {}).get("torch_headers"),
        "built_cuda_toolkit": _build_info.cudart_version(rec),
        "built_cuda_arch_list": (rec or {}).get("cuda_arch_list") if "cudart" in (rec or {}) else None,
        "compiler": (rec or {}).get("compiler"),
        "matches_running_torch": match,
    }


def collect() -> Dict[str, Any]:
    """Every fact of the report as plain JSON-able values."""
    import torch

    import handS3C
    from .. import _build_info, _ext
    from ..ops import resolve_backend

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    cpu_ext = _extension(_ext.CPU_EXTENSION, _ext.HAS_CPU_EXT, _ext._cpu_error)
    cuda_ext = _extension(_ext.CUDA_EXTENSION, _ext.HAS_CUDA_EXT, _ext._cuda_error)
    if not _ext.HAS_CUDA_EXT:
        cuda_usable, cuda_why = False, f"not built (build with `{_build_info.REBUILD_COMMAND}` on a machine with nvcc)"
    elif not gpus:
        cuda_usable, cuda_why = False, "built and registered, but no GPU is present"
    else:
        cuda_usable, cuda_why = True, f"runs on {len(gpus)} GPU(s)"
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "package": {"name": "handS3C-kernels", "version": handS3C.__version__,
                    "location": os.path.dirname(os.path.abspath(handS3C.__file__))},
        "python": {"version": platform.python_version(), "executable": sys.executable, "platform": platform.platform()},
        "torch": {"version": torch.__version__, "cuda": torch.version.cuda,
                  "git": getattr(torch.version, "git_version", None),
                  "location": os.path.dirname(os.path.abspath(torch.__file__)),
                  "cuda_available": torch.cuda.is_available(), "gpus": gpus},
        "extensions": {_ext.CPU_EXTENSION: cpu_ext, _ext.CUDA_EXTENSION: cuda_ext},
        "cpu_isa": _safe(lambda: torch.ops.hands3c.cpu_isa()) if _ext.HAS_CPU_EXT else None,
        "cuda_extension": {"usable": cuda_usable, "why": cuda_why},
        "triton": _triton(),
        "auto_backend": {
            "cpu": _safe(lambda: resolve_backend("auto", torch.device("cpu"), "hands3c info")),
            "cuda": _safe(lambda: resolve_backend("auto", torch.device("cuda"), "hands3c info")),
        },
        "threads": {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads(),
                    "cpus_usable": affinity, "cpus_total": os.cpu_count(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "HANDS3C_CPU_ISA": os.environ.get("HANDS3C_CPU_ISA")},
        "rebuild_command": _build_info.REBUILD_COMMAND,
    }


def _ext_lines(name: str, e: Dict[str, Any]) -> str:
    if e["path"] is None:
        return f"{name:<17} not built: {e['error']}"
    state = "loaded" if e["loaded"] else f"present but not loaded ({e['error']})"
    if e["built_torch"] is None:
        return (f"{name:<17} {state}\n{'':<19}no build record (built outside setup.py or before records "
                f"existed): torch version unchecked; {e['path']}")
    else:
        cuda = f"CUDA {e['built_torch_cuda']}" if e["built_torch_cuda"] else "no CUDA"
        built = f"built against torch {e['built_torch']} ({cuda}), headers {e['built_torch_headers']}"
        if e["built_cuda_toolkit"]:
            built += f", CUDA toolkit {e['built_cuda_toolkit']} for {e['built_cuda_arch_list']}"
    verdict = {True: "matches the running torch", False: "DOES NOT match the running torch", None: "unchecked"}
    return (f"{name:<17} {state}\n{'':<19}{built}; compiler {e['compiler']}\n"
            f"{'':<19}{verdict[e['matches_running_torch']]}; {e['path']}")


def format_report(d: Dict[str, Any]) -> str:
    """The text report of :func:`collect`'s dict."""
    t, th, tr = d["torch"], d["threads"], d["triton"]
    gpu = ", ".join(t["gpus"]) if t["gpus"] else "none (torch.cuda.is_available() is False)"
    ext = d["extensions"]
    triton = (f"{tr['version']}, {'usable' if tr['usable'] else 'not usable'}: {tr['why']}" if tr["installed"]
              else f"not usable: {tr['why']}")
    lines = [
        f"handS3C-kernels   {d['package']['version']} ({d['package']['location']})",
        f"python            {d['python']['version']} ({d['python']['executable']}) on {d['python']['platform']}",
        f"torch             {t['version']} (CUDA {t['cuda'] or 'none'}, git {str(t['git'])[:12]}) {t['location']}",
        f"GPUs              {gpu}",
        "extensions:",
        "  " + _ext_lines("handS3C._C", ext["handS3C._C"]).replace("\n", "\n  "),
        "  " + _ext_lines("handS3C._C_cuda", ext["handS3C._C_cuda"]).replace("\n", "\n  "),
        f"CPU kernels ISA   {d['cpu_isa'] or 'n/a (CPU extension not loaded)'}",
        f"CUDA extension    {'usable' if d['cuda_extension']['usable'] else 'not usable'}: {d['cuda_extension']['why']}",
        f"Triton            {triton}",
        f"backend 'auto'    CPU tensors -> {d['auto_backend']['cpu']}; CUDA tensors -> {d['auto_backend']['cuda']}",
        f"threads           {th['torch_intra_op']} intra-op (the CPU kernels' at::parallel_for), "
        f"{th['torch_inter_op']} inter-op; CPUs usable {th['cpus_usable']} of {th['cpus_total']}; "
        f"OMP_NUM_THREADS={th['OMP_NUM_THREADS'] or 'unset'}",
        f"rebuild           {d['rebuild_command']}   (from the repository root)",
    ]
    return "\n".join(lines)


def run(args) -> int:
    d = collect()
    print(json.dumps(d, indent=2, sort_keys=True) if args.json else format_report(d))
    return 0
