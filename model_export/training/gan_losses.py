"""Loss terms of the adversarial (perceptual) stage: the relativistic average GAN, and detail losses that need no
pretrained network.

Registered in :data:`model_export.training.losses.LOSSES` when this module is imported (the ``esrgan_gan`` family
imports it), so a config picks them with ``[loss.<name>] type = "..."`` like any other term:

``ragan``
    Relativistic average GAN (Jolicoeur-Martineau 2018, used by ESRGAN). With ``C`` the discriminator's logits,
    ``D_Ra(a, b) = sigmoid(C(a) - mean C(b))``; the discriminator minimises
    ``-E[log D_Ra(real, fake)] - E[log(1 - D_Ra(fake, real))]`` and the generator the same with real and fake
    swapped (so it also gets a gradient from the real images: it learns to make them look *less* real than its
    own output, which ESRGAN found gives sharper edges than the standard GAN). Both are halved (the mean of the two
    terms), as ESRGAN does. With a per-pixel discriminator (the U-Net) every pixel's logit is one sample and the
    means run over the batch and all pixels. This term does not take ``(sr, hr)``: the family calls
    :meth:`RaGANLoss.generator` / :meth:`RaGANLoss.discriminator` with the logits.

``frequency``  (the detail loss chosen for ``esrgan_gan_x4``)
    L1 distance between the *amplitude* spectra of local windows: the patch is cut into Hann-windowed tiles
    (50 % overlap) of each size in ``windows``, each tile is Fourier transformed (orthonormal), and the mean
    absolute difference of ``|FFT|`` between output and target is taken, averaged over the window sizes. It is
    the 2-D counterpart of the multi-resolution STFT magnitude loss that audio GANs (Parallel WaveGAN, HiFi-GAN's
    auxiliary loss) use where images would use a VGG loss. Why it keeps detail where pixel losses do not: when
    the exact position of a texture cannot be recovered from the LR input, the L1 / L2 optimum is the average of
    the possible positions, a blur; the amplitude spectrum of a window does not change when its content shifts,
    so it does not reward averaging: it asks for the right *amount* of detail at each frequency and orientation
    in each region, and a blurred output, whose high-frequency amplitudes are too small, pays for it. The phase
    (where things are) is left to the L1 term and the discriminator. The DC term is the window's mean colour, so
    the loss also holds the colours in place. Zero for identical images; no pretrained weights, cheap on a CPU.

``gradient``
    L1 distance between Sobel derivatives (x and y, per channel) of output and target. Sharpens edges, but it is
    pixel-aligned, so it averages uncertain textures just as L1 does; available for experiments, not used by the
    shipped config.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from model_export.training.losses import register_loss

__all__ = ["RaGANLoss", "FrequencyLoss", "GradientLoss", "ragan_discriminator_loss", "ragan_generator_loss",
           "gaussian_blur"]


def ragan_discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (BCE(C(real) - mean C(fake), 1) + BCE(C(fake) - mean C(real), 0))`` from logits (any shape)."""
    return 0.5 * (F.softplus(-(real - fake.mean())).mean() + F.softplus(fake - real.mean()).mean())


def ragan_generator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (BCE(C(real) - mean C(fake), 0) + BCE(C(fake) - mean C(real), 1))``: the discriminator's loss with
    the roles of real and fake swapped."""
    return ragan_discriminator_loss(fake, real)


@register_loss("ragan")
class RaGANLoss(nn.Module):
    """The relativistic average GAN loss (see the module doc). Call :meth:`generator` / :meth:`discriminator`.

    ``adaptive = true``: the term's ``weight`` is relative. Each step the family scales the term by
    ``lambda = weight * |grad_sr(other terms)| / |grad_sr(this term)|`` (gradients with respect to the generator's
    output image, lambda clamped to ``max_weight``), so the adversarial gradient is ``weight`` times as strong as
    the reconstruction terms' whatever the discriminator's state (VQGAN's adaptive weight, Esser et al. 2021,
    measured at the output image instead of the last layer). Why: a fixed weight does not hold a balance here.
    Measured on the nf 32 / 4 block generator at batch 16: the unweighted RaGAN gradient's norm was 0.007 against
    the discriminator it was initialised with, 13 after 100 steps of training that discriminator (600 times the
    L1 term's 0.022), 0.3 a few dozen steps later; with Real-ESRGAN's fixed 0.1 the validation PSNR fell 2 dB in
    20 steps (and rose and fell again), with a 4-pixel grid from the pixel-shuffle upsampler and a colour shift.

    ``highpass_sigma > 0``: the term may change only the detail band of the output. Its gradient at the output
    image loses its low-pass part (a Gaussian blur of that sigma, in output pixels: :meth:`detail_band`), which is
    the gradient of the term with the output's low band held constant. The low band (colours, shading: what the
    LR input determines) is left to the reconstruction terms, whose optimum there is the faithful one; the GAN
    supplies texture. This is the frequency separation of Fritsche et al. (ICCVW 2019: GAN loss on the high
    frequencies, pixel loss on the low ones), applied to the gradient, so the discriminator still sees whole
    images. Why: the issue's "no colour shift" criterion; in a 60-step test from the same start, the mean blue of
    Set5's bird moved 3.4 % with the full adversarial gradient and 1.1 % without the adversarial term at all.
    ``scale / 2`` output pixels puts the cut near the LR's Nyquist frequency.
    """

    adversarial = True

    def __init__(self, adaptive: bool = False, max_weight: float = 10.0, highpass_sigma: float = 0.0):
        super().__init__()
        self.adaptive = bool(adaptive)
        self.max_weight = float(max_weight)
        self.highpass_sigma = float(highpass_sigma)
        if self.highpass_sigma < 0:
            raise ValueError("highpass_sigma must be >= 0")

    def detail_band(self, grad: torch.Tensor) -> torch.Tensor:
        """``grad`` minus its Gaussian low-pass (sigma ``highpass_sigma``, reflected borders); unchanged if 0."""
        if self.highpass_sigma <= 0:
            return grad
        return grad - gaussian_blur(grad, self.highpass_sigma)

    def generator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return ragan_generator_loss(real_logits, fake_logits)

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return ragan_discriminator_loss(real_logits, fake_logits)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        raise TypeError("the 'ragan' loss needs a discriminator: use it with the esrgan_gan model family")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), radius ``ceil(3 sigma)`` (at most the image's side - 1), reflected
    borders."""
    n, c, h, w = x.shape
    radius = max(1, min(int(math.ceil(3.0 * sigma)), h - 1, w - 1))
    r = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    k = torch.exp(-0.5 * (r / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    y = F.pad(x.reshape(n * c, 1, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def _hann2d(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    w = torch.hann_window(size, periodic=False, dtype=torch.float64, device=device)
    return torch.outer(w, w).to(dtype)


@register_loss("frequency")
class FrequencyLoss(nn.Module):
    """Mean |  |FFT(window of sr)| - |FFT(window of hr)|  | over Hann-windowed tiles of each size in ``windows``,
    hop ``window // 2`` (tiles that do not fit are dropped at the right / bottom edge; a window larger than the
    image shrinks to it). See the module doc for why."""

    def __init__(self, windows: Sequence[int] = (16, 32)):
        super().__init__()
        windows = [int(w) for w in windows]
        if not windows or any(w < 4 for w in windows):
            raise ValueError(f"frequency loss windows must be >= 4 pixels, got {windows}")
        self.windows = windows

    @staticmethod
    def amplitude(x: torch.Tensor, window: int) -> torch.Tensor:
        """|rfft2| of the Hann-windowed tiles of ``x`` (N, C, H, W) -> (N * C * tiles, window, window // 2 + 1)."""
        n, c, h, w = x.shape
        size = min(window, h, w)
        hop = max(1, size // 2)
        tiles = F.unfold(x.reshape(n * c, 1, h, w), kernel_size=size, stride=hop)  # (NC, size*size, L)
        tiles = tiles.transpose(1, 2).reshape(-1, size, size)
        tiles = tiles * _hann2d(size, x.device, x.dtype)
        return torch.fft.rfft2(tiles, norm="ortho").abs()

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        total = sr.new_zeros(())
        for window in self.windows:
            total = total + torch.mean(torch.abs(self.amplitude(sr, window) - self.amplitude(hr, window)))
        return total / len(self.windows)


@register_loss("gradient")
class GradientLoss(nn.Module):
    """Mean |Sobel_x(sr) - Sobel_x(hr)| + |Sobel_y(sr) - Sobel_y(hr)| per channel (replicate padding), halved."""

    def __init__(self):
        super().__init__()
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
        self.register_buffer("kernel", torch.stack([kx, kx.t()]).unsqueeze(1), persistent=False)  # (2, 1, 3, 3)

    def sobel(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
        return F.conv2d(x, self.kernel.to(x.dtype))

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return torch.mean(torch.abs(self.sobel(sr) - self.sobel(hr)))
