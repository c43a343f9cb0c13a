"""The engine's pipeline around a runner: native scale vs requested scale, grey, alpha (both modes)."""

from __future__ import annotations

import numpy as np
import pytest

from invsr_desktop.engine.backend import BackendSpec
from invsr_desktop.engine.hookspecs import hookimpl
from invsr_desktop.engine.pipeline import Engine, EngineOptions
from invsr_desktop.engine.registry import Registry


class Nearest2:
    """A native-x2 backend (numpy nearest neighbour), so resampling to other scales is the engine's doing."""

    scale, multiple = 2, 1

    def __init__(self) -> None:
        self.tiles = 0

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        self.tiles += 1
        return tile.repeat(2, axis=0).repeat(2, axis=1)


class Plugin:
    @hookimpl
    def invsr_backends(self):
        return [BackendSpec(id="nearest2", name="Nearest x2", kind="interpolation", scales=(2,), build=lambda r: Nearest2())]


@pytest.fixture()
def engine() -> Engine:
    registry = Registry()
    registry.register(Plugin(), "test")
    return Engine(registry, EngineOptions(threads=1))


@pytest.mark.parametrize("scale, native", [(2, 2), (1.5, 2), (3, 2), (1, 2)])
def test_requested_scale_comes_from_the_nearest_native_one(engine, scale, native):
    image = np.random.default_rng(0).random((21, 34, 3), dtype=np.float32)
    out = engine.upscale_array(image, "nearest2", scale)
    assert out.shape == (round(21 * scale), round(34 * scale), 3)
    assert engine.runner("nearest2", scale)[1].scale == native
    assert abs(float(out.mean()) - float(image.mean())) < 0.01


def test_grey_stays_grey_and_alpha_is_kept_in_both_modes(engine):
    rng = np.random.default_rng(1)
    grey_alpha = rng.random((16, 12, 2), dtype=np.float32)
    out = engine.upscale_array(grey_alpha, "nearest2", 2)
    assert out.shape == (32, 24, 2)
    np.testing.assert_allclose(out[..., 0], grey_alpha[..., 0].repeat(2, 0).repeat(2, 1), atol=1e-5)
    engine.configure(EngineOptions(threads=1, alpha="backend"))
    rgba = rng.random((16, 12, 4), dtype=np.float32)
    out = engine.upscale_array(rgba, "nearest2", 2)
    np.testing.assert_allclose(out[..., 3], rgba[..., 3].repeat(2, 0).repeat(2, 1), atol=1e-5)


def test_a_shrinking_backend_is_refused_as_an_upscaler():
    class Down:
        @hookimpl
        def invsr_backends(self):
            return [BackendSpec(id="down", name="Down", kind="inn", scales=(2,), direction="down",
                                build=lambda r: Nearest2())]  # fmt: skip

    registry = Registry()
    registry.register(Down(), "down")
    with pytest.raises(ValueError, match="shrinks images"):
        Engine(registry).upscale_array(np.zeros((4, 4, 3), np.float32), "down", 2)


def test_a_result_too_large_for_memory_is_refused_before_any_work():
    from invsr_desktop.engine.pipeline import ImageTooLargeForMemoryError, check_memory

    with pytest.raises(ImageTooLargeForMemoryError, match=r"56000 x 56000 pixels \(3136 megapixels\).*GB is free"):
        check_memory((56000, 56000), available=16 * 2**30)  # a 14000 x 14000 PNG at x4
    check_memory((6000, 8000), available=16 * 2**30)  # a 12 MP photo x2 fits
