"""Where results go: output file names that never collide with the input or an existing file.

``photo.jpg`` upscaled x4 with bicubic becomes ``photo_x4_bicubic.png`` next to it (or in the chosen output folder),
then ``photo_x4_bicubic (1).png``, ``(2)``... if that name is taken, the way file managers name copies. A batch over
a folder tree can mirror the tree under the output folder. Choosing a name is advisory (another program may take it
a moment later); :func:`~invsr_desktop.engine.imageio.save_image` is what guarantees nothing is overwritten.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Collection

from invsr_desktop.engine.errors import ImageWriteError
from invsr_desktop.engine.formats import WRITE_EXTENSIONS as _EXTENSIONS

__all__ = ["RESTORE_SUFFIX", "check_writable", "default_suffix", "first_name", "next_copy", "output_path", "part_name",
           "remove_stale_parts", "shrink_suffix"]

_MAX_COPIES = 100_000
#: The suffix of an image restored from a shrunk one (``photo_shrunk_x4_restored.png``).
RESTORE_SUFFIX = "_restored"


def default_suffix(scale: float, backend_id: str) -> str:
    """``_x4_bicubic``, ``_x1.5_esrgan``: the suffix that says how a result was made."""
    return f"_x{scale:g}_{backend_id}"


def shrink_suffix(factor: int) -> str:
    """``_shrunk_x4``: the suffix of a shrunk image, the same from the CLI and the app."""
    return f"_shrunk_x{factor}"


def _extension(fmt: str | None, input_path: Path) -> str:
    """``"png"``, ``".PNG"``, ``"jpeg"`` -> ``.png``, ``.png``, ``.jpg``; None keeps the input's suffix."""
    if fmt is None:
        suffix = input_path.suffix
        return suffix if suffix.lower().lstrip(".") in _EXTENSIONS else ".png"
    key = fmt.strip().lstrip(".").lower()
    if key not in _EXTENSIONS:
        raise ValueError(f"unknown output format {fmt!r} (use png, jpeg, webp or tiff)")
    return _EXTENSIONS[key]


def output_path(
    input_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None,
    suffix: str,
    fmt: str | None = "png",
    *,
    input_root: str | os.PathLike[str] | None = None,
    reserved: Collection[str | os.PathLike[str]] = (),
) -> Path:
    """A free output path for ``input_path``: ``<out_dir>/<stem><suffix><ext>``, numbered if taken.

    ``out_dir`` None means next to the input. With ``input_root`` (the folder a recursive batch started from) and
    an ``out_dir``, the input's folder relative to the root is mirrored under ``out_dir``; that folder may not exist
    yet (create it with :func:`check_writable`). ``fmt`` is ``png``, ``jpeg``, ``webp``, ``tiff`` (with or without
    a dot) or None for the input's own suffix. ``reserved`` are names already promised to other jobs of the batch.
    The result is never the input itself, nor an existing file, nor a reserved name.
    """
    source = Path(input_path)
    folder = source.parent if out_dir is None else Path(out_dir)
    if out_dir is not None and input_root is not None:
        root = Path(input_root)
        try:
            relative = source.parent.resolve().relative_to(root.resolve())
        except ValueError:
            raise ValueError(f"{str(source)!r} is not inside the input folder {str(root)!r}") from None
        folder = folder / relative
    extension = _extension(fmt, source)
    taken = {_key(Path(p)) for p in reserved}
    source_key = _key(source)
    base = f"{source.stem}{suffix}"
    for number in range(_MAX_COPIES):
        name = f"{base}{extension}" if number == 0 else f"{base} ({number}){extension}"
        candidate = folder / name
        key = _key(candidate)
        if key == source_key or key in taken or os.path.lexists(candidate):
            continue
        return candidate
    raise ImageWriteError(folder / f"{base}{extension}", f"more than {_MAX_COPIES} files with this name exist")


_COPY = re.compile(r"^(?P<base>.*) \((?P<n>\d+)\)$")
#: Temporary files of :func:`~invsr_desktop.engine.imageio.save_image`: ``.<name>.<pid>-<hex>.part``.
PART_FILE = re.compile(r"^\..+\.(?P<pid>\d+)-[0-9a-f]{8}\.part$")


def next_copy(path: Path) -> Path:
    """``photo_x4.png`` -> ``photo_x4 (1).png``, ``photo_x4 (1).png`` -> ``photo_x4 (2).png``: the name a
    result takes when another program took the one it was given while it was computed."""
    match = _COPY.match(path.stem)
    base, n = (match["base"], int(match["n"])) if match else (path.stem, 0)
    return path.with_name(f"{base} ({n + 1}){path.suffix}")


def part_name(path: Path) -> Path:
    """The temporary file a result is written to before it gets its name; it names the writing process, so a
    later run can tell a crashed run's leftovers from another live process's file (:func:`remove_stale_parts`)."""
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part"


def remove_stale_parts(folder: str | os.PathLike[str]) -> int:
    """Remove the temporary files that a killed run of this program left in ``folder`` (their process is gone);
    returns how many. Another running process's files are left alone."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = PART_FILE.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False) or _alive(int(match["pid"])):
            continue
        try:
            os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: not ours to judge
    return True


def first_name(input_path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None, suffix: str,
               fmt: str | None = "png") -> Path:
    """The name :func:`output_path` gives when nothing is taken (``<out_dir>/<stem><suffix><ext>``): where an
    earlier run's result, or its numbered copies, would be."""
    source = Path(input_path)
    folder = source.parent if out_dir is None else Path(out_dir)
    return folder / f"{source.stem}{suffix}{_extension(fmt, source)}"


def _key(path: Path) -> str:
    """A comparable form of a path: absolute, normalised, case-folded where the platform ignores case."""
    return os.path.normcase(os.path.abspath(path))


def check_writable(folder: str | os.PathLike[str], create: bool = False) -> Path:
    """Make sure results can be written to ``folder``; returns it. Raises :class:`ImageWriteError` saying why not.

    With ``create``, a missing folder (and its parents) is created, as a mirrored batch needs. The test is a real
    one (a temporary file is created), because permission bits do not tell about read-only mounts, ACLs or full
    disks. The file is nameless where the system allows (Linux's ``O_TMPFILE``, which ``tempfile.TemporaryFile``
    uses) and unlinked at once elsewhere, so a process killed mid-probe leaves nothing in the user's folder.
    """
    path = Path(folder)
    if not path.exists():
        if not create:
            raise ImageWriteError(path, "the output folder does not exist")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ImageWriteError(path, f"the output folder cannot be created ({_reason(exc)})") from exc
    if not path.is_dir():
        raise ImageWriteError(path, "the output location is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".invsr-write-test-"):
            pass
    except OSError as exc:
        raise ImageWriteError(path, f"the output folder is not writable ({_reason(exc)})") from exc
    return path


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    return exc.strerror.lower() if exc.strerror else str(exc)
