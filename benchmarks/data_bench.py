"""The ``data`` suite: the training data pipeline (decode + augment + crop) per worker.

Ours (``handS3C.data``): JPEG decoded at the smallest DCT scale that keeps the crop's output
resolution (``cv2.imdecode`` with ``IMREAD_REDUCED_COLOR_{2,4,8}``), one uint8 ``cv2.warpAffine``
with the mirror folded into the affine, the colour scale applied to the crop.  The published recipe
(HandOccNet's loader, which HandS3C trains with): ``cv2.imread`` at full resolution, channel
reversal + float32 copy of the whole frame (``load_img``), the flip as a full-frame copy, one float32
``cv2.warpAffine`` (``generate_patch_image``), then the colour scale and clip.  Both run the same
augmentation draws (the published distributions, seeded per sample) and the same geometry code
on the same synthetic 640x480 JPEGs (HO3D-like and DexYCB-like, written by ``make_synthetic``),
one process, one thread, interleaved sample by sample (A B, then B A for the next sample); the
speed-up is the median of the per-sample ratios.  Equal output: the PSNR of the two crops of every
sample (goal >= 30 dB; the reduced decode is the only source of difference beyond rounding).

Run: ``python -m benchmarks --suites data`` (or ``python -m benchmarks.data_bench``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

try:
    from .common import Measurement
except ImportError:  # older layout
    from .timing import Measurement

__all__ = ["suite_data", "published_dataset", "psnr"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [0, 1]."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


class _PublishedImage:
    """The published recipe's image path, swapped into a reader (everything else identical)."""

    def _crop_image(self, rec, M, S, side, p):
        import cv2
        img = cv2.imread(rec.file, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if img is None:
            raise OSError(f"cannot read {rec.file}")
        img = img[:, :, ::-1].copy().astype(np.float32)          # load_img: RGB float32 frame
        if rec.flip:
            img = img[:, ::-1, :].copy()                          # the flip as a frame copy
            W = img.shape[1]
            M = M @ np.array([[-1.0, 0, W - 1.0], [0, 1, 0], [0, 0, 1]])   # un-fold the flip: box affine
        crop = cv2.warpAffine(img, M, (S, S), flags=cv2.INTER_LINEAR)
        crop = np.clip(crop * np.asarray(p.color, dtype=np.float32)[None, None, :], 0, 255)
        # transforms.ToTensor(): HWC -> CHW contiguous, / 255
        return np.ascontiguousarray(crop.transpose(2, 0, 1)) * np.float32(1.0 / 255.0)


def published_dataset(cls):
    return type("Published" + cls.__name__, (_PublishedImage, cls), {})


def _make_data(root, n, seed):
    from handS3C.data import make_synthetic
    out = {}
    for fmt in ("ho3d", "dexycb"):
        d = os.path.join(root, fmt)
        if not os.path.isfile(os.path.join(d, "MANO_RIGHT.pkl")):
            make_synthetic(fmt, d, n, seed=seed, n_eval=1, progress=False)
        out[fmt] = d
    return out


def run_data_bench(n=24, epochs=3, input_size=256, seed=0, data_root=None, progress=True, log=print):
    """Returns a dict: per dataset {ours_sps, published_sps, speedup, psnr_min, psnr_median, scales}."""
    import cv2
    import torch
    from handS3C.data import DexYCB, HO3D
    from handS3C.data.decode import choose_dct_scale

    threads = (cv2.getNumThreads(), torch.get_num_threads())
    cv2.setNumThreads(1)                 # "per worker": a DataLoader worker runs one thread
    torch.set_num_threads(1)
    try:
        return _run(n, epochs, input_size, seed, data_root, log)
    finally:
        cv2.setNumThreads(threads[0])
        torch.set_num_threads(threads[1])


def _run(n, epochs, input_size, seed, data_root, log):
    import torch
    from handS3C.data import DexYCB, HO3D
    from handS3C.data.decode import choose_dct_scale

    tmp = None
    if data_root is None:
        tmp = tempfile.TemporaryDirectory(prefix="hands3c-databench-")
        data_root = tmp.name
    log(f"data bench: writing synthetic 640x480 datasets ({n} training frames each) under {data_root}")
    roots = _make_data(data_root, n, seed)
    results = {}
    for fmt, cls in (("ho3d", HO3D), ("dexycb", DexYCB)):
        ours = cls(roots[fmt], "train", input_size=input_size, augment=True, seed=seed)
        pub = published_dataset(cls)(roots[fmt], "train", input_size=input_size, augment=True, seed=seed)
        t_ours, t_pub, ratios, psnrs, scales = [], [], [], [], []
        for e in range(-1, epochs):           # epoch -1: warm-up, not recorded
            ours.set_epoch(max(e, 0))
            pub.set_epoch(max(e, 0))
            for i in range(len(ours)):
                order = (ours, pub) if (i + e) % 2 == 0 else (pub, ours)
                got = {}
                for ds in order:
                    t0 = time.perf_counter()
                    s = ds[i]
                    got[id(ds)] = (time.perf_counter() - t0, s)
                if e < 0:
                    continue
                (ta, sa), (tb, sb) = got[id(ours)], got[id(pub)]
                t_ours.append(ta)
                t_pub.append(tb)
                ratios.append(tb / ta)
                psnrs.append(psnr(sa["image"].numpy(), sb["image"].numpy()))
                assert torch.equal(sa["joints2d"], sb["joints2d"])
                side = float(sa["bbox"][2])
                scales.append(choose_dct_scale(side, input_size))
        r = {"samples": len(t_ours), "ours_sps": 1.0 / statistics.median(t_ours),
             "published_sps": 1.0 / statistics.median(t_pub), "speedup": statistics.median(ratios),
             "psnr_min": min(psnrs), "psnr_median": statistics.median(psnrs),
             "dct_scales": {str(d): scales.count(d) for d in sorted(set(scales))},
             "ours_median_ms": 1e3 * statistics.median(t_ours), "published_median_ms": 1e3 * statistics.median(t_pub)}
        results[fmt] = r
        log(f"  {fmt}: ours {r['ours_sps']:.0f} samples/s, published {r['published_sps']:.0f} samples/s, "
            f"speed-up {r['speedup']:.2f}x (median of {r['samples']} interleaved pairs), PSNR min "
            f"{r['psnr_min']:.1f} dB / median {r['psnr_median']:.1f} dB, DCT scales used {r['dct_scales']}")
    if tmp is not None:
        tmp.cleanup()
    return results


def suite_data(args, device, backends):
    from . import suites
    res = run_data_bench(n=getattr(args, "data_samples", 24), epochs=getattr(args, "data_epochs", 3),
                         input_size=getattr(args, "input_size", 256), progress=not getattr(args, "no_progress", False))
    rows = []
    for fmt, r in res.items():
        name = f"data {fmt} 640x480 -> {getattr(args, 'input_size', 256)} (1 worker)"
        rows.append(Measurement(name, "reference", r["published_median_ms"] / 1e3, [], None,
                                f"{r['published_sps']:.0f} samples/s, full decode + float32 warpAffine"))
        m = Measurement(name, "data", r["ours_median_ms"] / 1e3, [], None,
                        f"{r['ours_sps']:.0f} samples/s; PSNR min {r['psnr_min']:.1f} dB; DCT scales {r['dct_scales']}")
        m.speedup = r["speedup"]
        rows.append(m)
    extra = getattr(suites, "EXTRA", None)
    if isinstance(extra, dict):
        for fmt, r in res.items():
            extra[f"data {fmt}: samples/s per worker"] = (
                f"ours {r['ours_sps']:.0f}, published recipe {r['published_sps']:.0f}, speed-up {r['speedup']:.2f}x, "
                f"PSNR min {r['psnr_min']:.1f} dB, DCT scales {r['dct_scales']}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=24, help="synthetic training frames per dataset")
    p.add_argument("--epochs", type=int, default=3, help="passes over the frames (fresh augmentation each)")
    p.add_argument("--input-size", type=int, default=256, help="output crop size S")
    p.add_argument("--data-root", default=None, help="keep the synthetic datasets here (default: a temp folder)")
    a = p.parse_args(argv)
    res = run_data_bench(a.n, a.epochs, a.input_size, data_root=a.data_root)
    ok = all(r["speedup"] >= 2.0 and r["psnr_min"] >= 30.0 for r in res.values())
    print("goal (>= 2x at PSNR >= 30 dB):", "met" if ok else "not met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
