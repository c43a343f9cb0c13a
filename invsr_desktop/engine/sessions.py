"""ONNX Runtime sessions: the provider chain, the user's override, and a cache of sessions per model file.

Preference: TensorRT (fp16, engine cache) > CUDA > CPU, among what ``onnxruntime.get_available_providers()``
reports. Asking ORT for CUDA can silently give CPU (missing cuDNN, driver mismatch), so the providers a session
really got are read back with ``session.get_providers()`` and any fallback is reported in words.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from invsr_desktop.engine.errors import ModelFileError

PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
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


def resolve_provider_name(name: str) -> str:
    """Accept ``cpu``/``cuda``/``tensorrt`` or ORT's own names."""
    if name.lower() in PROVIDER_ALIASES:
        return PROVIDER_ALIASES[name.lower()]
    if name in PREFERENCE:
        return name
    raise ValueError(f"unknown provider {name!r}; use one of: auto, {', '.join(PROVIDER_ALIASES)}")


def provider_chain(available: Sequence[str], override: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The providers to ask ORT for, best first, each with its options.

    ``override`` (``auto`` / None, or one provider) puts that provider first, keeping CPU as the last resort. An
    override that ORT does not offer raises ValueError naming what is available.
    """
    options = {
        "TensorrtExecutionProvider": {
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir() / "tensorrt"),
        },
        "CUDAExecutionProvider": {},
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
    return [(name, options[name]) for name in names]


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


@dataclass
class SessionPool:
    """Creates and caches ``onnxruntime.InferenceSession`` objects, one per model (path or bytes) and settings.

    ``threads`` sets intra-op threads explicitly (0 = ORT's default, all cores); ``provider`` is ``auto`` or a
    provider name. ``on_message`` receives fallback messages (the GUI shows them; the CLI prints them).
    """

    provider: str = "auto"
    threads: int = 0
    on_message: Callable[[str], None] | None = None
    available: Callable[[], Sequence[str]] | None = None
    _cache: dict[tuple, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    infos: dict[str, SessionInfo] = field(default_factory=dict)

    def session(self, model: str | os.PathLike | bytes) -> Any:
        """The (cached) session for a model file path or serialized model bytes."""
        key_model = _model_key(model)
        key = (key_model, self.provider, self.threads)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._create(model, key_model)
            return self._cache[key]

    def _create(self, model: str | os.PathLike | bytes, key_model: str) -> Any:
        ort = import_onnxruntime()
        available = list(self.available() if self.available else ort.get_available_providers())
        chain = provider_chain(available, self.provider)
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if "TensorrtExecutionProvider" in (name for name, _ in chain):
            (cache_dir() / "tensorrt").mkdir(parents=True, exist_ok=True)
        source = model if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise ModelFileError(f"model file not found: {model}")
        try:
            with warnings.catch_warnings():  # ORT warns about a missing provider; fallback_message says it better
                warnings.simplefilter("ignore", UserWarning)
                session = ort.InferenceSession(source, sess_options=opts, providers=chain)
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            raise ModelFileError(f"cannot load model {_display(model)}: {exc}") from exc
        requested = [name for name, _ in chain]
        got = list(session.get_providers())
        info = SessionInfo(_display(model), requested, got, fallback_message(requested, got))
        self.infos[key_model] = info
        if info.message and self.on_message:
            self.on_message(info.message)
        return session

    def providers_in_use(self) -> list[str]:
        """The first provider of every live session (what the status line shows)."""
        return sorted({info.providers[0] for info in self.infos.values() if info.providers})

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self.infos.clear()


def _model_key(model: str | os.PathLike | bytes) -> str:
    if isinstance(model, bytes):
        return "sha256:" + hashlib.sha256(model).hexdigest()
    path = Path(model).resolve()
    try:
        stat = path.stat()
        return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"  # a replaced file gets a new session
    except OSError:
        return str(path)


def _display(model: str | os.PathLike | bytes) -> str:
    return f"<{len(model)} bytes in memory>" if isinstance(model, bytes) else str(model)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an ORT run failed for lack of memory (ORT has no dedicated exception type for it)."""
    text = str(exc).lower()
    return any(
        marker in text
        for marker in ("out of memory", "failed to allocate memory", "bad_alloc", "cudaerrormemoryallocation")
    ) or isinstance(exc, MemoryError)
