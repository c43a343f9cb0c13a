"""The committed bicubic graph is what ``plugins.bicubic.graph`` builds, and one file serves every scale."""

from __future__ import annotations

import numpy as np

from invsr_desktop.engine.pipeline import Engine, EngineOptions
from plugins.bicubic import MODEL
from plugins.bicubic.graph import bicubic_graph


def test_the_committed_model_is_the_built_graph():
    assert MODEL.read_bytes() == bicubic_graph(), "run: python -m plugins.bicubic.graph"


def test_any_scale_from_one_file_keeps_every_pixel():
    engine = Engine(options=EngineOptions(provider="cpu", threads=1))
    pixels = np.random.default_rng(0).random((7, 9, 3), dtype=np.float32)
    for scale, shape in ((2, (14, 18)), (3, (21, 27)), (2.5, (18, 22))):
        assert engine.upscale_array(pixels, "bicubic", scale).shape[:2] == shape
    flat = np.full((6, 6, 3), 0.25, np.float32)
    np.testing.assert_allclose(engine.upscale_array(flat, "bicubic", 4), 0.25, atol=1e-6)
