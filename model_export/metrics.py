"""Full-reference image quality metrics as the super-resolution literature computes them.

Everything works on float arrays in [0, 255] (uint8 input is accepted and converted). The conventions are those of
the published tables (SRCNN/VDSR's MATLAB code, BasicSR's ``calculate_psnr`` / ``calculate_ssim``):

- Y channel of BT.601 YCbCr with the 16-235 range: ``16 + (65.481 R + 128.553 G + 24.966 B) / 255``;
  a single-channel (grey) image is its own Y, without the 16-235 scaling;
- ``border`` pixels (the scale factor, by convention) are shaved from each side before measuring;
- SSIM is Wang et al.'s ``ssim_index.m``: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
  statistics taken over the "valid" region only (no padding), the SSIM map averaged.

Numpy only: no torch, no OpenCV.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["rgb_to_y", "to_y", "shave", "psnr", "ssim", "gaussian_window"]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma with the 16-235 range of an (H, W, 3) RGB image in [0, 255]; float64, not rounded."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an (H, W, 3) image, got shape {img.shape}")
    return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def to_y(img: np.ndarray) -> np.ndarray:
    """The channel that is scored: Y of a colour image (``rgb_to_y``), the values themselves for a grey one.

    A grey image ((H, W) or (H, W, 1)) is used as its own Y: turning it into RGB and applying the 16-235 formula
    would shrink its range and inflate its PSNR (Set14's ``bridge``). An (H, W, 4) image is scored on its RGB.
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return img[..., 0]
    if img.ndim == 3 and img.shape[2] in (3, 4):
        return rgb_to_y(img[..., :3])
    raise ValueError(f"expected a grey (H, W) / (H, W, 1) or colour (H, W, 3) image, got shape {img.shape}")


def shave(img: np.ndarray, border: int) -> np.ndarray:
    """``img`` without ``border`` pixels on each side (rows and columns)."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border == 0:
        return img
    if img.shape[0] <= 2 * border or img.shape[1] <= 2 * border:
        raise ValueError(f"image {img.shape[:2]} too small to shave {border} pixels from each border")
    return img[border:-border, border:-border, ...]


def _pair(a: np.ndarray, b: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return shave(a, border), shave(b, border)


def psnr(a: np.ndarray, b: np.ndarray, border: int = 0, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, ``peak``]; ``inf`` when they are equal.

    The MSE is taken over all remaining pixels (and channels) after shaving ``border`` from each side.
    """
    a, b = _pair(a, b, border)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 1-D Gaussian of ``fspecial('gaussian', size, sigma)`` (the 2-D window is its outer product)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """2-D correlation of ``img`` with the separable window ``outer(g, g)``, valid region only."""
    k = g.size
    rows = np.lib.stride_tricks.sliding_window_view(img, k, axis=0) @ g  # (H-k+1, W)
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ g  # (H-k+1, W-k+1)


def _ssim_2d(a: np.ndarray, b: np.ndarray, g: np.ndarray, c1: float, c2: float) -> float:
    mu_a = _filter_valid(a, g)
    mu_b = _filter_valid(b, g)
    mu_a2, mu_b2, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    sigma_a2 = _filter_valid(a * a, g) - mu_a2
    sigma_b2 = _filter_valid(b * b, g) - mu_b2
    sigma_ab = _filter_valid(a * b, g) - mu_ab
    ssim_map = ((2.0 * mu_ab + c1) * (2.0 * sigma_ab + c2)) / ((mu_a2 + mu_b2 + c1) * (sigma_a2 + sigma_b2 + c2))
    return float(ssim_map.mean())


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    border: int = 0,
    peak: float = 255.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Structural similarity of two images in [0, ``peak``] (``ssim_index.m`` / BasicSR ``calculate_ssim``).

    (H, W) images give one SSIM; (H, W, C) images the mean of the per-channel SSIMs (as BasicSR does).
    The image, after shaving ``border``, must be at least ``window`` pixels on each side.
    """
    a, b = _pair(a, b, border)
    if a.shape[0] < window or a.shape[1] < window:
        raise ValueError(f"image {a.shape[:2]} smaller than the {window}x{window} SSIM window")
    g = gaussian_window(window, sigma)
    c1 = (k1 * peak) ** 2
    c2 = (k2 * peak) ** 2
    if a.ndim == 2:
        return _ssim_2d(a, b, g, c1, c2)
    return float(np.mean([_ssim_2d(a[..., c], b[..., c], g, c1, c2) for c in range(a.shape[2])]))
