"""No colour shift: the mean of each colour channel of an upscaled image within 1 % of its input's.

The criterion of the perceptual ESRGAN model (a GAN can tint its output; L1 alone rarely does). For every image of
a folder: the input is the image mod-cropped to the scale and downscaled by it with MATLAB bicubic, rounded to
8 bit (the evaluation protocol's RGB LR; ``downscale=False`` feeds the image itself); the output is clipped to
[0, 1] and rounded to 8 bit (what the app saves). Per channel, the shift is
``(mean(output) - mean(input)) / max(mean(input), floor)``: relative to the input's mean, with a floor (default
0.05, i.e. 13 of 255 levels) so a nearly black channel is not judged on fractions of a level. The check passes
when no channel of any image shifts by more than ``tolerance`` (default 0.01).

    python -m model_export.commands.colour_check --model runs/esrgan_gan_x4/model_rrdbnet_x4.pt \\
        --images ../shared/data/benchmarks/Set5 --images ../shared/data/benchmarks/Set14
    python -m model_export.commands.colour_check --backend <backend id> --images DIR      # an app backend, via the engine

Exit status 0 when it passes, 1 when a channel shifts too much, 2 for bad arguments. ``--json FILE`` writes the
report (per image: input and output means in 8-bit levels, relative shifts) for the model card.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from invsr_desktop.engine.formats import READ_SUFFIXES

IMAGE_SUFFIXES = tuple(sorted(READ_SUFFIXES))  # what the app reads (engine.formats)
Upscaler = Callable[[np.ndarray], np.ndarray]  # float32 (h, w, 3) in [0, 1] -> float (sh, sw, 3)


def list_images(folders: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(folders, (str, Path)):
        folders = [folders]
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder not found: {folder}")
        files += sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images in {', '.join(map(str, folders))}")
    return files


def make_input(img: np.ndarray, scale: int, downscale: bool = True) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> the float32 input in [0, 1] (MATLAB-bicubic downscaled by ``scale``, 8-bit)."""
    from model_export.data.dataset import make_lr

    hr = img.astype(np.float64) / 255.0
    if not downscale:
        return hr.astype(np.float32)
    h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
    return make_lr(hr[:h, :w], scale, round_lr=True)


def channel_shift(inp: np.ndarray, out: np.ndarray, floor: float = 0.05) -> dict[str, list[float]]:
    """Channel means (8-bit levels) of input and output (output clipped and rounded to 8 bit) and the relative
    shift of each channel."""
    m_in = np.asarray(inp, dtype=np.float64).reshape(-1, 3).mean(0)
    out8 = np.round(np.clip(np.asarray(out, dtype=np.float64), 0.0, 1.0) * 255.0) / 255.0
    m_out = out8.reshape(-1, 3).mean(0)
    rel = (m_out - m_in) / np.maximum(m_in, floor)
    return {"input_mean": [round(float(v) * 255, 3) for v in m_in],
            "output_mean": [round(float(v) * 255, 3) for v in m_out],
            "shift": [float(v) for v in rel]}


def colour_check(upscale: Upscaler, folders: str | Path | Sequence[str | Path], scale: int = 4,
                 tolerance: float = 0.01, floor: float = 0.05, downscale: bool = True) -> dict[str, Any]:
    """Run ``upscale`` on every image of ``folders`` and compare channel means (see the module doc).

    Returns ``{"ok", "tolerance", "floor", "scale", "downscale", "worst": {image, channel, shift}, "images": [...]}``.
    """
    from model_export.data.images import load_image

    rows = []
    worst = {"image": None, "channel": None, "shift": 0.0}
    for path in list_images(folders):
        inp = make_input(load_image(path), scale, downscale)
        out = upscale(inp)
        row = {"image": path.name, **channel_shift(inp, out, floor)}
        row["ok"] = all(abs(s) <= tolerance for s in row["shift"])
        for channel, s in zip("RGB", row["shift"], strict=True):
            if abs(s) > abs(worst["shift"]):
                worst = {"image": path.name, "channel": channel, "shift": s}
        rows.append(row)
    return {"ok": all(r["ok"] for r in rows), "tolerance": tolerance, "floor": floor, "scale": scale,
            "downscale": downscale, "worst": worst, "images": rows}


def torch_upscaler(model_file: str | Path, threads: int = 0) -> Upscaler:
    """An upscaler running a checkpoint that ``invsr-export`` reads (our model file, BasicSR, ESRGAN) in PyTorch."""
    import torch

    from model_export.checkpoints import load_checkpoint
    from model_export.training.validation import upscale

    if threads:
        torch.set_num_threads(threads)
    ckpt = load_checkpoint(model_file)
    net = ckpt.build()
    multiple = int(getattr(net, "input_multiple", 1))

    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float()
        return upscale(net, t, ckpt.scale, multiple)[0].permute(1, 2, 0).numpy()

    return run


def engine_upscaler(backend: str, scale: int, params: dict[str, Any] | None = None) -> Upscaler:
    """An upscaler running an app backend through the engine, as the app does."""
    from invsr_desktop.engine.pipeline import Engine

    engine = Engine()
    return lambda x: engine.upscale_array(x, backend, scale, params or {})


def render(report: dict[str, Any]) -> str:
    lines = [f"{'image':24s} {'input mean R G B':>24s} {'output mean R G B':>24s} {'shift %':>22s}"]
    for r in report["images"]:
        lines.append(f"{r['image']:24s} {' '.join(f'{v:7.2f}' for v in r['input_mean']):>24s} "
                     f"{' '.join(f'{v:7.2f}' for v in r['output_mean']):>24s} "
                     f"{' '.join(f'{100 * v:+6.2f}' for v in r['shift']):>22s}{'' if r['ok'] else '  SHIFTED'}")
    w = report["worst"]
    verdict = "OK" if report["ok"] else "FAILED"
    lines.append(f"largest shift: {100 * w['shift']:+.2f} % ({w['image']}, {w['channel']}); "
                 f"limit {100 * report['tolerance']:g} %: {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.commands.colour_check", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="checkpoint / model file, run in PyTorch")
    src.add_argument("--backend", help="app backend id, run through the engine")
    p.add_argument("--images", action="append", required=True, help="image folder (repeatable)")
    p.add_argument("--scale", type=int, default=0, help="scale (default: the model file's; 4 for --backend)")
    p.add_argument("--tolerance", type=float, default=0.01, help="largest relative shift per channel (0.01 = 1 %%)")
    p.add_argument("--floor", type=float, default=0.05, help="smallest channel mean a shift is relative to")
    p.add_argument("--no-downscale", action="store_true", help="feed the images themselves, not their bicubic LR")
    p.add_argument("--threads", type=int, default=0, help="torch threads for --model (0: torch's default)")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    try:
        if args.model is not None:
            from model_export.checkpoints import CheckpointError, load_checkpoint

            try:
                scale = args.scale or load_checkpoint(args.model).scale
                run = torch_upscaler(args.model, args.threads)
            except CheckpointError as exc:
                print(f"colour_check: error: {exc}", file=sys.stderr)
                return 2
        else:
            scale = args.scale or 4
            run = engine_upscaler(args.backend, scale)
        report = colour_check(run, args.images, scale, args.tolerance, args.floor, not args.no_downscale)
    except (FileNotFoundError, KeyError) as exc:
        print(f"colour_check: error: {exc}", file=sys.stderr)
        return 2
    report["source"] = str(args.model or args.backend)
    print(render(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
