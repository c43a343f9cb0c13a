"""What a C library writes to the process's stderr during one call, caught and handed back as text.

libpng (inside OpenCV, which decodes the app's 16-bit PNGs) prints its warnings ("libpng warning: iCCP: too short")
straight to file descriptor 2, past Python's ``sys.stderr`` and ``warnings``, so they landed between the progress
bar's lines on the user's terminal. :func:`native_stderr` points descriptor 2 at a temporary file for the call and
returns the lines, which the loader turns into the file's notes and the log like any other decoder warning.

Written by hand because nothing else does it: ``contextlib.redirect_stderr`` swaps only Python's ``sys.stderr``.
Descriptor 2 is the process's, so while it is redirected another thread's writes to it land there too; the calls
wrapped are short (one image's decode) and a lock keeps two redirections from nesting.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["native_stderr"]

_LOCK = threading.Lock()


@contextmanager
def native_stderr(lines: list[str]) -> Iterator[None]:
    """Run the block with descriptor 2 sent to a temporary file; append what was written to ``lines``."""
    with _LOCK, tempfile.TemporaryFile() as sink:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError):  # no stderr (a GUI started without one), or it is closed
            pass
        try:
            saved = os.dup(2)
        except OSError:  # no descriptor 2 at all: nothing can be written there either
            yield
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())
