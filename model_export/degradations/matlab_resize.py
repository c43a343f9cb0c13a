"""MATLAB-compatible bicubic ``imresize``, the degradation every published SR table is measured with.

Written here from MATLAB's documented algorithm (Keys cubic kernel with a = -0.5; when shrinking, the kernel is
stretched by 1/scale so it also low-passes ("antialiasing"); symmetric padding at the borders; the dimension with the
smaller scale is resized first). OpenCV's and Pillow's bicubic differ from it (no antialias or other a / padding),
and PSNR tables shift by tenths of a dB with them, so no library substitutes for it.
"""

from __future__ import annotations

import math

import numpy as np


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def contributions(in_len: int, out_len: int, scale: float, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Weights (out_len, P) and 0-based source indices (out_len, P) of a 1-D MATLAB bicubic resize."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel = lambda t: scale * cubic(scale * t)  # noqa: E731 - the stretched kernel, as MATLAB builds it
        kernel_width /= scale
    else:
        kernel = cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # output pixel centre in 1-based input coordinates
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = kernel(u[:, None] - indices)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric padding: 1-based index 0 -> 1, -1 -> 2, in_len + 1 -> in_len, ...
    zero_based = indices - 1
    period = 2 * in_len
    zero_based = np.mod(zero_based, period)
    zero_based = np.where(zero_based >= in_len, period - 1 - zero_based, zero_based).astype(np.int64)
    used = np.any(weights != 0, axis=0)
    return weights[:, used], zero_based[:, used]


def _resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    weights, idx = contributions(img.shape[axis], out_len, scale, antialias)
    moved = np.moveaxis(img, axis, 0)  # (L, ...)
    gathered = moved[idx]  # (out_len, P, ...)
    w = weights.reshape(weights.shape + (1,) * (moved.ndim - 1))
    out = np.sum(gathered * w, axis=1)
    return np.moveaxis(out, 0, axis)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) image like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Computes in float64 and returns float64 without rounding or clipping: callers that need MATLAB's uint8
    behaviour round and clip themselves (``np.clip(np.round(x), 0, 255)``). Give ``scale`` (the output size is
    ``ceil(scale * size)``, as in MATLAB) or ``output_shape`` (H, W).
    """
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale or output_shape")
    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape[:2]
    if output_shape is None:
        scales = (float(scale), float(scale))
        output_shape = (int(math.ceil(h * scale)), int(math.ceil(w * scale)))
    else:
        scales = (output_shape[0] / h, output_shape[1] / w)
    order = np.argsort(scales, kind="stable")  # MATLAB resizes the dimension with the smaller scale first
    out = img
    for axis in order:
        out = _resize_axis(out, int(axis), output_shape[axis], scales[axis], antialias)
    return out
