"""camera_parts: each step of the camera-like LR alone, scored for a real backend on generated photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from model_export.commands import camera_parts


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    y, x = np.mgrid[0:96, 0:120]
    rgb = np.stack([128 + 100 * np.sin(x / 5.0), 128 + 100 * np.cos(y / 7.0), (x * y) % 255], axis=2)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / "a.png")
    Image.fromarray(np.full((64, 64), 90, np.uint8), mode="L").save(folder / "grey.png")  # skipped
    return folder


def test_every_step_is_scored_and_the_whole_protocol_is_worst_for_bicubic(photos, tmp_path, capsys):
    pytest.importorskip("stlpips_pytorch", reason="the [train] extra's stlpips-pytorch wheel is not installed")
    out = tmp_path / "parts.json"
    assert camera_parts.main(["--backend", "bicubic", "--images", str(photos), "--json", str(out)]) == 0
    result = json.loads(out.read_text())[str(photos)]["bicubic"]
    assert list(result) == ["clean", "blur", "noise", "jpeg", "all"]
    for step in ("blur", "noise", "jpeg"):  # each step alone degrades the clean LR's output ...
        assert result[step]["psnr"] < result["clean"]["psnr"]
    assert result["all"]["psnr"] < min(result[s]["psnr"] for s in ("blur", "noise", "jpeg"))  # ... all the more so
    assert result["all"]["stlpips"] > result["clean"]["stlpips"]
    assert "bicubic" in capsys.readouterr().out


def test_an_unknown_backend_is_a_clear_error(photos, capsys):
    pytest.importorskip("stlpips_pytorch", reason="the [train] extra's stlpips-pytorch wheel is not installed")
    assert camera_parts.main(["--backend", "no-such-model", "--images", str(photos)]) == 2
    assert "no-such-model" in capsys.readouterr().err
