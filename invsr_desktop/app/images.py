"""Reading images for display (thumbnails, the compare view), off the GUI thread where they are large.

Display needs 8-bit pixels, not the engine's float32 copy (which costs 12 bytes a pixel: too much for a x4
result of a large photo), so files are read with QImageReader, which also applies the EXIF orientation the way the
engine does. Pillow is the fallback for what Qt's image plugins cannot read. QImage (unlike QPixmap) may be made in
any thread, which is what lets :class:`ThumbnailLoader` work in a thread pool.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QImage, QImageIOHandler, QImageReader

THUMBNAIL_SIDE = 64


def read_image(path: str | Path, fit: QSize | None = None) -> tuple[QImage, QSize]:
    """The image at ``path`` (EXIF orientation applied), optionally scaled to fit ``fit``, and its full size.

    Returns a null QImage and an invalid size when the file cannot be read by Qt or Pillow.
    """
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    stored = reader.size()  # as stored in the file, before the EXIF orientation is applied
    turned = _turns_sideways(reader)
    size = stored.transposed() if turned and stored.isValid() else stored
    if fit is not None and size.isValid() and (size.width() > fit.width() or size.height() > fit.height()):
        scaled = _fit(size, fit)
        reader.setScaledSize(scaled.transposed() if turned else scaled)
    image = reader.read()
    if image.isNull():
        image = _read_with_pillow(Path(path))
        size = image.size()
        if fit is not None and not image.isNull():
            image = image.scaled(_fit(size, fit))
    if not size.isValid():
        size = image.size()
    return image, size


def _turns_sideways(reader: QImageReader) -> bool:
    """Whether the EXIF orientation rotates the image by 90 degrees (width and height swap)."""
    return bool(reader.transformation() & QImageIOHandler.Transformation.TransformationRotate90)


def _fit(size: QSize, box: QSize) -> QSize:
    return size.scaled(box, Qt.AspectRatioMode.KeepAspectRatio)


def _read_with_pillow(path: Path) -> QImage:
    """Fallback reader: any mode Pillow opens, brought to 8-bit RGBA."""
    try:
        from PIL import Image as PILImage
        from PIL import ImageOps

        with PILImage.open(path) as pil:
            pil = ImageOps.exif_transpose(pil)
            if pil.mode.startswith("I"):  # 16/32-bit grey: keep the top 8 bits instead of clipping
                import numpy as np

                array = np.asarray(pil, dtype=np.uint32)
                shift = 8 if array.max() > 255 else 0
                pil = PILImage.fromarray((array >> shift).astype(np.uint8))
            rgba = pil.convert("RGBA")
            data = rgba.tobytes()
            image = QImage(data, rgba.width, rgba.height, rgba.width * 4, QImage.Format.Format_RGBA8888)
            return image.copy()  # own the pixels: ``data`` is freed when this function returns
    except Exception:  # noqa: BLE001 - unreadable for display: the row or view shows a placeholder
        return QImage()


class _ThumbnailTask(QRunnable):
    def __init__(self, loader: ThumbnailLoader, path: Path, side: int) -> None:
        super().__init__()
        self.loader, self.path, self.side = loader, path, side

    def run(self) -> None:
        image, size = read_image(self.path, QSize(self.side, self.side))
        self.loader.loaded.emit(str(self.path), image, size)


class ThumbnailLoader(QObject):
    """Reads thumbnails and image sizes in a one-thread pool; ``loaded(path, thumbnail, full_size)`` per file.

    One thread is enough (a scaled JPEG decode is quick) and leaves the other cores to the engine.
    """

    loaded = Signal(str, QImage, QSize)

    def __init__(self, side: int = THUMBNAIL_SIDE, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.side = side
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self._requested: set[str] = set()

    def request(self, path: str | Path) -> None:
        """Queue ``path`` once; later requests for it are ignored."""
        key = str(path)
        if key in self._requested:
            return
        self._requested.add(key)
        self.pool.start(_ThumbnailTask(self, Path(path), self.side))

    def wait(self, msecs: int = 5000) -> bool:
        """Block until queued thumbnails are read (tests and shutdown)."""
        return self.pool.waitForDone(msecs)
