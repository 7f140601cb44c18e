"""Compile every kernel for a GPU target without a GPU, and report its resource usage.

The CPU interpreter that the tests use without a GPU is lenient: it accepts code the
compiler rejects (a plain Python float global read inside a kernel, for one), and it
says nothing about registers.  This module compiles each kernel, in the configurations
the GPU launch plan uses, through Triton's real pipeline to a cubin for ``--arch``
(default sm_90) and prints ptxas' register and stack (spill) usage.  It needs no GPU,
only Triton's bundled ptxas/cuobjdump.

    python -m handS3C.triton_kernels._compile_check [--arch 90] [--quick]

Must run *without* TRITON_INTERPRET=1 (it is removed from the environment here before
Triton is imported).  Exit status 1 when any kernel fails to compile.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from . import cross_scan as csk  # noqa: E402
from . import s3c_merge as mk  # noqa: E402
from . import selective_scan as ssk  # noqa: E402

_FLOAT_ARGS = {"eps"}


def _resource_usage(cubin: bytes) -> str:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return "(cuobjdump not bundled)"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "REG" in line:
            fields = dict(tok.split(":", 1) for tok in line.split() if ":" in tok)
            return f"regs {fields.get('REG', '?')}, stack {fields.get('STACK', '?')} B"
    return "(no resource line)"


def compile_one(kernel, constexprs, arch: int, num_warps: int = 4, dtypes=None):
    """Compile ``kernel`` (a JITFunction) with pointer args float32 unless ``dtypes`` says."""
    dtypes = dtypes or {}
    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + dtypes.get(name, "fp32")
        else:
            sig[name] = "fp32" if name in _FLOAT_ARGS else "i32"
    src = ASTSource(kernel, sig, constexprs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


def cases(quick: bool):
    """(label, kernel, constexprs, num_warps, pointer dtypes) in the GPU plan's configurations."""
    S, NP = 32, 16
    ss = dict(HAS_D=True, HAS_Z=True, HAS_DB=True, SOFTPLUS=True, S=S, NP=NP)
    half = {n: "bf16" for n in ("u_ptr", "dt_ptr", "z_ptr", "b_ptr", "c_ptr", "out_ptr")}
    half_bwd = dict(half, du_ptr="bf16", ddt_ptr="bf16", dz_ptr="bf16", dout_ptr="fp32")
    out = [
        ("ss fwd pass1", ssk.ss_fwd_kernel, dict(ss, PER_CH=False, LOCAL=True, HAS_INIT=False, STORE_CK=False, BD=8), 4, None),
        ("ss fwd pass3", ssk.ss_fwd_kernel, dict(ss, PER_CH=False, LOCAL=False, HAS_INIT=True, STORE_CK=True, BD=8), 4, None),
        ("ss fwd pass3 bf16 per-channel", ssk.ss_fwd_kernel,
         dict(ss, PER_CH=True, LOCAL=False, HAS_INIT=False, STORE_CK=True, BD=8), 4, half),
        ("ss fwd combine", ssk.ss_fwd_combine_kernel, dict(BD=16, NP=NP), 4, None),
        ("ss bwd pass1", ssk.ss_bwd_chunk_kernel,
         dict(HAS_Z=True, HAS_DB=True, SOFTPLUS=True, PER_CH=False, S=S, BD=4, NP=NP), 4, None),
        ("ss bwd combine", ssk.ss_bwd_combine_kernel, dict(HAS_DLAST=True, BD=16, NP=NP), 4, None),
        ("ss bwd pass3", ssk.ss_bwd_kernel, dict(ss, PER_CH=False, HAS_INIT=True, HAS_DLAST=True, NSUB=4, BD=4), 8, None),
        ("ss bwd pass3 bf16 per-channel", ssk.ss_bwd_kernel,
         dict(ss, PER_CH=True, HAS_INIT=False, HAS_DLAST=True, NSUB=1, BD=4), 8, half_bwd),
    ]
    cs = dict(R=16, N=16, S=S, NP=NP)
    for k in ((1, 2) if quick else range(4)):
        out.append((f"cs fwd pass1 k={k}", csk.cs_fwd_chunk_kernel, dict(cs, K=k, BD=8), 4, None))
        out.append((f"cs bwd pass1 k={k}", csk.cs_bwd_chunk_kernel, dict(cs, K=k, BD=4), 4, None))
    out += [
        ("cs fwd combine", csk.cs_fwd_combine_kernel, dict(BD=16, NP=NP), 4, None),
        ("cs bwd combine", csk.cs_bwd_combine_kernel, dict(BD=16, NP=NP), 4, None),
    ]
    for fam in ((1, 2) if quick else (0, 1, 2)):
        out.append((f"cs fwd pass3 fam={fam}", csk.cs_fwd_kernel,
                    dict(cs, FAM=fam, HAS_INIT=fam < 2, STORE_CK=True, BD=8), 4, None))
        out.append((f"cs bwd pass3 fam={fam}", csk.cs_bwd_kernel,
                    dict(cs, FAM=fam, HAS_INIT=fam < 2, NSUB=8, RP=16, BD=4), 8, None))
    out += [
        ("merge fwd", mk.merge_fwd_kernel, dict(BM=4, BC=512), 4, {"z_ptr": "bf16"}),
        ("merge bwd", mk.merge_bwd_kernel, dict(BM=4, BC=512), 4, {"z_ptr": "bf16", "dz_ptr": "bf16"}),
    ]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90, help="compute capability as an integer (80, 90, ...)")
    ap.add_argument("--quick", action="store_true", help="one representative per kernel family")
    args = ap.parse_args(argv)
    failed = 0
    for label, kernel, constexprs, warps, dtypes in cases(args.quick):
        t0 = time.time()
        try:
            k = compile_one(kernel, constexprs, args.arch, warps, dtypes)
        except Exception as e:  # report every failure, then exit non-zero
            failed += 1
            print(f"FAIL {label}: {type(e).__name__}: {e}", flush=True)
            continue
        print(f"ok   {label:32s} sm_{args.arch} {warps} warps: {_resource_usage(k.asm['cubin'])} "
              f"({time.time() - t0:.1f} s)", flush=True)
    print("all kernels compiled" if not failed else f"{failed} kernel(s) failed to compile")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
