"""Reading and writing image files: every pixel format a photo comes in, metadata kept, files written atomically.

The engine works on :class:`Image`: float32 (H, W, C) pixels in [0, 1] plus what a good upscaler keeps from the
original (bit depth, EXIF, ICC profile). :func:`load_image` turns any supported file into one, with the EXIF
orientation applied, and :func:`save_image` writes one back without ever overwriting a file or leaving a partial one.

Who decodes what:

* Pillow reads every format and all the metadata. Pillow cannot hold 16-bit colour (only 16-bit grey), so the
  pixels of 16-bit PNG and TIFF files come from OpenCV (``cv2.imdecode``, BGR order turned into RGB).
* 8-bit PNG, JPEG and WebP are written by Pillow. 16-bit PNG is written here (IHDR, iCCP, eXIf, IDAT, IEND with
  zlib: a few dozen lines) because neither Pillow (no 16-bit colour) nor OpenCV (no grey + alpha, and metadata
  only in recent versions) covers every case. TIFF is written here too, with Pillow's own IFD serializer, so that
  every channel layout and depth gets deflate compression, the ICC profile and the EXIF tags.

What is lost on purpose, and said so (:func:`save_notes`, and a log warning when saving): JPEG has no alpha, so
transparency is flattened onto white; JPEG and WebP hold 8 bits a channel; WebP has no grey mode.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import logging
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import cv2
import numpy as np
from PIL import ExifTags, TiffImagePlugin, TiffTags
from PIL import Image as PILImage

from invsr_desktop.engine.errors import (
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    ImageReadError,
    ImageTooLargeError,
    ImageWriteError,
    InvsrError,
    OutputExistsError,
)
from invsr_desktop.engine.native_stderr import native_stderr
from invsr_desktop.engine.output import next_copy, part_name
from invsr_desktop.engine.pixels import as_float, finite, is_stored, quantize

try:  # ImageCms needs Pillow built with LittleCMS; without it CMYK is converted without the profile.
    from PIL import ImageCms
except ImportError:  # pragma: no cover - depends on the Pillow build
    ImageCms = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

__all__ = [
    "Image",
    "READ_FORMATS",
    "WRITE_FORMATS",
    "format_for_suffix",
    "load_image",
    "max_pixels_limit",
    "save_image",
    "save_notes",
]

# Formats Pillow may identify a file as. Restricting Image.open to these keeps it from handing a file to a plug-in
# such as EPS (Ghostscript). The JPEG opener also returns the multi-picture JPEGs (format "MPO") of many phones.
READ_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
SUPPORTED_READ_TEXT = "PNG, JPEG, WebP, TIFF, BMP, GIF"
# Output formats and their preferred suffix.
# zlib level of written PNGs. Pillow's default (6) spent 21.5 of a 35 s x2 upscale of a 12 MP photo encoding the
# 48 MP result; level 3 took 8.4 s for a file 10 % larger (level 1: 5.4 s, 19 % larger). Lossless either way.
PNG_COMPRESS_LEVEL = 3
WRITE_FORMATS: dict[str, str] = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif"}
_SUFFIX_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}

ORIENTATION = 0x0112
EXIF_IFD = 0x8769
GPS_IFD = 0x8825
PIXEL_X_DIMENSION = 0xA002
PIXEL_Y_DIMENSION = 0xA003
IMAGE_WIDTH, IMAGE_LENGTH = 0x0100, 0x0101
# Descriptive IFD0 tags carried over from a TIFF's own directory into the EXIF we keep (its structural tags,
# such as StripOffsets, describe the old file and must not travel).
_TIFF_DESCRIPTIVE_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298)
_ORIENTATION_TEXT = {
    2: "mirrored horizontally",
    3: "rotated 180°",
    4: "mirrored vertically",
    5: "transposed",
    6: "rotated 90° clockwise",
    7: "transversed",
    8: "rotated 90° counter-clockwise",
}


@dataclass
class Image:
    """Pixels and the metadata that travels with them from the input file to the output file.

    ``pixels`` is float32 (H, W, C) in [0, 1]; C is 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA), alpha
    unpremultiplied. A result on its way to a file may instead hold the file's integers (uint8 / uint16, see
    :mod:`~invsr_desktop.engine.pixels`): the engine rounds an upscale's tiles into them as they finish, so a big
    photo never holds its result in float32; :func:`save_image` writes either, and loading always gives floats. ``bit_depth`` (8 or 16) is what the source held and what formats that can will write.
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


# -- limits ----------------------------------------------------------------------------------------------------


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else ``$INVSR_MAX_PIXELS``, else 200 megapixels.

    A malformed environment value is reported in the log and ignored (the default applies), so a typo cannot
    silently remove the guard.
    """
    if max_pixels is not None:
        if max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        return int(max_pixels)
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if text:
        try:
            value = int(float(text.replace("_", "")))
        except ValueError:
            value = 0
        if value > 0:
            return value
        log.warning("ignoring %s=%r: expected a positive number of pixels", MAX_PIXELS_ENV, text)
    return DEFAULT_MAX_PIXELS


def _allow_pillow_up_to(limit: int) -> None:
    """Make sure Pillow's decompression-bomb guard is not stricter than ours.

    Pillow warns above ``MAX_IMAGE_PIXELS`` (89 Mpx by default) and refuses above twice that; our limit (checked
    from the header right after ``open``) is the one users configure, so Pillow's is raised to match. Pillow's
    refusal can then only mean "over twice our limit" and is reported as :class:`ImageTooLargeError`.
    """
    current = PILImage.MAX_IMAGE_PIXELS
    if current is not None and current < limit:
        PILImage.MAX_IMAGE_PIXELS = limit


# -- loading ---------------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> Image:
    """Read a PNG, JPEG, WebP, TIFF or BMP file (8 or 16 bit; grey, grey + alpha, RGB, RGBA, palette, CMYK).

    The EXIF orientation is applied to the pixels. The image size is checked against ``max_pixels`` (default:
    :func:`max_pixels_limit`) from the header, before anything is decoded. Every failure is an
    :class:`ImageReadError` whose message says what is wrong with the file.
    """
    path = Path(path)
    limit = max_pixels_limit(max_pixels)
    data = _read_bytes(path)
    # Pillow warns about damaged metadata ("Tag data larger than file"); those lines belong to this file's notes
    # and the log, not between a progress bar's lines on the user's terminal.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = _decode_or_raise(path, data, limit)
    for message in dict.fromkeys(str(w.message) for w in caught):
        log.info("%s: the decoder warned: %s", path.name, message)
        image.notes.append(f"the decoder warned: {message}")
    return image


def _decode_or_raise(path: Path, data: bytes, limit: int) -> Image:
    try:
        return _decode(path, data, limit)
    except InvsrError:
        raise
    except MemoryError:
        raise ImageReadError(path, "not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, struct.error...
        raise ImageReadError(path, f"corrupt or truncated image data ({_describe(exc)})") from exc


def header_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header, nothing decoded (None if Pillow cannot tell): lets a caller
    refuse work that cannot fit before spending memory on the pixels."""
    try:
        with PILImage.open(path, formats=READ_FORMATS) as pil:
            return int(pil.size[0]), int(pil.size[1])
    except Exception:  # noqa: BLE001 - load_image will say what is wrong with the file
        return None


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "it is a folder, not an image file") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except OSError as exc:
        raise ImageReadError(path, _describe(exc)) from exc
    if not data:
        raise ImageReadError(path, "the file is empty (0 bytes)")
    return data


def _decode(path: Path, data: bytes, limit: int) -> Image:
    PILImage.init()  # register every plug-in, so that open(formats=...) knows WEBP and TIFF
    _allow_pillow_up_to(limit)
    problem = _header_problem(data)
    if problem:
        raise ImageReadError(path, problem)
    with warnings.catch_warnings():
        # Our own limit (just below) replaces Pillow's warning.
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        try:
            pil = PILImage.open(io.BytesIO(data), formats=READ_FORMATS)
        except PILImage.UnidentifiedImageError:
            if data[:4] in _TIFF_MAGIC:
                # A valid TIFF in a layout Pillow has no mode for (16-bit grey + alpha): OpenCV decodes it.
                return _decode_tiff_without_pillow(path, data, limit)
            reason = f"not an image (or a format Pillow cannot decode); supported: {SUPPORTED_READ_TEXT}"
            raise ImageReadError(path, reason) from None
        except PILImage.DecompressionBombError:
            raise ImageTooLargeError(path, None, limit) from None

    _check_size(path, pil.size, limit)
    source_format = "JPEG" if pil.format == "MPO" else str(pil.format)
    notes: list[str] = []
    frames = getattr(pil, "n_frames", 1)
    if frames > 1 and pil.format == "GIF":
        notes.append(f"the GIF is animated ({frames} frames): the first frame was read, animation is not kept")
    elif frames > 1:
        notes.append(f"the file holds {frames} images; the first one was read")
    icc = pil.info.get("icc_profile") or None
    exif_obj, orientation = _read_exif(pil)

    if pil.format == "PNG":
        layout = _png_16bit_layout(data)
    elif pil.format == "TIFF":
        layout = _tiff_16bit_layout(getattr(pil, "tag_v2", {}))
    else:
        layout = None
    if layout is not None:
        array, bit_depth = _decode_16bit_with_opencv(path, data, layout), 16
    else:
        array, bit_depth, icc = _pillow_pixels(pil, icc, notes)

    raw_exif = pil.info.get("exif") if pil.format != "TIFF" else None
    exif = _exif_to_keep(pil.format == "TIFF", raw_exif, exif_obj)
    return _finish(array, bit_depth, orientation, exif, icc, source_format, notes)


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def _decode_tiff_without_pillow(path: Path, data: bytes, limit: int) -> Image:
    """Read a TIFF's first directory with Pillow's IFD parser (no pixel decoding) and its pixels with OpenCV."""
    tags = PILImage.Exif()
    try:
        tags.load(data)  # Exif.load parses a TIFF structure: for a TIFF file, that is its first directory
        size = (int(tags[IMAGE_WIDTH]), int(tags[IMAGE_LENGTH]))
    except Exception:  # noqa: BLE001 - any parse failure means a broken file
        raise ImageReadError(path, "corrupt TIFF file (its directory cannot be read)") from None
    _check_size(path, size, limit)
    layout = _tiff_16bit_layout(tags)
    if layout is None:
        raise ImageReadError(path, "a TIFF layout that neither Pillow nor OpenCV can decode")
    array = _read_tiff_strips(data, tags, size) if layout == "grey+alpha" else None
    if array is None:
        array = _decode_16bit_with_opencv(path, data, layout)
    orientation = int(tags.get(ORIENTATION, 1))
    icc = tags.get(34675) or None
    return _finish(array, 16, orientation if orientation in range(1, 9) else 1, _exif_to_keep(True, None, tags),
                   bytes(icc) if icc else None, "TIFF", [])  # fmt: skip


def _read_tiff_strips(data: bytes, tags: PILImage.Exif, size: tuple[int, int]) -> np.ndarray | None:
    """Decode a 16-bit chunky, stripped TIFF (no compression or deflate, any predictor) with numpy and zlib.

    Only used for 16-bit grey + alpha, which Pillow has no mode for and OpenCV reduces to 8 bits; covers what
    :func:`save_image` writes and what common editors write. Returns None for other layouts (tiles, LZW...).
    """

    def values(tag: int) -> tuple[int, ...]:
        value = tags.get(tag, ())
        return tuple(value) if isinstance(value, tuple) else (value,)

    width, height = size
    channels = int(tags.get(277, 1))
    compression, predictor = int(tags.get(259, 1)), int(tags.get(317, 1))
    if compression not in (1, 8, 32946) or predictor not in (1, 2) or int(tags.get(284, 1)) != 1:
        return None
    offsets, counts = values(273), values(279)
    if not offsets or len(offsets) != len(counts):
        return None
    parts = [data[o : o + n] for o, n in zip(offsets, counts)]
    raw = b"".join(zlib.decompress(p) for p in parts) if compression != 1 else b"".join(parts)
    expected = width * height * channels * 2
    if len(raw) < expected:
        raise ValueError(f"TIFF strips hold {len(raw)} bytes, {expected} expected")
    dtype = "<u2" if data[:2] == b"II" else ">u2"
    array = np.frombuffer(raw[:expected], dtype=dtype).reshape(height, width, channels).astype(np.uint16)
    if predictor == 2:
        array = np.cumsum(array, axis=1, dtype=np.uint16)  # undo horizontal differencing (wraps mod 2**16)
    return array


def _header_problem(data: bytes) -> str:
    """What is wrong with a PNG or BMP header that Pillow would misreport ("" if nothing): a 0 x 0 PNG is "not an
    image" to Pillow, and a BMP's negative width reads as a 4-billion-pixel bomb."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        if width == 0 or height == 0:
            return f"the PNG header gives an empty size ({width} x {height}): the file is damaged"
    if data[:2] == b"BM" and len(data) >= 26 and struct.unpack("<I", data[14:18])[0] >= 40:
        width, height = struct.unpack("<ii", data[18:26])
        if width <= 0 or height == 0:
            return f"the BMP header gives an impossible size ({width} x {abs(height)}): the file is damaged"
    return ""


def _check_size(path: Path, size: tuple[int, int], limit: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageReadError(path, f"the header gives an empty size ({width} x {height})")
    if width * height > limit:
        raise ImageTooLargeError(path, (width, height), limit)


def _finish(
    array: np.ndarray,
    bit_depth: int,
    orientation: int,
    exif: bytes | None,
    icc: bytes | None,
    source_format: str,
    notes: list[str],
) -> Image:
    """Integer pixels -> upright float32 :class:`Image`."""
    if array.ndim == 2:
        array = array[..., None]
    array = _apply_orientation(array, orientation)
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied ({_ORIENTATION_TEXT[orientation]})")
    scale = 255.0 if bit_depth == 8 else 65535.0
    pixels = np.divide(array, scale, dtype=np.float32)
    return Image(pixels, bit_depth, exif, icc, source_format, notes)


def _read_exif(pil: PILImage.Image) -> tuple[PILImage.Exif | None, int]:
    """The file's EXIF (None when absent or unreadable) and its orientation (1 when absent or invalid)."""
    try:
        exif = pil.getexif()
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block must not make the photo unreadable
        log.info("ignoring unreadable EXIF: %s", _describe(exc))
        return None, 1
    try:
        orientation = int(exif.get(ORIENTATION, 1))
    except (TypeError, ValueError):
        orientation = 1
    return exif, orientation if orientation in range(1, 9) else 1


def _exif_to_keep(is_tiff: bool, raw: bytes | None, exif: PILImage.Exif | None) -> bytes | None:
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
            for tag in _TIFF_DESCRIPTIVE_TAGS:
                if tag in exif:
                    kept[tag] = exif[tag]
            for tag in (EXIF_IFD, GPS_IFD):
                sub = exif.get_ifd(tag) if tag in exif else {}
                if sub:
                    kept[tag] = dict(sub)
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
        log.info("dropping EXIF that cannot be re-encoded: %s", _describe(exc))
        return None


def _png_16bit_layout(data: bytes) -> str | None:
    """``"grey"``, ``"grey+alpha"`` or ``"color"`` for a 16-bit PNG (whose pixels OpenCV decodes), else None."""
    # IHDR is always the first chunk: signature (8), length (4), type (4), width (4), height (4), then bit depth
    # and colour type.
    if len(data) >= 26 and data[12:16] == b"IHDR" and data[24] == 16:
        return {0: "grey", 4: "grey+alpha"}.get(data[25], "color")
    return None


def _tiff_16bit_layout(tags: Any) -> str | None:
    """The same for a TIFF directory (Pillow's ``tag_v2`` or an ``Exif`` over the file): unsigned 16-bit grey
    (BlackIsZero) or RGB, with or without alpha."""
    bits = tags.get(258, (1,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    sample_format = tags.get(339, (1,))
    sample_format = sample_format if isinstance(sample_format, tuple) else (sample_format,)
    photometric = tags.get(262)
    if bits and max(bits) == 16 and set(sample_format) <= {1} and photometric in (1, 2):
        if photometric == 1:
            return "grey" if int(tags.get(277, 1)) == 1 else "grey+alpha"
        return "color"
    return None


def _decode_16bit_with_opencv(path: Path, data: bytes, layout: str) -> np.ndarray:
    printed: list[str] = []
    with native_stderr(printed):  # libpng's warnings: to this file's notes and the log, not the terminal
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    for line in printed:
        warnings.warn(line, UserWarning, stacklevel=2)
    if array is None:
        raise ImageReadError(path, "corrupt or truncated image data (OpenCV could not decode the 16-bit pixels)")
    if array.dtype != np.uint16:
        raise ImageReadError(path, f"unexpected 16-bit decode result ({array.dtype})")
    if array.ndim == 2:
        return array
    channels = array.shape[2]
    if layout == "grey":
        return array[..., 0]
    if layout == "grey+alpha":
        # OpenCV expands grey + alpha to BGRA with the grey value repeated.
        return array[..., [0, channels - 1]] if channels >= 2 else array[..., 0]
    if channels == 3:
        return array[..., ::-1]
    if channels == 4:
        return array[..., [2, 1, 0, 3]]
    return array[..., 0]


def _pillow_pixels(
    pil: PILImage.Image, icc: bytes | None, notes: list[str]
) -> tuple[np.ndarray, int, bytes | None]:
    """Decode with Pillow into uint8/uint16 arrays of 1-4 channels; returns (array, bit depth, ICC to keep)."""
    pil.load()
    mode = pil.mode
    if mode == "1":
        pil = pil.convert("L")
    elif mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in pil.info
        pil = pil.convert("RGBA" if transparent else "RGB")
        notes.append(f"palette expanded to {pil.mode}")
    elif mode in ("L", "RGB") and "transparency" in pil.info:
        pil = pil.convert(mode + "A" if mode == "L" else "RGBA")
        notes.append("transparent colour converted to an alpha channel")
    elif mode == "CMYK":
        pil, icc = _cmyk_to_rgb(pil, icc, notes)
    elif mode in ("La", "RGBa"):
        pil = pil.convert(mode.upper())
    elif mode in ("RGBX", "YCbCr", "HSV"):
        pil = pil.convert("RGB")
    elif mode == "LAB":
        pil, icc = _lab_to_rgb(pil), None
        notes.append("CIELAB converted to sRGB")

    mode = pil.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(pil), 8, icc
    if mode.startswith("I;16"):
        return np.asarray(pil).astype(np.uint16), 16, icc
    if mode == "I":
        values = np.asarray(pil)
        if values.min() < 0 or values.max() > 65535:
            notes.append("32-bit integer values clipped to the 16-bit range")
        return np.clip(values, 0, 65535).astype(np.uint16), 16, icc
    if mode == "F":
        values = np.nan_to_num(np.asarray(pil, dtype=np.float32))
        if values.min() < 0 or values.max() > 1:
            notes.append("floating-point values outside [0, 1] clipped")
        return np.rint(np.clip(values, 0, 1) * 65535).astype(np.uint16), 16, icc
    converted = pil.convert("RGBA" if "A" in pil.getbands() else "RGB")
    notes.append(f"{mode} converted to {converted.mode}")
    return np.asarray(converted), 8, icc


def _cmyk_to_rgb(pil: PILImage.Image, icc: bytes | None, notes: list[str]) -> tuple[PILImage.Image, bytes | None]:
    """CMYK to RGB: through the embedded ICC profile to sRGB when possible, else Pillow's plain formula.

    The CMYK profile never travels with the RGB pixels: after a managed conversion the result carries an sRGB
    profile, after a plain one none (the numbers are uncalibrated RGB).
    """
    if icc and ImageCms is not None:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            converted = ImageCms.profileToProfile(pil, source, srgb, outputMode="RGB")
            if converted is not None:
                notes.append("CMYK converted to sRGB through the embedded ICC profile")
                return converted, srgb.tobytes()
        except Exception as exc:  # noqa: BLE001 - PyCMSError, OSError: fall back to the plain conversion
            notes.append(f"CMYK converted to RGB by plain conversion (the embedded ICC profile is unusable: {exc})")
            return pil.convert("RGB"), None
    why = "no ICC profile in the file" if not icc else "Pillow has no colour management (ImageCms)"
    notes.append(f"CMYK converted to RGB by plain conversion ({why}); colours may differ from print software")
    return pil.convert("RGB"), None


def _lab_to_rgb(pil: PILImage.Image) -> PILImage.Image:
    if ImageCms is None:  # pragma: no cover - depends on the Pillow build
        raise ValueError("CIELAB images need Pillow with ImageCms (LittleCMS)")
    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    return ImageCms.applyTransform(pil, transform)


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, C) array, as Pillow's ``ImageOps.exif_transpose`` does.

    Written on arrays so that 16-bit colour pixels (which Pillow cannot hold) get the same treatment.
    """
    if orientation == 2:
        out = array[:, ::-1]
    elif orientation == 3:
        out = array[::-1, ::-1]
    elif orientation == 4:
        out = array[::-1]
    elif orientation == 5:
        out = array.swapaxes(0, 1)
    elif orientation == 6:
        out = np.rot90(array, k=-1)
    elif orientation == 7:
        out = np.rot90(array, k=2).swapaxes(0, 1)
    elif orientation == 8:
        out = np.rot90(array, k=1)
    else:
        out = array
    return np.ascontiguousarray(out)


# -- saving ----------------------------------------------------------------------------------------------------


def format_for_suffix(path: str | os.PathLike[str]) -> str | None:
    """``"PNG"``, ``"JPEG"``, ``"WEBP"`` or ``"TIFF"`` for a file name's suffix, None if not a writable one."""
    return _SUFFIX_FORMATS.get(Path(path).suffix.lower())


def _resolve_format(path: Path, format: str | None) -> str:
    if format:
        name = format.strip().lstrip(".").upper()
        name = _FORMAT_ALIASES.get(name, name)
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
    fmt = _FORMAT_ALIASES.get(format.strip().lstrip(".").upper(), format.strip().lstrip(".").upper())
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
    return _atomic_write(path, lambda fp: _encode(image, fmt, fp, int(quality), lossless), renumber)


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
    exif = _exif_for_output(image.exif, width, height)
    icc = image.icc_profile

    if fmt == "TIFF":
        fp.write(_tiff_bytes(array, exif, icc))
        return
    if fmt == "PNG" and depth == 16:
        _write_png16(fp, array, exif, icc)
        return

    pil = PILImage.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    options: dict[str, Any] = {}
    if icc:
        options["icc_profile"] = icc
    if exif is not None:
        options["exif"] = _fit_exif_for_jpeg(exif) if fmt == "JPEG" else exif.tobytes()
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


def _exif_for_output(raw: bytes | None, width: int, height: int) -> PILImage.Exif | None:
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
        log.warning("dropping EXIF that cannot be re-encoded: %s", _describe(exc))
        return None
    return exif


def _fit_exif_for_jpeg(exif: PILImage.Exif) -> bytes | None:
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


def _tiff_exif_payload(exif: PILImage.Exif | None) -> bytes | None:
    """EXIF as PNG's eXIf chunk wants it: the TIFF structure without the ``Exif\\0\\0`` APP1 prefix."""
    if exif is None:
        return None
    data = exif.tobytes()
    return data[6:] if data.startswith(b"Exif\x00\x00") else data


# -- 16-bit PNG ------------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> grey, grey+alpha, RGB, RGBA


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _write_png16(fp: IO[bytes], array: np.ndarray, exif: PILImage.Exif | None, icc: bytes | None) -> None:
    """Write a 16-bit PNG: Pillow cannot hold 16-bit colour, OpenCV cannot write grey + alpha (nor metadata in
    older versions), and the format is simple. iCCP and eXIf go before IDAT, as the PNG specification requires.

    Rows are filtered with the per-row filter choice libpng uses (least sum of absolute differences), computed on
    blocks of rows with numpy; the IDAT stream is compressed incrementally so memory stays bounded.
    """
    height, width, channels = array.shape
    fp.write(_PNG_SIGNATURE)
    fp.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOUR_TYPE[channels], 0, 0, 0)))
    if icc:
        fp.write(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    payload = _tiff_exif_payload(exif)
    if payload:
        fp.write(_png_chunk(b"eXIf", payload))

    rows = array.astype(">u2", copy=False).reshape(height, width * channels).view(np.uint8)
    bpp = 2 * channels
    compressor = zlib.compressobj(PNG_COMPRESS_LEVEL)
    pending = bytearray()
    previous = np.zeros(rows.shape[1], dtype=np.uint8)
    block = max(1, (4 << 20) // max(1, rows.shape[1]))
    for start in range(0, height, block):
        chunk_rows = rows[start : start + block]
        filtered = _png_filter_rows(chunk_rows, previous, bpp)
        previous = chunk_rows[-1]
        pending += compressor.compress(filtered.tobytes())
        while len(pending) >= 1 << 20:
            fp.write(_png_chunk(b"IDAT", bytes(pending[: 1 << 20])))
            del pending[: 1 << 20]
    pending += compressor.flush()
    fp.write(_png_chunk(b"IDAT", bytes(pending)))
    fp.write(_png_chunk(b"IEND", b""))


def _png_filter_rows(rows: np.ndarray, previous: np.ndarray, bpp: int) -> np.ndarray:
    """Filter a block of PNG scanlines (uint8, one row per line); returns rows prefixed with their filter byte.

    All five filters only read unfiltered bytes, so they are computed for every row at once and the cheapest
    (smallest sum of bytes taken as signed) is picked per row.
    """
    x = rows.astype(np.int16)
    up = np.vstack([previous[None].astype(np.int16), x[:-1]])
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    up_left = np.zeros_like(x)
    up_left[:, bpp:] = up[:, :-bpp]
    p = left + up - up_left
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    candidates = np.stack([x, x - left, x - up, x - ((left + up) >> 1), x - paeth]) & 0xFF
    cost = np.minimum(candidates, 256 - candidates).sum(axis=2)
    choice = cost.argmin(axis=0)
    chosen = candidates[choice, np.arange(rows.shape[0])].astype(np.uint8)
    return np.hstack([choice.astype(np.uint8)[:, None], chosen])


# -- TIFF ------------------------------------------------------------------------------------------------------


def _tiff_bytes(array: np.ndarray, exif: PILImage.Exif | None, icc: bytes | None) -> bytes:
    """A baseline little-endian TIFF: deflate strips with the horizontal predictor, any of 1-4 channels at 8 or
    16 bits, the ICC profile (tag 34675), EXIF descriptive tags and the Exif/GPS sub-directories.

    Pillow's IFD serializer (the one its own TIFF writer uses) writes the directory: it places strip data right
    after the directory and adds that offset to StripOffsets, which are therefore given relative here.
    """
    height, width, channels = array.shape
    bits = array.dtype.itemsize * 8
    row_bytes = width * channels * array.dtype.itemsize
    rows_per_strip = max(1, min(height, (256 << 10) // max(1, row_bytes)))

    predicted = array.astype(array.dtype.newbyteorder("<"), copy=True)
    predicted[:, 1:] -= array[:, :-1]  # horizontal differencing (predictor 2), wrapping like the decoder expects
    strips = [zlib.compress(predicted[y : y + rows_per_strip].tobytes(), 6) for y in range(0, height, rows_per_strip)]
    offsets, position = [], 0
    for strip in strips:
        offsets.append(position)
        position += len(strip)
    if position > 0xFFFF0000:
        raise ValueError("the image is too large for a TIFF file (over 4 GiB compressed); use PNG")

    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    tags: list[tuple[int, int, Any]] = [
        (256, TiffTags.LONG, width),
        (257, TiffTags.LONG, height),
        (258, TiffTags.SHORT, (bits,) * channels),
        (259, TiffTags.SHORT, 8),  # Adobe deflate
        (262, TiffTags.SHORT, 1 if channels <= 2 else 2),  # BlackIsZero / RGB
        (273, TiffTags.LONG, tuple(offsets)),
        (277, TiffTags.SHORT, channels),
        (278, TiffTags.LONG, rows_per_strip),
        (279, TiffTags.LONG, tuple(len(s) for s in strips)),
        (284, TiffTags.SHORT, 1),  # chunky
        (317, TiffTags.SHORT, 2),  # horizontal predictor
        (339, TiffTags.SHORT, (1,) * channels),  # unsigned integers
    ]
    if channels in (2, 4):
        tags.append((338, TiffTags.SHORT, 2))  # ExtraSamples: unassociated alpha
    if icc:
        tags.append((34675, TiffTags.UNDEFINED, icc))
    for tag, kind, value in tags:
        ifd[tag] = value
        ifd.tagtype[tag] = kind
    if exif is not None:
        for tag in _TIFF_DESCRIPTIVE_TAGS:
            if tag in exif:
                ifd[tag] = exif[tag]
        for tag in (EXIF_IFD, GPS_IFD):
            sub = exif.get_ifd(tag) if tag in exif else {}
            if sub:
                ifd[tag] = dict(sub)
                ifd.tagtype[tag] = TiffTags.LONG
    header = b"II*\x00" + struct.pack("<I", 8)
    return header + ifd.tobytes(8) + b"".join(strips)


# -- atomic, no-clobber writing --------------------------------------------------------------------------------

_RENUMBER_ATTEMPTS = 1000
# errno values meaning "this file system cannot make hard links" (FAT/exFAT, some network shares).
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None], renumber: bool = False) -> Path:
    """Run ``write`` on a temporary file next to ``path``, then give it the final name without overwriting;
    returns the final name (with ``renumber``, the next free numbered one when ``path`` was taken).

    ``os.link`` creates the final name only if it does not exist, atomically, and the full file appears at once.
    Where hard links are unsupported, the name is reserved with an exclusive create and the temporary file then
    renamed over that (empty, ours) placeholder.
    """
    if os.path.lexists(path) and not renumber:
        raise OutputExistsError(path)
    folder = path.parent
    temporary = part_name(path)
    try:
        # 0o666 minus the umask: the result gets the same permissions as any file the user creates.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise ImageWriteError(path, _write_reason(exc, folder)) from exc
    try:
        with os.fdopen(descriptor, "wb") as fp:
            write(fp)
            fp.flush()
            try:
                os.fsync(fp.fileno())
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
                    raise
        for _ in range(_RENUMBER_ATTEMPTS):
            try:
                _publish(temporary, path)
                return path
            except OutputExistsError:
                if not renumber:
                    raise
                path = next_copy(path)
        raise OutputExistsError(path)
    except BaseException as exc:
        _remove_quietly(temporary)
        if isinstance(exc, InvsrError):
            raise
        if isinstance(exc, OSError):
            raise ImageWriteError(path, _write_reason(exc, folder)) from exc
        if isinstance(exc, Exception):
            raise ImageWriteError(path, f"the image could not be encoded ({_describe(exc)})") from exc
        raise  # KeyboardInterrupt and friends, after the cleanup


def _publish(temporary: Path, path: Path) -> None:
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise OutputExistsError(path) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise OutputExistsError(path) from None
        try:
            os.replace(temporary, path)
        except BaseException:
            _remove_quietly(path)
            raise
        return
    _remove_quietly(temporary)


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # pragma: no cover - nothing more can be done; say so
        log.warning("could not remove temporary file %s: %s", path, exc)


def _write_reason(exc: OSError, folder: Path) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full" if exc.errno == errno.ENOSPC else "the disk quota is exceeded"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied (the folder {str(folder)!r} is not writable)"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno == errno.ENOENT:
        return f"the folder {str(folder)!r} does not exist"
    if exc.errno == errno.ENAMETOOLONG:
        return "the file name is too long"
    return _describe(exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    text = str(exc).strip()
    if isinstance(exc, OSError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
