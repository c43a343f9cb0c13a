"""Bicubic interpolation as a real backend: an ONNX graph with one cubic ``Resize``, run by ONNX Runtime.

It is the baseline every table compares against and the backend that works on any machine. Keys' cubic with
a = -0.5 and half-pixel centres is MATLAB's upscaling kernel, so its results match the published bicubic figures.
"""

from __future__ import annotations

from functools import lru_cache

import onnx
from onnx import TensorProto, helper

from invsr_desktop import __version__
from invsr_desktop.engine.backend import BackendSpec, BuildRequest
from invsr_desktop.engine.hookspecs import hookimpl
from plugins.onnx_runner import OnnxRunner

OPSET = 18


@lru_cache(maxsize=16)
def bicubic_model(scale: float) -> bytes:
    """Serialized ONNX model: ``sr = Resize(lr, sizes=round([H, W] * scale))``, cubic a = -0.5, half-pixel.

    The output size is computed from ``sizes`` rather than ``scales`` so that a non-integer scale never loses a
    pixel to float rounding; the engine only feeds tiles whose scaled size is whole.
    """
    nodes = [
        helper.make_node("Shape", ["lr"], ["shape"]),
        helper.make_node("Slice", ["shape", "hw_start", "hw_end"], ["hw"]),
        helper.make_node("Cast", ["hw"], ["hw_f"], to=TensorProto.DOUBLE),
        helper.make_node("Mul", ["hw_f", "scale"], ["hw_scaled"]),
        helper.make_node("Round", ["hw_scaled"], ["hw_round"]),
        helper.make_node("Cast", ["hw_round"], ["hw_out"], to=TensorProto.INT64),
        helper.make_node("Slice", ["shape", "nc_start", "hw_start"], ["nc"]),
        helper.make_node("Concat", ["nc", "hw_out"], ["sizes"], axis=0),
        helper.make_node(
            "Resize",
            ["lr", "", "", "sizes"],
            ["sr"],
            mode="cubic",
            cubic_coeff_a=-0.5,
            coordinate_transformation_mode="half_pixel",
            exclude_outside=0,
        ),
    ]
    initializers = [
        helper.make_tensor("hw_start", TensorProto.INT64, [1], [2]),
        helper.make_tensor("hw_end", TensorProto.INT64, [1], [4]),
        helper.make_tensor("nc_start", TensorProto.INT64, [1], [0]),
        helper.make_tensor("scale", TensorProto.DOUBLE, [1], [float(scale)]),
    ]
    graph = helper.make_graph(
        nodes,
        "bicubic",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, [1, 3, "out_height", "out_width"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="invsr-desktop")
    model.ir_version = 9
    helper.set_model_props(
        model,
        {
            "invsr.backend": "bicubic",
            "invsr.arch": "resize-cubic-a-0.5",
            "invsr.scale": repr(float(scale)),
            "invsr.version": __version__,
            "invsr.trained_on": "nothing (interpolation)",
        },
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build(request: BuildRequest) -> OnnxRunner:
    session = request.sessions.session(bicubic_model(float(request.scale)))
    return OnnxRunner(session=session, scale=float(request.scale))


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
