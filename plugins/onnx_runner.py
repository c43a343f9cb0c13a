"""The runner shared by backends that are one ONNX model mapping ``lr`` to ``sr`` (NCHW float32 RGB in [0, 1])."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np


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
    """

    session: Any
    scale: float
    multiple: int = 1
    extra_inputs: dict[str, np.ndarray] | None = None
    tta: bool = False

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        if not self.tta:
            return self.run_once(tile)
        total = self.run_once(tile)
        for k in range(1, 8):
            total += undo_dihedral(self.run_once(dihedral(tile, k)), k)
        return total / 8.0

    def run_once(self, tile: np.ndarray) -> np.ndarray:
        lr = np.ascontiguousarray(tile.transpose(2, 0, 1)[None], dtype=np.float32)
        feeds = {"lr": lr, **(self.extra_inputs or {})}
        (sr,) = self.session.run(["sr"], feeds)
        return sr[0].transpose(1, 2, 0)


def read_metadata(model_path: str | os.PathLike) -> dict[str, str]:
    """The model's metadata props (``invsr.scale``, ``invsr.arch``, ...) without loading its weights into ORT."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}
