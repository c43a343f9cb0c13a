"""The bicubic backend's ONNX graph, built with ``onnx.helper``; the plugin runs the committed ``bicubic.onnx``.

The graph is committed rather than built at start-up because importing ``onnx`` costs the app and every
``invsr-upscale`` run over a second (its ``ml_dtypes`` extension); ``python -m plugins.bicubic.graph`` rewrites the
file, and a test checks that the committed file is what this module builds.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from invsr_desktop.engine import model_metadata as keys


OPSET = 18
MODEL = Path(__file__).with_name("bicubic.onnx")


def bicubic_graph() -> bytes:
    """Serialized ONNX model: ``sr = Resize(lr, sizes=round([H, W] * scale))``, cubic a = -0.5, half-pixel.

    ``scale`` is an input (float64, shape [1]) so that one file serves every factor. The output size is computed
    from ``sizes`` rather than ``scales`` so that a non-integer scale never loses a pixel to float rounding; the
    engine only feeds tiles whose scaled size is whole.
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
    ]
    graph = helper.make_graph(
        nodes,
        "bicubic",
        [
            helper.make_tensor_value_info("lr", TensorProto.FLOAT, [1, 3, "height", "width"]),
            helper.make_tensor_value_info("scale", TensorProto.DOUBLE, [1]),
        ],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, [1, 3, "out_height", "out_width"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="invsr-desktop")
    model.ir_version = 9
    helper.set_model_props(
        model,
        {
            keys.BACKEND: "bicubic",
            keys.ARCH: "resize-cubic-a-0.5",
            keys.SCALE: "any (the scale input)",
            keys.TRAINED_ON: "nothing (interpolation)",
        },
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


if __name__ == "__main__":
    MODEL.write_bytes(bicubic_graph())
    print(f"wrote {MODEL}")
