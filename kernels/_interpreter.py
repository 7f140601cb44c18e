"""Make Triton's CPU interpreter fast enough for the scan kernels' tests.

Under ``TRITON_INTERPRET=1`` a ``tl.associative_scan`` with a user combine function (our
affine-map composition) falls back to ``ScanOps.generic_scan``, which calls the combine
function once per *element* through Python: ~60 us per element, so one (8, 16, 16) tile
costs ~0.1 s and a scan over L=256 with 64 channels a minute (SPEC §5 measured ~20 s per
call on large 3-D tiles).

:func:`vectorize_interpreter_scan` replaces that fallback by one that walks the scan axis
sequentially and applies the combine function to whole slices across the other axes.
It computes the same thing in the same order (``acc = combine(acc, x[i])`` for
i = 1..n-1; ``reverse`` is still handled by the caller flipping the input), only
vectorised: combine functions of ``associative_scan`` are elementwise by definition.
It touches nothing when Triton's interpreter lacks the expected hook (other versions).
"""
from __future__ import annotations

import numpy as np

_PATCHED = False


def vectorize_interpreter_scan() -> bool:
    """Install the vectorised generic scan; returns True when it is (or already was) active."""
    global _PATCHED
    if _PATCHED:
        return True
    try:
        from triton.runtime import interpreter as interp
    except Exception:  # pragma: no cover - no triton
        return False
    scan_ops = getattr(interp, "ScanOps", None)
    if scan_ops is None or not hasattr(scan_ops, "generic_scan") or not hasattr(scan_ops, "to_tensor"):
        return False

    def generic_scan(self, input):
        datas = [arg.handle.data for arg in input]
        axis = self.axis
        outs = [np.empty_like(d) for d in datas]
        views = [np.moveaxis(o, axis, 0) for o in outs]  # views: writes land in outs
        acc = None
        for i in range(datas[0].shape[axis]):
            cur = tuple(self.to_tensor(np.take(d, i, axis=axis), arg.dtype) for d, arg in zip(datas, input))
            if acc is None:
                acc = cur
            else:
                ret = self.combine_fn.fn(*acc, *cur)
                acc = ret if isinstance(ret, tuple) else (ret,)
            for v, a in zip(views, acc):
                val = a.handle.data if hasattr(a, "handle") else a
                v[i] = np.asarray(val).reshape(v[i].shape)
        return [self.to_tensor(o, arg.dtype) for o, arg in zip(outs, input)]

    scan_ops.generic_scan = generic_scan
    _PATCHED = True
    return True
