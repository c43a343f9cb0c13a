"""Run a runner over an image in overlapping tiles and blend them back without seams.

The ideas are chaiNNer's upscale engine's: a starting tile size from a memory budget; on an out-of-memory error the
tile size halves and the work resumes at the current row (rows already finished are kept); reflection padding to
the multiple a model needs; a half-sine (sin^2) ramp across each overlap, so two neighbouring weights sum to one.
Accumulating weighted sums and dividing by the summed weights keeps this correct for any overlap the grid ends with.
A scale below 1 (a shrinking runner, scale 1/f) works the same way: tile origins are multiples of f.
A ``positional`` runner is told each tile's origin, so what it samples can depend on the pixel, not the tile.
A ``whole_image`` runner (a diffusion sampler) gets the whole image and a :class:`Tiler` instead
(:func:`run_whole_image`): it calls ``Tiler.map`` for each model pass, so every pass is tiled and blended by the
engine (memory stays bounded per call) while the runner keeps the whole image consistent between passes.
Both paths run the same loop, :func:`blend_tiles`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from invsr_desktop.engine.backend import Runner
from invsr_desktop.engine.errors import BackendError, CancelledError
from invsr_desktop.engine.sessions import is_out_of_memory

Progress = Callable[[float], None]
Cancel = Callable[[], bool]

DEFAULT_OVERLAP = 16
MIN_TILE = 32
# The automatic size stops here even when memory allows more: the engine polls cancel and reports progress
# between tiles, so a bounded tile keeps Cancel and Pause responsive (a user can still ask for more with --tile).
MAX_AUTO_TILE = 512


@dataclass(frozen=True)
class Grid:
    """Geometry shared by every tile of one run: the scale as a fraction and the alignment it imposes."""

    scale: Fraction
    align: int

    @classmethod
    def for_runner(cls, runner: Runner) -> Grid:
        scale = Fraction(float(runner.scale)).limit_denominator(64)
        multiple = max(1, int(getattr(runner, "multiple", 1)))
        # Tile origins must land on whole output pixels: with scale p/q they must be multiples of q.
        return cls(scale, math.lcm(multiple, scale.denominator))

    def up(self, n: int) -> int:
        """Output length of ``n`` input pixels (exact: ``n`` is a multiple of the scale's denominator)."""
        return int(n * self.scale)

    def round_up(self, n: int) -> int:
        return -(-n // self.align) * self.align

    def round_down(self, n: int) -> int:
        return max(self.align, n // self.align * self.align)


def auto_tile_size(bytes_per_pixel: int, budget_bytes: int) -> int:
    """Largest square tile whose estimated working memory fits the budget."""
    side = int(math.sqrt(max(1, budget_bytes) / max(1, bytes_per_pixel)))
    return int(min(MAX_AUTO_TILE, max(MIN_TILE, side)))


def reflect_pad(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad bottom/right to (height, width) by reflection (symmetric when the image is too small to reflect)."""
    pad_h, pad_w = height - pixels.shape[0], width - pixels.shape[1]
    if pad_h == 0 and pad_w == 0:
        return pixels
    mode = "reflect" if min(pixels.shape[:2]) > 1 else "symmetric"
    return np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)


def _starts(length: int, tile: int, overlap: int, align: int) -> list[int]:
    """Tile origins along one axis: every tile full size, the last one flush with the end."""
    if length <= tile:
        return [0]
    step = max(align, (tile - overlap) // align * align)
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _ramp(length: int, ramp: int, left: bool, right: bool) -> np.ndarray:
    """1-D weights: sin^2 rising over ``ramp`` pixels at an interior edge, 1 elsewhere (never exactly 0)."""
    w = np.ones(length, dtype=np.float32)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        rise = np.sin(0.5 * np.pi * (np.arange(ramp, dtype=np.float32) + 0.5) / ramp) ** 2
        if left:
            w[:ramp] = rise
        if right:
            w[-ramp:] = rise[::-1]
    return w


def _run_tile(runner: Runner, tile: np.ndarray, grid: Grid, origin: tuple[int, int]) -> np.ndarray:
    tile = np.ascontiguousarray(tile, dtype=np.float32)
    out = runner(tile, origin=origin) if getattr(runner, "positional", False) else runner(tile)
    expected = (grid.up(tile.shape[0]), grid.up(tile.shape[1]), 3)
    if not isinstance(out, np.ndarray) or out.shape != expected:
        got = getattr(out, "shape", type(out).__name__)
        raise BackendError(f"the backend returned a tile of shape {got}; expected {expected}")
    return out.astype(np.float32, copy=False)


def upscale_tiled(
    pixels: np.ndarray,
    runner: Runner,
    tile: int | None = None,
    overlap: int | None = None,
    budget_bytes: int = 1 << 30,
    bytes_per_pixel: int = 4096,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> np.ndarray:
    """Upscale float32 RGB ``pixels`` (H, W, 3) with ``runner``, tile by tile; returns (round(sH), round(sW), 3).

    ``tile`` is the tile side in input pixels (None = from ``budget_bytes`` / ``bytes_per_pixel``). Raises
    :class:`CancelledError` as soon as ``cancel()`` is true between tiles.
    """
    grid = Grid.for_runner(runner)
    height, width = pixels.shape[:2]
    padded = reflect_pad(pixels, grid.round_up(height), grid.round_up(width))
    size = grid.round_down(tile or auto_tile_size(bytes_per_pixel, budget_bytes))
    overlap = grid.round_up(DEFAULT_OVERLAP if overlap is None else overlap)
    out, _ = blend_tiles(
        lambda t, origin: _run_tile(runner, t, grid, origin), [padded], grid, size, overlap, progress, cancel
    )
    return out[: int(round(height * grid.scale)), : int(round(width * grid.scale))]


def blend_tiles(
    fn: Callable[..., np.ndarray],
    padded: list[np.ndarray],
    grid: Grid,
    size: int,
    overlap: int,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> tuple[np.ndarray, int]:
    """The one tiling loop: ``fn(*tiles, origin=(y, x))`` over overlapping tiles of the (equally sized, already
    padded) ``padded`` arrays, each result (up(h), up(w), C) blended with sin^2 ramps into one float32 array.

    Works row by row: an out-of-memory error halves the tile size and redoes the current row only (finished rows
    stay). Returns the blended result and the tile size it ended with.
    """
    ph, pw = padded[0].shape[:2]
    out: np.ndarray | None = None
    weight = np.zeros((grid.up(ph), grid.up(pw), 1), dtype=np.float32)
    y = 0
    while True:
        row_h = min(size, ph)
        y = min(y, ph - row_h)
        try:
            row_out, row_weight = _blend_row(fn, padded, grid, y, row_h, min(size, pw), overlap, cancel)
        except Exception as exc:
            if not is_out_of_memory(exc) or size // 2 < max(MIN_TILE // 2, grid.align):
                raise
            size = grid.round_down(size // 2)  # resume this row with smaller tiles; finished rows stay
            continue
        if out is None:
            out = np.zeros((grid.up(ph), grid.up(pw), row_out.shape[2]), dtype=np.float32)
        oy = grid.up(y)
        out[oy : oy + row_out.shape[0]] += row_out
        weight[oy : oy + row_out.shape[0]] += row_weight
        if progress:
            progress(min(1.0, (y + row_h) / ph))
        if y + row_h >= ph:
            break
        y += max(grid.align, (row_h - overlap) // grid.align * grid.align)
    assert out is not None
    out /= np.maximum(weight, 1e-12)
    return out, size


def _blend_row(
    fn: Callable[..., np.ndarray],
    padded: list[np.ndarray],
    grid: Grid,
    y: int,
    row_h: int,
    tile_w: int,
    overlap: int,
    cancel: Cancel | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One row of tiles into a row buffer (all or nothing, so an out-of-memory error loses only this row)."""
    ph, pw = padded[0].shape[:2]
    row_out: np.ndarray | None = None
    row_weight = np.zeros((grid.up(row_h), grid.up(pw), 1), dtype=np.float32)
    ramp = grid.up(overlap)
    wy = _ramp(grid.up(row_h), ramp, left=y > 0, right=y + row_h < ph)
    for x in _starts(pw, tile_w, overlap, grid.align):
        if cancel and cancel():
            raise CancelledError("cancelled")
        tiles = [np.ascontiguousarray(a[y : y + row_h, x : x + tile_w]) for a in padded]
        result = np.asarray(fn(*tiles, origin=(y, x)), dtype=np.float32)
        expected = (grid.up(row_h), grid.up(tile_w))
        if result.ndim != 3 or result.shape[:2] != expected:
            raise BackendError(f"the backend returned a tile of shape {result.shape}; expected {expected} x C")
        if row_out is None:
            row_out = np.zeros((grid.up(row_h), grid.up(pw), result.shape[2]), dtype=np.float32)
        wx = _ramp(grid.up(tile_w), ramp, left=x > 0, right=x + tile_w < pw)
        w = (wy[:, None] * wx[None, :])[..., None]
        ox = grid.up(x)
        row_out[:, ox : ox + result.shape[1]] += result * w
        row_weight[:, ox : ox + result.shape[1]] += w
    assert row_out is not None
    return row_out, row_weight


# ---------------------------------------------------------------------------------------------------------------
# Whole-image runners (a sampler that needs every tile consistent at every step)


class Tiler:
    """What the engine hands a whole-image runner's ``run_whole(image, tiler)`` (see :class:`~invsr_desktop.engine.
    backend.Runner`): the engine's tiling (tile size from the memory budget or the user's setting, overlap, sin^2
    blending, halving on out-of-memory), progress and cancel, for a runner that loops over the whole image itself.

    :meth:`map` runs a function over overlapping tiles of one or more whole arrays and blends the results, so each
    model call stays bounded in memory while the runner keeps whole-image state between calls (e.g. a diffusion
    sampler blends all tiles at every step, so the tiles cannot drift apart). ``tile``, ``overlap`` and
    ``bytes_per_pixel`` are in *input* pixels, as for :func:`upscale_tiled`; ``map`` converts them with its
    ``density`` (array pixels per input pixel along a side).
    """

    def __init__(
        self,
        tile: int | None = None,
        overlap: int | None = None,
        budget_bytes: int = 1 << 30,
        bytes_per_pixel: int = 4096,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
    ):
        self.tile = tile
        self.overlap = DEFAULT_OVERLAP if overlap is None else overlap
        self.budget_bytes = budget_bytes
        self.bytes_per_pixel = bytes_per_pixel
        self.progress = progress
        self.cancel = cancel
        self._shrink = 1  # halvings after out-of-memory errors, kept for the next calls
        self.calls = 0  # tiles run so far (for tests and benchmarks)

    def report(self, fraction: float) -> None:
        """Tell the engine how far the whole run is (0..1)."""
        if self.progress:
            self.progress(min(1.0, max(0.0, fraction)))

    def check_cancel(self) -> None:
        """Raise :class:`CancelledError` if the user cancelled (a paused queue holds the caller here)."""
        if self.cancel and self.cancel():
            raise CancelledError("cancelled")

    def tile_side(self, density: float = 1.0, multiple: int = 1) -> int:
        """The tile side in array pixels ``map`` uses now (a multiple of ``multiple``)."""
        side = int((self.tile or auto_tile_size(self.bytes_per_pixel, self.budget_bytes)) * density) // self._shrink
        return max(multiple, side // multiple * multiple)

    def map(
        self,
        fn: Callable[..., np.ndarray],
        *arrays: np.ndarray,
        density: float = 1.0,
        multiple: int = 1,
        min_overlap: int = 0,
        span: tuple[float, float] = (0.0, 1.0),
    ) -> np.ndarray:
        """``fn(*tiles, origin=(y, x)) -> (h, w, C)`` over overlapping tiles of ``arrays`` (each (H, W, ...), the
        same H and W), blended with sin^2 ramps into one (H, W, C) float32 array.

        Tiles and their origins are multiples of ``multiple`` array pixels (arrays are reflection-padded at the
        bottom / right to a multiple and the result cropped back), so a model that works on ``multiple``-sized
        blocks sees the same block grid in every tile. The overlap is the engine's, in array pixels, but at least
        ``min_overlap``. Progress moves from ``span[0]`` to ``span[1]``; cancel is checked between tiles.
        """
        if not arrays:
            raise ValueError("map needs at least one array")
        height, width = arrays[0].shape[:2]
        for a in arrays[1:]:
            if a.shape[:2] != (height, width):
                raise ValueError(f"arrays differ in size: {a.shape[:2]} vs {(height, width)}")
        grid = Grid(Fraction(1), max(1, multiple))
        ph, pw = grid.round_up(height), grid.round_up(width)
        padded = [reflect_pad(a if a.ndim == 3 else a[..., None], ph, pw) for a in arrays]
        overlap = grid.round_up(max(int(self.overlap * density), int(min_overlap)))
        size = self.tile_side(density, multiple)

        def counted(*tiles: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
            self.calls += 1
            return fn(*tiles, origin=origin)

        report = lambda fraction: self.report(span[0] + (span[1] - span[0]) * fraction)  # noqa: E731
        out, final = blend_tiles(counted, padded, grid, size, overlap, report, self.cancel)
        while self.tile_side(density, multiple) > final:  # keep the halved size for the next passes
            self._shrink *= 2
        return out[:height, :width]


def run_whole_image(
    pixels: np.ndarray,
    runner: Runner,
    tile: int | None = None,
    overlap: int | None = None,
    budget_bytes: int = 1 << 30,
    bytes_per_pixel: int = 4096,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> np.ndarray:
    """Run a whole-image runner (``runner.whole_image``) on float32 RGB ``pixels``: ``runner.run_whole(pixels,
    tiler)`` with a :class:`Tiler` built from the engine's settings; checks the result's shape."""
    tiler = Tiler(tile, overlap, budget_bytes, bytes_per_pixel, progress, cancel)
    out = runner.run_whole(np.ascontiguousarray(pixels, dtype=np.float32), tiler)
    scale = float(runner.scale)
    expected = (int(round(pixels.shape[0] * scale)), int(round(pixels.shape[1] * scale)), 3)
    if not isinstance(out, np.ndarray) or out.shape != expected:
        got = getattr(out, "shape", type(out).__name__)
        raise BackendError(f"the backend returned an image of shape {got}; expected {expected}")
    return out.astype(np.float32, copy=False)
