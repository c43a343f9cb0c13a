"""Reading: any supported file into an upright :class:`~invsr_desktop.engine.imageio.image.Image`, the pixel
limit checked from the header before any pixel is decoded, every failure an :class:`ImageReadError` in words."""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image as PILImage

from invsr_desktop.engine.errors import (
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    ImageReadError,
    ImageTooLargeError,
    InvsrError,
)
from invsr_desktop.engine.imageio.atomic import describe
from invsr_desktop.engine.imageio.exif import (
    IMAGE_LENGTH,
    IMAGE_WIDTH,
    ORIENTATION,
    ORIENTATION_TEXT,
    exif_to_keep,
    read_exif,
)
from invsr_desktop.engine.imageio.image import Image
from invsr_desktop.engine.native_stderr import native_stderr

try:  # ImageCms needs Pillow built with LittleCMS; without it CMYK is converted without the profile.
    from PIL import ImageCms
except ImportError:  # pragma: no cover - depends on the Pillow build
    ImageCms = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

READ_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
SUPPORTED_READ_TEXT = "PNG, JPEG, WebP, TIFF, BMP, GIF"





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
        raise ImageReadError(path, f"corrupt or truncated image data ({describe(exc)})") from exc


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
        raise ImageReadError(path, describe(exc)) from exc
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
    exif_obj, orientation = read_exif(pil)

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
    exif = exif_to_keep(pil.format == "TIFF", raw_exif, exif_obj)
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
    return _finish(array, 16, orientation if orientation in range(1, 9) else 1, exif_to_keep(True, None, tags),
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
        notes.append(f"EXIF orientation {orientation} applied ({ORIENTATION_TEXT[orientation]})")
    scale = 255.0 if bit_depth == 8 else 65535.0
    pixels = np.divide(array, scale, dtype=np.float32)
    return Image(pixels, bit_depth, exif, icc, source_format, notes)


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
