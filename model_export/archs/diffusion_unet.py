"""A small pixel-space U-Net denoiser for residual-shifting diffusion SR (ResShift-style), sized for a CPU.

``forward(x_t, cond, t) -> F``: the noisy input ``x_t`` and the condition ``cond`` (the upsampled LR), both
(N, 3, H, W) at the *output* resolution, and the timestep ``t`` (N,) (any real; the diffusion family feeds the
normalised step s in [0, 1]) give the network's raw output ``F`` (N, 3, H, W), zero for an untrained net (the last
convolution is zero-initialised). How ``x_t`` is scaled on the way in and how ``F`` becomes the clean image is the
caller's preconditioning (see :class:`model_export.training.models.diffusion.Denoiser`).

The two inputs have separate stems: ``cond`` is the same signal at every step, while ``x_t`` goes from pure noise
(``t`` = 1) to nearly the clean image (``t`` = 0), and nothing before the first timestep injection could tell the
two regimes apart in a shared first convolution. Here the ``x_t`` stem is multiplied per channel by a gate
computed from the timestep embedding, zero at the start (an open random gate lets noise in at every step, and the
gradient that would close it averages out over the noise): it opens where ``x_t`` carries signal, i.e. at low
noise. (Measured only together with the caller's preconditioning: see
:class:`model_export.training.models.diffusion.Denoiser` for what was and was not isolated.)

Layout, chosen so that one step costs about what a small LR-space SR net costs:

- ``x_t`` and ``cond`` are each pixel-unshuffled by ``unshuffle`` (4 at x4: the U-Net's first level works at the
  LR resolution, the 4x4 output block of an LR pixel in the channels), then a 3x3 conv to ``base`` each (the
  ``x_t`` one gated), summed;
- levels with ``base * mults[i]`` channels, ``blocks`` residual blocks each (conv 3x3, SiLU, + the timestep
  embedding per channel, conv 3x3; no normalisation layer: GroupNorm's statistics over the whole tile would make
  the output depend on the tile, which breaks seamless tiling), a stride-2 conv between levels, nearest x2 +
  conv on the way up with the skip concatenated;
- the timestep embedding: sinusoidal features of ``1000 t``, then a two-layer MLP.

``input_multiple`` (= ``unshuffle * 2 ** (len(mults) - 1)``) is what H and W must divide by (output pixels);
``scale`` is the SR scale the model was trained for (the caller upsamples the LR by it).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from model_export.archs import register_arch


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) -> (N, dim) sinusoidal features of ``1000 t`` (the DDPM embedding on a [0, 1] time)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (1000.0 * t.float())[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv1(x)) + self.temb(emb)[:, :, None, None]
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


@register_arch("diffusion_unet")
class DiffusionUNet(nn.Module):
    def __init__(
        self,
        scale: int = 4,
        base: int = 48,
        mults: Sequence[int] = (1, 2, 2),
        blocks: int = 1,
        unshuffle: int = 4,
        time_dim: int = 64,
    ):
        super().__init__()
        if scale < 1 or unshuffle < 1 or blocks < 1 or not mults:
            raise ValueError("scale, unshuffle and blocks must be >= 1 and mults non-empty")
        self.scale = int(scale)
        self.unshuffle = int(unshuffle)
        self.input_multiple = self.unshuffle * 2 ** (len(mults) - 1)
        self.time_dim = int(time_dim)
        tdim = 4 * self.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(self.time_dim, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        u2 = self.unshuffle**2
        chans = [base * m for m in mults]
        self.conv_in = nn.Conv2d(3 * u2, chans[0], 3, padding=1)  # the condition's stem
        self.conv_in_x = nn.Conv2d(3 * u2, chans[0], 3, padding=1)  # the noisy input's stem, gated by time
        self.gate = nn.Linear(tdim, chans[0])
        nn.init.zeros_(self.gate.weight)  # the noisy stem starts shut: see the module doc
        nn.init.zeros_(self.gate.bias)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = chans[0]
        for i, ch in enumerate(chans):
            level = nn.ModuleList()
            for _ in range(blocks):
                level.append(ResBlock(c, ch, tdim))
                c = ch
            self.down.append(level)
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = ResBlock(c, c, tdim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(chans))):
            ch = chans[i]
            level = nn.ModuleList()
            for j in range(blocks):
                level.append(ResBlock(c + (ch if j == 0 else 0), ch, tdim))
                c = ch
            self.up.append(level)
            if i > 0:
                self.upsample.append(nn.Conv2d(c, chans[i - 1], 3, padding=1))
                c = chans[i - 1]
        self.conv_out = nn.Conv2d(c, 3 * u2, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t.reshape(-1), self.time_dim))
        if self.unshuffle > 1:
            x_t, cond = F.pixel_unshuffle(x_t, self.unshuffle), F.pixel_unshuffle(cond, self.unshuffle)
        h = self.conv_in(cond) + self.gate(emb)[:, :, None, None] * self.conv_in_x(x_t)
        skips = []
        for i, level in enumerate(self.down):
            for block in level:
                h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](F.silu(h))
        h = self.mid(h, emb)
        for i, level in enumerate(self.up):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in level:
                h = block(h, emb)
            if i < len(self.upsample):
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.upsample[i](h)
        out = self.conv_out(F.silu(h))
        if self.unshuffle > 1:
            out = F.pixel_shuffle(out, self.unshuffle)
        return out
