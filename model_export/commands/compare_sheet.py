"""A crop sheet comparing backends on one photo: the HR crop, then each backend's upscale of its bicubic-downscaled
LR, side by side at 1:1 (nearest neighbour), each labelled with its PSNR (RGB, against the HR crop).

Why a separate sheet: ``invsr-eval`` writes crop sheets of the benchmark sets, whose licences do not allow
committing them; this one runs on any photo you may publish (default: the bundled public-domain sample).

    python -m model_export.commands.compare_sheet --scale 4 --backend bicubic --backend esrgan-faithful-x4 \\
        --backend inn --backend diffusion --out docs/models/compare_x4.png

``--backend ID[:NAME=VALUE,...]`` passes backend parameters, e.g. ``diffusion:noise=0``. ``--lr-noise`` and
``--lr-jpeg`` make the LR look like a phone photo (sensor noise, then JPEG), the input a "photo" model is for;
``--degrade camera`` makes it with ``invsr-eval --degrade camera``'s fixed protocol instead (blur, bicubic,
signal-dependent noise, JPEG q75; :mod:`model_export.degradations.camera`, seeded by the file name).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "resources" / "samples" / "astronaut.png"


def parse_backend(text: str) -> tuple[str, dict[str, Any]]:
    """``id`` or ``id:name=value,...`` -> (id, params); values are ints or floats where they parse as such."""
    backend, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        name, _, value = item.partition("=")
        for kind in (int, float):
            try:
                params[name] = kind(value)
                break
            except ValueError:
                continue
        else:
            params[name] = value
    return backend, params


def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two [0, 1] float images, 8-bit rounded first (what a saved file holds)."""
    a8, b8 = np.round(np.clip(a, 0, 1) * 255), np.round(np.clip(b, 0, 1) * 255)
    mse = float(np.mean((a8 - b8) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def bicubic_pair(path: Path, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hr, lr)`` of a photo as float RGB in [0, 1]: the HR cropped to a multiple of ``scale``, the LR its MATLAB
    bicubic downscale rounded to 8 bit (a saved LR image)."""
    from invsr_desktop.engine.imageio import load_image
    from model_export.degradations.matlab_resize import imresize

    hr = load_image(path).pixels[..., :3].astype(np.float64)
    hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
    lr = np.clip(np.round(imresize(hr * 255.0, 1.0 / scale)), 0, 255).astype(np.float32) / 255.0
    return hr, lr


def degrade_lr(lr: np.ndarray, noise: float = 0.0, jpeg: int = 0, seed: int = 0) -> np.ndarray:
    """The 8-bit LR (float [0, 1]) with Gaussian noise of ``noise`` grey levels, then saved as JPEG at quality
    ``jpeg`` (0: neither). Pillow's encoder is the one most photos on a desktop went through."""
    import io

    from PIL import Image

    out = lr
    if noise > 0:
        rng = np.random.default_rng(seed)
        out = np.clip(np.round(out * 255.0 + rng.normal(0.0, noise, out.shape)), 0, 255) / 255.0
    if jpeg > 0:
        buffer = io.BytesIO()
        Image.fromarray(np.round(out * 255.0).astype(np.uint8)).save(buffer, "JPEG", quality=jpeg)
        out = np.asarray(Image.open(buffer).convert("RGB"))[..., :3] / 255.0
    return out.astype(np.float32, copy=False)


def lr_description(scale: int, noise: float, jpeg: int) -> str:
    parts = [f"LR: bicubic ÷{scale}"] + [f"noise σ={noise:g}"] * (noise > 0) + [f"JPEG q{jpeg}"] * (jpeg > 0)
    return " + ".join(parts)


def render(hr: np.ndarray, results: list[tuple[str, np.ndarray]], box: tuple[int, int, int], path: Path,
           title: str = "") -> Path:
    """HR crop, then each result's crop, with titles; ``box`` = (top, left, side) in HR pixels."""
    from matplotlib.figure import Figure

    import textwrap

    top, left, side = box
    panels = [("HR", hr)] + results
    lines = textwrap.wrap(title, int(15 * 2.6 * len(panels)))  # ~15 characters of 9 pt text an inch
    fig = Figure(figsize=(2.6 * len(panels), 3.0 + 0.2 * len(lines)), dpi=150, layout="constrained")
    if lines:
        fig.suptitle("\n".join(lines), fontsize=9)
    for ax, (title, img) in zip(fig.subplots(1, len(panels)), panels):
        ax.imshow(np.clip(img[top : top + side, left : left + side], 0, 1), interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.commands.compare_sheet", description=__doc__.split("\n\n")[0])
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="HR photo (default: the bundled sample)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--backend", action="append", required=True, help="ID or ID:NAME=VALUE,... (repeatable)")
    p.add_argument("--crop", type=int, default=28, help="side of the crop in LR pixels (default 28)")
    p.add_argument("--at", type=float, nargs=2, default=(0.35, 0.5), metavar=("Y", "X"),
                   help="crop centre as fractions of the height and width (default 0.35 0.5)")
    p.add_argument("--lr-noise", type=float, default=0.0, help="Gaussian noise on the LR, in grey levels (seed 0)")
    p.add_argument("--lr-jpeg", type=int, default=0, help="save the LR as JPEG at this quality (1-95)")
    p.add_argument("--degrade", choices=["camera"], default=None,
                   help="the LR of invsr-eval --degrade camera (blur, noise, JPEG q75) instead of a bicubic one")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = p.parse_args(argv)

    from invsr_desktop.engine.pipeline import Engine, EngineOptions

    s = args.scale
    hr, lr = bicubic_pair(args.image, s)
    if args.degrade == "camera":
        from model_export.degradations.camera import CAMERA, camera_lr, image_seed

        rng = np.random.default_rng(image_seed(args.image.name))
        lr = camera_lr(np.round(hr * 255.0), s, rng).astype(np.float32) / 255.0
        title = CAMERA.describe(s)
    else:
        lr = degrade_lr(lr, args.lr_noise, args.lr_jpeg)
        title = lr_description(s, args.lr_noise, args.lr_jpeg)
    print(title)
    engine = Engine(options=EngineOptions(threads=args.threads))
    results = []
    for text in args.backend:
        backend, params = parse_backend(text)
        out = engine.upscale_array(lr, backend, s, params)
        label = backend + (" " + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")
        results.append((f"{label}\n{psnr_rgb(out, hr):.2f} dB (whole image)", out))
        print(f"{label}: PSNR {psnr_rgb(out, hr):.2f} dB (RGB, whole image)")
    side = min(args.crop * s, *hr.shape[:2])
    top = int(np.clip(args.at[0] * hr.shape[0] - side / 2, 0, hr.shape[0] - side))
    left = int(np.clip(args.at[1] * hr.shape[1] - side / 2, 0, hr.shape[1] - side))
    print(f"wrote {render(hr, results, (top, left, side), args.out, title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
