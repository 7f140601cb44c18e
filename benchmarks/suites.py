"""The benchmark suites: operators, S3C block, full model.

Each suite returns rows of :class:`benchmarks.common.Measurement`.  The "reference" backend is
the published computation; "mambapy" is the best pure-PyTorch alternative a CPU user has
(mambapy's parallel scan applied to the same four traversals).
"""
from __future__ import annotations

import time

import torch

from handS3C import ops, reference

from . import bounds, ceilings
from .common import Measurement, branch_inputs, interleaved, median, peak_memory_mb, ratio

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


def _measure_group(name, impls, args, device, base="reference"):
    """Rows for one case: every implementation in ``impls`` (name -> (fn, note)) timed in
    interleaved rounds, with its speed-up over ``base`` (when ``base`` is among them) the median
    of the per-round ratios.

    A first call of each measures its peak memory (and warms it up).  The published path's
    Python loop is slow, so when the slowest first call exceeds SLOW_CALL_S there are at most
    two rounds, and beyond SINGLE_CALL_S (its autograd backward) the first calls, themselves
    one interleaved round, are the measurement: the benchmark stays within minutes.
    """
    mem, first = {}, {}
    for impl, (fn, _) in impls.items():
        t0 = time.perf_counter()
        mem[impl] = peak_memory_mb(fn, device)
        first[impl] = [time.perf_counter() - t0]
    slowest = max(t[0] for t in first.values())
    fns = {impl: fn for impl, (fn, _) in impls.items()}
    if slowest >= SINGLE_CALL_S:
        times, extra_note = first, "one run"
    elif slowest >= SLOW_CALL_S:
        times, extra_note = interleaved(fns, rounds=min(args.runs, 2), device=device), ""
    else:
        times, extra_note = interleaved(fns, rounds=args.runs, warmup=args.warmup, device=device), ""
    rows = []
    for impl, (_, note) in impls.items():
        note = "; ".join(n for n in (note, extra_note) if n)
        sp = ratio(times[base], times[impl]) if base in times and impl != base else None
        rows.append(Measurement(name, impl, median(times[impl]), times[impl], mem[impl], note, sp))
    return rows


def _skipped(name, backend, note):
    return Measurement(name, backend, NAN, [], None, note)


def _check(name, backend, got, want, rtol=6e-4, atol=2e-3):
    """Refuse to time a backend whose result does not match the reference (SPEC §4 float32)."""
    if not torch.allclose(got.float(), want.float(), rtol=rtol, atol=atol):
        err = (got.float() - want.float()).abs().max().item()
        raise RuntimeError(f"{name}: backend {backend} disagrees with the reference (max abs error {err:.3g}); "
                           "refusing to benchmark a wrong kernel")


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

def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()
    return run


def suite_ops(args, device, backends):
    rows = []
    B = args.batch
    cases = []
    for branch in ("spatial", "channel"):
        u, params = branch_inputs(branch, B, device)
        D, P, Q = u.shape[1:]
        tag = f"cross-scan {branch} B={B} D={D} {P}x{Q}"
        cases.append((branch, tag, u, params))
    for branch, tag, u, params in _progress(cases, args, "operators"):
        want = reference.cross_scan_selective_scan_ref(u, *params)
        impls = [(b, (lambda b=b: ops.cross_scan_selective_scan(u, *params, backend=b))) for b in backends]
        if device.type == "cpu" and _have_mambapy():
            impls.append(("mambapy", lambda: mambapy_cross_scan(u, *params)))
        for name, fn in impls:
            with torch.no_grad():
                _check(tag, name, fn(), want)
        group = {"reference": (_no_grad(lambda: reference.cross_scan_selective_scan_ref(u, *params)),
                               "published path: traversal copies + mamba-ssm scan + merge")}
        group.update({name: (_no_grad(fn), "") for name, fn in impls})
        rows.extend(_measure_group(f"{tag} fwd", group, args, device))
        # forward + backward
        leaves = [u.detach().clone().requires_grad_(True)] + [p.detach().clone().requires_grad_(True) for p in params]
        gout = torch.randn(want.shape, generator=torch.Generator().manual_seed(2)).to(device)

        def fwd_bwd(f):
            def run():
                for t in leaves:
                    t.grad = None
                (f(*leaves) * gout).sum().backward()
            return run
        group = {}
        if device.type == "cpu" and u.shape[2] * u.shape[3] > REFERENCE_BACKWARD_MAX_L:
            ref_row = _skipped(f"{tag} fwd+bwd", "reference",
                               f"not timed: mamba-ssm's autograd backward is O(L^2) (SPEC §5), hours at L={u.shape[2] * u.shape[3]}")
        elif args.reference_backward:
            ref_row = None
            group["reference"] = (fwd_bwd(reference.cross_scan_selective_scan_ref), "published path's autograd")
        else:
            ref_row = _skipped(f"{tag} fwd+bwd", "reference",
                               "not timed: autograd through mamba-ssm's Python loop takes minutes here "
                               "(SPEC §5); --reference-backward times it")
        for name, _ in impls:
            f = mambapy_cross_scan if name == "mambapy" else \
                (lambda *a, b=name: ops.cross_scan_selective_scan(*a, backend=b))
            group[name] = (fwd_bwd(f), "")
        if ref_row is not None:
            rows.append(ref_row)
        rows.extend(_measure_group(f"{tag} fwd+bwd", group, args, device))
        if device.type == "cpu" and "cpu" in backends:
            # The forward's throughput against the kernel's own loop and the processor's FMA
            # bound, each ratio from rounds that time the operator and both bounds in turn.
            Bn, D, P, Q = u.shape
            updates = Bn * 4 * D * P * Q * params[3].shape[1]  # A_logs: (4D, N)
            fwd_cpu = _no_grad(lambda: ops.cross_scan_selective_scan(u, *params, backend="cpu"))
            EXTRA[f"{tag}: cpu fwd vs compute bounds"] = bounds.describe(
                bounds.shares(fwd_cpu, updates, rounds=max(3, args.runs)))
            if hasattr(torch.ops.hands3c, "backward_update_peak_rate"):
                bwd_leaves = [u.detach().clone().requires_grad_(True)] + \
                    [p.detach().clone().requires_grad_(True) for p in params]
                y_cpu = ops.cross_scan_selective_scan(*bwd_leaves, backend="cpu")
                g_cpu = torch.randn_like(y_cpu)

                def bwd_cpu():
                    torch.autograd.grad(y_cpu, bwd_leaves, g_cpu, retain_graph=True)
                EXTRA[f"{tag}: cpu bwd vs its compute bound"] = bounds.describe_backward(
                    bounds.backward_shares(bwd_cpu, updates, rounds=max(3, args.runs)))
            # What the forward's share could reach at best: its per-position work (GEMM, scan-order
            # copy, delta) measured apart from the state updates (benchmarks/ceilings.py).
            EXTRA[f"{tag}: cpu fwd share ceiling"] = ceilings.describe_scan(
                ceilings.scan_ceiling(branch, B, rounds=max(5, args.runs)))

    # The merge, at the block's shape and layout: the two scans write their outputs as
    # contiguous (B, H, W, d_inner) rows (cross_scan_selective_scan's out_order), so both
    # branch inputs are contiguous here, for the kernel and for PyTorch's layer_norm + silu alike.
    g = torch.Generator().manual_seed(3)
    shape = (B, 32, 32, 512)
    ys = torch.randn(shape, generator=g).to(device)
    yc = torch.randn(shape, generator=g).to(device)
    z = torch.randn(shape, generator=g).to(device)
    w = (1 + 0.1 * torch.randn(512, generator=g)).to(device)
    bb = (0.1 * torch.randn(512, generator=g)).to(device)
    tag = f"s3c merge B={B} 32x32x512"
    want = reference.s3c_merge_ref(ys, yc, z, w, bb)
    group = {"reference": (lambda: reference.s3c_merge_ref(ys, yc, z, w, bb), "layer_norm + silu in PyTorch")}
    for b in backends:
        fn = lambda b=b: ops.s3c_merge(ys, yc, z, w, bb, backend=b)
        _check(tag, b, fn(), want)
        group[b] = (fn, "")
    rows.extend(_measure_group(f"{tag} fwd", group, args, device))
    leaves = [t.detach().clone().requires_grad_(True) for t in (ys, yc, z, w, bb)]
    gout = torch.randn(shape, generator=g).to(device)

    def merge_fwd_bwd(f):
        return lambda: torch.autograd.grad((f(*leaves) * gout).sum(), leaves)
    group = {"reference": (merge_fwd_bwd(reference.s3c_merge_ref), "layer_norm + silu in PyTorch")}
    for b in backends:
        group[b] = (merge_fwd_bwd(lambda *a, b=b: ops.s3c_merge(*a, backend=b)), "")
    rows.extend(_measure_group(f"{tag} fwd+bwd", group, args, device))
    if device.type == "cpu" and "cpu" in backends:
        # The largest speed-up any fused merge could show here: PyTorch against a streaming
        # stand-in with the fused kernel's memory traffic (benchmarks/ceilings.py).
        m = ceilings.merge_ceiling(B, rounds=max(5, args.runs))
        for name in ("fwd", "fwd+bwd"):
            EXTRA[f"{tag} {name}: ceiling"] = ceilings.describe_merge(m, name)
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

    def forward(b):
        def run():
            block.backend = b
            with torch.no_grad():
                return block(x)
        return run
    group = {"reference": (forward("reference"), "")}
    for b in _progress(list(backends), args, "S3C block"):
        _check(tag, b, forward(b)(), want)
        group[b] = (forward(b), "")
    rows.extend(_measure_group(f"{tag} fwd", group, args, device))
    xg = x.clone().requires_grad_(True)

    def train(b):
        def run():
            block.backend = b
            block.zero_grad(set_to_none=True)
            xg.grad = None
            block(xg).sum().backward()
        return run
    rows.append(_skipped(f"{tag} fwd+bwd", "reference",
                         "not timed: the published backward at L=16384 takes over 10 minutes (SPEC §5)"))
    if backends:
        rows.extend(_measure_group(f"{tag} fwd+bwd", {b: (train(b), "") for b in backends}, args, device))
    block.backend = "reference"
    return rows


def suite_model(args, device, backends):
    try:
        from handS3C.model import HandS3C
    except ImportError as e:  # the model package is part of the project; say why it is missing
        return [_skipped("full model", "-", f"handS3C.model unavailable: {e}")]
    from . import model_bench
    return model_bench.run(args, device, backends, HandS3C, _measure_group, _skipped, _check, _progress, EXTRA)
