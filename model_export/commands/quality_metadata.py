"""Write a model's measured quality (an ``invsr-eval`` report) and speed into its ONNX metadata.

    python -m model_export.commands.quality_metadata resources/models/esrgan-sharp-x4.onnx --report R/report.json \\
        --summary "Sharper detail for clean photos" --backend esrgan-sharp-x4

The app's backend picker reads ``invsr.quality`` / ``invsr.summary`` (see :mod:`invsr_desktop.engine.quality`).
Only the metadata changes; the graph and weights are written back as they were (the file is replaced atomically).
``--backend`` times the backend through the app's engine on a 256 x 256 input at the report's scale (the best of
three runs after a warm-up; ``--param`` for its parameters) and records seconds per output megapixel on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from invsr_desktop.cli import parse_params
from invsr_desktop.engine.quality import QUALITY_KEY, SUMMARY_KEY, Quality

FIGURES = ("psnr", "ssim", "stlpips", "niqe", "bicubic_psnr", "bicubic_ssim", "bicubic_stlpips", "bicubic_niqe")


def quality_from_report(report: dict, seconds_per_mp: float | None = None) -> Quality:
    """The benchmark means of an ``invsr-eval`` report (each set's mean of the figures it has)."""
    sets = {}
    for s in report["sets"]:
        sets[s["name"]] = {k: round(float(v), 4) for k, v in s["mean"].items() if k in FIGURES and v is not None}
    return Quality(report["protocol"], int(report["scale"]), sets,
                   None if seconds_per_mp is None else round(seconds_per_mp, 3))  # fmt: skip


def seconds_per_megapixel(backend: str, size: int = 256, repeats: int = 3, params: dict | None = None,
                          scale: int | None = None) -> float:
    """Seconds per output megapixel of ``backend`` (with ``params``, e.g. the INN's ``model``) at ``scale`` (default
    its first) through the app's engine (best of ``repeats`` after a warm-up), on this machine.

    The scale matters: the INN backend offers x2 and x4, and timing it at its first scale timed the x2 model for
    the x4 models' metadata (irn_x4_v3 and v4 recorded 0.34 and 0.45 s per megapixel; at x4 it is several times that)."""
    from invsr_desktop.engine.pipeline import Engine

    engine = Engine()
    spec = engine.registry.get(backend)
    scale = scale or (spec.scales[0] if spec.scales else 2)
    pixels = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
    engine.upscale_array(pixels, backend, scale, params)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        engine.upscale_array(pixels, backend, scale, params)
        best = min(best, time.perf_counter() - t)
    return best / ((size * scale) ** 2 / 1e6)


def write_metadata(path: Path, values: dict[str, str]) -> None:
    """Set (or replace) metadata props of the ONNX file at ``path``; everything else is kept."""
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    onnx.save(model, str(temporary))
    os.replace(temporary, path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.commands.quality_metadata", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="ONNX file(s) of one backend (e.g. a diffusion model and its prior)")
    p.add_argument("--report", type=Path, help="report.json of invsr-eval for this backend")
    p.add_argument("--summary", help="one sentence: what the model is for")
    p.add_argument("--backend", help="time this backend id through the engine (seconds per output megapixel)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter of --backend for the timing (repeatable), e.g. model=irn_x4_jpeg")
    args = p.parse_args(argv)
    try:
        params = parse_params(args.param)  # invsr-upscale's own NAME=VALUE parsing
    except ValueError as exc:
        p.error(str(exc))
    values: dict[str, str] = {}
    if args.summary:
        values[SUMMARY_KEY] = args.summary.strip()
    if args.report:
        report = json.loads(args.report.read_text())
        speed = seconds_per_megapixel(args.backend, params=params, scale=int(report["scale"])) if args.backend else None
        quality = quality_from_report(report, speed)
        values[QUALITY_KEY] = quality.to_json()
        print(quality.line())
    if not values:
        p.error("nothing to write: give --report and/or --summary")
    for model in args.models:
        write_metadata(model, values)
        print(f"wrote {', '.join(values)} into {model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
