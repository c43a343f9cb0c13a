"""The camera-like evaluation LR (issue 23): fixed, seeded by the file name, and as degraded as a phone photo."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.degradations.camera import CAMERA, camera_lr, image_seed
from model_export.degradations.matlab_resize import imresize


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(image_seed(name))


def _photo(h: int = 96, w: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([128 + 90 * np.sin(x / 4.0), 128 + 90 * np.cos(y / 5.0), 60 + (x + y) % 120], axis=2).astype(np.float64)


def test_the_same_name_gives_the_same_pixels_and_another_name_other_noise():
    hr = _photo()
    first, again = camera_lr(hr, 4, _rng("a.png")), camera_lr(hr, 4, _rng("a.png"))
    assert first.dtype == np.uint8 and first.shape == (24, 32, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, camera_lr(hr, 4, _rng("b.png")))
    assert image_seed("a.png") != image_seed("b.png")


def test_it_is_softer_and_noisier_than_the_bicubic_lr():
    hr = _photo()
    bicubic = np.clip(np.round(imresize(hr, 0.25)), 0, 255)
    camera = camera_lr(hr, 4, _rng("a.png")).astype(np.float64)
    flat = np.full((96, 128, 3), 128.0)  # noise alone: a grey card
    noise = camera_lr(flat, 4, _rng("card.png")).astype(np.float64) - 128.0
    assert 1.0 < noise.std() < 6.0  # a few levels, like a phone's output after its own denoising
    shared = np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]
    assert shared > 0.3  # mostly luma noise, as after demosaicing
    # the blur takes out detail: less high-frequency energy than bicubic's LR, despite the added noise
    def detail(img):
        return np.abs(np.diff(img, axis=1)).mean()
    assert detail(camera) < detail(bicubic)
    assert np.abs(camera - bicubic).mean() > 1.0


def test_grey_images_stay_grey():
    hr = _photo()[..., 0]
    lr = camera_lr(hr, 2, _rng("g.png"))
    assert lr.shape == (48, 64) and lr.dtype == np.uint8


def test_the_description_names_every_step():
    text = CAMERA.describe(4)
    for part in ("sigma 1.6", "bicubic /4", "noise", f"JPEG q{CAMERA.jpeg_quality}", "seeded"):
        assert part in text, part


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_every_integer_scale_gives_the_lr_size(scale):
    hr = _photo(12 * scale, 10 * scale)
    assert camera_lr(hr, scale, _rng("x.png")).shape == (12, 10, 3)


def test_training_validation_can_use_the_camera_protocol():
    """``data.val_degradation = "camera"``: the held-out training images scored on the evaluation's camera LR."""
    from model_export.data import Degrader

    degrade = Degrader("camera", 4)
    hr = _photo() / 255.0
    lr = degrade(hr, np.random.default_rng(3))
    assert lr.dtype == np.float32 and lr.shape == (24, 32, 3) and 0.0 <= lr.min() and lr.max() <= 1.0
    assert np.array_equal(lr, degrade(hr, np.random.default_rng(3)))
    assert np.allclose(lr * 255.0, np.round(lr * 255.0), atol=1e-3)  # 8-bit values: it is a decoded JPEG


def test_keeping_switches_steps_off_and_leaves_the_rest_as_they_are():
    hr = _photo()
    bicubic = np.clip(np.round(imresize(hr, 0.25)), 0, 255).astype(np.uint8)
    assert np.array_equal(camera_lr(hr, 4, _rng("a.png"), CAMERA.keeping()), bicubic)
    assert CAMERA.keeping("blur", "noise", "jpeg") == CAMERA
    noise_only = camera_lr(hr, 4, _rng("a.png"), CAMERA.keeping("noise")).astype(np.float64)
    assert 1.0 < (noise_only - bicubic).std() < 6.0  # the same sensor noise, nothing else
    jpeg_only = CAMERA.keeping("jpeg")
    assert "JPEG q75" in jpeg_only.describe(4) and "noise" not in jpeg_only.describe(4)
    assert "blur" not in jpeg_only.describe(4)
    with pytest.raises(ValueError, match="unknown camera step"):
        CAMERA.keeping("vignette")
