"""Validation PSNR as the evaluation protocol measures it: output rounded to 8 bit, Y channel of BT.601
YCbCr (16-235), ``scale`` pixels shaved from each border. (``model_export.metrics`` is the reference
implementation for reported figures; this copy keeps training independent of it and is checked against the
formula in the tests.)"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """uint8 / [0, 255] RGB (H, W, 3) -> float64 Y in [16, 235]."""
    img = np.asarray(img, dtype=np.float64)
    return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """PSNR (dB) between two uint8 RGB images on the Y channel, ``shave`` border pixels excluded."""
    a, b = rgb_to_y(sr), rgb_to_y(hr)
    if shave > 0:
        a, b = a[shave:-shave, shave:-shave], b[shave:-shave, shave:-shave]
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    arr = t[0].detach().float().clamp(0.0, 1.0).permute(1, 2, 0).cpu().numpy()
    return np.round(arr * 255.0).astype(np.uint8)


@torch.inference_mode()
def upscale(net: torch.nn.Module, lr: torch.Tensor, scale: int, multiple: int = 1) -> torch.Tensor:
    """Run ``net`` on a whole LR image, reflect-padding it to a multiple of ``multiple`` and cropping back."""
    h, w = lr.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    x = F.pad(lr, (0, pw, 0, ph), mode="reflect") if (ph or pw) else lr
    out = net(x)
    return out[..., : h * scale, : w * scale]


def validate(run: Callable[[torch.Tensor], torch.Tensor], val_set, scale: int,
             perceptual: Callable[[np.ndarray, np.ndarray], float] | None = None) -> dict:
    """Mean PSNR-Y over the validation set; ``run(lr) -> sr`` (float tensors). With ``perceptual`` (e.g. an
    ST-LPIPS scorer of uint8 images) also its mean on the same outputs, ``scale`` pixels shaved, as ``stlpips``:
    what a perceptual fine-tune is chosen by, on held-out training images rather than the benchmarks."""
    scores, distances = [], []
    for lr, hr in zip(val_set.lr, val_set.hr):
        sr = to_uint8(run(lr))
        scores.append(psnr_y(sr, hr, scale))
        if perceptual is not None:
            s = slice(scale, -scale) if scale > 0 else slice(None)
            distances.append(perceptual(sr[s, s], hr[s, s]))
    out = {"psnr": float(np.mean(scores)) if scores else float("nan"), "per_image": scores}
    if perceptual is not None:
        out["stlpips"] = float(np.mean(distances)) if distances else float("nan")
    return out
