"""Output names: next to the original, numbered instead of overwriting, mirrored folders; writable-folder checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from invsr_desktop.engine.errors import ImageWriteError
from invsr_desktop.engine.output import check_writable, default_suffix, output_path


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"jpeg bytes")
    return path


def test_default_is_next_to_the_original(photo: Path) -> None:
    assert output_path(photo, None, "_x4_bicubic", "png") == photo.parent / "photo_x4_bicubic.png"


SPELLINGS = [("png", ".png"), (".png", ".png"), ("PNG", ".png"), ("jpeg", ".jpg"), ("jpg", ".jpg"),
             ("webp", ".webp"), ("tiff", ".tif"), (".tif", ".tif")]  # fmt: skip


@pytest.mark.parametrize("fmt, ext", SPELLINGS)
def test_format_spellings(photo: Path, fmt: str, ext: str) -> None:
    assert output_path(photo, None, "_x2_inn", fmt).name == f"photo_x2_inn{ext}"


def test_none_keeps_the_input_format(photo: Path, tmp_path: Path) -> None:
    assert output_path(photo, None, "_x2", None).name == "photo_x2.jpg"
    odd = tmp_path / "scan.bmp"
    odd.write_bytes(b"bmp")
    assert output_path(odd, None, "_x2", None).name == "scan_x2.png"  # BMP is read, not written
    with pytest.raises(ValueError, match="unknown output format"):
        output_path(photo, None, "_x2", "gif")


def test_existing_names_get_numbered(photo: Path) -> None:
    first = output_path(photo, None, "_x4_bicubic", "png")
    first.write_bytes(b"")
    second = output_path(photo, None, "_x4_bicubic", "png")
    assert second.name == "photo_x4_bicubic (1).png"
    second.write_bytes(b"")
    assert output_path(photo, None, "_x4_bicubic", "png").name == "photo_x4_bicubic (2).png"


def test_never_the_input_itself(tmp_path: Path) -> None:
    source = tmp_path / "photo.png"
    source.write_bytes(b"png")
    result = output_path(source, None, "", "png")
    assert result != source and result.name == "photo (1).png"
    # Even if the input vanished in the meantime, its name is not handed out.
    source.unlink()
    assert output_path(source, None, "", ".png") != source


def test_reserved_names_are_skipped(photo: Path) -> None:
    taken = [photo.parent / "photo_x4_bicubic.png", photo.parent / "photo_x4_bicubic (1).png"]
    assert output_path(photo, None, "_x4_bicubic", "png", reserved=taken).name == "photo_x4_bicubic (2).png"


def test_output_folder(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert output_path(photo, out, "_x4_bicubic", "png") == out / "photo_x4_bicubic.png"


def test_mirror_relative_folder(tmp_path: Path) -> None:
    root = tmp_path / "holiday"
    source = root / "day1" / "beach" / "img.jpg"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"jpeg")
    out = tmp_path / "upscaled"
    result = output_path(source, out, "_x4_esrgan", "png", input_root=root)
    assert result == out / "day1" / "beach" / "img_x4_esrgan.png"
    top = root / "top.jpg"
    top.write_bytes(b"jpeg")
    assert output_path(top, out, "_x4", "png", input_root=root) == out / "top_x4.png"
    # Without an output folder there is nothing to mirror: results go next to the originals.
    assert output_path(source, None, "_x4", "png", input_root=root) == source.parent / "img_x4.png"
    with pytest.raises(ValueError, match="not inside"):
        output_path(tmp_path / "elsewhere.jpg", out, "_x4", "png", input_root=root)


def test_default_suffix() -> None:
    assert default_suffix(4, "bicubic") == "_x4_bicubic"
    assert default_suffix(4.0, "inn") == "_x4_inn"
    assert default_suffix(1.5, "esrgan") == "_x1.5_esrgan"


def test_check_writable(tmp_path: Path) -> None:
    assert check_writable(tmp_path) == tmp_path
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    with pytest.raises(ImageWriteError, match="does not exist"):
        check_writable(tmp_path / "missing")
    created = check_writable(tmp_path / "a" / "b", create=True)
    assert created.is_dir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ImageWriteError, match="not a folder"):
        check_writable(a_file)


def test_check_writable_refuses_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: permission bits do not stop writes")
        with pytest.raises(ImageWriteError, match="not writable .*permission denied"):
            check_writable(folder)
        with pytest.raises(ImageWriteError, match="cannot be created"):
            check_writable(folder / "sub", create=True)
    finally:
        folder.chmod(0o700)


def test_check_writable_reports_a_failing_probe(tmp_path: Path, monkeypatch) -> None:
    """Simulated, so that it also runs as root."""
    import errno

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(ImageWriteError, match="read-only file system") as caught:
        check_writable(tmp_path)
    assert caught.value.path == tmp_path


def test_the_write_probe_never_shows_in_the_users_folder(tmp_path, monkeypatch):
    """A batch killed while it probes the folder left ``.invsr-write-test-*`` files behind (seen in the SIGKILL
    resume test): the probe is now nameless, so even a process that dies before any clean-up leaves nothing."""
    import os

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies here: no clean-up after this point runs

    monkeypatch.setattr(os, "unlink", killed)
    check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []
