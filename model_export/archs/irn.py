"""IRN-style invertible rescaling network (Xiao et al., "Invertible Image Rescaling", ECCV 2020), sized for a CPU.

Forward: HR (B, 3, H, W) -> (LR (B, 3, H/s, W/s), z (B, 3 s^2 - 3, H/s, W/s)); inverse: (LR, z) -> HR. The map is
a bijection by construction, so ``inverse(*forward(x)) == x`` up to float rounding, whatever the weights.

Per x2 stage: a Haar wavelet transform (fixed, exactly invertible: C channels -> 4C at half size, the first C
channels the 2x2 mean, i.e. a box-downscaled image), then ``blocks`` steps of

- an invertible 1x1 convolution (a C x C matrix, initialised to the identity so the untrained net is the Haar
  transform; its inverse is the matrix inverse, precomputed with :meth:`IRNet.freeze_inverse` for ONNX export,
  since matrix inversion does not export);
- an affine coupling (IRN's ``InvBlockExp``): the first 3 channels (the LR-to-be) ``x1`` and the rest ``x2``;
  ``y1 = x1 + F(x2)``, ``y2 = x2 * exp(s(y1)) + G(y1)`` with ``s = clamp * (2 sigmoid(H(y1)) - 1)``. ``H`` and
  ``G`` share one sub-network. The inverse undoes them in reverse order.

Scale 4 is two x2 stages on all channels (12 -> 48), as IRN does. The sub-networks are small plain conv stacks
(``hidden`` channels, ``depth`` 3x3 convs, LeakyReLU, the last conv zero-initialised so each coupling starts as
the identity); ``hidden`` / ``blocks`` / ``depth`` are per stage, so the first stage (4x the pixels of the second
at x4) can be thinner, which is what makes it affordable on a CPU.

``jpeg_prenet`` (channels; 0 = none) puts a small residual conv net on the LR ahead of the inverse: the restore of
a model whose small image is shared as JPEG (see :class:`LRRestorer`). The shrink is unchanged, so the map is no
longer a bijection once it has trained; that is the point.

Input/output NCHW float32 RGB in [0, 1]; ``forward(hr)`` needs H and W multiples of the scale
(``input_multiple``); the inverse takes any LR size. ``forward`` returns the tuple ``(lr, z)``;
``inverse(lr, z)`` or ``inverse(lr, None)`` (z = 0, the mean) returns the HR. ``upscale(lr)`` is the inverse at
z = 0 (what training validation and ``run_eval`` call).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from model_export.archs import register_arch


def haar_down(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): [LL, LH, HL, HH] blocks of C channels; LL is the 2x2 mean."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2)
    a, bb = x[:, :, :, 0, :, 0], x[:, :, :, 0, :, 1]
    cc, d = x[:, :, :, 1, :, 0], x[:, :, :, 1, :, 1]
    ll = (a + bb + cc + d) * 0.25
    lh = (a - bb + cc - d) * 0.25
    hl = (a + bb - cc - d) * 0.25
    hh = (a - bb - cc + d) * 0.25
    return torch.cat([ll, lh, hl, hh], dim=1)


def haar_up(y: torch.Tensor) -> torch.Tensor:
    """The exact inverse of :func:`haar_down`."""
    b, c4, h, w = y.shape
    c = c4 // 4
    ll, lh, hl, hh = y[:, :c], y[:, c : 2 * c], y[:, 2 * c : 3 * c], y[:, 3 * c :]
    a = ll + lh + hl + hh
    bb = ll - lh + hl - hh
    cc = ll + lh - hl - hh
    d = ll - lh - hl + hh
    top = torch.stack([a, bb], dim=-1)  # (b, c, h, w, 2)
    bottom = torch.stack([cc, d], dim=-1)
    x = torch.stack([top, bottom], dim=3)  # (b, c, h, 2, w, 2)
    return x.reshape(b, c, h * 2, w * 2)


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution (Glow), identity at initialisation."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(channels))
        self.register_buffer("weight_inv", torch.empty(0), persistent=False)  # set by freeze_inverse()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        w_inv = self.weight_inv if self.weight_inv.numel() else torch.linalg.inv(self.weight.double()).to(y.dtype)
        return F.conv2d(y, w_inv[:, :, None, None])

    @torch.no_grad()
    def freeze_inverse(self) -> None:
        """Precompute the inverse matrix (float64 inversion) for export; call again after the weights change."""
        self.weight_inv = torch.linalg.inv(self.weight.double()).to(self.weight.dtype)

    def unfreeze_inverse(self) -> None:
        self.weight_inv = torch.empty(0, device=self.weight.device)


def subnet(c_in: int, c_out: int, hidden: int, depth: int) -> nn.Sequential:
    """``depth`` 3x3 convs with LeakyReLU(0.2) between them; the last one zero-initialised."""
    layers: list[nn.Module] = []
    c = c_in
    for _ in range(depth - 1):
        conv = nn.Conv2d(c, hidden, 3, 1, 1)
        nn.init.kaiming_normal_(conv.weight, a=0.2)
        conv.weight.data.mul_(0.5)
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.LeakyReLU(0.2, inplace=True)]
        c = hidden
    last = nn.Conv2d(c, c_out, 3, 1, 1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


class AffineCoupling(nn.Module):
    """IRN's InvBlockExp: additive on the LR part, affine (bounded log-scale) on the rest."""

    def __init__(self, channels: int, split: int, hidden: int, depth: int, clamp: float):
        super().__init__()
        self.split = split
        self.rest = channels - split
        self.clamp = clamp
        self.f = subnet(self.rest, split, hidden, depth)
        self.hg = subnet(split, 2 * self.rest, hidden, depth)

    def _scale_shift(self, y1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hg(y1)
        s = self.clamp * (torch.sigmoid(h[:, : self.rest]) * 2.0 - 1.0)
        return s, h[:, self.rest :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y1 = x1 + self.f(x2)
        s, t = self._scale_shift(y1)
        y2 = x2 * torch.exp(s) + t
        return torch.cat([y1, y2], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        s, t = self._scale_shift(y1)
        x2 = (y2 - t) * torch.exp(-s)
        x1 = y1 - self.f(x2)
        return torch.cat([x1, x2], dim=1)


class Stage(nn.Module):
    """Haar x2, then ``blocks`` x (1x1 conv, coupling) on 4C channels."""

    def __init__(self, c_in: int, blocks: int, hidden: int, depth: int, clamp: float, use_1x1: bool):
        super().__init__()
        channels = 4 * c_in
        self.mix = nn.ModuleList(InvConv1x1(channels) for _ in range(blocks)) if use_1x1 else nn.ModuleList()
        self.couplings = nn.ModuleList(AffineCoupling(channels, 3, hidden, depth, clamp) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = haar_down(x)
        for i, coupling in enumerate(self.couplings):
            if len(self.mix):
                x = self.mix[i](x)
            x = coupling(x)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for i in reversed(range(len(self.couplings))):
            y = self.couplings[i].inverse(y)
            if len(self.mix):
                y = self.mix[i].inverse(y)
        return haar_up(y)


def _per_stage(value: int | Sequence[int], n: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} needs {n} value(s) (one per x2 stage), got {value}")
    return [int(v) for v in value]


# Defaults per scale (measured on the project's 2-core CPU): the x4 net's first stage is the thin one.
DEFAULT_HIDDEN: dict[int, list[int]] = {2: [32], 4: [16, 32]}
DEFAULT_BLOCKS: dict[int, list[int]] = {2: [4], 4: [3, 4]}


class LRRestorer(nn.Module):
    """``lr + f(lr)``: a small residual conv net on the small image, run before the inverse, that learns to take
    out what JPEG did to it (8x8 blocking, ringing, halved chroma).

    Why an INN needs it: its restore is the exact inverse of its shrink, so the inverse alone can only learn to
    ignore an artefact by changing what the shrink makes, and fine-tuning through a JPEG simulation that way moved
    the JPEG q75 round trip by 0.2 dB on Set5 while costing 0.7 dB of the lossless one. SAIN (AAAI 2023) adds
    non-invertible modules for the same reason. ``layers`` 3x3 convolutions (receptive field ``2 layers + 1``
    pixels, wider than a JPEG block), LeakyReLU between; the last is zero-initialised, so an untrained restorer
    is the identity and a grown model starts as the plain INN.
    """

    def __init__(self, channels: int = 32, layers: int = 6):
        super().__init__()
        if layers < 2:
            raise ValueError("jpeg_prenet_layers must be >= 2")
        convs: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1)]
        for _ in range(layers - 2):
            convs += [nn.LeakyReLU(0.2), nn.Conv2d(channels, channels, 3, padding=1)]
        convs += [nn.LeakyReLU(0.2), nn.Conv2d(channels, 3, 3, padding=1)]
        nn.init.zeros_(convs[-1].weight)
        nn.init.zeros_(convs[-1].bias)
        self.body = nn.Sequential(*convs)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return lr + self.body(lr)


@register_arch("irn")
class IRNet(nn.Module):
    """Invertible rescaling net: ``forward(hr) -> (lr, z)``, ``inverse(lr, z) -> hr`` (see the module doc).

    ``hidden``, ``blocks`` and ``depth`` are an int (every stage) or a list with one value per x2 stage
    (first stage = full-resolution side); ``hidden`` / ``blocks`` default to :data:`DEFAULT_HIDDEN` /
    :data:`DEFAULT_BLOCKS` for the scale. ``clamp`` bounds the couplings' log-scale; ``use_1x1`` switches the
    invertible 1x1 convolutions (on by default).
    """

    def __init__(
        self,
        scale: int = 4,
        hidden: int | Sequence[int] | None = None,
        blocks: int | Sequence[int] | None = None,
        depth: int | Sequence[int] = 3,
        clamp: float = 1.0,
        use_1x1: bool = True,
        jpeg_prenet: int = 0,
        jpeg_prenet_layers: int = 6,
    ):
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"IRNet supports scale 2 or 4, got {scale}")
        n = {2: 1, 4: 2}[scale]
        hidden = DEFAULT_HIDDEN[scale] if hidden is None else hidden
        blocks = DEFAULT_BLOCKS[scale] if blocks is None else blocks
        hiddens = _per_stage(hidden, n, "hidden")
        blockss = _per_stage(blocks, n, "blocks")
        depths = _per_stage(depth, n, "depth")
        if min(depths) < 1 or min(blockss) < 1:
            raise ValueError("blocks and depth must be >= 1")
        self.scale = scale
        self.input_multiple = scale
        self.z_channels = 3 * scale * scale - 3
        self.stages = nn.ModuleList(
            Stage(3 * 4**i, blockss[i], hiddens[i], depths[i], clamp, use_1x1) for i in range(n)
        )
        self.prenet = LRRestorer(jpeg_prenet, jpeg_prenet_layers) if jpeg_prenet > 0 else None

    def forward(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = hr
        for stage in self.stages:
            x = stage(x)
        return x[:, :3], x[:, 3:]

    def inverse(self, lr: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if self.prenet is not None:
            lr = self.prenet(lr)
        if z is None:
            z = lr.new_zeros(lr.shape[0], self.z_channels, lr.shape[2], lr.shape[3])
        y = torch.cat([lr, z], dim=1)
        for stage in reversed(self.stages):
            y = stage.inverse(y)
        return y

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        """The inverse at z = 0 (the mean): an SR network's ``lr -> sr``."""
        return self.inverse(lr, None)

    def freeze_inverse(self) -> None:
        """Precompute every 1x1 convolution's inverse (for ONNX export: matrix inversion does not export)."""
        for m in self.modules():
            if isinstance(m, InvConv1x1):
                m.freeze_inverse()

    def unfreeze_inverse(self) -> None:
        for m in self.modules():
            if isinstance(m, InvConv1x1):
                m.unfreeze_inverse()

    @torch.no_grad()
    def grow_from(self, small: dict[str, torch.Tensor]) -> int:
        """Load a trained smaller IRNet of the same scale into this one so that both compute the same function.

        Why: on two CPU cores a larger net trained from scratch would spend its first thousands of steps getting
        back to where the small one already is. Growing works because every part of this net that the small one
        lacks can start as the identity: a coupling block past the small net's count keeps its zero-initialised
        last convolution (the identity coupling) and identity 1x1 mixing; a wider hidden layer keeps its new
        units' fresh incoming weights (so they learn) while the old units' weights *from* the new units are zeroed
        (so the old units compute what they did). Tensors are copied into the leading corner of each of ours.
        Returns the number of tensors copied; raises ``ValueError`` where the small net does not fit inside.
        """
        ours = self.state_dict()
        for name, theirs in small.items():
            if name not in ours:
                raise ValueError(f"{name} is not in this network (the small net has more stages or blocks)")
            mine = ours[name]
            if mine.dim() != theirs.dim() or any(t > m for t, m in zip(theirs.shape, mine.shape)):
                raise ValueError(f"{name}: {tuple(theirs.shape)} does not fit in {tuple(mine.shape)}")
            corner = tuple(slice(0, n) for n in theirs.shape)
            if mine.dim() >= 2:
                mine[: theirs.shape[0], theirs.shape[1] :] = 0.0  # old units ignore the new ones
            mine[corner] = theirs.to(mine.dtype)
        self.load_state_dict(ours)
        return len(small)
