"""``python -m model_export.commands.precision_check`` on small photos and the tiny INN models: the table, the round trip,
and what it concludes when the CPU is said to run bf16 (this one does not: OpenVINO then compiles f32)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from invsr_desktop.engine import openvino_sessions
from model_export.commands.precision_check import main, psnr_u8


def test_psnr_is_measured_on_the_8_bit_result():
    a = np.full((4, 4, 3), 0.5, np.float32)
    assert psnr_u8(a, a + 1e-4) == float("inf")  # the same 8-bit file
    assert 40 < psnr_u8(a, a + 2 / 255) < 43


@pytest.mark.skipif(openvino_sessions.openvino_core() is None, reason="OpenVINO not installed")
def test_the_check_runs_every_upscaler_and_the_round_trip(models_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(openvino_sessions, "bf16_supported", lambda core: True)
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = (rng.random((8, 10, 3)) * 255).astype(np.uint8)
        PILImage.fromarray(pixels).resize((40, 48), PILImage.BICUBIC).save(folder / f"p{i}.png")
    assert main([str(folder), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "fast = bf16" in out
    assert "| inn |" in out and "| yes |" in out
    assert "INN x4 round trip" in out and "tolerance 0.05 dB" in out
