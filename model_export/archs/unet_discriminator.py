"""U-Net discriminator with spectral normalisation, as in Real-ESRGAN (Wang et al., ICCVW 2021).

A plain encoder / decoder: ``conv0`` (3x3, no normalisation) -> three stride-2 4x4 convs (``conv1``..``conv3``,
features ``f, 2f, 4f, 8f``) -> three bilinear x2 upsamplings each followed by a 3x3 conv (``conv4``..``conv6``) with
skip connections added from the encoder at the same size -> two 3x3 convs (``conv7``, ``conv8``) -> ``conv9``, one
output channel. All convs except the first and the last are spectrally normalised (one power iteration per
training forward, ``torch.nn.utils.parametrizations.spectral_norm``; its ``u`` / ``v`` vectors are in the state
dict, so a resumed run continues exactly). LeakyReLU 0.2 throughout.

The output is a *per-pixel* map of logits, the same height and width as the input (N, 1, H, W): the discriminator
judges every pixel, which gives the generator detailed, local feedback (Real-ESRGAN's reason for it). The parameter
names are Real-ESRGAN's (``conv0`` .. ``conv9``); its checkpoints use the older ``spectral_norm`` hook naming
(``weight_orig`` / ``weight_u`` / ``weight_v``), which :meth:`UNetDiscriminatorSN.load_state_dict` does not convert.

Sized by ``num_feat`` (Real-ESRGAN: 64, 4.4 M parameters; 16 here is 274 k and runs on a CPU). Height and width
must be multiples of 8 (``input_multiple``). This is not an SR network (no ``scale``): it is registered here so
that a config's ``[gan.discriminator]`` table builds it by name like any other architecture.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from model_export.archs import register_arch


@register_arch("unet_discriminator_sn")
class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's U-Net discriminator: image (N, C, H, W) -> logit map (N, 1, H, W)."""

    input_multiple = 8

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        f = num_feat
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        # downsample
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        # upsample
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        # extra convs
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.input_multiple or w % self.input_multiple:
            raise ValueError(f"the discriminator needs height and width divisible by {self.input_multiple}, "
                             f"got {h}x{w}")
        act = lambda t: F.leaky_relu(t, negative_slope=0.2)  # noqa: E731
        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))

        x3 = F.interpolate(x3, scale_factor=2.0, mode="bilinear", align_corners=False)
        x4 = act(self.conv4(x3))
        if self.skip_connection:
            x4 = x4 + x2
        x4 = F.interpolate(x4, scale_factor=2.0, mode="bilinear", align_corners=False)
        x5 = act(self.conv5(x4))
        if self.skip_connection:
            x5 = x5 + x1
        x5 = F.interpolate(x5, scale_factor=2.0, mode="bilinear", align_corners=False)
        x6 = act(self.conv6(x5))
        if self.skip_connection:
            x6 = x6 + x0

        out = act(self.conv7(x6))
        out = act(self.conv8(out))
        return self.conv9(out)
