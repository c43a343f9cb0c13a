"""The camera-like evaluation LR: a fixed, seeded stand-in for the photos users actually upscale (issue 23).

A benchmark's bicubic LR is cleaner than any photo: a phone or camera image is soft (optics, demosaicing), noisy
(shot noise that grows with the signal, read noise that does not, mostly shared by the three channels) and
JPEG-compressed. This protocol makes one such LR per HR image:

    Gaussian blur (sigma = 0.4 x scale HR pixels) -> MATLAB bicubic /scale -> sensor-like noise -> 8 bit
    -> JPEG quality 75, 4:2:0 (Pillow, as phones and this app save)

It is deliberately one fixed degradation, not a distribution: it is what ``invsr-eval --degrade camera`` scores, so
every backend (ours, an imported Real-ESRGAN) sees the same pixels. The noise comes from a generator seeded by the
image's file name, so an image gets the same LR in every run and in any order. The training pipeline
(:mod:`~model_export.degradations.real_photo`) draws its degradations from wide ranges instead, and never this
exact one.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image

from model_export.degradations.matlab_resize import imresize

__all__ = ["CAMERA", "PARTS", "CameraProtocol", "camera_lr", "image_seed"]

PARTS = ("blur", "noise", "jpeg")  # the steps a protocol can switch off (CameraProtocol.keeping)


@dataclass(frozen=True)
class CameraProtocol:
    """The protocol's constants, in 8-bit levels; the description goes into every report that uses it."""

    blur_per_scale: float = 0.4  # Gaussian sigma in HR pixels per unit of scale: 1.6 px at x4, a soft lens
    shot_variance: float = 0.05  # noise variance per level of signal: 3.2 levels of std at mid grey with read
    read_variance: float = 4.0  # signal-independent variance (std 2 levels)
    shared: float = 0.64  # share of the noise variance common to R, G and B (sensor noise after demosaicing)
    jpeg_quality: int | None = 75  # None: no JPEG
    seed: int = 2026

    def describe(self, scale: int) -> str:
        steps = []
        if self.blur_per_scale > 0:
            steps.append(f"Gaussian blur (sigma {self.blur_per_scale * scale:g} HR px)")
        steps.append(f"MATLAB bicubic /{scale}")
        if self.shot_variance > 0 or self.read_variance > 0:
            steps.append(
                f"signal-dependent noise (variance {self.shot_variance:g} x level + {self.read_variance:g}, "
                f"{self.shared:.0%} shared by the channels, seeded per file name)"
            )
        steps.append("8 bit")
        if self.jpeg_quality is not None:
            steps.append(f"JPEG q{self.jpeg_quality} 4:2:0 (Pillow)")
        return "camera-like LR: " + ", ".join(steps)

    def keeping(self, *parts: str) -> CameraProtocol:
        """This protocol with only ``parts`` (of :data:`PARTS`) switched on: what each step alone costs a model
        (``model_export.commands.camera_parts``). The steps kept are unchanged, the noise's seed included."""
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown camera step(s) {sorted(unknown)}; known: {', '.join(PARTS)}")
        off: dict[str, object] = {}
        if "blur" not in parts:
            off["blur_per_scale"] = 0.0
        if "noise" not in parts:
            off.update(shot_variance=0.0, read_variance=0.0)
        if "jpeg" not in parts:
            off["jpeg_quality"] = None
        return replace(self, **off)


CAMERA = CameraProtocol()


def image_seed(name: str, protocol: CameraProtocol = CAMERA) -> int:
    """A seed from the file name alone: the same LR for an image whatever else is evaluated with it."""
    return zlib.crc32(name.encode("utf-8")) ^ protocol.seed


def camera_lr(hr: np.ndarray, scale: int, rng: np.random.Generator, protocol: CameraProtocol = CAMERA) -> np.ndarray:
    """The camera-like LR of ``hr`` (H x W or H x W x 3, values 0-255) as uint8 of the same layout; ``rng`` draws
    the noise (``invsr-eval`` seeds it with :func:`image_seed`, training validation by the image's position).

    H and W must be multiples of ``scale`` (the evaluation mod-crops first)."""
    img = np.asarray(hr, dtype=np.float64)
    grey = img.ndim == 2
    if grey:
        img = img[..., None]
    sigma = protocol.blur_per_scale * scale
    if sigma > 0:
        radius = int(np.ceil(3 * sigma))
        img = cv2.GaussianBlur(img, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_REFLECT_101)
        img = img.reshape(img.shape[:2] + (-1,))  # OpenCV drops a single channel axis
    lr = np.clip(imresize(img, 1.0 / scale), 0.0, 255.0)
    lr = _sensor_noise(lr, rng, protocol)
    small = np.clip(np.round(lr), 0, 255).astype(np.uint8)
    small = small[..., 0] if grey else small
    return small if protocol.jpeg_quality is None else _jpeg(small, protocol.jpeg_quality)


def _sensor_noise(lr: np.ndarray, rng: np.random.Generator, p: CameraProtocol) -> np.ndarray:
    """Poisson-Gaussian noise approximated as Gaussian with variance ``shot * level + read``, partly shared."""
    std = np.sqrt(p.shot_variance * lr + p.read_variance)
    shared = rng.standard_normal(lr.shape[:2] + (1,))
    own = rng.standard_normal(lr.shape)
    unit = np.sqrt(p.shared) * shared + np.sqrt(1.0 - p.shared) * own
    return lr + std * unit


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    with Image.open(io.BytesIO(buf.getvalue())) as decoded:
        return np.asarray(decoded.convert("L" if img.ndim == 2 else "RGB"))
