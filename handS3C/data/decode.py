"""Image decoding for the readers: JPEG decoded at a reduced DCT scale, then one affine warp.

Why OpenCV: ``cv2.imdecode`` with ``IMREAD_REDUCED_COLOR_{2,4,8}`` hands the scale to
libjpeg(-turbo)'s scaled inverse DCT, so a 1/2-scale decode does a quarter of the IDCT and colour
conversion work and never materialises the full frame; ``cv2.warpAffine`` then produces the crop in
one SIMD pass over uint8 pixels (bilinear), and OpenCV is also what the published recipe uses, so
the two pipelines differ only in what we change on purpose.  Pillow's ``draft`` reaches the same
libjpeg feature but its affine ``transform`` is slower and its results would need a second library
in the hot loop.  Files are read with ``numpy.fromfile`` + ``cv2.imdecode`` (not ``cv2.imread``) so
that a truncated or non-image file becomes a clear error naming it instead of a silent ``None``.

Pixel convention: OpenCV's, pixel ``(i, j)`` centred at ``(x=j, y=i)``.  libjpeg's 1/d-scale pixel
``k`` averages full-resolution pixels ``d*k .. d*k+d-1``, so its centre is at ``d*k + (d-1)/2``.
"""
from __future__ import annotations

import os
from typing import Tuple

import numpy as np

__all__ = ["choose_dct_scale", "read_image_bytes", "decode_image", "warp_crop", "warp_crop_planes", "ImageDecodeError"]

_REDUCED = {1: None, 2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4", 8: "IMREAD_REDUCED_COLOR_8"}
_JPEG_MAGIC = b"\xff\xd8"


class ImageDecodeError(ValueError):
    """An image file that does not decode (message names the file)."""


def choose_dct_scale(crop_side_px: float, output_size: int, is_jpeg: bool = True) -> int:
    """Largest d in (8, 4, 2, 1) such that the crop still has at least ``output_size`` pixels across
    at 1/d scale (``crop_side_px / d >= output_size``); 1 for non-JPEG files."""
    if not is_jpeg:
        return 1
    for d in (8, 4, 2):
        if crop_side_px / d >= output_size:
            return d
    return 1


def read_image_bytes(path: str) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageDecodeError(f"cannot read image file {path!r}: {e}") from e


def decode_image(data: np.ndarray, path: str, scale: int = 1) -> np.ndarray:
    """Decode encoded bytes to a BGR uint8 (H', W', 3) array at 1/``scale`` (JPEG: DCT scaling)."""
    import cv2

    flag = cv2.IMREAD_COLOR if scale == 1 else getattr(cv2, _REDUCED[scale])
    flag |= cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imdecode(data, flag) if data.size else None
    if img is None or img.ndim != 3 or img.shape[2] != 3:
        raise ImageDecodeError(f"image file {path!r} does not decode ({data.size} bytes; expected a JPEG or PNG)")
    return img


def is_jpeg(data: np.ndarray) -> bool:
    return data.size >= 2 and bytes(data[:2]) == _JPEG_MAGIC


def warp_crop_planes(path: str, image_to_crop: np.ndarray, output_size: int, crop_side_px: float,
                     color=(1.0, 1.0, 1.0), fast: bool = True) -> Tuple[np.ndarray, int]:
    """The crop as a (3, S, S) float32 RGB array in [0, 1], colour-scaled per channel and clipped.

    The uint8 BGR crop is split into planes (cheap) and each plane goes through a 256-entry float32
    look-up table ``min(v * color_c, 255) / 255``, so the channel reversal, the CHW layout, the
    colour scale, the clip and the conversion to float are one pass over the crop's pixels.
    Returns ``(planes, scale d used)``.
    """
    import cv2

    crop, d = _warp_bgr(path, image_to_crop, output_size, crop_side_px, fast)
    levels = np.arange(256, dtype=np.float32)
    b, g, r = cv2.split(crop)
    out = np.empty((3, output_size, output_size), dtype=np.float32)
    for k, (plane, c) in enumerate(((r, color[0]), (g, color[1]), (b, color[2]))):
        lut = (np.minimum(levels * np.float32(c), 255.0) * np.float32(1.0 / 255.0)).astype(np.float32)
        cv2.LUT(plane, lut, dst=out[k])
    return out, d


def warp_crop(path: str, image_to_crop: np.ndarray, output_size: int, crop_side_px: float,
              fast: bool = True) -> Tuple[np.ndarray, int]:
    """The S x S RGB uint8 crop of the image file at ``path``.

    Args:
        image_to_crop: (2, 3) affine from full-resolution image pixels to crop pixels.
        crop_side_px: side of the crop's square in full-resolution pixels (chooses the DCT scale).
        fast: decode at the reduced DCT scale (False: always full resolution).

    Returns ``(crop (S, S, 3) uint8 RGB, scale d used)``.
    """
    crop, d = _warp_bgr(path, image_to_crop, output_size, crop_side_px, fast)
    return np.ascontiguousarray(crop[:, :, ::-1]), d


def _warp_bgr(path, image_to_crop, output_size, crop_side_px, fast):
    import cv2

    data = read_image_bytes(path)
    d = choose_dct_scale(crop_side_px, output_size, is_jpeg(data)) if fast else 1
    img = decode_image(data, path, d)
    M = np.asarray(image_to_crop, dtype=np.float64)
    if d > 1:
        # full-res coordinate of reduced pixel k is d*k + (d-1)/2
        M = np.concatenate([M[:, :2] * d, (M[:, :2].sum(1) * (d - 1) / 2.0 + M[:, 2])[:, None]], axis=1)
    crop = cv2.warpAffine(img, M, (output_size, output_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return crop, d


def file_exists(path: str) -> bool:
    return os.path.isfile(path)
