"""The S3C block's two branches use their own parameters, checked numerically.

In HandS3C's configuration the spatial branch's feature dimension (d_inner = 512) differs from
the channel branch's (the width, 32), so giving one branch the other's parameters fails shape
validation and no numerical test ever sees it.  Here d_inner == width (d_model 4 -> d_inner 8,
width 8): every parameter of one branch fits the other, and only a comparison with an
independent float64 computation of the published block, written out below with the published
parameter names, tells them apart.  The parameters of the two branches are made clearly
different (different Δ rank projections, biases, A and D), so a swap moves the output far
outside the tolerance.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import handS3C
from handS3C import reference
from tolerances import assert_close, out_tol

import cuda_parity as cp


def published_block64(block, x):
    """The published S3C block in float64 from the block's parameters by name (SPEC §2)."""
    sa = block.self_attention
    p = {k: v.detach().double() for k, v in block.state_dict().items()}
    t = x.double().permute(0, 2, 3, 1)
    h = F.layer_norm(t, (t.shape[-1],), p["ln_1.weight"], p["ln_1.bias"], block.ln_1.eps)
    xi, z = F.linear(h, p["self_attention.in_proj.weight"]).chunk(2, dim=-1)
    u = F.silu(F.conv2d(xi.permute(0, 3, 1, 2), p["self_attention.conv2d.weight"], p["self_attention.conv2d.bias"],
                        padding=1, groups=sa.d_inner))
    scan = cp.selective_scan_ref64_fast

    def branch(plane, suffix):
        names = ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")
        return reference.cross_scan_selective_scan_ref(plane, *(p[f"self_attention.{n}{suffix}"] for n in names),
                                                       scan_fn=scan)

    y_s = branch(u, "")                                   # (B, d_inner, H, W)
    y_c = branch(u.permute(0, 3, 1, 2), "_ch")            # (B, W, d_inner, H)
    y = reference.s3c_merge_ref(y_s.permute(0, 2, 3, 1), y_c.permute(0, 3, 1, 2), z,
                                p["self_attention.out_norm.weight"], p["self_attention.out_norm.bias"],
                                sa.out_norm.eps)
    out = t + F.linear(y, p["self_attention.out_proj.weight"])
    return out.permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def block_and_input():
    torch.manual_seed(5)
    block = handS3C.S3CBlock(d_model=4, width=8, d_state=3, backend="cpu")
    sa = block.self_attention
    assert sa.d_inner == sa.width == 8
    with torch.no_grad():
        # Make the branches' parameters clearly different (the published init gives both
        # branches A_logs = log(1..N) and D = 1, which would hide a swap of those two).
        sa.A_logs_ch.add_(0.7)
        sa.Ds_ch.mul_(-1.5)
        sa.dt_projs_bias_ch.add_(1.5)
        for prm in (sa.conv2d.weight, sa.in_proj.weight, sa.out_proj.weight):
            prm.mul_(3.0)
    x = torch.randn(2, 4, 5, 8, generator=torch.Generator().manual_seed(6))
    return block, x


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_branch_parameters_with_coinciding_shapes(block_and_input, backend):
    block, x = block_and_input
    shapes = [(n, tuple(p.shape)) for n, p in block.self_attention.named_parameters() if n.endswith("_ch")]
    for name, shape in shapes:  # every channel parameter has its spatial twin's shape
        assert tuple(getattr(block.self_attention, name[:-3]).shape) == shape, name
    block.backend = backend
    with torch.no_grad():
        got = block(x)
    want = published_block64(block, x)
    assert_close(got, want, *out_tol(torch.float32), f"S3C block ({backend}), d_inner == width")
    # the test can fail: with the branches' parameters exchanged the answer is far off
    swapped = dict(block.state_dict())
    for n in ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds"):
        a, b = f"self_attention.{n}", f"self_attention.{n}_ch"
        swapped[a], swapped[b] = swapped[b], swapped[a]
    other = handS3C.S3CBlock(d_model=4, width=8, d_state=3, backend=backend)
    other.load_state_dict(swapped)
    with torch.no_grad():
        far = (other(x).double() - want).abs().max().item()
    assert far > 100 * out_tol(torch.float32)[1], f"swapping the branches moved the output by only {far:.3g}"
