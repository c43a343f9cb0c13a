"""Run a runner over an image in overlapping tiles and blend them back without seams.

The ideas are chaiNNer's upscale engine's: a starting tile size from a memory budget; on an out-of-memory error the
tile size halves and the work resumes at the current row (rows already finished are kept); reflection padding to
the multiple a model needs; a half-sine (sin^2) ramp across each overlap, so two neighbouring weights sum to one.
Accumulating weighted sums and dividing by the summed weights keeps this correct for any overlap the grid ends with.
A scale below 1 (a shrinking runner, scale 1/f) works the same way: tile origins are multiples of f.
A ``positional`` runner is told each tile's origin, so what it samples can depend on the pixel, not the tile.
A ``whole_image`` runner (a diffusion sampler) gets the whole image and a :class:`Tiler` instead
(:meth:`Tiler.upscale`): it calls ``Tiler.map`` for each model pass, so every pass is tiled and blended by the
engine (memory stays bounded per call) while the runner keeps the whole image consistent between passes.
Both paths run the same loop, :func:`blend_tiles`. It reads tiles through views (the padding by index, not by a
padded copy) and adds each result straight into one accumulator, with the weights kept as per-row vectors, so a
pass allocates one full-size array, its result: a sampler that blends every step holds no other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import cv2
import numpy as np

from invsr_desktop.engine.backend import Runner, RunnerTraits
from invsr_desktop.engine.errors import BackendError, CancelledError, InvsrError
from invsr_desktop.engine.pixels import luma, quantize, stored_dtype
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
        traits = RunnerTraits.of(runner)
        scale = Fraction(traits.scale).limit_denominator(64)
        multiple = traits.multiple
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


def balanced_tile(length: int, size: int, overlap: int, align: int) -> int:
    """The tile side along one axis: the fewest tiles of at most ``size`` that cover ``length``, made only as large as
    that many need. A 512 px side with 295 px tiles takes two tiles either way, but two of 264 px instead of two of
    295 px overlapping by 78: the model computes 6 % more pixels than the image has instead of 26 %."""
    if length <= size:
        return length
    count = -(-(length - overlap) // max(1, size - overlap))
    side = -(-(length + (count - 1) * overlap) // count)
    side = -(-side // align) * align
    return min(size, side)


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


def call_plugin(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    """Call into a runner (plugin code): whatever it raises, ``SystemExit`` included, becomes a
    :class:`BackendError` for this one image, except the engine's own errors, Ctrl-C and out-of-memory (which the
    tiler answers by halving the tile). A plugin can fail an image; it can never end the batch or the app."""
    try:
        return fn(*args, **kwargs)
    except (InvsrError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - see the docstring
        if is_out_of_memory(exc):
            raise
        raise BackendError(f"the backend failed: {type(exc).__name__}: {exc}".rstrip(": ")) from exc


def check_output(out: object, expected: tuple[int, int, int], what: str) -> np.ndarray:
    """The runner's result as float32, after checking its shape and that every value is finite (a NaN or an
    infinity would be written as black or white pixels without a word)."""
    if not isinstance(out, np.ndarray) or out.shape != expected:
        got = getattr(out, "shape", type(out).__name__)
        raise BackendError(f"the backend returned {what} of shape {got}; expected {expected}")
    out = out.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise BackendError(f"the backend returned {what} with NaN or infinite values")
    return out


def _run_tile(
    runner: Runner, traits: RunnerTraits, tile: np.ndarray, grid: Grid, origin: tuple[int, int],
    report: Progress | None = None,
) -> np.ndarray:
    """One tile through the runner; a runner of several model passes per tile (``passes``, e.g. TTA's 8) is given
    ``on_pass`` so the tile's share of the progress moves pass by pass."""
    tile = np.ascontiguousarray(tile, dtype=np.float32)
    if not tile.flags.writeable:  # a read-only view of the image: a runner may work on its tile in place
        tile = tile.copy()
    kwargs: dict[str, object] = {"origin": origin} if traits.positional else {}
    passes = traits.passes
    if passes > 1 and report is not None:
        count = iter(range(1, passes + 1))
        kwargs["on_pass"] = lambda: report(min(1.0, next(count, passes) / passes))
    out = call_plugin(runner, tile, **kwargs)
    return check_output(out, (grid.up(tile.shape[0]), grid.up(tile.shape[1]), 3), "a tile")


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
    """Upscale float32 RGB ``pixels`` (H, W, 3) with ``runner``; returns (round(sH), round(sW), 3): a
    :class:`Tiler` with these settings, :meth:`Tiler.upscale`. Raises :class:`CancelledError` as soon as ``cancel()``
    is true between tiles."""
    return Tiler(tile, overlap, budget_bytes, bytes_per_pixel, progress, cancel).upscale(pixels, runner)


class _Padded:
    """An (H, W[, C]) array seen as if reflection-padded at the bottom / right to ``shape``, without building the
    padded copy (a full-size array per call, per sampler step): a tile inside the array is a view, a tile that
    crosses the edge is gathered with the same indices :func:`reflect_pad` would use. Tiles are read-only, so a
    function cannot change the caller's array through them."""

    def __init__(self, array: np.ndarray, shape: tuple[int, int]):
        self.array = array if array.ndim == 3 else array[..., None]
        h, w = self.array.shape[:2]
        mode = "reflect" if min(h, w) > 1 else "symmetric"  # as reflect_pad
        self.rows = np.pad(np.arange(h), (0, shape[0] - h), mode=mode)
        self.cols = np.pad(np.arange(w), (0, shape[1] - w), mode=mode)

    def tile(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        ah, aw = self.array.shape[:2]
        if y + h <= ah and x + w <= aw:
            view = self.array[y : y + h, x : x + w]
        else:
            view = self.array[np.ix_(self.rows[y : y + h], self.cols[x : x + w])]
        view.flags.writeable = False
        return view


BLEND_BAND = 64  # output rows weighted and added at a time: the blend's temporaries are a band, not a tile


def _row_weights(rows: list[tuple[int, np.ndarray, np.ndarray]], b0: int, b1: int, c0: int, c1: int) -> np.ndarray:
    """The summed blend weights of output rows [b0, b1) x columns [c0, c1) (never 0: a divisor). The weights of a
    tile row are separable (its vertical ramp times the sum of its tiles' horizontal ramps), so a row is kept as
    (top, wy, sum of wx) and the divisor is made band by band, never whole."""
    weight = np.zeros((b1 - b0, c1 - c0), dtype=np.float32)
    for top, wy, wx_sum in rows:
        lo, hi = max(b0, top), min(b1, top + len(wy))
        if lo < hi:
            weight[lo - b0 : hi - b0] += wy[lo - top : hi - top, None] * wx_sum[None, c0:c1]
    return np.maximum(weight, 1e-12, out=weight)


class _Blend:
    """The weighted sum of the tiles in one (H, W, C) float32 accumulator, the only full-size array of a blend,
    divided by the summed weights at the end (a sampler's pass: the caller owns the result).

    Tiles are added straight into the accumulator; a row that fails (out of memory) is taken back with
    :meth:`undo_row`, which restores the overlap band the earlier rows had written (kept at :meth:`begin_row`) and
    zeroes the rest.
    """

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self.out: np.ndarray | None = None
        self.rows: list[tuple[int, np.ndarray, np.ndarray]] = []  # finished rows: (top, wy, sum of wx)
        self.done = 0  # output rows reached by the finished rows
        self._row: tuple[int, np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def begin_row(self, top: int, wy: np.ndarray, next_top: int) -> None:
        kept = None if self.out is None else self.out[top : min(self.done, top + len(wy))].copy()
        self._row = (top, wy, np.zeros(self.width, np.float32), kept)

    def add(self, result: np.ndarray, left: int, wx: np.ndarray) -> None:
        """Add one tile's result (th, tw, C), its top-left at (the row's top, ``left``), weighted by wy x wx."""
        assert self._row is not None
        top, wy, wx_sum, _ = self._row
        if self.out is None:
            self.out = np.zeros((self.height, self.width, result.shape[2]), dtype=np.float32)
        _add_weighted(self.out[top : top + result.shape[0], left : left + result.shape[1]], result, wy, wx)
        wx_sum[left : left + result.shape[1]] += wx

    def end_row(self) -> None:
        assert self._row is not None
        top, wy, wx_sum, _ = self._row
        self.rows.append((top, wy, wx_sum))
        self.done = max(self.done, top + len(wy))
        self._row = None

    def undo_row(self) -> None:
        """Remove what the unfinished row added: the accumulator is as it was at :meth:`begin_row`."""
        if self._row is not None and self.out is not None:
            top, wy, _, kept = self._row
            n = 0 if kept is None else len(kept)
            if n:
                self.out[top : top + n] = kept
            self.out[top + n : top + len(wy)] = 0.0
        self._row = None

    def result(self) -> np.ndarray:
        """The accumulator divided by the summed weights (in place, band by band)."""
        assert self.out is not None
        for b0 in range(0, self.height, BLEND_BAND):
            b1 = min(self.height, b0 + BLEND_BAND)
            self.out[b0:b1] /= _row_weights(self.rows, b0, b1, 0, self.width)[..., None]
        return self.out


def _add_weighted(region: np.ndarray, result: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> None:
    """region += result x (wy x wx), band by band (the weights' temporaries are a band, not a tile)."""
    for b in range(0, result.shape[0], BLEND_BAND):
        w = wy[b : b + BLEND_BAND, None] * wx[None, :]
        region[b : b + BLEND_BAND] += result[b : b + BLEND_BAND] * w[..., None]


class _Stored:
    """A blend's result as a file's integers: finished blocks are rounded (:func:`~invsr_desktop.engine.pixels.
    quantize`) into one uint8 / uint16 array of ``size`` / ``factor``, after an area reduction by a whole
    ``factor`` (a x4 model serving x2: each 2 x 2 block averaged, exactly what the pipeline's resample does to a
    whole image, since OpenCV's area resize by a whole factor is a block mean), and with ``grey`` turned into one
    channel of BT.601 luma (a grey photo's result, as the pipeline makes it). Blocks come at any place, on the
    factor's grid; what lies beyond ``size`` (the padding) is dropped."""

    def __init__(self, size: tuple[int, int], channels: int, depth: int, factor: int = 1, grey: bool = False):
        self.size, self.depth, self.factor, self.grey = size, depth, factor, grey
        shape = (size[0] // factor, size[1] // factor, 1 if grey else channels)
        self.out = np.empty(shape, dtype=stored_dtype(depth))

    def put(self, top: int, left: int, block: np.ndarray) -> None:
        block = block[: max(0, self.size[0] - top), : max(0, self.size[1] - left)]
        if not block.size:
            return
        k = self.factor
        if k > 1:
            if top % k or left % k or block.shape[0] % k or block.shape[1] % k:
                raise ValueError(f"a block at ({top}, {left}) of {block.shape[:2]} is off the {k} x {k} grid")
            h, w = block.shape[0] // k, block.shape[1] // k
            block = cv2.resize(block, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, -1)
        if self.grey:
            block = luma(block)
        self.out[top // k : top // k + block.shape[0], left // k : left // k + block.shape[1]] = quantize(
            block, self.depth
        )


class _Streamed:
    """A blend straight into a :class:`_Stored` result, holding in float32 only what is still open: the tile
    row's columns that a later tile of the row still reaches (about one tile) and the strip of rows the next tile
    row will overlap (the ramp's height, full width). A 4000 x 3000 photo x4 through 512 px tiles holds ~100 MB of
    float32 instead of a 2.3 GB accumulator, or a 340 MB full-width band.

    Tile lefts only grow along a row and row tops only grow down the image, so a column left of the current tile is
    complete for this row, and of it the rows above the next row's top (``next_top``) are final: they are divided
    by their weights and rounded into the result; the rows below go to the next strip. A window column starts from
    the strip's value, so every output pixel sums its terms in the same order as :class:`_Blend` (the rounded
    results are identical). A row that fails (out of memory) is dropped whole: the strip it started from is kept
    apart from the one it fills, and the result rows it wrote are written again by the row that replaces it.
    """

    def __init__(
        self, height: int, width: int, size: tuple[int, int], depth: int, factor: int = 1, grey: bool = False
    ):
        self.height, self.width = height, width  # the padded output the tiles cover
        self.size, self.depth, self.factor, self.grey = size, depth, factor, grey
        self.dest: _Stored | None = None
        self.strip: np.ndarray | None = None  # output rows [top, done) of the current row: the earlier rows' sums
        self.done = 0  # output rows reached by the finished rows
        self.rows: list[tuple[int, np.ndarray, np.ndarray]] = []  # finished rows that reach the open rows
        self._row: _OpenRow | None = None

    def begin_row(self, top: int, wy: np.ndarray, next_top: int) -> None:
        self._row = _OpenRow(top, wy, min(next_top, top + len(wy)), np.zeros(self.width, np.float32))

    def add(self, result: np.ndarray, left: int, wx: np.ndarray) -> None:
        """Add one tile's result (th, tw, C), its top-left at (the row's top, ``left``), weighted by wy x wx."""
        row = self._row
        assert row is not None
        if self.dest is None:
            self.dest = _Stored(self.size, result.shape[2], self.depth, self.factor, self.grey)
        self._finish_columns(row, left)
        self._open_columns(row, left + result.shape[1], result.shape[2])
        start = left - row.left
        _add_weighted(row.window[:, start : start + result.shape[1]], result, row.wy, wx)
        row.wx_sum[left : left + result.shape[1]] += wx

    def end_row(self) -> None:
        row = self._row
        assert row is not None
        self._finish_columns(row, row.right)
        self.rows.append((row.top, row.wy, row.wx_sum))
        self.done = max(self.done, row.top + len(row.wy))
        self.strip = row.next_strip
        self.rows = [r for r in self.rows if r[0] + len(r[1]) > row.next_top]
        self._row = None

    def undo_row(self) -> None:
        self._row = None  # the strip it started from is untouched; its result rows are written again

    def result(self) -> np.ndarray:
        assert self.dest is not None
        return self.dest.out

    def _open_columns(self, row: _OpenRow, right: int, channels: int) -> None:
        """Grow the window to output column ``right``: new columns start from the strip (rows the earlier rows
        reach), zero below."""
        if right <= row.right:
            return
        if row.window is None or right - row.left > row.window.shape[1]:
            grown = np.zeros((len(row.wy), max(right - row.left, 1), channels), dtype=np.float32)
            if row.window is not None:
                grown[:, : row.right - row.left] = row.window[:, : row.right - row.left]
            row.window = grown
        fresh = row.window[:, row.right - row.left : right - row.left]
        fresh[:] = 0.0
        reached = min(self.done, row.top + len(row.wy)) - row.top
        if self.strip is not None and reached > 0:
            fresh[:reached] = self.strip[:reached, row.right : right]
        row.right = right

    def _finish_columns(self, row: _OpenRow, upto: int) -> None:
        """Columns [row.left, upto) are complete for this row: their final rows go to the result, the rest to the
        next strip; the window moves right to start at ``upto``."""
        if upto <= row.left or row.window is None:
            return
        done = row.window[:, : upto - row.left]
        final = row.next_top - row.top
        weights = self.rows + [(row.top, row.wy, row.wx_sum)]
        for b0 in range(0, final, BLEND_BAND):
            b1 = min(final, b0 + BLEND_BAND)
            band = done[b0:b1] / _row_weights(weights, row.top + b0, row.top + b1, row.left, upto)[..., None]
            self.dest.put(row.top + b0, row.left, band)
        if final < len(row.wy):
            if row.next_strip is None:
                row.next_strip = np.zeros((len(row.wy) - final, self.width, done.shape[2]), dtype=np.float32)
            row.next_strip[:, row.left : upto] = done[final:]
        keep = row.right - upto
        if keep > 0:
            row.window[:, :keep] = row.window[:, upto - row.left : row.right - row.left]
        row.left = upto


@dataclass
class _OpenRow:
    """The tile row a :class:`_Streamed` blend is adding: its window holds output columns [left, right)."""

    top: int
    wy: np.ndarray
    next_top: int  # the next row's top: rows above it are final when this row is
    wx_sum: np.ndarray
    left: int = 0
    right: int = 0
    window: np.ndarray | None = None
    next_strip: np.ndarray | None = None  # output rows [next_top, top + len(wy)), full width


def blend_tiles(
    fn: Callable[..., np.ndarray],
    arrays: list[np.ndarray],
    grid: Grid,
    size: int,
    overlap: int,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    shape: tuple[int, int] | None = None,
    crop: tuple[int, int] | None = None,
    depth: int | None = None,
    factor: int = 1,
    grey: bool = False,
) -> tuple[np.ndarray, int]:
    """The one tiling loop: ``fn(*tiles, origin=(y, x), report=r)`` over overlapping tiles of ``arrays`` (the same
    H and W, seen reflection-padded at the bottom / right to ``shape``, default their own size), each result
    (up(h), up(w), C) blended with sin^2 ramps into one new float32 array of the padded size (the caller owns it),
    or with ``depth`` (8 or 16) into a uint8 / uint16 array of ``crop`` (the padded result's top-left corner)
    reduced by a whole ``factor`` (area; with ``grey`` to one channel of luma), rounded as a file stores it, row
    band by row band as the tiles finish.

    ``progress`` moves after every tile (rows x columns of the grid), and within a tile when ``fn`` calls
    ``r(fraction of the tile)``, so a photo of one tile does not sit at 0 % until it is done.

    Tiles are read-only views where they lie inside the arrays (gathered copies where they cross the edge). Memory:
    one full-size accumulator (with ``depth``: the quantized result and one tile row of float32) plus per-tile and
    per-band temporaries. Works row by row: an out-of-memory error
    halves the tile size and redoes the current row only (finished rows stay). Returns the blended result and the
    tile size it ended with.
    """
    ph, pw = shape or arrays[0].shape[:2]
    padded = [_Padded(a, (ph, pw)) for a in arrays]
    if depth is None:
        blend: _Blend | _Streamed = _Blend(grid.up(ph), grid.up(pw))
    else:
        blend = _Streamed(grid.up(ph), grid.up(pw), crop or (grid.up(ph), grid.up(pw)), depth, factor, grey)
    y, rows_done = 0, 0
    while True:
        row_h, tile_w = balanced_tile(ph, size, overlap, grid.align), balanced_tile(pw, size, overlap, grid.align)
        y = min(y, ph - row_h)
        rows = rows_done + len(_starts(ph - y, row_h, overlap, grid.align))
        row_report = None
        if progress:
            row_report = lambda part, r=rows_done, n=rows: progress(min(1.0, (r + part) / n))  # noqa: E731
        step = max(grid.align, (row_h - overlap) // grid.align * grid.align)
        next_y = ph if y + row_h >= ph else min(y + step, ph - row_h)  # as the next turn of this loop sets it
        try:
            _blend_row(fn, padded, blend, grid, (ph, pw), (y, next_y), row_h, tile_w, overlap, cancel, row_report)
        except Exception as exc:
            blend.undo_row()
            if not is_out_of_memory(exc) or size // 2 < max(MIN_TILE // 2, grid.align):
                raise
            size = grid.round_down(size // 2)  # resume this row with smaller tiles; finished rows stay
            continue
        rows_done += 1
        if y + row_h >= ph:
            break
        y += step
    return blend.result(), size


def _blend_row(
    fn: Callable[..., np.ndarray],
    padded: list[_Padded],
    blend: _Blend | _Streamed,
    grid: Grid,
    shape: tuple[int, int],
    rows: tuple[int, int],
    row_h: int,
    tile_w: int,
    overlap: int,
    cancel: Cancel | None,
    report: Progress | None = None,
) -> None:
    """One row of tiles into the blend (all or nothing: the caller undoes a failed row); ``report`` gets the
    fraction of the row done, tile by tile (and within a tile). ``rows``: this row's top and the next row's."""
    (ph, pw), (y, next_y) = shape, rows
    ramp = grid.up(overlap)
    blend.begin_row(grid.up(y), _ramp(grid.up(row_h), ramp, left=y > 0, right=y + row_h < ph), grid.up(next_y))
    starts = _starts(pw, tile_w, overlap, grid.align)
    for i, x in enumerate(starts):
        if cancel and cancel():
            raise CancelledError("cancelled")
        tiles = [p.tile(y, x, row_h, tile_w) for p in padded]
        tile_report = None
        if report:
            tile_report = lambda part, i=i: report((i + min(1.0, part)) / len(starts))  # noqa: E731
        result = np.asarray(fn(*tiles, origin=(y, x), report=tile_report), dtype=np.float32)
        del tiles  # a gathered edge tile is freed before the result is added
        expected = (grid.up(row_h), grid.up(tile_w))
        if result.ndim != 3 or result.shape[:2] != expected:
            raise BackendError(f"the backend returned a tile of shape {result.shape}; expected {expected} x C")
        blend.add(result, grid.up(x), _ramp(grid.up(tile_w), ramp, left=x > 0, right=x + tile_w < pw))
        if report:
            report((i + 1) / len(starts))
    blend.end_row()


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
        same H and W), blended with sin^2 ramps into one new (H, W, C) float32 array, which the caller owns (a
        sampler updates its state with it in place).

        Tiles and their origins are multiples of ``multiple`` array pixels (arrays are seen reflection-padded at
        the bottom / right to a multiple, without a padded copy, and the result is cropped back), so a model that
        works on ``multiple``-sized blocks sees the same block grid in every tile. Tiles are read-only (views of
        ``arrays`` where they lie inside). The only full-size allocation is the result. The overlap is the
        engine's, in array pixels, but at least ``min_overlap``. Progress moves from ``span[0]`` to ``span[1]``; cancel is checked between tiles.
        """
        if not arrays:
            raise ValueError("map needs at least one array")
        height, width = arrays[0].shape[:2]
        for a in arrays[1:]:
            if a.shape[:2] != (height, width):
                raise ValueError(f"arrays differ in size: {a.shape[:2]} vs {(height, width)}")
        grid = Grid(Fraction(1), max(1, multiple))
        ph, pw = grid.round_up(height), grid.round_up(width)
        overlap = grid.round_up(max(int(self.overlap * density), int(min_overlap)))
        size = self.tile_side(density, multiple)

        def counted(*tiles: np.ndarray, origin: tuple[int, int], report: Progress | None = None) -> np.ndarray:
            self.calls += 1
            return fn(*tiles, origin=origin)

        report = lambda fraction: self.report(span[0] + (span[1] - span[0]) * fraction)  # noqa: E731
        out, final = blend_tiles(counted, list(arrays), grid, size, overlap, report, self.cancel, shape=(ph, pw))
        while self.tile_side(density, multiple) > final:  # keep the halved size for the next passes
            self._shrink *= 2
        return out[:height, :width]

    def upscale(
        self, pixels: np.ndarray, runner: Runner, depth: int | None = None, factor: int = 1, grey: bool = False
    ) -> np.ndarray:
        """The engine's one way to run a runner over an image (float32 RGB (H, W, 3) -> (round(sH), round(sW), 3)):
        tile by tile with sin^2 blending, or for a ``whole_image`` runner one ``runner.run_whole(pixels, self)`` call
        that tiles each of its model passes with :meth:`map`.

        With ``depth`` (8 or 16) the result is uint8 / uint16, rounded as a file stores it, after an area reduction
        by a whole ``factor`` (a x4 model serving x2: (2H, 2W, 3)), with ``grey`` one channel of luma; tiles are
        reduced and rounded into it as their row finishes, so the float32 result is never held whole (a whole-image
        runner's is, then rounded)."""
        traits = RunnerTraits.of(runner)  # once per image, not per tile
        if traits.whole_image:
            out = call_plugin(runner.run_whole, np.ascontiguousarray(pixels, dtype=np.float32), self)
            scale = float(runner.scale)
            expected = (int(round(pixels.shape[0] * scale)), int(round(pixels.shape[1] * scale)), 3)
            out = check_output(out, expected, "an image")
            if depth is None:
                return out
            stored = _Stored(out.shape[:2], 3, depth, factor, grey)
            stored.put(0, 0, out)
            return stored.out
        grid = Grid.for_runner(runner)
        height, width = pixels.shape[:2]
        size = grid.round_down(self.tile or auto_tile_size(self.bytes_per_pixel, self.budget_bytes))
        # An overlap of half the tile or more would advance the tiles by a pixel or two (a 16 px tile with the
        # default 16 px overlap made a 300 x 200 photo 60,000 model calls): keep at least half of each tile new.
        overlap = min(grid.round_up(self.overlap), grid.round_down(size // 2))
        result = (int(round(height * grid.scale)), int(round(width * grid.scale)))
        out, _ = blend_tiles(
            lambda t, origin, report: _run_tile(runner, traits, t, grid, origin, report),
            [pixels],
            grid,
            size,
            overlap,
            self.progress,
            self.cancel,
            shape=(grid.round_up(height), grid.round_up(width)),
            crop=result,
            depth=depth,
            factor=factor,
            grey=grey,
        )
        return out if depth is not None else out[: result[0], : result[1]]
