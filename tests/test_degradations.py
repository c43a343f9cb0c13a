"""The Real-ESRGAN-style "real photo" degradation: reproducible, right shape and range, kernels well formed."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.degradations.real_photo import (
    RealPhotoConfig,
    RealPhotoDegradation,
    circular_lowpass_kernel,
    gaussian_kernel,
    mixed_kernel,
)


def _hr(h: int = 96, w: int = 80) -> np.ndarray:
    """A smooth synthetic colour image with some edges (generated, no data files)."""
    y, x = np.mgrid[0:h, 0:w] / 16.0
    img = np.stack([0.5 + 0.4 * np.sin(x), 0.5 + 0.4 * np.cos(y), ((x + y) % 2 > 1) * 0.8 + 0.1], axis=2)
    return img.astype(np.float32)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shape_range_and_dtype(scale):
    deg = RealPhotoDegradation()
    hr = _hr()
    for seed in range(4):
        lr = deg.apply(hr, scale, np.random.default_rng(seed))
        assert lr.shape == (96 // scale, 80 // scale, 3)
        assert lr.dtype == np.float32
        assert lr.min() >= 0.0 and lr.max() <= 1.0


def test_same_seed_same_output_different_seed_different_output():
    deg = RealPhotoDegradation()
    hr = _hr()
    a = deg.apply(hr, 4, np.random.default_rng(123))
    b = deg.apply(hr, 4, np.random.default_rng(123))
    np.testing.assert_array_equal(a, b)
    others = [deg.apply(hr, 4, np.random.default_rng(s)) for s in (1, 2, 3)]
    assert all(not np.array_equal(a, o) for o in others)


def test_degradation_actually_degrades():
    hr = _hr(64, 64)
    lr = RealPhotoDegradation().apply(hr, 2, np.random.default_rng(0))
    clean = hr.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(lr - clean).mean() > 1e-3


def test_every_kernel_type_is_normalised_and_symmetric_when_isotropic():
    rng = np.random.default_rng(0)
    cfg = RealPhotoConfig()
    for kind in cfg.kernel_types:
        k = mixed_kernel(rng, 15, (kind,), (1.0,), cfg.blur_sigma, cfg.betag_range, cfg.betap_range)
        assert k.shape == (15, 15)
        assert k.sum() == pytest.approx(1.0)
        if kind in ("iso", "generalized_iso", "plateau_iso"):
            np.testing.assert_allclose(k, k.T, atol=1e-12)
            np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-12)
    sinc = circular_lowpass_kernel(13, np.pi / 2)
    assert sinc.sum() == pytest.approx(1.0)
    assert sinc.argmax() == 13 * 13 // 2


def test_isotropic_gaussian_matches_the_formula():
    k = gaussian_kernel(7, 1.3, 1.3, 0.4)
    y, x = np.mgrid[-3:4, -3:4]
    ref = np.exp(-(x**2 + y**2) / (2 * 1.3**2))
    np.testing.assert_allclose(k, ref / ref.sum(), atol=1e-12)


def test_small_images_and_bad_input():
    deg = RealPhotoDegradation()
    lr = deg.apply(_hr(24, 24), 4, np.random.default_rng(5))
    assert lr.shape == (6, 6, 3)
    with pytest.raises(ValueError):
        deg.apply(_hr()[..., 0], 2, np.random.default_rng(0))
    with pytest.raises(ValueError):
        RealPhotoConfig(kernel_probs=(0.5, 0.5))


class _RecordingDegradation(RealPhotoDegradation):
    """Keeps what each JPEG step returned, to see which step came last."""

    def __init__(self, config: RealPhotoConfig) -> None:
        super().__init__(config)
        self.coded: list[np.ndarray] = []

    def _jpeg(self, img, rng, quality_range):
        out = super()._jpeg(img, rng, quality_range)
        self.coded.append(out)
        return out


@pytest.mark.parametrize(("last", "expect_last"), [(1.0, True), (0.0, False)])
def test_jpeg_last_prob_decides_whether_the_lr_is_the_jpeg_itself(last, expect_last):
    deg = _RecordingDegradation(RealPhotoConfig(jpeg_last_prob=last, final_sinc_prob=1.0))
    for seed in range(6):
        deg.coded.clear()
        lr = deg.apply(_hr(), 4, np.random.default_rng(seed))
        assert np.array_equal(lr, np.clip(deg.coded[-1], 0.0, 1.0)) is expect_last


def test_default_jpeg_order_is_real_esrgans_coin_flip():
    """By default both orders occur, as in Real-ESRGAN."""
    deg = _RecordingDegradation(RealPhotoConfig())
    last = []
    for seed in range(16):
        deg.coded.clear()
        lr = deg.apply(_hr(), 4, np.random.default_rng(seed))
        last.append(np.array_equal(lr, np.clip(deg.coded[-1], 0.0, 1.0)))
    assert 0 < sum(last) < len(last)
