"""What the two unmet issue-14 targets could reach at best on this machine, measured.

    python -m benchmarks.ceilings [--batch 2] [--rounds 7] [--threads 0]

Forward share of the loop bound.  The operator's share (``bounds.shares``) divides the time its
state updates would take at the loop bound (``state_update_peak_rate``) by the whole operator's
time.  That time is the state updates plus work done once per (position, direction, 16
channels) whatever N is: the x_proj GEMM and the copy of its output into scan order (ATen, in
cross_scan_cpu.cpp: timed here alone on the same shapes, through the same oneDNN or
at::matmul path) and, inside the kernel, the dt projection,
softplus, delta*u, D*u, the tile packing and the output accumulation.  The kernel's share is
the loop-bound time over (operator - pre-passes).

The work ceiling asks what the share could be with every part at its best: the state updates
at the loop bound, the per-position vector operations (POSITION_OPS, counted in the compiled
kernel) at the loop's own operation rate, the GEMM's B*L*D*4(R+2N) FMAs at the measured FMA
peak and the scan-order copy free:  T_loop / (T_loop (1 + POSITION_OPS / (N ops_per_update))
+ GEMM FMAs / FMA peak).  At N = 16, R = 16 the two extras are each about a fifth of the state
work, so the ceiling sits near 70% before any real inefficiency.

Merge ratio.  The fused merge reads y_spatial, y_channel and z and writes the output (four
passes over a (B, 32, 32, 512) float tensor); its backward reads the gradient, y_spatial,
y_channel and z and writes dy and dz (six).  A streaming operation with exactly that traffic
(``torch.addcmul`` for the forward; ``dout * z`` and ``s + c`` for the backward, in an
autograd Function) bounds what any fused merge can reach from below in time, so PyTorch's
time over the proxy's is the largest speed-up a fused merge could show here.  All three are
timed interleaved, median of the per-round ratios (benchmarks/common.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import branch_inputs, interleaved, median, ratio  # noqa: E402


def _plane_view(u):
    """The (B, D, L) view cross_scan_cpu.cpp's plane_view takes (a copy where no single stride fits)."""
    B, D, P, Q = u.shape
    if Q == 1:
        sl = u.stride(2)
    elif P == 1 or u.stride(2) == Q * u.stride(3):
        sl = u.stride(3)
    else:
        return u.contiguous().view(B, D, P * Q)
    return u.as_strided((B, D, P * Q), (u.stride(0), u.stride(1), sl))


def _dnnl_linear():
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    return op if op is not None and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled else None


def projections(u3, x_proj_weight):
    """The x_proj GEMM as cross_scan_cpu.cpp's projections() does it: (B, L, D) x (D, 4C) through
    oneDNN's linear (one call when the rows form one matrix, else one per batch element), or
    torch.matmul where oneDNN is not built in.  Returns (B, L, 4C)."""
    B, D, L = u3.shape
    w = x_proj_weight.reshape(-1, D).contiguous()
    x = u3.transpose(1, 2)
    lin = _dnnl_linear()
    if lin is None:
        return torch.matmul(x, w.t()).contiguous()
    if B == 1 or x.stride(0) == L * x.stride(1):
        rows = x.as_strided((B * L, D), (x.stride(1), x.stride(2)))
        return lin(rows, w, None, "none", [], "").view(B, L, -1)
    out = torch.empty(B, L, w.shape[0])
    for b in range(B):
        out[b].copy_(lin(x[b], w, None, "none", [], ""))
    return out


def prepasses(u, x_proj_weight):
    """The forward's ATen work before the scan kernel, as cross_scan_fwd does it: the x_proj
    GEMM (B, L, D) x (D, 4C) and the copy of its output into each direction's scan order."""
    B, D, P, Q = u.shape
    L = P * Q
    C = x_proj_weight.shape[1]
    dbl = projections(_plane_view(u), x_proj_weight).view(B, L, 4, C)
    out = torch.empty(B, 4, L, C)
    d5 = dbl.view(B, P, Q, 4, C)
    for k in range(4):
        if k % 2 == 0:
            out.select(1, k).view(B, P, Q, C).copy_(d5.select(3, k))
        else:
            out.select(1, k).view(B, Q, P, C).copy_(d5.select(3, k).transpose(1, 2))
    return out


# Vector operations per (position, direction, 16 channels) outside the state updates in the
# forward kernel, counted in its AVX-512 code (forward_block's chunk loop): the dt projection
# (16 FMAs for R = 16, 3 adds joining its partial sums), softplus_fast_f (27), delta*u and D*u
# (2), and the output accumulation (1).  Loads, stores and register moves are not counted, as
# in state_update_vector_ops.
POSITION_OPS = 49


def scan_ceiling(branch: str, batch: int = 2, rounds: int = 7) -> dict:
    """Times the CPU forward (N = 16), its ATen pre-passes, the x_proj GEMM alone, the loop
    bound and the FMA rate, in interleaved rounds.  Returns per-run seconds (medians) and the
    derived figures; see the module docstring."""
    from handS3C import ops

    u, params = branch_inputs(branch, batch, "cpu", N=16)
    B, D, P, Q = u.shape
    L = P * Q
    N = params[3].shape[1]
    C = params[0].shape[1]
    u3 = _plane_view(u)

    def op():
        with torch.no_grad():
            return ops.cross_scan_selective_scan(u, *params, backend="cpu")

    loop_rates, fma_rates = [], []

    def bounds():
        loop_rates.append(torch.ops.hands3c.state_update_peak_rate(100_000))
        fma_rates.append(torch.ops.hands3c.fma_peak_rate(2_000_000))

    t = interleaved({"op": op, "pre": lambda: prepasses(u, params[0]),
                     "gemm": lambda: projections(u3, params[0]), "bounds": bounds},
                    rounds=rounds, warmup=1)
    m = {k: median(v) for k, v in t.items()}
    loop_rate = statistics.median(loop_rates)
    fma_rate = statistics.median(fma_rates)          # FMAs of 16 floats per second, all threads
    ops_per_update = torch.ops.hands3c.state_update_vector_ops()
    updates = B * 4 * D * L * N
    gemm_fmas = B * L * D * 4 * C
    t_loop = updates / loop_rate
    kernel = m["op"] - m["pre"]
    # Every part at its best: the state updates at the loop bound, the per-position operations
    # at the loop's own operation rate, the GEMM at the FMA peak, the scan-order copy free.
    t_work = t_loop * (1 + POSITION_OPS / (N * ops_per_update)) + gemm_fmas / (16 * fma_rate)
    return {
        "branch": branch, "shape": (B, D, P, Q), "N": N, "threads": torch.get_num_threads(),
        "op_s": m["op"], "pre_s": m["pre"], "gemm_s": m["gemm"], "kernel_s": kernel,
        "loop_s": t_loop, "loop_rate": loop_rate, "fma_rate": fma_rate,
        "share": t_loop / m["op"],
        "kernel_share": t_loop / kernel if kernel > 0 else float("nan"),
        "gemm_efficiency": gemm_fmas / (16 * fma_rate * m["gemm"]),
        "work_s": t_work, "work_ceiling": t_loop / t_work,
    }


def describe_scan(c: dict) -> str:
    ms = lambda s: f"{1e3 * s:.1f} ms"  # noqa: E731
    return (f"operator {ms(c['op_s'])} = ATen pre-passes {ms(c['pre_s'])} (x_proj GEMM "
            f"{ms(c['gemm_s'])}, {100 * c['gemm_efficiency']:.0f}% of the FMA peak; scan-order copy) + scan kernel "
            f"{ms(c['kernel_s'])}; the state updates alone at the loop bound: {ms(c['loop_s'])}. "
            f"Share of the loop bound: operator {100 * c['share']:.0f}%, kernel {100 * c['kernel_share']:.0f}%. "
            f"Ceiling with every part at its best (per-position work at the loop's rate, GEMM at the FMA peak, "
            f"no copy: {ms(c['work_s'])}): {100 * c['work_ceiling']:.0f}% "
            f"({c['threads']} threads)")


class _StreamingMerge(torch.autograd.Function):
    """A stand-in with the fused merge's memory traffic and almost none of its arithmetic."""

    @staticmethod
    def forward(ctx, s, c, z, w, b):
        ctx.save_for_backward(s, c, z)
        return torch.addcmul(s, c, z)          # reads s, c, z; writes one tensor

    @staticmethod
    def backward(ctx, g):
        s, c, z = ctx.saved_tensors
        dy = g * z                             # reads g, z; writes dy (both branches' gradient)
        dz = s + c                             # reads s, c; writes dz
        return dy, dy, dz, None, None


def merge_ceiling(batch: int = 2, rounds: int = 9) -> dict:
    """Fused CPU merge, PyTorch's composite and the streaming stand-in, forward and
    forward+backward, interleaved at the block's (B, 32, 32, 512) shape."""
    from handS3C import ops, reference

    g = torch.Generator().manual_seed(3)
    shape = (batch, 32, 32, 512)
    s, c, z = (torch.randn(shape, generator=g) for _ in range(3))
    w = 1 + 0.1 * torch.randn(512, generator=g)
    b = 0.1 * torch.randn(512, generator=g)
    gout = torch.randn(shape, generator=g)
    leaves = [t.clone().requires_grad_(True) for t in (s, c, z, w, b)]
    impls = {"pytorch": reference.s3c_merge_ref,
             "fused": lambda *a: ops.s3c_merge(*a, backend="cpu"),
             "streaming": _StreamingMerge.apply}
    out = {"threads": torch.get_num_threads(), "shape": shape}
    fwd = {k: (lambda f=f: f(s, c, z, w, b)) for k, f in impls.items()}
    both = {k: (lambda f=f: torch.autograd.grad((f(*leaves) * gout).sum(), leaves[:3])) for k, f in impls.items()}
    for name, group in (("fwd", fwd), ("fwd+bwd", both)):
        t = interleaved(group, rounds=rounds, warmup=1)
        out[name] = {"ms": {k: 1e3 * median(v) for k, v in t.items()},
                     "fused_speedup": ratio(t["pytorch"], t["fused"]),
                     "max_speedup": ratio(t["pytorch"], t["streaming"]),
                     "fused_vs_streaming": ratio(t["fused"], t["streaming"])}
    return out


def describe_merge(m: dict, name: str) -> str:
    r = m[name]
    ms = r["ms"]
    return (f"PyTorch {ms['pytorch']:.1f} ms, fused {ms['fused']:.1f} ms ({r['fused_speedup']:.2f}x), "
            f"streaming stand-in with the fused kernel's traffic {ms['streaming']:.1f} ms: the most a fused "
            f"merge could reach here is {r['max_speedup']:.2f}x; the fused kernel takes "
            f"{r['fused_vs_streaming']:.2f}x the stand-in's time ({m['threads']} threads)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring for what each figure means.")
    p.add_argument("--batch", type=int, default=2, help="batch size (default 2, as in make bench)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds per figure (default 7)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = p.parse_args(argv)
    if args.batch < 1 or args.rounds < 1:
        p.error("--batch and --rounds must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    import handS3C  # noqa: F401  (loads the extension)
    for branch in ("spatial", "channel"):
        print(f"cross-scan {branch} B={args.batch}: " + describe_scan(scan_ceiling(branch, args.batch, args.rounds)),
              flush=True)
    m = merge_ceiling(args.batch, max(args.rounds, 5))
    for name in ("fwd", "fwd+bwd"):
        print(f"s3c merge B={args.batch} 32x32x512 {name}: " + describe_merge(m, name), flush=True)


if __name__ == "__main__":
    main()
