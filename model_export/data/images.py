"""Finding, loading and caching HR images, and the deterministic training / validation split."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from invsr_desktop.engine.formats import READ_SUFFIXES

#: What training reads: what the app reads (engine.formats), plus the PNM files some SR datasets ship as (Pillow
#: decodes them; the app does not take them from users).
IMAGE_EXTENSIONS = tuple(sorted(READ_SUFFIXES | {".ppm", ".pgm"}))


def find_images(folders: Sequence[str | os.PathLike], extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Every image file under ``folders`` (recursively), sorted by (folder order, relative path).

    A missing folder or folders holding no image are a ``FileNotFoundError`` that names them.
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    if not folders:
        raise FileNotFoundError("no training image folder given (data.folders is empty)")
    files: list[Path] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {str(root)!r} does not exist (resolved: {root.resolve()})")
        found = sorted(
            (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts),
            key=lambda p: p.relative_to(root).as_posix(),
        )
        if not found:
            raise FileNotFoundError(f"image folder {str(root)!r} holds no image ({', '.join(exts)})")
        files.extend(found)
    return files


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3). Grey and palette images become RGB, alpha is dropped (training
    patches are colour photographs); 16-bit images are scaled to 8 bit."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
            return np.repeat(arr[..., None], 3, axis=2)
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def split_holdout(files: Sequence[Path], count: int) -> tuple[list[Path], list[Path]]:
    """(train, validation): ``count`` files evenly spaced through the sorted list (index ``floor((i + 0.5) * n /
    count)``) are held out for validation; the rest train. Deterministic: depends only on the file list."""
    n = len(files)
    if count <= 0:
        return list(files), []
    if count >= n:
        raise ValueError(f"validation hold-out of {count} images leaves nothing to train on ({n} images)")
    val_idx = sorted({int((i + 0.5) * n / count) for i in range(count)})
    val_set = set(val_idx)
    return [f for i, f in enumerate(files) if i not in val_set], [files[i] for i in val_idx]


class ImageStore:
    """The images of a file list, loaded once and kept in memory as uint8 RGB arrays.

    A file that cannot be decoded is skipped with a warning naming it. With ``min_size`` images whose shorter
    side is smaller are left out too (they cannot give a patch), with one warning counting them.
    Built before the DataLoader starts its workers, so forked workers share the arrays.
    """

    def __init__(self, files: Sequence[Path], min_size: int = 0, what: str = "training"):
        self.paths: list[Path] = []
        self.images: list[np.ndarray] = []
        small: list[Path] = []
        for path in files:
            try:
                img = load_image(path)
            except Exception as exc:  # noqa: BLE001 - any decoder error means "skip this file"
                warnings.warn(f"skipping unreadable image {str(path)!r}: {type(exc).__name__}: {exc}", stacklevel=2)
                continue
            if min(img.shape[:2]) < min_size:
                small.append(path)
                continue
            self.paths.append(Path(path))
            self.images.append(img)
        if small:
            warnings.warn(
                f"{len(small)} {what} image(s) smaller than {min_size} px on a side left out "
                f"(e.g. {str(small[0])!r})",
                stacklevel=2,
            )
        if not self.images:
            raise FileNotFoundError(f"no usable {what} image among {len(files)} file(s)")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[i]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.images)
