"""What the invertible design buys: shrink-and-restore round trips through the app's own engine, against bicubic.

For every HR image (mod-cropped to the scale) of each folder:

- ``inn``: the app's shrink (INN forward, tiles and all) -> the small image written by the app's ``save_image`` as
  PNG (8 bit) or as JPEG at each ``--jpeg`` quality -> loaded back -> the app's restore (inverse, z = 0);
- ``bicubic``: MATLAB bicubic down, the same 8-bit PNG / JPEG step, MATLAB bicubic up (the published bicubic
  table's pipeline when the LR is a PNG: Set5 x4 28.42 dB);

scored as the evaluation protocol does (DESIGN.md): PSNR and SSIM on the BT.601 Y channel, ``scale`` pixels
shaved; grey images on their own values. Writes ``report.json``, ``report.md`` and ``jpeg_curve.png`` (PSNR
against JPEG quality, both methods, one line per set).

    python -m model_export.commands.eval_inn --scale 4 --model irn_x4 ../shared/data/benchmarks/Set5 \\
        ../shared/data/benchmarks/Set14 --jpeg 50 70 80 90 95 --out reports/inn_x4_roundtrip

The upscale of an ordinary (bicubic) LR is ``invsr-eval inn 4 ...`` like every other backend.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from model_export.degradations.matlab_resize import imresize
from model_export.evaluate import list_images, load_hr, modcrop
from model_export.metrics import psnr, ssim, to_y


def _score(out: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    """PSNR / SSIM (Y, shaved) of an 8-bit-valued output against the 8-bit HR ((H, W) grey or (H, W, 3))."""
    if hr.ndim == 2:
        a, b = out, hr
    else:
        a, b = to_y(out), to_y(hr)
    return psnr(a, b, scale), ssim(a, b, scale)


def _through_file(pixels01: np.ndarray, folder: Path, fmt: str, quality: int, image=None) -> np.ndarray:
    """Write with the app's save_image (PNG or JPEG at ``quality``) and load back with its load_image."""
    from invsr_desktop.engine.imageio import Image, load_image, save_image

    img = image if image is not None else Image(pixels01)
    path = folder / f"lr_{fmt}_{quality}_{np.random.default_rng().integers(1 << 30)}.{fmt}"
    save_image(img, path, quality=quality)
    loaded = load_image(path)
    path.unlink()
    return loaded


def evaluate_round_trip(
    folders: Sequence[str | Path],
    scale: int,
    model: str = "auto",
    jpeg: Sequence[int] = (),
    engine=None,
    log=print,
) -> dict:
    from invsr_desktop.engine.imageio import Image
    from invsr_desktop.engine.pipeline import Engine, EngineOptions
    from invsr_desktop.engine.task import Task

    engine = engine or Engine(options=EngineOptions(threads=1))
    settings = [("png", 100)] + [("jpg", int(q)) for q in jpeg]
    report: dict = {"scale": scale, "model": model, "settings": [f"{f}{'' if f == 'png' else q}" for f, q in settings],
                    "sets": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        for folder in folders:
            rows = []
            for path in list_images(folder):
                hr = modcrop(load_hr(path), scale)  # float64 in [0, 255]
                grey = hr.ndim == 2
                pixels = (hr / 255.0).astype(np.float32)
                pixels = pixels[..., None] if grey else pixels
                small = engine.run_image(Image(pixels), Task.shrink("inn-shrink", scale, {"model": model}))
                bic_lr = np.clip(imresize(hr, 1.0 / scale), 0, 255) / 255.0
                bic_lr = (bic_lr[..., None] if grey else bic_lr).astype(np.float32)
                row = {"image": path.name}
                for fmt, q in settings:
                    key = fmt if fmt == "png" else f"jpeg{q}"
                    restored = engine.run_image(_through_file(None, tmp_dir, fmt, q, small), Task.restore())
                    out = np.clip(np.round(restored.pixels.astype(np.float64) * 255.0), 0, 255)
                    out = out[..., 0] if grey else out
                    lr_b = _through_file(bic_lr, tmp_dir, fmt, q).pixels.astype(np.float64) * 255.0
                    lr_b = lr_b[..., 0] if grey else lr_b
                    up = np.clip(np.round(imresize(lr_b, float(scale))), 0, 255)
                    row[f"inn_{key}"] = _score(out, hr, scale)
                    row[f"bicubic_{key}"] = _score(up, hr, scale)
                rows.append(row)
                log(f"{Path(folder).name}/{path.name}: round trip {row['inn_png'][0]:.2f} dB "
                    f"(bicubic {row['bicubic_png'][0]:.2f})")  # fmt: skip
            keys = [k for k in rows[0] if k != "image"]
            mean = {k: [float(np.mean([r[k][i] for r in rows])) for i in (0, 1)] for k in keys}
            report["sets"].append({"name": Path(folder).name, "images": rows, "mean": mean})
    return report


def render_markdown(report: dict) -> str:
    lines = [f"# INN shrink-and-restore round trip, x{report['scale']} (model {report['model']})", "",
             "PSNR (dB) / SSIM on Y, the small image stored as 8-bit PNG or JPEG at the given quality.", "",
             "| set | LR stored as | INN round trip | bicubic down/up | gain |", "|---|---|---|---|---|"]  # fmt: skip
    for s in report["sets"]:
        for setting in report["settings"]:
            key = "png" if setting == "png" else f"jpeg{setting[3:]}"
            inn, bic = s["mean"][f"inn_{key}"], s["mean"][f"bicubic_{key}"]
            label = "PNG" if key == "png" else f"JPEG q{setting[3:]}"
            lines.append(f"| {s['name']} | {label} | {inn[0]:.2f} / {inn[1]:.4f} | {bic[0]:.2f} / {bic[1]:.4f} | "
                         f"{inn[0] - bic[0]:+.2f} dB |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_jpeg_curve(report: dict, path: Path) -> Path | None:
    qualities = [int(s[3:]) for s in report["settings"] if s != "png"]
    if not qualities:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for s in report["sets"]:
        for method, style in (("inn", "-o"), ("bicubic", "--s")):
            ys = [s["mean"][f"{method}_jpeg{q}"][0] for q in qualities]
            ax.plot(qualities, ys, style, label=f"{s['name']} {method}")
            ax.axhline(s["mean"][f"{method}_png"][0], color=ax.lines[-1].get_color(), lw=0.6, ls=":")
    ax.set_xlabel("JPEG quality of the small image")
    ax.set_ylabel("PSNR-Y (dB)")
    ax.set_title(f"x{report['scale']} round trip (dotted: small image as PNG)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.commands.eval_inn", description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="HR image folders (one set each)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--model", default="auto", help="INN model id (the app's --param model=)")
    p.add_argument("--jpeg", type=int, nargs="*", default=[50, 70, 75, 80, 90, 95], help="JPEG qualities to test")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    args = p.parse_args(argv)
    report = evaluate_round_trip(args.folders, args.scale, args.model, args.jpeg)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    (args.out / "report.md").write_text(render_markdown(report))
    plot_jpeg_curve(report, args.out / "jpeg_curve.png")
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
