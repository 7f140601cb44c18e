"""benchmarks.merge_layout: the S3C block with its branch outputs in the merge's row layout
against the contiguous layout, on a tiny block (width 8) so it runs in seconds."""
import re

from benchmarks import merge_layout
from handS3C.modules import s3c_block


def test_prints_both_passes_and_restores_the_block_layout(capsys):
    merge_layout.main(["--batch", "1", "--width", "8", "--rounds", "2", "--warmup", "0"])
    out = capsys.readouterr().out
    assert "bitwise equal" in out
    for name in ("fwd", "fwd+bwd"):
        m = re.search(rf"^\s+{re.escape(name)}\s+row layout\s+([\d.]+) ms\s+contiguous\s+([\d.]+) ms\s+"
                      rf"contiguous/rows ([\d.]+)x$", out, re.M)
        assert m, out
        assert all(float(v) > 0 for v in m.groups())
    # the comparison leaves the block in its row layout
    assert s3c_block.SPATIAL_OUT_ORDER == (0, 2, 3, 1) and s3c_block.CHANNEL_OUT_ORDER == (0, 3, 1, 2)


def test_refuses_to_time_layouts_that_disagree(monkeypatch):
    """A layout that changed the block's numbers must stop the benchmark, not be timed."""
    real = s3c_block.cross_scan_selective_scan

    def skewed(u, *p, out_order=None, backend="auto"):
        y = real(u, *p, out_order=out_order, backend=backend)
        return y + 1e-3 if out_order in (None, (0, 1, 2, 3)) else y
    monkeypatch.setattr(s3c_block, "cross_scan_selective_scan", skewed)
    try:
        merge_layout.main(["--batch", "1", "--width", "8", "--rounds", "1", "--warmup", "0"])
    except RuntimeError as e:
        assert "different block outputs" in str(e)
    else:
        raise AssertionError("the benchmark timed two layouts with different outputs")
