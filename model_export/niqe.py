"""NIQE, the "Natural Image Quality Evaluator" (no-reference), implemented from its paper.

A. Mittal, R. Soundararajan, A. C. Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE Signal
Processing Letters 20(3), 2013. Written here from the paper; no code copied. Lower is better.

1. MSCN coefficients: (I - mu) / (sigma + 1), mu and sigma the local mean and standard deviation under a 7x7
   Gaussian window (sigma 7/6), borders replicated.
2. The image is cut into P x P patches (P = 96). Per patch, 18 features: the shape and variance of a generalized
   Gaussian (GGD) fitted to the MSCN coefficients, and for each of the four neighbour orientations (horizontal,
   vertical, main and secondary diagonal) the shape, mean, left and right variances of an asymmetric GGD (AGGD)
   fitted to the products of neighbouring MSCN coefficients. The same 18 again on the image downsampled by 2
   (MATLAB bicubic), on P/2 patches: 36 features. Fits by moment matching over a shape grid 0.2:0.001:10.
3. Pristine model: patches of pristine images whose sharpness (the sum of sigma over the patch) exceeds 0.75 of
   the image's sharpest patch; their features fitted with a multivariate Gaussian (mean mu1, covariance S1).
4. A test image's patches (all of them) give mu2, S2; NIQE = sqrt((mu1 - mu2)^T ((S1 + S2) / 2)^-1 (mu1 - mu2))
   (pseudo-inverse).

The pristine model shipped with the project (``model_export/niqe_pristine.npz``) is fitted on this project's HR
training images, on the BT.601 Y channel (16-235) that the evaluation scores, so its values are NOT comparable with
NIQE values published with the authors' own pristine model.

Command line::

    python -m model_export.niqe fit --images FOLDER [--images FOLDER ...] --out FILE [--limit N]
    python -m model_export.niqe score IMAGE [IMAGE ...] [--model FILE]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import math
import sys
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from invsr_desktop.engine.formats import READ_SUFFIXES
from model_export.degradations.matlab_resize import imresize
from model_export.metrics import to_y

__all__ = [
    "DEFAULT_MODEL",
    "PATCH_SIZE",
    "SHARPNESS_THRESHOLD",
    "NiqeModel",
    "mscn",
    "patch_features",
    "fit_pristine",
    "load_model",
    "niqe",
    "main",
]

PATCH_SIZE = 96
SHARPNESS_THRESHOLD = 0.75
DEFAULT_MODEL = Path(__file__).with_name("niqe_pristine.npz")
IMAGE_SUFFIXES = tuple(sorted(READ_SUFFIXES))  # what the app reads (engine.formats)

_SHAPES = np.arange(0.2, 10.0 + 5e-4, 0.001)  # 0.2:0.001:10
_LOG_G1 = np.array([math.lgamma(1.0 / a) for a in _SHAPES])
_LOG_G2 = np.array([math.lgamma(2.0 / a) for a in _SHAPES])
_LOG_G3 = np.array([math.lgamma(3.0 / a) for a in _SHAPES])
# GGD: E[x^2] / E[|x|]^2 = G(1/a) G(3/a) / G(2/a)^2 ; AGGD: E[|x|]^2 / E[x^2] = G(2/a)^2 / (G(1/a) G(3/a))
_GGD_RATIO = np.exp(_LOG_G1 + _LOG_G3 - 2.0 * _LOG_G2)
_AGGD_RATIO = np.exp(2.0 * _LOG_G2 - _LOG_G1 - _LOG_G3)


def _gaussian_7x7() -> np.ndarray:
    x = np.arange(7, dtype=np.float64) - 3.0
    g = np.exp(-(x * x) / (2.0 * (7.0 / 6.0) ** 2))
    return g / g.sum()


def mscn(img: np.ndarray, c: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """MSCN coefficients and the local standard deviation sigma of a grey image in [0, 255]."""
    img = np.asarray(img, dtype=np.float64)
    g = _gaussian_7x7()
    mu = cv2.sepFilter2D(img, cv2.CV_64F, g, g, borderType=cv2.BORDER_REPLICATE)
    mu2 = cv2.sepFilter2D(img * img, cv2.CV_64F, g, g, borderType=cv2.BORDER_REPLICATE)
    sigma = np.sqrt(np.abs(mu2 - mu * mu))
    return (img - mu) / (sigma + c), sigma


def _closest(ratio: np.ndarray, table: np.ndarray) -> np.ndarray:
    """For each value in ``ratio`` the shape on the grid whose table value is nearest (first on ties)."""
    out = np.full(ratio.shape, np.nan)
    ok = np.isfinite(ratio)
    if ok.any():
        idx = np.argmin(np.abs(ratio[ok][:, None] - table[None, :]), axis=1)
        out[ok] = _SHAPES[idx]
    return out


def _ggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shape and variance of a zero-mean GGD per row of ``x`` (n, N)."""
    var = np.mean(x * x, axis=1)
    mean_abs = np.mean(np.abs(x), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = var / (mean_abs * mean_abs)
    return _closest(rho, _GGD_RATIO), var


def _aggd_fit(x: np.ndarray) -> np.ndarray:
    """Shape, mean, left and right variances of an AGGD per row of ``x`` (n, N): (n, 4)."""
    neg = x < 0
    pos = x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        left_var = np.sum(np.where(neg, x * x, 0.0), axis=1) / np.sum(neg, axis=1)
        right_var = np.sum(np.where(pos, x * x, 0.0), axis=1) / np.sum(pos, axis=1)
        left, right = np.sqrt(left_var), np.sqrt(right_var)
        gamma_hat = left / right
        r_hat = np.mean(np.abs(x), axis=1) ** 2 / np.mean(x * x, axis=1)
        r_norm = r_hat * (gamma_hat**3 + 1.0) * (gamma_hat + 1.0) / (gamma_hat**2 + 1.0) ** 2
    alpha = _closest(r_norm, _AGGD_RATIO)
    ok = np.isfinite(alpha)
    mean = np.full(alpha.shape, np.nan)
    a = alpha[ok]
    lg1 = np.array([math.lgamma(1.0 / v) for v in a])
    lg2 = np.array([math.lgamma(2.0 / v) for v in a])
    lg3 = np.array([math.lgamma(3.0 / v) for v in a])
    # E[x] = (beta_r - beta_l) G(2/a) / G(1/a), beta = std * sqrt(G(1/a) / G(3/a))
    mean[ok] = (right[ok] - left[ok]) * np.exp(lg2 - lg1) * np.exp(0.5 * (lg1 - lg3))
    return np.stack([alpha, mean, left_var, right_var], axis=1)


def _patches(a: np.ndarray, p: int) -> np.ndarray:
    """Non-overlapping p x p patches of an (H, W) array whose sides are multiples of p: (n, p, p), row-major."""
    h, w = a.shape
    return a.reshape(h // p, p, w // p, p).swapaxes(1, 2).reshape(-1, p, p)


def _scale_features(coeffs: np.ndarray, p: int) -> np.ndarray:
    """The 18 features of every p x p patch of an MSCN field: (n, 18)."""
    blocks = _patches(coeffs, p)
    n = blocks.shape[0]
    alpha, var = _ggd_fit(blocks.reshape(n, -1))
    pairs = (
        blocks[:, :, :-1] * blocks[:, :, 1:],  # horizontal
        blocks[:, :-1, :] * blocks[:, 1:, :],  # vertical
        blocks[:, :-1, :-1] * blocks[:, 1:, 1:],  # main diagonal
        blocks[:, :-1, 1:] * blocks[:, 1:, :-1],  # secondary diagonal
    )
    feats = [alpha[:, None], var[:, None]] + [_aggd_fit(pr.reshape(n, -1)) for pr in pairs]
    return np.concatenate(feats, axis=1)


def patch_features(img_y: np.ndarray, patch: int = PATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """36 features per ``patch`` x ``patch`` patch of a grey image in [0, 255], and each patch's sharpness.

    The image is cropped to a multiple of ``patch`` (top-left kept). Returns (n, 36) features and (n,) sharpness
    (sum of the local standard deviation over the patch at the first scale).
    """
    img = np.asarray(img_y, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"NIQE works on one channel (H, W); got shape {img.shape}")
    if patch % 2:
        raise ValueError("the patch size must be even (the second scale uses patch / 2)")
    h, w = (img.shape[0] // patch) * patch, (img.shape[1] // patch) * patch
    if h == 0 or w == 0:
        raise ValueError(f"image {img.shape} is smaller than one {patch}x{patch} NIQE patch")
    img = img[:h, :w]
    coeffs1, sigma1 = mscn(img)
    coeffs2, _ = mscn(imresize(img, output_shape=(h // 2, w // 2)))
    feats = np.concatenate([_scale_features(coeffs1, patch), _scale_features(coeffs2, patch // 2)], axis=1)
    sharpness = _patches(sigma1, patch).sum(axis=(1, 2))
    return feats, sharpness


class NiqeModel:
    """A pristine multivariate Gaussian: mean (36,), covariance (36, 36), and how it was made."""

    def __init__(self, mu: np.ndarray, cov: np.ndarray, patch: int = PATCH_SIZE, meta: dict | None = None) -> None:
        self.mu = np.asarray(mu, dtype=np.float64)
        self.cov = np.asarray(cov, dtype=np.float64)
        self.patch = int(patch)
        self.meta = dict(meta or {})

    @classmethod
    def load(cls, path: str | Path) -> "NiqeModel":
        with np.load(path, allow_pickle=False) as data:
            meta = {k: data[k].item() for k in data.files if k not in ("mu", "cov", "patch_size")}
            return cls(data["mu"], data["cov"], int(data["patch_size"]), meta)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: np.array(v) for k, v in self.meta.items()}
        with open(path, "wb") as fh:  # np.savez_compressed would append .npz to a name without it
            np.savez_compressed(fh, mu=self.mu, cov=self.cov, patch_size=np.array(self.patch), **meta)

    def score(self, img_y: np.ndarray) -> float:
        feats, _ = patch_features(img_y, self.patch)
        feats = feats[np.all(np.isfinite(feats), axis=1)]
        if feats.shape[0] == 0:
            return math.nan  # e.g. a flat image: no patch has a defined distribution
        mu2 = feats.mean(axis=0)
        cov2 = np.cov(feats, rowvar=False) if feats.shape[0] > 1 else np.zeros_like(self.cov)
        d = self.mu - mu2
        inv = np.linalg.pinv((self.cov + cov2) / 2.0)
        return float(math.sqrt(max(float(d @ inv @ d), 0.0)))


@functools.lru_cache(maxsize=4)
def _cached_model(path: str) -> NiqeModel:
    return NiqeModel.load(path)


def load_model(path: str | Path | None = None) -> NiqeModel:
    """The pristine model at ``path``, by default the one shipped with the project (cached)."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"NIQE pristine model not found: {path}; fit one with `python -m model_export.niqe fit`")
    return _cached_model(str(path.resolve()))


def niqe(img_y: np.ndarray, model: NiqeModel | str | Path | None = None) -> float:
    """NIQE of a grey / Y image in [0, 255] (at least 96 x 96) under ``model`` (the shipped pristine fit by default).

    A colour (H, W, 3) image is converted with :func:`model_export.metrics.to_y` first. Lower is better.
    """
    img = np.asarray(img_y, dtype=np.float64)
    if img.ndim == 3:
        img = to_y(img)
    if not isinstance(model, NiqeModel):
        model = load_model(model)
    return model.score(img)


def _image_files(folders: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"not a folder: {folder}")
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return files


def _load_y(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("L", "I;16", "I"):
            arr = np.asarray(im.convert("L"), dtype=np.float64)
        else:
            arr = np.asarray(im.convert("RGB"), dtype=np.float64)
    return to_y(arr)


def fit_pristine(
    folders: str | Path | Sequence[str | Path],
    out_npz: str | Path | None = None,
    limit: int | None = None,
    patch: int = PATCH_SIZE,
    threshold: float = SHARPNESS_THRESHOLD,
    progress: bool = False,
) -> NiqeModel:
    """Fit the pristine model on the images under ``folders`` (recursively, sorted), save it to ``out_npz``.

    ``limit`` takes every k-th image so that about ``limit`` images are used, spread over all sub-folders.
    Images smaller than one patch are skipped. The npz records the folders, counts, threshold and date.
    """
    if isinstance(folders, (str, Path)):
        folders = [folders]
    files = _image_files(folders)
    if not files:
        raise FileNotFoundError(f"no images under {', '.join(map(str, folders))}")
    if limit and limit < len(files):
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    selected: list[np.ndarray] = []
    used = skipped = 0
    patches_total = 0
    for i, path in enumerate(files):
        img = _load_y(path)
        if img.shape[0] < patch or img.shape[1] < patch:
            skipped += 1
            continue
        feats, sharp = patch_features(img, patch)
        keep = sharp > threshold * sharp.max()
        feats = feats[keep]
        feats = feats[np.all(np.isfinite(feats), axis=1)]
        patches_total += sharp.size
        if feats.shape[0]:
            selected.append(feats)
            used += 1
        if progress and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(files)} images", file=sys.stderr)
    if not selected:
        raise ValueError("no usable patches in the given images")
    allf = np.concatenate(selected, axis=0)
    if allf.shape[0] < 2:
        raise ValueError("need at least two sharp patches to fit a covariance")
    meta = {
        "source": "; ".join(str(Path(f)) for f in folders),
        "images_found": len(_image_files(folders)),
        "images_used": used,
        "images_skipped_too_small": skipped,
        "patches_total": patches_total,
        "patches_selected": int(allf.shape[0]),
        "sharpness_threshold": float(threshold),
        "channel": "BT.601 Y (16-235) of RGB images; grey images as they are",
        "fitted": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "note": "this project's pristine fit; not comparable with published NIQE values",
    }
    model = NiqeModel(allf.mean(axis=0), np.cov(allf, rowvar=False), patch, meta)
    if out_npz is not None:
        model.save(out_npz)
    return model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_export.niqe", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a pristine model on a folder of high-quality images")
    fit.add_argument("--images", action="append", required=True, help="folder of pristine images (recursive)")
    fit.add_argument("--out", required=True, help="the .npz file to write")
    fit.add_argument("--limit", type=int, default=None, help="use about this many images, spread over the folders")
    score = sub.add_parser("score", help="NIQE of images (lower is better)")
    score.add_argument("images", nargs="+")
    score.add_argument("--model", default=None, help="pristine model .npz (default: the shipped one)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fit":
            model = fit_pristine(args.images, args.out, limit=args.limit, progress=True)
            for key, value in model.meta.items():
                print(f"{key}: {value}")
            print(f"wrote {args.out}")
        else:
            model = load_model(args.model)
            for name in args.images:
                print(f"{name}\t{model.score(_load_y(Path(name))):.4f}")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
