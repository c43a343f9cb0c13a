"""MATLAB bicubic imresize against values worked out by hand from its definition (Keys cubic, a = -0.5; the kernel
stretched by 1/scale when shrinking; symmetric padding). The Set5/Set14 table in test_evaluate.py checks it too."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.degradations.matlab_resize import contributions, cubic, imresize


def test_cubic_kernel_values():
    # 1.5|x|^3 - 2.5|x|^2 + 1 for |x| <= 1; -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 for 1 < |x| <= 2; 0 beyond.
    x = np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5])
    expected = [1.0, 0.8671875, 0.2265625, 0.0, -0.0703125, -0.0234375, 0.0, 0.0]
    np.testing.assert_allclose(cubic(x), expected, atol=1e-12)
    np.testing.assert_allclose(cubic(-x), expected, atol=1e-12)


def test_upscale_x2_first_pixel_by_hand():
    """Output pixel 1 of [0, 1, 2, 3] at x2: centre u = 0.75 (1-based input coordinates), taps at 1-based indices
    -1, 0, 1, 2 with weights cubic(1.75), cubic(0.75), cubic(0.25), cubic(1.25) = -0.0234375, 0.2265625,
    0.8671875, -0.0703125; symmetric padding reads indices -1, 0 as 2, 1, i.e. values 1, 0, 0, 1."""
    out = imresize(np.array([[0.0, 1.0, 2.0, 3.0]]), output_shape=(1, 8))
    assert out.shape == (1, 8)
    assert out[0, 0] == pytest.approx(-0.0234375 * 1 + 0.2265625 * 0 + 0.8671875 * 0 - 0.0703125 * 1)  # -0.09375
    # Away from the borders a cubic convolution kernel reproduces a linear ramp: pixel x sits at u = x/2 + 1/4.
    np.testing.assert_allclose(out[0, 3:5], [1.25, 1.75], atol=1e-12)


def test_downscale_by_2_uses_the_stretched_kernel():
    """At scale 1/2 the kernel is 0.5 * cubic(x / 2) over 8 taps: weights 0.43359375, 0.11328125, -0.03515625,
    -0.01171875 on each side of the centre (summing to 1)."""
    weights, indices = contributions(16, 8, 0.5)
    first = weights[0][np.abs(weights[0]) > 0]
    np.testing.assert_allclose(
        sorted(first), sorted([0.43359375, 0.11328125, -0.03515625, -0.01171875] * 2), atol=1e-12
    )
    assert indices.min() >= 0 and indices.max() <= 15
    ramp = np.arange(16, dtype=np.float64)[None, :]
    out = imresize(ramp, output_shape=(1, 8))
    # Output pixel x (1-based) is centred on u = 2x - 1/2, i.e. 0-based position 2x - 1.5.
    np.testing.assert_allclose(out[0, 2:6], [4.5, 6.5, 8.5, 10.5], atol=1e-12)


def test_constants_stay_constant_and_sizes_round_up():
    img = np.full((7, 9, 3), 0.3)
    for scale in (0.25, 1 / 3, 0.5, 2, 3, 4):
        out = imresize(img, scale)
        assert out.shape == (int(np.ceil(7 * scale)), int(np.ceil(9 * scale)), 3)
        np.testing.assert_allclose(out, 0.3, atol=1e-12)


def test_exactly_one_of_scale_or_shape():
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), 2, output_shape=(8, 8))
