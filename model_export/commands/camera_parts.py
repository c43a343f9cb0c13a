"""Which step of the camera-like LR costs a backend most: each step of ``invsr-eval --degrade camera`` alone.

The camera protocol (:mod:`model_export.degradations.camera`) stacks a lens blur, sensor noise and a JPEG on the
bicubic LR. A backend's ST-LPIPS on it says how far it is from the target, not why; this scores the same images
with each step switched on alone (the others off, the noise's per-file seed unchanged), beside the clean LR and
the whole protocol, so a training recipe can aim at the step that hurts most (issue 23):

    python -m model_export.commands.camera_parts --backend esrgan-camera-x4 --backend esrgan-photo-x4 \\
        --images ../shared/data/benchmarks/Set5 [--scale 4] [--json parts.json]

Prints one line per backend and folder: ST-LPIPS (alex; lower is better) and PSNR-Y (``scale`` pixels shaved) of
the output against the HR, per LR. Colour images only (the protocol is for photos); grey ones are skipped.
Needs torch and the stlpips-pytorch wheel's weights (the ``[train]`` extra), as ``invsr-eval``'s ST-LPIPS does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from model_export.degradations.camera import CAMERA, PARTS, CameraProtocol, camera_lr, image_seed
from model_export.evaluate import list_images, load_hr, modcrop, stlpips_status
from model_export.metrics import psnr, shave, to_y

VARIANTS: dict[str, CameraProtocol] = {
    "clean": CAMERA.keeping(),
    **{part: CAMERA.keeping(part) for part in PARTS},
    "all": CAMERA,
}


def score_parts(engine: Any, backend: str, folder: str | Path, scale: int, scorer: Any) -> dict[str, dict[str, float]]:
    """Mean ST-LPIPS and PSNR-Y of ``backend`` over the colour images of ``folder``, per LR variant."""
    sums: dict[str, dict[str, list[float]]] = {v: {"stlpips": [], "psnr": []} for v in VARIANTS}
    for path in list_images(folder):
        hr = modcrop(load_hr(path), scale)
        if hr.ndim == 2:
            continue
        target = shave(hr, scale)
        for name, protocol in VARIANTS.items():
            lr = camera_lr(hr, scale, np.random.default_rng(image_seed(path.name)), protocol)
            out = engine.upscale_array((lr / 255.0).astype(np.float32), backend, scale, {})
            sr = np.clip(np.round(np.asarray(out, dtype=np.float64) * 255.0), 0.0, 255.0)
            sums[name]["stlpips"].append(scorer(shave(sr, scale), target))
            sums[name]["psnr"].append(psnr(to_y(sr), to_y(hr), scale))
    if not sums["clean"]["psnr"]:
        raise ValueError(f"no colour images in {folder}")
    return {v: {k: float(np.mean(vals)) for k, vals in m.items()} for v, m in sums.items()}


def format_line(folder: str | Path, backend: str, result: dict[str, dict[str, float]]) -> str:
    cells = "  ".join(f"{v} {m['stlpips']:.4f} / {m['psnr']:.2f}" for v, m in result.items())
    return f"{Path(folder).name:8s} {backend:22s} {cells}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="camera_parts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", required=True, help="an app backend id (repeatable)")
    parser.add_argument("--images", action="append", required=True, help="a folder of HR images (repeatable)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    scorer, why = stlpips_status()
    if scorer is None:
        print(f"camera_parts: ST-LPIPS is unavailable: {why}", file=sys.stderr)
        return 2
    from invsr_desktop.engine.pipeline import Engine

    engine = Engine()
    print(f"ST-LPIPS / PSNR-Y per LR; 'all' is {CAMERA.describe(args.scale)}")
    report: dict[str, dict[str, Any]] = {}
    for folder in args.images:
        for backend in args.backend:
            try:
                result = score_parts(engine, backend, folder, args.scale, scorer)
            except (KeyError, ValueError, FileNotFoundError) as exc:
                message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # KeyError's str quotes it
                print(f"camera_parts: {message}", file=sys.stderr)
                return 2
            report.setdefault(str(folder), {})[backend] = result
            print(format_line(folder, backend, result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
