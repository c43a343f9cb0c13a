"""Diffusion SR backend: few-step residual-shifting diffusion (ResShift-style); the sampling loop in numpy around
ONNX Runtime.

Models are ONNX denoisers written by ``invsr-export`` / ``model_export/export_diffusion.py`` (``invsr.backend =
diffusion``), found in the model folders of :mod:`invsr_desktop.engine.model_files` (bundled, then the user's). One call maps
``(x_t, lr_up, t) -> x0`` (see that module); the schedule the model was trained with comes from its metadata
(``invsr.diffusion.kappa``, ``eta_min``, ``eta_max``, ``power``). With no diffusion model installed the plugin
describes no backend (and reports no error).

The sampler, with ``N`` steps (the ``steps`` parameter), ``y0`` the LR upsampled (OpenCV ``INTER_CUBIC``, what
training's ``F.interpolate(mode="bicubic")`` computes), ``eta(s) = eta_min * (eta_max / eta_min) ** (s ** power)``
and ``s_k = (k - 1) / (N - 1)`` for k = N .. 1::

    x = y0 + c kappa sqrt(eta(1)) eps_0
    for each step: x0 = clip(denoiser(x, y0, s_k), 0, 1)
                   x  = (eta' / eta) x + ((eta - eta') / eta) x0 + c kappa sqrt(eta' (eta - eta') / eta) eps_k
    result: the last x0 (eta' = 0 after the last step)

``c`` is the ``noise`` parameter (1 = what the model was trained for, 0 = deterministic). Noise ``eps_k`` at an
output pixel depends only on (seed, step, pixel position): it is drawn per fixed 256-pixel block of the output
with a generator seeded by (seed, step, block row, block column), so it does not depend on the tiling nor on the
image size.

Tiling without seams: the runner is a *whole-image* runner (``whole_image = True``): the engine hands it the whole
image and its :class:`~invsr_desktop.engine.tiling.Tiler`; every step runs the denoiser tile by tile through
``Tiler.map`` (memory bounded per ONNX call, tile size from the memory budget or the user's tile setting) and blends
all tiles into one ``x0`` before the update, so the tiles agree at every step and cannot drift apart. Tile origins
are multiples of the U-Net's block (``invsr.input_multiple``), so every tile sees the same pixel-unshuffle grid.

A prior-conditioned model (``invsr.diffusion.prior`` names an ``lr -> sr`` ONNX file in the model's folder, with
its sha256 in ``invsr.diffusion.prior_sha256``; SRDiff / ResDiff style, see
:mod:`model_export.training.models.diffusion`) has ``y0`` = the prior's output on the LR instead of the bicubic
upsample. The runner opens the prior through the same session cache, checks the file's sha256 against the
denoiser's metadata (a missing or different file is a :class:`ModelFileError` naming it: the pair was exported
together and only works together), and computes ``y0`` once per image before the first step, through
``Tiler.map`` on the LR (ordinary overlapped tiling: the prior is a plain conv net; each tile's output is packed
into ``scale * scale * 3`` channels per LR pixel, blended, and unpacked). Then it samples exactly as above. The
same seed still gives the same image on any tiling: ``y0`` is blended like any single-pass upscaler's output.

Memory: the sampler holds three full-size float32 arrays (``x``, ``y0`` and the step's blended ``x0``: 36 bytes
per output pixel) plus one tile's ONNX feeds; the update and the noise are applied to ``x`` in place, the noise
one 256-pixel cell at a time, and ``Tiler.map`` blends into its one result array. The numpy peak was 72 bytes per
output pixel before this was so (1024 x 1024 output, one tile), 48 now. The prior's pass stays below that: its
blended (packed) result and the unpacked ``y0`` (24 bytes per output pixel) before the sampler's arrays exist; the
ONNX side is in ``invsr.bytes_per_pixel``, which the exporter sets to the larger of the prior's and the denoiser's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from invsr_desktop.engine import model_metadata as keys
from invsr_desktop.engine.backend import BackendSpec, BuildRequest, Param
from invsr_desktop.engine.hookspecs import hookimpl
from invsr_desktop.engine.quality import quality_info

BACKEND = "diffusion"
NOISE_BLOCK = 256
MAX_STEPS = 50
DEFAULT_BYTES_PER_PIXEL = 16384
# The sampler's own (numpy) peak per *output* pixel, measured with tracemalloc on a run whose one tile is the whole
# image (diffusion_x4 architecture, 256 -> 1024, 4 steps; python -m model_export.commands.bench_diffusion --memory): x and
# y0 (12 bytes each) and the two NCHW feeds of the tile (24), or x, y0 and the blended x0 once the tile is added.
# It was 72 before the update, the noise and the blend worked in place (63 with 64-LR-pixel tiles, now 38).
SAMPLER_BYTES_PER_OUTPUT_PIXEL = 48


@dataclass(frozen=True)
class Schedule:
    """eta(s) = eta_min * (eta_max / eta_min) ** (s ** power), s in [0, 1]; kappa the noise scale."""

    kappa: float
    eta_min: float
    eta_max: float
    power: float

    def eta(self, s: float) -> float:
        s = min(1.0, max(0.0, float(s)))
        return self.eta_min * math.exp(math.log(self.eta_max / self.eta_min) * s**self.power)

    @staticmethod
    def timesteps(steps: int) -> list[float]:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if steps == 1:
            return [1.0]
        return [(k - 1) / (steps - 1) for k in range(steps, 0, -1)]


@dataclass(frozen=True)
class DiffusionModel:
    """One installed diffusion denoiser and what its metadata says."""

    id: str
    name: str
    path: Path
    scale: int
    input_multiple: int
    schedule: Schedule
    default_steps: int = 4
    bytes_per_pixel: int = DEFAULT_BYTES_PER_PIXEL  # the denoiser's (ONNX Runtime's) per LR pixel, from metadata
    trained_on: str = ""
    metadata: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    prior: Path | None = None  # the lr -> sr network whose output is y0 (None: bicubic)
    prior_sha256: str = ""


def _float(meta: dict[str, str], key: str, path: Path) -> float:
    from invsr_desktop.engine.errors import ModelFileError
    from invsr_desktop.engine.model_files import metadata_number

    value = metadata_number(meta, key, path)
    if value <= 0:
        raise ModelFileError(f"{path}: {key} is {meta[key]!r}; expected a positive number")
    return value


def model_from_file(f) -> DiffusionModel:
    """A :class:`DiffusionModel` from a :class:`invsr_desktop.engine.model_files.ModelFile` (ModelFileError if unusable)."""
    from invsr_desktop.engine.errors import ModelFileError
    from invsr_desktop.engine.model_files import metadata_int, metadata_scale

    meta, path = f.metadata, Path(f.path)
    scale = metadata_scale(meta, path)
    schedule = Schedule(*(_float(meta, keys.schedule_key(k), path) for k in ("kappa", "eta_min", "eta_max", "power")))
    if not schedule.eta_min < schedule.eta_max <= 1.0:
        raise ModelFileError(f"{path}: invsr.diffusion.eta_min / eta_max are not 0 < eta_min < eta_max <= 1")
    prior, prior_sha256 = _prior_of(meta, path)
    return DiffusionModel(
        id=path.stem,
        name=meta.get(keys.NAME) or path.stem,
        path=path,
        scale=scale,
        input_multiple=metadata_int(meta, keys.INPUT_MULTIPLE, 16, path),
        schedule=schedule,
        default_steps=min(MAX_STEPS, metadata_int(meta, keys.DIFFUSION_DEFAULT_STEPS, 4, path)),
        bytes_per_pixel=metadata_int(meta, keys.BYTES_PER_PIXEL, DEFAULT_BYTES_PER_PIXEL, path),
        trained_on=meta.get(keys.TRAINED_ON, ""),
        metadata=dict(meta),
        prior=prior,
        prior_sha256=prior_sha256,
    )


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _prior_of(meta: dict[str, str], path: Path) -> tuple[Path | None, str]:
    """The prior file a denoiser's metadata names (a plain ``.onnx`` file name in the denoiser's folder: metadata
    is untrusted and never points elsewhere) and its sha256; ``(None, "")`` for a bicubic-conditioned model."""
    from invsr_desktop.engine.errors import ModelFileError

    name = meta.get(keys.DIFFUSION_PRIOR, "")
    if not name:
        return None, ""
    if Path(name).name != name or name in (".", "..") or not name.lower().endswith(".onnx"):
        raise ModelFileError(f"{path}: invsr.diffusion.prior is {name!r}; expected the file name of an .onnx file "
                             "next to it (re-export it with invsr-export)")
    sha = meta.get(keys.DIFFUSION_PRIOR_SHA256, "").lower()
    if not _SHA256.fullmatch(sha):
        raise ModelFileError(f"{path}: invsr.diffusion.prior_sha256 is {sha!r}, not a sha256; re-export it with "
                             "invsr-export")
    return path.parent / name, sha


def open_prior(model: DiffusionModel, sessions) -> tuple[Any, int]:
    """``(session, input multiple)`` of the model's prior, checked: present, the very file the denoiser was exported
    with (sha256), an ``lr -> sr`` network at the model's scale. Any failure is a ModelFileError naming the file."""
    from invsr_desktop.engine.errors import ModelFileError
    from invsr_desktop.engine.model_files import file_sha256, metadata_int, metadata_scale, read_metadata

    prior = model.prior
    assert prior is not None
    pair = (f"{model.path.name} and its prior were exported together (invsr-export writes both): re-export or "
            "re-install the pair")
    if not prior.is_file():
        raise ModelFileError(f"the prior network {prior} of {model.path.name} is missing; {pair}")
    try:
        sha = file_sha256(prior)
    except OSError as exc:
        raise ModelFileError(f"cannot read the prior network {prior}: {exc.strerror or exc}") from None
    if sha != model.prior_sha256:
        raise ModelFileError(f"the prior network {prior} is not the one {model.path.name} was exported with (sha256 "
                             f"{sha[:12]}..., expected {model.prior_sha256[:12]}...); {pair}")
    meta = read_metadata(prior)
    if metadata_scale(meta, prior) != model.scale:
        raise ModelFileError(f"the prior network {prior} is x{meta.get('invsr.scale')}, but {model.path.name} is "
                             f"x{model.scale}; {pair}")
    session = sessions.session(prior)
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if "lr" not in inputs or "sr" not in outputs:
        raise ModelFileError(f"the prior network {prior} has inputs {inputs} and outputs {outputs}; it must map "
                             f"'lr' to 'sr'; {pair}")
    return session, metadata_int(meta, keys.INPUT_MULTIPLE, 1, prior)


def run_bytes_per_pixel(model: DiffusionModel) -> int:
    """Memory per LR pixel of a sampling run whose tile is the whole image, what the engine sizes tiles by: the
    denoiser's estimate from the model's metadata plus the sampler's measured numpy arrays at the output size."""
    return model.bytes_per_pixel + SAMPLER_BYTES_PER_OUTPUT_PIXEL * model.scale * model.scale


def find_models(files: list | None = None) -> list[DiffusionModel]:
    """Every usable diffusion model among ``files`` (default: the model folders' files whose ``invsr.backend`` is
    ``diffusion``); a file with unusable metadata is reported through the model folder's problem list and skipped."""
    from invsr_desktop.engine.model_files import report_problem, scan

    models = []
    for f in scan(BACKEND) if files is None else files:
        try:
            models.append(model_from_file(f))
        except Exception as exc:  # noqa: BLE001 - ModelFileError / ValueError: skip this one, keep the others
            report_problem(Path(f.path), str(exc))
    return models


def pick_model(models: list[DiffusionModel], name: str, scale: float) -> DiffusionModel:
    """The model with id ``name``; for ``auto``, ``diffusion-x<scale>`` (the bundled general-purpose model: other
    models at the scale, such as ``diffusion-photo-x4``, may sort before it), else the first at ``scale``, else the
    first of any scale."""
    if name and name != "auto":
        for m in models:
            if m.id == name:
                return m
        raise ValueError(f"diffusion model {name!r} is not installed")
    if not models:
        raise ValueError("no diffusion model is installed")
    s = int(round(scale))
    at_scale = [m for m in models if m.scale == s]
    default = [m for m in at_scale if m.id == f"diffusion-x{s}"]
    return (default or at_scale or models)[0]


# -- noise keyed by output position ----------------------------------------------------------------------------


def _noise_cell(seed: int, step: int, row: int, col: int, block: int) -> np.ndarray:
    """The unit normal float32 (block, block, 3) cell of output block (row, col) at (seed, step)."""
    rng = np.random.default_rng([int(seed), int(step), row, col])
    return rng.standard_normal((block, block, 3), dtype=np.float32)


def position_noise(seed: int, step: int, height: int, width: int, block: int = NOISE_BLOCK) -> np.ndarray:
    """Unit normal float32 (height, width, 3): the value at a pixel depends only on (seed, step, its position):
    each ``block`` x ``block`` cell of the output grid has its own generator seeded with (seed, step, row, col)."""
    out = np.zeros((height, width, 3), dtype=np.float32)
    add_position_noise(out, seed, step, 1.0, block)
    return out


def add_position_noise(x: np.ndarray, seed: int, step: int, amount: float, block: int = NOISE_BLOCK) -> None:
    """``x += amount * position_noise(seed, step, *x.shape[:2])``, in place and one cell at a time: the same
    float32 values without a full-size noise array and its scaled copy (two of the sampler's largest temporaries)."""
    height, width = x.shape[:2]
    for by in range(0, height, block):
        for bx in range(0, width, block):
            cell = _noise_cell(seed, step, by // block, bx // block, block)
            h, w = min(block, height - by), min(block, width - bx)
            part = cell[:h, :w]
            if amount != 1.0:
                part *= amount
            x[by : by + h, bx : bx + w] += part


def upsample(lr: np.ndarray, scale: int) -> np.ndarray:
    """y0: bicubic (a = -0.75, half-pixel centres, edges repeated), not clipped; what training's condition is."""
    import cv2

    h, w = lr.shape[:2]
    return cv2.resize(lr, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


# -- the runner ----------------------------------------------------------------------------------------------


@dataclass
class DiffusionRunner:
    """Whole-image sampler: ``run_whole(lr, tiler) -> sr`` (see the module doc)."""

    session: Any
    scale: float
    input_multiple: int
    schedule: Schedule
    steps: int = 4
    seed: int = 0
    noise: float = 1.0
    model_name: str = ""
    multiple: int = 1
    whole_image: bool = True
    prior_session: Any = None  # lr -> sr network whose output is y0 (None: bicubic)
    prior_multiple: int = 1

    def denoise(self, x_t: np.ndarray, y0: np.ndarray, s: float) -> np.ndarray:
        """One ONNX call on (h, w, 3) arrays -> x0 (h, w, 3)."""
        feeds = {
            "x_t": np.ascontiguousarray(x_t.transpose(2, 0, 1)[None], dtype=np.float32),
            "lr_up": np.ascontiguousarray(y0.transpose(2, 0, 1)[None], dtype=np.float32),
            "t": np.array([s], dtype=np.float32),
        }
        (x0,) = self.session.run(["x0"], feeds)
        return x0[0].transpose(1, 2, 0)

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        """A single tile sampled on its own (no blending across tiles); the engine calls :meth:`run_whole`."""
        from invsr_desktop.engine.tiling import Tiler

        return self.run_whole(tile, Tiler(tile=max(tile.shape[:2])))

    def run_prior(self, lr: np.ndarray, scale: int) -> np.ndarray:
        """One prior call on an LR tile (h, w, 3) -> its output packed per LR pixel (h, w, scale * scale * 3)."""
        feeds = {"lr": np.ascontiguousarray(lr.transpose(2, 0, 1)[None], dtype=np.float32)}
        (sr,) = self.prior_session.run(["sr"], feeds)
        return pack(sr[0].transpose(1, 2, 0), scale)

    def condition(self, lr: np.ndarray, scale: int, tiler, span: tuple[float, float]) -> np.ndarray:
        """``y0``: the prior's output (one tiled, blended pass over the LR), or the bicubic upsample."""
        if self.prior_session is None:
            return upsample(lr, scale)
        tiler.check_cancel()
        packed = tiler.map(lambda t, origin: self.run_prior(t, scale), lr, multiple=self.prior_multiple, span=span)
        return unpack(packed, scale)

    def run_whole(self, lr: np.ndarray, tiler) -> np.ndarray:
        """The sampler (module doc). Full-size arrays: ``x`` and ``y0``, plus the one ``Tiler.map`` returns each
        step; the update and the noise are applied to ``x`` in place (see :data:`SAMPLER_BYTES_PER_OUTPUT_PIXEL`)."""
        scale = int(round(self.scale))
        ss = self.schedule.timesteps(self.steps)
        n = len(ss)
        passes = n + (self.prior_session is not None)  # progress: the prior's pass counts as one more
        first = passes - n
        y0 = self.condition(np.ascontiguousarray(lr, dtype=np.float32), scale, tiler, (0.0, first / passes))
        etas = [self.schedule.eta(s) for s in ss] + [0.0]
        c = self.noise * self.schedule.kappa
        x = y0.copy()
        if c > 0:
            add_position_noise(x, self.seed, 0, c * math.sqrt(etas[0]))
        overlap = 2 * self.input_multiple
        for i, s in enumerate(ss):
            tiler.check_cancel()
            span = ((first + i) / passes, (first + i + 1) / passes)
            x0 = tiler.map(lambda xt, cond, origin: self.denoise(xt, cond, s), x, y0, density=scale,
                           multiple=self.input_multiple, min_overlap=overlap, span=span)
            np.clip(x0, 0.0, 1.0, out=x0)
            eta, prev = etas[i], etas[i + 1]
            if prev == 0.0:
                return x0
            step_update(x, x0, prev / eta, (eta - prev) / eta)
            del x0  # before the next map allocates its result: one blended array alive at a time
            if c > 0:
                add_position_noise(x, self.seed, i + 1, c * math.sqrt(prev * (eta - prev) / eta))
        return x  # pragma: no cover - the last step always has prev == 0


def pack(sr: np.ndarray, scale: int) -> np.ndarray:
    """(s h, s w, C) -> (h, w, s s C): each LR pixel's s x s output block in its channels, so a pass that upscales
    can be tiled and blended on the LR grid by ``Tiler.map`` (whose results have their input's size)."""
    h, w, c = sr.shape[0] // scale, sr.shape[1] // scale, sr.shape[2]
    return sr.reshape(h, scale, w, scale, c).transpose(0, 2, 1, 3, 4).reshape(h, w, scale * scale * c)


def unpack(packed: np.ndarray, scale: int) -> np.ndarray:
    """The inverse of :func:`pack`: (h, w, s s C) -> (s h, s w, C), a new contiguous float32 array."""
    h, w = packed.shape[:2]
    c = packed.shape[2] // (scale * scale)
    out = packed.reshape(h, w, scale, scale, c).transpose(0, 2, 1, 3, 4).reshape(h * scale, w * scale, c)
    return np.ascontiguousarray(out, dtype=np.float32)


def step_update(x: np.ndarray, x0: np.ndarray, keep: float, take: float) -> None:
    """``x = keep * x + take * x0`` in place, with no temporary (``x0`` is overwritten): the same float32
    operations, so the same bits, as the expression."""
    np.multiply(x, keep, out=x)
    np.multiply(x0, take, out=x0)
    np.add(x, x0, out=x)


def build(request: BuildRequest) -> DiffusionRunner:
    model = pick_model(find_models(), request.params.get("model", "auto"), request.scale)
    session = request.sessions.session(model.path)
    names = {i.name for i in session.get_inputs()}
    if not {"x_t", "lr_up", "t"} <= names:
        from invsr_desktop.engine.errors import ModelFileError

        raise ModelFileError(f"{model.path} has inputs {sorted(names)}; a diffusion denoiser takes x_t, lr_up and t "
                             "(re-export it with invsr-export)")
    prior_session, prior_multiple = open_prior(model, request.sessions) if model.prior is not None else (None, 1)
    p = request.params
    return DiffusionRunner(session, float(model.scale), model.input_multiple, model.schedule,
                           int(p.get("steps", model.default_steps)), int(p.get("seed", 0)),
                           float(p.get("noise", 1.0)), model.id, prior_session=prior_session,
                           prior_multiple=prior_multiple)  # fmt: skip


@hookimpl
def invsr_backends() -> list[BackendSpec]:
    models = find_models()
    if not models:
        return []
    default_steps = models[0].default_steps
    return [
        BackendSpec(
            id="diffusion",
            name="Diffusion (residual shifting)",
            kind="diffusion",
            scales=tuple(sorted({m.scale for m in models})),
            build=build,
            params=(
                Param("steps", int, default_steps, 1, MAX_STEPS, label="Steps",
                      help="sampling steps: more is slower; 4 to 15 is the useful range"),
                Param("seed", int, 0, 0, 2**31 - 1, label="Seed",
                      help="seed of the sampled noise: the same seed gives the same image, on any tiling"),
                Param("noise", float, 1.0, 0.0, 2.0, label="Noise scale",
                      help="scale of the sampled noise: 1 = what the model was trained for, 0 = deterministic "
                           "(smoother), above 1 = more invented detail"),
                Param("model", str, "auto", choices=("auto", *(m.id for m in models)), label="Model",
                      help="diffusion model by id (auto: diffusion-x<scale> where installed, else the first at the "
                           "scale)"),
            ),  # fmt: skip
            description="Few-step residual-shifting diffusion (ResShift-style): starts from the upscaled photo plus "
            "noise and refines it over a few steps, inventing plausible fine detail. Tiles are blended at every "
            "step, so large images show no seams.",
            bytes_per_pixel=max(run_bytes_per_pixel(m) for m in models),
            info={"models": ", ".join(m.id for m in models),
                  **quality_info(pick_model(models, "auto", max(m.scale for m in models)).metadata)},
        )
    ]
