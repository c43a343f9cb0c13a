"""The backend comparison sheet: parameters parsed, a real run through the engine, the PNG written."""

from __future__ import annotations

from PIL import Image

from model_export.commands.compare_sheet import degrade_lr, lr_description, main, parse_backend, psnr_rgb


def test_parse_backend_reads_typed_parameters():
    assert parse_backend("bicubic") == ("bicubic", {})
    assert parse_backend("diffusion:noise=0.5,steps=8,model=auto") == (
        "diffusion", {"noise": 0.5, "steps": 8, "model": "auto"})


def test_sheet_of_bicubic_on_the_sample(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["--scale", "2", "--backend", "bicubic", "--crop", "16", "--threads", "1", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > Image.open(out).size[1]  # a row of panels
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "LR: bicubic ÷2"
    assert lines[1].startswith("bicubic: PSNR ") and 20 < float(lines[1].split()[2]) < 40


def test_a_phone_photo_lr_is_noisy_then_loses_more_at_lower_jpeg_quality():
    import numpy as np

    y, x = np.mgrid[0:48, 0:48] / 48.0
    lr = np.stack([y, x, (x + y) / 2], axis=-1).astype(np.float32)
    assert degrade_lr(lr) is lr  # nothing asked, nothing changed
    noisy = degrade_lr(lr, noise=5.0)
    assert np.array_equal(noisy, degrade_lr(lr, noise=5.0))  # seeded
    assert 2.0 < np.std(noisy - lr) * 255 < 8.0
    q90, q30 = (psnr_rgb(degrade_lr(lr, noise=5.0, jpeg=q), noisy) for q in (90, 30))  # JPEG after the noise
    assert q30 < q90 < 45.0
    assert lr_description(4, 5.0, 75) == "LR: bicubic ÷4 + noise σ=5 + JPEG q75"


def test_psnr_rgb_of_identical_images_is_infinite():
    import numpy as np

    a = np.random.default_rng(0).random((8, 8, 3))
    assert psnr_rgb(a, a) == float("inf") and psnr_rgb(a, 1 - a) < 10
