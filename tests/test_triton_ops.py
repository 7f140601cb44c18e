"""Triton backend (handS3C/ops/_triton.py, kernels/): forward and every gradient against the
float64 references (SPEC §4 tolerances), the C++ CPU kernels where they exist, determinism,
and torch.library.opcheck of the ``hands3c::*_triton`` operators.

Without a GPU the kernels run in Triton's CPU interpreter (conftest sets TRITON_INTERPRET=1),
where every loop iteration of every program costs ~1 ms, so the CPU cases are tiny but use a
launch plan (``_triton.scan_config``: 2-8 step tiles, 1-2 tile chunks, 2-4 channel blocks,
channel sub-blocks) that puts every boundary inside them: partial tiles, several chunks
(the 3-pass chunk-parallel paths), masked channel blocks, sub-block reductions.  With a GPU
the same tests also run at larger sizes with the automatic plan (autotuned kernels).
Every output buffer is poisoned with NaN before the kernels write it.
"""
import os
import subprocess
import sys

import pytest
import torch

from conftest import HAS_GPU, REPO_ROOT, devices_for_test
from tolerances import assert_close, dA_tol, ddelta_tol, du_tol, out_tol, weight_tol

from handS3C import reference
from handS3C.ops import cross_scan_selective_scan, s3c_merge, selective_scan_fn

import triton  # noqa: E402,F401  (pinned in requirements/ci.txt: a missing Triton is a failure, not a skip)
from handS3C.ops import _triton  # noqa: E402  (needs triton)

DEVICES = devices_for_test()


def _plan(device, cfg):
    """The CPU cases' explicit plan; on a GPU the automatic plan (bigger shapes there)."""
    return _triton.scan_config(poison=True, **(cfg if device == "cpu" else {}))


def _leaf64(t):
    return None if t is None else t.detach().double().requires_grad_(t.requires_grad)


# =========================================================================================
# selective_scan_fn
# =========================================================================================

# name: (batch, dim, L, N, B/C layout, z, D, delta_bias, softplus, dtype, CPU plan)
#   layout "g<G>" = (batch, G, N, L); "3d" = (batch, N, L); "2d" = (dim, N) per channel.
SS_CASES = {
    "chunks_masked_channels": (2, 3, 15, 4, "g1", True, True, True, True, torch.float32,
                               dict(tile=4, chunk_tiles=2, block_d=2)),
    "groups_subblocks_N16": (1, 6, 13, 16, "g2", False, True, True, True, torch.float32,
                             dict(tile=4, chunk_tiles=1, block_d=2, bwd_sub=2)),
    "per_channel_N1_plain": (2, 3, 10, 1, "2d", False, False, False, False, torch.float32,
                             dict(tile=4, chunk_tiles=2, block_d=4)),
    "bc3d_one_chunk": (1, 5, 9, 16, "3d", True, True, True, True, torch.float32,
                       dict(tile=8, block_d=8, bwd_sub=1)),
    "bf16": (2, 3, 15, 4, "g1", True, True, True, True, torch.bfloat16,
             dict(tile=4, chunk_tiles=2, block_d=4)),
    "fp16_3d": (1, 4, 11, 4, "3d", True, True, False, True, torch.float16,
                dict(tile=4, chunk_tiles=2, block_d=4)),
    "L1": (1, 3, 1, 2, "g1", True, True, True, True, torch.float32, dict(tile=4, block_d=4)),
}
SS_GPU_SCALE = {"batch": 2, "dim": 8, "L": 40}


def _ss_inputs(device, batch, dim, L, N, layout, has_z, has_d, has_db, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, dt=torch.float32):
        return (scale * torch.randn(*shape, generator=g)).to(device=device, dtype=dt).requires_grad_()

    u = rnd(batch, dim, L, dt=dtype)
    delta = rnd(batch, dim, L, scale=0.5, dt=dtype)
    A = (-(0.5 + torch.rand(dim, N, generator=g))).to(device).requires_grad_()
    if layout == "2d":
        B, C = rnd(dim, N), rnd(dim, N)
    elif layout == "3d":
        B, C = rnd(batch, N, L, dt=dtype), rnd(batch, N, L, dt=dtype)
    else:
        G = int(layout[1:])
        B, C = rnd(batch, G, N, L, dt=dtype), rnd(batch, G, N, L, dt=dtype)
    D = rnd(dim) if has_d else None
    z = rnd(batch, dim, L, dt=dtype) if has_z else None
    db = rnd(dim, scale=0.5) if has_db else None
    return [u, delta, A, B, C, D, z, db]


def _ss_run(fn, args, softplus, gy, gl):
    out, last = fn(*args, delta_softplus=softplus, return_last_state=True)
    leaves = [a for a in args if a is not None]
    loss = (out.to(gy.dtype) * gy).sum() + (last.to(gl.dtype) * gl).sum()
    return out, last, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(SS_CASES))
def test_selective_scan_matches_float64_reference(device, case):
    batch, dim, L, N, layout, has_z, has_d, has_db, softplus, dtype, cfg = SS_CASES[case]
    if device == "cuda":
        batch, dim, L = (max(batch, SS_GPU_SCALE["batch"]), dim * SS_GPU_SCALE["dim"],
                         L * SS_GPU_SCALE["L"] if L > 1 else 1)
    args = _ss_inputs(device, batch, dim, L, N, layout, has_z, has_d, has_db, dtype)
    g = torch.Generator().manual_seed(1)
    gy = torch.randn(batch, dim, L, generator=g, dtype=torch.float64).to(device)
    gl = torch.randn(batch, dim, N, generator=g, dtype=torch.float64).to(device)
    with _plan(device, cfg):
        out, last, grads = _ss_run(lambda *a, **k: selective_scan_fn(*a, **k, backend="triton"), args,
                                   softplus, gy, gl)
    ref_args = [_leaf64(a) for a in args]
    r_out, r_last, r_grads = _ss_run(reference.selective_scan_ref64, ref_args, softplus, gy, gl)

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


@pytest.mark.parametrize("device", DEVICES)
def test_selective_scan_last_state_only_gradient(device):
    """Gradient flowing in only through last_state (dout is zero), across chunks."""
    args = _ss_inputs(device, 1, 3, 11, 4, "g1", False, True, True, torch.float32, seed=3)
    with _plan(device, dict(tile=4, chunk_tiles=1, block_d=4)):
        _, last = selective_scan_fn(*args, delta_softplus=True, return_last_state=True, backend="triton")
        grads = torch.autograd.grad(last.square().sum(), [a for a in args if a is not None])
    ref_args = [_leaf64(a) for a in args]
    _, r_last = reference.selective_scan_ref64(*ref_args, delta_softplus=True, return_last_state=True)
    r_grads = torch.autograd.grad(r_last.square().sum(), [a for a in ref_args if a is not None], allow_unused=True)
    for got, want in zip(grads, r_grads):
        want = torch.zeros_like(got, dtype=torch.float64) if want is None else want  # C: unused by last_state
        assert_close(got, want, 2e-3, 4e-3, "grad via last_state")


@pytest.mark.parametrize("device", DEVICES)
def test_selective_scan_backward_is_deterministic(device):
    args = _ss_inputs(device, 2, 6, 13, 4, "g2", True, True, True, torch.float32, seed=5)
    runs = []
    for _ in range(2):
        with _plan(device, dict(tile=4, chunk_tiles=1, block_d=2, bwd_sub=2)):
            out = selective_scan_fn(*args, delta_softplus=True, backend="triton")
            runs.append(torch.autograd.grad(out.square().sum(), [a for a in args if a is not None]))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_selective_scan_matches_cpu_backend():
    args = _ss_inputs("cpu", 2, 3, 15, 4, "g1", True, True, True, torch.float32, seed=6)
    g = torch.Generator().manual_seed(2)
    gy, gl = torch.randn(2, 3, 15, generator=g), torch.randn(2, 3, 4, generator=g)
    with _triton.scan_config(poison=True, tile=4, chunk_tiles=2, block_d=2):
        out, last, grads = _ss_run(lambda *a, **k: selective_scan_fn(*a, **k, backend="triton"), args, True, gy, gl)
    out_c, last_c, grads_c = _ss_run(lambda *a, **k: selective_scan_fn(*a, **k, backend="cpu"), args, True, gy, gl)
    assert_close(out, out_c, *out_tol(torch.float32), "out vs cpu")
    assert_close(last, last_c, *out_tol(torch.float32), "last_state vs cpu")
    for got, want in zip(grads, grads_c):
        assert_close(got, want, *ddelta_tol(torch.float32), "grad vs cpu")


# =========================================================================================
# cross_scan_selective_scan
# =========================================================================================

# name: (B, D, P, Q, N, R, u layout, CPU plan); "perm" = the channel branch's permuted view
CS_CASES = {
    "plane3x5_chunks": (2, 3, 3, 5, 4, 2, "contig", dict(tile=4, chunk_tiles=2, block_d=2, bwd_sub=1)),
    "row1x7_N1_subblocks": (1, 3, 1, 7, 1, 2, "contig", dict(tile=4, chunk_tiles=1, block_d=2, bwd_sub=2)),
    "col7x1": (1, 2, 7, 1, 3, 1, "contig", dict(tile=2, chunk_tiles=2, block_d=4)),
    "perm5x4_N16_one_chunk": (1, 4, 5, 4, 16, 3, "perm", dict(tile=8, block_d=4)),
    "square4x4_exact_tiles": (1, 2, 4, 4, 4, 2, "contig", dict(tile=4, chunk_tiles=3, block_d=2)),
}


def _cs_inputs(device, Bn, D, P, Q, N, R, layout, seed=0, only_direction=None):
    g = torch.Generator().manual_seed(seed)
    if layout == "perm":  # like u.permute(B, W, d_inner, H) of an NCHW tensor
        u = torch.randn(Bn, Q, D, P, generator=g).permute(0, 2, 3, 1)
    else:
        u = torch.randn(Bn, D, P, Q, generator=g)
    xw = torch.randn(4, R + 2 * N, D, generator=g) / D ** 0.5
    wdt = torch.randn(4, D, R, generator=g) / R ** 0.5
    bias = -1.0 - 2.0 * torch.rand(4, D, generator=g)
    alog = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(4 * D, 1) + 0.1 * torch.randn(4 * D, N, generator=g)
    ds = torch.randn(4 * D, generator=g)
    if only_direction is not None:  # other directions contribute exactly nothing
        keep = torch.zeros(4, 1, 1)
        keep[only_direction] = 1
        xw = xw * keep
        ds = ds * keep.reshape(4, 1).expand(4, D).reshape(-1)
    return [t.to(device).requires_grad_() for t in (u, xw, wdt, bias, alog, ds)]


def _cs_check(device, args, cfg, seed=1):
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(tuple(args[0].shape), generator=g, dtype=torch.float64).to(device)
    with _plan(device, cfg):
        y = cross_scan_selective_scan(*args, backend="triton")
        grads = torch.autograd.grad((y.double() * gy).sum(), args)
    ref_args = [_leaf64(a) for a in args]
    r_y = reference.cross_scan_selective_scan_ref(*ref_args, scan_fn=reference.selective_scan_ref64)
    r_grads = torch.autograd.grad((r_y * gy).sum(), ref_args)
    f32 = torch.float32
    assert y.dtype == f32 and y.shape == args[0].shape
    assert_close(y, r_y, *out_tol(f32), "y")
    tols = [du_tol(f32), weight_tol(f32), weight_tol(f32), weight_tol(f32), dA_tol(f32), weight_tol(f32)]
    for name, got, want, tol in zip(["du", "dx_proj_weight", "ddt_projs_weight", "ddt_projs_bias",
                                     "dA_logs", "dDs"], grads, r_grads, tols):
        assert_close(got, want, *tol, name)
    return y, grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CS_CASES))
def test_cross_scan_matches_float64_reference(device, case):
    Bn, D, P, Q, N, R, layout, cfg = CS_CASES[case]
    if device == "cuda":
        Bn, D, P, Q = 2, D * 16, P * 4, Q * 4
    _cs_check(device, _cs_inputs(device, Bn, D, P, Q, N, R, layout), cfg)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("chunk_tiles", [0, 1], ids=["one_launch_4dirs", "chunked_2families"])
@pytest.mark.parametrize("direction", [0, 1, 2, 3])
def test_cross_scan_each_direction_alone(device, direction, chunk_tiles):
    """Only direction k has non-zero projections: a wrong traversal cannot hide in the sum.
    Both accumulation modes: one chunk (one launch, four directions in sequence) and
    several chunks (one launch per family)."""
    shape = (1, 3, 2, 3) if device == "cpu" else (2, 32, 12, 20)
    args = _cs_inputs(device, *shape, 4, 2, "contig", seed=10 + direction, only_direction=direction)
    _cs_check(device, args, dict(tile=4, chunk_tiles=chunk_tiles, block_d=4, bwd_sub=1))


@pytest.mark.parametrize("device", DEVICES)
def test_cross_scan_backward_is_deterministic(device):
    shape = (1, 5, 3, 4) if device == "cpu" else (2, 64, 16, 16)
    args = _cs_inputs(device, *shape, 4, 2, "contig", seed=7)
    runs = []
    for _ in range(2):
        with _plan(device, dict(tile=4, chunk_tiles=1, block_d=2, bwd_sub=2)):
            y = cross_scan_selective_scan(*args, backend="triton")
            runs.append((y,) + torch.autograd.grad(y.square().sum(), args))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_cross_scan_matches_cpu_backend():
    args = _cs_inputs("cpu", 2, 3, 3, 5, 4, 2, "perm", seed=4)
    gy = torch.randn(tuple(args[0].shape), generator=torch.Generator().manual_seed(2))
    with _triton.scan_config(poison=True, tile=4, chunk_tiles=2, block_d=2):
        y = cross_scan_selective_scan(*args, backend="triton")
        grads = torch.autograd.grad((y * gy).sum(), args)
    y_cpu = cross_scan_selective_scan(*args, backend="cpu")
    g_cpu = torch.autograd.grad((y_cpu * gy).sum(), args)
    assert_close(y, y_cpu, *out_tol(torch.float32), "y vs cpu")
    for got, want in zip(grads, g_cpu):
        assert_close(got, want, *du_tol(torch.float32), "grad vs cpu")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("chunk_tiles", [1, 0])
def test_inference_forward_skips_checkpoints(device, chunk_tiles):
    """Under no_grad no checkpoint is stored (need_ck=False) and the outputs are unchanged,
    with several chunks (checkpoint buffer used as scratch) and with one."""
    ss = _ss_inputs(device, 1, 3, 11, 4, "g1", True, True, True, torch.float32, seed=8)
    cs = _cs_inputs(device, 1, 3, 2, 5, 4, 2, "contig", seed=9)
    cfg = dict(tile=4, chunk_tiles=chunk_tiles, block_d=4)
    with _plan(device, cfg):
        out, last = selective_scan_fn(*ss, delta_softplus=True, return_last_state=True, backend="triton")
        y = cross_scan_selective_scan(*cs, backend="triton")
        with torch.no_grad():
            out_i, last_i = selective_scan_fn(*ss, delta_softplus=True, return_last_state=True, backend="triton")
            y_i = cross_scan_selective_scan(*cs, backend="triton")
            ck_ss = torch.ops.hands3c.selective_scan_fwd_triton(*ss, True, 4, chunk_tiles, 4, False)[2]
            ck_cs = torch.ops.hands3c.cross_scan_fwd_triton(*cs, 4, chunk_tiles, 4, False)[2]
    assert torch.equal(out, out_i) and torch.equal(last, last_i) and torch.equal(y, y_i)
    assert ck_ss.numel() == 0 and ck_cs.numel() == 0


# =========================================================================================
# s3c_merge
# =========================================================================================

# (source shape, permutation giving (..., C), z dtype)
MERGE_CASES = {
    "nchw_view_f32": ((2, 6, 3, 5), (0, 2, 3, 1), torch.float32),
    "nchw_view_bf16_gate": ((2, 6, 3, 5), (0, 2, 3, 1), torch.bfloat16),
    "rows_2d": ((7, 5), (0, 1), torch.float32),
    "five_dims": ((2, 3, 4, 5, 6), (0, 4, 2, 1, 3), torch.float32),
}


def _merge_inputs(device, src, perm, zdt, seed=0):
    g = torch.Generator().manual_seed(seed)
    ys = torch.randn(*src, generator=g).to(device).permute(*perm).requires_grad_()
    yc = torch.randn(*src, generator=g).to(device).permute(*perm).contiguous().requires_grad_()
    z = torch.randn(tuple(ys.shape), generator=g).to(device=device, dtype=zdt).requires_grad_()
    C = ys.shape[-1]
    w = (1 + 0.5 * torch.randn(C, generator=g)).to(device).requires_grad_()
    b = (0.5 * torch.randn(C, generator=g)).to(device).requires_grad_()
    return [ys, yc, z, w, b]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(MERGE_CASES))
def test_s3c_merge_matches_float64_reference(device, case):
    src, perm, zdt = MERGE_CASES[case]
    if device == "cuda":
        src = tuple(s * 4 for s in src)
    args = _merge_inputs(device, src, perm, zdt)
    gy = torch.randn(tuple(args[0].shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    with _triton.scan_config(poison=True):
        out = s3c_merge(*args, backend="triton")
        grads = torch.autograd.grad((out.double() * gy).sum(), args)
    ref_args = [_leaf64(a) for a in args]
    r_out = reference.s3c_merge_ref(*ref_args)
    r_grads = torch.autograd.grad((r_out * gy).sum(), ref_args)
    assert out.dtype == torch.float32 and out.shape == args[0].shape
    assert_close(out, r_out, *out_tol(torch.float32), "out")
    for name, got, want, arg in zip(["dy_spatial", "dy_channel", "dz", "dweight", "dbias"], grads, r_grads, args):
        assert got.dtype == arg.dtype, name
        tol = out_tol(arg.dtype) if arg.dtype != torch.float32 else weight_tol(torch.float32)
        assert_close(got, want, *tol, name)


def test_s3c_merge_matches_cpu_backend():
    args = _merge_inputs("cpu", (2, 6, 3, 5), (0, 2, 3, 1), torch.float32, seed=3)
    gy = torch.randn(tuple(args[0].shape), generator=torch.Generator().manual_seed(2))
    with _triton.scan_config(poison=True):
        out = s3c_merge(*args, backend="triton")
        grads = torch.autograd.grad((out * gy).sum(), args)
    out_cpu = s3c_merge(*args, backend="cpu")
    g_cpu = torch.autograd.grad((out_cpu * gy).sum(), args)
    assert_close(out, out_cpu, *out_tol(torch.float32), "out vs cpu")
    for got, want in zip(grads, g_cpu):
        assert_close(got, want, *weight_tol(torch.float32), "grad vs cpu")


# =========================================================================================
# torch.library.opcheck (schema, autograd registration, fake kernels, AOT dispatch)
# =========================================================================================

def _opcheck_cases(device):
    ss = _ss_inputs(device, 1, 3, 6, 2, "g1", True, True, True, torch.float32, seed=11)
    cs = _cs_inputs(device, 1, 2, 2, 3, 2, 1, "contig", seed=12)
    mg = _merge_inputs(device, (2, 5, 3), (0, 2, 1), torch.float32, seed=13)
    ops = torch.ops.hands3c
    with torch.no_grad():
        out, last, ck = ops.selective_scan_fwd_triton(*ss, True, 4, 1, 2, True)
        y, dbl, cck = ops.cross_scan_fwd_triton(*cs, 4, 1, 2, True)
        mo, mean, rstd = ops.s3c_merge_fwd_triton(*mg, 1e-5)
    nog = lambda ts: [t.detach() if isinstance(t, torch.Tensor) else t for t in ts]  # noqa: E731
    return {
        "selective_scan_fwd_triton": (ops.selective_scan_fwd_triton.default, (*ss, True, 4, 1, 2, True)),
        "selective_scan_bwd_triton": (ops.selective_scan_bwd_triton.default,
                                      (torch.randn_like(out), torch.randn_like(last), *nog(ss), True, ck, 4, 1, 2, 1)),
        "cross_scan_fwd_triton": (ops.cross_scan_fwd_triton.default, (*cs, 4, 1, 2, True)),
        "cross_scan_bwd_triton": (ops.cross_scan_bwd_triton.default,
                                  (torch.randn_like(y), *nog(cs), dbl, cck, 4, 1, 2, 1)),
        "s3c_merge_fwd_triton": (ops.s3c_merge_fwd_triton.default, (*mg, 1e-5)),
        "s3c_merge_bwd_triton": (ops.s3c_merge_bwd_triton.default, (torch.randn_like(mo), *nog(mg), mean, rstd)),
    }


OPCHECK_OPS = ["selective_scan_fwd_triton", "selective_scan_bwd_triton", "cross_scan_fwd_triton",
               "cross_scan_bwd_triton", "s3c_merge_fwd_triton", "s3c_merge_bwd_triton"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OPCHECK_OPS)
def test_opcheck(device, name):
    op, args = _opcheck_cases(device)[name]
    torch.library.opcheck(op, args)


# =========================================================================================
# Compilation for a real GPU target (the interpreter accepts code the compiler rejects)
# =========================================================================================

@pytest.mark.skipif(HAS_GPU, reason="with a GPU the tests above compile and run every kernel")
def test_kernels_compile_for_sm90_without_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "handS3C.triton_kernels._compile_check", "--quick"],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "all kernels compiled" in r.stdout


# =========================================================================================
# GPU benchmark script
# =========================================================================================

def _bench(*flags):
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", REPO_ROOT)
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "benchmarks", "bench_gpu.py"), *flags],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_bench_gpu_interpreter_toy_runs_end_to_end():
    env_flag = dict(os.environ)
    r = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "benchmarks", "bench_gpu.py"), "--interpret-toy"],
                       cwd=REPO_ROOT, env={**env_flag, "TRITON_INTERPRET": "1"}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "toy" in r.stdout and "triton" in r.stdout and "fwd+bwd" in r.stdout, r.stdout


@pytest.mark.skipif(HAS_GPU, reason="checks the message printed when no GPU is present")
def test_bench_gpu_without_gpu_skips_cleanly():
    r = _bench()
    assert r.returncode == 0, r.stderr
    assert "GPU benchmark skipped: no CUDA device" in r.stdout
