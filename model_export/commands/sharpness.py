"""How sharp each backend's upscale is, in three numbers, so that "sharper than" needs no squinting at crop sheets.

    python -m model_export.commands.sharpness --backend esrgan-faithful-x4 --backend diffusion \\
        --image ../shared/data/benchmarks/Set14/zebra.png --image ../shared/data/benchmarks/Set14/baboon.png

For each HR image the LR is its MATLAB bicubic downscale (rounded to 8 bit); each backend upscales it, and on the
grey (channel mean) output and HR, with ``L`` the Laplacian:

- ``energy``: RMS of ``L(output)`` over RMS of ``L(HR)``. 1 is the HR's amount of fine detail; a blurred output is
  below it. Grain counts too, which is why the second number exists.
- ``matched``: the correlation of ``L(output)`` with ``L(HR)``. Detail in the right place raises it; grain and
  invented texture that does not line up with the HR do not.
- ``edge``: how steep the output is across the HR's strongest edges (the 5 % of pixels with the largest Sobel
  gradient): the output's gradient projected on the HR's gradient direction, over the HR's gradient magnitude. 1 is
  the HR's steepness; a blurred edge is below it, an over-sharpened one above. The projection makes grain average
  out, and only edges count, so texture added to flat areas does not raise it: this is the number for "crisper
  edges", which ``energy`` cannot tell from texture.

Why not a published sharpness metric: NIQE (in ``invsr-eval``) judges naturalness, not whether the detail is the
image's; the numbers here separate detail from grain and edges from texture, the questions the diffusion model raised.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np


def _grey(img: np.ndarray) -> np.ndarray:
    """An image's channel mean (float32)."""
    grey = np.asarray(img, dtype=np.float32)
    return grey.mean(axis=2) if grey.ndim == 3 else grey


def laplacian(img: np.ndarray) -> np.ndarray:
    """The Laplacian of an image's channel mean (float32)."""
    return cv2.Laplacian(_grey(img), cv2.CV_32F)


def sobel(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The x and y Sobel gradients of an image's channel mean (float32)."""
    grey = _grey(img)
    return cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)


def sharpness(out: np.ndarray, hr: np.ndarray) -> tuple[float, float]:
    """``(energy, matched)`` of an upscale against its HR (see the module doc)."""
    lo, lh = laplacian(out).ravel().astype(np.float64), laplacian(hr).ravel().astype(np.float64)
    energy = float(np.sqrt(np.mean(lo**2)) / max(np.sqrt(np.mean(lh**2)), 1e-12))
    matched = float(np.corrcoef(lo, lh)[0, 1]) if lo.std() > 0 and lh.std() > 0 else 0.0
    return energy, matched


def edge_contrast(out: np.ndarray, hr: np.ndarray, top: float = 0.05) -> float:
    """``edge`` of an upscale against its HR (see the module doc)."""
    (ox, oy), (hx, hy) = sobel(out), sobel(hr)
    magnitude = np.hypot(hx, hy)
    mask = magnitude >= max(float(np.quantile(magnitude, 1.0 - top)), 1e-6)
    if not mask.any():
        return 0.0
    along = (ox * hx + oy * hy)[mask] / magnitude[mask]
    return float(along.astype(np.float64).mean() / magnitude[mask].astype(np.float64).mean())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.commands.sharpness", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", action="append", required=True, help="ID or ID:NAME=VALUE,... (repeatable)")
    p.add_argument("--image", action="append", type=Path, required=True, help="HR image (repeatable)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)

    from invsr_desktop.engine.pipeline import Engine, EngineOptions
    from model_export.commands.compare_sheet import bicubic_pair, parse_backend

    s = args.scale
    engine = Engine(options=EngineOptions(threads=args.threads))
    scores: dict[str, list[tuple[float, float, float]]] = {b: [] for b in args.backend}
    for path in args.image:
        hr, lr = bicubic_pair(path, s)
        for text in args.backend:
            backend, params = parse_backend(text)
            out = engine.upscale_array(lr, backend, s, params)
            scores[text].append((*sharpness(out, hr), edge_contrast(out, hr)))
    print(f"x{s}, {len(args.image)} image(s); means over the images")
    print("| backend | energy (HR = 1) | matched | edge (HR = 1) |")
    print("|---|---|---|---|")
    for text, rows in scores.items():
        energy, matched, edge = np.mean(rows, axis=0)
        print(f"| {text} | {energy:.3f} | {matched:.3f} | {edge:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
