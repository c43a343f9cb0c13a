"""Bicubic interpolation as a real backend: an ONNX graph with one cubic ``Resize``, run by ONNX Runtime.

It is the baseline every table compares against and the backend that works on any machine. Keys' cubic with
a = -0.5 and half-pixel centres is MATLAB's upscaling kernel, so its results match the published bicubic figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from invsr_desktop.engine.backend import BackendSpec, BuildRequest
from invsr_desktop.engine.hookspecs import hookimpl
from plugins.onnx_runner import OnnxRunner

MODEL = Path(__file__).with_name("bicubic.onnx")  # written by ``python -m plugins.bicubic.graph``


# Always full precision: bicubic is the baseline every table compares against, its graph computes the output size
# from a float scale (in bf16, 157 x 2.5 comes out a pixel off), and a resize is memory-bound, so bf16 would buy
# nothing (``invsr-bench`` on an AVX-512 bf16 CPU: 6.9 MP/s bf16 against 7.1 f32).
PRECISION = "fp32"


def build(request: BuildRequest) -> OnnxRunner:
    scale = np.array([float(request.scale)], dtype=np.float64)
    return OnnxRunner(session=request.sessions.session(MODEL, precision=PRECISION), scale=float(request.scale),
                      extra_inputs={"scale": scale})  # fmt: skip


@hookimpl
def invsr_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            id="bicubic",
            name="Bicubic",
            kind="interpolation",
            scales=(2, 3, 4),
            any_scale=True,
            build=build,
            description="Classic bicubic interpolation (MATLAB kernel). Fast, smooth, no invented detail.",
            bytes_per_pixel=256,
        )
    ]
