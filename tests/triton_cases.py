"""Inputs and launch plans shared by the Triton cases of tests/ops/test_<op>.py.

Without a GPU the kernels run in Triton's CPU interpreter (conftest sets TRITON_INTERPRET=1),
where every loop iteration of every program costs ~1 ms, so the CPU cases are tiny but use a
launch plan (:func:`plan`: 2-8 step tiles, 1-2 tile chunks, 2-4 channel blocks, channel
sub-blocks) that puts every boundary inside them: partial tiles, several chunks (the 3-pass
chunk-parallel paths), masked channel blocks, sub-block reductions.  With a GPU the same
tests also run at larger sizes with the automatic plan (autotuned kernels).  Every output
buffer is poisoned with NaN before the kernels write it.
"""
import torch

import triton  # noqa: F401  (pinned in requirements/ci.txt: a missing Triton is a failure, not a skip)
from handS3C import reference
from handS3C.ops import cross_scan_selective_scan
from handS3C.triton_kernels import scan_config
from tolerances import assert_close, dA_tol, du_tol, out_tol, weight_tol


def plan(device, cfg):
    """The CPU cases' explicit plan; on a GPU the automatic plan (bigger shapes there)."""
    return scan_config(poison=True, **(cfg if device == "cpu" else {}))


def leaf64(t):
    return None if t is None else t.detach().double().requires_grad_(t.requires_grad)


def ss_inputs(device, batch, dim, L, N, layout, has_z, has_d, has_db, dtype, seed=0):
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


def ss_run(fn, args, softplus, gy, gl):
    out, last = fn(*args, delta_softplus=softplus, return_last_state=True)
    leaves = [a for a in args if a is not None]
    loss = (out.to(gy.dtype) * gy).sum() + (last.to(gl.dtype) * gl).sum()
    return out, last, torch.autograd.grad(loss, leaves)


def cs_inputs(device, Bn, D, P, Q, N, R, layout, seed=0, only_direction=None):
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


def cs_check(device, args, cfg, seed=1):
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(tuple(args[0].shape), generator=g, dtype=torch.float64).to(device)
    with plan(device, cfg):
        y = cross_scan_selective_scan(*args, backend="triton")
        grads = torch.autograd.grad((y.double() * gy).sum(), args)
    ref_args = [leaf64(a) for a in args]
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


def merge_inputs(device, src, perm, zdt, seed=0):
    g = torch.Generator().manual_seed(seed)
    ys = torch.randn(*src, generator=g).to(device).permute(*perm).requires_grad_()
    yc = torch.randn(*src, generator=g).to(device).permute(*perm).contiguous().requires_grad_()
    z = torch.randn(tuple(ys.shape), generator=g).to(device=device, dtype=zdt).requires_grad_()
    C = ys.shape[-1]
    w = (1 + 0.5 * torch.randn(C, generator=g)).to(device).requires_grad_()
    b = (0.5 * torch.randn(C, generator=g)).to(device).requires_grad_()
    return [ys, yc, z, w, b]


def matches_cpu(fn, args, gy, grad_tol, cfg=None):
    """The Triton backend (outputs poisoned, launch plan ``cfg``) against the C++ CPU backend:
    ``fn(*args, backend=...)`` and the gradients of ``(out * gy).sum()`` to every arg."""
    with scan_config(poison=True, **(cfg or {})):
        out = fn(*args, backend="triton")
        grads = torch.autograd.grad((out * gy).sum(), args)
    out_cpu = fn(*args, backend="cpu")
    g_cpu = torch.autograd.grad((out_cpu * gy).sum(), args)
    assert_close(out, out_cpu, *out_tol(torch.float32), "out vs cpu")
    for got, want in zip(grads, g_cpu):
        assert_close(got, want, *grad_tol, "grad vs cpu")


def opcheck(op, name, fwd_args, bwd_args):
    """torch.library.opcheck (schema, autograd registration, fake kernel, AOT dispatch) of
    ``hands3c::<op>_fwd_triton`` (``name="fwd"``) or of ``_bwd_triton``, whose arguments
    ``bwd_args(forward outputs)`` builds from a no-grad forward run on ``fwd_args``."""
    ops = torch.ops.hands3c
    fwd, bwd = getattr(ops, f"{op}_fwd_triton"), getattr(ops, f"{op}_bwd_triton")
    if name == "fwd":
        torch.library.opcheck(fwd.default, tuple(fwd_args))
        return
    with torch.no_grad():
        outs = fwd(*fwd_args)
    torch.library.opcheck(bwd.default, tuple(bwd_args(outs)))


def detached(ts):
    return [t.detach() if isinstance(t, torch.Tensor) else t for t in ts]
