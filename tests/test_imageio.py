"""Image I/O: every pixel layout and metadata round trip, every bad input, and atomic, no-clobber writes.

All images are generated here, in tmp_path, and are a few dozen pixels wide.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

from invsr_desktop.engine import imageio
from invsr_desktop.engine.imageio import encoders, read, write  # noqa: F401 - patched and called below
from invsr_desktop.engine.errors import (
    ImageReadError,
    ImageTooLargeError,
    ImageWriteError,
    InvsrError,
    OutputExistsError,
)
from invsr_desktop.engine.imageio import Image, load_image, max_pixels_limit, save_image, save_notes

ORIENTATION, EXIF_IFD, PIXEL_X, PIXEL_Y, MAKE = 0x0112, 0x8769, 0xA002, 0xA003, 0x010F


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def random_u8(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


def random_u16(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    return rng.integers(0, 65536, (h, w, c), dtype=np.uint16)


def as_u8(image: Image) -> np.ndarray:
    return np.rint(image.pixels * 255).astype(np.uint8)


def as_u16(image: Image) -> np.ndarray:
    return np.rint(image.pixels * 65535).astype(np.uint16)


def camera_exif(orientation: int) -> PILImage.Exif:
    exif = PILImage.Exif()
    exif[MAKE] = "TestCam"
    exif[ORIENTATION] = orientation
    exif.get_ifd(EXIF_IFD).update({PIXEL_X: 40, PIXEL_Y: 24, 0x9003: "2024:01:02 03:04:05"})
    return exif


# -- the Image type ------------------------------------------------------------------------------------------


def test_image_properties_and_with_pixels() -> None:
    image = Image(np.zeros((4, 6, 4), np.float32), 16, b"Exif\0\0xx", b"icc", "PNG", ["a note"])
    assert image.has_alpha and not image.is_grey
    assert image.color.shape == (4, 6, 3) and image.alpha.shape == (4, 6, 1)
    assert image.size == (6, 4)
    bigger = image.with_pixels(np.ones((8, 12, 4), np.float32))
    assert bigger.size == (12, 8)
    metadata = (bigger.bit_depth, bigger.exif, bigger.icc_profile, bigger.source_format)
    assert metadata == (16, b"Exif\0\0xx", b"icc", "PNG")
    bigger.notes.append("another")
    assert image.notes == ["a note"]  # notes are copied, not shared

    grey = Image(np.zeros((3, 5)))  # 2-D and float64 are normalised
    assert grey.pixels.shape == (3, 5, 1) and grey.pixels.dtype == np.float32
    assert grey.is_grey and not grey.has_alpha and grey.alpha is None
    with pytest.raises(ValueError):
        Image(np.zeros((3, 5, 5)))
    with pytest.raises(ValueError):
        Image(np.zeros((3, 5, 3)), bit_depth=12)


# -- EXIF orientation ----------------------------------------------------------------------------------------


def test_jpeg_exif_orientation_round_trip(tmp_path: Path) -> None:
    # 40 x 24, left half red, right half blue: orientation 6 means "rotate 90° clockwise to display".
    array = np.zeros((24, 40, 3), np.uint8)
    array[:, :20] = (255, 0, 0)
    array[:, 20:] = (0, 0, 255)
    source = tmp_path / "camera.jpg"
    PILImage.fromarray(array).save(source, quality=95, exif=camera_exif(6))

    image = load_image(source)
    assert image.size == (24, 40)  # width and height swapped
    top, bottom = as_u8(image)[2, 12], as_u8(image)[-3, 12]
    assert top[0] > 200 and top[2] < 60  # the red (left) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    assert any("orientation 6" in note for note in image.notes)
    kept = PILImage.Exif()
    kept.load(image.exif)
    assert kept[ORIENTATION] == 1 and kept[MAKE] == "TestCam"

    bigger = image.with_pixels(np.repeat(np.repeat(image.pixels, 2, axis=0), 2, axis=1))
    for name in ("out.jpg", "out.png", "out.webp", "out.tif"):
        written = save_image(bigger, tmp_path / name)
        with PILImage.open(written) as reopened:
            assert reopened.size == (48, 80)
            exif = reopened.getexif()
            assert exif.get(ORIENTATION, 1) == 1, name
            assert exif[MAKE] == "TestCam", name
            sub = exif.get_ifd(EXIF_IFD)
            assert (sub[PIXEL_X], sub[PIXEL_Y]) == (48, 80), name
            assert sub[0x9003] == "2024:01:02 03:04:05", name
        again = load_image(written)
        assert again.size == (48, 80)  # not rotated a second time


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow(tmp_path: Path, rng: np.random.Generator, orientation: int) -> None:
    base = PILImage.fromarray(random_u8(rng, 5, 7, 3))
    exif = PILImage.Exif()
    exif[ORIENTATION] = orientation
    path = tmp_path / "o.png"
    base.save(path, exif=exif)
    with PILImage.open(path) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened))
    assert np.array_equal(as_u8(load_image(path)), expected)


def test_orientation_applies_to_16bit_rgb(tmp_path: Path, rng: np.random.Generator) -> None:
    array = random_u16(rng, 6, 9, 3)
    exif = PILImage.Exif()
    exif[ORIENTATION] = 8
    image = Image(array / 65535.0, 16, exif.tobytes())
    path = save_image(image, tmp_path / "deep.png")  # written upright: orientation reset to 1
    assert np.array_equal(as_u16(load_image(path)), array)
    # Now a file that really says 8 (rotate 90° counter-clockwise).
    ok, encoded = cv2.imencode(".png", array[..., ::-1])
    data = imageio.encoders.png_chunk(b"eXIf", exif.tobytes()[6:])
    raw = encoded.tobytes()
    rotated = tmp_path / "rotated.png"
    rotated.write_bytes(raw[:33] + data + raw[33:])  # after IHDR (8 + 25 bytes)
    loaded = load_image(rotated)
    assert np.array_equal(as_u16(loaded), np.rot90(array, 1))


# -- ICC -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.webp", "a.tif", "deep.png", "deep.tif"])
def test_icc_profile_round_trip(tmp_path: Path, rng: np.random.Generator, srgb_icc: bytes, name: str) -> None:
    depth = 16 if name.startswith("deep") else 8
    image = Image(random_u8(rng, 8, 8, 3) / 255.0, depth, None, srgb_icc)
    written = save_image(image, tmp_path / name)
    assert load_image(written).icc_profile == srgb_icc
    with PILImage.open(written) as reopened:  # an independent reader sees it too
        assert reopened.info.get("icc_profile") == srgb_icc


def test_icc_profile_read_from_pillow_file(tmp_path: Path, rng: np.random.Generator, srgb_icc: bytes) -> None:
    path = tmp_path / "p.jpg"
    PILImage.fromarray(random_u8(rng, 8, 8, 3)).save(path, icc_profile=srgb_icc)
    assert load_image(path).icc_profile == srgb_icc


# -- alpha, palette, grey ------------------------------------------------------------------------------------


def test_rgba_png_round_trip_is_exact(tmp_path: Path, rng: np.random.Generator) -> None:
    array = random_u8(rng, 9, 11, 4)
    array[0, 0, 3] = 0
    path = tmp_path / "rgba.png"
    PILImage.fromarray(array).save(path)
    image = load_image(path)
    assert image.has_alpha and image.pixels.shape == (9, 11, 4)
    assert np.array_equal(as_u8(image), array)
    out = save_image(image, tmp_path / "rgba_out.png")
    with PILImage.open(out) as reopened:
        assert reopened.mode == "RGBA"
        assert np.array_equal(np.asarray(reopened), array)


def test_palette_with_transparency_becomes_rgba(tmp_path: Path) -> None:
    palette_image = PILImage.new("P", (4, 3))
    palette_image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette_image.putdata([0, 1, 2, 0] * 3)
    path = tmp_path / "palette.png"
    palette_image.save(path, transparency=1)  # index 1 (green) is transparent
    image = load_image(path)
    assert image.pixels.shape == (3, 4, 4)
    pixels = as_u8(image)
    assert tuple(pixels[0, 0]) == (255, 0, 0, 255)
    assert pixels[0, 1, 3] == 0
    assert tuple(pixels[0, 2]) == (0, 0, 255, 255)
    assert any("palette" in note for note in image.notes)


def test_palette_without_transparency_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    PILImage.new("RGB", (5, 5), (10, 20, 30)).convert("P").save(path)
    image = load_image(path)
    assert image.pixels.shape == (5, 5, 3) and not image.has_alpha


def test_grey_stays_grey(tmp_path: Path, rng: np.random.Generator) -> None:
    array = random_u8(rng, 7, 9, 1)[..., 0]
    path = tmp_path / "grey.png"
    PILImage.fromarray(array).save(path)
    image = load_image(path)
    assert image.is_grey and image.pixels.shape == (7, 9, 1) and image.bit_depth == 8
    for name in ("g.png", "g.jpg", "g.tif"):
        with PILImage.open(save_image(image, tmp_path / name)) as reopened:
            assert reopened.mode == "L", name
    with PILImage.open(tmp_path / "g.png") as reopened:
        assert np.array_equal(np.asarray(reopened), array)


def test_grey_alpha_png(tmp_path: Path, rng: np.random.Generator) -> None:
    array = random_u8(rng, 5, 6, 2)
    path = tmp_path / "la.png"
    PILImage.fromarray(array).save(path)
    image = load_image(path)
    assert image.is_grey and image.has_alpha
    assert np.array_equal(as_u8(image), array)


def test_jpeg_flattens_alpha_onto_white(tmp_path: Path) -> None:
    pixels = np.zeros((8, 8, 4), np.float32)
    pixels[..., 0] = 1.0  # red...
    pixels[:, :4, 3] = 1.0  # ...opaque on the left, fully transparent on the right
    image = Image(pixels)
    assert any("white" in note for note in save_notes(image, "jpeg"))
    with PILImage.open(save_image(image, tmp_path / "flat.jpg")) as reopened:
        assert reopened.mode == "RGB"
        out = np.asarray(reopened).astype(int)
    assert np.all(np.abs(out[4, 1] - (255, 0, 0)) < 8)
    assert np.all(out[4, 6] > 245)  # transparent -> white


def test_bmp_is_read(tmp_path: Path, rng: np.random.Generator) -> None:
    array = random_u8(rng, 6, 5, 3)
    path = tmp_path / "old.bmp"
    PILImage.fromarray(array).save(path)
    image = load_image(path)
    assert image.source_format == "BMP" and np.array_equal(as_u8(image), array)


# -- 16 bit --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_round_trip_is_exact(tmp_path: Path, rng: np.random.Generator, suffix: str, channels: int) -> None:
    array = random_u16(rng, 13, 17, channels)
    array[0, 0] = 0
    array[0, 1] = 65535
    path = save_image(Image(array / 65535.0, 16), tmp_path / f"deep{suffix}")
    image = load_image(path)
    assert image.bit_depth == 16 and image.pixels.shape == array.shape
    assert np.array_equal(as_u16(image), array)
    # The file is standard: OpenCV (libpng / libtiff) reads the same values, in BGR order.
    if channels != 2:  # OpenCV expands grey + alpha to BGRA (PNG) or 8 bits (TIFF)
        decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        expected = array[..., 0] if channels == 1 else array[..., [2, 1, 0, 3][:channels]]
        assert decoded.dtype == np.uint16 and np.array_equal(decoded, expected)
    elif suffix == ".png":
        decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(decoded[..., 0], array[..., 0]) and np.array_equal(decoded[..., 3], array[..., 1])


def test_16bit_grey_png_read_by_pillow(tmp_path: Path, rng: np.random.Generator) -> None:
    array = random_u16(rng, 6, 7, 1)
    path = save_image(Image(array / 65535.0, 16), tmp_path / "g16.png")
    with PILImage.open(path) as reopened:
        assert reopened.mode.startswith("I")
        assert np.array_equal(np.asarray(reopened).astype(np.uint16), array[..., 0])


def test_16bit_rgb_written_by_opencv_reads_in_rgb_order(tmp_path: Path, rng: np.random.Generator) -> None:
    array = random_u16(rng, 5, 8, 3)
    for suffix in (".png", ".tif"):
        path = tmp_path / f"cv{suffix}"
        cv2.imwrite(str(path), array[..., ::-1])  # OpenCV stores what it is given as BGR
        image = load_image(path)
        assert image.bit_depth == 16 and np.array_equal(as_u16(image), array), suffix


def test_16bit_to_jpeg_becomes_8bit(tmp_path: Path, rng: np.random.Generator) -> None:
    image = Image(random_u16(rng, 4, 4, 3) / 65535.0, 16)
    assert any("8-bit" in note for note in save_notes(image, "JPEG"))
    assert not save_notes(image, "PNG")
    assert load_image(save_image(image, tmp_path / "x.jpg")).bit_depth == 8


# -- CMYK, WebP ----------------------------------------------------------------------------------------------


def test_cmyk_jpeg_is_converted_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    PILImage.new("CMYK", (6, 4), (0, 255, 255, 0)).save(path, quality=95)  # pure red ink mix
    image = load_image(path)
    assert image.pixels.shape == (4, 6, 3)
    assert any("CMYK" in note and "plain conversion" in note for note in image.notes)
    assert image.icc_profile is None
    red = as_u8(image)[2, 3].astype(int)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_cmyk_with_unusable_profile_falls_back(tmp_path: Path, srgb_icc: bytes) -> None:
    path = tmp_path / "print.jpg"
    PILImage.new("CMYK", (6, 4), (0, 0, 0, 0)).save(path, icc_profile=srgb_icc)  # an RGB profile on CMYK data
    image = load_image(path)
    assert image.pixels.shape == (4, 6, 3)
    assert any("CMYK" in note and "plain conversion" in note for note in image.notes)
    assert image.icc_profile is None  # the CMYK file's profile never describes the RGB result


def test_webp_lossless_round_trip_is_exact(tmp_path: Path, rng: np.random.Generator) -> None:
    array = random_u8(rng, 10, 12, 4)
    array[:2, :2, 3] = 0  # colour under transparent pixels is kept too ("exact")
    path = save_image(Image(array / 255.0), tmp_path / "x.webp", lossless=True)
    image = load_image(path)
    assert image.source_format == "WEBP" and np.array_equal(as_u8(image), array)
    rgb = random_u8(rng, 10, 12, 3)
    path = save_image(Image(rgb / 255.0), tmp_path / "y.webp", lossless=True)
    assert np.array_equal(as_u8(load_image(path)), rgb)


def test_format_from_argument_and_suffix(tmp_path: Path, rng: np.random.Generator) -> None:
    image = Image(random_u8(rng, 4, 4, 3) / 255.0)
    with PILImage.open(save_image(image, tmp_path / "a.JPEG")) as reopened:
        assert reopened.format == "JPEG"
    with PILImage.open(save_image(image, tmp_path / "b.bin", format="png")) as reopened:
        assert reopened.format == "PNG"
    with pytest.raises(ImageWriteError, match="suffix"):
        save_image(image, tmp_path / "c.xyz")
    with pytest.raises(ImageWriteError, match="unsupported output format"):
        save_image(image, tmp_path / "d.png", format="gif")
    assert not list(tmp_path.glob("c.*")) and not list(tmp_path.glob("d.*"))


# -- bad inputs ----------------------------------------------------------------------------------------------


def _png_bytes(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(random_u8(rng, 64, 64, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_bytes(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(random_u8(rng, 64, 64, 3)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _deep_png_bytes(rng: np.random.Generator) -> bytes:
    return cv2.imencode(".png", random_u16(rng, 64, 64, 3))[1].tobytes()


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.png", lambda rng: b"", "empty"),
        ("notes.png", lambda rng: b"shopping list: milk, eggs\n" * 10, "not an image"),
        ("noise.jpg", lambda rng: rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(), "not an image"),
        ("truncated.png", lambda rng: _png_bytes(rng)[:-4000], "truncated"),
        ("truncated.jpg", lambda rng: _jpeg_bytes(rng)[: len(_jpeg_bytes(rng)) // 2], "truncated"),
        ("truncated16.png", lambda rng: _deep_png_bytes(rng)[:3000], "truncated"),
        ("header_only.png", lambda rng: _png_bytes(rng)[:60], "truncated"),
        ("garbled.png", lambda rng: _png_bytes(rng)[:200] + b"\0" * 5000, "corrupt"),
    ],
)
def test_bad_files_raise_image_read_error(
    tmp_path: Path, rng: np.random.Generator, name: str, content, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content(rng))
    with pytest.raises(ImageReadError) as caught:
        load_image(path)
    message = str(caught.value)
    assert message.startswith(f"Cannot read {str(path)!r}: ")
    assert reason in message
    assert caught.value.path == path


def test_text_file_message_is_the_documented_one(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_text("hello")
    with pytest.raises(ImageReadError, match=r"not an image \(or a format Pillow cannot decode\)"):
        load_image(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "absent.png")
    with pytest.raises(ImageReadError, match="folder"):
        load_image(tmp_path)


def test_image_over_the_pixel_limit(tmp_path: Path, rng: np.random.Generator, monkeypatch) -> None:
    path = tmp_path / "big.png"
    PILImage.fromarray(random_u8(rng, 40, 50, 3)).save(path)

    def must_not_decode(*args, **kwargs):
        raise AssertionError("the pixels were decoded before the size check")

    monkeypatch.setattr(imageio.read, "_pillow_pixels", must_not_decode)
    with pytest.raises(ImageTooLargeError) as caught:
        load_image(path, max_pixels=1000)
    message = str(caught.value)
    assert "50 x 40" in message and "0.001 megapixels" in message
    assert "INVSR_MAX_PIXELS" in message and "--max-pixels" in message
    assert caught.value.size == (50, 40) and caught.value.limit == 1000
    assert isinstance(caught.value, ImageReadError) and isinstance(caught.value, InvsrError)

    monkeypatch.setenv("INVSR_MAX_PIXELS", "1500")
    assert max_pixels_limit() == 1500
    with pytest.raises(ImageTooLargeError, match="0.0015 megapixels"):
        load_image(path)


def test_pixel_limit_sources(monkeypatch) -> None:
    monkeypatch.delenv("INVSR_MAX_PIXELS", raising=False)
    assert max_pixels_limit() == 200_000_000
    monkeypatch.setenv("INVSR_MAX_PIXELS", "300e6")
    assert max_pixels_limit() == 300_000_000
    assert max_pixels_limit(5) == 5  # an explicit value wins
    monkeypatch.setenv("INVSR_MAX_PIXELS", "lots")
    assert max_pixels_limit() == 200_000_000  # a typo does not remove the guard
    with pytest.raises(ValueError):
        max_pixels_limit(0)


def test_pillow_decompression_bomb_is_reported_as_too_large(
    tmp_path: Path, rng: np.random.Generator, monkeypatch
) -> None:
    path = tmp_path / "bomb.png"
    PILImage.fromarray(random_u8(rng, 40, 50, 3)).save(path)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(ImageTooLargeError, match="INVSR_MAX_PIXELS"):
        load_image(path, max_pixels=20)  # Pillow's guard (raised to 20) refuses at 2 x 20 < 2000 pixels


# -- writing: atomic, never over an existing file ------------------------------------------------------------


def test_existing_output_is_never_overwritten(tmp_path: Path, rng: np.random.Generator) -> None:
    target = tmp_path / "result.png"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        save_image(Image(random_u8(rng, 4, 4, 3) / 255.0), target)
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.png"]


def test_existing_output_appearing_during_the_write(tmp_path: Path, rng: np.random.Generator, monkeypatch) -> None:
    target = tmp_path / "race.png"
    real_encode = imageio.write._encode

    def encode_then_someone_else_writes(*args, **kwargs):
        real_encode(*args, **kwargs)
        target.write_bytes(b"theirs")

    monkeypatch.setattr(imageio.write, "_encode", encode_then_someone_else_writes)
    with pytest.raises(OutputExistsError):
        save_image(Image(random_u8(rng, 4, 4, 3) / 255.0), target)
    assert target.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.png"]


@pytest.mark.parametrize("where", ["encoder", "pillow"])
def test_disk_full_midway_leaves_nothing(tmp_path: Path, rng: np.random.Generator, monkeypatch, where: str) -> None:
    def write_half_then_fail(fp):
        fp.write(b"\x89PNG partial data")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "encoder":  # imageio.write._encode(image, fmt, fp, quality, lossless)
        monkeypatch.setattr(imageio.write, "_encode", lambda image, fmt, fp, *a: write_half_then_fail(fp))
    else:  # PIL.Image.Image.save(self, fp, format=..., **options)
        monkeypatch.setattr(PILImage.Image, "save", lambda self, fp, *a, **k: write_half_then_fail(fp))
    with pytest.raises(ImageWriteError, match="disk is full") as caught:
        save_image(Image(random_u8(rng, 4, 4, 3) / 255.0), tmp_path / "out.png")
    assert caught.value.path == tmp_path / "out.png"
    assert list(tmp_path.iterdir()) == []  # neither the final name nor the temporary file


def test_encoder_bug_is_reported_and_cleaned(tmp_path: Path, rng: np.random.Generator, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise ValueError("encoder error -2")

    monkeypatch.setattr(imageio.write, "_encode", broken)
    with pytest.raises(ImageWriteError, match="could not be encoded"):
        save_image(Image(random_u8(rng, 4, 4, 3) / 255.0), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder(tmp_path: Path, rng: np.random.Generator) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: permission bits do not stop writes")
        with pytest.raises(ImageWriteError, match="permission denied"):
            save_image(Image(random_u8(rng, 4, 4, 3) / 255.0), folder / "out.png")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_unwritable_folder_even_as_root(tmp_path: Path, rng: np.random.Generator, monkeypatch) -> None:
    """The same, simulated, so that it also runs where the tests run as root."""
    real_open = os.open

    def deny(path, *args, **kwargs):
        if Path(path).parent == tmp_path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(ImageWriteError, match="permission denied"):
        save_image(Image(random_u8(rng, 4, 4, 3) / 255.0), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder(tmp_path: Path, rng: np.random.Generator) -> None:
    with pytest.raises(ImageWriteError, match="does not exist"):
        save_image(Image(random_u8(rng, 4, 4, 3) / 255.0), tmp_path / "nowhere" / "out.png")


def test_file_systems_without_hard_links(tmp_path: Path, rng: np.random.Generator, monkeypatch) -> None:
    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    array = random_u8(rng, 4, 4, 3)
    written = save_image(Image(array / 255.0), tmp_path / "fat.png")
    assert np.array_equal(as_u8(load_image(written)), array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fat.png"]
    with pytest.raises(OutputExistsError):
        save_image(Image(array / 255.0), tmp_path / "fat.png")


def test_written_file_has_normal_permissions(tmp_path: Path, rng: np.random.Generator) -> None:
    written = save_image(Image(random_u8(rng, 4, 4, 3) / 255.0), tmp_path / "perm.png")
    umask = os.umask(0)
    os.umask(umask)
    assert written.stat().st_mode & 0o777 == 0o666 & ~umask


def test_tiff_keeps_exif_from_a_jpeg(tmp_path: Path, rng: np.random.Generator) -> None:
    source = tmp_path / "cam.jpg"
    PILImage.fromarray(random_u8(rng, 24, 40, 3)).save(source, exif=camera_exif(1))
    image = load_image(source)
    tiff = save_image(image, tmp_path / "cam.tif")
    again = load_image(tiff)
    exif = PILImage.Exif()
    exif.load(again.exif)
    assert exif[MAKE] == "TestCam"
    assert exif.get_ifd(EXIF_IFD)[PIXEL_X] == 40


def test_multi_picture_jpeg_reads_the_first_image(tmp_path: Path) -> None:
    first = PILImage.new("RGB", (8, 8), (0, 0, 0))
    path = tmp_path / "phone.jpg"
    first.save(path, format="MPO", save_all=True, append_images=[PILImage.new("RGB", (8, 8), (200, 200, 200))])
    image = load_image(path)
    assert image.source_format == "JPEG" and image.pixels.max() < 0.05
    assert any("2 images" in note for note in image.notes)


def test_decoder_warnings_become_notes_not_terminal_lines(tmp_path, recwarn):
    """A JPEG whose EXIF tag claims more bytes than the file holds: Pillow warns; the warning lands in the
    image's notes and nowhere else."""
    import io
    import struct

    ifd = struct.pack("<2sHI", b"II", 42, 8) + struct.pack("<H", 1)
    ifd += struct.pack("<HHII", 0x010E, 2, 5000, 26) + struct.pack("<I", 0)
    buf = io.BytesIO()
    PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "JPEG", exif=b"Exif\x00\x00" + ifd + b"short")
    path = tmp_path / "bad_exif.jpg"
    path.write_bytes(buf.getvalue())
    image = load_image(path)
    assert any("Tag data larger than file" in n for n in image.notes)
    assert not [w for w in recwarn if "Tag data" in str(w.message)]


def test_a_0x0_png_and_a_negative_width_bmp_are_called_damaged(tmp_path):
    import io
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", bytes(8) + bytes([8, 2, 0, 0, 0]))
                      + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    buf = io.BytesIO()
    PILImage.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, "BMP")
    bmp = bytearray(buf.getvalue())
    bmp[18:22] = struct.pack("<i", -4)
    (tmp_path / "neg.bmp").write_bytes(bytes(bmp))
    with pytest.raises(ImageReadError, match=r"empty size \(0 x 0\)"):
        load_image(empty)
    with pytest.raises(ImageReadError, match=r"impossible size \(-4 x 4\)") as info:
        load_image(tmp_path / "neg.bmp")
    assert not isinstance(info.value, ImageTooLargeError)


def test_saving_converts_band_by_band_without_a_second_full_size_float_image(tmp_path):
    """The save's numpy temporaries: the uint8 result (a quarter of the float input) and one band. The earlier
    chain (nan_to_num, clip, scale, rint: each a full-size copy) peaked at several times the input."""
    import tracemalloc

    pixels = np.random.default_rng(0).random((1500, 1000, 3), dtype=np.float32)
    pixels[0, 0] = [np.nan, np.inf, -np.inf]
    image = imageio.Image(pixels=pixels)
    tracemalloc.start()
    try:
        imageio.save_image(image, tmp_path / "out.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.8 * pixels.nbytes, peak / pixels.nbytes  # now 0.63; before: 3.25
    with PILImage.open(tmp_path / "out.png") as saved:
        assert saved.getpixel((0, 0)) == (0, 255, 0)
    assert np.isnan(pixels[0, 0, 0])  # the caller's array is not changed


def test_libpng_warnings_go_to_the_files_notes_not_the_terminal(tmp_path: Path, capfd) -> None:
    """A 16-bit PNG with a damaged iCCP chunk: libpng (inside OpenCV) prints "libpng warning: iCCP: too short" to
    descriptor 2 itself; the loader catches it into the image's notes (and the log), and the terminal stays clean."""
    import struct
    import zlib

    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".png", (rng.random((8, 8, 3)) * 65535).astype(np.uint16))
    data = buf.tobytes()
    body = b"iCCP" + b"bogus\x00\x00xxxx"
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    path = tmp_path / "damaged-icc-16bit.png"
    path.write_bytes(data[:33] + chunk + data[33:])  # after the signature and IHDR
    capfd.readouterr()
    image = load_image(path)
    out, err = capfd.readouterr()
    assert image.bit_depth == 16 and image.pixels.shape == (8, 8, 3)
    assert err == "" and out == ""
    assert any("libpng warning: iCCP" in note for note in image.notes), image.notes
