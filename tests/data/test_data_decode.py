"""Reduced-DCT decoding: the scale rule, equality with the full-resolution crop, bad files."""
import numpy as np
import pytest

import cv2

from handS3C.data import augment as aug
from handS3C.data.decode import ImageDecodeError, choose_dct_scale, warp_crop
from handS3C.data.render import render_mesh, textured_background


def test_choose_dct_scale():
    assert choose_dct_scale(255, 256) == 1
    assert choose_dct_scale(512, 256) == 2
    assert choose_dct_scale(1023, 256) == 2
    assert choose_dct_scale(1024, 256) == 4
    assert choose_dct_scale(2100, 256) == 8
    assert choose_dct_scale(5000, 64) == 8
    assert choose_dct_scale(5000, 64, is_jpeg=False) == 1


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


@pytest.mark.parametrize("side,rot", [(300.0, 0.0), (420.0, 25.0), (460.0, -50.0)])
def test_reduced_decode_matches_full_decode(tmp_path, side, rot):
    rng = np.random.default_rng(int(side))
    img = textured_background(480, 640, rng)
    path = str(tmp_path / "frame.jpg")
    cv2.imwrite(path, img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    box = np.array([320 - side / 2 + 7, 240 - side / 2 - 5, side, side])
    S = 128
    M, _, crop_side = aug.crop_affine(box, S, aug.AugParams(1.0, rot))
    fast, d = warp_crop(path, M, S, crop_side, fast=True)
    full, d1 = warp_crop(path, M, S, crop_side, fast=False)
    assert d == choose_dct_scale(crop_side, S) and d >= 2 and d1 == 1
    assert _psnr(fast, full) >= 30.0
    # and the full-resolution path is the plain OpenCV recipe
    ref = cv2.warpAffine(cv2.imread(path), M, (S, S), flags=cv2.INTER_LINEAR)[:, :, ::-1]
    assert np.array_equal(full, ref)


def test_reduced_decode_keeps_geometry(tmp_path):
    """A bright dot stays where the affine puts it at every DCT scale (no half-pixel drift)."""
    img = np.full((480, 640, 3), 40, np.uint8)
    cv2.circle(img, (401, 233), 9, (255, 255, 255), -1)
    path = str(tmp_path / "dot.jpg")
    cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    for side, S in ((600.0, 64), (400.0, 100), (200.0, 100)):
        M, _, cs = aug.crop_affine(np.array([401 - side / 2 - 13, 233 - side / 2 + 9, side, side]), S)
        crop, d = warp_crop(path, M, S, cs)
        g = crop.astype(np.float64).mean(2) - 40
        g[g < 0] = 0
        yy, xx = np.mgrid[0:S, 0:S]
        c = np.array([(g * xx).sum(), (g * yy).sum()]) / g.sum()
        want = M @ np.array([401.0, 233.0, 1.0])
        assert np.abs(c - want).max() < 0.25, (side, d, c, want)


def test_undecodable_file_names_it(tmp_path):
    p = tmp_path / "broken.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        warp_crop(str(p), np.eye(2, 3), 32, 64.0)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty.jpg"):
        warp_crop(str(empty), np.eye(2, 3), 32, 64.0)


def test_png_is_decoded_at_full_resolution(tmp_path):
    img = textured_background(120, 160, np.random.default_rng(1))
    p = str(tmp_path / "f.png")
    cv2.imwrite(p, img[:, :, ::-1])
    M, _, cs = aug.crop_affine(np.array([0.0, 0.0, 120.0, 120.0]), 16)
    crop, d = warp_crop(p, M, 16, cs)
    assert d == 1 and crop.shape == (16, 16, 3)


def test_render_mesh_depth_order():
    """Two overlapping triangles: the nearer one wins regardless of drawing order."""
    K = np.array([[50.0, 0, 16], [0, 50.0, 16], [0, 0, 1]])
    V = np.array([[-0.3, -0.3, 1.0], [0.3, -0.3, 1.0], [0.0, 0.3, 1.0],
                  [-0.3, -0.3, 0.8], [0.3, -0.3, 0.8], [0.0, 0.3, 0.8]])
    for faces in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        cols = np.array([[1.0, 0, 0], [0, 0, 1.0]]) if faces[0][0] == 0 else np.array([[0, 0, 1.0], [1.0, 0, 0]])
        rgb, mask = render_mesh(V, np.array(faces), K, 32, 32, color=cols, ambient=1.0)
        assert mask[16, 16] and rgb[16, 16, 2] == 255 and rgb[16, 16, 0] == 0
        assert not mask[31, 31] and not mask[31, 0]
