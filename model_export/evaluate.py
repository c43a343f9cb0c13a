"""``invsr-eval``: score a backend on benchmark folders with the protocol of the super-resolution literature.

The backend is run through the application's own engine (``Engine.upscale_array``), exactly as the app runs it;
this module only makes the LR inputs and measures the outputs. Protocol (DESIGN.md):

- HR mod-cropped to a multiple of the scale; LR made by MATLAB-style bicubic ``imresize`` (antialiased);
- output rounded to 8 bit; PSNR and SSIM on the BT.601 Y channel (16-235) with ``scale`` pixels shaved from each
  border; SSIM with an 11x11 Gaussian window (sigma 1.5). A grey image (Set14's ``bridge``) is its own Y.

Two variants of where Y is taken:

``y`` (default): the protocol of the published bicubic table (SRCNN, VDSR, ...). Y of the HR is taken first and
    rounded to 8 bit; the LR is made from that Y in floating point (not rounded); the backend upscales it as a grey
    image; its output is rounded.
``rgb``: the RGB LR is rounded to 8 bit, as a user's photo would be, and given to the backend; the RGB output is
    rounded and Y computed afterwards (the protocol of RGB-model papers such as EDSR).

``--degrade camera`` (with ``rgb``) scores every set a second time on camera-like LRs (blur, bicubic, sensor-like
noise, JPEG q75: :mod:`model_export.degradations.camera`), so one report holds clean and camera-like figures side
by side: the photos users have, for our backends and an imported Real-ESRGAN alike.

Usage::

    invsr-eval --backend bicubic --scale 4 --images ../shared/data/benchmarks/Set5 \\
               --images ../shared/data/benchmarks/Set14 --out eval/bicubic_x4 [--param k=v] [--protocol y|rgb]
    invsr-eval --backend esrgan-photo-x4 --scale 4 --images ../shared/data/benchmarks/Set5 --protocol rgb \
               --degrade camera --out eval/photo_camera

It writes ``report.md``, ``report.json`` and, unless ``--no-sheets``, one crop sheet per image (HR | bicubic |
backend) under ``sheets/``. Python callers use :func:`evaluate`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
import platform
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from invsr_desktop.engine.errors import InvsrError
from invsr_desktop.engine.formats import READ_SUFFIXES
from model_export.degradations.camera import CAMERA, camera_lr, image_seed
from model_export.degradations.matlab_resize import imresize
from model_export.metrics import psnr, rgb_to_y, shave, ssim, to_y

__all__ = ["PROTOCOLS", "EvaluationError", "evaluate", "list_images", "load_hr", "write_report", "main"]

PROTOCOLS = {
    "y": "Y of the HR taken first and rounded to 8 bit; LR = MATLAB bicubic imresize of that Y in floating point "
    "(not rounded); the backend upscales it as a grey image; output rounded to 8 bit (the published bicubic table)",
    "rgb": "LR = MATLAB bicubic imresize of the RGB HR, rounded to 8 bit (as a user's photo); the backend upscales "
    "RGB; output rounded to 8 bit; Y computed afterwards (RGB-model papers such as EDSR)",
}
DEGRADATIONS = {"camera": CAMERA}  # --degrade: a second scoring of every set on these LRs (RGB protocol)
IMAGE_SUFFIXES = tuple(sorted(READ_SUFFIXES))  # what the app reads (engine.formats)
NIQE_LABEL = "NIQE (this project's pristine fit; not comparable with published NIQE values)"
BASELINE = "bicubic"
EXIT_OK, EXIT_USAGE, EXIT_NO_INPUT, EXIT_BACKEND = 0, 2, 3, 4


class EvaluationError(InvsrError):
    """A problem with the inputs (missing folder, no images, bad parameter) described for the user."""


# -- inputs ------------------------------------------------------------------------------------------------------
def list_images(folder: str | Path) -> list[Path]:
    """The images directly in ``folder``, sorted by name; an EvaluationError if there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EvaluationError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def load_hr(path: str | Path) -> np.ndarray:
    """An image's pixels as float64 in [0, 255]: (H, W) for a grey file, (H, W, 3) for colour (alpha dropped)."""
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(im, dtype=np.float64) / 257.0
        if im.mode in ("1", "L", "LA", "La"):
            return np.asarray(im.convert("L"), dtype=np.float64)
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale, ...]


def _quantise(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0.0, 255.0)


# -- one image -----------------------------------------------------------------------------------------------------
class _Case:
    """One HR image prepared under a protocol: the LR pixels for the engine and the Y that is scored against.

    ``camera_name`` (RGB protocol only) replaces the bicubic LR with the camera-like one seeded by that file name."""

    def __init__(self, hr: np.ndarray, scale: int, protocol: str, camera_name: str | None = None) -> None:
        self.hr = modcrop(hr, scale)
        self.grey = self.hr.ndim == 2
        self.protocol = protocol
        if protocol == "y":
            self.target = self.hr if self.grey else _quantise(rgb_to_y(self.hr))
            lr = imresize(self.target, 1.0 / scale)  # floating point, not rounded
            self.pixels = (lr / 255.0).astype(np.float32)[..., None]
            self.shown_hr = self.target
        else:
            self.target = to_y(self.hr)
            if camera_name is None:
                lr = _quantise(imresize(self.hr, 1.0 / scale))
            else:
                lr = camera_lr(self.hr, scale, np.random.default_rng(image_seed(camera_name))).astype(np.float64)
            self.pixels = (lr / 255.0).astype(np.float32)
            if self.grey:
                self.pixels = self.pixels[..., None]
            self.shown_hr = self.hr

    def output(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The engine's float output as 8-bit values (for display) and the Y that is scored."""
        expected = self.target.shape
        if out.shape[:2] != expected:
            raise RuntimeError(f"backend returned {out.shape[:2]}, expected {expected}")
        img = _quantise(np.asarray(out, dtype=np.float64) * 255.0)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        return img, (img if img.ndim == 2 else to_y(img))


# -- optional metrics ----------------------------------------------------------------------------------------------
def lpips_status() -> tuple[Callable[[np.ndarray, np.ndarray], float] | None, str]:
    """An LPIPS (AlexNet) function if the package and all its weights are on disk, else (None, the reason).

    Never downloads: torchvision's AlexNet weights must already be in the torch hub cache and lpips's linear
    layers in the package.
    """
    if importlib.util.find_spec("lpips") is None:
        return None, "the `lpips` package is not installed"
    try:
        import torch

        hub = Path(torch.hub.get_dir()) / "checkpoints"
        if not any(hub.glob("alexnet-owt-*.pth")):
            return None, f"torchvision's AlexNet weights (alexnet-owt-*.pth) are not in the torch hub cache {hub}"
        spec = importlib.util.find_spec("lpips")
        linear = Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
        if not linear.is_file():
            return None, f"lpips's linear weights are missing ({linear})"
        import lpips

        model = lpips.LPIPS(net="alex", verbose=False).eval()
    except Exception as exc:  # noqa: BLE001 - any failure means: unavailable, with the reason
        return None, f"LPIPS could not be loaded: {type(exc).__name__}: {exc}"

    def score(a: np.ndarray, b: np.ndarray) -> float:
        def tensor(x: np.ndarray):
            x = np.repeat(x[..., None], 3, axis=2) if x.ndim == 2 else x
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))[None]
            return t / 127.5 - 1.0

        with torch.no_grad():
            return float(model(tensor(a), tensor(b)).item())

    return score, "LPIPS (AlexNet, lpips v0.1)"


def stlpips_status() -> tuple[Callable[[np.ndarray, np.ndarray], float] | None, str]:
    """The ST-LPIPS (alex, vST0.0) scorer if the stlpips-pytorch wheel's weights are installed, else (None, why)."""
    try:
        from model_export import stlpips

        scorer = stlpips.ImageScorer("alex")
    except ImportError as exc:
        return None, f"torch is not installed ({exc})"
    except (RuntimeError, OSError) as exc:
        return None, str(exc)
    return scorer, scorer.label


def _niqe_or_none(img_y: np.ndarray, model: Any) -> float | None:
    from model_export.niqe import PATCH_SIZE

    if img_y.shape[0] < PATCH_SIZE or img_y.shape[1] < PATCH_SIZE:
        return None
    value = model.score(img_y)
    return None if math.isnan(value) else value


# -- the evaluation ------------------------------------------------------------------------------------------------
def _engine_provider(engine: Any) -> str:
    try:
        used = engine.sessions.providers_in_use()
    except Exception:  # noqa: BLE001 - an engine without sessions (a test double)
        used = []
    if used:
        return ", ".join(used)
    wanted = getattr(getattr(engine, "options", None), "provider", "auto")
    return f"no ONNX Runtime session opened (provider setting: {wanted})"


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def evaluate(
    backend: str,
    scale: int,
    folders: str | Path | Sequence[str | Path],
    params: dict[str, Any] | None = None,
    protocol: str = "y",
    *,
    out_dir: str | Path | None = None,
    sheets: bool = False,
    with_niqe: bool = True,
    with_lpips: bool = True,
    degrade: str | None = None,
    engine: Any = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate ``backend`` at integer ``scale`` on every image of ``folders`` (one set per folder).

    Returns the report as a dict: header (backend, params, protocol, provider, ...) and ``sets``, a list of
    ``{"name", "folder", "images": [...], "mean": {...}}`` with PSNR / SSIM of the backend and of bicubic, NIQE of
    both (``with_niqe``) and LPIPS when available. With ``out_dir`` it also writes report.md / report.json (and the
    crop sheets with ``sheets``). ``degrade="camera"`` adds, per folder, a set scored on camera-like LRs (named
    ``<folder> (camera)``, ``"degradation": "camera"``). Raises EvaluationError for bad inputs.
    """
    scale, images_by_folder = _check_request(protocol, degrade, scale, folders)
    if engine is None:
        from invsr_desktop.engine.pipeline import Engine

        engine = Engine()
    spec = engine.registry.get(backend)  # KeyError names the available backends
    try:
        resolved = spec.resolve_params(params or {})
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    metrics = _Metrics.load(with_niqe, with_lpips)
    sheet_dir = Path(out_dir) / "sheets" if (out_dir is not None and sheets) else None

    sets = []
    for name, folder, files, variant in _sets(images_by_folder, degrade):
        rows = []
        for path in files:
            case = _Case(load_hr(path), scale, protocol, path.name if variant else None)
            row, (bic_img, sr_img) = _score(engine, backend, params or {}, case, scale, path.name, metrics)
            if sheet_dir is not None:
                sheet = _write_sheet(sheet_dir, name, path.stem, case.shown_hr, bic_img, sr_img, row, backend)
                row["sheet"] = str(Path("sheets") / sheet)
            rows.append(row)
            if log:
                log(f"{name}/{path.name}: PSNR {row['psnr']:.3f} dB, SSIM {row['ssim']:.4f}")
        metric_keys = [k for k in rows[0] if k not in ("image", "size", "grey", "sheet")]
        sets.append({"name": name, "folder": str(folder), "degradation": variant or "clean", "images": rows,
                     "mean": {k: _mean([r.get(k) for r in rows]) for k in metric_keys}})  # fmt: skip

    report = _header(engine, spec, backend, scale, resolved, params, protocol, degrade, metrics)
    report["sets"] = sets
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def _check_request(protocol: str, degrade: str | None, scale: float, folders) -> tuple[int, list]:
    """The integer scale and ``[(folder, images)]``, every input checked before any work (EvaluationError)."""
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r}; use one of: {', '.join(PROTOCOLS)}")
    if degrade is not None and degrade not in DEGRADATIONS:
        raise EvaluationError(f"unknown degradation {degrade!r}; use one of: {', '.join(DEGRADATIONS)}")
    if degrade is not None and protocol != "rgb":
        raise EvaluationError("camera-like LRs are RGB photos: use --protocol rgb with --degrade")
    if int(scale) != scale or scale < 2:
        raise EvaluationError(f"the evaluation needs an integer scale >= 2, got {scale}")
    if isinstance(folders, (str, Path)):
        folders = [folders]
    if not folders:
        raise EvaluationError("no image folder given")
    return int(scale), [(Path(f), list_images(f)) for f in folders]


def _sets(images_by_folder: list, degrade: str | None):
    """``(name, folder, files, variant)`` per set: each folder clean, then degraded where asked; a folder name met
    twice gets ``-2``, a degraded set `` (camera)``."""
    names_seen: dict[str, int] = {}
    for folder, files in images_by_folder:
        base = folder.name or str(folder)
        names_seen[base] = names_seen.get(base, 0) + 1
        name = base if names_seen[base] == 1 else f"{base}-{names_seen[base]}"
        yield name, folder, files, None
        if degrade:
            yield f"{name} ({degrade})", folder, files, degrade


class _Metrics:
    """The optional metrics of a run (NIQE, LPIPS, ST-LPIPS) and the notes the report gives for each."""

    def __init__(self, niqe_model, niqe_note: str, lpips_fn, lpips_note: str, st_fn, st_note: str):
        self.niqe_model, self.niqe_note = niqe_model, niqe_note
        self.lpips_fn, self.lpips_note = lpips_fn, lpips_note
        self.st_fn, self.st_note = st_fn, st_note

    @classmethod
    def load(cls, with_niqe: bool, with_lpips: bool) -> _Metrics:
        niqe_model, niqe_note = None, "not computed"
        if with_niqe:
            from model_export.niqe import load_model

            niqe_model, niqe_note = load_model(), NIQE_LABEL
        lpips_fn, lpips_note = lpips_status() if with_lpips else (None, "not requested")
        if lpips_fn is None and with_lpips:
            lpips_note = f"LPIPS unavailable: {lpips_note}"
        st_fn, st_note = stlpips_status() if with_lpips else (None, "not requested")
        if st_fn is None and with_lpips:
            st_note = f"ST-LPIPS unavailable: {st_note}"
        return cls(niqe_model, niqe_note, lpips_fn, lpips_note, st_fn, st_note)


def _score(engine, backend: str, params: dict[str, Any], case: _Case, scale: int, image: str,
           metrics: _Metrics) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """One image's row: the backend and bicubic (the same run) against the HR, on every metric loaded; and the
    two shown images (bicubic, the backend) for the crop sheet."""
    sr_img, sr_y = case.output(engine.upscale_array(case.pixels, backend, scale, params))
    if backend == BASELINE and not params:
        bic_img, bic_y = sr_img, sr_y
    else:
        bic_img, bic_y = case.output(engine.upscale_array(case.pixels, BASELINE, scale, {}))
    row: dict[str, Any] = {
        "image": image,
        "size": [int(case.target.shape[1]), int(case.target.shape[0])],  # W x H after mod-crop
        "grey": bool(case.grey),
        "psnr": psnr(sr_y, case.target, scale),
        "ssim": ssim(sr_y, case.target, scale),
        "bicubic_psnr": psnr(bic_y, case.target, scale),
        "bicubic_ssim": ssim(bic_y, case.target, scale),
    }
    if metrics.niqe_model is not None:
        row["niqe"] = _niqe_or_none(shave(sr_y, scale), metrics.niqe_model)
        row["bicubic_niqe"] = _niqe_or_none(shave(bic_y, scale), metrics.niqe_model)
        row["hr_niqe"] = _niqe_or_none(shave(case.target, scale), metrics.niqe_model)
    hr = shave(case.shown_hr, scale)
    for key, fn in (("lpips", metrics.lpips_fn), ("stlpips", metrics.st_fn)):
        if fn is not None:
            row[key] = fn(shave(sr_img, scale), hr)
            row[f"bicubic_{key}"] = fn(shave(bic_img, scale), hr)
    return row, (bic_img, sr_img)


def _header(engine, spec, backend: str, scale: int, resolved: dict, params, protocol: str, degrade: str | None,
            metrics: _Metrics) -> dict:
    """The report's header: what ran, with which settings, where, and what each metric is."""
    from invsr_desktop import __version__

    return {
        "tool": "invsr-eval",
        "version": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "backend": backend,
        "backend_name": spec.name,
        "backend_kind": spec.kind,
        "scale": scale,
        "params": {k: v for k, v in resolved.items()},
        "params_given": dict(params or {}),
        "protocol": protocol,
        "protocol_description": PROTOCOLS[protocol],
        "degrade": degrade,
        "degrade_description": DEGRADATIONS[degrade].describe(scale) if degrade else None,
        "provider": _engine_provider(engine),
        "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "niqe": metrics.niqe_note,
        "lpips": metrics.lpips_note if metrics.lpips_fn is None else metrics.lpips_note + _scored_on(protocol),
        "lpips_available": metrics.lpips_fn is not None,
        "stlpips": metrics.st_note if metrics.st_fn is None else metrics.st_note + _scored_on(protocol),
        "stlpips_available": metrics.st_fn is not None,
    }


def _scored_on(protocol: str) -> str:
    what = "the Y channel replicated to RGB" if protocol == "y" else "RGB"
    return f" on {what} in [-1, 1], `scale` pixels shaved; lower is better"


# -- sheets ---------------------------------------------------------------------------------------------------------
def _detail_window(img: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the size x size window with the most gradient energy (a textured, telling region)."""
    y = img if img.ndim == 2 else img.mean(axis=2)
    energy = np.abs(np.diff(y, axis=0))[:, :-1] + np.abs(np.diff(y, axis=1))[:-1, :]
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = energy.shape
    best, corner = -1.0, (0, 0)
    step = max(1, size // 8)
    for top in range(0, max(1, h - size + 1), step):
        for left in range(0, max(1, w - size + 1), step):
            b, r = min(h, top + size), min(w, left + size)
            total = integral[b, r] - integral[top, r] - integral[b, left] + integral[top, left]
            if total > best:
                best, corner = total, (top, left)
    return corner


def _write_sheet(
    folder: Path, set_name: str, stem: str, hr: np.ndarray, bic: np.ndarray, sr: np.ndarray, row: dict, backend: str
) -> str:
    from PIL import ImageDraw, ImageFont

    folder.mkdir(parents=True, exist_ok=True)
    size = int(min(128, hr.shape[0], hr.shape[1]))
    top, left = _detail_window(hr, size)
    zoom = max(1, 256 // size)

    def panel(img: np.ndarray) -> Image.Image:
        crop = np.ascontiguousarray(img[top : top + size, left : left + size]).astype(np.uint8)
        pic = Image.fromarray(crop, mode="L" if crop.ndim == 2 else "RGB").convert("RGB")
        return pic.resize((size * zoom, size * zoom), Image.NEAREST)

    labels = [
        "HR (ground truth)",
        f"bicubic  {row['bicubic_psnr']:.2f} dB / {row['bicubic_ssim']:.4f}",
        f"{backend}  {row['psnr']:.2f} dB / {row['ssim']:.4f}",
    ]
    panels = [panel(hr), panel(bic), panel(sr)]
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    gap, band = 6, 40
    width = sum(p.width for p in panels) + gap * (len(panels) + 1)
    sheet = Image.new("RGB", (width, panels[0].height + band + gap), "white")
    draw = ImageDraw.Draw(sheet)
    x = gap
    for pic, label in zip(panels, labels):
        sheet.paste(pic, (x, band))
        draw.text((x, 4), label, fill="black", font=font)
        x += pic.width + gap
    draw.text((gap, 22), f"{set_name}/{stem}  crop at (x={left}, y={top}), {size}x{size} px, shown x{zoom}", fill="grey", font=font)
    safe_set = re.sub(r"[^\w.-]+", "-", set_name).strip("-")  # "Set5 (camera)" -> "Set5-camera": a plain link
    name = f"{safe_set}_{stem}.png"
    sheet.save(folder / name)
    return name


# -- report files ---------------------------------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "n/a"
    return f"{value:.{digits}f}"


def _about(report: dict) -> list[str]:
    """The report's opening list: what was run, how it was scored, on what."""
    backend = report["backend"]
    params = ", ".join(f"{k}={v!r}" for k, v in report["params"].items()) or "none"
    lines = [
        f"# invsr-eval: {backend} x{report['scale']}",
        "",
        f"- Backend: `{backend}` ({report['backend_name']}, {report['backend_kind']})",
        f"- Scale: x{report['scale']}",
        f"- Parameters: {params}",
        f"- Protocol: `{report['protocol']}`: {report['protocol_description']}",
    ]
    if report.get("degrade"):
        lines.append(f"- Sets marked ({report['degrade']}): {report['degrade_description']}")
    niqe = report["niqe"] != "not computed"
    return lines + [
        "- Scoring: PSNR / SSIM on BT.601 Y (16-235; a grey image is its own Y), "
        f"{report['scale']} pixels shaved from each border, SSIM 11x11 Gaussian window (sigma 1.5)",
        f"- Engine provider: {report['provider']}",
        f"- {report['niqe'] if niqe else 'NIQE: not computed'}" + (", on the shaved Y; lower is better" if niqe else ""),
        f"- {report['lpips']}",
        f"- {report.get('stlpips', 'ST-LPIPS: not computed')}",
        f"- Crop sheets (if written) show the scored images: "
        + ("the Y channel (grey)" if report["protocol"] == "y" else "RGB, grey for a grey image"),
        f"- invsr-desktop {report['version']}, {report['platform']}, {report['date']}",
        "",
    ]


def _columns(report: dict) -> list[tuple[str, str, int]]:
    """The score columns (header, row key, digits) the report has: the backend's, then bicubic's beside it (a
    bicubic run needs no second, identical bicubic column), NIQE of the HR, LPIPS and ST-LPIPS where computed."""
    backend = report["backend"]
    baseline = backend != BASELINE

    def pair(label: str, key: str, digits: int) -> list[tuple[str, str, int]]:
        return [(f"{label} {backend}", key, digits)] + ([(f"{label} bicubic", f"bicubic_{key}", digits)] if baseline else [])

    cols = [(f"PSNR {backend}", "psnr", 3), (f"SSIM {backend}", "ssim", 4)]
    if baseline:
        cols += [("PSNR bicubic", "bicubic_psnr", 3), ("SSIM bicubic", "bicubic_ssim", 4)]
    if report["niqe"] != "not computed":
        cols += pair("NIQE", "niqe", 3) + [("NIQE HR", "hr_niqe", 3)]
    if report["lpips_available"]:
        cols += pair("LPIPS", "lpips", 4)
    if report.get("stlpips_available", False):
        cols += pair("ST-LPIPS", "stlpips", 4)
    return cols


def render_markdown(report: dict) -> str:
    """The report as Markdown: the opening list, a summary row per set, then a table per set, image by image."""
    cols = _columns(report)
    head = ["Image", "W x H"] + [c[0] for c in cols]
    rule = "|" + "---|" * len(head)

    def cells(r: dict) -> list[str]:
        return [_fmt(r.get(key), digits) for _, key, digits in cols]

    lines = _about(report) + ["## Summary", "", "| Set | Images | " + " | ".join(head[2:]) + " |", rule]
    for s in report["sets"]:
        lines.append(f"| {s['name']} | {len(s['images'])} | " + " | ".join(cells(s["mean"])) + " |")
    for s in report["sets"]:
        lines += ["", f"## {s['name']} (`{s['folder']}`)", "", "| " + " | ".join(head) + " |", rule]
        for r in s["images"]:
            name = f"[{r['image']}]({r['sheet']})" if r.get("sheet") else r["image"]
            grey = " (grey)" if r["grey"] else ""
            lines.append(f"| {name}{grey} | {r['size'][0]}x{r['size'][1]} | " + " | ".join(cells(r)) + " |")
        lines.append("| **mean** | | " + " | ".join(f"**{c}**" for c in cells(s["mean"])) + " |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "report.md", out / "report.json"
    md.write_text(render_markdown(report), encoding="utf-8")
    js.write_text(json.dumps(_clean(report), indent=2) + "\n", encoding="utf-8")
    return md, js


# -- command line ---------------------------------------------------------------------------------------------------
def _parse_params(items: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise EvaluationError(f"--param expects NAME=VALUE, got {item!r}")
        params[key.strip()] = value.strip()
    return params


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="invsr-eval",
        description="Score a backend on benchmark folders (PSNR/SSIM on Y, NIQE, ST-LPIPS, LPIPS when available) through "
        "the app's engine, with the literature's protocol.",
    )
    p.add_argument("--backend", required=True, help="backend id (see invsr-upscale --list-backends)")
    p.add_argument("--scale", required=True, type=int, help="integer scale, e.g. 2, 3 or 4")
    p.add_argument("--images", required=True, action="append", metavar="FOLDER", help="folder of HR images (repeatable)")
    p.add_argument("--out", required=True, type=Path, help="folder for report.md, report.json and sheets/")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="backend parameter (repeatable)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                   help="y (the published tables; the default) or rgb (the default with --degrade)")
    p.add_argument("--degrade", choices=sorted(DEGRADATIONS), default=None,
                   help="also score every set on camera-like LRs (blur, noise, JPEG q75), side by side in one report")
    p.add_argument("--no-sheets", action="store_true", help="do not write the crop sheets")
    p.add_argument("--no-niqe", action="store_true", help="skip NIQE (faster)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS and ST-LPIPS")
    p.add_argument("--provider", default="auto", help="ONNX Runtime provider: auto, cpu, cuda or tensorrt")
    p.add_argument("--quiet", action="store_true", help="no per-image lines")
    return p


class _Failed(Exception):
    """What main prints as ``invsr-eval: error: ...`` and the exit code it returns."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _run(args: argparse.Namespace) -> dict:
    """The report of ``args``: checks the request, loads the engine, evaluates; a failure is a :class:`_Failed`."""
    try:
        params = _parse_params(args.param)
        for folder in args.images:
            list_images(folder)
    except EvaluationError as exc:
        raise _Failed(str(exc), EXIT_NO_INPUT if "no images" in str(exc) or "not found" in str(exc) else EXIT_USAGE)
    try:
        from invsr_desktop.engine.pipeline import Engine, EngineOptions

        engine = Engine(options=EngineOptions(provider=args.provider), on_message=lambda m: print(m, file=sys.stderr))
    except ImportError as exc:
        raise _Failed(f"the engine could not be loaded: {exc}", EXIT_BACKEND)
    try:
        return evaluate(
            args.backend, args.scale, args.images, params, args.protocol or ("rgb" if args.degrade else "y"),
            out_dir=args.out, sheets=not args.no_sheets, with_niqe=not args.no_niqe, with_lpips=not args.no_lpips,
            degrade=args.degrade, engine=engine, log=None if args.quiet else (lambda line: print(line, file=sys.stderr)),
        )  # fmt: skip
    except EvaluationError as exc:
        raise _Failed(str(exc), EXIT_USAGE)
    except KeyError as exc:  # unknown backend: the registry's message lists the available ones
        raise _Failed(str(exc.args[0]) if exc.args else str(exc), EXIT_USAGE)
    except (RuntimeError, OSError, ValueError) as exc:
        raise _Failed(str(exc), EXIT_BACKEND)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = _run(args)
    except _Failed as exc:
        print(f"invsr-eval: error: {exc}", file=sys.stderr)
        return exc.code
    for s in report["sets"]:
        m = s["mean"]
        line = f"{s['name']} x{report['scale']} {report['backend']}: PSNR {_fmt(m['psnr'], 3)} dB, SSIM {_fmt(m['ssim'], 4)}"
        if report["backend"] != BASELINE:
            line += f"  (bicubic {_fmt(m['bicubic_psnr'], 3)} / {_fmt(m['bicubic_ssim'], 4)})"
        print(line)
    print(f"report: {args.out / 'report.md'}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
