"""Cases that catch the seeded bugs the rest of the suite let through (tests/seeded_bugs.py).

* Chunk carries of the Triton scans: with exactly two chunks, a combine step that keeps only
  the last chunk's end state (dropping the older, decayed carry) gives the right answer, so
  every chunked kernel is run here with three or more chunks, forward and backward, at
  interpreter-friendly sizes (tiles of 2 steps, one or two tiles per chunk).
* The merge's eps: on ordinary rows the variance dwarfs eps (adding it twice moves outputs by
  ~1e-6 relative), so rows whose variance is comparable to eps (near-constant rows) make the
  epsilon term half the answer, on the CPU and the Triton merge.

References are float64 (handS3C.reference with the O(L)-backward scan of tests/cuda_parity.py).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from handS3C import reference
from handS3C.ops import cross_scan_selective_scan, s3c_merge, selective_scan_fn
from tolerances import TOL, assert_close, dA_tol, ddelta_tol, du_tol, weight_tol

import cuda_parity as cp

F32 = torch.float32


def _chunks(L, tile, chunk_tiles):
    n_tiles = -(-L // tile)
    return -(-n_tiles // chunk_tiles)


def _leaves(ts):
    return [None if t is None else t.detach().clone().requires_grad_() for t in ts]


def _compare(got, want, tols, names):
    for g, w, tol, name in zip(got, want, tols, names):
        scale = max(1.0, float(w.abs().max()))
        assert_close(g, w, tol[0], tol[1] * scale, name)


# ---- Triton cross scan: three or more chunks ---------------------------------------------------

# (B, D, P, Q, N, R, layout, chunk_tiles): tile 2, so L = P*Q steps make ceil(L/2) tiles
CS_CHUNKED = {
    "plane3x5_8chunks": (1, 2, 3, 5, 2, 1, "contig", 1),      # 8 tiles, one per chunk, partial last tile
    "plane4x4_4chunks": (1, 3, 4, 4, 3, 2, "contig", 2),      # 8 tiles, 4 chunks, 3 channels (masked block)
    "channel5x3_3chunks": (1, 2, 5, 3, 2, 1, "channel", 3),   # permuted u, 8 tiles in chunks of 3, 3, 2
}


@pytest.mark.parametrize("case", list(CS_CHUNKED), ids=list(CS_CHUNKED))
def test_triton_cross_scan_with_three_or_more_chunks(case):
    pytest.importorskip("triton")
    from handS3C.triton_kernels import scan_config

    Bn, D, P, Q, N, R, layout, chunk_tiles = CS_CHUNKED[case]
    L = P * Q
    assert _chunks(L, 2, chunk_tiles) >= 3, "the case must have at least three chunks"
    inp = cp.cs_inputs(cp.CSCase(Bn, D, P, Q, N, R, layout=layout, seed=7))
    args = _leaves([inp[k] for k in cp.CS_GRAD_NAMES])
    with scan_config(poison=True, tile=2, chunk_tiles=chunk_tiles, block_d=2, bwd_sub=1):
        y = cross_scan_selective_scan(*args, backend="triton")
        grads = torch.autograd.grad(y, args, inp["dout"])
    ref = cp.cs_reference(cp.CSCase(Bn, D, P, Q, N, R, layout=layout, seed=7), inp)
    assert_close(y, ref[0], *TOL[F32], f"{case} y")
    tols = [du_tol(F32), weight_tol(F32), weight_tol(F32), weight_tol(F32), dA_tol(F32), weight_tol(F32)]
    _compare(grads, [ref[1][k] for k in cp.CS_GRAD_NAMES], tols, [f"{case} d{k}" for k in cp.CS_GRAD_NAMES])


# ---- Triton selective scan: three or more chunks -----------------------------------------------

SS_CHUNKED = {
    "L13_7chunks_dlast": (cp.SSCase(1, 3, 13, 3, groups_b=1, groups_c=1), 1),
    "L16_4chunks_groups": (cp.SSCase(2, 4, 16, 2, groups_b=2, groups_c=2, has_z=False), 2),
    # B and C with different group counts (the kernels used B's for both and read past C)
    "L9_5chunks_groups_2_1": (cp.SSCase(1, 4, 9, 2, groups_b=2, groups_c=1, has_db=False), 1),
}


@pytest.mark.parametrize("case", list(SS_CHUNKED), ids=list(SS_CHUNKED))
def test_triton_selective_scan_with_three_or_more_chunks(case):
    pytest.importorskip("triton")
    from handS3C.triton_kernels import scan_config

    c, chunk_tiles = SS_CHUNKED[case]
    assert _chunks(c.L, 2, chunk_tiles) >= 3, "the case must have at least three chunks"
    inp = cp.ss_inputs(c)
    args = _leaves([inp[k] for k in cp.SS_GRAD_NAMES])
    with scan_config(poison=True, tile=2, chunk_tiles=chunk_tiles, block_d=2, bwd_sub=1):
        out, last = selective_scan_fn(*args, delta_softplus=c.softplus, return_last_state=True, backend="triton")
        present = [a for a in args if a is not None]
        grads = torch.autograd.grad([out, last], present, [inp["dout"], inp["dlast"]])
    r_out, r_last, r_grads = cp.ss_reference(c, inp)
    assert_close(out, r_out, *TOL[F32], f"{case} out")
    assert_close(last, r_last, *TOL[F32], f"{case} last_state")
    names = [k for k in cp.SS_GRAD_NAMES if inp[k] is not None]
    tol = dict(u=du_tol(F32), delta=ddelta_tol(F32), A=dA_tol(F32, c.has_z), z=du_tol(F32))
    _compare(grads, [r_grads[k] for k in names], [tol.get(k, weight_tol(F32, c.has_z)) for k in names],
             [f"{case} d{k}" for k in names])


# ---- the merge's eps on rows whose variance is comparable to eps ---------------------------------

def _near_constant_rows(shape, eps, seed=3):
    """y_spatial + y_channel rows of variance ~eps: the epsilon term is half of rstd."""
    g = torch.Generator().manual_seed(seed)
    spread = eps ** 0.5
    ys = 0.75 + spread * torch.randn(*shape, generator=g)
    yc = -0.25 + 0.5 * spread * torch.randn(*shape, generator=g)
    z = torch.randn(*shape, generator=g)
    C = shape[-1]
    return [ys, yc, z, 1 + 0.2 * torch.randn(C, generator=g), 0.2 * torch.randn(C, generator=g)], \
        torch.randn(*shape, generator=g)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_merge_rows_with_variance_comparable_to_eps(backend, eps):
    if backend == "triton":
        pytest.importorskip("triton")
    shape = (2, 3, 37) if backend == "cpu" else (2, 5)
    inputs, dout = _near_constant_rows(shape, eps)
    x = (inputs[0] + inputs[1]).double()
    var = x.var(-1, unbiased=False)
    assert bool(((var > 0.2 * eps) & (var < 5 * eps)).all()), "rows must have a variance ~eps"
    args = _leaves(inputs)
    out = s3c_merge(*args, eps=eps, backend=backend)
    grads = torch.autograd.grad(out, args, dout)
    ref_args = [a.detach().double().requires_grad_() for a in inputs]
    r = F.layer_norm(ref_args[0] + ref_args[1], (shape[-1],), ref_args[3], ref_args[4], eps) * F.silu(ref_args[2])
    r_grads = torch.autograd.grad(r, ref_args, dout.double())
    assert_close(out, r, *TOL[F32], f"merge ({backend}) out, eps={eps}")
    tols = [du_tol(F32), du_tol(F32), du_tol(F32), weight_tol(F32), weight_tol(F32)]
    _compare(grads, r_grads, tols, [f"merge ({backend}) d{k}" for k in cp.MERGE_GRAD_NAMES])
    # eps counted twice would change rstd by (1 + eps / (var + eps))^-1/2: far outside the tolerance
    wrong = F.layer_norm(x, (shape[-1],), None, None, 2 * eps) / F.layer_norm(x, (shape[-1],), None, None, eps)
    assert float((wrong - 1).abs().max()) > 50 * TOL[F32][0]


def test_triton_selective_scan_operator_refuses_unequal_groups():
    """The raw Triton operator indexes C with B's group count: unequal counts are refused by
    name (selective_scan_fn itself repeats them to a common count, case above)."""
    pytest.importorskip("triton")
    c = cp.SSCase(1, 4, 9, 2, groups_b=2, groups_c=1)
    t = cp.ss_inputs(c)
    with pytest.raises(ValueError, match="hands3c::selective_scan_fwd_triton: B and C must have the same number of "
                                         "groups for the Triton kernels, got 2 and 1"):
        torch.ops.hands3c.selective_scan_fwd_triton(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"],
                                                    t["delta_bias"], True, 2, 0, 0, True)
