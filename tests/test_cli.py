"""`invsr-upscale` end to end: batches with bad inputs, naming, exit codes, and a real Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from invsr_desktop import cli
from invsr_desktop.engine.imageio import load_image


def write_photo(path: Path, size=(40, 30), mode="RGB") -> Path:
    rng = np.random.default_rng(len(str(path)))
    channels = {"RGB": 3, "RGBA": 4}[mode]
    PILImage.fromarray(rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8), mode).save(path)
    return path


def test_a_batch_goes_on_past_bad_inputs_and_reports_them(tmp_path, capsys):
    good = write_photo(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("this is not a photo")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    write_photo(tmp_path / "huge.png", size=(400, 300))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    code = cli.main([str(tmp_path), "--scale", "2", "--max-pixels", "100000", "--quiet"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_FAILED
    assert (tmp_path / "good_x2_bicubic.png").exists()
    for name in ("empty.png", "notes.jpg", "truncated.png", "huge.png"):
        assert f"FAILED {tmp_path / name}" in err
    assert "megapixel" in err and "INVSR_MAX_PIXELS" in err
    assert "1 written, 4 failed" in err
    for name, content in before.items():
        assert (tmp_path / name).read_bytes() == content, "inputs are never modified"
    produced = {p.name for p in tmp_path.iterdir()} - set(before)
    assert produced == {"good_x2_bicubic.png"}, "no partial or temporary files are left"
    assert load_image(good).size == (40, 30)


def test_existing_outputs_are_never_overwritten(tmp_path):
    photo = write_photo(tmp_path / "photo.png")
    taken = tmp_path / "photo_x2_bicubic.png"
    taken.write_bytes(b"someone's file")
    assert cli.main([str(photo), "--scale", "2", "--quiet"]) == cli.EXIT_OK
    assert taken.read_bytes() == b"someone's file"
    assert load_image(tmp_path / "photo_x2_bicubic (1).png").size == (80, 60)


def test_any_scale_formats_and_recursive_mirroring(tmp_path):
    src = tmp_path / "src"
    (src / "trip" / "day1").mkdir(parents=True)
    write_photo(src / "a.png", mode="RGBA")
    write_photo(src / "trip" / "day1" / "b.png")
    out = tmp_path / "out"
    assert cli.main([str(src), "-r", "-o", str(out), "--scale", "1.5", "--format", "webp", "--quiet"]) == 0
    a = load_image(out / "a_x1.5_bicubic.webp")
    assert a.size == (60, 45) and a.has_alpha
    assert load_image(out / "trip" / "day1" / "b_x1.5_bicubic.webp").size == (60, 45)
    for alias, suffix in (("jpg", ".jpg"), ("tif", ".tif")):  # the aliases map to the queue's format names
        assert cli.main([str(src / "a.png"), "-o", str(out), "--format", alias, "--quiet"]) == 0
        assert load_image(out / f"a_x4_bicubic{suffix}").size == (160, 120)


def test_usage_errors_and_no_input(tmp_path, capsys):
    assert cli.main(["--backend", "nope", str(tmp_path)]) == cli.EXIT_USAGE
    assert "unknown backend" in capsys.readouterr().err
    assert cli.main(["--scale", "0.5", str(tmp_path)]) == cli.EXIT_USAGE
    assert cli.main([str(tmp_path)]) == cli.EXIT_NO_INPUT
    assert cli.main([str(tmp_path / "missing.png")]) == cli.EXIT_NO_INPUT
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["--param", "x=1", str(tmp_path)]) == cli.EXIT_USAGE


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_output_folder_is_a_clear_failure(tmp_path, capsys):
    photo = write_photo(tmp_path / "p.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert cli.main([str(photo), "-o", str(locked), "--quiet"]) == cli.EXIT_FAILED
    finally:
        locked.chmod(0o700)
    assert "FAILED" in capsys.readouterr().err
    assert list(locked.iterdir()) == []


def test_an_output_folder_that_cannot_be_made_is_a_clear_failure(tmp_path, capsys):
    """Runs as root too: a regular file where a folder of the output path should be (-o at a file itself is a
    usage error, tested below)."""
    photo = write_photo(tmp_path / "p.png")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    assert cli.main([str(photo), "-o", str(blocker / "sub"), "--quiet"]) == cli.EXIT_FAILED
    assert f"FAILED {photo}" in capsys.readouterr().err
    assert blocker.read_text() == "a file"


def test_list_backends_shows_bicubic(capsys):
    assert cli.main(["--list-backends"]) == 0
    assert "bicubic" in capsys.readouterr().out


def _read_until(stream, marker: str, timeout: float) -> str:
    """Characters from ``stream`` up to and including the first ``marker`` (tqdm redraws with \\r, not \\n)."""
    deadline, text = time.monotonic() + timeout, ""
    while marker not in text:
        assert time.monotonic() < deadline, f"no {marker!r} within {timeout} s: {text[-500:]!r}"
        ch = stream.read(1)
        assert ch, f"the process ended before {marker!r}: {text[-500:]!r}"
        text += ch
    return text


def test_ctrl_c_cancels_cleanly_and_leaves_nothing_behind(tmp_path):
    """A real SIGINT to a real process in the middle of a slow (tiny-tile) job."""
    photo = write_photo(tmp_path / "big.png", size=(1200, 900))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "invsr_desktop.cli", str(photo), "--tile", "16", "--scale", "4", "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # SIGINT only once the progress bar is drawn (the handler is installed before it): on a loaded machine the
    # imports alone can take longer than any fixed sleep, and a SIGINT during them is Python's, not the CLI's.
    err_head = _read_until(proc.stderr, " img [", timeout=120)
    assert proc.poll() is None, "the job finished before it could be cancelled; make it slower"
    time.sleep(0.5)  # into the tiles
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    err = err_head + err
    assert proc.returncode == cli.EXIT_CANCELLED, err
    assert "cancelled" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]


def test_a_runner_that_fails_one_image_does_not_stop_the_batch(tmp_path, capsys):
    """A plugin's runner raising (an ORT failure, a bug, sys.exit) or returning NaN fails that file, names the
    backend, and the batch goes on to its summary."""
    from invsr_desktop.engine.backend import BackendSpec
    from invsr_desktop.engine.hookspecs import hookimpl
    from invsr_desktop.engine.registry import Registry

    class Moody:
        """Fails on the images whose top-left pixel says so: raise, exit, NaN; upscales the rest."""

        scale, multiple = 2, 1

        def __call__(self, tile):
            kind = int(round(float(tile[0, 0, 0]) * 10))
            if kind == 1:
                raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")
            if kind == 2:
                raise SystemExit(9)
            out = tile.repeat(2, axis=0).repeat(2, axis=1)
            if kind == 3:
                out[:] = np.nan
            return out

    class Plugin:
        @hookimpl
        def invsr_backends(self):
            return [BackendSpec(id="moody", name="Moody", kind="gan", scales=(2,), build=lambda r: Moody())]

    registry = Registry()
    registry.register(Plugin(), "moody-plugin")
    for i, value in enumerate([0, 25, 51, 76, 0]):  # kinds 0, 1, 2, 3, 0
        PILImage.fromarray(np.full((12, 10, 3), value, np.uint8)).save(tmp_path / f"p{i}.png")
    args = cli.parse_args([str(tmp_path), "--backend", "moody", "--scale", "2", "--quiet", "--tile", "64"])
    code = cli.run(args, registry)
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED
    assert "2 written, 3 failed" in err
    assert 'FAILED {}: Backend "moody": the backend failed: RuntimeError'.format(tmp_path / "p1.png") in err
    assert "SystemExit: 9" in err and "NaN or infinite" in err
    assert sorted(p.name for p in tmp_path.glob("*_x2_moody.png")) == ["p0_x2_moody.png", "p4_x2_moody.png"]


def test_a_backend_that_cannot_start_ends_the_run_at_once(tmp_path, capsys):
    """The CLI runs the app's job queue; the asked backend is built once before the first image, so a broken model
    file is exit 4 with its reason, not one failure per image."""
    from invsr_desktop.engine.backend import BackendSpec
    from invsr_desktop.engine.hookspecs import hookimpl
    from invsr_desktop.engine.registry import Registry

    builds = []

    def broken(request):
        builds.append(request)
        raise RuntimeError("model.onnx: protobuf parsing failed")

    class Plugin:
        @hookimpl
        def invsr_backends(self):
            return [BackendSpec(id="broken", name="Broken", kind="gan", scales=(2,), build=broken)]

    registry = Registry()
    registry.register(Plugin(), "broken-plugin")
    for i in range(3):
        write_photo(tmp_path / f"p{i}.png")
    args = cli.parse_args([str(tmp_path), "--backend", "broken", "--scale", "2", "--quiet"])
    assert cli.run(args, registry) == cli.EXIT_BACKEND
    assert "protobuf parsing failed" in capsys.readouterr().err
    assert len(builds) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["p0.png", "p1.png", "p2.png"]


def test_every_file_the_scan_leaves_out_is_counted(tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    write_photo(photos / "a.png")
    write_photo(photos / "sub" / "b.png")
    PILImage.fromarray(np.zeros((6, 6, 3), np.uint8)).save(photos / "c.gif")
    for i in range(3):
        (photos / f"notes{i}.txt").write_text("x")
    (photos / "dir.png").mkdir()
    (photos / "loop").symlink_to(photos, target_is_directory=True)
    code = cli.main([str(photos), "-r", "-o", str(photos / "sub"), "--scale", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_OK, err
    assert "2 written, 0 failed" in err  # a.png and the GIF (its first frame); sub/ is the output folder
    assert "3 skipped: .txt is not a supported image type" in err
    assert "1 skipped: folder named like an image" in err
    assert "1 skipped: symbolic link to a folder, not followed" in err
    assert "1 skipped: the output folder (its images are results)" in err
    assert (photos / "sub" / "c_x2_bicubic.png").is_file()
    assert not (photos / "sub" / "sub").exists()


def test_an_animated_gif_is_read_as_its_first_frame(tmp_path):
    frames = [PILImage.fromarray(np.full((8, 10, 3), v, np.uint8)) for v in (40, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    image = load_image(tmp_path / "anim.gif")
    assert image.size == (10, 8) and abs(float(image.pixels.mean()) - 40 / 255) < 0.02
    assert any("animation is not kept" in note for note in image.notes)


def test_skip_existing_resumes_a_batch_without_redoing_or_duplicating(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        write_photo(photos / f"p{i}.png", size=(30 + i, 20))
    out = tmp_path / "out"
    assert cli.main([str(photos), "-o", str(out), "--scale", "2", "--quiet"]) == cli.EXIT_OK
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # a crash left p2's result cut short: it is not "done", so it is redone under a free name, never overwritten
    (out / "p2_x2_bicubic.png").write_bytes((out / "p2_x2_bicubic.png").read_bytes()[:200])
    capsys.readouterr()
    assert cli.main([str(photos), "-o", str(out), "--scale", "2", "--quiet", "--skip-existing"]) == cli.EXIT_OK
    err = capsys.readouterr().err
    assert "1 written, 0 failed" in err and "2 skipped: done before" in err
    assert {p.name for p in out.iterdir()} == set(first) | {"p2_x2_bicubic (1).png"}
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in first.items() if not n.startswith("p2"))
    # other settings are another result: a new scale is done, not skipped
    assert cli.main([str(photos), "-o", str(out), "--scale", "3", "--quiet", "--skip-existing"]) == cli.EXIT_OK
    assert "3 written" in capsys.readouterr().err


def test_a_folder_scan_leaves_out_this_programs_results(tmp_path, capsys):
    write_photo(tmp_path / "a.png")
    assert cli.main([str(tmp_path / "a.png"), "--scale", "2", "--quiet"]) == cli.EXIT_OK
    capsys.readouterr()
    assert cli.main([str(tmp_path), "--scale", "2", "--quiet"]) == cli.EXIT_OK
    err = capsys.readouterr().err
    assert "1 written" in err and "1 skipped: a result of this program" in err
    assert not list(tmp_path.glob("a_x2_bicubic_x2_bicubic*"))


def test_sigterm_cancels_like_ctrl_c_with_a_summary(tmp_path):
    photo = write_photo(tmp_path / "big.png", size=(1200, 900))
    proc = subprocess.Popen(
        [sys.executable, "-m", "invsr_desktop.cli", str(photo), "--tile", "16", "--scale", "4", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    err_head = _read_until(proc.stderr, " img [", timeout=120)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    err = err_head + err
    assert proc.returncode == cli.EXIT_CANCELLED, err
    assert "SIGTERM: cancelling" in err and "0 written, 0 failed" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]


def test_a_killed_runs_temporary_files_are_removed_and_live_ones_kept(tmp_path, capsys):
    write_photo(tmp_path / "a.png")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".a_x2_bicubic.png.{dead.pid}-0123abcd.part"
    live = tmp_path / f".other.png.{os.getppid()}-89abcdef.part"  # the test runner's parent: alive
    stale.write_bytes(b"")
    live.write_bytes(b"")
    assert cli.main([str(tmp_path / "a.png"), "--scale", "2", "--quiet"]) == cli.EXIT_OK
    assert "removed 1 unfinished temporary file" in capsys.readouterr().err
    assert not stale.exists() and live.exists()


def test_a_name_taken_while_computing_gets_the_next_copy_not_an_error(tmp_path, monkeypatch):
    """Two processes writing the same folder: the one that finishes second keeps its work under a free name."""
    from invsr_desktop.engine import pipeline

    write_photo(tmp_path / "a.png")
    real = pipeline.Engine.upscale_image

    def slow_rival(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        (tmp_path / "a_x2_bicubic.png").write_bytes(b"the other process's result")
        return out

    monkeypatch.setattr(pipeline.Engine, "upscale_image", slow_rival)
    assert cli.main([str(tmp_path / "a.png"), "--scale", "2", "--quiet"]) == cli.EXIT_OK
    assert (tmp_path / "a_x2_bicubic.png").read_bytes() == b"the other process's result"
    assert load_image(tmp_path / "a_x2_bicubic (1).png").size == (80, 60)


def test_output_at_an_existing_file_is_a_usage_error(tmp_path, capsys):
    write_photo(tmp_path / "a.png")
    (tmp_path / "taken").write_text("a file")
    assert cli.main([str(tmp_path / "a.png"), "-o", str(tmp_path / "taken"), "--quiet"]) == cli.EXIT_USAGE
    assert "-o takes a folder" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "a file"


def test_an_output_folder_that_cannot_take_files_fails_before_any_work(tmp_path, capsys, monkeypatch):
    """A read-only mount (an injected EROFS: root ignores permission bits): every image fails at once, naming the
    reason, and no image is computed."""
    import errno

    from invsr_desktop.engine import pipeline

    for i in range(3):
        write_photo(tmp_path / f"p{i}.png")
    out = tmp_path / "out"
    out.mkdir()
    real_open = os.open

    tmpfile = getattr(os, "O_TMPFILE", 0)  # Linux: the folder's write probe creates a nameless file

    def read_only(path, flags, *args):
        creates = flags & os.O_CREAT or (tmpfile and flags & tmpfile == tmpfile)
        if str(path).startswith(str(out)) and creates:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args)

    computed = []
    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(pipeline.Engine, "upscale_image", lambda *a, **k: computed.append(1))
    assert cli.main([str(tmp_path), "-o", str(out), "--scale", "2", "--quiet"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "0 written, 3 failed" in err and "read-only file system" in err
    assert computed == []


def test_a_small_file_holding_a_huge_image_is_refused_before_decoding(tmp_path, capsys):
    """A 14000 x 14000 PNG (tens of KB, under the pixel limit) at x4 would need over 100 GB: that file fails with
    the figures, the rest of the batch runs, the summary is printed."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    side = 14000
    row = b"\x00" + bytes(side)  # filter byte + grey pixels
    body = zlib.compress(row * side, 1)
    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    write_photo(tmp_path / "small.png")
    code = cli.main([str(tmp_path), "--scale", "4", "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED
    assert "56000 x 56000 pixels" in err and "1 written, 1 failed" in err


def test_help_has_examples_and_exit_codes_and_the_listing_uses_flag_values(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--skip-existing" in out and "130 cancelled" in out
    from invsr_desktop.engine.backend import flag_value

    assert [flag_value(v) for v in (True, False, 0.5, 4, "auto")] == ["on", "off", "0.5", "4", "auto"]
    assert cli.main(["--list-backends"]) == cli.EXIT_OK
    listing = capsys.readouterr().out
    assert "tta=off" in listing and "tta=False" not in listing


@pytest.mark.slow
def test_a_batch_killed_half_way_resumes_without_redoing_or_duplicating(tmp_path):
    """SIGKILL (no handler can run) after some results exist, then the same command with --skip-existing."""
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    for i in range(6):
        write_photo(photos / f"p{i}.png", size=(300, 200 + i))
    command = [sys.executable, "-m", "invsr_desktop.cli", str(photos), "-o", str(out), "--scale", "2",
               "--tile", "16", "--threads", "1", "--quiet", "--skip-existing"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.png"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the batch finished before it could be killed; make it slower"
    proc.kill()
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert 2 <= len(first) < 6
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == cli.EXIT_OK, done.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"p{i}_x2_bicubic.png" for i in range(6)]  # no " (1)" copies, no .part left
    assert all((out / n).stat().st_mtime_ns == t for n, t in first.items())  # nothing redone
    assert f"{len(first)} skipped: done before" in done.stderr
