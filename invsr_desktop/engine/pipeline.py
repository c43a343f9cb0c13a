"""The one pipeline: load -> alpha split -> tiles -> backend -> blend -> alpha merge -> resample -> save.

The GUI, the CLI (both through the job queue), ``invsr-eval`` and the benchmarks all call :class:`Engine`; there is
no second copy of this anywhere. Every piece of work is a :class:`~invsr_desktop.engine.task.Task` (upscale, shrink
or restore) and :meth:`Engine.run_file` is its one load -> run -> save. Nothing here knows about Qt or torch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import cv2
import numpy as np

from invsr_desktop.engine.backend import BackendSpec, BuildRequest, Runner, RunnerTraits
from invsr_desktop.engine.errors import BackendError, CancelledError, InvsrError
from invsr_desktop.engine.formats import JPEG_SUFFIXES
from invsr_desktop.engine.imageio import Image, format_for_suffix, header_size, load_image, save_image, stored_depth
from invsr_desktop.engine.pixels import luma, quantize
from invsr_desktop.engine.provenance import Provenance, find_done, stamp
from invsr_desktop.engine.registry import Registry, default_registry
from invsr_desktop.engine.sessions import Precision, SessionPool
from invsr_desktop.engine.shrink_marker import ShrinkMarker, read_file_marker, read_marker, with_marker, without_marker
from invsr_desktop.engine.task import Task, TaskError, TaskMode
from invsr_desktop.engine.tiling import Cancel, Progress, Tiler, reflect_pad

AlphaMode = Literal["bicubic", "backend"]


@dataclass
class EngineOptions:
    """User settings that shape how (not what) the engine computes; persisted by the GUI."""

    provider: str = "auto"
    threads: int = 0
    precision: Precision = "fast"  # "fp32" never trades accuracy for speed (see engine.sessions)
    tile: int | None = None
    overlap: int | None = None
    memory_budget_mb: int = 1024
    alpha: AlphaMode = "bicubic"


@dataclass
class Engine:
    """Upscales arrays, images and files with any registered backend.

    Runners are cached per (backend, native scale, parameters), sessions per model file, so a batch builds each
    model once. Methods are safe to call from one worker thread while another thread reads ``sessions``.
    """

    registry: Registry = field(default_factory=default_registry)
    options: EngineOptions = field(default_factory=EngineOptions)
    on_message: Callable[[str], None] | None = None
    sessions: SessionPool = field(init=False)
    _runners: dict[tuple, Runner] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.sessions = self._pool(self.options)

    def _pool(self, options: EngineOptions) -> SessionPool:
        return SessionPool(options.provider, options.threads, on_message=self.on_message, precision=options.precision)

    def configure(self, options: EngineOptions) -> None:
        """Apply new settings; sessions and runners are rebuilt lazily when the provider, threads or precision
        change."""
        old = self.options
        if (options.provider, options.threads, options.precision) != (old.provider, old.threads, old.precision):
            self.sessions = self._pool(options)
            self._runners.clear()
        self.options = options

    def runner(
        self, backend_id: str, scale: float, params: dict[str, Any] | None = None, stored_as: str = "png",
        jpeg_quality: int | None = None,
    ) -> tuple[BackendSpec, Runner]:
        """The backend's spec and a (cached) runner built at the native scale that serves ``scale``; ``stored_as``
        and ``jpeg_quality`` say how its result is saved (see :class:`BuildRequest`)."""
        spec = self.registry.get(backend_id)
        resolved = spec.resolve_params(params)
        native = spec.native_scale_for(scale)
        key = (backend_id, native, tuple(sorted(resolved.items())), stored_as, jpeg_quality)
        with self._lock:
            if key not in self._runners:
                request = BuildRequest(scale=native, params=resolved, sessions=self.sessions, stored_as=stored_as,
                                       jpeg_quality=jpeg_quality)  # fmt: skip
                runner = self.registry.build(backend_id, request)
                self._runners[key] = runner
            return spec, self._runners[key]

    # -- arrays ------------------------------------------------------------------------------------------------
    def upscale_array(
        self,
        pixels: np.ndarray,
        backend_id: str,
        scale: float,
        params: dict[str, Any] | None = None,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        depth: int | None = None,
    ) -> np.ndarray:
        """Upscale float32 (H, W, C) pixels in [0, 1], C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).

        Returns float32 (round(sH), round(sW), C) in [0, 1], or where ``depth`` (8 or 16) is given and the
        pipeline can round tiles straight into the file's integers (RGB or grey, alpha by bicubic, at the runner's
        native scale or a whole reduction of it), uint8 / uint16: a file's result never held in float32 (see :meth:`run_array`). Grey is run as RGB
        and brought back to one channel; alpha is upscaled separately (bicubic pass or the backend,
        ``options.alpha``) and merged back.
        """
        spec, runner = self.runner(backend_id, scale, params)
        if spec.direction != "up":
            raise ValueError(f"backend {backend_id!r} shrinks images; use it through shrink (invsr-upscale --shrink)")
        target = (int(round(pixels.shape[0] * scale)), int(round(pixels.shape[1] * scale)))
        return self.run_array(pixels, spec, runner, target, progress, cancel, depth)

    def run_array(
        self,
        pixels: np.ndarray,
        spec: BackendSpec,
        runner: Runner,
        target: tuple[int, int],
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        depth: int | None = None,
    ) -> np.ndarray:
        """The pipeline behind :meth:`upscale_array` (and shrink) with a built runner and a target (height, width).

        Grey is run as RGB and brought back to one channel; alpha is resized separately (bicubic, area when
        shrinking, or the backend) and merged back; the result is resampled to ``target`` if the runner's native
        size differs. With ``depth``, an image (RGB or grey, alpha resized with bicubic) whose native result is the
        target or a whole reduction of it comes back as uint8 / uint16, rounded tile row by tile row as a file stores it (a 4000 x 3000 photo x2 then holds a
        144 MB result, not a 576 MB float32 one); anything else comes back as float32, rounded when saved.
        """
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        channels = pixels.shape[2]
        if channels not in (1, 2, 3, 4):
            raise ValueError(f"expected 1 to 4 channels, got {channels}")
        colour_channels = 1 if channels in (1, 2) else 3
        colour = pixels[..., :colour_channels].astype(np.float32, copy=False)
        alpha = pixels[..., colour_channels:] if channels in (2, 4) else None
        alpha_by_backend = alpha is not None and self.options.alpha == "backend"
        share = 0.5 if alpha_by_backend else 1.0

        factor = _whole_factor(pixels.shape[:2], RunnerTraits.of(runner).scale, target)
        stream = (depth, factor) if depth is not None and factor and not alpha_by_backend else None
        streamed = STREAMED_BYTES_PER_OUTPUT_PIXEL + (8 if alpha is not None else 0)  # alpha: resampled in float
        check_memory(target, per_pixel=streamed if stream else BYTES_PER_OUTPUT_PIXEL)
        rgb = np.repeat(colour, 3, axis=2) if colour_channels == 1 else colour
        grey = colour_channels == 1
        out = self._run(rgb, spec, runner, target, _scaled(progress, 0.0, share), cancel, stream, grey)
        if out.dtype != np.float32:  # the file's integers already (alpha: resampled whole, one channel, then rounded)
            if alpha is not None:
                out = np.concatenate([out, quantize(resample(alpha, target), depth)], axis=2)
            if progress:
                progress(1.0)
            return out
        if colour_channels == 1:
            out = luma(out)
        if alpha is not None:
            if alpha_by_backend:
                a = self._run(np.repeat(alpha, 3, axis=2), spec, runner, target, _scaled(progress, share, share), cancel)
                a = a.mean(axis=2, keepdims=True)
            else:
                a = resample(alpha, target)
            out = np.concatenate([out, a], axis=2)
        if progress:
            progress(1.0)
        out = out.astype(np.float32, copy=False)
        if not out.flags.writeable or np.may_share_memory(out, pixels):  # a runner may hand back its input
            out = out.copy()
        return np.clip(out, 0.0, 1.0, out=out)  # in place: a second full-size float image would double the peak

    def _run(
        self,
        rgb: np.ndarray,
        spec: BackendSpec,
        runner: Runner,
        target: tuple[int, int],
        progress: Progress | None,
        cancel: Cancel | None,
        stream: tuple[int, int] | None = None,
        grey: bool = False,
    ) -> np.ndarray:
        """Tiles -> backend -> blend, then resample from the native scale to the target size if they differ.

        A ``whole_image`` runner gets the whole image and the engine's tiler instead (it tiles each model pass).
        ``stream`` = (depth, whole factor): the result as the file's integers, the native result reduced by the
        factor on the way (see :meth:`run_array`); with ``grey`` those integers are one channel, the luma.
        """
        o = self.options
        tiler = Tiler(o.tile, o.overlap, o.memory_budget_mb << 20, spec.bytes_per_pixel, progress, cancel)
        depth, factor = stream or (None, 1)
        try:
            out = tiler.upscale(rgb, runner, depth, factor, grey)
        except BackendError as exc:
            model = RunnerTraits.of(runner).model_name
            who = f'Backend "{spec.id}"' + (f" (model {model})" if model else "")
            raise BackendError(f"{who}: {exc}") from exc
        return resample(out, target) if out.shape[:2] != target else out

    # -- images and files --------------------------------------------------------------------------------------
    def upscale_image(
        self,
        image: Image,
        backend_id: str,
        scale: float,
        params: dict[str, Any] | None = None,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        depth: int | None = None,
    ) -> Image:
        """Upscale a loaded image; metadata (EXIF, ICC, bit depth) travels with it to the result. ``depth``: the
        result may hold the file's integers (see :meth:`upscale_array`)."""
        pixels = self.upscale_array(image.pixels, backend_id, scale, params, progress, cancel, depth)
        return image.with_pixels(pixels)

    # -- tasks: upscale, shrink, restore ----------------------------------------------------------------------
    def run_image(self, image: Image, task: Task, progress: Progress | None = None, cancel: Cancel | None = None,
                  stored_as: str = "png", depth: int | None = None, jpeg_quality: int | None = None) -> Image:
        """Run one task on a loaded image; metadata travels with it. ``stored_as`` is the format the result will
        be saved in, ``jpeg_quality`` a JPEG's quality (a shrink picks a JPEG-robust model for them, see
        :class:`BuildRequest`); ``depth``, the bit depth it will be saved with, lets an upscale's result hold the
        file's integers (see :meth:`upscale_array`).

        A shrink's or restore's ValueError / KeyError (no such model, a damaged marker, ...) becomes a
        :class:`TaskError` with the same message, so a queue row shows the reason and not an exception's name."""
        task.check()
        if task.mode is TaskMode.UPSCALE:
            return self.upscale_image(image, task.backend_id, task.scale, task.params, progress, cancel, depth)
        try:
            if task.mode is TaskMode.SHRINK:
                return self._shrink(image, task, progress, cancel, stored_as, jpeg_quality)
            return self._restore(image, task, progress, cancel)
        except (KeyError, ValueError) as exc:
            raise TaskError(str(exc.args[0]) if exc.args else type(exc).__name__) from exc

    def run_file(
        self,
        source: str | Path,
        destination: str | Path,
        task: Task,
        quality: int = 95,
        lossless: bool = False,
        max_pixels: int | None = None,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
    ) -> Path:
        """The one runner of a task: load ``source``, run ``task``, write ``destination`` atomically (never over an
        existing file: if another program took the name meanwhile, the next numbered copy's name); returns the path
        written. An upscale's result carries its :class:`~invsr_desktop.engine.provenance.Provenance` record."""
        stored_as = "jpeg" if Path(destination).suffix.lower() in JPEG_SUFFIXES else "png"
        fmt = format_for_suffix(destination)

        def run(image: Image) -> Image:
            # JPEG flattens alpha onto white when saving: from the float colour, as it always has
            depth = stored_depth(image, fmt) if fmt and not (fmt == "JPEG" and image.has_alpha) else None
            result = self.run_image(image, task, progress, cancel, stored_as, depth,
                                    quality if stored_as == "jpeg" else None)  # fmt: skip
            if task.mode is TaskMode.UPSCALE:
                result.exif = stamp(result.exif, self.provenance(source, task))
            return result

        return transform_file(source, destination, run, scale=_result_scale(task, source), quality=quality,
                              lossless=lossless, max_pixels=max_pixels, cancel=cancel)  # fmt: skip

    def shrink_backends(self) -> list[BackendSpec]:
        """The specs of the registered shrinking backends (``direction == "down"``)."""
        return [spec for spec in self.registry.backends() if spec.direction == "down"]

    def _shrink(self, image: Image, task: Task, progress: Progress | None, cancel: Cancel | None,
                stored_as: str, jpeg_quality: int | None = None) -> Image:
        """The small image (ceil(H / factor) x ceil(W / factor)) with the marker, metadata kept.

        The runner may resolve ``model`` = auto to a concrete model (``runner.model_name``: for ``stored_as`` =
        ``jpeg`` one trained to survive JPEG at ``jpeg_quality``, where one is installed), which is what the marker
        records.
        """
        factor, spec = task.factor, self.registry.get(task.backend_id)
        if spec.direction != "down":
            others = ", ".join(s.id for s in self.shrink_backends()) or "none installed"
            raise ValueError(f"backend {spec.id!r} does not shrink images (use one of: {others})")
        if factor not in spec.scales:
            raise ValueError(f"backend {spec.id!r} shrinks by {', '.join(map(str, spec.scales))}, not {factor}")
        resolved = spec.resolve_params(task.params)
        spec, runner = self.runner(spec.id, factor, resolved, stored_as=stored_as, jpeg_quality=jpeg_quality)
        height, width = image.pixels.shape[:2]
        ph, pw = -(-height // factor) * factor, -(-width // factor) * factor
        grey = image.pixels.shape[2] in (1, 2)
        small = self.run_array(reflect_pad(_as_rgb(image.pixels), ph, pw), spec, runner, (ph // factor, pw // factor),
                               progress, cancel)  # fmt: skip
        model = RunnerTraits.of(runner).model_name or (str(resolved.get("model", "")) if _has_model(spec) else "")
        marker = ShrinkMarker(spec.restored_by, model, factor, width, height, grey=grey)
        result = with_marker(image.with_pixels(small), marker)
        if grey and _is_grey_profile(result.icc_profile):
            result.icc_profile = None  # a grey ICC profile does not describe the RGB small image
        return result

    def _restore(self, image: Image, task: Task, progress: Progress | None, cancel: Cancel | None) -> Image:
        """The full-size image restored from a shrunk one (its marker says how), the marker removed from the EXIF.

        ``task.params`` are extra parameters of the restoring backend (e.g. ``temperature``); ``model`` comes from
        the marker."""
        marker = task.marker or read_marker(image)
        if marker is None:
            raise ValueError("not a shrunk image: it has no invsr-shrink marker "
                             "(only images made by Shrink can be restored)")  # fmt: skip
        try:
            spec = self.registry.get(marker.backend)
        except KeyError:
            raise ValueError(f"this image was shrunk with backend {marker.backend!r}, which is not installed") from None
        given = dict(task.params)
        if marker.model and _has_model(spec):
            given["model"] = marker.model
        try:
            resolved = spec.resolve_params(given)
        except ValueError as exc:
            raise ValueError(f"cannot restore: the image was shrunk with model {marker.model!r} ({exc})") from None
        spec, runner = self.runner(marker.backend, marker.scale, resolved)
        h, w = image.pixels.shape[:2]
        full = self.run_array(image.pixels, spec, runner, (h * marker.scale, w * marker.scale), progress, cancel)
        full = full[: marker.height, : marker.width]
        if marker.grey and full.shape[2] in (3, 4):
            full = np.concatenate([luma(full[..., :3]), full[..., 3:]], axis=2)
        return without_marker(image.with_pixels(np.ascontiguousarray(full)))

    def earlier_result(self, source: str | Path, first_name: Path, task: Task) -> Path | None:
        """A result of exactly this upscale written before (``first_name`` or a numbered copy of it, with the same
        provenance record, decoding whole), or None: what the CLI's ``--skip-existing`` and the app's "done before"
        both ask. A backend that is gone or a parameter that no longer fits is None: the run reports it."""
        try:
            record = self.provenance(source, task)
        except (KeyError, ValueError):
            return None
        return find_done(first_name, record)

    def provenance(self, source: str | Path, task: Task) -> Provenance:
        """The record an upscale of ``source`` with these settings writes (parameters resolved: a default given
        or left out is the same setting)."""
        resolved = self.registry.get(task.backend_id).resolve_params(task.params)
        return Provenance.of("upscale", task.backend_id, task.scale, resolved, source)


def _whole_factor(size: tuple[int, int], scale: float, target: tuple[int, int]) -> int | None:
    """The whole factor by which the runner's native result (``size`` x ``scale``) is area-reduced to ``target``
    (1: it is the target; 2: a x4 model serving x2), None where the step is not a whole reduction (a resample of
    the float result then follows)."""
    native = (int(round(size[0] * scale)), int(round(size[1] * scale)))
    factor = native[0] // target[0] if target[0] else 0
    return factor if factor >= 1 and native == (target[0] * factor, target[1] * factor) else None


def _as_rgb(pixels: np.ndarray) -> np.ndarray:
    """Grey (and grey + alpha) pixels as RGB (and RGBA); colour ones as they are."""
    if pixels.shape[2] not in (1, 2):
        return pixels
    return np.concatenate([np.repeat(pixels[..., :1], 3, axis=2), pixels[..., 1:]], axis=2)


def _is_grey_profile(icc: bytes | None) -> bool:
    """An ICC profile whose data colour space (header bytes 16-19) is grey."""
    return bool(icc) and len(icc) >= 20 and icc[16:20] == b"GRAY"


def _has_model(spec: BackendSpec) -> bool:
    return any(p.name == "model" for p in spec.params)


def _result_scale(task: Task, source: str | Path) -> float | None:
    """The result's size over the input's, for the memory check made from the header (None: smaller, or unknown)."""
    if task.mode is TaskMode.UPSCALE:
        return task.scale
    if task.mode is TaskMode.RESTORE:
        try:
            marker = task.marker or read_file_marker(source)
        except ValueError:  # a damaged marker: the run itself says what is wrong with it
            return None
        return float(marker.scale) if marker is not None else None
    return None


def transform_file(
    source: str | Path,
    destination: str | Path,
    transform: Callable[[Image], Image],
    *,
    scale: float | None = None,
    quality: int = 95,
    lossless: bool = False,
    max_pixels: int | None = None,
    cancel: Cancel | None = None,
) -> Path:
    """The one load -> transform -> save of a file, for upscale, shrink and restore alike: with ``scale`` (the
    result's size over the input's) the result's memory is checked from the header before any pixel is decoded (a
    small file can hold a huge image); nothing is written once ``cancel()`` is true; the result is written
    atomically and never over a file (a name taken meanwhile gets the next numbered copy's)."""
    if scale is not None:
        size = header_size(source)
        if size is not None:  # the least any path needs: the run checks its own figure once the image is decoded
            check_memory((int(round(size[1] * scale)), int(round(size[0] * scale))),
                         per_pixel=STREAMED_BYTES_PER_OUTPUT_PIXEL)
    image = load_image(source, max_pixels=max_pixels)
    result = transform(image)
    del image  # the input's float32 pixels are not needed while the result is encoded
    if cancel and cancel():
        raise CancelledError("cancelled")
    return save_image(result, destination, quality=quality, lossless=lossless, renumber=True)


#: Bytes of memory one output pixel costs at the peak of a run that holds its result in float32 (alpha, grey, a
#: resample that is not a whole reduction): the float32 RGB accumulator, the clipped result, a resample or alpha
#: merge, and the encoder's 8/16-bit copy (measured peak on a 4000 x 3000 x2 run: about 30).
BYTES_PER_OUTPUT_PIXEL = 40
#: ... and one whose tiles stream into the file's integers: the 8 / 16-bit result, the encoder's copy, the input's
#: float32 pixels (measured on 4000 x 3000 x2 runs above the process's own: bicubic 7, ESRGAN 9).
STREAMED_BYTES_PER_OUTPUT_PIXEL = 16


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux's MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(
    target: tuple[int, int], available: int | None = None, per_pixel: int = BYTES_PER_OUTPUT_PIXEL
) -> None:
    """Refuse, before any work, a result that cannot fit in memory (a 196-megapixel PNG upscaled x4 is a 3.1
    gigapixel result, 125 GB at this pipeline's float peak), with the figures and what to do; ``per_pixel``: the
    bytes one output pixel costs on the path that will run."""
    free = available_memory() if available is None else available
    need = target[0] * target[1] * per_pixel
    if free is None or need <= free:
        return
    raise ImageTooLargeForMemoryError(
        f"the result would be {target[1]} x {target[0]} pixels ({target[0] * target[1] / 1e6:.0f} megapixels), "
        f"which needs about {need / 2**30:.1f} GB of memory; {free / 2**30:.1f} GB is free. Choose a smaller "
        "scale, or shrink the photo first."
    )


class ImageTooLargeForMemoryError(InvsrError):
    """The result of this image at this scale would not fit in the memory the machine has free."""


def resample(pixels: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, C) to ``target`` (height, width): area averaging when shrinking (no aliasing), bicubic when
    enlarging. Used for the step from a backend's native scale to the requested one, and for alpha."""
    interpolation = cv2.INTER_AREA if pixels.shape[0] > target[0] else cv2.INTER_CUBIC
    out = cv2.resize(pixels, (target[1], target[0]), interpolation=interpolation)
    return out[..., None] if out.ndim == 2 else out  # OpenCV drops a single channel


def _scaled(progress: Progress | None, start: float, share: float) -> Progress | None:
    """Map a pass's own 0..1 progress into its share of the whole job."""
    if progress is None:
        return None
    return lambda fraction: progress(start + share * fraction)
