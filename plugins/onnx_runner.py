"""The runner shared by backends that are one ONNX model mapping ``lr`` to ``sr`` (NCHW float32 RGB in [0, 1])."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

COLOUR_FIX_SIGMA = 2.0  # LR pixels; the blur's radius (3 sigma) stays inside the engine's 16-pixel tile overlap


def colour_fixed(lr: np.ndarray, sr: np.ndarray, sigma: float = COLOUR_FIX_SIGMA) -> np.ndarray:
    """``sr`` with its slow colour drift from ``lr`` removed: the difference between the input and the output
    shrunk to the input's size (area average), blurred to keep only changes over several input pixels, is
    enlarged and added back. Detail the model adds averages out in the shrink and the blur; a shift of a region's
    colour does not. chaiNNer's "Average Color Fix" and StableSR's colour fix do the same for GAN / diffusion
    output; here it is a few OpenCV calls per tile (no library offers it as a function)."""
    h, w = lr.shape[:2]
    sr = np.clip(sr, 0.0, 1.0)  # the colours the user gets: a GAN's over-dark detail is clipped, which shifts means
    shrunk = cv2.resize(sr, (w, h), interpolation=cv2.INTER_AREA)
    drift = cv2.GaussianBlur(lr.astype(np.float32) - shrunk, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return sr + cv2.resize(drift, (sr.shape[1], sr.shape[0]), interpolation=cv2.INTER_LINEAR)


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th (0..7) of the 8 flips / rotations of an (H, W, C) image: ``k % 4`` quarter turns, mirrored first
    when ``k >= 4``."""
    return np.rot90(image[:, ::-1] if k >= 4 else image, k % 4)


def undo_dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """The inverse of :func:`dihedral`: ``undo_dihedral(dihedral(x, k), k) == x``."""
    turned = np.rot90(image, -(k % 4))
    return turned[:, ::-1] if k >= 4 else turned


@dataclass
class OnnxRunner:
    """Runs one tile through a session: (H, W, 3) -> (sH, sW, 3), float32.

    ``tta``: test-time augmentation (the "TTA mode" of waifu2x / Real-ESRGAN-ncnn-vulkan, EDSR's self-ensemble):
    the tile is run in all 8 flips and quarter turns and the 8 outputs, turned back, are averaged. Eight times the
    work for a cleaner, slightly more faithful image (the model's errors that depend on orientation average out).
    Each tile's transforms are undone within the tile, so the engine's tiling and blending are unchanged.

    ``colour_fix``: :func:`colour_fixed` on each tile's output (after TTA). For models trained on noisy LRs, which
    learn that noise clipped at black brightens the shadows and darken them back, also on clean input.
    """

    session: Any
    scale: float
    multiple: int = 1
    extra_inputs: dict[str, np.ndarray] | None = None
    tta: bool = False
    colour_fix: bool = False
    model_name: str = ""  # the model file's name, for the engine's error messages

    @property
    def passes(self) -> int:
        """Model passes per tile (the engine's progress moves pass by pass through ``on_pass``)."""
        return 8 if self.tta else 1

    def __call__(self, tile: np.ndarray, on_pass: Callable[[], None] | None = None) -> np.ndarray:
        out = self.run_once(tile)
        if self.tta:
            for k in range(1, 8):
                if on_pass:
                    on_pass()
                out += undo_dihedral(self.run_once(dihedral(tile, k)), k)
            out /= 8.0
        return colour_fixed(tile, out) if self.colour_fix else out

    def run_once(self, tile: np.ndarray) -> np.ndarray:
        lr = np.ascontiguousarray(tile.transpose(2, 0, 1)[None], dtype=np.float32)
        feeds = {"lr": lr, **(self.extra_inputs or {})}
        (sr,) = self.session.run(["sr"], feeds)
        return sr[0].transpose(1, 2, 0)
