"""The sharpness numbers: blur lowers the energy, grain raises the energy but not the match, a real engine run."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from model_export.commands.sharpness import edge_contrast, main, sharpness

SAMPLE = Path(__file__).resolve().parent.parent / "resources" / "samples" / "astronaut.png"


def _photo() -> np.ndarray:
    img = cv2.cvtColor(cv2.imread(str(SAMPLE)), cv2.COLOR_BGR2RGB).astype(np.float64) / 255.0
    return img[:128, :128]


def test_blur_and_grain_are_told_apart():
    hr = _photo()
    assert np.allclose(sharpness(hr, hr), (1.0, 1.0))
    blurred = cv2.GaussianBlur(hr, (0, 0), 1.5)
    grainy = blurred + np.random.default_rng(0).normal(0, 0.03, hr.shape)
    e_blur, m_blur = sharpness(blurred, hr)
    e_grain, m_grain = sharpness(grainy, hr)
    assert e_blur < 0.6 and m_blur > 0.3
    assert e_grain > e_blur and m_grain < m_blur  # more "energy", less of it where the HR has it
    assert sharpness(np.zeros_like(hr), hr) == (0.0, 0.0)


def test_edge_steepness_ignores_grain():
    hr = _photo()
    blurred = cv2.GaussianBlur(hr, (0, 0), 1.5)
    grainy = blurred + np.random.default_rng(0).normal(0, 0.03, hr.shape)
    sharpened = hr + 0.8 * (hr - cv2.GaussianBlur(hr, (0, 0), 1.0))
    assert np.isclose(edge_contrast(hr, hr), 1.0)
    assert edge_contrast(blurred, hr) < 0.8
    assert abs(edge_contrast(grainy, hr) - edge_contrast(blurred, hr)) < 0.05  # grain averages out
    assert edge_contrast(sharpened, hr) > 1.1
    assert edge_contrast(np.zeros_like(hr), hr) == 0.0


def test_bicubic_run_through_the_engine(capsys):
    assert main(["--backend", "bicubic", "--image", str(SAMPLE), "--scale", "2", "--threads", "1"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    energy, matched, edge = (float(v) for v in row.strip("| ").split(" | ")[1:])
    assert 0.2 < energy < 1.0 and 0.3 < matched < 1.0 and 0.3 < edge < 1.0
