"""PSNR / SSIM / Y conversion checked against values derived independently of the implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_export.metrics import psnr, rgb_to_y, shave, ssim, to_y


def test_rgb_to_y_range_ends_and_primaries():
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    y = rgb_to_y(img)[0]
    assert y[0] == pytest.approx(16.0)
    assert y[1] == pytest.approx(235.0)  # 16 + 65.481 + 128.553 + 24.966 = 235
    assert y[2] == pytest.approx(16.0 + 65.481)
    assert y[3] == pytest.approx(16.0 + 128.553)
    assert y[4] == pytest.approx(16.0 + 24.966)


def test_to_y_grey_is_its_own_y():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    np.testing.assert_array_equal(to_y(grey), grey.astype(np.float64))
    np.testing.assert_array_equal(to_y(grey[..., None]), grey.astype(np.float64))
    rgb = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_allclose(to_y(rgb), 16.0 + grey * 219.0 / 255.0)


def test_psnr_of_a_known_mse():
    a = np.zeros((8, 8))
    b = np.full((8, 8), 5.0)  # MSE 25
    assert psnr(a, b) == pytest.approx(10 * math.log10(255.0**2 / 25.0))
    assert psnr(a, a) == math.inf


def test_psnr_shaves_the_border():
    a = np.zeros((10, 10))
    b = np.zeros((10, 10))
    b[0, :] = 100.0  # only in the border
    b[5, 5] = 6.0  # MSE over the inner 6x6: 36 / 36 = 1
    assert psnr(a, b, border=2) == pytest.approx(10 * math.log10(255.0**2))
    assert shave(a, 2).shape == (6, 6)


def _slow_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Direct transcription of ssim_index.m: explicit 2-D window, explicit loop over valid positions."""
    yy, xx = np.mgrid[-5:6, -5:6]
    w = np.exp(-(xx**2 + yy**2) / (2 * 1.5**2))
    w /= w.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va = (w * (pa - ma) ** 2).sum()
            vb = (w * (pb - mb) ** 2).sum()
            cab = (w * (pa - ma) * (pb - mb)).sum()
            values.append(((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_a_direct_implementation():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (17, 21))
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    assert ssim(a, b) == pytest.approx(_slow_ssim(a, b), abs=1e-10)
    # with a border: the same as measuring the shaved images
    assert ssim(a, b, border=2) == pytest.approx(_slow_ssim(a[2:-2, 2:-2], b[2:-2, 2:-2]), abs=1e-10)


def test_ssim_identical_and_constant_images():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 255, (20, 20))
    assert ssim(a, a) == pytest.approx(1.0)
    # two flat images: sigma terms vanish, SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 120 + c1) / (100**2 + 120**2 + c1)
    assert ssim(np.full((15, 15), 100.0), np.full((15, 15), 120.0)) == pytest.approx(expected)


def test_ssim_of_a_colour_image_is_the_channel_mean():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 255, (16, 16, 3))
    b = np.clip(a + rng.normal(0, 10, a.shape), 0, 255)
    expected = np.mean([ssim(a[..., c], b[..., c]) for c in range(3)])
    assert ssim(a, b) == pytest.approx(expected)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))  # smaller than the window
