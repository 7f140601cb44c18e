"""selective_scan_fn on every backend, against the float64 reference and mamba-ssm.

One case table, CASES, serves every backend: a case's ``size`` tag names the targets that run it
(tests/testenv.py, SIZE_TARGETS): "small" cases run on the C++ CPU kernels and, on a GPU, on the
CUDA kernels; "tiny" cases on the Triton kernels (the CPU interpreter with the case's launch
plan, or compiled at scaled-up shapes on a GPU; inputs from tests/triton_cases.py); "gpu" cases
on the CUDA kernels at GPU sizes (tests/cuda_parity.py).  Targets that need a GPU skip with the
reason given in testenv.py when none is present.  Outputs and every gradient (u, delta, A, B, C,
D, z, delta_bias, and through last_state) are compared with SPEC §4 tolerances.  Below the
table: the CPU kernels' own properties, the Triton operators', the CUDA backend's refusals.

Weight gradients (dA, dD, d(delta_bias), and dB/dC of the input-independent (dim, N) form) are
sums over the batch and all positions; like the other kernel tests they are compared relative to
their largest element (max(1, max|ref|)), so float32 summation noise in a large sum is not
mistaken for an error on its smallest terms.
"""

from dataclasses import dataclass
from typing import Optional

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from testenv import TARGETS, case_params, check_on, devices_for_test
from handS3C import ops, reference
from handS3C.ops import selective_scan_fn
from handS3C.triton_kernels import scan_config
from tolerances import TOL, assert_close, dA_tol, ddelta_tol, du_tol, out_tol, weight_tol

import cuda_parity as cp
import triton_cases as tc

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def _never_zero(t):
    """Push values away from 0 (SPEC §4: never test on zeros)."""
    return t + 0.1 * torch.where(t >= 0, 1.0, -1.0)


def make_inputs(batch, dim, L, N, dtype=F32, bform="var", G=1, has_D=True, has_z=True, has_bias=True,
                softplus=True, seed=0, bc_dtype=None):
    """Random never-zero inputs.  bform: "const" (dim, N), "var" (batch, N, L), "group" (batch, G, N, L),
    or "mixed" (B const, C grouped)."""
    g = torch.Generator().manual_seed(seed)
    rn = lambda *s: _never_zero(torch.randn(*s, generator=g))
    u = rn(batch, dim, L).to(dtype)
    if softplus:
        delta = (0.5 * torch.randn(batch, dim, L, generator=g) - 0.5).to(dtype)
    else:
        delta = (0.5 * torch.rand(batch, dim, L, generator=g) + 0.05).to(dtype)
    A = -(0.1 + 0.9 * torch.rand(dim, N, generator=g))
    bc_dtype = bc_dtype or (F32 if bform == "const" else dtype)
    if bform == "const":
        B, C = rn(dim, N), rn(dim, N)
    elif bform == "var":
        B, C = rn(batch, N, L), rn(batch, N, L)
    elif bform == "group":
        B, C = rn(batch, G, N, L), rn(batch, G, N, L)
    elif bform == "mixed":
        B, C = rn(dim, N), rn(batch, G, N, L)
    else:
        raise ValueError(bform)
    B, C = B.to(bc_dtype), C.to(bc_dtype)
    D = rn(dim) if has_D else None
    z = rn(batch, dim, L).to(dtype) if has_z else None
    bias = (0.1 + 0.3 * torch.rand(dim, generator=g)) if has_bias else None
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias, delta_softplus=softplus)


def _leaves(inputs, device, dtype_map=lambda t: t):
    out = {}
    for k, v in inputs.items():
        out[k] = dtype_map(v).detach().clone().to(device).requires_grad_(True) if isinstance(v, torch.Tensor) else v
    return out


def _grads(outs, cots, leaves):
    ts = [leaves[n] for n in NAMES if leaves.get(n) is not None]
    loss = sum((o * c).sum() for o, c in zip(outs, cots))
    grads = torch.autograd.grad(loss, ts, allow_unused=True)
    return {n: g for n, g in zip([n for n in NAMES if leaves.get(n) is not None], grads) if g is not None}


def _grad_tols(inputs, name):
    dtype, has_z = inputs["u"].dtype, inputs["z"] is not None
    if name == "u":
        return du_tol(dtype)
    if name == "z":
        return du_tol(dtype)
    if name == "delta":
        return ddelta_tol(dtype)
    if name == "A":
        return dA_tol(dtype, has_z)
    if name in ("B", "C") and inputs[name].dtype != F32:
        return TOL[inputs[name].dtype]  # input-dependent B/C in low precision: the input tolerance
    return weight_tol(dtype, has_z)


def _is_sum(inputs, name):
    """Gradients that are sums over the batch and every position."""
    return name in ("A", "D", "delta_bias") or (name in ("B", "C") and inputs[name].dim() == 2)


def run_case(inputs, backend="cpu", device="cpu", last=False, seed=1, against_mamba=False):
    """Forward + backward of selective_scan_fn against the float64 reference (and optionally
    against mamba-ssm's selective_scan_ref in the same dtype); returns the kernel's results."""
    leaves = _leaves(inputs, device)
    res = ops.selective_scan_fn(**leaves, return_last_state=last, backend=backend)
    outs = list(res) if last else [res]
    out = outs[0]
    assert out.dtype == inputs["u"].dtype and out.shape == inputs["u"].shape and out.is_contiguous()
    if last:
        assert outs[1].dtype == F32 and outs[1].shape == (*inputs["u"].shape[:2], inputs["A"].shape[1])
    gen = torch.Generator().manual_seed(seed)
    cots = [torch.randn(o.shape, generator=gen).to(o.dtype) for o in outs]
    grads = _grads(outs, [c.to(device) for c in cots], leaves)

    if against_mamba:
        ref_leaves = _leaves(inputs, "cpu")
        ref_res = reference.mamba_selective_scan_ref()(**ref_leaves, return_last_state=last)
        what = "mamba"
    else:
        ref_leaves = _leaves(inputs, "cpu", lambda t: t.double())
        ref_res = reference.selective_scan_ref64(**ref_leaves, return_last_state=last)
        what = "ref64"
    ref_outs = list(ref_res) if last else [ref_res]
    ref_grads = _grads(ref_outs, [c.to(ref_outs[0].dtype) for c in cots], ref_leaves)

    r, a = out_tol(inputs["u"].dtype)
    assert_close(out, ref_outs[0], r, a, f"out vs {what}")
    if last:
        assert_close(outs[1], ref_outs[1], *out_tol(F32), f"last_state vs {what}")
    for name, got in grads.items():
        want = ref_grads[name]
        assert got.dtype == inputs[name].dtype and got.shape == inputs[name].shape, name
        rt, at = _grad_tols(inputs, name)
        scale = max(1.0, want.abs().max().item()) if _is_sum(inputs, name) else 1.0
        assert_close(got / scale, want / scale, rt, at, f"d{name} vs {what}")
    return outs, grads


# ---- the case table: every backend ----------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One selective_scan_fn shape case; ``size`` picks the backends that run it
    (testenv.SIZE_TARGETS: "small" cpu and cuda, "tiny" triton, "gpu" cuda at GPU sizes).

    bc is the B/C layout: "const" (dim, N), "var" (batch, N, L), "group" (batch, G, N, L) or
    "mixed" (B const, C grouped); G is the number of groups of grouped B and C, G_C C's own
    where it differs from B's; bc_dtype is B/C's dtype where it is not float32 / u's.  D, z,
    bias say which optional inputs are given; last: last_state is returned and gets a gradient
    (the Triton check always differentiates through it).  mamba: also compared with mamba-ssm
    (whose autograd is O(L^2), so small L only).  plan: the launch plan of a tiny case in the
    Triton interpreter; target_threads: HANDS3C_CUDA_TARGET_THREADS of a gpu case (None: the
    automatic target).  seed: the input seed (small cases default to L + dim + N).
    """
    batch: int
    dim: int
    L: int
    N: int
    dtype: torch.dtype = F32
    bc: str = "var"
    G: int = 1
    G_C: Optional[int] = None
    bc_dtype: Optional[torch.dtype] = None
    D: bool = True
    z: bool = True
    bias: bool = True
    softplus: bool = True
    last: bool = True
    size: str = "small"
    mamba: bool = False
    plan: Optional[dict] = None
    target_threads: Optional[int] = None
    seed: Optional[int] = None
    name: str = ""

    @property
    def id(self):
        if self.name:
            return self.name
        flags = "".join(f for f, on in zip("Dzbsl", (self.D, self.z, self.bias, self.softplus, self.last)) if on)
        groups = f"{self.G}" + (f".{self.G_C}" if self.G_C is not None else "") if self.bc in ("group", "mixed") else ""
        return (f"b{self.batch}_d{self.dim}_L{self.L}_N{self.N}_{str(self.dtype)[6:]}_{self.bc}{groups}_"
                f"{flags or 'none'}" + (f"_bc{str(self.bc_dtype)[6:]}" if self.bc_dtype else "")
                + (f"_t{self.target_threads}" if self.target_threads else ""))


def _tiny(name, *shape, plan, **kw):
    return Case(*shape, size="tiny", plan=plan, name=name, **kw)


CASES = [
    # small: the C++ CPU kernels (and the CUDA kernels on a GPU, same shapes)
    Case(1, 1, 1, 1),
    Case(3, 3, 7, 4, bc="const", D=False, z=False, bias=False, softplus=False, last=False),
    Case(1, 17, 65, 16),
    Case(3, 17, 65, 4, bc="group", z=False, last=False),
    Case(3, 64, 65, 16, bc="group", G=4, bias=False),             # one 16-lane block per group
    Case(1, 64, 256, 16, z=False),                                 # 4 slices of one group
    Case(1, 64, 65, 8, bc="group", G=8, D=False, last=False),      # groups of 8: blocks span groups
    Case(3, 64, 65, 4, bc="group", G=2, softplus=False),           # groups of 32 channels
    Case(1, 17, 65, 5, bc="mixed"),                                # B (dim,N), C grouped: generic N
    Case(1, 3, 65, 64),                                            # N = 64
    Case(3, 3, 256, 16, bc="const"),
    Case(1, 17, 1024, 16),
    Case(1, 3, 4096, 4, z=False),
    Case(3, 17, 65, 16, BF16),
    Case(1, 64, 65, 4, BF16, bc="group", G=4, z=False, softplus=False, last=False),
    Case(1, 3, 256, 5, BF16, bc="const"),
    Case(3, 17, 65, 16, F16),
    Case(1, 64, 7, 1, F16, bc="group", G=2, D=False, bias=False),
    Case(1, 3, 1024, 16, F16, bc="const", last=False),
    # small, also against mamba-ssm's selective_scan_ref
    Case(1, 3, 7, 4, mamba=True, seed=52),
    Case(3, 17, 40, 16, bc="group", z=False, last=False, mamba=True, seed=297),
    Case(1, 64, 33, 16, bc="const", mamba=True, seed=295),
    Case(2, 64, 20, 4, bc="group", G=4, D=False, bias=False, softplus=False, mamba=True, seed=204),
    Case(2, 17, 33, 16, BF16, last=False, mamba=True, seed=248),
    Case(2, 17, 33, 4, F16, mamba=True, seed=248),
    # tiny: the Triton kernels, with plans that put every tile/chunk/block boundary inside
    _tiny("chunks_masked_channels", 2, 3, 15, 4, bc="group", plan=dict(tile=4, chunk_tiles=2, block_d=2)),
    _tiny("groups_subblocks_N16", 1, 6, 13, 16, bc="group", G=2, z=False,
          plan=dict(tile=4, chunk_tiles=1, block_d=2, bwd_sub=2)),
    _tiny("per_channel_N1_plain", 2, 3, 10, 1, bc="const", z=False, D=False, bias=False, softplus=False,
          plan=dict(tile=4, chunk_tiles=2, block_d=4)),
    _tiny("bc3d_one_chunk", 1, 5, 9, 16, plan=dict(tile=8, block_d=8, bwd_sub=1)),
    _tiny("bf16", 2, 3, 15, 4, BF16, bc="group", plan=dict(tile=4, chunk_tiles=2, block_d=4)),
    _tiny("fp16_3d", 1, 4, 11, 4, F16, bias=False, plan=dict(tile=4, chunk_tiles=2, block_d=4)),
    _tiny("L1", 1, 3, 1, 2, bc="group", plan=dict(tile=4, block_d=4)),
    # gpu: the CUDA kernels at GPU sizes
    Case(2, 64, 1000, 16, bc="group", size="gpu", mamba=True),
    Case(1, 48, 65, 4, F16, bc="group", size="gpu", mamba=True),
    Case(2, 128, 777, 16, BF16, bc="group", G=2, G_C=4, size="gpu", mamba=True),
    Case(1, 32, 2048, 1, D=False, z=False, last=False, size="gpu", mamba=True),
    Case(2, 40, 300, 8, bc="const", softplus=False, size="gpu", mamba=True),
    Case(1, 16, 16384, 16, bc="group", size="gpu"),                          # long: chunked with a carry pass
    Case(1, 64, 4096, 16, F16, bc="group", size="gpu", target_threads=1),    # one segment, one block per tile
    Case(2, 24, 500, 64, size="gpu"),                                         # generic kernel (N up to 64)
    Case(1, 33, 129, 12, BF16, bc="group", G=3, G_C=1, bc_dtype=BF16, size="gpu"),
]
TRITON_GPU_SCALE = {"batch": 2, "dim": 8, "L": 40}  # a tiny case's shape on a GPU (automatic plan)


def check_small(backend, device, case, against_mamba=False):
    seed = case.L + case.dim + case.N if case.seed is None else case.seed
    inputs = make_inputs(case.batch, case.dim, case.L, case.N, case.dtype, case.bc, case.G, case.D, case.z,
                         case.bias, case.softplus, seed=seed)
    run_case(inputs, backend=backend, device=device, last=case.last, against_mamba=against_mamba)


def check_tiny(device, case):
    """The Triton kernels (with every output poisoned) against the float64 reference: outputs,
    last_state and every gradient, through a loss on both outputs."""
    batch, dim, L, N, dtype, has_z = case.batch, case.dim, case.L, case.N, case.dtype, case.z
    if device == "cuda":
        batch, dim, L = (max(batch, TRITON_GPU_SCALE["batch"]), dim * TRITON_GPU_SCALE["dim"],
                         L * TRITON_GPU_SCALE["L"] if L > 1 else 1)
    layout = {"group": f"g{case.G}", "var": "3d", "const": "2d"}[case.bc]
    args = tc.ss_inputs(device, batch, dim, L, N, layout, has_z, case.D, case.bias, dtype)
    g = torch.Generator().manual_seed(1)
    gy = torch.randn(batch, dim, L, generator=g, dtype=torch.float64).to(device)
    gl = torch.randn(batch, dim, N, generator=g, dtype=torch.float64).to(device)
    with tc.plan(device, case.plan):
        out, last, grads = tc.ss_run(lambda *a, **k: selective_scan_fn(*a, **k, backend="triton"), args,
                                   case.softplus, gy, gl)
    ref_args = [tc.leaf64(a) for a in args]
    r_out, r_last, r_grads = tc.ss_run(reference.selective_scan_ref64, ref_args, case.softplus, gy, gl)

    assert out.dtype == dtype and last.dtype == torch.float32
    rt, at = out_tol(dtype)
    assert_close(out, r_out, rt, at, "out")
    assert_close(last, r_last, rt, at, "last_state")
    names = ["du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"]
    tols = {"du": du_tol(dtype), "ddelta": ddelta_tol(dtype), "dA": dA_tol(dtype, has_z),
            "dz": du_tol(dtype)}
    present = [n for n, a in zip(names, args) if a is not None]
    for name, got, want, arg in zip(present, grads, r_grads, [a for a in args if a is not None]):
        assert got.shape == arg.shape and got.dtype == arg.dtype, name
        r, a = tols.get(name, weight_tol(dtype, has_z))
        if arg.dtype != torch.float32:  # half-precision gradients are rounded to their dtype
            r, a = max(r, out_tol(arg.dtype)[0] * 2), max(a, out_tol(arg.dtype)[1] * 2)
        assert_close(got, want, r, a, name)


def gpu_case(case):
    """A gpu case as tests/cuda_parity.py's SSCase (inputs, float64 reference, comparison)."""
    return cp.SSCase(case.batch, case.dim, case.L, case.N, dtype=case.dtype,
                     bc={"group": "4d", "var": "3d", "const": "2d"}[case.bc], groups_b=case.G,
                     groups_c=case.G if case.G_C is None else case.G_C, bc_dtype=case.bc_dtype,
                     has_D=case.D, has_z=case.z, has_db=case.bias, softplus=case.softplus, dlast=case.last,
                     target_threads=case.target_threads, seed=case.seed or 0)


def check_gpu(env, case):
    c = gpu_case(case)
    cp.set_target(env, c.target_threads)
    inp = cp.ss_inputs(c)
    cp.ss_compare(c, cp.ss_run_api(c, inp, device="cuda"), cp.ss_reference(c, inp, device="cuda"), tag=c.id())


@pytest.mark.parametrize("target,case", case_params(CASES))
def test_matches_float64_reference(request, target, case):
    check_on(request, target, case, check_small, check_tiny, check_gpu)


@pytest.mark.parametrize("target,case", case_params(CASES, keep=lambda c: c.mamba))
def test_matches_mamba_selective_scan_ref(request, target, case):
    """Against mamba-ssm: its selective_scan_ref in the same dtype (small cases), its compiled
    selective_scan_fn on a GPU (gpu cases)."""
    backend, device = TARGETS[target]
    if case.size == "small":
        check_small(backend, device, case, against_mamba=True)
        return
    request.getfixturevalue("cuda_env")
    if reference.mamba_selective_scan_cuda_fn() is None:
        pytest.skip("mamba-ssm's compiled selective_scan_fn (selective_scan_cuda) is not installed")
    c = gpu_case(case)
    if c.bc_dtype is not None or (c.bc == "4d" and c.groups_b != c.groups_c):
        pytest.skip("mamba-ssm needs B and C of one layout and dtype")
    inp = cp.ss_inputs(c)
    ours = cp.ss_run_api(c, inp, device="cuda")
    theirs = cp.ss_run_api(c, inp, device="cuda", backend="reference")  # mamba's CUDA kernel on CUDA
    cp.ss_compare(c, ours, theirs, tag="vs mamba " + c.id())


def test_gradient_through_last_state_only():
    """A loss on last_state alone seeds the adjoint at the end of the sequence."""
    inputs = make_inputs(2, 17, 130, 16, seed=3)
    leaves = _leaves(inputs, "cpu")
    _, last = ops.selective_scan_fn(**leaves, return_last_state=True, backend="cpu")
    ref_leaves = _leaves(inputs, "cpu", lambda t: t.double())
    _, ref_last = reference.selective_scan_ref64(**ref_leaves, return_last_state=True)
    w = torch.randn(last.shape, generator=torch.Generator().manual_seed(4))
    got = _grads([last], [w], leaves)
    want = _grads([ref_last], [w.double()], ref_leaves)
    for name in ("C", "D", "z"):  # they only enter the output, not the state
        assert name not in want
        assert torch.all(got.pop(name) == 0), f"d{name} must be zero for a loss on last_state"
    assert set(got) == set(want)
    for name in got:
        scale = max(1.0, want[name].abs().max().item())
        assert_close(got[name] / scale, want[name] / scale, *_grad_tols(inputs, name), f"d{name}")


def test_strided_inputs():
    """Non-contiguous u/delta/z (channel-contiguous storage) and strided B/C give the same results."""
    inputs = make_inputs(2, 20, 70, 8, bform="group", G=2, seed=5)
    strided = dict(inputs)
    for k in ("u", "delta", "z"):
        strided[k] = inputs[k].transpose(1, 2).contiguous().transpose(1, 2)
        assert not strided[k].is_contiguous()
    for k in ("B", "C"):
        base = torch.zeros(*inputs[k].shape[:3], 2 * inputs[k].shape[3])
        strided[k] = base[..., ::2]
        strided[k].copy_(inputs[k])
    a = ops.selective_scan_fn(**inputs, backend="cpu")
    b = ops.selective_scan_fn(**strided, backend="cpu")
    assert torch.equal(a, b)
    run_case(strided)


def test_backward_op_outputs():
    """Raw selective_scan_bwd: shapes and dtypes of its results, including the empty gradients of
    absent inputs and the full-size dB/dC of 0-stride expanded B/C."""
    inputs = make_inputs(2, 5, 70, 4, bform="const", has_D=False, has_z=False, has_bias=False)
    u, delta, A = inputs["u"], inputs["delta"], inputs["A"]
    Bx = inputs["B"].unsqueeze(0).unsqueeze(-1).expand(2, 5, 4, 70)
    Cx = inputs["C"].unsqueeze(0).unsqueeze(-1).expand(2, 5, 4, 70)
    out, last, ckpt = torch.ops.hands3c.selective_scan_fwd(u, delta, A, Bx, Cx, None, None, None, True)
    assert ckpt.shape == (2, 5, 2, 4) and last.shape == (2, 5, 4)
    assert torch.equal(ckpt[:, :, 0], torch.zeros(2, 5, 4))
    dout = torch.randn(out.shape)
    du, ddelta, dA, dB, dC, dD, dz, ddb = torch.ops.hands3c.selective_scan_bwd(
        dout, None, u, delta, A, Bx, Cx, None, None, None, True, ckpt)
    assert du.shape == u.shape and ddelta.shape == delta.shape and dA.shape == A.shape
    assert dB.shape == (2, 5, 4, 70) and dB.is_contiguous() and dC.shape == (2, 5, 4, 70)
    for t in (dD, dz, ddb):
        assert t.numel() == 0 and t.dtype == F32
    # The expanded-form dB summed over batch and positions is the (dim, N) gradient.
    leaves = _leaves(inputs, "cpu")
    o = ops.selective_scan_fn(**leaves, backend="cpu")
    gB, = torch.autograd.grad((o * dout).sum(), [leaves["B"]])
    assert torch.allclose(gB, dB.sum(dim=(0, 3)), rtol=1e-6, atol=1e-6)


def test_checkpoints_are_states_before_each_chunk():
    inputs = make_inputs(1, 4, 200, 4, has_z=False, seed=8)
    Bc = inputs["B"].unsqueeze(1)
    Cc = inputs["C"].unsqueeze(1)
    _, _, ckpt = torch.ops.hands3c.selective_scan_fwd(inputs["u"], inputs["delta"], inputs["A"], Bc, Cc,
                                                      inputs["D"], None, inputs["delta_bias"], True)
    for c in range(1, 4):
        sub = {k: (v[..., : 64 * c] if isinstance(v, torch.Tensor) and v.dim() == 3 else v) for k, v in inputs.items()}
        _, h = reference.selective_scan_ref64(**sub, return_last_state=True)
        assert_close(ckpt[:, :, c], h, *out_tol(F32), f"checkpoint {c}")


@pytest.mark.parametrize("bform,G", [("var", 1), ("const", 1), ("group", 8)])
def test_backward_is_deterministic_across_thread_counts(bform, G):
    """Bitwise-identical forward and backward results on 1, 2 and 3 threads."""
    inputs = make_inputs(2, 96, 150, 16, bform=bform, G=G, seed=9)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3, 1):
            torch.set_num_threads(threads)
            leaves = _leaves(inputs, "cpu")
            out, last = ops.selective_scan_fn(**leaves, return_last_state=True, backend="cpu")
            gen = torch.Generator().manual_seed(10)
            grads = _grads([out, last], [torch.randn(out.shape, generator=gen), torch.randn(last.shape, generator=gen)],
                           leaves)
            results.append([out, last] + [grads[n] for n in NAMES])
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for x, y in zip(results[0], other):
            assert torch.equal(x, y)


@pytest.mark.filterwarnings("ignore:Input #.* is not a double precision")
def test_gradcheck_tiny_float32():
    """Finite differences on a tiny case.  The kernel computes in float32 by contract (there is no
    float64 kernel), so gradcheck runs in float32 with a step and tolerances suited to float32
    finite differences; exactness is covered by the float64-reference tests above."""
    inputs = make_inputs(1, 2, 5, 2, bform="var", seed=12)
    names = [n for n in NAMES if inputs[n] is not None]
    leaves = [inputs[n].clone().requires_grad_(True) for n in names]

    def fn(*ts):
        kw = dict(zip(names, ts))
        out, last = ops.selective_scan_fn(**kw, delta_softplus=True, return_last_state=True, backend="cpu")
        return out, last

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-2, atol=3e-2, rtol=3e-2, nondet_tol=0.0)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), dim_per_group=st.integers(1, 12), G=st.sampled_from([1, 2, 4]),
       L=st.integers(1, 150), N=st.sampled_from([1, 2, 4, 8, 16, 7]),
       bform=st.sampled_from(["const", "var", "group", "mixed"]), flags=st.integers(0, 31),
       seed=st.integers(0, 2**16))
def test_property_random_small_shapes(batch, dim_per_group, G, L, N, bform, flags, seed):
    dim = dim_per_group * G
    inputs = make_inputs(batch, dim, L, N, F32, bform, G, bool(flags & 1), bool(flags & 2), bool(flags & 4),
                         bool(flags & 8), seed=seed)
    run_case(inputs, last=bool(flags & 16), seed=seed)


def test_opcheck():
    inputs = make_inputs(2, 5, 70, 4, bform="group", G=1, seed=13)
    args = (inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], inputs["D"], inputs["z"],
            inputs["delta_bias"], True)
    args = tuple(a.clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(torch.ops.hands3c.selective_scan_fwd.default, args)


# ---- bad input: clear errors naming the argument ----------------------------------------

def test_errors_name_the_argument():
    kw = make_inputs(1, 4, 6, 4, bform="var")
    f = lambda **over: ops.selective_scan_fn(**{**kw, **over}, backend="cpu")
    with pytest.raises(ValueError, match="u must have 3 dimensions"):
        f(u=kw["u"][0])
    with pytest.raises(ValueError, match="delta must have shape"):
        f(delta=kw["delta"][..., :5])
    with pytest.raises(ValueError, match="A must have shape"):
        f(A=kw["A"][:3])
    with pytest.raises(ValueError, match="B must have shape"):
        f(B=kw["B"][..., :5])
    with pytest.raises(ValueError, match="C must have shape"):
        f(C=kw["C"][:, :3])
    with pytest.raises(ValueError, match="B has 3 groups"):
        f(B=torch.randn(1, 3, 4, 6))
    with pytest.raises(ValueError, match="C must have 2 or 3 or 4 dimensions"):
        f(C=torch.randn(4))
    with pytest.raises(ValueError, match="D must have shape"):
        f(D=torch.randn(5))
    with pytest.raises(ValueError, match="delta_bias must have shape"):
        f(delta_bias=torch.randn(3))
    with pytest.raises(ValueError, match="z must have shape"):
        f(z=kw["z"][:, :2])
    with pytest.raises(ValueError, match="state size N"):
        f(A=-torch.rand(4, 65), B=torch.randn(4, 65), C=torch.randn(4, 65))
    with pytest.raises(TypeError, match="u must have dtype"):
        f(u=kw["u"].double())
    with pytest.raises(TypeError, match="delta must have u's dtype"):
        f(delta=kw["delta"].half())
    with pytest.raises(TypeError, match="z must have u's dtype"):
        f(z=kw["z"].bfloat16())
    with pytest.raises(TypeError, match="A must have dtype"):
        f(A=kw["A"].double())
    with pytest.raises(TypeError, match="complex A"):
        f(A=torch.complex(kw["A"], kw["A"]))
    with pytest.raises(TypeError, match="D must have dtype"):
        f(D=torch.randn(4).half())
    with pytest.raises(TypeError, match="B must be a torch.Tensor"):
        f(B=[[1.0] * 4] * 4)
    with pytest.raises(ValueError, match="delta is on meta"):
        f(delta=kw["delta"].to("meta"))
    with pytest.raises(ValueError, match="C is on meta"):
        f(C=kw["C"].to("meta"))


def test_raw_operator_checks_its_arguments():
    """The C++ operators validate on their own (they can be called without the wrapper)."""
    kw = make_inputs(1, 4, 6, 4, bform="group", G=2)
    args = [kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], None, None, None, False]
    bad_B = list(args)
    bad_B[3] = torch.randn(1, 3, 4, 6)
    with pytest.raises(ValueError, match="B must be"):
        torch.ops.hands3c.selective_scan_fwd(*bad_B)
    bad_A = list(args)
    bad_A[2] = torch.randn(4, 65)
    with pytest.raises(ValueError, match="N"):
        torch.ops.hands3c.selective_scan_fwd(*bad_A)
    out, last, ckpt = torch.ops.hands3c.selective_scan_fwd(*args)
    with pytest.raises(ValueError, match="checkpoints"):
        torch.ops.hands3c.selective_scan_bwd(torch.randn(out.shape), None, *args, ckpt[:, :2])


# ---- Triton (backend="triton") --------------------------------------------------------------------

@pytest.mark.parametrize("device", devices_for_test())
def test_triton_last_state_only_gradient(device):
    """Gradient flowing in only through last_state (dout is zero), across chunks."""
    args = tc.ss_inputs(device, 1, 3, 11, 4, "g1", False, True, True, torch.float32, seed=3)
    with tc.plan(device, dict(tile=4, chunk_tiles=1, block_d=4)):
        _, last = selective_scan_fn(*args, delta_softplus=True, return_last_state=True, backend="triton")
        grads = torch.autograd.grad(last.square().sum(), [a for a in args if a is not None])
    ref_args = [tc.leaf64(a) for a in args]
    _, r_last = reference.selective_scan_ref64(*ref_args, delta_softplus=True, return_last_state=True)
    r_grads = torch.autograd.grad(r_last.square().sum(), [a for a in ref_args if a is not None], allow_unused=True)
    for got, want in zip(grads, r_grads):
        want = torch.zeros_like(got, dtype=torch.float64) if want is None else want  # C: unused by last_state
        assert_close(got, want, 2e-3, 4e-3, "grad via last_state")


@pytest.mark.parametrize("device", devices_for_test())
def test_triton_backward_is_deterministic(device):
    args = tc.ss_inputs(device, 2, 6, 13, 4, "g2", True, True, True, torch.float32, seed=5)
    runs = []
    for _ in range(2):
        with tc.plan(device, dict(tile=4, chunk_tiles=1, block_d=2, bwd_sub=2)):
            out = selective_scan_fn(*args, delta_softplus=True, backend="triton")
            runs.append(torch.autograd.grad(out.square().sum(), [a for a in args if a is not None]))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_triton_matches_cpu_backend():
    args = tc.ss_inputs("cpu", 2, 3, 15, 4, "g1", True, True, True, torch.float32, seed=6)
    g = torch.Generator().manual_seed(2)
    gy, gl = torch.randn(2, 3, 15, generator=g), torch.randn(2, 3, 4, generator=g)
    with scan_config(poison=True, tile=4, chunk_tiles=2, block_d=2):
        out, last, grads = tc.ss_run(lambda *a, **k: selective_scan_fn(*a, **k, backend="triton"), args, True, gy, gl)
    out_c, last_c, grads_c = tc.ss_run(lambda *a, **k: selective_scan_fn(*a, **k, backend="cpu"), args, True, gy, gl)
    assert_close(out, out_c, *out_tol(torch.float32), "out vs cpu")
    assert_close(last, last_c, *out_tol(torch.float32), "last_state vs cpu")
    for got, want in zip(grads, grads_c):
        assert_close(got, want, *ddelta_tol(torch.float32), "grad vs cpu")


@pytest.mark.parametrize("device", devices_for_test())
@pytest.mark.parametrize("chunk_tiles", [1, 0])
def test_triton_inference_forward_skips_checkpoints(device, chunk_tiles):
    """Under no_grad no checkpoint is stored (need_ck=False) and the outputs are unchanged,
    with several chunks (checkpoint buffer used as scratch) and with one."""
    ss = tc.ss_inputs(device, 1, 3, 11, 4, "g1", True, True, True, torch.float32, seed=8)
    cfg = dict(tile=4, chunk_tiles=chunk_tiles, block_d=4)
    with tc.plan(device, cfg):
        out, last = selective_scan_fn(*ss, delta_softplus=True, return_last_state=True, backend="triton")
        with torch.no_grad():
            out_i, last_i = selective_scan_fn(*ss, delta_softplus=True, return_last_state=True, backend="triton")
            ck_ss = torch.ops.hands3c.selective_scan_fwd_triton(*ss, True, 4, chunk_tiles, 4, False)[2]
    assert torch.equal(out, out_i) and torch.equal(last, last_i)
    assert ck_ss.numel() == 0


@pytest.mark.parametrize("device", devices_for_test())
@pytest.mark.parametrize("name", ["fwd", "bwd"])
def test_triton_opcheck(device, name):
    """torch.library.opcheck of hands3c::selective_scan_{fwd,bwd}_triton."""
    ss = tc.ss_inputs(device, 1, 3, 6, 2, "g1", True, True, True, torch.float32, seed=11)
    tc.opcheck("selective_scan", name, (*ss, True, 4, 1, 2, True),
               lambda o: (torch.randn_like(o[0]), torch.randn_like(o[1]), *tc.detached(ss), True, o[2], 4, 1, 2, 1))


# ---- the CUDA backend (backend="cuda") ------------------------------------------------------------

@pytest.mark.parametrize("target", [pytest.param(t, marks=cp.GPU) for t in (None, 1, 10**6)])
def test_cuda_backward_deterministic(cuda_env, target):
    """No float atomics: repeated runs give identical bits, whatever the thread target."""
    cp.set_target(cuda_env, target)
    sc = cp.SSCase(2, 64, 700, 16, groups_b=1, groups_c=1)
    si = cp.ss_inputs(sc)
    x, y = cp.ss_run_api(sc, si), cp.ss_run_api(sc, si)
    for k in x[2]:
        assert torch.equal(x[2][k], y[2][k]), k


@pytest.mark.parametrize("dummy", [pytest.param(0, marks=cp.GPU)])
def test_cuda_mixed_devices_rejected(dummy):
    case = cp.SSCase(1, 4, 16, 4)
    t = cp.ss_inputs(case)
    dev = {k: (None if v is None else v.cuda()) for k, v in t.items()}
    with pytest.raises(ValueError, match="one device"):
        selective_scan_fn(dev["u"], dev["delta"], t["A"], dev["B"], dev["C"], backend="cuda")
    # The operator itself (below the Python checks) names the offending tensor.
    with pytest.raises(ValueError, match="A is on cpu"):
        torch.ops.hands3c.selective_scan_fwd(dev["u"], dev["delta"], t["A"], dev["B"], dev["C"], None, None, None,
                                             True)


def test_cuda_backend_rejects_cpu_tensors():
    """backend='cuda' with CPU tensors raises a ValueError naming the device, before any kernel."""
    t = cp.ss_inputs(cp.SSCase(1, 4, 16, 4))
    with pytest.raises(ValueError, match="cuda.*cpu|CUDA tensors, got tensors on cpu"):
        selective_scan_fn(t["u"], t["delta"], t["A"], t["B"], t["C"], backend="cuda")


def test_cuda_backend_rejects_large_state():
    """N > 64 is refused by the Python validation before the backend is even chosen."""
    t = cp.ss_inputs(cp.SSCase(1, 4, 16, 65, has_z=False))
    with pytest.raises(ValueError, match="N .* must be in 1..64"):
        selective_scan_fn(t["u"], t["delta"], t["A"], t["B"], t["C"], backend="cuda")


def test_cuda_backend_rejects_mixed_devices():
    """Tensors on two devices are refused by the Python validation (meta stands in for a GPU)."""
    t = cp.ss_inputs(cp.SSCase(1, 4, 16, 4))
    with pytest.raises(ValueError, match="one device"):
        selective_scan_fn(t["u"], t["delta"], t["A"].to("meta"), t["B"], t["C"], backend="cuda")
