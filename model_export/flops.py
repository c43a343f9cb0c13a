"""FLOPs of one ONNX model call at given input shapes, counted from the graph.

ONNX has no FLOP counter of its own and the usual ones (fvcore, thop, ptflops) count PyTorch modules, not the
exported graph that actually runs, so this walks the graph: the input dimensions are fixed to the shapes of the
call, ``onnx.shape_inference`` (with data propagation, so a ``Resize`` or ``Reshape`` whose sizes are computed in
the graph still gets a shape) gives every tensor's shape, and each Conv, ConvTranspose, MatMul and Gemm adds
2 x its multiply-accumulates. Element-wise operators are left out: they are memory-bound, and counting them would
flatter the achieved GFLOP/s. A node whose shapes cannot be inferred is counted in ``unresolved``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import shape_inference

Shapes = tuple[tuple[str, tuple[int, ...]], ...]  # (input name, shape) of each input fed to one call


@dataclass(frozen=True)
class Flops:
    total: float  # 2 x multiply-accumulates of the counted operators
    unresolved: int  # counted operators whose shapes inference could not give


@functools.lru_cache(maxsize=64)
def model_flops(path: str, shapes: Shapes) -> Flops:
    """The FLOPs of one call of the model file at ``path`` with inputs of ``shapes`` (cached: a batch of equal
    tiles is counted once)."""
    model = onnx.load(path)
    fed = dict(shapes)
    for value in model.graph.input:
        if value.name not in fed:
            continue
        shape = fed[value.name]
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, shape):
            dim.ClearField("dim_param")
            dim.dim_value = int(size)
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    flops = count(inferred)
    if flops.unresolved:  # shapes computed at run time (the INN's Slice / Gather of a Shape): run it and look
        flops = count(inferred, _shapes_by_running(inferred, dict(shapes)))
    return flops


def count(model: onnx.ModelProto, extra: dict[str, tuple[int, ...]] | None = None) -> Flops:
    """Sum the counted operators of a model whose shapes have been inferred (``extra``: shapes seen at run time)."""
    shapes = {**_known_shapes(model), **(extra or {})}
    total, unresolved = 0.0, 0
    for node in model.graph.node:
        if node.op_type not in COUNTERS:
            continue
        value = COUNTERS[node.op_type](node, shapes)
        if value is None:
            unresolved += 1
        else:
            total += value
    return Flops(total, unresolved)


def _shapes_by_running(model: onnx.ModelProto, fed: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The real shapes of the counted operators' inputs and outputs: the model run once by ONNX Runtime on inputs
    of the fed shapes, with those tensors made graph outputs."""
    from onnx import helper

    from invsr_desktop.engine.sessions import SessionPool

    wanted = sorted({name for node in model.graph.node if node.op_type in COUNTERS
                     for name in (node.input[0], node.output[0])} - {o.name for o in model.graph.output})  # fmt: skip
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    for name in wanted:
        probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = SessionPool("cpu", threads=1).session(probe.SerializeToString())
    feeds = {}
    for value in model.graph.input:
        if value.name in fed:
            dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            feeds[value.name] = np.full(fed[value.name], 0.5, dtype=dtype)
    names = [o.name for o in session.get_outputs()]
    return {name: tuple(out.shape) for name, out in zip(names, session.run(names, feeds))}


def _known_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:  # weights exported as Constant nodes (the INN's couplings) rather than initializers
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                shapes[node.output[0]] = tuple(value.dims)
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes


def _conv(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> float | None:
    weight, out = shapes.get(node.input[1]), shapes.get(node.output[0])
    if weight is None or out is None:
        return None
    # weight (Cout, Cin / group, kh, kw): each output element takes Cin / group x kh x kw MACs
    return 2.0 * math.prod(out) * math.prod(weight[1:])


def _conv_transpose(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> float | None:
    weight, x = shapes.get(node.input[1]), shapes.get(node.input[0])
    if weight is None or x is None:
        return None
    # weight (Cin, Cout / group, kh, kw): each input element is spread over Cout / group x kh x kw outputs
    return 2.0 * math.prod(x) * math.prod(weight[1:])


def _matmul(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> float | None:
    a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
    if a is None or out is None or not a:
        return None
    return 2.0 * math.prod(out) * a[-1]


def _gemm(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> float | None:
    a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
    if a is None or out is None or len(a) != 2:
        return None
    trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
    return 2.0 * math.prod(out) * (a[0] if trans_a else a[1])


COUNTERS = {"Conv": _conv, "ConvTranspose": _conv_transpose, "MatMul": _matmul, "Gemm": _gemm}


def shapes_of(feeds: Mapping[str, Any]) -> Shapes:
    """The ``Shapes`` key of a call's feeds (arrays by input name)."""
    return tuple(sorted((name, tuple(int(d) for d in np.shape(value))) for name, value in feeds.items()))
