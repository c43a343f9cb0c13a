"""Benchmark of the diffusion backend through the app's engine: seconds per output megapixel at 4, 8 and 15 steps,
and the seam check (the tiled result against the untiled one, and a crop sheet across a tile border).

::

    python -m model_export.commands.bench_diffusion --model diffusion_x4.onnx          # an exported model
    python -m model_export.commands.bench_diffusion --config diffusion_x4              # the config's architecture, untrained
    python -m model_export.commands.bench_diffusion --model M.onnx --tiled-check 512 --tile 128 --sheet seams.png

Speed depends on the architecture, not on the weights, so ``--config`` (a freshly built net with seeded random
weights, exported to a temporary folder) gives the figures of a model before it is trained. ``--size`` is the LR
side of the timed input (default 256: a 1024 x 1024 output at x4). ``--tiled-check N`` upscales an N x N input
(``--image``, resized; default: the bundled sample) untiled and with ``--tile`` input-pixel tiles, prints the PSNR
between them (and, for contrast, that of tiles sampled independently, the naive way), and with ``--sheet`` writes
a crop sheet across the first vertical tile border: untiled | tiled | naive tiles | |tiled - untiled| x 20.
``--memory`` measures one sampler run (``--size``, the first of ``--steps``, ``--tile`` or the automatic tile):
the peak of the numpy arrays it allocates (tracemalloc) and the peak RSS over the process's before the run (ONNX
Runtime's arena included), both in bytes per output pixel::

    python -m model_export.commands.bench_diffusion --config diffusion_x4 --size 256 --steps 4 --memory [--tile 64]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from invsr_desktop.engine import model_metadata as keys


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _model_from_config(config: str, folder: Path, seed: int) -> Path:
    """Export the config's architecture with seeded random weights (the output conv too, so it is not y0)."""
    import torch

    from model_export.export_diffusion import export_checkpoint
    from model_export.training import checkpoint as ckpt_io
    from model_export.training.config import load_config
    from model_export.training.distributed import DistInfo
    from model_export.training.models import get_model_class

    cls = get_model_class("diffusion")
    cfg = load_config(config, [], cls.config_defaults)
    torch.manual_seed(seed)
    model = cls(cfg, torch.device("cpu"), DistInfo())
    with torch.no_grad():
        for p in model.ema.module.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    exp = model.export_payload()
    pt = folder / "model.pt"
    ckpt_io.atomic_save({"format": ckpt_io.MODEL_FORMAT, "family": "diffusion", "arch": exp["arch"],
                         "arch_kwargs": exp["arch_kwargs"], "scale": cfg["scale"], "params_ema": exp["params_ema"],
                         **{k: v for k, v in exp.items() if k not in ("arch", "arch_kwargs", "params_ema")},  # prior
                         "config": cfg, "meta": {"step": 0, "data": ["untrained (benchmark)"]}}, pt)  # fmt: skip
    out = folder / "models" / f"bench_{cfg['name']}.onnx"
    export_checkpoint(pt, out)
    return out


def _rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 where it is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def sampler_memory(runner, lr: np.ndarray, tiler) -> dict[str, float]:
    """Peak memory of ``runner.run_whole(lr, tiler)`` per output pixel: ``traced`` (numpy allocations, tracemalloc:
    the sampler's own arrays, exact and independent of the machine) and ``rss`` (peak resident size over the size
    before the run, polled every 2 ms: adds ONNX Runtime's buffers; 0 without /proc)."""
    peak, stop = [0], threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            stop.wait(0.002)

    base = _rss_bytes()
    watcher = threading.Thread(target=poll, daemon=True)
    tracemalloc.start()
    watcher.start()
    try:
        out = runner.run_whole(lr, tiler)
        _, traced = tracemalloc.get_traced_memory()
    finally:
        stop.set()
        watcher.join()
        tracemalloc.stop()
    pixels = out.shape[0] * out.shape[1]
    return {"traced": traced / pixels, "rss": max(0, peak[0] - base) / pixels if base else 0.0, "pixels": pixels}


def _load_image(path: str | None, size: int) -> np.ndarray:
    import cv2

    from invsr_desktop.engine.imageio import load_image

    if path is None:
        from invsr_desktop.resources import SAMPLES

        path = str(Path(SAMPLES) / "astronaut.png")
    pixels = load_image(path).pixels[..., :3]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    h, w = pixels.shape[:2]
    side = min(h, w)
    pixels = pixels[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(pixels.astype(np.float32), (size, size), interpolation=interp).clip(0, 1)


def link_model(model: Path, folder: Path) -> Path:
    """``model`` linked into ``folder`` (a folder of its own, which the plugin scans), with the prior network its
    metadata names, if any: a prior-conditioned denoiser refuses to run without it."""
    from invsr_desktop.engine.model_files import read_metadata

    folder.mkdir(parents=True, exist_ok=True)
    (folder / model.name).symlink_to(model.resolve())
    prior = read_metadata(model).get(keys.DIFFUSION_PRIOR, "")
    if prior and (model.parent / prior).is_file():  # a missing one is the plugin's error to report
        (folder / prior).symlink_to((model.parent / prior).resolve())
    return folder / model.name


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model_export.commands.bench_diffusion", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", type=Path, help="an exported diffusion ONNX model")
    src.add_argument("--config", default="diffusion_x4", help="build the config's architecture (default diffusion_x4)")
    p.add_argument("--size", type=int, default=256, help="LR side of the timed input (default 256)")
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 15], help="step counts to time (default 4 8 15)")
    p.add_argument("--repeat", type=int, default=1, help="runs per step count (the best is reported)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (default 0: all cores)")
    p.add_argument("--image", help="input image (default: the bundled sample), centre-cropped and resized")
    p.add_argument("--tiled-check", type=int, default=0, metavar="N", help="also compare tiled / untiled on NxN")
    p.add_argument("--tile", type=int, help="tile side (input pixels) of the tiled check (default 128) and of "
                   "--memory (default: the automatic size)")
    p.add_argument("--check-steps", type=int, default=4, help="steps of the tiled check (default 4)")
    p.add_argument("--no-naive", action="store_true", help="skip the independently-sampled-tiles contrast")
    p.add_argument("--sheet", type=Path, help="write the crop sheet across a tile border (PNG)")
    p.add_argument("--memory", action="store_true", help="measure one run's peak memory per output pixel instead")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-diffusion-") as tmp:
        bench = _Bench.open(args, Path(tmp))
        print(f"diffusion benchmark: {bench.what}; x{bench.scale}; {bench.threads} ONNX Runtime thread(s); load "
              f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        lr = _load_image(args.image, args.size)
        if args.memory:
            _memory(bench.engine, bench.spec, lr, bench.scale, args, bench.model.stem)
            return 0
        bench.speed(lr)
        if args.tiled_check:
            bench.tiled_check()
    return 0


@dataclass
class _Bench:
    """One model registered with the app's engine (the diffusion plugin alone, reading a temporary models folder)."""

    args: argparse.Namespace
    model: Path
    what: str
    registry: Any
    spec: Any

    @classmethod
    def open(cls, args: argparse.Namespace, tmp: Path) -> _Bench:
        if args.model:
            model, what = link_model(args.model, tmp / "models"), str(args.model)
        else:
            model = _model_from_config(args.config, tmp, args.seed)
            what = f"config {args.config} (untrained weights: speed only)"
        os.environ["INVSR_MODELS_DIR"] = str(model.parent)
        import plugins.diffusion as dp
        from invsr_desktop.engine.registry import Registry

        registry = Registry()
        registry.register(dp, "diffusion")
        (spec,) = registry.backends()
        return cls(args, model, what, registry, spec)

    @property
    def scale(self) -> int:
        return self.spec.scales[0]

    @property
    def threads(self) -> int:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return self.args.threads or cores or 1

    def engine(self, tile: int | None = None):
        from invsr_desktop.engine.pipeline import Engine, EngineOptions

        return Engine(registry=self.registry, options=EngineOptions(tile=tile, threads=self.args.threads))

    def params(self, steps: int) -> dict[str, Any]:
        return {"steps": steps, "seed": self.args.seed, "model": self.model.stem}

    def speed(self, lr: np.ndarray) -> None:
        """Seconds per output megapixel for each of ``--steps`` (the best of ``--repeat`` runs)."""
        size, scale = self.args.size, self.scale
        e = self.engine()
        e.upscale_array(lr[:32, :32], "diffusion", scale, self.params(1))  # session warm-up
        for steps in self.args.steps:
            best = math.inf
            for _ in range(self.args.repeat):
                t0 = time.perf_counter()
                e.upscale_array(lr, "diffusion", scale, self.params(steps))
                best = min(best, time.perf_counter() - t0)
            print(f"{steps:3d} steps: {best / ((size * scale) ** 2 / 1e6):7.2f} s per output megapixel "
                  f"({size}x{size} -> {size * scale}x{size * scale} in {best:.1f} s)")

    def tiled_check(self) -> None:
        """The tiled result against the untiled one (and, for contrast, independently sampled tiles)."""
        args, scale = self.args, self.scale
        n, tile = args.tiled_check, args.tile or 128
        img, params = _load_image(args.image, n), self.params(args.check_steps)
        t0 = time.perf_counter()
        untiled = self.engine(tile=10**6).upscale_array(img, "diffusion", scale, params)
        t1 = time.perf_counter()
        tiled = self.engine(tile=tile).upscale_array(img, "diffusion", scale, params)
        t2 = time.perf_counter()
        print(f"tiled vs untiled, {n}x{n} input, {args.check_steps} steps, {tile}-px tiles: PSNR "
              f"{_psnr(tiled, untiled):.2f} dB, max |diff| {np.abs(tiled - untiled).max():.4f} "
              f"(untiled {t1 - t0:.1f} s, tiled {t2 - t1:.1f} s)")
        naive = None
        if not args.no_naive:
            from invsr_desktop.engine.tiling import upscale_tiled

            _, runner = self.engine().runner("diffusion", scale, params)
            naive = upscale_tiled(img, runner, tile=tile).clip(0, 1)
            print(f"  for contrast, tiles sampled independently (no blending between steps): PSNR "
                  f"{_psnr(naive, untiled):.2f} dB")
        if args.sheet:
            _sheet(args.sheet, untiled, tiled, naive, tile * scale, scale)
            print(f"wrote the crop sheet {args.sheet}")


def _memory(engine, spec, lr: np.ndarray, scale: int, args, model: str) -> None:
    from invsr_desktop.engine.tiling import Tiler

    _, runner = engine().runner("diffusion", scale, {"steps": args.steps[0], "seed": args.seed, "model": model})
    runner.run_whole(lr[:32, :32], Tiler())  # session and arena warm-up, outside the measurement
    tiler = Tiler(tile=args.tile, bytes_per_pixel=spec.bytes_per_pixel)
    m = sampler_memory(runner, lr, tiler)
    side = lr.shape[0] * scale
    print(f"memory, {lr.shape[0]}x{lr.shape[1]} -> {side}x{lr.shape[1] * scale}, {args.steps[0]} steps, "
          f"{tiler.calls // args.steps[0]} tile(s) per step: "
          f"peak numpy (tracemalloc) {m['traced']:.1f} bytes per output pixel, peak RSS over the start "
          f"{m['rss']:.1f} bytes per output pixel; the backend's estimate {spec.bytes_per_pixel} bytes per input "
          f"pixel = {spec.bytes_per_pixel / scale**2:.0f} per output pixel")


def _sheet(path: Path, untiled, tiled, naive, tile_out: int, scale: int) -> None:
    """Crops around the first vertical tile border (x = tile side in output pixels), side by side."""
    from PIL import Image

    h, w = untiled.shape[:2]
    c = 96
    x0 = int(min(max(0, tile_out - 8 * scale - c // 2), w - c))  # the overlap: [tile - 16 scale, tile]
    y0 = int(max(0, h // 2 - c // 2))
    crops = [untiled, tiled] + ([naive] if naive is not None else []) + [np.abs(tiled - untiled) * 20]
    row = [np.clip(a[y0 : y0 + c, x0 : x0 + c], 0, 1) for a in crops]
    gap = np.ones((c, 4, 3), np.float32)
    sheet = np.concatenate(sum(([r, gap] for r in row), [])[:-1], axis=1)
    big = np.repeat(np.repeat(sheet, 3, axis=0), 3, axis=1)
    Image.fromarray(np.round(big * 255).astype(np.uint8)).save(path)


if __name__ == "__main__":
    sys.exit(main())
