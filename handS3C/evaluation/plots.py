"""The PCK curves as a PNG, drawn like the official evaluation's report (one panel per curve:
distance in cm on x, share of correct keypoints / vertices on y, over 0-5 cm)."""
from __future__ import annotations

import io
import os
from typing import Dict

import numpy as np

from .scoring import CURVE_TITLES
from .submission import atomic_write

__all__ = ["plot_pck_curves"]

_ORDER = ("joints", "pa_joints", "sc_tr_joints", "mesh", "pa_mesh")


def plot_pck_curves(curves: Dict[str, Dict[str, np.ndarray]], path: str, title: str = "") -> str:
    """Write the curves of :meth:`HandScorer.curves` (name -> thresholds_mm, pck, auc) to ``path`` (PNG).

    Uses matplotlib's non-interactive Agg canvas directly, so it needs no display and leaves
    pyplot's global state alone.  Returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [n for n in _ORDER if n in curves]
    if not names:
        raise ValueError("plot_pck_curves: no curve to draw (no sample had 3-D ground truth)")
    cols = 2 if len(names) == 4 else min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        c = curves[name]
        ax.plot(np.asarray(c["thresholds_mm"]) / 10.0, np.asarray(c["pck"]), lw=2,
                label=f"AUC {float(c['auc']):.3f}")
        ax.set_xlim(0, 5)
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("Distance in cm")
        ax.set_ylabel("Percentage of correct " + ("vertices" if "mesh" in name else "keypoints"))
        ax.set_title(CURVE_TITLES[name], fontsize=9)
        ax.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    return atomic_write(os.fspath(path), lambda f: f.write(data))
