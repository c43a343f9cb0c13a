"""``invsr-export``: a checkpoint -> one self-contained ONNX file that the app runs, checked against PyTorch.

::

    invsr-export CHECKPOINT -o OUT.onnx [--arch rrdbnet] [--scale N] [--backend esrgan] [--name "..."]
                 [--trained-on "..."] [--fp16 | --int8 --calibration DIR] [--install]

CHECKPOINT is one of our model files (``model_<arch>_x<scale>.pt`` from ``invsr-train``) or a standard ESRGAN /
Real-ESRGAN RRDBNet checkpoint in either key naming (BasicSR ``conv_first`` / ``body.N.rdb1``, or the original
ESRGAN's ``model.N``; ``params`` / ``params_ema`` wrappers), loaded with ``torch.load(weights_only=True``): a pickle
that holds Python objects is refused. The architecture's options (features, blocks, growth, scale, including a
Real-ESRGAN x2 model's pixel-unshuffled input) are read from the tensors' shapes. It may also be an ncnn model's
``.param`` (or ``.bin``), the form Upscayl and realesrgan-ncnn-vulkan ship Real-ESRGAN in: an RRDBNet's weights are
read from the pair (float16 or float32 storage; :mod:`model_export.ncnn_weights`) and exported the same way.

The ONNX file follows DESIGN.md: input ``lr``, output ``sr``, NCHW float32 RGB in [0, 1], dynamic ``batch``,
``height``, ``width`` (``out_height``, ``out_width`` for ``sr``); opset 17 by default; metadata props ``invsr.*``
(see :func:`metadata`). Every export is checked: ONNX Runtime's output against PyTorch's on a random (non-uniform)
input of an odd size; the maximum absolute difference is printed, and over ``--tolerance`` the command writes
nothing and exits with status 1.

``--fp16`` writes a half-precision model (weights and compute fp16, ``lr`` / ``sr`` stay float32, cast inside the
graph): checked against PyTorch fp32 with the looser ``--fp16-tolerance``. ``--int8 --calibration DIR`` writes a
statically quantized model (ONNX Runtime ``quantize_static``, QDQ, int8 per-channel weights, uint8 activations)
calibrated on LR patches cut from the images in DIR (downscaled by the model's scale with MATLAB bicubic, as in
training); its check is the PSNR against the fp32 model's output on held-out patches (``--int8-min-psnr``).
For both, the maximum absolute difference and the PSNR against the fp32 output are printed.

``--install`` copies the result into the user model folder (``$INVSR_MODELS_DIR``, else
``$XDG_DATA_HOME/invsr-desktop/models``, else ``~/.local/share/invsr-desktop/models``), where the app finds it.

A diffusion model file (``diffusion_unet``, from ``invsr-train diffusion``) is a denoiser ``(x_t, lr_up, t) -> x0``:
it is exported and checked by :mod:`model_export.export_diffusion` (fp32 only).

Exit status: 0 written, 1 the check failed (nothing written), 2 bad arguments or an unusable checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import torch

from model_export.checkpoints import CheckpointError, load_checkpoint
from model_export.onnx_core import (
    DEFAULT_OPSET,
    Check,
    ExportError,
    HalfPrecision,
    atomic_write,
    check_input_size,
    compare,
    finish_model,
    install,
    metadata,
    ort_session,
    psnr,
    random_input,
    run_ort,
    serialize,
    torch_to_onnx,
)
from model_export.quantize import calibration_patches, quantize_int8

DEFAULT_TOLERANCE = 1e-4
DEFAULT_FP16_TOLERANCE = 2e-2
DEFAULT_INT8_MIN_PSNR = 30.0
DEFAULT_CHECK_SIZE = (37, 29)


# ---------------------------------------------------------------------------------------------------------------
# The command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="invsr-export",
        description="Convert a checkpoint (ours, or ESRGAN / Real-ESRGAN RRDBNet) to an ONNX model for InvSR Desktop, "
        "checked against PyTorch on a random odd-sized input.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint file (.pt / .pth; loaded with weights_only=True), or an "
                   "ncnn model's .param with its .bin beside it (Upscayl's model files)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="ONNX file to write; its stem is the backend id in the app (e.g. esrgan-faithful-x4.onnx)")
    p.add_argument("--arch", help="architecture the checkpoint must hold (default: whatever it holds)")
    p.add_argument("--scale", type=int, help="scale the checkpoint must have (default: read from it)")
    p.add_argument("--backend", help="the app plugin that serves the model (default: esrgan for rrdbnet)")
    p.add_argument("--name", help="display name in the app (default: checkpoint or config name, arch, scale)")
    p.add_argument("--trained-on", help="what the model was trained on (default: from our checkpoints' metadata)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true",
                           help="write a float16 model (I/O stays float32); smaller, faster on GPUs")
    precision.add_argument("--int8", action="store_true",
                           help="write a statically quantized int8 model (QDQ); needs --calibration")
    p.add_argument("--calibration", type=Path, metavar="DIR",
                   help="folder of images for int8 calibration (HR photos; LR patches are cut from them)")
    p.add_argument("--calibration-count", type=int, default=16, help="calibration patches (default 16)")
    p.add_argument("--calibration-patch", type=int, default=64, help="LR patch side (default 64)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"max |ONNX - PyTorch| for fp32 (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--fp16-tolerance", type=float, default=DEFAULT_FP16_TOLERANCE,
                   help=f"max |ONNX fp16 - PyTorch fp32| (default {DEFAULT_FP16_TOLERANCE:g})")
    p.add_argument("--int8-min-psnr", type=float, default=DEFAULT_INT8_MIN_PSNR,
                   help=f"min PSNR of int8 vs fp32 output on held-out patches (default {DEFAULT_INT8_MIN_PSNR:g} dB)")
    p.add_argument("--check-size", default=f"{DEFAULT_CHECK_SIZE[0]}x{DEFAULT_CHECK_SIZE[1]}", metavar="HxW",
                   help="size of the random check input (default 37x29; rounded up to the model's input multiple)")
    p.add_argument("--seed", type=int, default=0, help="seed of the check input and calibration crops")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch.onnx exporter (default torchscript: faster, plain graph)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET}, min 17)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for PyTorch and ONNX Runtime (default 0: all cores; 1 is faster on a busy "
                   "machine)")
    p.add_argument("--install", action="store_true", help="also copy the model into the user model folder")
    p.add_argument("--force", action="store_true",
                   help="replace an existing output file (and an installed model of that name); without it they "
                   "are never overwritten")
    return p


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--check-size expects HxW, e.g. 37x29; got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"--check-size must be positive; got {text!r}")
    return h, w


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        size = _parse_size(args.check_size)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.int8 and args.calibration is None:
        parser.error("--int8 needs --calibration DIR (a folder of images)")
    if args.calibration is not None and not args.int8:
        parser.error("--calibration is only used with --int8")
    if args.opset < 17:
        parser.error("--opset must be 17 or newer")
    if args.output.suffix.lower() != ".onnx":
        parser.error(f"the output file must end in .onnx (the app only scans *.onnx): {args.output}")
    if args.output.exists() and not args.force:
        parser.error(f"{args.output} exists; choose another name or add --force to replace it")
    if args.install and not args.force:
        from invsr_desktop.engine.model_files import user_models_dir

        installed = user_models_dir() / args.output.name
        if installed.exists() and installed.resolve() != args.output.resolve():
            parser.error(f"a model named {installed.name} is already installed ({installed}); "
                         "add --force to replace it")
    try:
        return _run(args, size)
    except (CheckpointError, ExportError) as exc:
        print(f"invsr-export: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, size: tuple[int, int]) -> int:
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with torch.no_grad():  # not torch.set_grad_enabled: main() may run inside another program (tests, a GUI)
            return _export(args, size)
    finally:
        torch.set_num_threads(threads)


def _export(args: argparse.Namespace, size: tuple[int, int]) -> int:
    """Load, trace, check against PyTorch (fp32, then the fp16 / int8 variant if asked), write; a failed check
    writes nothing."""
    started = time.perf_counter()
    ckpt = load_checkpoint(args.checkpoint, arch=args.arch, scale=args.scale)
    if ckpt.arch == "diffusion_unet":  # a denoiser (x_t, lr_up, t) -> x0, not lr -> sr: its own exporter
        from model_export.export_diffusion import run_from_export_args

        return run_from_export_args(args, size)
    net = ckpt.build()
    multiple = int(getattr(net, "input_multiple", 1))
    parameters = sum(p.numel() for p in net.parameters())
    print(f"{ckpt.path.name}: {ckpt.arch} x{ckpt.scale} {json.dumps(ckpt.options, sort_keys=True)}, "
          f"{parameters / 1e6:.2f} M parameters, from {ckpt.source}")

    # trace at one size, check at another (odd) one: proves the height and width really are dynamic
    example = random_input(check_input_size((16, 20), multiple), seed=args.seed + 1)
    probe = _Probe(net, random_input(check_input_size(size, multiple), seed=args.seed), args.threads)
    opset = args.opset if args.exporter == "torchscript" else max(args.opset, 18)
    fp32_model = torch_to_onnx(net, example, exporter=args.exporter, opset=opset)
    try:
        probe.check_fp32(fp32_model, args.tolerance)
        precision, final_model = "fp32", fp32_model
        if args.fp16:
            precision = "fp16"
            final_model = probe.check_fp16(torch_to_onnx(HalfPrecision(net), example.clone(), exporter=args.exporter,
                                                         opset=opset), args.fp16_tolerance)  # fmt: skip
        elif args.int8:
            precision = "int8"
            final_model = probe.check_int8(args, ckpt.scale, multiple)
    except _CheckFailed as failed:
        return _failed(args, str(failed))

    props = metadata(ckpt, args, precision, args.exporter, opset, multiple, parameters, probe.checks)
    description = (f"{props['invsr.name']}: {ckpt.arch} x{ckpt.scale} ({precision}) exported by invsr-export from "
                   f"{ckpt.source}. Input lr, output sr: NCHW float32 RGB in [0, 1]; height and width must be "
                   f"multiples of {multiple}.")
    data = finish_model(final_model, props, description)
    out_path = args.output
    atomic_write(data, out_path)
    print(f"wrote {out_path} ({len(data) / 1e6:.1f} MB, {precision}, backend {props['invsr.backend']!r}, "
          f"id {out_path.stem!r}) in {time.perf_counter() - started:.1f} s")
    if args.install:
        dest = install(out_path)
        print(f"installed {dest} (the app lists it as {props['invsr.name']!r})")
    return 0


class _CheckFailed(Exception):
    """An export check failed: why, in words (nothing is written)."""


class _Probe:
    """The checks of one export on one odd-sized random input: each ONNX variant against PyTorch fp32 (and the
    fp32 ONNX model), recorded in :attr:`checks` (they go into the file's metadata) and printed."""

    def __init__(self, net, x, threads: int):
        self.net, self.x, self.threads = net, x, threads
        self.reference = net(x).numpy()
        self.checks: list[Check] = []
        self.fp32_bytes = b""
        self.fp32_out: np.ndarray | None = None

    def _record(self, check: Check) -> Check:
        self.checks.append(check)
        print(check.line())
        return check

    def check_fp32(self, model, tolerance: float) -> None:
        self.fp32_bytes = serialize(model)
        self.fp32_out = run_ort(ort_session(self.fp32_bytes, self.threads), self.x.numpy())
        if not self._record(compare("fp32 (ONNX Runtime vs PyTorch)", self.x, self.fp32_out, self.reference, None,
                                    tolerance=tolerance)).ok:  # fmt: skip
            raise _CheckFailed("the ONNX model does not match PyTorch within --tolerance")

    def check_fp16(self, model, tolerance: float):
        out = run_ort(ort_session(serialize(model), self.threads), self.x.numpy())
        ort = self._record(compare("fp16 (ONNX Runtime fp16 vs PyTorch fp32; PSNR vs fp32 ONNX)", self.x, out,
                                   self.reference, self.fp32_out, tolerance=tolerance))  # fmt: skip
        # ONNX Runtime's CPU provider runs most fp16 nodes in fp32 (it inserts casts), so the check above mostly
        # sees the rounding of the weights; a GPU computes in fp16. PyTorch's half precision on the CPU shows that.
        half_out = HalfPrecision(self.net)(self.x).numpy()
        half = self._record(compare("fp16 compute (PyTorch half vs fp32, as a GPU runs it)", self.x, half_out,
                                    self.reference, self.fp32_out, tolerance=tolerance))  # fmt: skip
        if not (ort.ok and half.ok):
            raise _CheckFailed("the fp16 model is off by more than --fp16-tolerance (or not finite)")
        return model

    def check_int8(self, args: argparse.Namespace, scale: int, multiple: int):
        """Quantize on calibration patches of ``args.calibration`` and check on held-out patches of it."""
        calib = calibration_patches(args.calibration, scale, multiple, args.calibration_patch,
                                    args.calibration_count, seed=args.seed)  # fmt: skip
        held_out = calibration_patches(args.calibration, scale, multiple, args.calibration_patch,
                                       max(2, args.calibration_count // 4), seed=args.seed + 1000)  # fmt: skip
        print(f"int8: calibrating on {len(calib)} LR patches of {calib[0].shape[2]}x{calib[0].shape[3]} "
              f"from {args.calibration} (MinMax)")
        try:
            int8_bytes = quantize_int8(self.fp32_bytes, calib)
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"int8 quantization failed: {type(exc).__name__}: {exc}") from exc
        session = ort_session(int8_bytes, self.threads)
        fp32_session = ort_session(self.fp32_bytes, self.threads)
        self._record(compare("int8 on the random input (vs PyTorch fp32; PSNR vs fp32 ONNX)", self.x,
                             run_ort(session, self.x.numpy()), self.reference, self.fp32_out))  # fmt: skip
        patch_psnr, patch_max = [], 0.0
        for lr in held_out:
            ref32, got = run_ort(fp32_session, lr), run_ort(session, lr)
            patch_psnr.append(psnr(got, ref32))
            patch_max = max(patch_max, float(np.max(np.abs(got - ref32))))
        finite = [v for v in patch_psnr if not math.isinf(v)]
        mean_psnr = float(np.mean(finite)) if finite else math.inf
        held = self._record(Check(f"int8 on {len(held_out)} held-out image patches (vs fp32 ONNX)",
                                  tuple(held_out[0].shape), patch_max, mean_psnr,
                                  f"min PSNR {args.int8_min_psnr:g} dB", mean_psnr >= args.int8_min_psnr))  # fmt: skip
        if not held.ok:
            raise _CheckFailed("the int8 model is below --int8-min-psnr against the fp32 model")
        return onnx.load_from_string(int8_bytes)


def _failed(args: argparse.Namespace, why: str) -> int:
    print(f"invsr-export: error: check failed: {why}; nothing written to {args.output}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
