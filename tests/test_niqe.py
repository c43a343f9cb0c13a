"""NIQE on generated images: sharp natural-looking content beats its blurred and noisy versions."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PIL import Image

from model_export import niqe as niqe_mod
from model_export.niqe import DEFAULT_MODEL, NiqeModel, fit_pristine, load_model, niqe, patch_features


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with the 1/f amplitude spectrum of natural images, zero mean, unit variance."""
    f = np.fft.fftfreq(n)
    fx, fy = np.meshgrid(f, f)
    amp = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / n)
    x = np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.uniform(size=(n, n)))))
    return (x - x.mean()) / x.std()


def natural_image(n: int = 192, seed: int = 0, count: int = 400) -> np.ndarray:
    """A "dead leaves" image (occluding discs, radii ~ 1/r^3) with 1/f textures: sharp edges, natural statistics."""
    rng = np.random.default_rng(seed)
    img = _pink(n, rng) * 30 + 128
    tex = _pink(n, rng)
    yy, xx = np.mgrid[0:n, 0:n]
    rmin, rmax = 3.0, 50.0
    radii = (rmin**-2 - rng.uniform(size=count) * (rmin**-2 - rmax**-2)) ** -0.5
    for r in radii:
        cx, cy = rng.uniform(0, n, 2)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        img[mask] = rng.uniform(40, 215) + rng.uniform(5, 20) * tex[mask]
    return np.clip(img, 0, 255)


@pytest.fixture(scope="module")
def sharp() -> np.ndarray:
    return natural_image()


def test_shipped_model_is_there_and_describes_itself():
    model = load_model()
    assert DEFAULT_MODEL.is_file()
    assert model.mu.shape == (36,) and model.cov.shape == (36, 36)
    np.testing.assert_allclose(model.cov, model.cov.T)
    assert model.patch == 96
    assert model.meta["images_used"] > 0 and "not comparable" in model.meta["note"]


def test_sharp_scores_lower_than_blurred_or_noisy(sharp):
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3)
    noisy = np.clip(sharp + np.random.default_rng(9).normal(0, 25, sharp.shape), 0, 255)
    s, b, n = niqe(sharp), niqe(blurred), niqe(noisy)
    assert s < b - 3 and s < n - 3, (s, b, n)


def test_deterministic_and_colour_input(sharp):
    assert niqe(sharp) == niqe(sharp.copy())
    rgb = np.repeat(sharp[..., None], 3, axis=2)
    # a colour image is scored on its BT.601 Y (16 + 219/255 * grey for R = G = B)
    assert niqe(rgb) == pytest.approx(niqe(16 + sharp * 219 / 255), rel=1e-9)


def test_features_shape_and_errors(sharp):
    feats, sharpness = patch_features(sharp)
    assert feats.shape == (4, 36) and sharpness.shape == (4,)
    assert np.all(np.isfinite(feats))
    with pytest.raises(ValueError):
        niqe(np.zeros((50, 200)))
    assert math.isnan(niqe(np.full((96, 96), 77.0)))  # flat: no defined distribution


def test_fit_pristine_command_on_generated_images(tmp_path):
    folder = tmp_path / "pristine"
    (folder / "sub").mkdir(parents=True)
    for seed in range(3):
        Image.fromarray(natural_image(192, seed).astype(np.uint8)).save(folder / "sub" / f"{seed}.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(folder / "tiny.png")  # smaller than a patch: skipped
    out = tmp_path / "model.npz"
    assert niqe_mod.main(["fit", "--images", str(folder), "--out", str(out)]) == 0
    model = NiqeModel.load(out)
    assert model.meta["images_used"] == 3 and model.meta["images_skipped_too_small"] == 1
    assert model.meta["patches_selected"] >= 3
    again = fit_pristine(folder)
    np.testing.assert_array_equal(again.mu, model.mu)
    assert niqe_mod.main(["fit", "--images", str(tmp_path / "missing"), "--out", str(out)]) == 2
