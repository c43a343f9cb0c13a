"""Shrink and restore: an invertible network's forward pass makes a small image to store or send; its inverse
later restores the full-size image.

The small image is an ordinary PNG or JPEG (any viewer shows it: it looks like a downscaled photo) carrying a
marker in its EXIF UserComment, e.g.::

    invsr-shrink: v=1; backend=inn; model=irn_x4; scale=4; size=1023x767

``backend`` is the backend that restores it, ``model`` its ``model`` parameter (the exact network that shrank
it: another one would not invert it), ``size`` the original width x height (the image is padded by reflection to
a multiple of the scale before shrinking; restoring crops back). A grey original adds ``colour=grey``: its small
image is RGB, because the network hides detail in the colour channels (storing it grey cost the round trip of
Set14's bridge 2.3 dB at x4, 6.2 dB at x2), and restoring makes it grey again. A colour original's marker is as it
always was. The marker survives PNG and JPEG; the rest of the original's EXIF and its ICC profile travel with it
(a grey ICC profile stays off the RGB small image).

This module holds the marker format only. Both directions run as :class:`~invsr_desktop.engine.task.Task` through
the engine's one pipeline (:meth:`Engine.run_file <invsr_desktop.engine.pipeline.Engine.run_file>`); the shrinking
runner has scale 1/f (see :class:`~invsr_desktop.engine.backend.BackendSpec` ``direction``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from invsr_desktop.engine.imageio import Image
from invsr_desktop.engine.provenance import load_exif

__all__ = ["MARKER", "ShrinkMarker", "read_marker", "read_file_marker", "with_marker", "without_marker"]

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
    grey: bool = False

    def text(self) -> str:
        return (f"{MARKER} v={self.version}; backend={self.backend}; model={self.model}; scale={self.scale}; "
                f"size={self.width}x{self.height}" + ("; colour=grey" if self.grey else ""))  # fmt: skip

    @classmethod
    def parse(cls, text: str) -> ShrinkMarker | None:
        """The marker in ``text`` (None if there is none); a damaged marker is a ValueError saying what is wrong."""
        start = text.find(MARKER)
        if start < 0:
            return None
        fields = dict(_FIELD.findall(text[start + len(MARKER) :]))
        try:
            width, height = (int(v) for v in fields["size"].lower().split("x"))
            version, grey = int(fields.get("v", 1)), fields.get("colour", "rgb") == "grey"
            marker = cls(fields["backend"], fields["model"], int(fields["scale"]), width, height, version, grey)
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


def without_marker(image: Image) -> Image:
    """A copy of ``image`` with the marker removed from its EXIF (a restored image is not a shrunk one)."""
    out = image.with_pixels(image.pixels)
    exif = load_exif(image.exif)
    sub = exif.get_ifd(EXIF_IFD)
    sub.pop(USER_COMMENT, None)
    out.exif = exif.tobytes() if len(exif) or sub else None
    return out
