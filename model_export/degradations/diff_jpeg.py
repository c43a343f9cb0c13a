"""A differentiable JPEG: the codec a shared small image goes through, with gradients, for training the INN.

SAIN (Yang et al., AAAI 2023) makes an invertible rescaler survive compression by training it through a JPEG
simulation between the forward (shrink) and the inverse (restore). This is that simulation, written from the JPEG
standard (ITU T.81) and the IJG encoder's conventions, so the small images it makes are close to what the app's
``save_image`` writes through Pillow / libjpeg:

- RGB -> YCbCr (BT.601 full range, as JFIF), levels rounded to 8 bit, shifted by -128;
- chroma 4:2:0 by a 2x2 mean where the sample says so (the app subsamples below quality 90), else 4:4:4;
- 8x8 block DCT-II (orthonormal), division by the IJG quantisation tables for the quality (Annex K tables scaled
  as libjpeg's ``jpeg_quality_scaling``), **rounding**, multiplication back, inverse DCT;
- chroma back to full size by bilinear interpolation (libjpeg's "fancy" h2v2 upsampling is the same 3/4, 1/4
  triangle filter), YCbCr -> RGB, clamped and rounded to 8 bit (the decoded file is 8-bit).

Every rounding is straight-through (identity gradient, as the INN's own 8-bit quantisation), which SAIN and the
"JPEG-resistant" literature found enough to learn through; the clamps pass no gradient outside [0, 1].

No library does this: Pillow and OpenCV encode without gradients, and the differentiable JPEG packages on PyPI
pull torchvision or kornia builds that do not install beside the CPU torch here. Written by hand, ~100 lines.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LUMA_TABLE", "CHROMA_TABLE", "SUBSAMPLE_BELOW", "pillow_jpeg", "quant_table", "jpeg_simulate", "round_ste"]

SUBSAMPLE_BELOW = 90  # the app's save_image: 4:2:0 chroma below this quality, 4:4:4 from it

# ITU T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), in natural (row-major) order.
LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip

_RGB_TO_YCC = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168735892, -0.331264108, 0.5], [0.5, -0.418687589, -0.081312411]]
)
_YCC_TO_RGB = torch.linalg.inv(_RGB_TO_YCC)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient."""
    return x + (torch.round(x) - x).detach()


def quant_table(quality: int, chroma: bool = False) -> torch.Tensor:
    """The 8x8 table libjpeg uses at ``quality`` (1-100): Annex K scaled by 5000/q below 50, 200-2q above."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be between 1 and 100, got {quality}")
    q = int(quality)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    base = torch.tensor(CHROMA_TABLE if chroma else LUMA_TABLE, dtype=torch.float32)
    return torch.clamp(torch.floor((base * scale + 50) / 100), 1, 255).reshape(8, 8)


def _dct_matrix() -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix ``D``: a block's coefficients are ``D @ block @ D.T``."""
    k = torch.arange(8, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(8, dtype=torch.float64).unsqueeze(0)
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.float()


_DCT = _dct_matrix()


def _code_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """DCT, quantise (straight-through), dequantise and inverse DCT one level-shifted plane ``(B, 1, H, W)``.

    ``table`` is ``(B, 8, 8)``: one quantisation table per sample. ``H`` and ``W`` are multiples of 8.
    """
    b, _, h, w = plane.shape
    d = _DCT.to(plane)
    blocks = plane.reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)  # (B, h/8, w/8, 8, 8)
    coeffs = d @ blocks @ d.T
    t = table.to(plane)[:, None, None]
    coeffs = round_ste(coeffs / t) * t
    blocks = d.T @ coeffs @ d
    return blocks.permute(0, 1, 3, 2, 4).reshape(b, 1, h, w)


def jpeg_simulate(rgb: torch.Tensor, quality: torch.Tensor | int, subsample: torch.Tensor | bool) -> torch.Tensor:
    """Encode and decode ``rgb`` ``(B, 3, H, W)`` in [0, 1] as JPEG, differentiably; returns the 8-bit decode.

    ``quality`` and ``subsample`` (4:2:0 chroma) are one value for the batch or one per sample. Sizes that are not
    a multiple of 16 are padded by edge replication, as the encoder does, and cropped back.
    """
    b, _, h, w = rgb.shape
    qualities = torch.as_tensor(quality).reshape(-1).expand(b).tolist()
    sub = torch.as_tensor(subsample, dtype=torch.bool, device=rgb.device).reshape(-1).expand(b)
    luma = torch.stack([quant_table(q) for q in qualities])
    chroma = torch.stack([quant_table(q, chroma=True) for q in qualities])
    ph, pw = -h % 16, -w % 16
    x = F.pad(rgb, (0, pw, 0, ph), mode="replicate") if ph or pw else rgb
    ycc = torch.einsum("ij,bjhw->bihw", _RGB_TO_YCC.to(x), x.clamp(0, 1) * 255.0)
    luma_shift = torch.tensor([128.0, 0.0, 0.0], device=x.device).reshape(1, 3, 1, 1)
    ycc = round_ste(ycc) - luma_shift  # JFIF stores Cb, Cr + 128; with the level shift of -128 all are centred
    planes = [_code_plane(ycc[:, :1], luma)]
    for c in (1, 2):
        full = _code_plane(ycc[:, c : c + 1], chroma)
        if bool(sub.any()):
            small = _code_plane(F.avg_pool2d(ycc[:, c : c + 1], 2), chroma)
            up = F.interpolate(small, scale_factor=2, mode="bilinear", align_corners=False)
            full = torch.where(sub.reshape(b, 1, 1, 1), up, full)
        planes.append(full)
    ycc = torch.cat(planes, dim=1) + luma_shift
    out = torch.einsum("ij,bjhw->bihw", _YCC_TO_RGB.to(x), ycc)
    out = round_ste(out.clamp(0, 255)) / 255.0
    return out[:, :, :h, :w]


def pillow_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip a uint8 RGB image through Pillow's JPEG as the app saves it (the reference the simulation is
    checked against, and what validation scores the restore on)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=int(quality), subsampling=2 if quality < SUBSAMPLE_BELOW else 0)
    buf.seek(0)
    return np.array(Image.open(buf).convert("RGB"))
