"""Writing: an :class:`~invsr_desktop.engine.imageio.image.Image` as PNG, JPEG, WebP or TIFF, atomically and never
over a file, with what the format loses said in words (:func:`save_notes`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image as PILImage

from invsr_desktop.engine.errors import (
    ImageWriteError,
)
from invsr_desktop.engine.imageio.atomic import atomic_write
from invsr_desktop.engine.imageio.encoders import PNG_COMPRESS_LEVEL, tiff_bytes, write_png16
from invsr_desktop.engine.imageio.exif import exif_for_jpeg, exif_for_output
from invsr_desktop.engine.imageio.image import Image
from invsr_desktop.engine.pixels import as_float, finite, quantize

log = logging.getLogger(__name__)

# Output formats and their preferred suffix.
WRITE_FORMATS: dict[str, str] = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif"}
SUFFIX_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}


def format_for_suffix(path: str | os.PathLike[str]) -> str | None:
    """``"PNG"``, ``"JPEG"``, ``"WEBP"`` or ``"TIFF"`` for a file name's suffix, None if not a writable one."""
    return SUFFIX_FORMATS.get(Path(path).suffix.lower())


def _resolve_format(path: Path, format: str | None) -> str:
    if format:
        name = format.strip().lstrip(".").upper()
        name = FORMAT_ALIASES.get(name, name)
        if name not in WRITE_FORMATS:
            raise ImageWriteError(path, f"unsupported output format {format!r} (use PNG, JPEG, WebP or TIFF)")
        return name
    inferred = format_for_suffix(path)
    if inferred is None:
        raise ImageWriteError(
            path, f"cannot tell the format from the suffix {path.suffix!r} (use .png, .jpg, .webp or .tif)"
        )
    return inferred


def save_notes(image: Image, format: str) -> list[str]:
    """What writing ``image`` as ``format`` will lose, in words for the user (empty when nothing is lost)."""
    fmt = FORMAT_ALIASES.get(format.strip().lstrip(".").upper(), format.strip().lstrip(".").upper())
    notes = []
    if fmt == "JPEG" and image.has_alpha:
        notes.append("JPEG has no transparency: the image was flattened onto a white background")
    if fmt in ("JPEG", "WEBP") and image.bit_depth == 16:
        notes.append(f"{'WebP' if fmt == 'WEBP' else 'JPEG'} holds 8 bits per channel: 16-bit image saved as 8-bit")
    if fmt == "WEBP" and image.is_grey:
        notes.append("WebP has no greyscale mode: saved as RGB")
    return notes


def save_image(
    image: Image,
    path: str | os.PathLike[str],
    format: str | None = None,
    quality: int = 95,
    lossless: bool = False,
    renumber: bool = False,
) -> Path:
    """Write ``image`` to ``path`` as PNG, JPEG, WebP or TIFF (``format``, or from the suffix); returns the path.

    With ``renumber``, a name that another program took meanwhile is not an error: the finished file gets the next
    free numbered name (``photo_x4 (1).png``) instead, so the work is never thrown away.

    EXIF is kept with its orientation set to 1 and its pixel dimensions set to the new size; the ICC profile is
    kept; alpha is kept (JPEG: flattened onto white, see :func:`save_notes`); 16-bit images stay 16-bit in PNG
    and TIFF. ``quality`` (1-100) applies to JPEG and lossy WebP, ``lossless`` to WebP.

    The file is written to a temporary name in the same folder and then linked to ``path``, which is never
    overwritten (:class:`OutputExistsError`) and never holds a partial file: on any failure (disk full,
    permission) the temporary file is removed and :class:`ImageWriteError` raised.
    """
    path = Path(path)
    fmt = _resolve_format(path, format)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be between 1 and 100, got {quality}")
    for note in save_notes(image, fmt):
        log.warning("%s: %s", path.name, note)
    return atomic_write(path, lambda fp: _encode(image, fmt, fp, int(quality), lossless), renumber)


def stored_depth(image: Image, fmt: str) -> int:
    """The bit depth ``image`` is written with in ``fmt`` (PNG, JPEG, WebP, TIFF): its own in PNG and TIFF, else 8."""
    return image.bit_depth if fmt in ("PNG", "TIFF") else 8


def _encode(image: Image, fmt: str, fp: IO[bytes], quality: int, lossless: bool) -> None:
    """Encode ``image`` as ``fmt`` into the open file ``fp`` (the temporary file during a save)."""
    pixels = image.pixels  # NaN / inf are mapped in quantize, band by band (a full-size copy per step was 2 GB)
    if fmt == "JPEG" and image.has_alpha:
        pixels = finite(as_float(pixels))
        colour, alpha = pixels[..., :-1], pixels[..., -1:]
        pixels = colour * alpha + (1.0 - alpha)  # unpremultiplied colour over white
    if fmt == "WEBP" and image.is_grey:
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=2), pixels[..., 1:]], axis=2)
    array = quantize(pixels, stored_depth(image, fmt))
    depth = array.dtype.itemsize * 8
    height, width = array.shape[:2]
    exif = exif_for_output(image.exif, width, height)
    icc = image.icc_profile

    if fmt == "TIFF":
        fp.write(tiff_bytes(array, exif, icc))
        return
    if fmt == "PNG" and depth == 16:
        write_png16(fp, array, exif, icc)
        return

    pil = PILImage.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    options: dict[str, Any] = {}
    if icc:
        options["icc_profile"] = icc
    if exif is not None:
        options["exif"] = exif_for_jpeg(exif) if fmt == "JPEG" else exif.tobytes()
        if options["exif"] is None:
            del options["exif"]
    if fmt == "JPEG":
        # 4:4:4 chroma at high quality: an upscaler's output should not lose colour resolution at the last step.
        options.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "PNG":
        options["compress_level"] = PNG_COMPRESS_LEVEL
    elif fmt == "WEBP":
        # Lossless WebP reads "quality" as compression effort: 80 is near the smallest file, far faster than 100.
        options.update(quality=80 if lossless else quality, lossless=lossless, method=4)
        if lossless:
            options["exact"] = True  # keep the colour under fully transparent pixels
    pil.save(fp, format=fmt, **options)
