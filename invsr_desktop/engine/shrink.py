"""Shrink and restore: an invertible network's forward pass makes a small image to store or send; its inverse
later restores the full-size image.

The small image is an ordinary PNG or JPEG (any viewer shows it: it looks like a downscaled photo) carrying a
marker in its EXIF UserComment, e.g.::

    invsr-shrink: v=1; backend=inn; model=irn_x4; scale=4; size=1023x767

``backend`` is the backend that restores it, ``model`` its ``model`` parameter (the exact network that shrank
it: another one would not invert it), ``size`` the original width x height (the image is padded by reflection to
a multiple of the scale before shrinking; restoring crops back). The marker survives PNG and JPEG; the rest of the
original's EXIF and its ICC profile travel with it.

Both directions run through the engine's one pipeline (:meth:`Engine.run_array`: tiles, blend, grey, alpha); the
shrinking runner has scale 1/f (see :class:`~invsr_desktop.engine.backend.BackendSpec` ``direction``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from invsr_desktop.engine.formats import JPEG_SUFFIXES
from invsr_desktop.engine.imageio import Image
from invsr_desktop.engine.pipeline import Engine, transform_file
from invsr_desktop.engine.provenance import load_exif
from invsr_desktop.engine.tiling import Cancel, Progress, reflect_pad

__all__ = ["MARKER", "ShrinkMarker", "read_marker", "read_file_marker", "with_marker", "shrink_image", "restore_image", "shrink_file",
           "restore_file", "shrink_backends"]  # fmt: skip

MARKER = "invsr-shrink:"
EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
_ASCII = b"ASCII\0\0\0"
_FIELD = re.compile(r"\s*([a-z_]+)\s*=\s*([^;]*?)\s*(?:;|$)")


@dataclass(frozen=True)
class ShrinkMarker:
    """What restoring a shrunk image needs: the backend and model that invert it, the scale, the original size."""

    backend: str
    model: str
    scale: int
    width: int
    height: int
    version: int = 1

    def text(self) -> str:
        return (f"{MARKER} v={self.version}; backend={self.backend}; model={self.model}; scale={self.scale}; "
                f"size={self.width}x{self.height}")  # fmt: skip

    @classmethod
    def parse(cls, text: str) -> ShrinkMarker | None:
        """The marker in ``text`` (None if there is none); a damaged marker is a ValueError saying what is wrong."""
        start = text.find(MARKER)
        if start < 0:
            return None
        fields = dict(_FIELD.findall(text[start + len(MARKER) :]))
        try:
            width, height = (int(v) for v in fields["size"].lower().split("x"))
            marker = cls(fields["backend"], fields["model"], int(fields["scale"]), width, height, int(fields.get("v", 1)))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"damaged invsr-shrink marker {text[start:]!r} ({exc})") from None
        if marker.scale < 1 or width < 1 or height < 1:
            raise ValueError(f"damaged invsr-shrink marker {text[start:]!r}")
        return marker


def read_marker(image: Image) -> ShrinkMarker | None:
    """The shrink marker of a loaded image, or None (no EXIF, no UserComment, or another comment)."""
    if not image.exif:
        return None
    try:
        comment = load_exif(image.exif).get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception:  # noqa: BLE001
        return None
    if isinstance(comment, bytes):
        comment = comment[8:] if comment[:8] in (_ASCII, b"UNICODE\0", b"\0" * 8) else comment
        comment = comment.decode("utf-8", errors="replace")
    return ShrinkMarker.parse(comment) if isinstance(comment, str) else None


def read_file_marker(path: str | Path) -> ShrinkMarker | None:
    """The shrink marker of an image file, reading only its header and EXIF (None if absent or unreadable)."""
    try:
        with PILImage.open(path) as pil:
            raw = pil.info.get("exif")
            if not raw:
                exif = pil.getexif()
                raw = exif.tobytes() if len(exif) else None
    except Exception:  # noqa: BLE001 - not an image Pillow reads: no marker (loading it will say what is wrong)
        return None
    if isinstance(raw, str):  # pragma: no cover - very old Pillow
        raw = raw.encode("latin-1")
    if raw and not raw.startswith(b"Exif"):
        raw = b"Exif\0\0" + raw
    return read_marker(Image(np.zeros((1, 1, 3), np.float32), exif=raw)) if raw else None


def with_marker(image: Image, marker: ShrinkMarker) -> Image:
    """A copy of ``image`` whose EXIF (the original's, if any) carries ``marker`` in its UserComment."""
    exif = load_exif(image.exif)
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = _ASCII + marker.text().encode("ascii")
    out = image.with_pixels(image.pixels)
    out.exif = exif.tobytes()
    return out


def shrink_backends(engine: Engine) -> list:
    """The specs of the registered shrinking backends (``direction == "down"``)."""
    return [spec for spec in engine.registry.backends() if spec.direction == "down"]


def _model_param(spec: Any, params: dict[str, Any]) -> str:
    return str(params.get("model", "")) if any(p.name == "model" for p in spec.params) else ""


def shrink_image(
    engine: Engine,
    image: Image,
    backend_id: str,
    factor: int,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    stored_as: str = "png",
) -> Image:
    """The small image (ceil(H / factor) x ceil(W / factor)) with the marker, metadata kept.

    ``backend_id`` is a shrinking backend; ``factor`` one of its scales. Its runner may resolve ``model`` = auto to
    a concrete model (``runner.model_name``: for ``stored_as`` = ``jpeg`` one trained to survive JPEG, where one
    is installed), which is what the marker records.
    """
    spec = engine.registry.get(backend_id)
    if spec.direction != "down":
        raise ValueError(f"backend {backend_id!r} does not shrink images (use one of: "
                         f"{', '.join(s.id for s in shrink_backends(engine)) or 'none installed'})")  # fmt: skip
    if int(factor) not in spec.scales:
        raise ValueError(f"backend {backend_id!r} shrinks by {', '.join(map(str, spec.scales))}, not {factor}")
    factor = int(factor)
    resolved = spec.resolve_params(params)
    spec, runner = engine.runner(backend_id, factor, resolved, stored_as=stored_as)
    height, width = image.pixels.shape[:2]
    ph, pw = -(-height // factor) * factor, -(-width // factor) * factor
    pixels = reflect_pad(image.pixels, ph, pw)
    small = engine.run_array(pixels, spec, runner, (ph // factor, pw // factor), progress, cancel)
    restore = spec.info.get("restore_backend", "")
    if not restore:
        raise ValueError(f"backend {backend_id!r} does not say which backend restores its images")
    model = str(getattr(runner, "model_name", "") or _model_param(spec, resolved))
    marker = ShrinkMarker(restore, model, factor, width, height)
    return with_marker(image.with_pixels(small), marker)


def restore_image(
    engine: Engine,
    image: Image,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    marker: ShrinkMarker | None = None,
) -> Image:
    """The full-size image restored from a shrunk one (its marker says how); the marker is removed from the EXIF.

    ``params`` are extra parameters of the restoring backend (e.g. ``temperature``); ``model`` comes from the
    marker. Raises ValueError when the image has no marker or its model is not installed.
    """
    marker = marker or read_marker(image)
    if marker is None:
        raise ValueError("not a shrunk image: it has no invsr-shrink marker "
                         "(only images made by Shrink can be restored)")
    try:
        spec = engine.registry.get(marker.backend)
    except KeyError:
        raise ValueError(f"this image was shrunk with backend {marker.backend!r}, which is not installed") from None
    given = dict(params or {})
    if marker.model and any(p.name == "model" for p in spec.params):
        given["model"] = marker.model
    try:
        resolved = spec.resolve_params(given)
    except ValueError as exc:
        raise ValueError(f"cannot restore: the image was shrunk with model {marker.model!r} ({exc})") from None
    spec, runner = engine.runner(marker.backend, marker.scale, resolved)
    h, w = image.pixels.shape[:2]
    full = engine.run_array(image.pixels, spec, runner, (h * marker.scale, w * marker.scale), progress, cancel)
    full = np.ascontiguousarray(full[: marker.height, : marker.width])
    out = image.with_pixels(full)
    exif = load_exif(image.exif)
    sub = exif.get_ifd(EXIF_IFD)
    sub.pop(USER_COMMENT, None)
    out.exif = exif.tobytes() if len(exif) or sub else None
    return out


def shrink_file(
    engine: Engine,
    source: str | Path,
    destination: str | Path,
    backend_id: str,
    factor: int,
    params: dict[str, Any] | None = None,
    quality: int = 95,
    max_pixels: int | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> Path:
    """Load, shrink and write ``destination`` (PNG, or JPEG at ``quality``: then with a JPEG-robust model where
    one is installed and ``model`` is auto) atomically, never over a file."""
    stored_as = "jpeg" if Path(destination).suffix.lower() in JPEG_SUFFIXES else "png"
    return transform_file(
        source, destination, lambda image: shrink_image(engine, image, backend_id, factor, params, progress, cancel,
                                                        stored_as),
        quality=quality, max_pixels=max_pixels, cancel=cancel,
    )  # fmt: skip


def restore_file(
    engine: Engine,
    source: str | Path,
    destination: str | Path,
    params: dict[str, Any] | None = None,
    quality: int = 95,
    lossless: bool = False,
    max_pixels: int | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> Path:
    """Load a shrunk image, restore it and write ``destination`` atomically, never over a file."""
    marker = read_file_marker(source)
    return transform_file(
        source, destination, lambda image: restore_image(engine, image, params, progress, cancel),
        scale=marker.scale if marker is not None else None, quality=quality, lossless=lossless,
        max_pixels=max_pixels, cancel=cancel,
    )  # fmt: skip
