"""The export core both exporters share (``invsr-export``'s :mod:`model_export.export` and the diffusion family's
:mod:`model_export.export_diffusion`): PyTorch -> ONNX, the check of ONNX Runtime against PyTorch on a random input,
the ``invsr.*`` metadata of a plain ``lr -> sr`` model, and writing / installing the file atomically.

Kept apart so that neither exporter imports the other: a family's exporter builds on this, and ``invsr-export``
dispatches to a family's exporter when the checkpoint is one of its (the diffusion denoiser).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn as nn

from invsr_desktop.engine import model_metadata as keys
from invsr_desktop.engine.errors import InvsrError
from model_export.checkpoints import Checkpoint, default_backend

DEFAULT_OPSET = 17
ARCH_DISPLAY = {"rrdbnet": "RRDBNet"}


class ExportError(InvsrError):
    """The export itself failed (exporter or runtime error); the message is for the user."""


@dataclass
class Check:
    """The result of comparing one ONNX model's output with a reference."""

    what: str
    shape: tuple[int, ...]
    max_abs: float
    psnr: float
    limit: str
    ok: bool

    def line(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (f"check {self.what}: input {'x'.join(map(str, self.shape))}, max |diff| = {self.max_abs:.3e}, "
                f"PSNR = {_fmt_psnr(self.psnr)} ({self.limit}) {verdict}")


def _fmt_psnr(value: float) -> str:
    return "inf dB" if math.isinf(value) else f"{value:.2f} dB"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two outputs clipped to [0, 1] (what the app shows), data range 1."""
    mse = float(np.mean((np.clip(a, 0, 1).astype(np.float64) - np.clip(b, 0, 1).astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


class HalfPrecision(nn.Module):
    """A network run in float16 between float32 input and output (the casts become part of the ONNX graph)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = copy.deepcopy(net).half().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.half()).float()


def torch_to_onnx(net: nn.Module, example: torch.Tensor, exporter: str = "torchscript",
                  opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Export ``net`` with input ``lr`` and output ``sr``, batch / height / width dynamic, as one in-memory model.

    ``exporter`` is ``torchscript`` (``torch.onnx.export(dynamo=False)`` with ``dynamic_axes``: fast, plain graph)
    or ``dynamo`` (``torch.export`` based, ``dynamic_shapes``; opset >= 18; batch fixed at 1).
    """
    multiple = int(getattr(_inner(net), "input_multiple", 1))
    net = net.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, tracer warnings
            if exporter == "torchscript":
                buf = io.BytesIO()
                torch.onnx.export(
                    net, (example,), buf, input_names=["lr"], output_names=["sr"], opset_version=opset,
                    dynamo=False, do_constant_folding=True,
                    dynamic_axes={"lr": {0: "batch", 2: "height", 3: "width"},
                                  "sr": {0: "batch", 2: "out_height", 3: "out_width"}},
                )
                model = onnx.load_from_string(buf.getvalue())
            elif exporter == "dynamo":
                from torch.export import Dim

                h: Any = Dim("height") if multiple == 1 else multiple * Dim("height_blocks")
                w: Any = Dim("width") if multiple == 1 else multiple * Dim("width_blocks")
                program = torch.onnx.export(
                    net, (example,), None, input_names=["lr"], output_names=["sr"], opset_version=max(opset, 18),
                    dynamo=True, dynamic_shapes=({2: h, 3: w},), external_data=False, optimize=True, verbose=False,
                )
                model = program.model_proto
            else:
                raise ValueError(f"unknown exporter {exporter!r}")
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporters raise a zoo of types
        raise ExportError(f"the {exporter} exporter failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    _name_dims(model)
    strip_debug_info(model.graph)
    return model


def strip_debug_info(graph: onnx.GraphProto) -> None:
    """Drop per-node stack traces and source paths (the dynamo exporter writes them): not the user's business."""
    for node in graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                strip_debug_info(attr.g)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.doc_string = ""
        del value.metadata_props[:]


def _inner(net: nn.Module) -> nn.Module:
    return net.net if isinstance(net, HalfPrecision) else net


def _name_dims(model: onnx.ModelProto) -> None:
    """Give the I/O dims the names of the convention, whatever the exporter called them."""
    for values, names in ((model.graph.input, ("batch", None, "height", "width")),
                          (model.graph.output, ("batch", None, "out_height", "out_width"))):
        for value in values:
            dims = value.type.tensor_type.shape.dim
            for dim, name in zip(dims, names):
                if name is not None and not dim.HasField("dim_value"):
                    dim.dim_param = name


def serialize(model: onnx.ModelProto) -> bytes:
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ExportError("the exporter wrote weights to an external file; the app needs one self-contained file")
    data = model.SerializeToString()
    if len(data) >= 2**31:
        raise ExportError("the model is over 2 GB, which one ONNX file cannot hold")
    return data


def ort_session(model: bytes | str | os.PathLike, threads: int = 0) -> Any:
    """A CPU ONNX Runtime session with the optimisation level the app uses (``threads`` 0: ORT's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


def run_ort(session: Any, x: np.ndarray) -> np.ndarray:
    (out,) = session.run(["sr"], {"lr": np.ascontiguousarray(x, dtype=np.float32)})
    return out


def check_input_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """``size`` rounded up to the model's input multiple, keeping ``side / multiple`` odd (so the check still runs
    odd-sized feature maps when the model pixel-unshuffles its input)."""
    out = []
    for side in size:
        blocks = max(1, math.ceil(side / multiple))
        if multiple > 1 and blocks % 2 == 0:
            blocks += 1
        out.append(blocks * multiple)
    return out[0], out[1]


def random_input(size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A seeded uniform-noise image in [0, 1): every pixel and channel differs, so a mix-up of channels or pixel
    positions (e.g. a pixel-unshuffle exported with the wrong channel order) cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((1, 3, size[0], size[1]), generator=gen, dtype=torch.float32)


def compare(what: str, x: np.ndarray, got: np.ndarray, reference: np.ndarray, fp32_onnx: np.ndarray | None,
            tolerance: float | None = None, min_psnr: float | None = None) -> Check:
    """max |got - reference| and the PSNR of ``got`` against the fp32 ONNX output (or the reference), for the
    outputs of input ``x``."""
    shape = tuple(int(d) for d in x.shape)
    if got.shape != reference.shape:
        return Check(what, shape, math.inf, -math.inf,
                     f"output shape {tuple(got.shape)} != PyTorch's {tuple(reference.shape)}", False)
    max_abs = float(np.max(np.abs(got.astype(np.float64) - reference.astype(np.float64))))
    value = psnr(got, fp32_onnx if fp32_onnx is not None else reference)
    finite = bool(np.all(np.isfinite(got)))
    if tolerance is not None:
        ok = finite and max_abs <= tolerance
        limit = f"tolerance {tolerance:.0e}"
    else:
        ok = finite and (min_psnr is None or value >= min_psnr)
        limit = f"min PSNR {min_psnr:g} dB" if min_psnr is not None else "reported only"
    return Check(what, shape, max_abs, value, limit, ok)


def estimate_bytes_per_pixel(arch: str, options: dict[str, Any]) -> int | None:
    """Memory one input pixel costs while the model runs (float32 activations, x1.5 for ONNX Runtime's arena);
    the engine sizes tiles from it. None for an architecture without an estimate."""
    if arch != "rrdbnet":
        return None
    nf = int(options.get("num_feat", 64))
    gc = int(options.get("num_grow_ch", 32))
    unshuffle = {4: 1, 2: 2, 1: 4}.get(int(options.get("scale", 4)), 1)
    low = 3 * nf + 4 * gc  # block input, the dense concatenation, the block output, per feature pixel
    high = 4 * nf * 2 + 16 * nf * 3  # the x2 stage, then the x4 stage (upsampled, conv, conv_hr)
    io_bytes = 3 * (1 + int(options.get("scale", 4)) ** 2)
    return int(1.5 * 4 * ((low + high) / unshuffle**2 + io_bytes))


def metadata(ckpt: Checkpoint, args: argparse.Namespace, precision: str, exporter: str, opset: int,
             multiple: int, parameters: int, checks: list[Check]) -> dict[str, str]:
    """The ``invsr.*`` metadata props of an exported model."""
    from invsr_desktop import __version__

    scale = ckpt.scale
    display = ARCH_DISPLAY.get(ckpt.arch, ckpt.arch)
    name = args.name or f"{ckpt.suggested_name} ({display} x{scale})"
    if precision != "fp32" and not args.name:
        name += f" {precision}"
    trained_on = args.trained_on or ckpt.trained_on or f"unknown (third-party checkpoint {ckpt.path.name})"
    props = {
        keys.BACKEND: args.backend or default_backend(ckpt.arch),
        keys.ARCH: ckpt.arch,
        keys.ARCH_OPTIONS: json.dumps(ckpt.options, sort_keys=True),
        keys.SCALE: str(scale),
        keys.VERSION: __version__,
        keys.TRAINED_ON: trained_on,
        keys.NAME: name,
        keys.PRECISION: precision,
        keys.INPUT_MULTIPLE: str(multiple),
        keys.PARAMETERS: str(parameters),
        keys.SOURCE: ckpt.source,
        keys.SOURCE_SHA256: ckpt.sha256,
        keys.EXPORTER: f"invsr-export {__version__}, torch {torch.__version__}, {exporter}, opset {opset}",
        keys.CHECK: json.dumps([{"what": c.what, "input": list(c.shape), "max_abs_diff": c.max_abs,
                                    "psnr_db": None if math.isinf(c.psnr) else round(c.psnr, 3)} for c in checks]),
    }
    if ckpt.training:
        props[keys.TRAINING] = json.dumps(ckpt.training, sort_keys=True)
    bpp = estimate_bytes_per_pixel(ckpt.arch, ckpt.options)
    if bpp:
        props[keys.BYTES_PER_PIXEL] = str(bpp * (2 if precision == "int8" else 1))
    return props


def finish_model(model: onnx.ModelProto, props: dict[str, str], description: str) -> bytes:
    from invsr_desktop import __version__

    onnx.helper.set_model_props(model, props)
    model.producer_name = "invsr-export"
    model.producer_version = __version__
    model.doc_string = description
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported model is not valid ONNX: {str(exc).splitlines()[0]}") from None
    return serialize(model)


def atomic_write(data: bytes, path: Path) -> None:
    """Write through a temporary file and a rename, with the permissions of a normal file (mkstemp's are 0600,
    which would make a model installed for the app unreadable to other users)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def install(path: Path) -> Path:
    """Copy an exported model into the user model folder (atomically); returns the new path."""
    from invsr_desktop.engine.model_files import user_models_dir

    dest = user_models_dir() / path.name
    if dest.resolve() == path.resolve():
        return dest
    atomic_write(path.read_bytes(), dest)
    return dest
