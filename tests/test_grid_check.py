"""The lattice-energy number behind "no checkerboard or grid texture"."""

from pathlib import Path

import numpy as np
from PIL import Image

from model_export.commands.grid_check import grid_score, lattice_ratio

SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "samples" / "astronaut.png"


def test_a_faint_period_four_pattern_scores_far_above_the_photo_and_grain_does_not():
    hr = np.asarray(Image.open(SAMPLE).convert("RGB"), dtype=np.float64)
    y, x = np.mgrid[0 : hr.shape[0], 0 : hr.shape[1]]
    lattice = 2.0 * ((x % 4 == 0) ^ (y % 4 == 0))[..., None]  # 2 grey levels: at the edge of seeing it
    grain = np.random.default_rng(1).normal(0, 2.0, hr.shape)  # grain of the same strength, no lattice
    assert grid_score(hr + lattice, hr, 4) > 5
    assert grid_score(hr + grain, hr, 4) < 2
    assert grid_score(hr, hr, 4) == 1.0
    grey = hr.mean(axis=2)
    assert abs(lattice_ratio(np.dstack([grey] * 3), 4) / lattice_ratio(grey, 4) - 1) < 0.01  # RGB: its Y
