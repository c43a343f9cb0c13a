"""The image file types the app reads and writes, in one place (the loader, the queue, the CLI's folder scan and
the output namer all read these, so a type is either supported everywhere or nowhere)."""

from __future__ import annotations

#: Suffixes of the files the loader reads (Pillow's PNG, JPEG, WebP, TIFF, BMP and GIF decoders). A GIF is read as
#: its first frame: animation is not kept, and the image's notes say so.
READ_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
)
#: Suffixes of JPEG files (what a "same format" output and a JPEG-robust shrink key on).
JPEG_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
#: Output format names (as the CLI's ``--format`` and the app take them) and the suffix each writes.
WRITE_EXTENSIONS: dict[str, str] = {
    "png": ".png", "jpeg": ".jpg", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif", "tif": ".tif",
}  # fmt: skip


def readable(suffix: str) -> bool:
    """Whether a file with this suffix is one the loader reads (case-insensitive)."""
    return suffix.lower() in READ_SUFFIXES


def canonical_format(name: str) -> str:
    """The one name of an output format (``jpg`` -> ``jpeg``, ``tif`` -> ``tiff``), as the job queue takes it."""
    extension = WRITE_EXTENSIONS[name.lower()]
    return next(key for key, ext in WRITE_EXTENSIONS.items() if ext == extension)
