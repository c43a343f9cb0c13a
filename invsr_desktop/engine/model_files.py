"""Model folders shared by the ONNX-model backends (esrgan, and the other families as they come).

Where models are found, in this order (a user file shadows a bundled one with the same file name):

1. the bundled models, ``invsr_desktop.resources`` ``models/`` (the repository's ``resources/models/``);
2. the user model folder: ``$INVSR_MODELS_DIR`` if set, else ``$XDG_DATA_HOME/invsr-desktop/models``, else
   ``~/.local/share/invsr-desktop/models``. ``invsr-export --install`` copies a model there.

A model file is ``<id>.onnx`` with ``invsr.*`` metadata props (``invsr.backend`` says which plugin serves it).
Describing backends must be cheap, so :func:`read_metadata` reads the metadata props by walking the top level of the
protobuf and seeking over the graph (the weights), instead of parsing the whole file as ``onnx.load`` does.

``<id>.int8.onnx`` beside it is not a model of its own but its int8 copy (``invsr-quantize``), which precision
``fast`` may run on a CPU (see :mod:`~invsr_desktop.engine.sessions`): :func:`int8_copy` says whether a copy may
stand in for its model.

A file that cannot be read, or that lacks the ``invsr.*`` metadata, never hides the good ones: it is skipped, recorded
in :func:`problems` (for the GUI's plugins dialog or ``--list-backends``) and reported once with a
:class:`ModelFolderWarning` naming the file and what to do.

This module is part of the runtime: it never imports torch or model_export.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from invsr_desktop.engine import model_metadata as keys
from invsr_desktop.engine.errors import ModelFileError, ModelFileWarning, ModelReplacedWarning

ENV_MODELS_DIR = "INVSR_MODELS_DIR"
MODEL_SUFFIX = ".onnx"
INT8_SUFFIX = ".int8.onnx"
FAST_MIN_PSNR = 45.0  # dB against the fp32 output: what a faster path must keep (the speed issue's floor)

# ModelProto field numbers (onnx.proto3)
_F_IR_VERSION = 1
_F_GRAPH = 7
_F_METADATA_PROPS = 14


#: A file in a model folder was skipped (unreadable, corrupt, or no ``invsr.*`` metadata).
ModelFolderWarning = ModelFileWarning


def user_models_dir() -> Path:
    """The user model folder: ``$INVSR_MODELS_DIR``, else ``$XDG_DATA_HOME/invsr-desktop/models``, else
    ``~/.local/share/invsr-desktop/models``. It may not exist yet."""
    explicit = os.environ.get(ENV_MODELS_DIR, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "invsr-desktop" / "models"


def bundled_models_dir() -> Path:
    """The models shipped with the application."""
    from invsr_desktop.resources import MODELS

    return Path(MODELS)


def model_dirs() -> list[tuple[str, Path]]:
    """``(origin, folder)`` pairs in scan order: ``("bundled", ...)`` then ``("user", ...)``."""
    return [("bundled", bundled_models_dir()), ("user", user_models_dir())]


# ---------------------------------------------------------------------------------------------------------------
# Cheap metadata reading: the protobuf wire format, top level only


def _read_varint(f) -> int | None:
    """A base-128 varint from ``f``; None at a clean end of file."""
    shift = 0
    result = 0
    while True:
        b = f.read(1)
        if not b:
            if shift == 0:
                return None
            raise ValueError("file ends inside a field header")
        byte = b[0]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _varint_from(buf: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    result = 0
    while True:
        if pos >= len(buf):
            raise ValueError("malformed metadata entry")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _parse_entry(buf: bytes) -> tuple[str, str]:
    """A ``StringStringEntryProto`` (1: key, 2: value)."""
    key = value = ""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint_from(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire != 2:
            raise ValueError("malformed metadata entry")
        length, pos = _varint_from(buf, pos)
        if pos + length > len(buf):
            raise ValueError("malformed metadata entry")
        text = buf[pos : pos + length].decode("utf-8")
        pos += length
        if number == 1:
            key = text
        elif number == 2:
            value = text
    return key, value


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata props of an ONNX file, reading only the file's top-level field headers and the props.

    The graph (with the weights) is skipped with a seek, so this costs a few reads whatever the model's size.
    Raises :class:`ModelFileError` naming the file when it is missing, truncated, or not an ONNX model.
    """
    path = Path(path)
    props: dict[str, str] = {}
    seen: set[int] = set()
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            while True:
                tag = _read_varint(f)
                if tag is None:
                    break
                number, wire = tag >> 3, tag & 7
                if number == 0:
                    raise ValueError("invalid field number 0")
                seen.add(number)
                if wire == 0:
                    if _read_varint(f) is None:
                        raise ValueError("file ends inside a field")
                elif wire == 1 or wire == 5:
                    step = 8 if wire == 1 else 4
                    if f.tell() + step > size:
                        raise ValueError("file ends inside a field")
                    f.seek(step, os.SEEK_CUR)
                elif wire == 2:
                    length = _read_varint(f)
                    if length is None or f.tell() + length > size:
                        raise ValueError("a field runs past the end of the file (truncated?)")
                    if number == _F_METADATA_PROPS:
                        key, value = _parse_entry(f.read(length))
                        props[key] = value
                    else:
                        f.seek(length, os.SEEK_CUR)
                else:
                    raise ValueError(f"unexpected wire type {wire}")
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {path}") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} is not a valid ONNX model: {exc}; re-export or re-download it") from None
    if _F_GRAPH not in seen or _F_IR_VERSION not in seen:
        raise ModelFileError(f"{path} is not a valid ONNX model (no graph); re-export or re-download it")
    return props


# ---------------------------------------------------------------------------------------------------------------
# Scanning


@dataclass(frozen=True)
class ModelFile:
    """One usable model file: where it is, where it came from (``bundled`` / ``user``), its metadata."""

    path: Path
    origin: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.path.stem


_problems: dict[Path, str] = {}
_warned: set[tuple[str, int, int]] = set()
_lock = threading.Lock()


def problems() -> list[tuple[Path, str]]:
    """Files skipped by the scans so far, with the reason (newest scan wins), in path order."""
    with _lock:
        return sorted(_problems.items())


def report_problem(path: Path, reason: str) -> None:
    """Record a skipped file and warn once per file version (path, mtime, size)."""
    try:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        key = (str(path), 0, 0)
    with _lock:
        _problems[path] = reason
        fresh = key not in _warned
        _warned.add(key)
    if fresh:
        text = f"skipping model file: {reason}" if str(path) in reason else f"skipping model file {path}: {reason}"
        warnings.warn(text, ModelFolderWarning, stacklevel=2)


def _candidates(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        report_problem(folder, f"cannot list the folder: {exc.strerror or exc}")
        return []
    return [p for p in entries if p.suffix.lower() == MODEL_SUFFIX and not p.name.lower().endswith(INT8_SUFFIX)
            and not p.name.startswith(".") and not p.is_dir()]  # fmt: skip


def int8_copy_path(model: str | os.PathLike) -> Path:
    """Where the int8 copy of ``model`` lives: ``x.onnx`` -> ``x.int8.onnx`` beside it."""
    model = Path(model)
    return model.with_name(model.name.removesuffix(MODEL_SUFFIX) + INT8_SUFFIX)


def int8_copy(model: str | os.PathLike) -> Path | None:
    """The int8 copy of ``model`` if one may stand in for it: it says it is the copy of this very file (the fp32
    file's SHA-256 in ``invsr.int8_of``) and that it agreed with it at :data:`FAST_MIN_PSNR` or better. A copy
    that fails either (left from an older model, hand-made, unreadable) is reported as a skipped file and the
    model runs at full precision."""
    copy = int8_copy_path(model)
    if not copy.is_file():
        return None
    try:
        meta = read_metadata(copy)
        check = json.loads(meta.get(keys.INT8_CHECK, "{}"))
        mean = float(check.get("mean_psnr", "nan")) if isinstance(check, dict) else math.nan
    except (ModelFileError, ValueError, TypeError) as exc:
        report_problem(copy, f"not a usable int8 copy ({exc}); the model runs at full precision")
        return None
    if meta.get(keys.INT8_OF) != file_sha256(model):
        report_problem(copy, f"it is the int8 copy of another version of {Path(model).name}; the model runs at full "
                             "precision until invsr-quantize makes a new copy")  # fmt: skip
        return None
    if not mean >= FAST_MIN_PSNR:
        report_problem(copy, f"its check ({mean} dB against fp32) is under {FAST_MIN_PSNR:g} dB; the model runs at "
                             "full precision")  # fmt: skip
        return None
    return copy


def scan(backend: str) -> list[ModelFile]:
    """The model files whose ``invsr.backend`` is ``backend``, bundled first then user; a user file with the same
    stem as a bundled one replaces it. Files of other backends are left to their plugins; unreadable files and files
    without ``invsr.backend`` are reported (see :func:`problems`) and skipped."""
    found: dict[str, ModelFile] = {}
    for origin, folder in model_dirs():
        for path in _candidates(folder):
            try:
                meta = read_metadata(path)
            except ModelFileError as exc:
                report_problem(path, str(exc))
                continue
            if keys.BACKEND not in meta:
                report_problem(path, "it has no invsr.backend metadata (not exported by invsr-export?); convert the "
                              "checkpoint with invsr-export, or remove the file")
                continue
            with _lock:
                _problems.pop(path, None)
            if meta[keys.BACKEND] != backend:
                continue
            earlier = found.get(path.stem)
            if earlier is not None and earlier.origin == "bundled" and origin == "user":
                warnings.warn(f"the user model {path} is used instead of the bundled model of the same name "
                              f"({earlier.path.name}); rename or remove it to get the bundled one back",
                              ModelReplacedWarning, stacklevel=2)
            found[path.stem] = ModelFile(path=path, origin=origin, metadata=meta)
    return list(found.values())


def install_model(source: str | os.PathLike) -> Path:
    """Copy an ONNX model made for this app (it carries ``invsr.backend``) into the user model folder, atomically,
    and return where it went. Raises ModelFileError for a file that is not one, and FileExistsError when the folder
    already holds a file of that name (an installed model is never replaced without the user removing it)."""
    source = Path(source)
    meta = read_metadata(source)  # ModelFileError for what is not an ONNX model
    if keys.BACKEND not in meta:
        raise ModelFileError(f"{source.name} is an ONNX model without invsr.backend metadata: it was not made for "
                             "InvSR Desktop; convert the checkpoint with invsr-export")  # fmt: skip
    dest = user_models_dir() / source.name
    if dest.exists():
        raise FileExistsError(f"the model folder already has {dest.name}; remove it there first ({dest.parent})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.link(tmp, dest)  # fails if a file of that name appeared meanwhile: never over one
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (model files run to hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def metadata_number(meta: dict[str, str], key: str, path: Path) -> float:
    """``key`` as a finite number; ModelFileError naming the file and the key otherwise (missing, not a number,
    NaN or infinite)."""
    raw = meta.get(key)
    if raw is None:
        raise ModelFileError(f"{path} has no {key} metadata; re-export it with invsr-export")
    try:
        value = float(raw)
    except ValueError:
        raise ModelFileError(f"{path}: {key} is {raw!r}, not a number") from None
    if not math.isfinite(value):
        raise ModelFileError(f"{path}: {key} is {raw!r}; expected a finite number")
    return value


def metadata_scale(meta: dict[str, str], path: Path) -> int:
    """``invsr.scale`` as a positive integer; ModelFileError naming the file otherwise."""
    value = metadata_number(meta, keys.SCALE, path)
    if value < 1 or value != int(value):
        raise ModelFileError(f"{path}: invsr.scale is {meta[keys.SCALE]!r}; expected a whole number >= 1")
    return int(value)


def metadata_int(meta: dict[str, str], key: str, default: int, path: Path, minimum: int = 1) -> int:
    """An optional integer metadata prop (e.g. ``invsr.input_multiple``)."""
    raw = meta.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):  # "x", "nan", "inf"
        raise ModelFileError(f"{path}: {key} is {raw!r}, not a whole number") from None
    if value < minimum:
        raise ModelFileError(f"{path}: {key} is {raw!r}; expected >= {minimum}")
    return value
