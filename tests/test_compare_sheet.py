"""The backend comparison sheet: parameters parsed, a real run through the engine, the PNG written."""

from __future__ import annotations

from PIL import Image

from model_export.compare_sheet import main, parse_backend, psnr_rgb


def test_parse_backend_reads_typed_parameters():
    assert parse_backend("bicubic") == ("bicubic", {})
    assert parse_backend("diffusion:noise=0.5,steps=8,model=auto") == (
        "diffusion", {"noise": 0.5, "steps": 8, "model": "auto"})


def test_sheet_of_bicubic_on_the_sample(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["--scale", "2", "--backend", "bicubic", "--crop", "16", "--threads", "1", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > Image.open(out).size[1]  # a row of panels
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("bicubic: PSNR ") and 20 < float(line.split()[2]) < 40


def test_psnr_rgb_of_identical_images_is_infinite():
    import numpy as np

    a = np.random.default_rng(0).random((8, 8, 3))
    assert psnr_rgb(a, a) == float("inf") and psnr_rgb(a, 1 - a) < 10
