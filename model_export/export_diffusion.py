"""ONNX export of a diffusion SR model's denoiser (``invsr-train diffusion``), checked against PyTorch.

The sampling loop is not in the graph: the app runs it in numpy around ONNX Runtime (``plugins/diffusion``), so
the number of steps, the seed and the noise scale are free at run time. The ONNX file is one denoiser call:

- inputs ``x_t`` (N, 3, H, W): the current noisy image; ``lr_up`` (N, 3, H, W): the LR upsampled by the scale
  (bicubic, a = -0.75, half-pixel centres, edges repeated: OpenCV ``INTER_CUBIC``, not clipped); ``t`` (N,): the
  normalised timestep s in [0, 1] (1 = the first step, 0 = the last); H and W multiples of
  ``invsr.input_multiple`` (output pixels);
- output ``x0`` (N, 3, H, W): the predicted clean image (float32 RGB, about [0, 1]).

Metadata props: ``invsr.backend = diffusion``, ``invsr.arch = diffusion_unet``, ``invsr.scale``,
``invsr.version``, ``invsr.trained_on``, ``invsr.name``, ``invsr.input_multiple``, ``invsr.parameters``, the
schedule the model was trained with (``invsr.diffusion.kappa``, ``eta_min``, ``eta_max``, ``power``,
``sigma_data``: eta(s) = eta_min * (eta_max / eta_min) ** (s ** power)), ``invsr.diffusion.default_steps``,
``invsr.inputs`` (this description in one line), ``invsr.check`` and ``invsr.training``.

Every export is checked: ONNX Runtime's ``x0`` against PyTorch's on random inputs of an odd size (in blocks of
``input_multiple``) and two timesteps; over the tolerance nothing is written.

A prior-conditioned model (``diffusion.prior``, see :mod:`model_export.training.models.diffusion`) has its
``lr_up`` = the frozen prior's output. Its model file holds the prior's weights; the export writes the prior as its
own ONNX file next to the denoiser, ``<denoiser stem>_prior.onnx``, through invsr-export's plain (ESRGAN) path
(``lr`` -> ``sr``, the same graph export, check against PyTorch and ``invsr.*`` metadata, with ``invsr.backend =
diffusion_prior`` so that no plugin lists it as a model of its own). The denoiser's metadata names it:
``invsr.diffusion.prior`` (the file name, in the denoiser's folder) and ``invsr.diffusion.prior_sha256`` (of the
file's bytes), so the app refuses a mismatched pair; its ``invsr.bytes_per_pixel`` is the larger of the two
networks' (the app tiles both passes with one tile size). ``--install`` copies both files.

    invsr-export runs/diffusion_x4/model_diffusion_unet_x4.pt -o diffusion_x4.onnx [--install]
    python -m model_export.export_diffusion runs/diffusion_x4/model_diffusion_unet_x4.pt -o diffusion_x4.onnx --card
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch
import torch.nn as nn

from invsr_desktop.engine import model_metadata as keys


OPSET = 17
DEFAULT_TOLERANCE = 1e-4
INPUTS_DOC = ("x_t (N,3,H,W) noisy image; lr_up (N,3,H,W) LR upsampled by the scale (bicubic a=-0.75, half-pixel "
              "centres, edges repeated, not clipped); t (N,) normalised timestep s in [0,1], 1 = first step; "
              "output x0 (N,3,H,W) predicted clean image; H, W multiples of invsr.input_multiple")


PRIOR_BACKEND = "diffusion_prior"  # the prior's invsr.backend: a part of a diffusion model, no plugin's own model
PRIOR_SUFFIX = "_prior"
INPUTS_DOC_PRIOR = INPUTS_DOC.replace(
    "LR upsampled by the scale (bicubic a=-0.75, half-pixel centres, edges repeated, not clipped)",
    "the prior network's output on the LR (invsr.diffusion.prior, lr -> sr, not clipped)")


@dataclass
class PriorExport:
    """The prior's ONNX file: where, its sha256, and its check against PyTorch."""

    path: Path
    sha256: str
    max_abs: float
    check_size: tuple[int, int]
    metadata: dict[str, str]


@dataclass
class DiffusionExport:
    path: Path
    max_abs: float
    check_size: tuple[int, int]
    metadata: dict[str, str]
    prior: PriorExport | None = None


def load_diffusion(path: str | Path):
    """``(checkpoint, denoiser, schedule, config)`` from an ``invsr-train diffusion`` model file (untrusted:
    ``weights_only``). The prior, if the model has one, is :func:`load_prior`'s."""
    from model_export.checkpoints import load_untrusted, resolve
    from model_export.training.config import deep_merge
    from model_export.training.models.diffusion import DiffusionModel, Denoiser, Schedule

    obj = load_untrusted(path)
    ckpt = resolve(obj, path, arch="diffusion_unet")
    cfg = obj.get("config") or {}
    o = deep_merge(DiffusionModel.config_defaults["diffusion"], cfg.get("diffusion") or {})
    schedule = Schedule.from_config(o)
    net = ckpt.build()
    cfg = deep_merge(cfg, {"diffusion": o})
    return ckpt, Denoiser(net, schedule).eval(), schedule, cfg


def load_prior(path: str | Path):
    """``(prior checkpoint, prior network)`` stored in a diffusion model file, or ``(None, None)`` for a model
    without one. The weights come from the copy in the model file (see
    :class:`~model_export.training.models.diffusion.Prior`), resolved and built by the checkpoint loader that
    ``invsr-export`` uses for any RRDBNet file."""
    from model_export.checkpoints import CheckpointError, load_untrusted, resolve
    from model_export.training.models.diffusion import PRIOR_ARCHS

    obj = load_untrusted(path)
    record = obj.get("prior")
    if record is None:
        return None, None
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: its 'prior' entry is not a model record")
    ckpt = resolve(record, Path(path), scale=int(resolve(obj, path, arch="diffusion_unet").scale))
    if ckpt.arch not in PRIOR_ARCHS:
        raise CheckpointError(f"{path}: its prior is a {ckpt.arch} network, not an lr -> sr one "
                              f"({', '.join(PRIOR_ARCHS)})")
    file = record.get("file") or {}
    ckpt.sha256 = str(file.get("sha256", ""))
    ckpt.trained_on = str(file.get("trained_on") or ckpt.trained_on)
    ckpt.source = f"{file.get('source') or 'prior'}, as stored in {Path(path).name}"
    ckpt.suggested_name = str((record.get("config") or {}).get("name") or "prior")
    return ckpt, ckpt.build()


def prior_path(denoiser_path: str | Path) -> Path:
    """Where the prior of the denoiser file ``denoiser_path`` is written: ``<stem>_prior.onnx`` next to it."""
    p = Path(denoiser_path)
    return p.with_name(f"{p.stem}{PRIOR_SUFFIX}.onnx")


def export_prior(ckpt, net: nn.Module, out: str | Path, denoiser_name: str, check_size: tuple[int, int],
                 tolerance: float = DEFAULT_TOLERANCE, opset: int = OPSET, seed: int = 0) -> tuple[bytes, PriorExport]:
    """The prior as a checked ``lr -> sr`` ONNX model (``bytes`` to write at ``out``), through invsr-export's plain
    path: :func:`~model_export.onnx_core.torch_to_onnx`, the check of ONNX Runtime against PyTorch on a random input
    of an odd size (:func:`~model_export.onnx_core.compare`), its :func:`~model_export.onnx_core.metadata`. Raises
    RuntimeError over ``tolerance`` (nothing is written: the caller writes the bytes)."""
    from model_export.onnx_core import (
        check_input_size,
        compare,
        finish_model,
        ort_session,
        random_input,
        run_ort,
        serialize,
        torch_to_onnx,
    )
    from model_export.onnx_core import metadata as plain_metadata

    net = net.eval().float().cpu()
    multiple = int(getattr(net, "input_multiple", 1))
    hw = check_input_size(check_size, multiple)
    x = random_input(hw, seed=seed)
    with torch.no_grad():
        reference = net(x).numpy()
    model = torch_to_onnx(net, random_input(check_input_size((16, 20), multiple), seed=seed + 1), opset=opset)
    got = run_ort(ort_session(serialize(model), threads=1), x.numpy())
    check = compare("prior fp32 (ONNX Runtime vs PyTorch)", x, got, reference, None, tolerance=tolerance)
    if not check.ok:
        raise RuntimeError(f"the prior's ONNX model disagrees with PyTorch: max |diff| {check.max_abs:.3e} > "
                           f"{tolerance:g} on {hw[0]}x{hw[1]}; nothing written")
    args = argparse.Namespace(name=f"prior of {denoiser_name}", trained_on="", backend=PRIOR_BACKEND)
    parameters = sum(p.numel() for p in net.parameters())
    props = plain_metadata(ckpt, args, "fp32", "torchscript", opset, multiple, parameters, [check])
    description = (f"{props['invsr.name']}: the frozen {ckpt.arch} x{ckpt.scale} whose output is the condition y0 "
                   f"(lr_up) of the diffusion denoiser next to it. Input lr, output sr: NCHW float32 RGB.")
    data = finish_model(model, props, description)
    sha = hashlib.sha256(data).hexdigest()
    return data, PriorExport(Path(out), sha, check.max_abs, hw, props)


def _export(denoiser: nn.Module, example: tuple, opset: int) -> onnx.ModelProto:
    axes = {0: "batch", 2: "height", 3: "width"}
    dyn = {"x_t": axes, "lr_up": axes, "t": {0: "batch"}, "x0": axes}
    names = (["x_t", "lr_up", "t"], ["x0"])
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(denoiser, example, buf, input_names=names[0], output_names=names[1],
                              dynamic_axes=dyn, opset_version=opset, dynamo=False, do_constant_folding=True)
            return onnx.load_from_string(buf.getvalue())
        except Exception:  # noqa: BLE001 - a torch without the TorchScript exporter: use torch.export
            from torch.export import Dim

            m = int(denoiser.input_multiple)
            h, w = m * Dim("height_blocks"), m * Dim("width_blocks")
            shapes = ({2: h, 3: w}, {2: h, 3: w}, None)
            program = torch.onnx.export(denoiser, example, None, input_names=names[0], output_names=names[1],
                                        dynamic_shapes=shapes, opset_version=max(opset, 18), dynamo=True,
                                        external_data=False, verbose=False)
            return program.model_proto


def bytes_per_pixel(options: dict[str, Any], scale: int) -> int:
    """Memory per *input* (LR) pixel of one denoiser call: float32 activations at the U-Net's first level (a few
    maps of ``base`` channels per LR pixel when ``unshuffle == scale``), the I/O at the output size, x2 for ONNX
    Runtime's arena. The plugin adds the sampler's measured numpy arrays (``plugins.diffusion.run_bytes_per_pixel``).
    diffusion_x4 gets 5376: a conservative figure (a CPU run peaked at about 2000 bytes of RSS per LR pixel, the
    sampler's arrays included: ``python -m model_export.commands.bench_diffusion --config diffusion_x4 --memory``)."""
    base = int(options.get("base", 48))
    mults = list(options.get("mults", (1, 2, 2)))
    u = int(options.get("unshuffle", 4))
    per_unshuffled = 6 * u * u + 4 * base * mults[0] + 2 * base * max(mults)
    per_lr_pixel = per_unshuffled * (scale / u) ** 2 + 4 * 3 * scale * scale
    return int(2 * 4 * per_lr_pixel)


def export_denoiser(denoiser: nn.Module, out: str | Path, props: dict[str, str], check_size: tuple[int, int] = (37, 29),
                    tolerance: float = DEFAULT_TOLERANCE, opset: int = OPSET, seed: int = 0) -> DiffusionExport:
    """Export and check ``denoiser`` (a :class:`~model_export.training.models.diffusion.Denoiser`); writes ``out``
    with ``props`` plus the check only when ONNX Runtime agrees with PyTorch within ``tolerance``.

    ``check_size`` is rounded up to the input multiple with an odd number of blocks per side."""
    import onnxruntime as ort

    from model_export.onnx_core import atomic_write, check_input_size, serialize, strip_debug_info

    denoiser = denoiser.eval().float().cpu()
    m = int(denoiser.input_multiple)
    g = torch.Generator().manual_seed(seed)
    ex = check_input_size((2 * m, 3 * m), m)
    example = (torch.rand(1, 3, *ex, generator=g), torch.rand(1, 3, *ex, generator=g), torch.tensor([0.5]))
    model = _export(denoiser, example, opset)
    strip_debug_info(model.graph)
    hw = check_input_size(check_size, m)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    max_abs = 0.0
    for s in (1.0, 0.3, 0.0):
        lr_up = torch.rand(2, 3, *hw, generator=g)
        x_t = lr_up + 2.0 * torch.randn(2, 3, *hw, generator=g) * math.sqrt(max(s, 0.01))
        t = torch.tensor([s, s * 0.5], dtype=torch.float32)
        with torch.no_grad():
            ref = denoiser(x_t, lr_up, t).numpy()
        (got,) = session.run(["x0"], {"x_t": x_t.numpy(), "lr_up": lr_up.numpy(), "t": t.numpy()})
        if got.shape != ref.shape or not np.all(np.isfinite(got)):
            raise RuntimeError(f"ONNX Runtime output {got.shape} differs from PyTorch's {ref.shape} or is not finite")
        max_abs = max(max_abs, float(np.max(np.abs(got - ref))))
    if max_abs > tolerance:
        raise RuntimeError(f"ONNX Runtime disagrees with PyTorch: max |diff| {max_abs:.3e} > {tolerance:g} on "
                           f"{hw[0]}x{hw[1]}; nothing written")
    props = {**props, keys.CHECK: json.dumps([{"what": "x0 (ONNX Runtime vs PyTorch), t in {1, 0.3, 0}",
                                                  "input": [2, 3, *hw], "max_abs_diff": max_abs}])}
    onnx.helper.set_model_props(model, props)
    model.producer_name = "invsr-export"
    model.doc_string = f"{props.get('invsr.name', 'diffusion')}: diffusion SR denoiser. {INPUTS_DOC}."
    onnx.checker.check_model(model)
    out = Path(out)
    atomic_write(serialize(model), out)
    return DiffusionExport(out, max_abs, hw, props)


def prior_metadata(prior: PriorExport, prior_options: dict[str, Any], denoiser_bpp: int) -> dict[str, str]:
    """The denoiser's props that pair it with its prior: the file name, its sha256, the inputs' description, and
    the memory per LR pixel of the larger of the two networks (the app tiles both passes with one tile size)."""
    from model_export.onnx_core import estimate_bytes_per_pixel

    prior_bpp = estimate_bytes_per_pixel(prior.metadata[keys.ARCH], prior_options) or 0
    return {
        keys.DIFFUSION_PRIOR: prior.path.name,
        keys.DIFFUSION_PRIOR_SHA256: prior.sha256,
        keys.INPUTS: INPUTS_DOC_PRIOR,
        keys.BYTES_PER_PIXEL: str(max(denoiser_bpp, prior_bpp)),
    }


def metadata(ckpt, denoiser, schedule, cfg: dict, name: str, trained_on: str, parameters: int) -> dict[str, str]:
    from invsr_desktop import __version__

    o = cfg.get("diffusion", {})
    props = {
        keys.BACKEND: "diffusion",
        keys.ARCH: "diffusion_unet",
        keys.ARCH_OPTIONS: json.dumps(ckpt.options, sort_keys=True),
        keys.SCALE: str(ckpt.scale),
        keys.VERSION: __version__,
        keys.TRAINED_ON: trained_on,
        keys.NAME: name,
        keys.PRECISION: "fp32",
        keys.INPUT_MULTIPLE: str(int(denoiser.input_multiple)),
        keys.PARAMETERS: str(parameters),
        keys.SOURCE: ckpt.source,
        keys.INPUTS: INPUTS_DOC,
        keys.DIFFUSION_DEFAULT_STEPS: str(int(o.get("default_steps", 4))),
        keys.BYTES_PER_PIXEL: str(bytes_per_pixel(ckpt.options, ckpt.scale)),
        keys.EXPORTER: f"export_diffusion, torch {torch.__version__}, opset {OPSET}",
        **schedule.metadata(),
    }
    if ckpt.training:
        props[keys.TRAINING] = json.dumps(ckpt.training, sort_keys=True)
    return props


def _degradation(cfg: dict) -> str:
    name = cfg.get("data", {}).get("degradation", "bicubic")
    if name == "bicubic":
        return "MATLAB bicubic"
    fraction = float(cfg.get("diffusion", {}).get("bicubic_fraction", 0.0))
    return f"{name}, with {fraction:.0%} of the samples MATLAB bicubic instead"


def model_card(result: DiffusionExport, cfg: dict) -> str:
    """A Markdown model card for the exported file (evaluation figures to be added from ``invsr-eval``)."""
    p = result.metadata
    training = json.loads(p.get(keys.TRAINING, "{}"))
    o = cfg.get("diffusion", {})
    wall = training.get("wall_time_s")
    lines = [
        f"# {p['invsr.name']}",
        "",
        f"Few-step residual-shifting diffusion (ResShift-style) x{p['invsr.scale']}, pixel space, "
        f"run by the `diffusion` backend (sampling loop in numpy around ONNX Runtime).",
        "",
        f"- Architecture: `diffusion_unet` {p['invsr.arch_options']}, {int(p['invsr.parameters']):,} parameters",
        f"- Schedule: kappa {o.get('kappa')}, eta(s) = {o.get('eta_min')} * ({o.get('eta_max')} / {o.get('eta_min')})"
        f" ** (s ** {o.get('power')}), sigma_data {o.get('sigma_data')}; trained on continuous s in [0, 1], so "
        f"any number of steps works; default {p['invsr.diffusion.default_steps']} steps (4 to 15 recommended)",
        f"- Training data: {p['invsr.trained_on']}; LR: {_degradation(cfg)}",
        f"- Iterations: {training.get('step', 'unknown')}; wall time: "
        f"{'%.1f h' % (wall / 3600) if isinstance(wall, (int, float)) else 'unknown'} (CPU)",
        f"- ONNX: inputs/outputs: {p['invsr.inputs']}",
        f"- Export check: max |ONNX Runtime - PyTorch| = {result.max_abs:.2e} on {result.check_size[0]}x"
        f"{result.check_size[1]}",
    ]
    if result.prior is not None:
        q = result.prior.metadata
        lines += [
            f"- Prior (y0 = its output on the LR; SRDiff / ResDiff style): `{result.prior.path.name}` (ships with "
            f"this file; sha256 {result.prior.sha256[:16]}...), `{q['invsr.arch']}` {q['invsr.arch_options']}, "
            f"{int(q['invsr.parameters']):,} parameters, from {q['invsr.source']}, trained on {q['invsr.trained_on']}; "
            f"export check max |diff| = {result.prior.max_abs:.2e}",
        ]
    lines += [
        "",
        "## Evaluation",
        "",
        "Set5 / Set14 x4 (Y channel, DESIGN.md protocol): run `invsr-eval` with this backend and paste the table.",
        "",
    ]
    return "\n".join(lines)


def export_checkpoint(path: str | Path, out: str | Path, name: str = "", trained_on: str = "",
                      tolerance: float = DEFAULT_TOLERANCE, check_size: tuple[int, int] = (37, 29),
                      card: bool = False) -> DiffusionExport:
    """Model file -> checked ONNX file (and ``<stem>.md`` model card with ``card``)."""
    ckpt, denoiser, schedule, cfg = load_diffusion(path)
    parameters = sum(p.numel() for p in denoiser.parameters())
    name = name or f"{ckpt.suggested_name} (diffusion x{ckpt.scale})"
    trained_on = trained_on or ckpt.trained_on
    props = metadata(ckpt, denoiser, schedule, cfg, name, trained_on, parameters)
    prior_ckpt, prior_net = load_prior(path)
    prior = prior_bytes = None
    if prior_ckpt is not None:
        prior_bytes, prior = export_prior(prior_ckpt, prior_net, prior_path(out), name, check_size, tolerance)
        props.update(prior_metadata(prior, prior_ckpt.options, int(props[keys.BYTES_PER_PIXEL])))
    result = export_denoiser(denoiser, out, props, check_size=check_size, tolerance=tolerance)
    if prior is not None:  # both checks passed: the pair is written (the denoiser first: it names the prior)
        from model_export.onnx_core import atomic_write

        atomic_write(prior_bytes, prior.path)
        result.prior = prior
    if card:
        Path(out).with_suffix(".md").write_text(model_card(result, cfg), encoding="utf-8")
    return result


def run_from_export_args(args: argparse.Namespace, size: tuple[int, int]) -> int:
    """``invsr-export`` on a diffusion model file (its fp32 path; ``--fp16`` / ``--int8`` are not supported)."""
    if args.fp16 or args.int8:
        print("invsr-export: error: --fp16 / --int8 are not supported for diffusion models yet", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        result = export_checkpoint(args.checkpoint, args.output, args.name or "", args.trained_on or "",
                                   args.tolerance, size)
    except RuntimeError as exc:
        print(f"invsr-export: error: {exc}", file=sys.stderr)
        return 1
    return _report(result, started, args.install)


def _report(result: DiffusionExport, started: float, install: bool) -> int:
    p = result.metadata
    print(f"check x0 (ONNX Runtime vs PyTorch): input 2x3x{result.check_size[0]}x{result.check_size[1]}, "
          f"max |diff| = {result.max_abs:.3e} OK")
    if result.prior is not None:
        q = result.prior
        print(f"check prior sr (ONNX Runtime vs PyTorch): input 1x3x{q.check_size[0]}x{q.check_size[1]}, "
              f"max |diff| = {q.max_abs:.3e} OK")
        print(f"wrote {q.path} ({q.path.stat().st_size / 1e6:.1f} MB, the prior: {q.metadata['invsr.arch']} "
              f"x{q.metadata['invsr.scale']}, sha256 {q.sha256[:12]})")
    print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB, backend 'diffusion', id "
          f"{result.path.stem!r}, {p['invsr.parameters']} parameters) in {time.perf_counter() - started:.1f} s")
    if install:
        from model_export.onnx_core import install as install_file

        if result.prior is not None:
            print(f"installed {install_file(result.prior.path)} (the prior)")
        dest = install_file(result.path)
        print(f"installed {dest} (the app lists it as {p['invsr.name']!r})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.export_diffusion", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model_diffusion_unet_x<s>.pt from invsr-train diffusion")
    p.add_argument("-o", "--output", type=Path, required=True, help="ONNX file; its stem is the model's id")
    p.add_argument("--name", default="", help="display name (default: config name)")
    p.add_argument("--trained-on", default="", help="what it was trained on (default: from the model file)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    p.add_argument("--card", action="store_true", help="also write the model card <output stem>.md")
    p.add_argument("--install", action="store_true", help="also copy it into the user model folder")
    args = p.parse_args(argv)
    if args.output.suffix.lower() != ".onnx":
        p.error(f"the output file must end in .onnx: {args.output}")
    torch.set_grad_enabled(False)
    from model_export.checkpoints import CheckpointError

    started = time.perf_counter()
    try:
        result = export_checkpoint(args.model, args.output, args.name, args.trained_on, args.tolerance,
                                   card=args.card)
    except (CheckpointError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return _report(result, started, args.install)


if __name__ == "__main__":
    sys.exit(main())
