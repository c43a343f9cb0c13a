"""Tiling: tiled output matches untiled output, padding to a model's multiple, OOM halving that resumes."""

from __future__ import annotations

import numpy as np
import pytest

from invsr_desktop.engine.errors import BackendError, CancelledError
from invsr_desktop.engine.sessions import SessionPool
from invsr_desktop.engine.tiling import upscale_tiled
from plugins.bicubic import build
from invsr_desktop.engine.backend import BuildRequest


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A smooth-plus-texture test image, not square and not a multiple of anything."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:157, 0:203].astype(np.float32)
    base = np.stack([np.sin(x / 9) * np.cos(y / 13), np.sin((x + y) / 17), np.cos(x / 5)], axis=2)
    return np.clip(0.5 + 0.35 * base + 0.1 * rng.random((157, 203, 3)), 0, 1).astype(np.float32)


def bicubic(scale: float):
    return build(BuildRequest(scale=scale, params={}, sessions=SessionPool()))


class ConvRunner:
    """A local 5x5 filter then nearest x2: a stand-in for a conv net with a receptive field, in numpy."""

    scale = 2
    multiple = 4

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        assert tile.shape[0] % self.multiple == 0 and tile.shape[1] % self.multiple == 0
        self.calls.append(tile.shape[:2])
        padded = np.pad(tile, ((2, 2), (2, 2), (0, 0)), mode="reflect")
        smooth = sum(padded[dy : dy + tile.shape[0], dx : dx + tile.shape[1]] for dy in range(5) for dx in range(5))
        sharp = 2 * tile - smooth / 25
        return sharp.repeat(2, axis=0).repeat(2, axis=1)


@pytest.mark.parametrize("scale", [2, 3, 4, 2.5])
def test_tiled_bicubic_matches_untiled(photo, scale):
    runner = bicubic(scale)
    whole = upscale_tiled(photo, runner, tile=4096)
    tiled = upscale_tiled(photo, runner, tile=48, overlap=16)
    assert whole.shape == (round(157 * scale), round(203 * scale), 3)
    assert tiled.shape == whole.shape
    assert np.abs(tiled - whole).max() < 1e-4


def test_tiled_conv_matches_untiled_away_from_reflection(photo):
    runner = ConvRunner()
    whole = upscale_tiled(photo, runner, tile=4096)
    tiled = upscale_tiled(photo, runner, tile=40, overlap=8)
    assert all(h % 4 == 0 and w % 4 == 0 for h, w in runner.calls)
    assert psnr(tiled, whole) > 45  # a receptive field wider than the ramp leaves a trace: bounded, no seams


def test_out_of_memory_halves_the_tile_and_resumes_at_the_current_row(photo):
    runner = ConvRunner()
    limit = {"side": 64}
    calls_before_oom: list[tuple[int, int]] = []

    def flaky(tile: np.ndarray) -> np.ndarray:
        if max(tile.shape[:2]) > limit["side"] and len(runner.calls) >= 3:
            calls_before_oom.extend(runner.calls)
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for 12 MB")
        return runner(tile)

    flaky.scale, flaky.multiple = 2, 4
    out = upscale_tiled(photo, flaky, tile=128, overlap=8)
    reference = upscale_tiled(photo, ConvRunner(), tile=4096)
    big = [c for c in runner.calls if max(c) > 64]
    small = [c for c in runner.calls if max(c) <= 64]
    assert big and small, "some tiles ran at the first size, the rest at the halved size"
    assert runner.calls[: len(big)] == big, "the halved size is used from the failure on, not from the start"
    assert psnr(out, reference) > 45


def test_errors_other_than_memory_are_not_swallowed(photo):
    def broken(tile):
        raise RuntimeError("shape mismatch")

    broken.scale, broken.multiple = 2, 1
    with pytest.raises(BackendError, match="RuntimeError: shape mismatch") as info:  # not retried smaller either
        upscale_tiled(photo, broken, tile=64)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_wrong_shaped_tile_is_a_backend_error(photo):
    def wrong(tile):
        return tile  # forgot to upscale

    wrong.scale, wrong.multiple = 2, 1
    with pytest.raises(BackendError, match="expected"):
        upscale_tiled(photo, wrong, tile=64)


def test_cancel_stops_between_tiles(photo):
    runner = ConvRunner()
    with pytest.raises(CancelledError):
        upscale_tiled(photo, runner, tile=32, cancel=lambda: len(runner.calls) >= 2)
    assert len(runner.calls) == 2


def test_progress_is_monotonic_and_ends_at_one(photo):
    seen: list[float] = []
    upscale_tiled(photo, bicubic(2), tile=48, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 1


def test_progress_moves_tile_by_tile_within_a_row(photo):
    """A photo one tile high and several wide moves after each tile (it used to sit at 0 % until its row was done)."""
    runner, seen = ConvRunner(), []
    upscale_tiled(photo[:40], runner, tile=64, progress=seen.append)
    assert len(runner.calls) >= 3 and len(seen) == len(runner.calls)
    assert seen == sorted(seen) and seen[0] == pytest.approx(1 / len(runner.calls)) and seen[-1] == 1.0


def test_tiny_images_are_padded_not_rejected():
    runner = ConvRunner()
    for shape in [(1, 1, 3), (3, 7, 3), (5, 2, 3)]:
        out = upscale_tiled(np.full(shape, 0.5, np.float32), runner, tile=64)
        assert out.shape == (shape[0] * 2, shape[1] * 2, 3)
        assert np.allclose(out, 0.5, atol=1e-5)


class NearestRunner:
    """Nearest x2: pointwise, so any tiling blends back to exactly the nearest-neighbour image."""

    scale = 2
    multiple = 4

    def __init__(self, fail_above: int = 10**9, after: int = 0) -> None:
        self.fail_above, self.after, self.calls = fail_above, after, 0

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        self.calls += 1
        if max(tile.shape[:2]) > self.fail_above and self.calls > self.after:
            raise RuntimeError("Failed to allocate memory for requested buffer")
        return tile.repeat(2, axis=0).repeat(2, axis=1)


def test_out_of_memory_mid_row_is_taken_back_exactly(photo):
    """A row that fails half-way is undone before it is redone with smaller tiles: nothing is counted twice."""
    runner = NearestRunner(fail_above=64, after=3)  # the second row fails after some of its tiles were added
    out = upscale_tiled(photo, runner, tile=128, overlap=8)
    assert np.abs(out - photo.repeat(2, axis=0).repeat(2, axis=1)).max() < 1e-6


def test_tiles_see_the_reflection_padding_without_a_padded_copy():
    from invsr_desktop.engine.tiling import _Padded, reflect_pad

    rng = np.random.default_rng(1)
    for h, w, ph, pw in [(13, 9, 16, 16), (1, 5, 4, 8), (3, 1, 8, 4), (2, 2, 7, 7), (8, 8, 8, 8)]:
        a = rng.random((h, w, 3)).astype(np.float32)
        full, view = reflect_pad(a, ph, pw), _Padded(a, (ph, pw))
        for y, x, th, tw in [(0, 0, ph, pw), (ph // 2, pw // 2, ph - ph // 2, pw - pw // 2), (0, 0, 1, 1)]:
            tile = view.tile(y, x, th, tw)
            assert np.array_equal(tile, full[y : y + th, x : x + tw]) and not tile.flags.writeable


def test_balanced_tiles_compute_few_pixels_more_than_the_image():
    """The fewest tiles that fit, each only as large as needed: at 512 px with 295 px tiles and a 16 px overlap,
    two tiles of 264 px per side (6 % more pixels than the image, in both axes together 13 %), not two of 295."""
    from invsr_desktop.engine.tiling import balanced_tile

    assert balanced_tile(512, 295, 16, 1) == 264
    assert balanced_tile(200, 295, 16, 1) == 200  # one tile: the whole side
    assert balanced_tile(512, 256, 16, 4) % 4 == 0 and balanced_tile(512, 256, 16, 4) <= 256
    seen = []

    def runner(tile: np.ndarray) -> np.ndarray:
        seen.append(tile.shape[0] * tile.shape[1])
        return np.repeat(np.repeat(tile, 2, axis=0), 2, axis=1)

    runner.scale = 2.0  # type: ignore[attr-defined]
    pixels = np.random.default_rng(0).random((512, 512, 3), dtype=np.float32)
    out = upscale_tiled(pixels, runner, tile=295, overlap=16)
    np.testing.assert_allclose(out, np.repeat(np.repeat(pixels, 2, axis=0), 2, axis=1), atol=1e-6)
    assert len(seen) == 4 and sum(seen) <= 1.15 * 512 * 512


# -- results rounded into the file's integers as the tiles finish (issue 22's memory bound) --------------------


def _stored(pixels: np.ndarray, depth: int) -> np.ndarray:
    from invsr_desktop.engine.pixels import quantize

    return quantize(np.clip(pixels, 0, 1), depth)


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("tile, overlap", [(40, 8), (4096, 8), (32, 16), (48, 20), (24, 4)])
def test_a_stored_result_is_the_float_result_rounded(photo, depth, tile, overlap):
    """Streamed into uint8 / uint16 as the tiles finish, the result is bit for bit what rounding the float32
    result at save time gives, on any tiling: one tile row or many, overlaps where three rows meet."""
    from invsr_desktop.engine.tiling import Tiler

    runner = ConvRunner()
    floats = Tiler(tile, overlap).upscale(photo, runner)
    stored = Tiler(tile, overlap).upscale(photo, runner, depth=depth)
    assert stored.dtype == (np.uint8 if depth == 8 else np.uint16) and stored.flags.c_contiguous
    assert np.array_equal(stored, _stored(floats, depth))


@pytest.mark.parametrize("shape", [(157, 203), (41, 37), (3, 5)])
def test_a_whole_factor_reduction_is_the_area_resample_of_the_whole_result(photo, shape):
    """A x2 model serving x1 (as a x4 model serves x2) is area-reduced band by band; the bands do not fall on the
    2 x 2 blocks, yet the result is what resampling the whole float result then rounding gives."""
    import cv2

    from invsr_desktop.engine.tiling import Tiler

    pixels = np.ascontiguousarray(photo[: shape[0], : shape[1]])
    runner = ConvRunner()
    floats = Tiler(24, 8).upscale(pixels, runner)
    whole = cv2.resize(floats, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    stored = Tiler(24, 8).upscale(pixels, runner, depth=8, factor=2)
    assert stored.shape == (*shape, 3)
    assert np.array_equal(stored, _stored(whole, 8))


def test_out_of_memory_mid_row_is_taken_back_in_a_stored_result(photo):
    """A failed row is undone in the band accumulator too, after the rows above it were already rounded out."""
    from invsr_desktop.engine.tiling import Tiler

    runner = NearestRunner(fail_above=64, after=3)
    out = Tiler(128, 8).upscale(photo, runner, depth=8)
    assert np.array_equal(out, _stored(photo.repeat(2, axis=0).repeat(2, axis=1), 8))


class NearestRunnerAt:
    """Nearest x``scale`` with a 3x3 box blur first: a receptive field, so the blend's weights matter."""

    def __init__(self, scale: int, multiple: int) -> None:
        self.scale, self.multiple = scale, multiple

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        padded = np.pad(tile, ((1, 1), (1, 1), (0, 0)), mode="edge")
        blurred = sum(padded[dy : dy + tile.shape[0], dx : dx + tile.shape[1]] for dy in range(3) for dx in range(3))
        return (blurred / 9).repeat(self.scale, axis=0).repeat(self.scale, axis=1)


def test_a_streamed_result_is_the_float_result_rounded_on_any_geometry():
    """Property: for any image size, tile, overlap, scale, model multiple, whole reduction, depth and grey, the
    streamed result is exactly the float32 result resampled, grey-converted and rounded (what saving it gives)."""
    import cv2
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from invsr_desktop.engine.pixels import luma, quantize
    from invsr_desktop.engine.tiling import Tiler

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(h=st.integers(1, 70), w=st.integers(1, 70), tile=st.integers(8, 48), overlap=st.integers(0, 20),
           scale=st.sampled_from([2, 4]), multiple=st.sampled_from([1, 2, 4]), reduce=st.booleans(),
           depth=st.sampled_from([8, 16]), grey=st.booleans(), seed=st.integers(0, 2**16))  # fmt: skip
    def check(h, w, tile, overlap, scale, multiple, reduce, depth, grey, seed):
        pixels = np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)
        runner = NearestRunnerAt(scale, multiple)
        factor = 2 if reduce else 1
        floats = Tiler(tile, overlap).upscale(pixels, runner)
        if factor > 1:
            floats = cv2.resize(floats, (w * scale // 2, h * scale // 2), interpolation=cv2.INTER_AREA)
        if grey:
            floats = luma(floats)
        stored = Tiler(tile, overlap).upscale(pixels, runner, depth=depth, factor=factor, grey=grey)
        assert np.array_equal(stored, quantize(floats.reshape(stored.shape), depth))

    check()
