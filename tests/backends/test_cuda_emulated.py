"""The CUDA kernels' own source, executed on the CPU.

csrc/cuda/emu/ compiles csrc/cuda/*.cu as C++ with a small CUDA emulation (one coroutine per
CUDA thread, __syncthreads as a scheduling point, NaN-filled shared memory), and the real
binding files (*_cuda_bind.cpp) register the operators for CPU tensors in the `hands3c_emu`
namespace.  So without a GPU these tests exercise the kernels, the launchers (planning,
workspace carving, segment carry, fixed-order reductions) and the bindings (checks,
projection GEMMs) against float64 references with SPEC §4 tolerances.  What they cannot show:
timing, nvcc-specific code generation (--use_fast_math, FMA contraction), races between warps
(the emulation runs a block's threads one after another between barriers).

The library is built once per source change by torch.utils.cpp_extension (about one to two
minutes on two cores; cached afterwards).
"""
import os
import shutil

import pytest
import torch

import handS3C  # noqa: F401  (loads handS3C._C: the schemas copied below)
from handS3C import _ext, reference
from testenv import REPO_ROOT
from tolerances import assert_close

import cuda_parity as cp

REPO = REPO_ROOT
OPS = ("cross_scan_fwd", "cross_scan_bwd", "selective_scan_fwd", "selective_scan_bwd", "s3c_merge_fwd",
       "s3c_merge_bwd")

_SCHEMA_LIB = []  # the torch.library.Library holding the hands3c_emu schemas (kept alive)


@pytest.fixture(scope="module")
def emu():
    # handS3C._C holds the operator schemas; the emulation is built with the same C++ compiler
    _ext.require_cpu_ext()
    assert shutil.which("g++") or shutil.which("c++"), "no C++ compiler to build the CUDA emulation"
    from torch.utils.cpp_extension import load

    src = os.path.join(REPO, "csrc", "cuda")
    sources = [os.path.join(src, f) for f in ("selective_scan_cuda_bind.cpp", "cross_scan_cuda_bind.cpp",
                                              "s3c_merge_cuda_bind.cpp", os.path.join("emu", "emu_kernels.cpp"))]
    os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")  # silences torch's toolkit probe
    load(name="hands3c_cuda_emu", sources=sources,
         extra_cflags=["-DHS3C_EMULATE", "-O2", "-std=c++20", "-Wall", "-Wno-unknown-pragmas"],
         extra_include_paths=[os.path.join(REPO, "csrc", "include"), os.path.join(REPO, "csrc")],
         is_python_module=False, verbose=False)
    if not _SCHEMA_LIB:
        lib = torch.library.Library("hands3c_emu", "DEF")
        for name in OPS:  # the real schemas, renamed into the emulation namespace
            lib.define(str(getattr(torch.ops.hands3c, name).default._schema).split("::", 1)[1])
        _SCHEMA_LIB.append(lib)
    old = {k: os.environ.get(k) for k in ("HANDS3C_CUDA_POISON", "HANDS3C_CUDA_TARGET_THREADS")}
    os.environ["HANDS3C_CUDA_POISON"] = "1"  # outputs start as NaN: every element must be written
    yield torch.ops.hands3c_emu
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _target(blocks):
    if blocks is None:
        os.environ.pop("HANDS3C_CUDA_TARGET_THREADS", None)
    else:
        os.environ["HANDS3C_CUDA_TARGET_THREADS"] = str(blocks)


# The emulated "device" has 1 SM, so by default the planner targets 512 threads (8 to 16
# blocks): small problems already take the per-direction and segmented paths.  A target of 1
# thread gives one block per (batch, tile) walking all directions; 10**6 the most segments.
SS_CASES = [
    cp.SSCase(2, 5, 65, 4),
    cp.SSCase(1, 3, 65, 1, bc="3d", has_D=False, has_z=False, dlast=False, target_threads=1),
    cp.SSCase(2, 4, 130, 16, dtype=torch.float16, groups_b=2, groups_c=2, target_threads=10**6),
    cp.SSCase(1, 6, 70, 16, dtype=torch.bfloat16, bc="2d", has_db=False),
    cp.SSCase(1, 6, 129, 3, groups_b=2, groups_c=3, softplus=False, has_z=False),
    cp.SSCase(1, 130, 40, 16, target_threads=1),                       # 64-channel tiles, 3 per group
    cp.SSCase(1, 70, 65, 8, groups_b=2, groups_c=7, target_threads=10**6),
    cp.SSCase(2, 3, 64, 64, bc="3d"),                                 # the generic (N <= 64) kernel
    cp.SSCase(1, 4, 100, 20, dtype=torch.float16, bc_dtype=torch.float16),
    cp.SSCase(1, 2, 1, 4),                                            # L = 1
]


@pytest.mark.parametrize("case", SS_CASES, ids=lambda c: c.id())
def test_selective_scan_emulated(emu, case):
    _target(case.target_threads)
    inp = cp.ss_inputs(case)
    out, last, ckpt, grads = cp.ss_run_ops(emu, case, inp)
    assert ckpt.shape == (case.batch, case.dim, (case.L + 63) // 64, case.N)
    assert torch.isfinite(ckpt).all()
    cp.ss_compare(case, (out, last, grads), cp.ss_reference(case, inp), tag=case.id())


CS_CASES = [
    cp.CSCase(1, 5, 7, 9, 4, 3),
    cp.CSCase(2, 4, 1, 65, 1, 2, target_threads=10**6),   # one row, segmented
    cp.CSCase(1, 3, 33, 1, 16, 4, target_threads=1),      # one column, all directions per block
    cp.CSCase(1, 6, 9, 8, 8, 2, layout="channel", target_threads=10**6),
    cp.CSCase(1, 70, 3, 5, 16, 5, target_threads=1),      # two channel tiles: partial d(dbl) sums
    cp.CSCase(1, 4, 5, 7, 16, 3, dtype=torch.float16, layout="transposed"),
    cp.CSCase(2, 3, 12, 11, 16, 4, layout="channel"),    # L = 132: three checkpoint chunks
]


@pytest.mark.parametrize("case", CS_CASES, ids=lambda c: c.id())
def test_cross_scan_emulated(emu, case):
    _target(case.target_threads)
    inp = cp.cs_inputs(case)
    out, dbl, ckpt, grads = cp.cs_run_ops(emu, case, inp)
    L = case.P * case.Q
    assert dbl.shape == (case.batch, L, 4, case.R + 2 * case.N)
    assert ckpt.shape == (case.batch, 4, case.D, (L + 63) // 64, case.N)
    cp.cs_compare(case, (out, grads), cp.cs_reference(case, inp), tag=case.id())


MERGE_CASES = [
    cp.MergeCase((3, 4, 50)),
    cp.MergeCase((2, 5, 6, 300), permuted=True),
    cp.MergeCase((7,), zdtype=torch.bfloat16),
    cp.MergeCase((600, 3), zdtype=torch.float16),
]


@pytest.mark.parametrize("case", MERGE_CASES, ids=lambda c: c.id())
def test_merge_emulated(emu, case):
    inp = cp.merge_inputs(case)
    cp.merge_compare(case, cp.merge_run_ops(emu, case, inp), cp.merge_reference(case, inp), tag=case.id())


@pytest.mark.parametrize("target", [None, 1, 10**6])
def test_backward_bitwise_deterministic(emu, target):
    """No atomics: two runs give identical bits, whatever the decomposition."""
    _target(target)
    case = cp.CSCase(1, 70, 4, 9, 4, 3)
    inp = cp.cs_inputs(case)
    a = cp.cs_run_ops(emu, case, inp)
    b = cp.cs_run_ops(emu, case, inp)
    assert torch.equal(a[0], b[0])
    for k in cp.CS_GRAD_NAMES:
        assert torch.equal(a[3][k], b[3][k]), k


def test_decompositions_agree(emu):
    """Segmented, per-direction and all-directions-per-block plans compute the same function."""
    case = cp.SSCase(1, 4, 200, 4)
    inp = cp.ss_inputs(case)
    results = []
    for target in (1, 8, 10**6):
        _target(target)
        results.append(cp.ss_run_ops(emu, case, inp))
    for other in results[1:]:
        assert_close(other[0], results[0][0], 1e-5, 1e-5, "out")
        for k in results[0][3]:
            assert_close(other[3][k], results[0][3][k], 1e-5, 1e-5, f"d{k}")


def test_fast_reference_matches_autograd():
    """The float64 reference's hand-written O(L) backward (handS3C.reference.selective_scan_ref64,
    the reference of every parity case here) against finite differences, with grouped B/C, D,
    z, delta_bias, softplus and a gradient through the last state; its forward against
    mamba-ssm's selective_scan_ref."""
    case = cp.SSCase(1, 3, 11, 3, bc="4d", groups_b=3, groups_c=1)
    inp = cp.ss_inputs(case)
    names = [k for k in cp.SS_GRAD_NAMES if inp[k] is not None]
    leaves = [inp[k].double().requires_grad_() for k in names]

    def fn(*xs):
        kw = dict(zip(names, xs))
        return reference.selective_scan_ref64(**kw, delta_softplus=True, return_last_state=True)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)
    mamba = reference.mamba_selective_scan_ref()
    kw = {k: inp[k] for k in names}
    want = mamba(**{**kw, "B": inp["B"].float(), "C": inp["C"].float()}, delta_softplus=True)
    assert_close(fn(*leaves)[0], want, 1e-5, 1e-5, "out vs mamba-ssm")


def test_binding_errors(emu):
    """The bindings reject bad configurations with clear messages before any kernel runs (the
    shared checks of csrc/include/hands3c/op_checks.h: ValueError for shapes, TypeError for dtypes)."""
    case = cp.SSCase(1, 2, 8, 4)
    t = cp.ss_inputs(case)
    Bc, Cc = t["B"], t["C"]
    with pytest.raises(ValueError, match="state size N"):
        emu.selective_scan_fwd(t["u"], t["delta"], torch.zeros(2, 65), Bc.new_zeros(1, 1, 65, 8),
                               Cc.new_zeros(1, 1, 65, 8), None, None, None, True)
    with pytest.raises(TypeError, match="delta must have u's dtype"):
        emu.selective_scan_fwd(t["u"], t["delta"].half(), t["A"], Bc, Cc, None, None, None, True)
    with pytest.raises(TypeError, match="must be float32, float16 or bfloat16"):
        emu.selective_scan_fwd(t["u"].double(), t["delta"].double(), t["A"], Bc, Cc, None, None, None, True)
    cs = cp.cs_inputs(cp.CSCase(1, 2, 3, 3, 4, 2))
    args = [cs[k] for k in cp.CS_GRAD_NAMES]
    with pytest.raises(ValueError, match="must be in 1..64"):
        emu.cross_scan_fwd(args[0], torch.zeros(4, 2 + 130, 2), args[2], args[3], torch.zeros(8, 65), args[5])


@pytest.mark.slow
@pytest.mark.parametrize("target", [None, 1])
def test_channel_branch_full_length_emulated(emu, target):
    """The S3C channel branch at its real size (W = 32 features, 512 x 32 plane, L = 16384):
    long-sequence accuracy of the chunked scan, segmented (None) and in one pass (1)."""
    _target(target)
    case = cp.CSCase(1, 32, 512, 32, 16, 16, layout="channel")
    inp = cp.cs_inputs(case)
    out, _, _, grads = cp.cs_run_ops(emu, case, inp)
    cp.cs_compare(case, (out, grads), cp.cs_reference(case, inp), tag=case.id())


# ---- cross_scan_fwd's out_order (issue 14): the binding copies y into the requested layout ----

@pytest.mark.parametrize("order", [(0, 2, 3, 1), (0, 3, 1, 2), (3, 1, 0, 2)], ids=lambda o: "".join(map(str, o)))
def test_cross_scan_out_order_emulated(emu, order):
    """y in the requested layout with the default layout's values bit for bit (the kernels write
    y contiguously, the binding copies); the backward fed dout in y's layout (it makes dout
    contiguous) returns the contiguous dout's gradients bit for bit.  Every element of y is
    written (outputs are NaN-poisoned first)."""
    _target(None)
    case = cp.CSCase(3, 19, 5, 7, 4, 3)
    inp = cp.cs_inputs(case)
    args = [inp[k] for k in cp.CS_GRAD_NAMES]
    y0, dbl, ckpt = emu.cross_scan_fwd(*args)
    y = emu.cross_scan_fwd(*args, list(order))[0]
    assert y.permute(order).is_contiguous() and torch.equal(y, y0)
    g0 = emu.cross_scan_bwd(inp["dout"], *args, dbl, ckpt)
    dout = torch.empty_like(y).copy_(inp["dout"])
    for a, b in zip(emu.cross_scan_bwd(dout, *args, dbl, ckpt), g0):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="out_order must be a permutation of"):
        emu.cross_scan_fwd(*args, [0, 1, 2, 2])
