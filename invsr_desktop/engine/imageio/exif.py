"""EXIF: what is read from a file, what travels to the result, and how it is fitted to each format (the
orientation applied to the pixels is reset, the pixel dimensions follow the new size, a JPEG's 64 KB limit)."""

from __future__ import annotations

import logging
from typing import Any

from PIL import ExifTags
from PIL import Image as PILImage

from invsr_desktop.engine.imageio.atomic import describe

log = logging.getLogger(__name__)

ORIENTATION = 0x0112
EXIF_IFD = 0x8769
GPS_IFD = 0x8825
PIXEL_X_DIMENSION = 0xA002
PIXEL_Y_DIMENSION = 0xA003
IMAGE_WIDTH, IMAGE_LENGTH = 0x0100, 0x0101
# Descriptive IFD0 tags carried over from a TIFF's own directory into the EXIF we keep (its structural tags,
# such as StripOffsets, describe the old file and must not travel).
TIFF_DESCRIPTIVE_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298)
ORIENTATION_TEXT = {
    2: "mirrored horizontally",
    3: "rotated 180°",
    4: "mirrored vertically",
    5: "transposed",
    6: "rotated 90° clockwise",
    7: "transversed",
    8: "rotated 90° counter-clockwise",
}


def read_exif(pil: PILImage.Image) -> tuple[PILImage.Exif | None, int]:
    """The file's EXIF (None when absent or unreadable) and its orientation (1 when absent or invalid)."""
    try:
        exif = pil.getexif()
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block must not make the photo unreadable
        log.info("ignoring unreadable EXIF: %s", describe(exc))
        return None, 1
    try:
        orientation = int(exif.get(ORIENTATION, 1))
    except (TypeError, ValueError):
        orientation = 1
    return exif, orientation if orientation in range(1, 9) else 1


def descriptive_tags(exif: PILImage.Exif) -> list[tuple[int, Any]]:
    """What travels from a TIFF's own directory: its descriptive tags and its Exif / GPS sub-directories (as dicts)."""
    tags: list[tuple[int, Any]] = [(tag, exif[tag]) for tag in TIFF_DESCRIPTIVE_TAGS if tag in exif]
    for tag in (EXIF_IFD, GPS_IFD):
        sub = exif.get_ifd(tag) if tag in exif else {}
        if sub:
            tags.append((tag, dict(sub)))
    return tags


def exif_to_keep(is_tiff: bool, raw: bytes | None, exif: PILImage.Exif | None) -> bytes | None:
    """The EXIF block to carry, with its orientation set to 1 since the pixels are now upright.

    JPEG, PNG and WebP carry an EXIF block (kept byte for byte unless the orientation needs resetting). A TIFF's
    "EXIF" is its own directory, full of tags about the old file's layout: only descriptive tags, the Exif and
    the GPS sub-directories are taken.
    """
    if exif is None:
        return None
    try:
        if is_tiff:
            kept = PILImage.Exif()
            for tag, value in descriptive_tags(exif):
                kept[tag] = value
            return kept.tobytes() if len(kept) else None
        if not raw:
            return None
        if isinstance(raw, str):  # pragma: no cover - very old Pillow stored it as text
            raw = raw.encode("latin-1")
        raw = bytes(raw) if raw.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + bytes(raw)
        if exif.get(ORIENTATION, 1) == 1:
            return raw
        exif[ORIENTATION] = 1
        return exif.tobytes()
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block is dropped, not fatal
        log.info("dropping EXIF that cannot be re-encoded: %s", describe(exc))
        return None


def exif_for_output(raw: bytes | None, width: int, height: int) -> PILImage.Exif | None:
    """The EXIF to write: orientation 1, PixelXDimension/PixelYDimension (and IFD0 size tags) set to the new size.

    Unparseable EXIF is dropped with a log line rather than failing the save.
    """
    if not raw:
        return None
    exif = PILImage.Exif()
    try:
        exif.load(raw)
        exif[ORIENTATION] = 1
        if EXIF_IFD in exif:
            sub = exif.get_ifd(EXIF_IFD)
            sub[PIXEL_X_DIMENSION] = width
            sub[PIXEL_Y_DIMENSION] = height
        if IMAGE_WIDTH in exif:
            exif[IMAGE_WIDTH] = width
        if IMAGE_LENGTH in exif:
            exif[IMAGE_LENGTH] = height
        exif.tobytes()  # fail here, not inside an encoder, if it cannot be written back
    except Exception as exc:  # noqa: BLE001 - broken EXIF must not cost the user their result
        log.warning("dropping EXIF that cannot be re-encoded: %s", describe(exc))
        return None
    return exif


def exif_for_jpeg(exif: PILImage.Exif) -> bytes | None:
    """JPEG's APP1 segment holds at most 65533 bytes: drop the maker note, then the whole EXIF, if it is larger."""
    data = exif.tobytes()
    if len(data) <= 65533:
        return data
    sub = exif.get_ifd(EXIF_IFD) if EXIF_IFD in exif else {}
    sub.pop(ExifTags.Base.MakerNote, None)
    data = exif.tobytes()
    if len(data) <= 65533:
        log.warning("EXIF too large for JPEG: the maker note was dropped")
        return data
    log.warning("EXIF too large for JPEG (%d bytes): not written", len(data))
    return None


def tiff_exif_payload(exif: PILImage.Exif | None) -> bytes | None:
    """EXIF as PNG's eXIf chunk wants it: the TIFF structure without the ``Exif\\0\\0`` APP1 prefix."""
    if exif is None:
        return None
    data = exif.tobytes()
    return data[6:] if data.startswith(b"Exif\x00\x00") else data
