"""Does the INN shrink keep a noisy photo's colour? The app's shrink and restore of each image with sensor-like noise.

A phone photo carries pixel noise of a few levels of 255; the x4 shrinks trained on clean images only turned it into
a magenta cast of the small image (irn_x4_v3: the mean of G fell by 15-19 levels at sigma 4 on Set5). For every HR
image (mod-cropped to the scale) and every ``--sigma`` (Gaussian colour noise, in levels, seeded per image):

- ``shift``: the largest per-channel difference between the mean of the app's small image (8 bit) and the mean of
  the noisy HR, in levels (a bicubic small image's is under 0.5);
- ``inn``: the round trip (the app's shrink, 8-bit small image, the app's restore at z = 0) against the noisy HR;
- ``bicubic``: MATLAB bicubic down (8 bit) and up, against the noisy HR;

PSNR-Y as eval_inn scores it. Grey images count in the PSNR columns only.

    python -m model_export.commands.inn_noise --scale 4 --model irn_x4_v3 ../shared/data/benchmarks/Set5 \\
        --sigma 0 2 4 8 [--json report.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from model_export.commands.eval_inn import _score, _through_file
from model_export.degradations.matlab_resize import imresize
from model_export.evaluate import list_images, load_hr, modcrop


def _noisy(hr: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``hr`` (float in [0, 255]) with seeded Gaussian noise per pixel and channel, rounded and clipped to 8 bit."""
    if sigma <= 0:
        return hr
    rng = np.random.default_rng(seed)
    return np.clip(np.round(hr + rng.normal(0.0, sigma, hr.shape)), 0, 255)


def _to_uint8_levels(pixels01: np.ndarray) -> np.ndarray:
    return np.clip(np.round(pixels01.astype(np.float64) * 255.0), 0, 255)


def score_image(engine, hr: np.ndarray, scale: int, model: str, sigma: float, seed: int, tmp: Path) -> dict:
    """One image at one noise level: ``shift`` (None for grey), ``inn`` and ``bicubic`` (PSNR, SSIM). The small
    image goes through a PNG file in ``tmp`` as the app writes it (its marker and all)."""
    from invsr_desktop.engine.imageio import Image
    from invsr_desktop.engine.task import Task

    noisy = _noisy(hr, sigma, seed)
    grey = noisy.ndim == 2
    pixels = (noisy / 255.0).astype(np.float32)
    pixels = pixels[..., None] if grey else pixels
    small = engine.run_image(Image(pixels), Task.shrink("inn-shrink", scale, {"model": model}))
    small = _through_file(None, tmp, "png", 100, small)
    small_levels = _to_uint8_levels(small.pixels)
    restored = engine.run_image(small, Task.restore())
    out = _to_uint8_levels(restored.pixels)
    out = out[..., 0] if grey else out
    bic_small = np.clip(np.round(imresize(noisy, 1.0 / scale)), 0, 255)
    up = np.clip(np.round(imresize(bic_small, float(scale))), 0, 255)
    shift = None
    if not grey:
        shift = float(np.abs(small_levels.mean(axis=(0, 1)) - noisy.mean(axis=(0, 1))).max())
    return {"shift": shift, "inn": _score(out, noisy, scale), "bicubic": _score(up, noisy, scale)}


def evaluate_noise(folders: Sequence[str | Path], scale: int, model: str, sigmas: Sequence[float], engine=None,
                   log=print) -> dict:  # fmt: skip
    from invsr_desktop.engine.pipeline import Engine, EngineOptions

    engine = engine or Engine(options=EngineOptions(threads=1))
    report: dict = {"scale": scale, "model": model, "sigmas": list(sigmas), "sets": []}
    for folder in folders:
        rows = []
        for i, path in enumerate(list_images(folder)):
            hr = modcrop(load_hr(path), scale)
            row = {"image": path.name}
            with tempfile.TemporaryDirectory() as tmp:
                for sigma in sigmas:
                    row[str(sigma)] = score_image(engine, hr, scale, model, float(sigma), i, Path(tmp))
            rows.append(row)
            log(f"{Path(folder).name}/{path.name}: " + ", ".join(
                f"sigma {s}: shift {_fmt(row[str(s)]['shift'])}, {row[str(s)]['inn'][0]:.2f} dB" for s in sigmas))
        report["sets"].append({"name": Path(folder).name, "images": rows, "mean": _means(rows, sigmas)})
    return report


def _fmt(shift: float | None) -> str:
    return "-" if shift is None else f"{shift:.1f}"


def _means(rows: list[dict], sigmas: Sequence[float]) -> dict:
    out = {}
    for s in sigmas:
        cells = [r[str(s)] for r in rows]
        shifts = [c["shift"] for c in cells if c["shift"] is not None]
        out[str(s)] = {
            "shift_mean": float(np.mean(shifts)) if shifts else None,
            "shift_max": float(np.max(shifts)) if shifts else None,
            "inn": float(np.mean([c["inn"][0] for c in cells])),
            "bicubic": float(np.mean([c["bicubic"][0] for c in cells])),
        }
    return out


def render_markdown(report: dict) -> str:
    lines = [f"# INN shrink of noisy photos, x{report['scale']} (model {report['model']})", "",
             "Colour shift of the small image (levels of 255, largest channel; mean / worst image) and the round "
             "trip's PSNR-Y against the noisy HR.", "",
             "| set | noise sigma | small image colour shift | INN round trip | bicubic down/up | gain |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for s in report["sets"]:
        for sigma in report["sigmas"]:
            m = s["mean"][str(sigma)]
            lines.append(f"| {s['name']} | {sigma} | {_fmt(m['shift_mean'])} / {_fmt(m['shift_max'])} | "
                         f"{m['inn']:.2f} | {m['bicubic']:.2f} | {m['inn'] - m['bicubic']:+.2f} dB |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.commands.inn_noise", description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="HR image folders (one set each)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--model", default="auto", help="INN model id (the app's --param model=)")
    p.add_argument("--sigma", type=float, nargs="+", default=[0, 2, 4, 8], help="noise std, levels of 255")
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = p.parse_args(argv)
    report = evaluate_noise(args.folders, args.scale, args.model, args.sigma)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
