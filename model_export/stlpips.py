"""ST-LPIPS (Ghildyal & Liu, "Shift-tolerant Perceptual Similarity Metric", ECCV 2022), built here from the weights
that the ``stlpips-pytorch`` wheel ships.

Why it is built here rather than imported: the wheel's own modules import torchvision, torchsummary and IPython at
module level, and PyPI's torchvision does not import beside the CPU torch this project pins. Its weight files are
complete (backbone, blur filters, scaling layer, linear heads), so this module rebuilds the two networks with the
same module names, loads them with ``strict=True`` and reads nothing else from the package. The metric is named
**ST-LPIPS (alex, vST0.0)** (or vgg) everywhere: it is not the LPIPS of published tables.

The network (``shift_tolerant`` variant): the 11x11 first convolution at stride 1, downsampling by a 3x3 binomial
blur at stride 2 after reflection padding of 2 (BlurPool), max pools at stride 1, five feature taps, each unit-
normalised over channels; the squared difference of the two images' taps goes through a 1x1 linear head and is
averaged over space; the five averages are summed. Inputs are RGB in [0, 1] (mapped to [-1, 1], then the
scaling layer), grey images replicated to three channels.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PACKAGE = "stlpips_pytorch"
VERSION = "vST0.0"
TRUNKS = ("alex", "vgg")
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


class STLPIPSUnavailable(RuntimeError):
    """The weight files are not installed (the ``[train]`` extra brings them)."""


def label(trunk: str = "alex") -> str:
    """The metric's name in every report."""
    return f"ST-LPIPS ({trunk}, {VERSION})"


def weights_path(trunk: str) -> Path:
    """The installed weight file of ``trunk``, found through ``importlib.resources`` (importing no code of it)."""
    if trunk not in TRUNKS:
        raise ValueError(f"ST-LPIPS trunk must be one of {', '.join(TRUNKS)}, got {trunk!r}")
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError:
        raise STLPIPSUnavailable(f"the `stlpips-pytorch` package is not installed (pip install -e '.[train]')") from None
    path = Path(str(root / "weights" / VERSION / f"{trunk}_shift_tolerant.pth"))
    if not path.is_file():
        raise STLPIPSUnavailable(f"the ST-LPIPS weight file is missing: {path}")
    return path


class BlurPool(nn.Module):
    """Anti-aliased downsampling: reflection pad by 2, then a depthwise 3x3 binomial blur at stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = a[:, None] * a[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


def _relu() -> nn.Module:
    return nn.ReLU(inplace=False)  # not in place: the taps are kept while the next slice runs


def _alex_layers() -> list[nn.Module]:
    return [
        nn.Conv2d(3, 64, 11, 1, 2), BlurPool(64), _relu(),
        nn.MaxPool2d(3, 1), BlurPool(64), nn.Conv2d(64, 192, 5, padding=2), _relu(),
        nn.MaxPool2d(3, 1), BlurPool(192), nn.Conv2d(192, 384, 3, padding=1), _relu(),
        nn.Conv2d(384, 256, 3, padding=1), _relu(),
        nn.Conv2d(256, 256, 3, padding=1), _relu(),
    ]  # fmt: skip


def _vgg_layers() -> list[nn.Module]:
    layers: list[nn.Module] = []
    c = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers += [nn.MaxPool2d(2, 1), BlurPool(c)]
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), _relu()]
            c = int(v)
    return layers


# Where each of the five taps ends, as indices into the layer list (the package's slice boundaries).
_SLICES = {"alex": (0, 3, 7, 11, 13, 15), "vgg": (0, 4, 10, 18, 26, 34)}


class _Trunk(nn.Module):
    """The feature network as five ``sliceN`` sequentials whose children keep their global index (the key names)."""

    def __init__(self, trunk: str):
        super().__init__()
        layers = _alex_layers() if trunk == "alex" else _vgg_layers()
        bounds = _SLICES[trunk]
        for n in range(5):
            part = nn.Sequential()
            for i in range(bounds[n], bounds[n + 1]):
                part.add_module(str(i), layers[i])
            self.add_module(f"slice{n + 1}", part)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for n in range(5):
            x = getattr(self, f"slice{n + 1}")(x)
            taps.append(x)
        return taps


class _Scaling(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.register_buffer("scale", torch.ones(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class _Linear(nn.Module):
    """``model.1`` is the 1x1 head (index 0 was the package's dropout, a no-op in eval mode)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


class STLPIPS(nn.Module):
    """``forward(a, b) -> (B,)`` distances for RGB batches in [0, 1]; frozen, always in eval mode.

    ``layer_weights`` (five numbers, default all 1) scale the taps' terms: a loss may stress some layers.
    """

    def __init__(self, trunk: str = "alex", layer_weights: Sequence[float] | None = None):
        super().__init__()
        path = weights_path(trunk)
        self.trunk = trunk
        self.scaling_layer = _Scaling()
        self.net = _Trunk(trunk)
        for k, c in enumerate(CHANNELS[trunk]):
            self.add_module(f"lin{k}", _Linear(c))
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        weights = [1.0] * 5 if layer_weights is None else [float(w) for w in layer_weights]
        if len(weights) != 5:
            raise ValueError(f"layer_weights needs 5 values (one per tap), got {len(weights)}")
        self.layer_weights = weights
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "STLPIPS":
        """Stays in eval mode whatever a training loop asks (the metric is frozen)."""
        return super().train(False)

    def layers(self, a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
        """The five per-tap terms, each (B,), unweighted."""
        fa = self.net(self.scaling_layer(a * 2.0 - 1.0))
        fb = self.net(self.scaling_layer(b * 2.0 - 1.0))
        out = []
        for k, (x, y) in enumerate(zip(fa, fb)):
            d = (_unit(x) - _unit(y)) ** 2
            out.append(getattr(self, f"lin{k}")(d).mean(dim=(1, 2, 3)))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return sum(w * t for w, t in zip(self.layer_weights, self.layers(a, b)))


def image_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> (1, 3, H, W) float32 in [0, 1]; grey is replicated to three channels."""
    x = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))[None] / 255.0


class ImageScorer:
    """``scorer(a, b) -> float`` for two uint8 images of one size (what ``invsr-eval`` reports)."""

    def __init__(self, trunk: str = "alex"):
        self.model = STLPIPS(trunk)
        self.label = label(trunk)

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(self.model(image_tensor(a), image_tensor(b)).item())
