"""Which result a file is: the record every upscaled output carries, so a later run can tell its own results.

The record goes in the EXIF ``Software`` tag (IFD0), where image editors name themselves when they save, e.g.::

    InvSR Desktop 0.1.0 | invsr-made: v=1; task=upscale; backend=esrgan-faithful-x4; scale=4;
    params=colour_fix%3Doff%2Ctta%3Doff; source=IMG_0042.jpg

(one line). It says how the file was made (backend, scale, every parameter as resolved) and from which file name,
which is what resuming a batch needs: ``--skip-existing`` skips an input whose result with the same record exists
and decodes, and a folder scan leaves out files that are results of this program. The rest of the original's EXIF
travels with the output as before; only a camera's or editor's own ``Software`` value is replaced, as any editor
that saves the file does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, unquote

from PIL import Image as PILImage

from invsr_desktop import __version__
from invsr_desktop.engine.backend import flag_value

MARKER = "invsr-made:"
SOFTWARE = 0x0131
_FIELD = re.compile(r"\s*([a-z_]+)\s*=\s*([^;]*?)\s*(?:;|$)")


def params_text(params: Mapping[str, Any]) -> str:
    """Parameters in one canonical form (sorted, booleans as on/off): equal settings give equal text."""
    return ",".join(f"{k}={flag_value(v)}" for k, v in sorted(params.items()))


@dataclass(frozen=True)
class Provenance:
    """How a result was made: the task, the backend, the scale, the resolved parameters, the source's file name."""

    task: str
    backend: str
    scale: float
    params: str  # params_text(...) of the resolved parameters
    source: str
    version: int = 1

    @classmethod
    def of(cls, task: str, backend: str, scale: float, params: Mapping[str, Any], source: str | Path) -> Provenance:
        return cls(task, backend, float(scale), params_text(params), Path(source).name)

    def text(self) -> str:
        fields = {"v": str(self.version), "task": self.task, "backend": self.backend, "scale": f"{self.scale:g}",
                  "params": self.params, "source": self.source}  # fmt: skip
        body = "; ".join(f"{k}={quote(v, safe='')}" for k, v in fields.items())
        return f"InvSR Desktop {__version__} | {MARKER} {body}"

    @classmethod
    def parse(cls, text: str) -> Provenance | None:
        """The record in ``text``, or None (no record, or one this version cannot read)."""
        start = text.find(MARKER)
        if start < 0:
            return None
        fields = {k: unquote(v) for k, v in _FIELD.findall(text[start + len(MARKER) :])}
        try:
            return cls(fields["task"], fields["backend"], float(fields["scale"]), fields["params"], fields["source"],
                       int(fields.get("v", 1)))  # fmt: skip
        except (KeyError, ValueError):
            return None


def load_exif(raw: bytes | None) -> PILImage.Exif:
    """An editable EXIF block: ``raw`` parsed, or a fresh one when it is absent or unreadable (a record written
    into a fresh block beats losing the record)."""
    exif = PILImage.Exif()
    if raw:
        try:
            exif.load(raw)
        except Exception:  # noqa: BLE001 - damaged EXIF
            exif = PILImage.Exif()
    return exif


def stamp(exif_bytes: bytes | None, record: Provenance) -> bytes:
    """EXIF bytes (the original's, or a new block) with ``record`` in its ``Software`` tag."""
    exif = load_exif(exif_bytes)
    exif[SOFTWARE] = record.text()
    return exif.tobytes()


def read_file(path: str | Path) -> Provenance | None:
    """The record of an image file from its header and EXIF only (None if it has none or is not an image)."""
    try:
        with PILImage.open(path) as pil:
            software = pil.getexif().get(SOFTWARE)
    except Exception:  # noqa: BLE001 - not an image Pillow reads: no record
        return None
    return Provenance.parse(software) if isinstance(software, str) else None


def decodes(path: str | Path) -> bool:
    """Whether the file decodes whole (a result cut short by a crash does not count as done)."""
    try:
        with PILImage.open(path) as pil:
            pil.load()
        return True
    except Exception:  # noqa: BLE001
        return False


def find_done(destination: Path, record: Provenance) -> Path | None:
    """An existing result for ``record`` among ``destination`` and its numbered copies (``name (1).png``...): same
    record and decodes whole. ``destination`` is the name a new result would get before any numbering."""
    folder, stem, ext = destination.parent, destination.stem, destination.suffix
    pattern = re.compile(re.escape(stem) + r"( \(\d+\))?" + re.escape(ext) + "$", re.IGNORECASE)
    try:
        candidates = sorted(p for p in folder.iterdir() if pattern.match(p.name))
    except OSError:
        return None
    for path in candidates:
        if path.is_file() and read_file(path) == record and decodes(path):
            return path
    return None
