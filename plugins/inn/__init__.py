"""Invertible rescaling network (IRN-style INN) backends: "INN upscale / restore" and "INN shrink".

Models are pairs of ONNX files written by ``model_export/export_inn.py`` (``inn_<name>_up.onnx`` and
``inn_<name>_down.onnx``), found by their metadata (``invsr.backend = inn``, ``invsr.direction``, ``invsr.scale``,
``invsr.name``) in the model folders of :mod:`invsr_desktop.engine.model_files` (bundled, then the user's). With no
INN model installed the plugin describes no backend (and reports no error).

- ``inn`` (INN upscale / restore): the inverse ``(lr, z, temperature) -> sr`` on any image. ``temperature`` scales a
  unit normal ``z`` (0 = the mean: the sharpest PSNR-wise and what restoring a shrunk image uses); ``seed`` makes
  a sample repeatable. ``z`` is drawn per LR pixel from a counter-based hash of (seed, channel, row, column) of
  the whole image, not per tile, so one seed gives the same image whatever the tiling.
- ``inn-shrink`` (INN shrink): the forward ``hr -> lr`` (z is dropped): the small image of shrink-and-restore; its
  runner has scale 1/f. The engine runs it only as a shrink task (:mod:`invsr_desktop.engine.task`).

``model`` (both) picks a model by name; ``auto`` takes the first one at the requested scale, preferring the one
trained for the format the result is stored in (``invsr.stored_as``: ``png``, or ``jpeg`` for a shrink trained
through a JPEG simulation, whose small image survives being saved and shared as JPEG; ``BuildRequest.stored_as``).
Among JPEG shrinks, one whose ``invsr.jpeg_qualities`` range holds the quality the small image is saved at comes
first, then one with no range: a shrink trained for q60-85 gains at q75 what it loses at q95 against one trained
for q70-95.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from invsr_desktop.engine import model_metadata as keys
from invsr_desktop.engine.backend import BackendSpec, BuildRequest, Param
from invsr_desktop.engine.hookspecs import hookimpl
from invsr_desktop.engine.quality import quality_info

UP_SUFFIX, DOWN_SUFFIX = "_up.onnx", "_down.onnx"


@dataclass(frozen=True)
class INNModel:
    """One installed INN: its two files and what their metadata says."""

    name: str
    scale: int
    up: Path
    down: Path | None
    z_channels: int
    noise_max: float = 1.0
    trained_on: str = ""
    stored_as: str = "png"
    supersedes: str = ""  # the model this one replaces for ``auto``; that one stays to restore what it shrank
    jpeg_qualities: tuple[int, int] | None = None  # the JPEG qualities a jpeg shrink is for (None: any)
    metadata: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def find_models(files: list | None = None) -> list[INNModel]:
    """Every INN model (an ``up`` file, with its ``down`` partner when present) among ``files`` (default: the model
    folders' files whose ``invsr.backend`` is ``inn``, see :mod:`invsr_desktop.engine.model_files`), in scan order.

    A file with incomplete INN metadata is reported through the model folder's problem list and skipped.
    """
    from invsr_desktop.engine.model_files import metadata_int, metadata_scale, report_problem, scan

    ups: dict[str, tuple[Path, dict[str, str]]] = {}
    downs: dict[str, Path] = {}
    for f in scan("inn") if files is None else files:
        meta, path = f.metadata, Path(f.path)
        direction = meta.get(keys.DIRECTION)
        # the model's id (what --param model= and the shrink marker name) comes from the file name, as for every
        # model folder file; invsr.name is only its display name
        name = path.stem.removeprefix("inn_").removesuffix("_up").removesuffix("_down")
        if direction == "up":
            ups[name] = (path, meta)
        elif direction == "down":
            downs[name] = path
        else:
            report_problem(path, "INN model without invsr.direction (up / down); re-export it with invsr-export")
    models = []
    for name, (path, meta) in ups.items():
        try:
            scale = metadata_scale(meta, path)
            z_channels = metadata_int(meta, keys.Z_CHANNELS, 3 * scale * scale - 3, path)
            noise_max = float(meta.get(keys.NOISE_MAX, 1.0))
            stored_as = meta.get(keys.STORED_AS, "png")
            if stored_as not in keys.STORED_AS_VALUES:
                raise ValueError(f"invsr.stored_as is {stored_as!r}, not one of {', '.join(keys.STORED_AS_VALUES)}")
            qualities = quality_range(meta[keys.JPEG_QUALITIES]) if keys.JPEG_QUALITIES in meta else None
        except Exception as exc:  # noqa: BLE001 - ModelFileError / ValueError: skip this one, keep the others
            report_problem(path, str(exc))
            continue
        models.append(INNModel(name, scale, path, downs.get(name), z_channels, noise_max,
                               meta.get(keys.TRAINED_ON, ""), stored_as, meta.get(keys.SUPERSEDES, ""),
                               qualities, meta))  # fmt: skip
    return models


def quality_range(text: str) -> tuple[int, int]:
    """``"60-85"`` -> (60, 85): an ``invsr.jpeg_qualities`` value, checked (1 <= LO <= HI <= 100)."""
    lo, sep, hi = text.partition("-")
    if not (sep and lo.strip().isdigit() and hi.strip().isdigit() and 1 <= int(lo) <= int(hi) <= 100):
        raise ValueError(f"invsr.jpeg_qualities is {text!r}, not LO-HI with 1 <= LO <= HI <= 100")
    return int(lo), int(hi)


def pick_model(
    models: list[INNModel], name: str, scale: float, need_down: bool = False, stored_as: str = "png",
    jpeg_quality: int | None = None,
) -> INNModel:
    """The model called ``name``, or for ``auto`` the first at ``scale`` (else the first of any scale), one trained
    for ``stored_as`` first (for a JPEG, one whose quality range holds ``jpeg_quality``, then one without a range),
    leaving out a model another installed one supersedes (``invsr.supersedes``): a retrained model replaces its
    predecessor for new work, while a marker naming the old one still restores with the exact inverse of the
    forward that shrank it."""
    usable = [m for m in models if m.down is not None] if need_down else models
    if name and name != "auto":
        for m in usable:
            if m.name == name:
                return m
        raise ValueError(f"INN model {name!r} is not installed" + (" with its shrink (down) file" if need_down else ""))
    replaced = {m.supersedes for m in usable}
    usable = [m for m in usable if m.name not in replaced] or usable
    at_scale = [m for m in usable if m.scale == int(round(scale))]
    if not (at_scale or usable):
        raise ValueError("no INN model is installed")
    candidates = at_scale or usable
    matching = [m for m in candidates if m.stored_as == stored_as]
    if stored_as == "jpeg":
        fitting = [m for m in matching if m.jpeg_qualities and jpeg_quality is not None
                   and m.jpeg_qualities[0] <= jpeg_quality <= m.jpeg_qualities[1]]  # fmt: skip
        matching = fitting + [m for m in matching if not m.jpeg_qualities] + matching
    return (matching or candidates)[0]


# -- position-keyed normal noise ----------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def position_noise(seed: int, channels: int, origin: tuple[int, int], height: int, width: int) -> np.ndarray:
    """Unit normal float32 (channels, height, width) whose value at (c, y, x) depends only on (seed, c,
    origin_y + y, origin_x + x): the same pixel gets the same sample in any tile."""
    with np.errstate(over="ignore"):
        ys = np.arange(origin[0], origin[0] + height, dtype=np.uint64)
        xs = np.arange(origin[1], origin[1] + width, dtype=np.uint64)
        cs = np.arange(channels, dtype=np.uint64)
        key = (cs[:, None, None] << np.uint64(44)) | (ys[None, :, None] << np.uint64(22)) | xs[None, None, :]
        base = _mix(np.array([seed], dtype=np.uint64) * _GOLDEN + np.uint64(1))
        h1 = _mix(key ^ base)
        h2 = _mix(h1 + _GOLDEN)
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    u2 = (h2 >> np.uint64(11)).astype(np.float64) / 2.0**53
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


# -- runners ---------------------------------------------------------------------------------------------------


@dataclass
class INNUpRunner:
    """(h, w, 3) LR tile -> (s h, s w, 3): the inverse with z = temperature * N(0, 1) keyed by position."""

    session: Any
    scale: float
    z_channels: int
    temperature: float = 0.0
    seed: int = 0
    model_name: str = ""
    multiple: int = 1
    positional: bool = True

    def __call__(self, tile: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
        h, w = tile.shape[:2]
        lr = np.ascontiguousarray(tile.transpose(2, 0, 1)[None], dtype=np.float32)
        if self.temperature > 0:
            z = position_noise(self.seed, self.z_channels, origin, h, w)[None]
        else:
            z = np.zeros((1, self.z_channels, h, w), dtype=np.float32)
        feeds = {"lr": lr, "z": z, "temperature": np.array([self.temperature], dtype=np.float32)}
        (sr,) = self.session.run(["sr"], feeds)
        return sr[0].transpose(1, 2, 0)


@dataclass
class INNDownRunner:
    """(H, W, 3) HR tile, H and W multiples of the factor -> (H / f, W / f, 3): the forward's LR (z dropped)."""

    session: Any
    factor: int
    model_name: str = ""

    def __post_init__(self) -> None:
        self.scale = 1.0 / self.factor
        self.multiple = self.factor

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        hr = np.ascontiguousarray(tile.transpose(2, 0, 1)[None], dtype=np.float32)
        (lr,) = self.session.run(["lr"], {"hr": hr})
        return lr[0].transpose(1, 2, 0)


# The restore half undoes the shrink half: an error of bf16 in either is paid on every restored photo, and this up
# model also restores shrunk files. Both stay fp32 until `python -m model_export.commands.precision_check` measures the
# round trip moving by under 0.05 dB at the fast precision (the speed issue's rule); CPUs without bf16 lose nothing.
ROUND_TRIP_PRECISION = "fp32"


def build_up(request: BuildRequest) -> INNUpRunner:
    model = pick_model(find_models(), request.params.get("model", "auto"), request.scale)
    session = request.sessions.session(model.up, precision=ROUND_TRIP_PRECISION)
    return INNUpRunner(session, float(model.scale), model.z_channels, float(request.params.get("temperature", 0.0)),
                       int(request.params.get("seed", 0)), model.name)  # fmt: skip


def build_down(request: BuildRequest) -> INNDownRunner:
    model = pick_model(find_models(), request.params.get("model", "auto"), request.scale, need_down=True,
                       stored_as=request.stored_as, jpeg_quality=request.jpeg_quality)  # fmt: skip
    if model.scale != int(round(request.scale)):
        raise ValueError(f"INN model {model.name!r} shrinks by {model.scale}, not {request.scale:g}")
    session = request.sessions.session(model.down, precision=ROUND_TRIP_PRECISION)
    return INNDownRunner(session, model.scale, model.name)


def _format_note(models: list[INNModel]) -> str:
    """Which model ``auto`` shrinks with for a PNG and for a JPEG small image (by quality), when they differ."""
    notes = []
    for scale in sorted({m.scale for m in models}):
        png = pick_model(models, "auto", scale, need_down=True, stored_as="png")
        jpeg = [pick_model(models, "auto", scale, need_down=True, stored_as="jpeg", jpeg_quality=q)
                for q in range(1, 101)]  # fmt: skip
        if any(m is not png for m in jpeg):
            notes.append(f"÷{scale}: saved as PNG it uses {png.name}; as JPEG {_by_quality(jpeg)}, trained to "
                         "survive JPEG compression.")  # fmt: skip
    return (" " + " ".join(notes)) if notes else ""


def _by_quality(picks: list[INNModel]) -> str:
    """``picks[q - 1]`` is the model for quality q: "A" when one serves all, else "A at quality 1-85, B at 86-100"."""
    runs = [(name, [q for q, _ in group]) for name, group in groupby(enumerate((m.name for m in picks), start=1),
                                                                      key=lambda pick: pick[1])]  # fmt: skip
    if len(runs) == 1:
        return runs[0][0]
    return ", ".join(f"{name} at {'quality ' if i == 0 else ''}{qs[0]}-{qs[-1]}" for i, (name, qs) in enumerate(runs))


@hookimpl
def invsr_backends() -> list[BackendSpec]:
    models = find_models()
    if not models:
        return []
    names = ("auto", *(m.name for m in models))
    model_param = Param("model", str, "auto", choices=names, label="Model",
                        help="INN model by name (auto: the first at the scale)")  # fmt: skip
    noise_max = max(m.noise_max for m in models)
    specs = [
        BackendSpec(
            id="inn",
            name="INN upscale / restore",
            kind="inn",
            scales=tuple(sorted({m.scale for m in models})),
            build=build_up,
            params=(
                Param("temperature", float, 0.0, 0.0, 1.5, label="Temperature",
                      help=f"scale of the sampled latent z: 0 = the mean (sharpest PSNR-wise), "
                           f"up to {noise_max:g} is what training saw"),
                Param("seed", int, 0, 0, 2**31 - 1, label="Seed", help="seed of the sampled z (temperature > 0)"),
                model_param,
            ),  # fmt: skip
            description="Invertible rescaling network: the inverse of the INN's shrink. Restores images made by "
            "INN shrink almost exactly; on an ordinary photo it upscales like a small PSNR-oriented SR net, "
            "with an optional sampled latent (temperature) for detail.",
            bytes_per_pixel=12288,
            info={"models": ", ".join(m.name for m in models),
                  **quality_info(pick_model(models, "auto", max(m.scale for m in models)).metadata)},
        )
    ]
    shrinkable = [m for m in models if m.down is not None]
    if shrinkable:
        specs.append(
            BackendSpec(
                id="inn-shrink",
                name="INN shrink",
                kind="inn",
                scales=tuple(sorted({m.scale for m in shrinkable})),
                build=build_down,
                params=(model_param,),
                description="The INN's forward pass: a small image that looks like a downscaled photo and that "
                "INN restore brings back to full size far better than any upscaler could." + _format_note(shrinkable),
                bytes_per_pixel=1024,
                info={"models": ", ".join(m.name for m in shrinkable)},
                direction="down",
                restored_by="inn",
            )
        )
    return specs
