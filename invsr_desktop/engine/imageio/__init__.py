"""Reading and writing image files: every pixel format a photo comes in, metadata kept, files written atomically.

The engine works on :class:`Image`: float32 (H, W, C) pixels in [0, 1] plus what a good upscaler keeps from the
original (bit depth, EXIF, ICC profile). :func:`load_image` turns any supported file into one, with the EXIF
orientation applied, and :func:`save_image` writes one back without ever overwriting a file or leaving a partial one.

Who decodes what:

* Pillow reads every format and all the metadata. Pillow cannot hold 16-bit colour (only 16-bit grey), so the
  pixels of 16-bit PNG and TIFF files come from OpenCV (``cv2.imdecode``, BGR order turned into RGB).
* 8-bit PNG, JPEG and WebP are written by Pillow. 16-bit PNG is written here (IHDR, iCCP, eXIf, IDAT, IEND with
  zlib: a few dozen lines) because neither Pillow (no 16-bit colour) nor OpenCV (no grey + alpha, and metadata
  only in recent versions) covers every case. TIFF is written here too, with Pillow's own IFD serializer, so that
  every channel layout and depth gets deflate compression, the ICC profile and the EXIF tags.

What is lost on purpose, and said so (:func:`save_notes`, and a log warning when saving): JPEG has no alpha, so
transparency is flattened onto white; JPEG and WebP hold 8 bits a channel; WebP has no grey mode.

The package: :mod:`.image` (:class:`Image`), :mod:`.read` (loading), :mod:`.write` (saving), :mod:`.exif`
(metadata), :mod:`.encoders` (16-bit PNG, TIFF) and :mod:`.atomic` (no-clobber writing). Import from here.
"""

from invsr_desktop.engine.imageio.encoders import PNG_COMPRESS_LEVEL
from invsr_desktop.engine.imageio.image import Image
from invsr_desktop.engine.imageio.read import (
    READ_FORMATS,
    SUPPORTED_READ_TEXT,
    header_size,
    load_image,
    max_pixels_limit,
)
from invsr_desktop.engine.imageio.write import (
    WRITE_FORMATS,
    format_for_suffix,
    save_image,
    save_notes,
    stored_depth,
)

__all__ = [
    "Image",
    "PNG_COMPRESS_LEVEL",
    "READ_FORMATS",
    "SUPPORTED_READ_TEXT",
    "WRITE_FORMATS",
    "format_for_suffix",
    "header_size",
    "load_image",
    "max_pixels_limit",
    "save_image",
    "save_notes",
    "stored_depth",
]
