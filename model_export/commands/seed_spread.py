"""Where the diffusion backend is unsure: the spread of its output across seeds.

A diffusion model samples detail, so two seeds give two different images; where they differ is where the model
invents rather than restores. This command upscales one image through the app's engine once per seed and reports
the per-pixel standard deviation across the seeds (population standard deviation of the RGB values in [0, 1],
averaged over the three channels): its mean, median, 99th percentile and maximum, and the PSNR of each seed's output
against the mean of the seeds. It writes ``spread.json`` and ``spread.png``, a row of: the LR upscaled bicubic |
seed 0's output | the mean of the seeds | the standard deviation as a heat map (matplotlib ``magma`` on a fixed range,
``--vmax``, so pictures of different models compare)::

    python -m model_export.commands.seed_spread --model resources/models/M.onnx --out reports/spread
    python -m model_export.commands.seed_spread --config diffusion_x4 --out /tmp/spread        # untrained, random weights
    python -m model_export.commands.seed_spread --model M.onnx --image photo.png --size 128 --seeds 0 1 2 3 --steps 4 \\
        --noise 1.0 --out DIR

The input is ``--image`` (default: the bundled public-domain sample ``resources/samples/astronaut.png``),
centre-cropped to a square and resized to ``--size`` LR pixels (default 128). ``--config`` builds the config's
architecture with seeded random weights (as ``bench_diffusion --config``): the figures then say nothing about a
trained model, only that the command works. ``spread_stats(outputs)`` is what a model card calls.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEFAULT_SEEDS = (0, 1, 2, 3)
DEFAULT_VMAX = 0.1


def spread_map(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """(H, W) float64: the population standard deviation across ``outputs`` (each (H, W, C) in [0, 1]) per pixel
    and channel, averaged over the channels."""
    if len(outputs) < 2:
        raise ValueError(f"the spread needs at least two outputs, got {len(outputs)}")
    stack = np.stack([np.asarray(o, dtype=np.float64) for o in outputs])
    return stack.std(axis=0).mean(axis=2)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def spread_stats(outputs: Sequence[np.ndarray], std: np.ndarray | None = None) -> dict[str, Any]:
    """The figures of the spread of ``outputs`` (one image per seed, (H, W, C) in [0, 1]): ``mean``, ``median``,
    ``p99`` and ``max`` of :func:`spread_map` (``std`` if already computed), and ``psnr_to_mean_db``, each output
    against the mean of all (None where they are identical: infinite PSNR has no JSON spelling)."""
    std = spread_map(outputs) if std is None else std
    mean = np.mean([np.asarray(o, dtype=np.float64) for o in outputs], axis=0)
    psnrs = [_psnr(np.asarray(o, dtype=np.float64), mean) for o in outputs]
    return {
        "seeds": len(outputs),
        "mean": float(std.mean()),
        "median": float(np.median(std)),
        "p99": float(np.percentile(std, 99)),
        "max": float(std.max()),
        "psnr_to_mean_db": [None if math.isinf(p) else round(p, 3) for p in psnrs],
    }


def upscale_seeds(engine, lr: np.ndarray, scale: int, params: dict[str, Any], seeds: Sequence[int]) -> list[np.ndarray]:
    """``lr`` upscaled by the engine's diffusion backend once per seed (``params`` without the seed)."""
    return [engine.upscale_array(lr, "diffusion", scale, {**params, "seed": int(s)}) for s in seeds]


def spread_picture(path: Path, lr: np.ndarray, outputs: Sequence[np.ndarray], std: np.ndarray,
                   vmax: float = DEFAULT_VMAX) -> Path:  # fmt: skip
    """Write the row LR bicubic | seed 0 | mean of seeds | std heat map (magma, 0..vmax, with its colour bar)."""
    import cv2
    from matplotlib.figure import Figure

    h, w = std.shape
    bicubic = cv2.resize(np.asarray(lr, np.float32), (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    mean = np.mean([np.asarray(o, np.float64) for o in outputs], axis=0).clip(0, 1)
    panels = [("LR, bicubic", bicubic), ("seed 0", np.clip(outputs[0], 0, 1)), (f"mean of {len(outputs)} seeds", mean)]
    fig = Figure(figsize=(4 * 3.4, 3.9), dpi=150, layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    im = axes[3].imshow(std, cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
    axes[3].set_title(f"std across seeds (RGB mean), 0 to {vmax:g}\nmean {std.mean():.4f}, max {std.max():.4f}",
                      fontsize=9)  # fmt: skip
    fig.colorbar(im, ax=axes[3], fraction=0.046, pad=0.02)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _prepare_model(model: Path | None, config: str, tmp: Path, seed: int) -> tuple[Path, str]:
    """The model file in a folder of its own (the plugin scans folders) and a description of it."""
    from model_export.commands.bench_diffusion import _model_from_config

    if model is None:
        return _model_from_config(config, tmp, seed), f"config {config} (untrained, random weights)"
    from model_export.commands.bench_diffusion import link_model

    return link_model(model, tmp / "models"), str(model)


def _engine(model: Path, threads: int, tile: int | None):
    """The app's engine with the diffusion plugin finding ``model``'s folder (and the bundled models)."""
    os.environ["INVSR_MODELS_DIR"] = str(model.parent)
    import plugins.diffusion as dp
    from invsr_desktop.engine.pipeline import Engine, EngineOptions
    from invsr_desktop.engine.registry import Registry

    registry = Registry()
    registry.register(dp, "diffusion")
    (spec,) = registry.backends()
    return Engine(registry=registry, options=EngineOptions(tile=tile, threads=threads)), spec


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.commands.seed_spread", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="an exported diffusion ONNX model")
    src.add_argument("--config", help="build the config's architecture with random weights (e.g. diffusion_x4)")
    p.add_argument("--image", help="input image (default: the bundled sample), centre-cropped and resized")
    p.add_argument("--size", type=int, default=128, help="LR side of the input (default 128)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="seeds (default 0 1 2 3)")
    p.add_argument("--steps", type=int, default=4, help="sampling steps (default 4)")
    p.add_argument("--noise", type=float, default=1.0, help="the backend's noise scale (default 1)")
    p.add_argument("--vmax", type=float, default=DEFAULT_VMAX, help=f"top of the heat map (default {DEFAULT_VMAX})")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (default 0: all cores)")
    p.add_argument("--tile", type=int, help="tile side in input pixels (default: the engine's automatic size)")
    p.add_argument("--out", type=Path, required=True, help="folder for spread.json and spread.png")
    args = p.parse_args(argv)
    if len(args.seeds) < 2:
        p.error("give at least two seeds")

    from model_export.commands.bench_diffusion import _load_image

    with tempfile.TemporaryDirectory(prefix="seed-spread-") as tmp:
        model, what = _prepare_model(args.model, args.config, Path(tmp), 0)
        engine, spec = _engine(model, args.threads, args.tile)
        scale = spec.scales[0]
        lr = _load_image(args.image, args.size)
        params = {"steps": args.steps, "noise": args.noise, "model": model.stem}
        outputs = upscale_seeds(engine, lr, scale, params, args.seeds)
    std = spread_map(outputs)
    stats = spread_stats(outputs, std)
    picture = spread_picture(args.out / "spread.png", lr, outputs, std, args.vmax)
    report = {"model": what, "image": args.image or "resources/samples/astronaut.png (bundled sample)",
              "lr_size": args.size, "scale": scale, "steps": args.steps, "noise": args.noise,
              "seed_list": list(args.seeds), **stats, "heat_map_range": [0.0, args.vmax],
              "definition": "per-pixel population standard deviation across seeds of RGB in [0, 1], averaged over "
                            "the channels; PSNR of each seed's output against the mean of the seeds"}  # fmt: skip
    (args.out / "spread.json").write_text(json.dumps(report, indent=2) + "\n")
    psnrs = ", ".join("inf" if v is None else f"{v:.2f}" for v in stats["psnr_to_mean_db"])
    print(f"seed spread of {what}: {args.size}x{args.size} -> x{scale}, {args.steps} steps, noise {args.noise}, "
          f"seeds {' '.join(map(str, args.seeds))}")
    print(f"  std per pixel: mean {stats['mean']:.5f}, median {stats['median']:.5f}, 99th percentile "
          f"{stats['p99']:.5f}, max {stats['max']:.5f}")
    print(f"  PSNR of each seed against the mean of the seeds (dB): {psnrs}")
    print(f"wrote {args.out / 'spread.json'} and {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
