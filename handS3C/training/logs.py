"""Training records: a JSON-lines log, TensorBoard scalars (when installed), ``curves.png``.

``out/log.jsonl`` holds one JSON object per line: ``{"type": "start", ...}``, one
``{"type": "step", "epoch", "step", "lr", "loss": {term: value}, "images_per_s", "data_s",
"compute_s"}`` per logged step, ``{"type": "eval", "epoch", "step", "metrics": {...}}`` per
evaluation, and ``{"type": "resume"|"note"|"end", ...}``.  ``step`` is the global optimizer
step (1-based count of steps done).  On resume, records past the snapshot's step (written
after that snapshot by the interrupted run) are dropped, so the log reads as one run.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, List, Optional

from .snapshot import atomic_write_bytes

__all__ = ["RunLog", "read_log", "plot_curves"]


def read_log(path: str) -> List[Dict[str, Any]]:
    """Records of a ``log.jsonl``; a torn last line (an interrupted write) is ignored."""
    records = []
    if not os.path.isfile(path):
        return records
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records


class RunLog:
    """Rank 0's writer of ``log.jsonl``, TensorBoard events (``out/tensorboard``) and curves."""

    def __init__(self, out: str, resume_step: Optional[int] = None, tensorboard: bool = True):
        self.out = out
        self.path = os.path.join(out, "log.jsonl")
        if resume_step is None:
            if os.path.exists(self.path):
                os.unlink(self.path)
        else:
            kept = [r for r in read_log(self.path) if int(r.get("step", 0)) <= resume_step]
            atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self._f = open(self.path, "a")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # tensorboard not installed: the JSON log is the record
                SummaryWriter = None
            if SummaryWriter is not None:
                kw = {} if resume_step is None else {"purge_step": resume_step + 1}
                self.tb = SummaryWriter(os.path.join(out, "tensorboard"), **kw)

    def write(self, record: Dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()
        if self.tb is None:
            return
        step = int(record.get("step", 0))
        if record.get("type") == "step":
            # the published trainer's scalar names (Loss/train_<term>)
            for k, v in record["loss"].items():
                self.tb.add_scalar(f"Loss/train_{k}", v, step)
            self.tb.add_scalar("lr", record["lr"], step)
            self.tb.add_scalar("images_per_s", record["images_per_s"], step)
        elif record.get("type") == "eval":
            for k, v in record["metrics"].items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"Eval/{k}", v, step)

    def close(self) -> None:
        self._f.close()
        if self.tb is not None:
            self.tb.close()


def plot_curves(log_path: str, png_path: str, title: str = "") -> bool:
    """Draw the loss terms over steps and the evaluation metrics over epochs from a log into
    ``png_path`` (written atomically).  False when matplotlib is missing or nothing is logged."""
    records = read_log(log_path)
    steps = [r for r in records if r.get("type") == "step"]
    evals = [r for r in records if r.get("type") == "eval" and r.get("metrics")]
    if not steps:
        return False
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    import io
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    terms = list(steps[0]["loss"])
    xs = [r["step"] for r in steps]
    for t in terms:
        ys = [r["loss"].get(t, float("nan")) for r in steps]
        ax.plot(xs, ys, label=t, lw=2.0 if t == "total" else 1.2)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("weighted loss (log scale)")
    ax.set_title("training loss terms")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = axes[1]
    if evals:
        # errors in mm share one axis; fractions (AUC, F-scores) and counts are in the JSON log
        names = [k for k, v in evals[-1]["metrics"].items() if isinstance(v, (int, float)) and k.endswith("_mm")]
        for k in names:
            pts = [(r["epoch"], r["metrics"][k]) for r in evals if isinstance(r["metrics"].get(k), (int, float))]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (mm)")
        ax.set_title("evaluation")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    else:
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(png_path, buf.getvalue())
    return True
