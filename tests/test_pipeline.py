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
                                restored_by="up", build=lambda r: Nearest2())]  # fmt: skip

    registry = Registry()
    registry.register(Down(), "down")
    with pytest.raises(ValueError, match="shrinks images"):
        Engine(registry).upscale_array(np.zeros((4, 4, 3), np.float32), "down", 2)


def test_a_shrinking_backend_must_name_its_restorer():
    """The marker in a shrunk file names the backend that restores it: a shrinker without one is a broken plugin,
    reported at start-up, not a file that can never be restored."""
    with pytest.raises(ValueError, match="does not say which backend restores them"):
        BackendSpec(id="down", name="Down", kind="inn", scales=(2,), direction="down", build=lambda r: Nearest2())


def test_a_result_too_large_for_memory_is_refused_before_any_work():
    from invsr_desktop.engine.pipeline import ImageTooLargeForMemoryError, check_memory

    with pytest.raises(ImageTooLargeForMemoryError, match=r"56000 x 56000 pixels \(3136 megapixels\).*GB is free"):
        check_memory((56000, 56000), available=16 * 2**30)  # a 14000 x 14000 PNG at x4
    check_memory((6000, 8000), available=16 * 2**30)  # a 12 MP photo x2 fits


def test_the_memory_check_counts_what_the_path_that_runs_needs(monkeypatch):
    """A result that streams into the file's integers needs 16 bytes a pixel (24 with alpha, resampled in float),
    not the float path's 40: with memory for 20, an RGB photo for a file runs, the same photo with alpha is refused,
    and so is the RGB photo as floats."""
    import invsr_desktop.engine.pipeline as pipeline

    engine = Engine(options=EngineOptions(threads=1, precision="fp32"))
    monkeypatch.setattr(pipeline, "available_memory", lambda: 100 * 150 * 20)  # 20 bytes a result pixel
    rgb = np.random.default_rng(4).random((50, 75, 3), dtype=np.float32)
    assert engine.upscale_array(rgb, "bicubic", 2, depth=8).dtype == np.uint8
    with pytest.raises(pipeline.ImageTooLargeForMemoryError):
        engine.upscale_array(np.concatenate([rgb, rgb[..., :1]], axis=2), "bicubic", 2, depth=8)
    with pytest.raises(pipeline.ImageTooLargeForMemoryError):
        engine.upscale_array(rgb, "bicubic", 2)


@pytest.mark.parametrize("backend, scale", [("bicubic", 2), ("bicubic", 2.5), ("esrgan-faithful-x4", 4),
                                            ("esrgan-faithful-x4", 2), ("esrgan-faithful-x4", 3), ("inn", 2)])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("grey, alpha", [(False, False), (True, False), (False, True), (True, True)])
def test_a_file_written_from_rounded_tiles_is_the_file_the_float_result_gives(tmp_path, backend, scale, bits, grey,
                                                                              alpha):
    """run_file rounds tiles into the file's integers as they finish (and area-reduces a x4 model's result to x2
    band by band, and takes a grey photo's luma): the file is the one the float32 result, resampled and rounded at
    save, gives, bit for bit. A x3 from a x4 model is not a whole reduction and takes the float path; both must
    agree all the same."""
    from invsr_desktop.engine.imageio import Image, load_image, save_image
    from invsr_desktop.engine.task import Task

    engine = Engine(options=EngineOptions(threads=1, precision="fp32", tile=24))
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:37, 0:53].astype(np.float32)
    pixels = np.clip(0.5 + 0.3 * np.sin(x / 4)[..., None] * np.cos(y / 7)[..., None]
                     + 0.1 * rng.random((37, 53, 3)), 0, 1).astype(np.float32)  # fmt: skip
    if grey:
        pixels = pixels[..., 1:2]
    if alpha:
        pixels = np.concatenate([pixels, np.clip(np.sin(x / 6)[..., None] * 0.6 + 0.5, 0, 1)], axis=2)
    source = tmp_path / "photo.png"
    save_image(Image(pixels, bit_depth=bits), source)
    image = load_image(source)
    assert image.is_grey == grey and image.has_alpha == alpha
    task = Task.upscale(backend, scale)
    written = engine.run_file(source, tmp_path / "tiles.png", task)
    floats = engine.upscale_array(image.pixels, backend, scale)
    assert floats.dtype == np.float32
    reference = save_image(image.with_pixels(floats), tmp_path / "floats.png")
    a, b = load_image(written), load_image(reference)
    assert a.bit_depth == b.bit_depth == bits and a.pixels.shape == (round(37 * scale), round(53 * scale), 3 - 2 * grey + alpha)
    assert np.array_equal(a.pixels, b.pixels)


@pytest.mark.parametrize("backend, scale, native", [("bicubic", 2, 2), ("esrgan-faithful-x4", 2, 4)])
def test_a_file_result_is_never_held_in_float32(tmp_path, backend, scale, native):
    """Issue 22's memory bound: run_file's peak of traced (numpy) memory stays under the size of the float32 result
    at the runner's native scale, which it used to hold whole (with the input and a rounded copy: ~1.5 times it);
    the tiles now go into the 8-bit result as they finish (measured: 0.68 and 0.29 of it). (Tracing sees numpy's
    and Python's allocations, not the runtime's own.)"""
    import tracemalloc

    from invsr_desktop.engine.imageio import Image, save_image
    from invsr_desktop.engine.task import Task

    engine = Engine(options=EngineOptions(threads=1, precision="fp32", tile=48))
    h, w = 320, 480
    source = tmp_path / "photo.png"
    save_image(Image(np.random.default_rng(3).random((h, w, 3), dtype=np.float32)), source)
    engine.run_file(source, tmp_path / "warm.png", Task.upscale(backend, scale))  # build the runner first
    float_result = h * native * w * native * 3 * 4
    tracemalloc.start()
    try:
        engine.run_file(source, tmp_path / "out.png", Task.upscale(backend, scale))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.8 * float_result, f"peak {peak / 1e6:.2f} MB vs a float32 result of {float_result / 1e6:.2f} MB"


def test_an_upscaler_offers_the_whole_scales_below_its_native_one():
    """What the app's scale picker lists: a x4 model also serves x2 and x3 (the engine reduces its result); a x2/x4
    backend adds x3; a shrinker offers only its factors."""
    spec = lambda scales, direction="up": BackendSpec(id="b", name="B", kind="k", scales=scales,  # noqa: E731
                                                      build=lambda r: None, direction=direction,
                                                      restored_by="b" if direction == "down" else "")  # fmt: skip
    assert spec((4,)).offered_scales() == (2, 3, 4)
    assert spec((2, 4)).offered_scales() == (2, 3, 4)
    assert spec((2,)).offered_scales() == (2,)
    assert spec((2, 4), "down").offered_scales() == (2, 4)
    assert spec((4,)).native_scale_for(2) == 4.0


class WholeX2:
    """A whole-image runner (as the diffusion sampler): one run_whole call, nearest x2 through the tiler's map."""

    scale, multiple, whole_image = 2, 1, True

    def __call__(self, tile: np.ndarray) -> np.ndarray:  # never called tile by tile
        raise AssertionError("a whole-image runner is given the whole image")

    def run_whole(self, image: np.ndarray, tiler) -> np.ndarray:
        up = image.repeat(2, axis=0).repeat(2, axis=1)
        return tiler.map(lambda t, origin: t * 0.5 + 0.25, up)


class WholePlugin:
    @hookimpl
    def invsr_backends(self):
        return [BackendSpec(id="whole2", name="Whole x2", kind="diffusion", scales=(2,), build=lambda r: WholeX2())]


def test_a_whole_image_runner_writes_its_file_through_the_rounded_path(tmp_path):
    """A whole-image runner's float result is rounded into the file's integers too (once, at the end)."""
    from invsr_desktop.engine.imageio import Image, load_image, save_image
    from invsr_desktop.engine.task import Task

    registry = Registry()
    registry.register(WholePlugin(), "test")
    engine = Engine(registry, EngineOptions(threads=1, tile=16))
    pixels = np.random.default_rng(5).random((21, 30, 3), dtype=np.float32)
    save_image(Image(pixels), tmp_path / "p.png")
    image = load_image(tmp_path / "p.png")
    out = load_image(engine.run_file(tmp_path / "p.png", tmp_path / "out.png", Task.upscale("whole2", 2)))
    expected = np.round((image.pixels.repeat(2, axis=0).repeat(2, axis=1) * 0.5 + 0.25) * 255) / 255
    assert out.pixels.shape == (42, 60, 3) and np.abs(out.pixels - expected).max() < 1e-6
