"""Atomic, no-clobber writing: a temporary file next to the target, then a hard link to the final name (never
over an existing file), so a crash, a full disk or a rival program can never leave a partial or overwritten file."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import IO, Callable

from invsr_desktop.engine.errors import (
    ImageWriteError,
    InvsrError,
    OutputExistsError,
)
from invsr_desktop.engine.output import next_copy, part_name

log = logging.getLogger(__name__)

_RENUMBER_ATTEMPTS = 1000
# errno values meaning "this file system cannot make hard links" (FAT/exFAT, some network shares).
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}





def atomic_write(path: Path, write: Callable[[IO[bytes]], None], renumber: bool = False) -> Path:
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
            raise ImageWriteError(path, f"the image could not be encoded ({describe(exc)})") from exc
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
    return describe(exc)


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    text = str(exc).strip()
    if isinstance(exc, OSError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
