"""benchmarks/scaling.py's machinery on tiny shapes (its timings are never asserted)."""
import argparse
import os
import sys

import pytest

from testenv import REPO_ROOT

if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from benchmarks import scaling  # noqa: E402


def test_measure_table_growth_and_chart(tmp_path):
    res = scaling.measure([65, 1024], [1, 3], runs=1, warmup=0, dim=24, N_=4)
    assert sorted(res) == [(1, 65), (1, 1024), (3, 65), (3, 1024)]
    assert all(0 < tf and 0 < tfb for tf, tfb in res.values())
    text = scaling.report(res, str(tmp_path))
    lines = text.splitlines()
    assert len([ln for ln in lines if ln.split() and ln.split()[0] in ("1", "3")]) == 4
    # the longest length is 1024 itself: no growth figure to state
    assert scaling.growth(res, 1) is None and "goal" not in text
    with open(tmp_path / "scaling.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp.png")]
    rows = scaling.rows(res)
    assert len(rows) == 8 and {r.backend for r in rows} == {"cpu"}
    assert rows[0].note.endswith("us/pos")


def test_growth_is_the_per_position_ratio():
    res = {(1, 1024): (1.0, 2.0), (1, 4096): (4.0, 10.0)}
    ratio, L = scaling.growth(res, 1)
    assert L == 4096 and ratio == pytest.approx((10.0 / 4096) / (2.0 / 1024))


def test_suite_skips_other_devices():
    assert scaling.suite_scaling(argparse.Namespace(runs=1, warmup=0, out="unused"), "cuda", ["cuda"]) == []


@pytest.mark.parametrize("bad", ["", "0,4", "a,b"])
def test_lengths_must_be_positive_integers(bad):
    with pytest.raises(argparse.ArgumentTypeError, match="positive integers"):
        scaling._ints(bad)
