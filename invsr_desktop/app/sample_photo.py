"""A synthetic photo for the screenshots and the tests: smooth colour gradients and a disc, so an upscaled result
looks like something and nothing depends on a file a clone may not have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage


def make_photo(path: Path, width: int = 64, height: int = 48, seed: int = 0) -> Path:
    """A smooth colourful photo-like image (gradients and a disc), so upscaled results look like something."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    r = 0.5 + 0.5 * np.sin(x / max(4.0, width / 6) + rng.uniform(0, 6))
    g = 0.5 + 0.5 * np.cos(y / max(4.0, height / 5) + rng.uniform(0, 6))
    b = ((x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2).astype(np.float32)
    pixels = np.stack([r, g, 0.3 + 0.6 * b], axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray((pixels * 255).round().astype(np.uint8)).save(path)
    return path
