"""The benchmark suites: operators, S3C block, full model.

Each suite returns rows of :class:`benchmarks.timing.Measurement`.  The "reference" backend is
the published computation; "mambapy" is the best pure-PyTorch alternative a CPU user has
(mambapy's parallel scan applied to the same four traversals).
"""
from __future__ import annotations

import math

import torch

from handS3C import ops, reference

from .timing import Measurement, median, peak_memory_mb, time_fn

EXTRA: dict = {}

NAN = float("nan")


def _progress(items, args, desc):
    if args.no_progress:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, leave=False, dynamic_ncols=True)


# The published path's CPU backward is timed (with --reference-backward) only up to this
# sequence length: the spatial branch (L = 1024) takes minutes, the channel branch (16384) hours.
REFERENCE_BACKWARD_MAX_L = 4096

SLOW_CALL_S = 5.0      # calls slower than this get at most two timed runs
SINGLE_CALL_S = 60.0   # calls slower than this are timed once (the memory-measuring call)


def _measure(name, backend, fn, args, device, note=""):
    """Median of ``args.runs`` timed calls after ``args.warmup`` untimed ones; a first call
    measures peak memory.  The published path's Python loop is slow, so calls slower than
    SLOW_CALL_S get at most two timed runs and calls slower than SINGLE_CALL_S (its autograd
    backward) are timed by that first call alone, keeping the benchmark within minutes."""
    import time
    t0 = time.perf_counter()
    mem = peak_memory_mb(fn, device)
    first = time.perf_counter() - t0
    if first >= SINGLE_CALL_S:
        return Measurement(name, backend, first, [first], mem, (note + "; " if note else "") + "one run")
    if first >= SLOW_CALL_S:
        runs = time_fn(fn, runs=min(args.runs, 2), warmup=0, device=device)
    else:
        runs = time_fn(fn, runs=args.runs, warmup=args.warmup, device=device)
    return Measurement(name, backend, median(runs), runs, mem, note)


def _skipped(name, backend, note):
    return Measurement(name, backend, NAN, [], None, note)


def _check(name, backend, got, want, rtol=6e-4, atol=2e-3):
    """Refuse to time a backend whose result does not match the reference (SPEC §4 float32)."""
    if not torch.allclose(got.float(), want.float(), rtol=rtol, atol=atol):
        err = (got.float() - want.float()).abs().max().item()
        raise RuntimeError(f"{name}: backend {backend} disagrees with the reference (max abs error {err:.3g}); "
                           "refusing to benchmark a wrong kernel")


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------

def cross_scan_params(D, N=16, R=16, device="cpu", seed=0):
    """Parameters initialised like the published S3C block (SPEC §2)."""
    g = torch.Generator().manual_seed(seed)
    xw = (torch.rand(4, R + 2 * N, D, generator=g) * 2 - 1) / math.sqrt(D)
    dtw = (torch.rand(4, D, R, generator=g) * 2 - 1) * R ** -0.5
    dt = torch.exp(torch.rand(4, D, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
    dtb = dt + torch.log(-torch.expm1(-dt))
    alogs = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(4 * D, 1) + 0.1 * torch.randn(4 * D, N, generator=g)
    ds = 1 + 0.1 * torch.randn(4 * D, generator=g)
    return [t.to(device) for t in (xw, dtw, dtb, alogs, ds)]


def branch_inputs(branch, batch, device, d_inner=512, H=32, W=32):
    """u for the spatial branch (B, d_inner, H, W) or the channel branch's permuted view."""
    g = torch.Generator().manual_seed(1)
    u = torch.nn.functional.silu(torch.randn(batch, d_inner, H, W, generator=g)).to(device)
    if branch == "spatial":
        return u, cross_scan_params(d_inner, device=device)
    return u.permute(0, 3, 1, 2), cross_scan_params(W, device=device)


# ---------------------------------------------------------------------------------------
# mambapy: the pure-PyTorch parallel-scan alternative on the same four traversals
# ---------------------------------------------------------------------------------------

def mambapy_cross_scan(u, xw, dtw, dtb, alogs, ds):
    from mambapy.pscan import pscan
    Bn, D, P, Q = u.shape
    L = P * Q
    xs, dts, Bs, Cs = reference.cross_scan_inputs(u, xw, dtw)        # (B, 4D, L), (B, 4, N, L)
    N = Bs.shape[2]
    delta = torch.nn.functional.softplus(dts + dtb.reshape(1, -1, 1)).transpose(1, 2)   # (B, L, 4D)
    A = -torch.exp(alogs)                                                            # (4D, N)
    Bx = Bs.repeat_interleave(D, dim=1).permute(0, 3, 1, 2)                           # (B, L, 4D, N)
    Cx = Cs.repeat_interleave(D, dim=1).permute(0, 3, 1, 2)
    x = xs.transpose(1, 2)                                                           # (B, L, 4D)
    dA = torch.exp(delta.unsqueeze(-1) * A)
    BX = (delta * x).unsqueeze(-1) * Bx
    hs = pscan(dA, BX)                                                               # (B, L, 4D, N)
    y = (hs * Cx).sum(-1) + ds * x
    return reference.cross_merge(y.transpose(1, 2).reshape(Bn, 4, D, L), P, Q)


def _have_mambapy():
    try:
        import mambapy.pscan  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------

def suite_ops(args, device, backends):
    rows = []
    B = args.batch
    cases = []
    for branch in ("spatial", "channel"):
        u, params = branch_inputs(branch, B, device)
        D, P, Q = u.shape[1:]
        tag = f"cross-scan {branch} B={B} D={D} {P}x{Q}"
        cases.append((tag, u, params))
    for tag, u, params in _progress(cases, args, "operators"):
        want = reference.cross_scan_selective_scan_ref(u, *params)
        rows.append(_measure(f"{tag} fwd", "reference", lambda: reference.cross_scan_selective_scan_ref(u, *params),
                             args, device, "published path: traversal copies + mamba-ssm scan + merge"))
        impls = [(b, (lambda b=b: ops.cross_scan_selective_scan(u, *params, backend=b))) for b in backends]
        if device.type == "cpu" and _have_mambapy():
            impls.append(("mambapy", lambda: mambapy_cross_scan(u, *params)))
        for name, fn in impls:
            with torch.no_grad():
                _check(tag, name, fn(), want)
            with torch.no_grad():
                rows.append(_measure(f"{tag} fwd", name, fn, args, device))
        # forward + backward
        leaves = [u.detach().clone().requires_grad_(True)] + [p.detach().clone().requires_grad_(True) for p in params]
        gout = torch.randn(want.shape, generator=torch.Generator().manual_seed(2)).to(device)

        def fwd_bwd(f):
            def run():
                for t in leaves:
                    t.grad = None
                (f(*leaves) * gout).sum().backward()
            return run
        if device.type == "cpu" and u.shape[2] * u.shape[3] > REFERENCE_BACKWARD_MAX_L:
            rows.append(_skipped(f"{tag} fwd+bwd", "reference",
                                 f"not timed: mamba-ssm's autograd backward is O(L^2) (SPEC §5), hours at L={u.shape[2] * u.shape[3]}"))
        elif args.reference_backward:
            rows.append(_measure(f"{tag} fwd+bwd", "reference", fwd_bwd(reference.cross_scan_selective_scan_ref),
                                 args, device, "published path's autograd"))
        else:
            rows.append(_skipped(f"{tag} fwd+bwd", "reference",
                                 "not timed: autograd through mamba-ssm's Python loop takes minutes here "
                                 "(SPEC §5); --reference-backward times it"))
        for name, _ in impls:
            f = mambapy_cross_scan if name == "mambapy" else \
                (lambda *a, b=name: ops.cross_scan_selective_scan(*a, backend=b))
            rows.append(_measure(f"{tag} fwd+bwd", name, fwd_bwd(f), args, device))
        if device.type == "cpu" and "cpu" in backends:
            fwd = [r for r in rows if r.name == f"{tag} fwd" and r.backend == "cpu"][0]
            Bn, D, P, Q = u.shape
            EXTRA[f"{tag}: state updates/s (cpu fwd)"] = f"{Bn * 4 * D * P * Q * 16 / fwd.median_s / 1e9:.2f} G"
    if device.type == "cpu":
        peak = max(torch.ops.hands3c.state_update_peak_rate(100_000) for _ in range(3))
        EXTRA["compute bound (same exp+FMA work, no memory traffic)"] = f"{peak / 1e9:.2f} G state updates/s"

    # The merge, at the block's shape.
    g = torch.Generator().manual_seed(3)
    shape = (B, 32, 32, 512)
    ys = torch.randn(B, 512, 32, 32, generator=g).to(device).permute(0, 2, 3, 1)
    yc = torch.randn(B, 32, 512, 32, generator=g).to(device).permute(0, 3, 1, 2)
    z = torch.randn(shape, generator=g).to(device)
    w = (1 + 0.1 * torch.randn(512, generator=g)).to(device)
    bb = (0.1 * torch.randn(512, generator=g)).to(device)
    tag = f"s3c merge B={B} 32x32x512"
    want = reference.s3c_merge_ref(ys, yc, z, w, bb)
    rows.append(_measure(f"{tag} fwd", "reference", lambda: reference.s3c_merge_ref(ys, yc, z, w, bb), args, device,
                         "layer_norm + silu in PyTorch"))
    for b in backends:
        fn = lambda b=b: ops.s3c_merge(ys, yc, z, w, bb, backend=b)
        _check(tag, b, fn(), want)
        rows.append(_measure(f"{tag} fwd", b, fn, args, device))
    leaves = [t.detach().clone().requires_grad_(True) for t in (ys, yc, z, w, bb)]
    gout = torch.randn(shape, generator=g).to(device)

    def merge_fwd_bwd(f):
        return lambda: torch.autograd.grad((f(*leaves) * gout).sum(), leaves)
    rows.append(_measure(f"{tag} fwd+bwd", "reference", merge_fwd_bwd(reference.s3c_merge_ref), args, device,
                         "layer_norm + silu in PyTorch"))
    for b in backends:
        rows.append(_measure(f"{tag} fwd+bwd", b, merge_fwd_bwd(lambda *a, b=b: ops.s3c_merge(*a, backend=b)),
                             args, device))
    return rows


def suite_block(args, device, backends):
    import handS3C
    rows = []
    B = args.batch
    W = args.input_size // 8
    torch.manual_seed(0)
    block = handS3C.S3CBlock(256, W, 16, backend="reference").to(device)
    x = torch.randn(B, 256, W, W, device=device)
    tag = f"S3C block B={B} 256x{W}x{W}"
    with torch.no_grad():
        want = block(x)
    items = ["reference"] + list(backends)
    for b in _progress(items, args, "S3C block"):
        block.backend = b
        with torch.no_grad():
            if b != "reference":
                _check(tag, b, block(x), want)
            rows.append(_measure(f"{tag} fwd", b, lambda: block(x), args, device))
    for b in backends:
        block.backend = b
        xg = x.clone().requires_grad_(True)

        def run():
            block.zero_grad(set_to_none=True)
            block(xg).sum().backward()
        rows.append(_measure(f"{tag} fwd+bwd", b, run, args, device))
    block.backend = "reference"
    rows.append(_skipped(f"{tag} fwd+bwd", "reference",
                         "not timed: the published backward at L=16384 takes over 10 minutes (SPEC §5)"))
    return rows


def suite_model(args, device, backends):
    try:
        from handS3C.model import HandS3C
    except ImportError as e:  # the model package is part of the project; say why it is missing
        return [_skipped("full model", "-", f"handS3C.model unavailable: {e}")]
    from . import model_bench
    return model_bench.run(args, device, backends, HandS3C, _measure, _skipped, _check, _progress, EXTRA)


SUITES = {"ops": suite_ops, "block": suite_block, "model": suite_model}
