"""OpenVINO on the CPU, behind the ONNX Runtime session interface the backends already use.

OpenVINO reads the same ONNX files (nothing is re-exported) and, on x86 CPUs, runs them faster than ONNX Runtime's
CPU provider: its own convolution kernels for AVX2 / AVX-512, and bf16 on CPUs with AMX or AVX-512 bf16, where
ONNX Runtime's CPU provider has no bf16 path at all. ONNX Runtime's own OpenVINO execution provider only offers
FP32 / ACCURACY on the CPU, so this module drives ``openvino`` directly.

:class:`OpenVinoSession` implements what the backends call on a session (``run``, ``get_inputs``,
``get_outputs``, ``get_providers``), so no backend changes. Compiled models are cached on disk (OpenVINO's
``CACHE_DIR``) so the second start of a model skips most of the compilation.
"""

from __future__ import annotations

import functools
import io
import os
import platform
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

PROVIDER = "OpenVINO"  # the name the session pool and the status line use (not ORT's OpenVINOExecutionProvider)
Precision = Literal["fast", "fp32"]
X86 = {"x86_64", "amd64", "i386", "i686", "x86"}


@functools.lru_cache(maxsize=1)
def openvino_core() -> Any | None:
    """An ``openvino.Core``, or None when OpenVINO is not installed or this is not an x86 CPU.

    On ARM, OpenVINO's CPU plugin exists but has not been measured against ONNX Runtime here, so the fast path is
    offered only where it was measured. One core serves every session (it holds the plugin and the cache setting).
    """
    if platform.machine().lower() not in X86:
        return None
    try:
        import openvino
    except ImportError:
        return None
    return openvino.Core()


def bf16_supported(core: Any) -> bool:
    """Whether the CPU runs bf16 natively (AMX or AVX-512 bf16): OpenVINO lists it among its capabilities."""
    try:
        return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # an old plugin without the property: assume not
        return False


def inference_precision(core: Any, precision: Precision) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` for the user's choice: bf16 only when asked for speed and native.

    Set explicitly either way: on a CPU with AMX, OpenVINO's default is already bf16, which "fp32" must not get.
    """
    return "bf16" if precision == "fast" and bf16_supported(core) else "f32"


@dataclass(frozen=True)
class Port:
    """A model input or output as ONNX Runtime describes one (the backends read ``.name``)."""

    name: str
    shape: list[Any]
    type: str = "tensor(float)"


class OpenVinoSession:
    """One compiled model, called like ``onnxruntime.InferenceSession``.

    An infer request serves one call at a time, so idle requests wait in a list and a call takes one (or makes
    one). Not ``threading.local``: Qt's worker threads get a new Python thread state per call, and an infer request
    freed with a thread state crashes the interpreter.
    """

    def __init__(self, compiled: Any, precision: str, inputs: list[Port], outputs: list[Port]) -> None:
        self.compiled = compiled
        self.precision = precision  # what OpenVINO was asked for: "f32" or "bf16"
        self._inputs, self._outputs = inputs, outputs
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            request = self._idle.pop() if self._idle else self.compiled.create_infer_request()
        try:
            # The inputs are read in place (the call is synchronous); the outputs come back as copies, since the
            # request's buffers are reused by the next call.
            result = request.infer(feeds, share_inputs=True, share_outputs=False)
            names = list(output_names) if output_names else [port.name for port in self.get_outputs()]
            return [result[self.compiled.output(name)] for name in names]
        finally:
            with self._lock:
                self._idle.append(request)

    def get_inputs(self) -> list[Port]:
        return list(self._inputs)

    def get_outputs(self) -> list[Port]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [PROVIDER]


def _port(port: Any) -> Port:
    shape = [int(d.get_length()) if d.is_static else None for d in port.get_partial_shape()]
    return Port(port.get_any_name(), shape)


def compile_session(
    core: Any, model: str | os.PathLike | bytes, precision: Precision, threads: int, cache: Path | None
) -> OpenVinoSession:
    """Compile an ONNX model (a path or its bytes) for the CPU. Raises whatever OpenVINO raises: the pool turns it
    into a fallback to ONNX Runtime."""
    hint = inference_precision(core, precision)
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(cache)})
    if isinstance(model, bytes):
        read = core.read_model(io.BytesIO(model))
        return OpenVinoSession(core.compile_model(read, "CPU", config), hint, *_ports(read))
    # From the path, a cached model is loaded without reading the ONNX file at all (0.3-0.4 s against 0.7-0.9 s
    # read and compiled from the cache, for the 67 MB Real-ESRGAN x4plus network, measured in one process).
    compiled = core.compile_model(str(model), "CPU", config)
    if all(len(port.get_names()) == 1 for port in [*compiled.inputs, *compiled.outputs]):
        return OpenVinoSession(compiled, hint, *_ports(compiled))
    # Compilation may fuse a graph input with the tensor it feeds, so a port has several names (the diffusion
    # model's ``t`` is also ``/Reshape_output_0``): the ONNX names come from the model as read.
    return OpenVinoSession(compiled, hint, *_ports(core.read_model(str(model))))


def _ports(model: Any) -> tuple[list[Port], list[Port]]:
    return [_port(p) for p in model.inputs], [_port(p) for p in model.outputs]


def failure_reason(exc: BaseException) -> str:
    """The informative line of an OpenVINO error (its first lines name only C++ source files)."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip()]
    noise = ("Exception from", "Check '", "FrontEnd API failed", "To facilitate", "Summary:")
    useful = [line for line in lines if not line.startswith(noise)]
    return useful[-1] if useful else type(exc).__name__

