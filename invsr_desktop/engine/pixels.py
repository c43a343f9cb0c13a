"""Pixel values: the engine's float32 in [0, 1] and the 8 / 16-bit integers a file stores.

The engine computes in float; a result on its way to a file may already be the file's integers (an upscale's tiles
are rounded into the output as they finish, so a big photo never holds a float32 copy of its result). These are the
conversions both sides use, so a pixel rounds the same way whichever path wrote it.
"""

from __future__ import annotations

import numpy as np

# BT.601 luma weights (what Pillow's convert("L") uses): a grey image's result is brought back to one channel.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W, 1) BT.601 luma, element by element: a matrix product's summation order depends on the
    array's shape, so a band and a whole image would round a pixel differently (a 16-bit file shows it)."""
    r, g, b = (rgb[..., i : i + 1] for i in range(3))
    return r * LUMA[0] + g * LUMA[1] + b * LUMA[2]


QUANTIZE_BAND = 256  # rows converted at a time: the temporaries are a band, not a second full-size float image


def stored_dtype(depth: int) -> type[np.unsignedinteger]:
    """The integer type of ``depth`` bits a file stores (8 or 16)."""
    if depth not in (8, 16):
        raise ValueError(f"bit depth must be 8 or 16, got {depth}")
    return np.uint8 if depth == 8 else np.uint16


def is_stored(pixels: np.ndarray) -> bool:
    """Whether ``pixels`` are a file's integers (uint8 / uint16) rather than floats in [0, 1]."""
    return pixels.dtype in (np.uint8, np.uint16)


def finite(pixels: np.ndarray) -> np.ndarray:
    """NaN -> 0, +inf -> 1, -inf -> 0 (what a broken backend's output becomes in the file)."""
    return np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)


def as_float(pixels: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1]: stored integers divided by their maximum, floats as they are (no copy)."""
    if is_stored(pixels):
        return np.divide(pixels, np.float32(np.iinfo(pixels.dtype).max), dtype=np.float32)
    return pixels.astype(np.float32, copy=False)


def quantize(pixels: np.ndarray, depth: int) -> np.ndarray:
    """Pixels to uint8 / uint16 (floats rounded, clipped, NaN / inf mapped as :func:`finite`), band by band into
    the one output array: the peak is the input, the output and one band. Stored integers of that depth are
    returned as they are; of the other depth, converted through float."""
    dtype = stored_dtype(depth)
    if pixels.dtype == dtype:
        return pixels
    top = np.float32(np.iinfo(dtype).max)
    out = np.empty(pixels.shape, dtype=dtype)
    for b0 in range(0, pixels.shape[0], QUANTIZE_BAND):
        band = np.array(as_float(pixels[b0 : b0 + QUANTIZE_BAND]), dtype=np.float32)  # a copy: the caller's stays
        np.nan_to_num(band, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(band, 0.0, 1.0, out=band)
        band *= top
        np.rint(band, out=band)
        out[b0 : b0 + QUANTIZE_BAND] = band
    return out
