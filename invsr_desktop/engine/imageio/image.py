"""The image the engine works on: pixels plus what a good upscaler keeps from the original."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from invsr_desktop.engine.pixels import is_stored


@dataclass
class Image:
    """Pixels and the metadata that travels with them from the input file to the output file.

    ``pixels`` is float32 (H, W, C) in [0, 1]; C is 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA), alpha
    unpremultiplied. A result on its way to a file may instead hold the file's integers (uint8 / uint16, see
    :mod:`~invsr_desktop.engine.pixels`): the engine rounds an upscale's tiles into them as they finish, so a big
    photo never holds its result in float32; :func:`save_image` writes either, and loading always gives floats.
    ``bit_depth`` (8 or 16) is what the source held and what formats that can will write.
    ``exif`` is the raw EXIF block (``b"Exif\\0\\0"`` + TIFF structure) with the orientation already applied to
    the pixels (its orientation tag reads 1). ``notes`` say what loading changed (palette expanded, CMYK converted).
    """

    pixels: np.ndarray
    bit_depth: int = 8
    exif: bytes | None = None
    icc_profile: bytes | None = None
    source_format: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        pixels = np.asarray(self.pixels)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"pixels must be (H, W, C) with C in 1..4, got shape {pixels.shape}")
        if pixels.dtype != np.float32 and not is_stored(pixels):
            pixels = pixels.astype(np.float32)
        self.pixels = pixels
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth}")

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    @property
    def is_grey(self) -> bool:
        return self.channels in (1, 2)

    @property
    def color(self) -> np.ndarray:
        """The colour channels, (H, W, 1) or (H, W, 3), without alpha (a view, not a copy)."""
        return self.pixels[..., : self.channels - 1] if self.has_alpha else self.pixels

    @property
    def alpha(self) -> np.ndarray | None:
        """The alpha channel, (H, W, 1), or None."""
        return self.pixels[..., -1:] if self.has_alpha else None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow and file headers give it."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    def with_pixels(self, pixels: np.ndarray) -> Image:
        """A copy with new pixels (any size, same layout expected) and the same metadata."""
        return dataclasses.replace(self, pixels=pixels, notes=list(self.notes))
