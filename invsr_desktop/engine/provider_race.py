"""``--provider auto`` on a CPU: OpenVINO or ONNX Runtime, whichever runs *this* model faster *here*, measured once.

Why measure: neither f32 CPU engine wins everywhere. On the AVX-512 bf16 EPYC of 2026-12-04 ONNX Runtime ran the
INN 1.2x and its shrink 1.6x faster than OpenVINO (``invsr-bench``); on the AVX2 EPYC of 2026-12-07 OpenVINO ran
them 1.05x / 1.10x and esrgan-camera-x4 1.44x faster. A fixed preference loses on some model on some CPU.

How: the first call of a model runs on both engines, on a crop of its input (:func:`probe_feeds`; a warm-up each,
then a timed run each). The faster serves that call and every later one, and the choice is written to
``provider-choice.json`` in the user's cache, keyed by the model file and the machine (CPU, threads, precision,
runtime versions), so a later start opens only the winner. ONNX Runtime must be faster by :data:`MARGIN` to
displace OpenVINO (the documented default), and a first call too short to time well (under :data:`MIN_SECONDS`)
keeps OpenVINO and is not remembered. Every result comes from the winner, so a model's output does not depend on
which call decided.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from invsr_desktop.engine.openvino_sessions import PROVIDER as OPENVINO

ONNXRUNTIME = "CPUExecutionProvider"
MARGIN = 0.05  # ONNX Runtime must be this much faster: timing noise must not flip the default
PROBE_SIDE = 128  # the race runs on a crop this size: long enough to time (0.3-0.6 s for ESRGAN and the INN at one thread)
MIN_SECONDS = 0.02  # a timed run shorter than this is noise-bound: OpenVINO stays, and nothing is remembered
STORE_NAME = "provider-choice.json"

Decided = Callable[[str, Any, dict[str, float]], None]


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform.processor()`` is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # not installed, or no version: part of the key all the same
        return "none"


def choice_key(model_key: str, threads: int, precision: str) -> str:
    """What a measured choice depends on: the model file, the CPU, the thread count, the precision and both runtimes."""
    return " | ".join([model_key, cpu_name(), f"threads={threads or os.cpu_count()}", precision,
                       f"onnxruntime={_version('onnxruntime')}", f"openvino={_version('openvino')}"])  # fmt: skip


class ChoiceStore:
    """The remembered winners, one JSON object in the user's cache. A file that cannot be read or written is the
    same as no file: the next start measures again (never an error: a full disk must not stop an upscale)."""

    _lock = threading.Lock()  # one for every store: the pools of a process each make their own

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> str | None:
        record = self._read().get(key)
        provider = record.get("provider") if isinstance(record, dict) else None
        return provider if provider in (OPENVINO, ONNXRUNTIME) else None

    def put(self, key: str, provider: str, seconds: dict[str, float]) -> None:
        with self._lock:
            data = self._read()
            data[key] = {"provider": provider, "seconds": seconds, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)


class RacingSession:
    """An OpenVINO session that, on its first call, races ONNX Runtime on the same input and keeps the faster.

    ``make_onnxruntime`` builds the rival lazily (nothing is loaded twice for a model already decided); ``decided``
    hears the winner, its session and both timings once. Calls like ``onnxruntime.InferenceSession``.
    """

    def __init__(self, openvino: Any, make_onnxruntime: Callable[[], Any], decided: Decided,
                 known: Callable[[], str | None] = lambda: None) -> None:
        self._openvino = openvino
        self._make_onnxruntime = make_onnxruntime
        self._decided = decided
        self._known = known
        self._chosen: Any | None = None
        self._lock = threading.Lock()

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, Any]) -> list[Any]:
        if self._chosen is None:
            with self._lock:
                if self._chosen is None:
                    return self._race(output_names, feeds)
        return self._chosen.run(output_names, feeds)

    def _race(self, output_names: Sequence[str] | None, feeds: dict[str, Any]) -> list[Any]:
        known = self._known()  # decided by another session of this model since this one was made: no second race
        if known == OPENVINO:
            return self._settle(OPENVINO, self._openvino, {}, self._openvino.run(output_names, feeds))
        try:
            rival = self._make_onnxruntime()
        except Exception:  # ONNX Runtime cannot load what OpenVINO compiled: OpenVINO it is, unmeasured
            return self._settle(OPENVINO, self._openvino, {}, self._openvino.run(output_names, feeds))
        if known == ONNXRUNTIME:
            return self._settle(ONNXRUNTIME, rival, {}, rival.run(output_names, feeds))
        sessions = {OPENVINO: self._openvino, ONNXRUNTIME: rival}
        probe = probe_feeds(feeds)
        seconds: dict[str, float] = {}
        results: dict[str, list[Any]] = {}
        failure: Exception | None = None
        for name, session in sessions.items():
            try:
                session.run(output_names, probe)  # warm-up: first-call allocations and lazy kernel setup
                start = time.perf_counter()
                results[name] = session.run(output_names, probe)
                seconds[name] = time.perf_counter() - start
            except Exception as exc:  # e.g. out of memory on one engine: the other may still serve
                failure = failure or exc
        if not results:
            raise failure  # type: ignore[misc]  # both failed: the caller's error handling (tile halving) applies
        winner = faster(seconds)
        result = results[winner] if probe is feeds else sessions[winner].run(output_names, feeds)
        return self._settle(winner, sessions[winner], seconds, result)

    def _settle(self, winner: str, session: Any, seconds: dict[str, float], result: list[Any]) -> list[Any]:
        self._chosen = self._openvino = session  # the loser is released
        self._decided(winner, session, seconds)
        return result

    def get_inputs(self) -> list[Any]:
        return (self._chosen or self._openvino).get_inputs()

    def get_outputs(self) -> list[Any]:
        return (self._chosen or self._openvino).get_outputs()

    def get_providers(self) -> list[str]:
        return (self._chosen or self._openvino).get_providers()

    @property
    def precision(self) -> str:
        return getattr(self._chosen or self._openvino, "precision", "fp32")


def probe_feeds(feeds: dict[str, Any], side: int = PROBE_SIDE) -> dict[str, Any]:
    """The first call's inputs cut to their top-left ``side`` x ``side`` pixels, where every image input (4-D,
    NCHW) has the same height and width (all the bundled models), so a race costs four runs of a small crop rather
    than of a whole tile; the inputs themselves otherwise (already small, or of mixed sizes)."""
    images = [value.shape[2:] for value in feeds.values() if getattr(value, "ndim", 0) == 4]
    if not images or len(set(images)) > 1 or max(images[0]) <= side:
        return feeds
    return {name: value[:, :, :side, :side] if getattr(value, "ndim", 0) == 4 else value
            for name, value in feeds.items()}  # fmt: skip


def faster(seconds: dict[str, float]) -> str:
    """The winner of a race: OpenVINO unless ONNX Runtime ran faster by :data:`MARGIN` in runs long enough to time
    (or only ONNX Runtime ran). Too short to tell is OpenVINO, every time: a tiny input must not flip the engine
    from one run to the next (the outputs of two engines differ in the last float bits)."""
    if OPENVINO not in seconds:
        return ONNXRUNTIME
    if ONNXRUNTIME not in seconds or not worth_remembering(seconds):
        return OPENVINO
    return ONNXRUNTIME if seconds[ONNXRUNTIME] < seconds[OPENVINO] * (1 - MARGIN) else OPENVINO


def worth_remembering(seconds: dict[str, float]) -> bool:
    """A choice from two timed runs each long enough to measure (not a 16-pixel tile, not a failed run)."""
    return len(seconds) == 2 and min(seconds.values()) >= MIN_SECONDS
