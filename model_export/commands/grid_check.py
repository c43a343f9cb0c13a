"""A number for "no checkerboard or grid texture": how much a backend's output concentrates energy at the
frequencies of the scale's pixel lattice, against the HR's.

An x4 network with a pixel-shuffle upsampler that is pushed by a feature loss (LPIPS and kin) can learn a faint
pattern repeating every 4 (or 2) output pixels: features of the metric's network respond to it, eyes see a grid on
skin and sky. Such a pattern is a set of sharp peaks in the image's 2-D spectrum at multiples of 1/scale cycles
per pixel. For each image this measures the power in a 3 x 3-bin window at each of those lattice frequencies (DC
excluded) over the median power of the ring of bins around it (a peak-to-background ratio), on the Y channel
after removing each image's mean, and reports the backend's mean ratio over the HR's (``grid``: 1 = no more lattice
energy than the real photo; the pattern of a grid-making model shows as several times that).

    python -m model_export.commands.grid_check --backend esrgan-sharp-x4 --backend esrgan-faithful-x4 \\
        --image ../shared/data/benchmarks/Set5/baby.png --image ../shared/data/benchmarks/Set14/comic.png
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from model_export.commands.compare_sheet import bicubic_pair


def _y(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float64)
    if img.ndim == 2:
        return img
    return 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]


def lattice_ratio(img: np.ndarray, scale: int) -> float:
    """Mean peak-to-background power ratio at the lattice frequencies k / scale (k = 1 .. scale - 1 and the
    mixed ones) of the image's Y channel."""
    y = _y(img)
    y = y - y.mean()
    h, w = y.shape
    window = np.outer(np.hanning(h), np.hanning(w))  # no leakage from the image's borders into the peaks
    power = np.abs(np.fft.fft2(y * window)) ** 2
    ratios = []
    for ky in range(scale):
        for kx in range(scale):
            if ky == 0 and kx == 0:
                continue
            cy, cx = round(ky * h / scale), round(kx * w / scale)
            peak = _window(power, cy, cx, 1).mean()
            ring = _window(power, cy, cx, 6)
            inner = _window(power, cy, cx, 2)
            background = np.median(np.setdiff1d(ring.ravel(), inner.ravel())) if ring.size > inner.size else 1.0
            ratios.append(peak / max(background, 1e-12))
    return float(np.mean(ratios))


def _window(power: np.ndarray, cy: int, cx: int, r: int) -> np.ndarray:
    h, w = power.shape
    rows = [(cy + d) % h for d in range(-r, r + 1)]
    cols = [(cx + d) % w for d in range(-r, r + 1)]
    return power[np.ix_(rows, cols)]


def grid_score(sr: np.ndarray, hr: np.ndarray, scale: int) -> float:
    """The output's lattice ratio over the HR's: about 1 for an output without a lattice pattern."""
    return lattice_ratio(sr, scale) / lattice_ratio(hr, scale)


def main(argv: Sequence[str] | None = None) -> int:
    from invsr_desktop.engine.pipeline import Engine

    p = argparse.ArgumentParser(prog="python -m model_export.commands.grid_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", action="append", required=True, help="backend id (repeatable)")
    p.add_argument("--image", action="append", type=Path, required=True, help="HR photo (repeatable)")
    p.add_argument("--scale", type=int, default=4)
    args = p.parse_args(argv)
    engine = Engine()
    print(f"{'backend':<24}" + "".join(f"{img.stem:>12}" for img in args.image) + f"{'mean':>10}")
    for backend in args.backend:
        scores = []
        for path in args.image:
            hr, lr = bicubic_pair(path, args.scale)
            out = engine.upscale_array(lr, backend, args.scale)
            sr = np.round(np.clip(out, 0, 1) * 255.0)
            scores.append(grid_score(sr, np.round(hr * 255.0), args.scale))
        print(f"{backend:<24}" + "".join(f"{s:>12.2f}" for s in scores) + f"{np.mean(scores):>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
