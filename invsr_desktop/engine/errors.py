"""The engine's error types.

Everything the engine raises on purpose derives from :class:`InvsrError`, so the GUI and the CLI can catch one type
and show ``str(error)`` to the user as is: every message names the file or the part at fault and says what to do.
Anything else that escapes the engine is a bug and deserves its traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

# The default limit on the pixels of an input image, and where a user raises it. Kept here because the message
# of ImageTooLargeError names both, and imageio reads them.
DEFAULT_MAX_PIXELS = 200_000_000
MAX_PIXELS_ENV = "INVSR_MAX_PIXELS"
MAX_PIXELS_OPTION = "--max-pixels"


class InvsrError(Exception):
    """Base of the engine's expected failures: the message is written for the user."""


class ImageReadError(InvsrError):
    """An input file could not be read as an image (missing, empty, truncated, corrupt, not an image).

    Pillow and OpenCV fail with a zoo of exception types (OSError, SyntaxError, ValueError, struct.error, a None
    return); the loader turns all of them into this one, carrying ``path`` and a human ``reason``.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"Cannot read {str(path)!r}: {reason}")


class ImageTooLargeError(ImageReadError):
    """The image has more pixels than the limit, found from its header before anything is decoded.

    The limit exists so that a decompression bomb (or an honest 1-gigapixel scan) cannot exhaust memory: the
    float32 working copy alone costs 12 bytes a pixel. ``size`` is (width, height) when the header gave it.
    """

    def __init__(self, path: str | os.PathLike[str], size: tuple[int, int] | None, limit: int) -> None:
        self.size = size
        self.limit = limit
        limit_mp = _megapixels(limit)
        if size is not None:
            w, h = size
            what = f"{w} x {h} pixels ({_megapixels(w * h)} megapixels) is over the limit of {limit_mp} megapixels"
            example = w * h
        else:
            what = f"the image is far over the limit of {limit_mp} megapixels"
            example = limit * 4
        reason = (
            f"{what}; to allow it, raise the limit with the environment variable {MAX_PIXELS_ENV} "
            f"(e.g. {MAX_PIXELS_ENV}={example}) or the CLI option {MAX_PIXELS_OPTION}"
        )
        super().__init__(path, reason)


class ImageWriteError(InvsrError):
    """An output file could not be written (folder missing or read-only, disk full, bad format).

    The writer guarantees that the final path never holds a partial file when this is raised.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"Cannot write {str(path)!r}: {reason}")


class OutputExistsError(ImageWriteError):
    """The output name was taken (by a file that appeared after the name was chosen): nothing is overwritten.

    Callers that pick names with :func:`invsr_desktop.engine.output.output_path` may pick again and retry.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, "a file with that name already exists (files are never overwritten)")


class CancelledError(InvsrError):
    """The user cancelled a job: not a failure, the caller stops quietly and writes nothing."""


class BackendError(InvsrError):
    """A backend's runner failed or broke the contract (wrong output shape, dtype, or NaNs).

    Raised by the engine around runner calls, so a faulty plugin is reported by name instead of crashing the job
    queue with an arbitrary exception from inside ONNX Runtime.
    """


class ModelFileError(InvsrError):
    """A model file is missing, unreadable or corrupt (not ONNX, or lacking the ``invsr.*`` metadata).

    Raised when a backend is built, so the user learns which file to download or re-export.
    """


class ModelFileWarning(UserWarning):
    """A model file was skipped (unreadable, or metadata that cannot be used). Whichever plugin looked at the file
    first raises it, so the registry reports it as the model folder's, not as that plugin's fault."""


class ModelReplacedWarning(ModelFileWarning):
    """A user's model file has a bundled model's name and is used instead of it: not an error, but the user should
    know which of the two runs."""


def _megapixels(pixels: int) -> str:
    """``200000000`` -> ``'200'``, ``1500000`` -> ``'1.5'``: megapixels without a trailing ``.0``."""
    value = pixels / 1e6
    text = f"{value:.1f}" if value >= 0.1 else f"{value:.3g}"
    return text[:-2] if text.endswith(".0") else text
