"""A "real photo" degradation in the manner of Real-ESRGAN (Wang et al., ICCVW 2021), seeded and reproducible.

Real-ESRGAN models the way a photo degrades on its way to a user (optics, resampling, sensor noise, JPEG) as the
same chain applied twice ("second order"):

    [blur -> random resize -> noise -> JPEG]  ->  [blur -> random resize -> noise]  ->  final resize + JPEG

(the last two in a random order, ``jpeg_last_prob`` the chance that the JPEG is the very last step).

The first order works at the HR size; the second order's resize is relative to the final LR size, as in
Real-ESRGAN. Blur kernels are isotropic / anisotropic Gaussians, their generalized and "plateau" variants, or a
2-D sinc (ringing); noise is Gaussian or Poisson, colour or grey; JPEG uses OpenCV's encoder.

Everything random comes from the ``numpy.random.Generator`` given to :meth:`RealPhotoDegradation.apply`, so the same
seed gives the same LR image bit for bit. Written here from the paper's description; no code copied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "RealPhotoConfig",
    "RealPhotoDegradation",
    "circular_lowpass_kernel",
    "mixed_kernel",
]

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
INTERPOLATIONS = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


@dataclass
class RealPhotoConfig:
    """Parameter ranges of the degradation. Defaults follow Real-ESRGAN's ``train_realesrgan_x4plus`` settings.

    Real-ESRGAN draws them for 256-pixel HR crops; for the small crops trained here the kernel size is also capped
    to the image (``max_kernel_fraction``) and no intermediate image gets smaller than ``min_size`` pixels, so a
    96-pixel crop is not blurred by a kernel wider than itself or shrunk to a few pixels.
    """

    # first order
    kernel_sizes: tuple[int, int] = (7, 21)  # odd sizes drawn uniformly from this range
    kernel_types: tuple[str, ...] = KERNEL_TYPES
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)  # generalized Gaussian shape
    betap_range: tuple[float, float] = (1.0, 2.0)  # plateau shape
    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    interpolations: tuple[str, ...] = ("area", "bilinear", "bicubic")
    gaussian_noise_prob: float = 0.5  # otherwise Poisson
    noise_range: tuple[float, float] = (1.0, 30.0)  # Gaussian sigma, in 8-bit levels
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[int, int] = (30, 95)

    # second order
    second_order_prob: float = 1.0
    second_blur_prob: float = 0.8
    kernel_sizes2: tuple[int, int] = (7, 21)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_probs2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[int, int] = (30, 95)

    # final stage
    final_sinc_prob: float = 0.8
    # chance that the JPEG comes after the final resize: Real-ESRGAN draws the order 50/50; a photo as a phone saves
    # it has its JPEG last, on the LR's own 8 x 8 grid (1.0 trains only that order)
    jpeg_last_prob: float = 0.5

    # small-image safeguards
    min_size: int = 8
    max_kernel_fraction: float = 0.5  # kernel side <= this fraction of the image's shorter side (and odd)

    def __post_init__(self) -> None:
        if len(self.kernel_types) != len(self.kernel_probs):
            raise ValueError("kernel_types and kernel_probs differ in length")
        unknown = set(self.kernel_types) - set(KERNEL_TYPES)
        if unknown:
            raise ValueError(f"unknown kernel types {sorted(unknown)}; known: {', '.join(KERNEL_TYPES)}")
        bad = set(self.interpolations) - set(INTERPOLATIONS)
        if bad:
            raise ValueError(f"unknown interpolations {sorted(bad)}; known: {', '.join(INTERPOLATIONS)}")
        for probs in (self.resize_probs, self.resize_probs2, self.kernel_probs):
            if abs(sum(probs) - 1.0) > 1e-6:
                raise ValueError(f"probabilities {probs} do not sum to 1")


# -- kernels -----------------------------------------------------------------------------------------------------
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    return np.meshgrid(r, r)  # x (columns), y (rows)


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """(x, y) Sigma^-1 (x, y)^T on a size x size grid, Sigma = R diag(sx^2, sy^2) R^T."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(cov)
    x, y = _grid(size)
    return inv[0, 0] * x * x + (inv[0, 1] + inv[1, 0]) * x * y + inv[1, 1] * y * y


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float = 1.0) -> np.ndarray:
    """Generalized (anisotropic) Gaussian: exp(-(0.5 d)^beta), d the Mahalanobis form; beta = 1 is Gaussian."""
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    k = np.exp(-np.power(0.5 * q, beta))
    return k / k.sum()


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """Plateau-shaped kernel 1 / (1 + d^beta): flat top, heavy tails."""
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    k = 1.0 / (np.power(q, beta) + 1.0)
    return k / k.sum()


def circular_lowpass_kernel(size: int, cutoff: float) -> np.ndarray:
    """2-D sinc: the ideal circular low-pass with angular cutoff ``cutoff`` (radians/pixel), ``size`` odd.

    k(r) = cutoff * J1(cutoff * r) / (2 pi r), with k(0) = cutoff^2 / (4 pi); normalised to sum 1.
    """
    from scipy.special import j1

    x, y = _grid(size)
    r = np.hypot(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * j1(cutoff * r) / (2.0 * math.pi * r)
    k[r == 0] = cutoff * cutoff / (4.0 * math.pi)
    return k / k.sum()


def mixed_kernel(
    rng: np.random.Generator,
    size: int,
    types: tuple[str, ...],
    probs: tuple[float, ...],
    sigma_range: tuple[float, float],
    betag_range: tuple[float, float],
    betap_range: tuple[float, float],
) -> np.ndarray:
    """A random blur kernel of one of ``types`` (drawn with ``probs``)."""
    kind = types[int(rng.choice(len(types), p=np.asarray(probs) / np.sum(probs)))]
    sigma_x = rng.uniform(*sigma_range)
    if kind.endswith("_iso") or kind == "iso":
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y = rng.uniform(*sigma_range)
        theta = rng.uniform(-math.pi, math.pi)
    if kind.startswith("generalized"):
        # half the time a peaky (beta < 1) shape, half the time a flat (beta > 1) one, as Real-ESRGAN does
        beta = rng.uniform(betag_range[0], 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, betag_range[1])
        return gaussian_kernel(size, sigma_x, sigma_y, theta, beta)
    if kind.startswith("plateau"):
        beta = rng.uniform(betap_range[0], 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, betap_range[1])
        return plateau_kernel(size, sigma_x, sigma_y, theta, beta)
    return gaussian_kernel(size, sigma_x, sigma_y, theta)


# -- the degradation ---------------------------------------------------------------------------------------------
class RealPhotoDegradation:
    """Turns an HR float RGB image in [0, 1] into a degraded LR image of exactly (H // scale, W // scale, 3)."""

    def __init__(self, config: RealPhotoConfig | None = None) -> None:
        self.config = config or RealPhotoConfig()

    # helpers -------------------------------------------------------------------------------------------------
    def _kernel_size(self, rng: np.random.Generator, size_range: tuple[int, int], image: np.ndarray) -> int:
        lo, hi = size_range
        odd = np.arange(lo | 1, hi + 1, 2)
        size = int(rng.choice(odd))
        cap = int(min(image.shape[:2]) * self.config.max_kernel_fraction)
        cap = max(3, cap if cap % 2 else cap - 1)
        return min(size, cap)

    def _blur(self, img, rng, sizes, sinc_prob, sigma, betag, betap) -> np.ndarray:
        cfg = self.config
        size = self._kernel_size(rng, sizes, img)
        if rng.uniform() < sinc_prob:
            cutoff = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi)
            kernel = circular_lowpass_kernel(size, cutoff)
        else:
            kernel = mixed_kernel(rng, size, cfg.kernel_types, cfg.kernel_probs, sigma, betag, betap)
        return _filter(img, kernel)

    def _random_resize(self, img, rng, probs, scale_range, base_hw) -> np.ndarray:
        mode = int(rng.choice(3, p=np.asarray(probs)))
        if mode == 0:
            factor = rng.uniform(1.0, scale_range[1])
        elif mode == 1:
            factor = rng.uniform(scale_range[0], 1.0)
        else:
            factor = 1.0
        interp = self.config.interpolations[int(rng.integers(len(self.config.interpolations)))]
        h = max(self.config.min_size, int(base_hw[0] * factor))
        w = max(self.config.min_size, int(base_hw[1] * factor))
        return _resize(img, (h, w), interp)

    def _noise(self, img, rng, gaussian_prob, sigma_range, poisson_range, gray_prob) -> np.ndarray:
        gray = rng.uniform() < gray_prob
        if rng.uniform() < gaussian_prob:
            sigma = rng.uniform(*sigma_range) / 255.0
            shape = img.shape[:2] + ((1,) if gray else (img.shape[2],))
            noise = rng.standard_normal(shape) * sigma
        else:
            scale = rng.uniform(*poisson_range)
            noise = _poisson_noise(img, rng, gray) * scale
        return np.clip(img + noise, 0.0, 1.0)

    @staticmethod
    def _jpeg(img, rng, quality_range) -> np.ndarray:
        quality = int(rng.integers(quality_range[0], quality_range[1] + 1))
        return _jpeg(img, quality)

    # the chain -----------------------------------------------------------------------------------------------
    def apply(self, hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
        """Degrade ``hr`` (float (H, W, 3) RGB in [0, 1]) to a float32 LR image (H // scale, W // scale, 3) in [0, 1]."""
        cfg = self.config
        hr = np.asarray(hr)
        if hr.ndim != 3 or hr.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {hr.shape}")
        if scale < 1 or int(scale) != scale:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        scale = int(scale)
        out_hw = (hr.shape[0] // scale, hr.shape[1] // scale)
        if min(out_hw) < 1:
            raise ValueError(f"image {hr.shape[:2]} too small for scale {scale}")
        img = np.clip(hr.astype(np.float32), 0.0, 1.0)

        # first order, at the HR size
        img = self._blur(img, rng, cfg.kernel_sizes, cfg.sinc_prob, cfg.blur_sigma, cfg.betag_range, cfg.betap_range)
        img = self._random_resize(img, rng, cfg.resize_probs, cfg.resize_range, img.shape[:2])
        img = self._noise(img, rng, cfg.gaussian_noise_prob, cfg.noise_range, cfg.poisson_scale_range, cfg.gray_noise_prob)
        img = self._jpeg(img, rng, cfg.jpeg_range)

        # second order, its resize relative to the final LR size
        if rng.uniform() < cfg.second_order_prob:
            if rng.uniform() < cfg.second_blur_prob:
                img = self._blur(
                    img, rng, cfg.kernel_sizes2, cfg.sinc_prob2, cfg.blur_sigma2, cfg.betag_range2, cfg.betap_range2
                )
            img = self._random_resize(img, rng, cfg.resize_probs2, cfg.resize_range2, out_hw)
            img = self._noise(
                img, rng, cfg.gaussian_noise_prob2, cfg.noise_range2, cfg.poisson_scale_range2, cfg.gray_noise_prob2
            )

        # final stage: resize to exactly HR / scale (+ sinc) and JPEG, in a random order
        def resize_and_sinc(x: np.ndarray) -> np.ndarray:
            interp = cfg.interpolations[int(rng.integers(len(cfg.interpolations)))]
            x = _resize(x, out_hw, interp)
            if rng.uniform() < cfg.final_sinc_prob:
                size = self._kernel_size(rng, cfg.kernel_sizes, x)
                x = _filter(x, circular_lowpass_kernel(size, rng.uniform(math.pi / 3, math.pi)))
            return x

        if rng.uniform() < cfg.jpeg_last_prob:
            img = resize_and_sinc(img)
            img = self._jpeg(img, rng, cfg.jpeg_range2)
        else:
            img = self._jpeg(img, rng, cfg.jpeg_range2)
            img = resize_and_sinc(img)
        return np.clip(img, 0.0, 1.0).astype(np.float32)

    __call__ = apply


# -- image operations --------------------------------------------------------------------------------------------
def _filter(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    out = cv2.filter2D(img.astype(np.float32), -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    return out.reshape(img.shape)


def _resize(img: np.ndarray, hw: tuple[int, int], interp: str) -> np.ndarray:
    if img.shape[:2] == tuple(hw):
        return img
    out = cv2.resize(img, (hw[1], hw[0]), interpolation=INTERPOLATIONS[interp])
    return np.clip(out.reshape(hw + img.shape[2:]), 0.0, 1.0)


def _poisson_noise(img: np.ndarray, rng: np.random.Generator, gray: bool) -> np.ndarray:
    """Shot noise: photon counts ~ Poisson(img * vals), vals the next power of two of the number of grey levels."""
    base = img.mean(axis=2, keepdims=True) if gray else img
    quantised = np.round(np.clip(base, 0.0, 1.0) * 255.0) / 255.0
    levels = len(np.unique(quantised))
    vals = 2 ** math.ceil(math.log2(max(levels, 2)))
    noisy = rng.poisson(quantised * vals).astype(np.float32) / vals
    return noisy - quantised


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through OpenCV's JPEG codec at ``quality`` (RGB given to it as BGR, as it expects)."""
    u8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(u8[..., ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:
        raise RuntimeError("OpenCV failed to encode JPEG")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return decoded[..., ::-1].astype(np.float32) / 255.0
