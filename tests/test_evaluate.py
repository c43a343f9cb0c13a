"""invsr-eval: the published bicubic table (when the benchmarks are present) and the command on generated images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_export import evaluate as ev

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(os.environ.get("INVSR_BENCHMARKS") or Path(__file__).resolve().parents[2] / "shared/data/benchmarks")

# Bicubic under the literature's protocol (SRCNN / VDSR / LapSRN tables): PSNR (dB) / SSIM on Y.
PUBLISHED = {
    ("Set5", 2): (33.66, 0.9299),
    ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688),
    ("Set14", 3): (27.55, 0.7742),
    ("Set14", 4): (26.00, 0.7027),
}


def _engine_or_skip():
    try:
        from invsr_desktop.engine.pipeline import Engine
    except ImportError as exc:  # the engine is part of this project; this only guards a half-installed tree
        pytest.skip(f"the engine cannot be imported: {exc}")
    return Engine()


@pytest.fixture(scope="module")
def engine():
    return _engine_or_skip()


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_reproduces_the_published_table(scale, engine):
    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmark folder ../shared/data/benchmarks not found ({BENCHMARKS}); set INVSR_BENCHMARKS")
    folders = [BENCHMARKS / "Set5", BENCHMARKS / "Set14"]
    for folder in folders:
        if not folder.is_dir():
            pytest.skip(f"{folder} not found; set INVSR_BENCHMARKS to the folder holding Set5 and Set14")
    report = ev.evaluate("bicubic", scale, folders, {}, "y", with_niqe=False, with_lpips=False, engine=engine)
    for s in report["sets"]:
        want_psnr, want_ssim = PUBLISHED[(s["name"], scale)]
        got_psnr, got_ssim = s["mean"]["psnr"], s["mean"]["ssim"]
        assert abs(got_psnr - want_psnr) <= 0.01, f"{s['name']} x{scale}: PSNR {got_psnr:.4f} vs {want_psnr}"
        assert abs(got_ssim - want_ssim) <= 0.001, f"{s['name']} x{scale}: SSIM {got_ssim:.5f} vs {want_ssim}"
        assert len(s["images"]) == (5 if s["name"] == "Set5" else 14)


def _write_images(folder: Path) -> None:
    """Two generated images: an RGB one with an odd size (mod-crop) and a grey one."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:103, 0:110]
    rgb = np.stack([128 + 100 * np.sin(x / 5.0), 128 + 100 * np.cos(y / 7.0), (x * y) % 255], axis=2)
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "a_colour.png")
    grey = np.clip(128 + 90 * np.sign(np.sin(x / 6.0 + y / 9.0)) + rng.normal(0, 6, x.shape), 0, 255)
    Image.fromarray(grey.astype(np.uint8)[:100, :104], mode="L").save(folder / "b_grey.png")
    (folder / "notes.txt").write_text("not an image")


def test_cli_writes_reports_and_sheets(tmp_path, engine, capsys):
    images = tmp_path / "mini"
    _write_images(images)
    out = tmp_path / "out"
    code = ev.main(["--backend", "bicubic", "--scale", "2", "--images", str(images), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"] == "y" and report["scale"] == 2 and report["backend"] == "bicubic"
    (s,) = report["sets"]
    assert s["name"] == "mini" and [r["image"] for r in s["images"]] == ["a_colour.png", "b_grey.png"]
    assert s["images"][0]["size"] == [110, 102]  # mod-cropped to a multiple of 2
    assert s["images"][1]["grey"] is True
    for r in s["images"]:
        assert 15 < r["psnr"] < 60 and 0 < r["ssim"] <= 1
        assert (out / r["sheet"]).is_file()
    md = (out / "report.md").read_text()
    assert "Protocol: `y`" in md and "Engine provider:" in md
    assert ev.NIQE_LABEL in md
    if not report["lpips_available"]:
        assert "LPIPS unavailable: " in md
    with Image.open(out / s["images"][0]["sheet"]) as sheet:
        assert sheet.width > 3 * 96


def test_stlpips_columns_for_the_backend_and_bicubic(tmp_path, engine):
    pytest.importorskip("stlpips_pytorch", reason="the [train] extra's stlpips-pytorch wheel is not installed")
    images = tmp_path / "mini"
    _write_images(images)
    report = ev.evaluate("inn", 2, [images], None, "rgb", out_dir=tmp_path / "o", with_niqe=False)
    assert report["stlpips_available"] and report["stlpips"].startswith("ST-LPIPS (alex, vST0.0) on RGB")
    (s,) = report["sets"]
    for r in s["images"]:
        assert 0.0 < r["stlpips"] < 1.0 and 0.0 < r["bicubic_stlpips"] < 1.0
    assert s["mean"]["stlpips"] == pytest.approx(np.mean([r["stlpips"] for r in s["images"]]))
    md = (tmp_path / "o" / "report.md").read_text()
    assert "| ST-LPIPS inn | ST-LPIPS bicubic |" in md and "ST-LPIPS (alex, vST0.0)" in md
    skipped = ev.evaluate("bicubic", 2, [images], None, "y", with_niqe=False, with_lpips=False)
    assert "stlpips" not in skipped["sets"][0]["images"][0] and not skipped["stlpips_available"]


def test_rgb_protocol_and_params_in_the_header(tmp_path, engine):
    images = tmp_path / "mini"
    _write_images(images)
    report = ev.evaluate("bicubic", 3, [images], None, "rgb", out_dir=tmp_path / "o", with_niqe=False)
    assert report["protocol"] == "rgb" and "EDSR" in report["protocol_description"]
    assert all(np.isfinite(r["psnr"]) for r in report["sets"][0]["images"])
    assert not (tmp_path / "o" / "sheets").exists()  # sheets only when asked
    assert (tmp_path / "o" / "report.md").is_file()


def test_degrade_camera_scores_every_set_twice_side_by_side(tmp_path, engine, capsys):
    images = tmp_path / "mini"
    _write_images(images)
    out = tmp_path / "o"
    args = ["--backend", "bicubic", "--scale", "2", "--images", str(images), "--out", str(out), "--no-niqe", "--no-lpips"]
    assert ev.main([*args, "--degrade", "camera"]) == 0  # --protocol defaults to rgb with --degrade
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"] == "rgb" and report["degrade"] == "camera" and "JPEG q75" in report["degrade_description"]
    clean, camera = report["sets"]
    assert (clean["name"], clean["degradation"], camera["name"], camera["degradation"]) == (
        "mini", "clean", "mini (camera)", "camera")
    assert [r["image"] for r in camera["images"]] == [r["image"] for r in clean["images"]]
    assert camera["mean"]["psnr"] < clean["mean"]["psnr"] - 1.0  # blur, noise and JPEG cost bicubic dB
    md = (out / "report.md").read_text()
    assert "| mini (camera) | 2 |" in md and "Sets marked (camera): camera-like LR" in md
    assert (out / "sheets" / "mini-camera_a_colour.png").is_file()
    again = ev.evaluate("bicubic", 2, [images], None, "rgb", degrade="camera", with_niqe=False, with_lpips=False)
    assert again["sets"][1]["mean"]["psnr"] == camera["mean"]["psnr"]  # seeded: the same pixels every run
    assert ev.main([*args, "--degrade", "camera", "--protocol", "y"]) == 2
    assert "use --protocol rgb" in capsys.readouterr().err


def test_no_images_is_an_error_with_a_clear_message(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    code = ev.main(["--backend", "bicubic", "--scale", "2", "--images", str(empty), "--out", str(tmp_path / "o")])
    assert code != 0
    assert f"no images in {empty}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    code = ev.main(["--backend", "bicubic", "--scale", "2", "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code != 0 and "not found" in capsys.readouterr().err


def test_unknown_backend_and_bad_param(tmp_path, engine, capsys):
    images = tmp_path / "mini"
    _write_images(images)
    args = ["--scale", "2", "--images", str(images), "--out", str(tmp_path / "o"), "--no-niqe", "--no-sheets"]
    assert ev.main(["--backend", "no-such-backend", *args]) != 0
    err = capsys.readouterr().err
    assert "no-such-backend" in err and "bicubic" in err  # the registry lists what is available
    assert ev.main(["--backend", "bicubic", "--param", "steps=3", *args]) != 0
    assert "steps" in capsys.readouterr().err


def test_entry_point_runs_as_a_command(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "model_export.evaluate", "--backend", "bicubic", "--scale", "4",
         "--images", str(empty), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert proc.returncode == ev.EXIT_NO_INPUT
    assert "invsr-eval: error: no images in" in proc.stderr


class _NearestPlugin:
    """A test backend registered like any plugin: nearest-neighbour upscaling in numpy, with one parameter."""

    from invsr_desktop.engine.hookspecs import hookimpl

    @hookimpl
    def invsr_backends(self):
        from invsr_desktop.engine.backend import BackendSpec, Param

        class Runner:
            multiple = 1

            def __init__(self, scale, gain):
                self.scale, self.gain = scale, gain

            def __call__(self, tile):
                s = int(self.scale)
                return np.clip(tile.repeat(s, axis=0).repeat(s, axis=1) * self.gain, 0, 1)

        return [
            BackendSpec(
                id="nearest-test",
                name="Nearest (test)",
                kind="interpolation",
                scales=(2, 3, 4),
                build=lambda req: Runner(req.scale, req.params["gain"]),
                params=(Param("gain", float, 1.0, 0.5, 2.0),),
            )
        ]


def test_another_backend_is_compared_with_bicubic(tmp_path, engine):
    from invsr_desktop.engine.pipeline import Engine
    from invsr_desktop.engine.registry import Registry

    registry = Registry()
    registry.load_entry_points()  # the built-in bicubic
    registry.register(_NearestPlugin(), "nearest-test")
    images = tmp_path / "mini"
    _write_images(images)
    report = ev.evaluate(
        "nearest-test", 2, [images], {"gain": "1.0"}, "y", out_dir=tmp_path / "o", sheets=True,
        with_niqe=False, engine=Engine(registry=registry),
    )
    assert report["params"] == {"gain": 1.0}
    for r in report["sets"][0]["images"]:
        assert r["psnr"] < r["bicubic_psnr"]  # nearest neighbour loses to bicubic on smooth content
    md = (tmp_path / "o" / "report.md").read_text()
    assert "PSNR nearest-test" in md and "PSNR bicubic" in md and "gain=1.0" in md
