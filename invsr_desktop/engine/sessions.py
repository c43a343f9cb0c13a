"""Inference sessions: the provider chain, the user's override, and a cache of sessions per model file.

Preference: TensorRT (fp16, engine cache) > CUDA > OpenVINO (x86 CPUs, when installed) > ONNX Runtime's CPU
provider, among what ``onnxruntime.get_available_providers()`` reports plus OpenVINO (see
:mod:`~invsr_desktop.engine.openvino_sessions`). Asking ORT for CUDA can silently give CPU (missing cuDNN, driver
mismatch), so the providers a session really got are read back with ``session.get_providers()`` and any fallback
is reported in words; a model OpenVINO cannot compile falls back to ONNX Runtime the same way. Under ``auto`` on a
CPU, each model's first call times OpenVINO against ONNX Runtime and keeps the faster, remembered per model and
machine (:mod:`~invsr_desktop.engine.provider_race`).

Precision: ``fast`` (the default) lets OpenVINO run bf16 where the CPU does so natively, and runs a model's int8 copy
where it has a valid one (``<id>.int8.onnx``, made and checked by ``invsr-quantize``; see
:func:`~invsr_desktop.engine.model_files.int8_copy`) on ONNX Runtime, and on OpenVINO where the CPU has no bf16;
under ``auto`` the race keeps whichever measures faster (bf16 against int8 where both exist); ``fp32`` never trades
accuracy. A backend whose result must be exact (the INN's shrink / restore round trip) asks for ``fp32`` per model.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from invsr_desktop.engine import model_files, openvino_sessions, provider_race
from invsr_desktop.engine.errors import ModelFileError
from invsr_desktop.engine.openvino_sessions import PROVIDER as OPENVINO
from invsr_desktop.engine.openvino_sessions import Precision

PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": OPENVINO,
    "cpu": "CPUExecutionProvider",
}
PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", OPENVINO, "CPUExecutionProvider")
PRECISIONS = ("fast", "fp32")
ONNXRUNTIME_MISSING = (
    "ONNX Runtime is not installed. Install exactly one of: pip install 'invsr-desktop[cpu]' (CPU) or "
    "pip install 'invsr-desktop[gpu]' (NVIDIA GPU). Never both: they write the same 'onnxruntime' folder."
)


def import_onnxruntime() -> Any:
    """Import onnxruntime, or raise an ImportError that tells the user which extra to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(ONNXRUNTIME_MISSING) from exc
    return onnxruntime


def cache_dir() -> Path:
    """Per-user cache (TensorRT engines) following XDG."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "invsr-desktop"


def available_providers() -> list[str]:
    """What this machine offers: ONNX Runtime's providers, plus OpenVINO where it is installed on an x86 CPU."""
    available = list(import_onnxruntime().get_available_providers())
    if openvino_sessions.openvino_core() is not None:
        available.insert(available.index("CPUExecutionProvider") if "CPUExecutionProvider" in available else 0,
                         OPENVINO)
    return available


def resolve_provider_name(name: str) -> str:
    """Accept ``cpu``/``cuda``/``tensorrt`` or ORT's own names."""
    if name.lower() in PROVIDER_ALIASES:
        return PROVIDER_ALIASES[name.lower()]
    if name in PREFERENCE:
        return name
    raise ValueError(f"unknown provider {name!r}; use one of: auto, {', '.join(PROVIDER_ALIASES)}")


def short_name(provider: str) -> str:
    """``CUDAExecutionProvider`` -> ``CUDA``: what the status line and the summary print."""
    return provider.removesuffix("ExecutionProvider")


def provider_chain(available: Sequence[str], override: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The providers to ask ORT for, best first, each with its options.

    ``override`` (``auto`` / None, or one provider) puts that provider first, keeping CPU as the last resort. An
    override that is not offered raises ValueError naming what is available. OpenVINO is never asked of ORT: it
    appears only first (when no GPU provider is), and the pool runs it itself.
    """
    options = {
        "TensorrtExecutionProvider": {
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir() / "tensorrt"),
        },
        "CUDAExecutionProvider": {},
        OPENVINO: {},
        "CPUExecutionProvider": {},
    }
    if override and override.lower() != "auto":
        wanted = resolve_provider_name(override)
        if wanted not in available:
            raise ValueError(
                f"provider {override!r} is not available in this onnxruntime (available: {', '.join(available)})"
            )
        names = [wanted] + (["CPUExecutionProvider"] if wanted != "CPUExecutionProvider" else [])
    else:
        names = [p for p in PREFERENCE if p in available] or ["CPUExecutionProvider"]
        names = names[:1] + [p for p in names[1:] if p != OPENVINO]
        if "CPUExecutionProvider" not in names:
            names.append("CPUExecutionProvider")
    return [(name, options[name]) for name in names]


def planned_path(provider: str = "auto", precision: Precision = "fast",
                 available: Sequence[str] | None = None) -> str:
    """The path a session will be asked for, in the words of :attr:`SessionInfo.path`, before any model is loaded
    (``--list-backends``, the status line). Raises ValueError for a provider that is not offered."""
    first = provider_chain(list(available if available is not None else available_providers()), provider)[0][0]
    if first != OPENVINO:
        return f"ONNX Runtime {short_name(first)}"
    core = openvino_sessions.openvino_core()
    hint = openvino_sessions.inference_precision(core, precision) if core is not None else "f32"
    return f"{OPENVINO} {hint}"


def path_note(precision: Precision = "fast") -> str:
    """What ``fast`` means on this CPU, for ``--list-backends`` and the settings tooltip."""
    core = openvino_sessions.openvino_core()
    int8 = ("'fast' runs a model's int8 copy where it has one (invsr-quantize; checked at "
            f"{model_files.FAST_MIN_PSNR:g} dB against fp32), else fp32 as 'fp32' does")
    if core is None:
        return f"OpenVINO is not installed (or this is not an x86 CPU): ONNX Runtime runs the models; {int8}."
    if openvino_sessions.bf16_supported(core):
        return ("this CPU runs bf16 natively: precision 'fast' uses it (and, under auto, a model's int8 copy where "
                "it measures faster), 'fp32' does not.")
    return f"this CPU has no native bf16 (no AMX / AVX-512 bf16): {int8}."


def fallback_message(requested: Sequence[str], got: Sequence[str]) -> str | None:
    """Why the session is not running on the first provider asked for, or None if it is."""
    if not got or not requested or got[0] == requested[0]:
        return None
    return (
        f"{requested[0]} was requested but ONNX Runtime could not use it (check the CUDA/cuDNN/TensorRT "
        f"installation); running on {got[0]} instead."
    )


@dataclass
class SessionInfo:
    """What a session really runs on, for the status line and logs."""

    model: str
    requested: list[str]
    providers: list[str]
    message: str | None = None
    precision: str = "fp32"  # OpenVINO's inference precision (f32 / bf16), or int8 for a model's int8 copy

    @property
    def path(self) -> str:
        """``OpenVINO bf16``, ``ONNX Runtime CPU``, ``ONNX Runtime CUDA``: which path ran, in the words the summary and status line use."""
        if not self.providers:
            return "none"
        name = short_name(self.providers[0])
        if self.providers[0] == OPENVINO:
            return f"{name} {self.precision}"
        return f"ONNX Runtime {name}" + (" int8" if self.precision == "int8" else "")


@dataclass
class SessionPool:
    """Creates and caches sessions, one per model (path or bytes) and settings.

    ``threads`` sets intra-op threads explicitly (0 = the runtime's default, all cores); ``provider`` is ``auto``
    or a provider name; ``precision`` is ``fast`` or ``fp32`` (see the module doc). ``on_message`` receives
    fallback messages (the GUI shows them; the CLI prints them). ``available`` substitutes the provider list
    (tests; a machine's real one is :func:`available_providers`). ``measure``: under ``auto`` on a CPU, time
    OpenVINO against ONNX Runtime on each model's first call and keep the faster (see
    :mod:`~invsr_desktop.engine.provider_race`); off, OpenVINO is taken unmeasured.
    """

    provider: str = "auto"
    threads: int = 0
    on_message: Callable[[str], None] | None = None
    available: Callable[[], Sequence[str]] | None = None
    precision: Precision = "fast"
    measure: bool = True
    _cache: dict[tuple, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    infos: dict[str, SessionInfo] = field(default_factory=dict)

    def session(self, model: str | os.PathLike | bytes, precision: Precision | None = None) -> Any:
        """The (cached) session for a model file path or serialized model bytes.

        ``precision="fp32"`` keeps this model at full precision whatever the pool's setting (the INN's round trip);
        None takes the pool's.
        """
        wanted: Precision = "fp32" if "fp32" in (precision, self.precision) else "fast"
        key_model = _model_key(model)
        key = (key_model, self.provider, self.threads, wanted)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._create(model, key_model, wanted)
            return self._cache[key]

    def _create(self, model: str | os.PathLike | bytes, key_model: str, precision: Precision) -> Any:
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise ModelFileError(f"model file not found: {model}")
        available = list(self.available() if self.available else available_providers())
        chain = provider_chain(available, self.provider)
        requested = [name for name, _ in chain]
        message = None
        copy = self._int8_copy(model, chain[0][0], precision)
        ort_model = copy or model  # ONNX Runtime has no bf16: its fast path is the int8 copy
        ov_model = model if copy is None or self._native_bf16() else copy  # OpenVINO's: bf16 where the CPU has it
        if chain[0][0] == OPENVINO:
            race = self._race_key(_race_subject(ov_model, ort_model), precision)
            if race is not None and self._choices().get(race) == provider_race.ONNXRUNTIME:
                requested = requested[1:]  # measured slower here before: not a fallback, not compiled again
            else:
                session, message = self._openvino(ov_model, precision)
                if session is not None:
                    labels = {OPENVINO: "int8" if ov_model is copy else session.precision,
                              provider_race.ONNXRUNTIME: "int8" if copy is not None else "fp32"}  # fmt: skip
                    self._record(key_model, SessionInfo(_display(ov_model), requested, [OPENVINO], None,
                                                        labels[OPENVINO]))  # fmt: skip
                    if race is None:
                        return session
                    return self._racing(session, ort_model, key_model, requested, race, labels)
            chain = chain[1:]
        session = self._onnxruntime(ort_model, chain)
        got = list(session.get_providers())
        message = message or fallback_message(requested, got)
        label = "int8" if copy is not None else "fp32"
        self._record(key_model, SessionInfo(_display(ort_model), requested, got, message, label))
        return session

    def _int8_copy(self, model: str | os.PathLike | bytes, first: str, precision: Precision) -> Path | None:
        """The model's int8 copy when ``fast`` runs on a CPU and the copy is valid for this file
        (:func:`~invsr_desktop.engine.model_files.int8_copy`); None otherwise (a GPU runs its own fp16). ONNX Runtime
        runs it; OpenVINO runs it where the CPU has no native bf16, and races bf16 against it where it has."""
        if precision != "fast" or isinstance(model, bytes) or first not in (OPENVINO, "CPUExecutionProvider"):
            return None
        return model_files.int8_copy(model)

    @staticmethod
    def _native_bf16() -> bool:
        core = openvino_sessions.openvino_core()
        return core is not None and openvino_sessions.bf16_supported(core)

    def _race_key(self, key_model: str, precision: Precision) -> str | None:
        """The key of this model's measured choice when ``auto`` may pick either CPU engine (see
        :mod:`~invsr_desktop.engine.provider_race`), else None (a named provider, or racing turned off)."""
        core = openvino_sessions.openvino_core()
        if not self.measure or self.provider.lower() != "auto" or core is None:
            return None
        return provider_race.choice_key(key_model, self.threads, openvino_sessions.inference_precision(core, precision))

    def _choices(self) -> provider_race.ChoiceStore:
        return provider_race.ChoiceStore(cache_dir() / provider_race.STORE_NAME)

    def _racing(self, openvino: Any, model: str | os.PathLike | bytes, key_model: str, requested: list[str],
                race: str, labels: dict[str, str]) -> provider_race.RacingSession:
        """OpenVINO now, raced against ONNX Runtime running ``model`` on the first call; the winner is recorded (with
        its precision from ``labels``) and remembered."""

        def decided(winner: str, session: Any, seconds: dict[str, float]) -> None:
            self.infos[key_model] = SessionInfo(_display(model), requested, [winner], None, labels[winner])
            if provider_race.worth_remembering(seconds):
                self._choices().put(race, winner, seconds)

        def onnxruntime() -> Any:
            return self._onnxruntime(model, [("CPUExecutionProvider", {})])

        return provider_race.RacingSession(openvino, onnxruntime, decided, lambda: self._choices().get(race))

    def _record(self, key_model: str, info: SessionInfo) -> None:
        self.infos[key_model] = info
        if info.message and self.on_message:
            self.on_message(info.message)

    def _openvino(self, model: str | os.PathLike | bytes, precision: Precision) -> tuple[Any, str | None]:
        """An OpenVINO session, or None and the reason ONNX Runtime takes over (a model OpenVINO cannot compile)."""
        core = openvino_sessions.openvino_core()
        if core is None:
            return None, "OpenVINO was requested but is not installed (pip install openvino); running on ONNX Runtime."
        try:
            return openvino_sessions.compile_session(core, model, precision, self.threads, cache_dir() / "openvino"), None
        except Exception as exc:  # OpenVINO raises RuntimeError / its own types for unsupported graphs
            reason = openvino_sessions.failure_reason(exc)
            return None, f"OpenVINO could not compile {_display(model)} ({reason}); running on ONNX Runtime instead."

    def _onnxruntime(self, model: str | os.PathLike | bytes, chain: list[tuple[str, dict[str, Any]]]) -> Any:
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if "TensorrtExecutionProvider" in (name for name, _ in chain):
            (cache_dir() / "tensorrt").mkdir(parents=True, exist_ok=True)
        source = model if isinstance(model, bytes) else str(model)
        try:
            with warnings.catch_warnings():  # ORT warns about a missing provider; fallback_message says it better
                warnings.simplefilter("ignore", UserWarning)
                return ort.InferenceSession(source, sess_options=opts, providers=chain)
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            raise ModelFileError(f"cannot load model {_display(model)}: {exc}") from exc

    def providers_in_use(self) -> list[str]:
        """The first provider of every live session."""
        return sorted({info.providers[0] for info in self.infos.values() if info.providers})

    def paths_in_use(self) -> list[str]:
        """Which paths ran, with OpenVINO's precision (``OpenVINO f32``, ``ONNX Runtime CPU``): the summary and status line."""
        return sorted({info.path for info in self.infos.values() if info.providers})


def _model_key(model: str | os.PathLike | bytes) -> str:
    if isinstance(model, bytes):
        return "sha256:" + hashlib.sha256(model).hexdigest()
    path = Path(model).resolve()
    try:
        stat = path.stat()
        return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"  # a replaced file gets a new session
    except OSError:
        return str(path)


def _race_subject(openvino: str | os.PathLike | bytes, onnxruntime: str | os.PathLike | bytes) -> str:
    """What a race is between, for its remembered choice: the model file, or both files where the engines run
    different ones (OpenVINO bf16 on the model, ONNX Runtime on its int8 copy)."""
    same = openvino is onnxruntime
    return _model_key(openvino) if same else f"{_model_key(openvino)} vs {_model_key(onnxruntime)}"


def _display(model: str | os.PathLike | bytes) -> str:
    return f"<{len(model)} bytes in memory>" if isinstance(model, bytes) else str(model)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an ORT run failed for lack of memory (ORT has no dedicated exception type for it)."""
    text = str(exc).lower()
    return any(
        marker in text
        for marker in ("out of memory", "failed to allocate memory", "bad_alloc", "cudaerrormemoryallocation")
    ) or isinstance(exc, MemoryError)
