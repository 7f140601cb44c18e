"""benchmarks.ceilings: the forward's pre-passes as the kernel does them, the streaming merge
stand-in, and the figures the ceilings are derived from."""
import math
import re

import pytest
import torch

from benchmarks import ceilings
from benchmarks.common import branch_inputs


@pytest.mark.parametrize("branch", ["spatial", "channel"])
def test_prepasses_are_the_projections_in_each_directions_scan_order(branch):
    u, params = branch_inputs(branch, 2, "cpu", d_inner=40, H=5, W=7, N=3, R=2)
    xw = params[0]
    B, D, P, Q = u.shape
    C = xw.shape[1]
    got = ceilings.prepasses(u, xw)
    assert got.shape == (B, 4, P * Q, C)
    want = torch.einsum("bdpq,kcd->bkpqc", u.double(), xw.double())  # (B, 4, P, Q, C)
    for k in range(4):
        plane = want[:, k] if k % 2 == 0 else want[:, k].transpose(1, 2)  # column-major for odd k
        torch.testing.assert_close(got[:, k].double(), plane.reshape(B, P * Q, C), rtol=1e-5, atol=1e-5)


def test_plane_view_copies_only_when_no_single_stride_fits():
    u = torch.randn(2, 3, 4, 5)
    assert ceilings._plane_view(u).data_ptr() == u.data_ptr()
    assert ceilings._plane_view(u.permute(0, 3, 1, 2)).data_ptr() == u.data_ptr()  # the channel branch's view
    odd = u.transpose(2, 3)
    v = ceilings._plane_view(odd)
    assert v.data_ptr() != u.data_ptr()
    assert torch.equal(v, odd.reshape(2, 3, 20))


def test_streaming_stand_in_reads_and_writes_what_it_claims():
    g = torch.Generator().manual_seed(0)
    s, c, z = (torch.randn(3, 8, generator=g).requires_grad_(True) for _ in range(3))
    w, b = torch.ones(8), torch.zeros(8)
    y = ceilings._StreamingMerge.apply(s, c, z, w, b)
    torch.testing.assert_close(y, s + c * z)
    gout = torch.randn(3, 8, generator=g)
    ds, dc, dz = torch.autograd.grad(y, (s, c, z), gout)
    torch.testing.assert_close(ds, gout * z)
    assert ds.data_ptr() == dc.data_ptr()   # one gradient tensor for both branches, as the fused merge
    torch.testing.assert_close(dz, (s + c).detach())


def test_projections_match_the_operators_gemm_on_both_branch_layouts():
    for branch in ("spatial", "channel"):
        u, params = branch_inputs(branch, 2, "cpu", d_inner=24, H=3, W=5, N=2, R=3)
        u3 = ceilings._plane_view(u)
        got = ceilings.projections(u3, params[0])
        want = torch.einsum("bdl,cd->blc", u3.double(), params[0].reshape(-1, u3.shape[1]).double())
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_scan_ceiling_figures_are_consistent():
    c = ceilings.scan_ceiling("spatial", batch=1, rounds=2)
    for key in ("op_s", "pre_s", "gemm_s", "loop_s", "work_s", "loop_rate", "fma_rate"):
        assert c[key] > 0 and math.isfinite(c[key]), (key, c[key])
    assert c["pre_s"] < c["op_s"]
    assert c["kernel_s"] == pytest.approx(c["op_s"] - c["pre_s"])
    assert c["share"] == pytest.approx(c["loop_s"] / c["op_s"])
    assert c["kernel_share"] == pytest.approx(c["loop_s"] / c["kernel_s"])
    # the work ceiling adds the per-position operations and the GEMM's FMAs to the state work
    ops = torch.ops.hands3c.state_update_vector_ops()
    B, D, P, Q = c["shape"]
    gemm = B * P * Q * D * 4 * (16 + 2 * 16) / (16 * c["fma_rate"])
    assert c["work_s"] == pytest.approx(c["loop_s"] * (1 + ceilings.POSITION_OPS / (16 * ops)) + gemm)
    assert 0 < c["work_ceiling"] < 1
    assert re.search(r"every part at its best .*: \d+%", ceilings.describe_scan(c))


def test_merge_ceiling_times_all_three_and_names_the_largest_speed_up():
    m = ceilings.merge_ceiling(batch=1, rounds=2)
    for name in ("fwd", "fwd+bwd"):
        r = m[name]
        assert set(r["ms"]) == {"pytorch", "fused", "streaming"}
        assert all(v > 0 for v in r["ms"].values())
        assert r["max_speedup"] > 0 and r["fused_speedup"] > 0
        assert "the most a fused merge could reach here is" in ceilings.describe_merge(m, name)


def test_cli_rejects_bad_arguments():
    with pytest.raises(SystemExit) as e:
        ceilings.main(["--rounds", "0"])
    assert e.value.code != 0

