"""What a backend is: its description (readable without building anything) and the runner it builds.

A plugin returns :class:`BackendSpec` objects from the ``invsr_backends`` hook. The GUI builds its parameter widgets
from ``BackendSpec.params`` and the CLI its ``--param`` help, so a new backend needs no GUI or CLI code.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from invsr_desktop.engine.sessions import SessionPool

Kind = Literal["interpolation", "inn", "gan", "diffusion"]
KINDS: tuple[str, ...] = ("interpolation", "inn", "gan", "diffusion")


def flag_value(value: Any) -> str:
    """A parameter's value the way ``--param`` takes it: ``on`` / ``off`` for booleans, ``4``, ``0.5``, ``auto``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class Param:
    """One user-tunable parameter of a backend (e.g. steps, seed, temperature).

    ``type`` is one of ``int``, ``float``, ``bool``, ``str``; ``choices`` makes a ``str`` parameter a pick-list.
    """

    name: str
    type: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    label: str = ""
    help: str = ""

    def coerce(self, value: Any) -> Any:
        """Convert ``value`` (e.g. a CLI string) to this parameter's type and check its range.

        Raises ValueError with a message that names the parameter, so a CLI or GUI can show it as is.
        """
        try:
            if self.type is bool and isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                    raise ValueError(value)
                converted: Any = lowered in {"1", "true", "yes", "on"}
            else:
                converted = self.type(value)
        except (TypeError, ValueError):
            raise ValueError(f"parameter {self.name!r} expects {self.type.__name__}, got {value!r}") from None
        if self.choices and converted not in self.choices:
            raise ValueError(f"parameter {self.name!r} must be one of {', '.join(self.choices)}; got {converted!r}")
        if self.minimum is not None and converted < self.minimum:
            raise ValueError(f"parameter {self.name!r} must be >= {self.minimum}; got {converted!r}")
        if self.maximum is not None and converted > self.maximum:
            raise ValueError(f"parameter {self.name!r} must be <= {self.maximum}; got {converted!r}")
        return converted


@runtime_checkable
class Runner(Protocol):
    """Upscales float32 RGB tiles in [0, 1], shaped (H, W, 3), to (scale*H, scale*W, 3).

    A runner owns its ONNX Runtime session(s) and any loop around them (a sampler, latent sampling). Tiling, alpha,
    bit depth, colour and files are the engine's job. ``multiple`` is the size a tile's sides must be a multiple of
    (the engine pads by reflection); ``scale`` may be a non-integer only for backends with ``any_scale``.

    A runner whose output depends on where the tile lies (an INN sampling its latent z per output pixel, so that a
    seed gives the same image whatever the tiling) sets ``positional = True``; the engine then calls
    ``runner(tile, origin=(y, x))`` with the tile's top-left corner in the (padded) input image.

    A runner that needs the whole image at each step of a loop (a diffusion sampler: tiles sampled independently
    drift apart and show seams) sets ``whole_image = True`` and implements ``run_whole(image, tiler)``: the engine
    calls it once with the whole float32 (H, W, 3) image instead of calling the runner per tile, and it returns the
    (round(scale*H), round(scale*W), 3) result. ``tiler`` is the engine's :class:`~invsr_desktop.engine.tiling.Tiler`:
    the runner does each model pass with ``tiler.map(fn, *arrays, ...)``, which cuts the arrays into overlapping
    tiles (size from the memory budget or the user's tile setting), calls ``fn`` per tile, blends the results and
    handles progress, cancel and out-of-memory retries, so every model call stays bounded in memory.

    A runner that makes several model passes per tile (test-time augmentation: 8) says so in ``passes``; the engine
    then calls ``runner(tile, on_pass=callback)`` and the runner calls ``on_pass()`` after each pass but the last,
    so the progress of a photo that fits in one tile moves too.

    ``model_name`` (a string) names the model a runner runs: error messages quote it, and a shrinking runner's is
    what a shrunk image's marker records (the model that inverts it).

    A shrinking runner (``BackendSpec.direction == "down"``) has ``scale = 1 / factor``: it maps an (H, W, 3) tile
    to (H / factor, W / factor, 3), H and W multiples of ``multiple`` (a multiple of the factor).
    """

    scale: float
    multiple: int

    def __call__(self, tile: np.ndarray) -> np.ndarray: ...


@dataclass
class FunctionRunner:
    """A plain function a plugin gave as its runner (``build=lambda request: my_function``, as the README's example
    allows): it runs at the scale it was built for, with no tile-size multiple."""

    fn: Callable[[np.ndarray], np.ndarray]
    scale: float
    multiple: int = 1

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        return self.fn(tile)


@dataclass(frozen=True)
class RunnerTraits:
    """The members of a :class:`Runner` the engine reads, read and checked in one place (:meth:`of`).

    ``scale`` and ``multiple`` every runner has; ``positional``, ``passes``, ``whole_image`` (with ``run_whole``)
    and ``model_name`` are optional (the defaults below), so a plugin sets only what differs. A member of the wrong
    type (``passes = "8"``) is a :class:`TypeError` naming it, raised when the engine builds the runner, not a
    surprise in the middle of a tile loop.
    """

    scale: float
    multiple: int = 1
    positional: bool = False
    passes: int = 1
    whole_image: bool = False
    model_name: str = ""

    @classmethod
    def of(cls, runner: Any) -> RunnerTraits:
        values: dict[str, Any] = {}
        for name, kind, default in _TRAITS:
            value = getattr(runner, name, default)
            a_flag = isinstance(value, _FLAG)  # True is an int to Python; never a scale, a multiple or a count
            if value is None or not isinstance(value, kind) or (kind is not _FLAG and a_flag):
                raise TypeError(f"runner {type(runner).__name__}: {name} is {value!r}; the Runner protocol wants "
                                f"{_KIND_WORDS[kind]}")
            values[name] = value
        if values["whole_image"] and not callable(getattr(runner, "run_whole", None)):
            raise TypeError(f"runner {type(runner).__name__}: whole_image is set but it has no run_whole(image, tiler)")
        return cls(float(values["scale"]), max(1, int(values["multiple"])), bool(values["positional"]),
                   max(1, int(values["passes"])), bool(values["whole_image"]), str(values["model_name"]))


_FLAG = (bool, np.bool_)
_KIND_WORDS = {numbers.Real: "a number", numbers.Integral: "an integer", _FLAG: "True or False", str: "a string"}
_TRAITS = (("scale", numbers.Real, None), ("multiple", numbers.Integral, 1), ("positional", _FLAG, False),
           ("passes", numbers.Integral, 1), ("whole_image", _FLAG, False), ("model_name", str, ""))


@dataclass(frozen=True)
class BuildRequest:
    """Everything a backend needs to build its runner.

    ``sessions`` is the engine's :class:`~invsr_desktop.engine.sessions.SessionPool`: runners get their sessions
    from it (``sessions.session(path_or_bytes)``, called like ``onnxruntime.InferenceSession``: ``run``,
    ``get_inputs``, ``get_outputs``) so that sessions are cached per model file and the provider and precision
    are the user's. A model whose output must stay exact passes ``precision="fp32"``.

    ``stored_as`` is the format the result will be saved in (``png`` or ``jpeg``) and ``jpeg_quality`` the quality
    of a JPEG result: a shrinking backend may pick a model trained for them (the INN's JPEG-robust shrinks).
    """

    scale: float
    params: dict[str, Any]
    sessions: SessionPool
    stored_as: str = "png"
    jpeg_quality: int | None = None


@dataclass(frozen=True)
class BackendSpec:
    """The description of one backend.

    ``scales`` are the native scales; ``any_scale`` says the runner can be built at any scale >= 1 (bicubic).
    For other scales the engine runs the nearest native scale and resamples. ``bytes_per_pixel`` estimates the
    memory one input pixel costs during a run; the engine sizes tiles from it and the memory budget.

    ``direction`` is ``"up"`` for every upscaler. ``"down"`` marks a backend that makes images smaller (the
    shrink half of an invertible network's shrink-and-restore): its ``scales`` are the reduction factors, its runner
    is built with ``BuildRequest.scale`` = the factor and has ``scale = 1 / factor``; the engine runs it only
    as a shrink :class:`~invsr_desktop.engine.task.Task`, never as an upscaler, and ``restored_by`` names the
    backend that undoes it (the id a shrunk image's marker records).

    ``info`` holds display-only facts (the models a backend has, its measured quality); the engine never reads it.
    """

    id: str
    name: str
    kind: Kind
    scales: tuple[int, ...]
    build: Callable[[BuildRequest], Runner]
    params: tuple[Param, ...] = ()
    any_scale: bool = False
    description: str = ""
    bytes_per_pixel: int = 4096
    info: dict[str, str] = field(default_factory=dict)
    direction: Literal["up", "down"] = "up"
    restored_by: str = ""

    def __post_init__(self) -> None:
        if self.direction == "down" and not self.restored_by:
            raise ValueError(f"backend {self.id!r} shrinks images but does not say which backend restores them "
                             "(BackendSpec.restored_by)")

    def defaults(self) -> dict[str, Any]:
        """The parameters' default values, keyed by name."""
        return {p.name: p.default for p in self.params}

    def resolve_params(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults overlaid with ``given`` (coerced and range-checked); an unknown name is a ValueError."""
        by_name = {p.name: p for p in self.params}
        resolved = self.defaults()
        for name, value in (given or {}).items():
            if name not in by_name:
                known = ", ".join(by_name) or "none"
                raise ValueError(f"backend {self.id!r} has no parameter {name!r} (known: {known})")
            resolved[name] = by_name[name].coerce(value)
        return resolved

    def offered_scales(self) -> tuple[int, ...]:
        """The whole scales a user is offered (the app's scale picker): the native ones and, for an upscaler, every
        whole scale from 2 below its largest native one, which the engine serves by running the native model and
        reducing its result (a x4 model gives x2 and x3, as Upscayl offers them). A shrinker offers its factors."""
        if self.direction == "down" or not self.scales:
            return tuple(sorted(self.scales))
        return tuple(sorted(set(self.scales) | set(range(2, int(max(self.scales))))))

    def native_scale_for(self, scale: float) -> float:
        """The scale the runner is built at for a requested output ``scale``.

        An ``any_scale`` backend runs the requested scale itself; otherwise the smallest native scale that reaches
        it (or the largest native one), and the engine resamples the rest.
        """
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        if self.any_scale:
            return float(scale)
        reaching = [s for s in sorted(self.scales) if s >= scale - 1e-9]
        return float(reaching[0] if reaching else max(self.scales))
