"""Whether ``--precision fast`` may stay the default: every upscaler's fast output against its fp32 output, and the
INN's round trip at both precisions, on real photos.

::

    python -m model_export.commands.precision_check IMAGES_DIR [--threads 1] [--backend ID ...] [--min-psnr 45]

For each upscaling backend (bicubic excepted: it has no weights to round), on the x4 (or the backend's scale) MATLAB
bicubic LR of every image in the folder (the evaluation protocol's LR; Set5 is what the speed issue names), the
output at ``fast`` is compared with the output at ``fp32`` (PSNR on the uint8 result, RGB): the worst image must
stay at or above ``--min-psnr`` (45 dB) for ``fast`` to be kept. For the INN, the round trip (shrink, then
restore) is scored against the original at both precisions: the INN may leave fp32 only if the two differ by under
0.05 dB (``plugins.inn.ROUND_TRIP_PRECISION`` says what it runs today).

On a CPU without native bf16, ``fast`` runs a model's int8 copy where it has one (``invsr-quantize``) and f32
otherwise; the table's paths column says which.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from invsr_desktop.engine import openvino_sessions
from invsr_desktop.engine.pipeline import Engine, EngineOptions
from invsr_desktop.engine.registry import Registry
from model_export.commands.bench import fresh_registry
from model_export.data.dataset import make_lr
from model_export.evaluate import list_images, load_hr, modcrop

ROUND_TRIP_TOLERANCE_DB = 0.05
DEFAULT_MIN_PSNR = 45.0


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two float images in [0, 1] after rounding both to 8 bit, as a user's files would be."""
    qa = np.round(np.clip(a, 0, 1) * 255).astype(np.float64)
    qb = np.round(np.clip(b, 0, 1) * 255).astype(np.float64)
    mse = float(np.mean((qa - qb) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@dataclass
class Verdict:
    backend: str
    worst_db: float
    mean_db: float
    paths: str
    ok: bool


def engines(registry: Registry, threads: int) -> tuple[Engine, Engine]:
    make = lambda precision: Engine(registry, EngineOptions(threads=threads, precision=precision))  # noqa: E731
    return make("fp32"), make("fast")


def check_upscaler(registry: Registry, backend: str, images: Sequence[np.ndarray], threads: int,
                   min_psnr: float) -> Verdict:
    """The fast output of one upscaler against its fp32 output on each image's LR."""
    exact, fast = engines(registry, threads)
    scale = registry.get(backend).scales[-1]
    scores = []
    for hr in images:
        lr = make_lr(modcrop(hr, scale), scale)
        scores.append(psnr_u8(fast.upscale_array(lr, backend, scale), exact.upscale_array(lr, backend, scale)))
    paths = f"{', '.join(exact.sessions.paths_in_use())} vs {', '.join(fast.sessions.paths_in_use())}"
    worst = min(scores)
    return Verdict(backend, worst, float(np.mean(np.minimum(scores, 200.0))), paths, worst >= min_psnr)


def round_trip_delta(registry: Registry, images: Sequence[np.ndarray], threads: int) -> tuple[float, float] | None:
    """Mean round-trip PSNR (shrink, restore, against the original) at fp32 and at fast, forcing the INN's
    sessions to the pool's precision; None when no INN with a shrink half is installed."""
    from invsr_desktop.engine.task import Task
    from invsr_desktop.engine.imageio import Image
    import plugins.inn as inn

    if "inn-shrink" not in {s.id for s in registry.backends()}:
        return None
    results = []
    saved = inn.ROUND_TRIP_PRECISION
    try:
        for precision in ("fp32", "fast"):
            inn.ROUND_TRIP_PRECISION = precision  # measure what the INN would get if it followed the pool
            engine = Engine(registry, EngineOptions(threads=threads, precision=precision))
            scores = []
            for hr in images:
                hr = modcrop(hr, 4)
                small = engine.run_image(Image(pixels=hr), Task.shrink("inn-shrink", 4))
                eight_bit = np.round(np.clip(small.pixels, 0, 1) * 255) / 255.0  # what the 8-bit PNG holds
                small = small.with_pixels(eight_bit.astype(np.float32))
                back = engine.run_image(small, Task.restore())
                scores.append(psnr_u8(back.pixels, hr))
            results.append(float(np.mean(scores)))
    finally:
        inn.ROUND_TRIP_PRECISION = saved
    return results[0], results[1]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.commands.precision_check", description=__doc__.split("\n\n")[0])
    p.add_argument("images", type=Path, help="folder of HR photos (Set5)")
    p.add_argument("--backend", action="append", default=[], help="only these upscalers (default: all but bicubic)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-psnr", type=float, default=DEFAULT_MIN_PSNR)
    args = p.parse_args(argv)
    registry = fresh_registry()
    images = [(load_hr(path) / 255.0).astype(np.float32) for path in list_images(args.images)]  # [0, 255] -> [0, 1]
    images = [np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img for img in images]
    if not images:
        print(f"no images in {args.images}", file=sys.stderr)
        return 2
    core = openvino_sessions.openvino_core()
    native = core is not None and openvino_sessions.bf16_supported(core)
    meaning = "bf16" if native else "a model's int8 copy where it has one, else f32 (no native bf16 here)"
    print(f"{len(images)} images from {args.images}; fast = {meaning}")
    ups = args.backend or [s.id for s in registry.backends() if s.direction == "up" and s.id != "bicubic"]
    print("| backend | fast vs fp32, worst image (dB) | mean (dB) | paths | keep fast |")
    print("|---|---|---|---|---|")
    failed = False
    for backend in ups:
        v = check_upscaler(registry, backend, images, args.threads, args.min_psnr)
        failed |= not v.ok
        print(f"| {v.backend} | {v.worst_db:.1f} | {v.mean_db:.1f} | {v.paths} | {'yes' if v.ok else 'NO'} |")
    trip = round_trip_delta(registry, images, args.threads)
    if trip is not None:
        exact, fast = trip
        keep = abs(exact - fast) < ROUND_TRIP_TOLERANCE_DB
        print(f"INN x4 round trip: {exact:.3f} dB at fp32, {fast:.3f} dB at fast (moves {fast - exact:+.3f} dB): "
              f"{'fast would do' if keep else 'keep fp32'} (tolerance {ROUND_TRIP_TOLERANCE_DB} dB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
