"""The discriminator side of an adversarial training stage, shared by the families that have one.

``esrgan_gan`` (the ESRGAN perceptual stage) and ``diffusion`` with a ``[loss.*] type = "ragan"`` term (a few-step
sampler whose ``x0`` prediction is judged by a discriminator, as in Denoising Diffusion GANs, Xiao et al., ICLR
2022) hold one :class:`Adversary` each. It owns the discriminator (``[network_d]``), its optimizer and schedule
(``d_lr``, the ``[train]`` table's shape), and splits the family's ``[loss.*]`` terms into the adversarial ones
(fed the discriminator's logits) and the ``(sr, hr)`` ones.

One training step, as the family calls it::

    real, fake = adversary.discriminate(hr, sr, train=True)   # one forward for both
    terms, weights = adversary.generator_backward(sr, hr, real, fake, generator_params)   # or no_grad terms
    l_d = adversary.discriminator_backward(real, fake)
    ... the family clips / steps its own optimizer ...
    adversary.step(step, grad_clip)

The generator's loss goes into the generator's weights only and the discriminator's into its own only
(``backward(inputs=...)``), both from the same logits, so one forward of the discriminator gives the gradients of
ESRGAN's two passes (generator step with the discriminator frozen, then the discriminator on the detached output);
only the spectral norms run one power iteration per step instead of two. On the CPU that is a quarter less work
per step: the discriminator runs at the HR size and costs as much as the generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from model_export.archs import build_arch
from model_export.training import gan_losses
from model_export.training.config import ConfigError
from model_export.training.distributed import DistInfo
from model_export.training.optim import LRSchedule, build_optimizer

Terms = dict[str, tuple[nn.Module, float]]

NETWORK_D_DEFAULTS = {"arch": "unet_discriminator_sn", "num_feat": 64, "skip_connection": True}


def split_terms(losses: Terms) -> tuple[Terms, Terms]:
    """``(adversarial, pixel)``: the terms that take the discriminator's logits, and the ``(sr, hr)`` ones."""
    adversarial = {n: mw for n, mw in losses.items() if getattr(mw[0], "adversarial", False)}
    return adversarial, {n: mw for n, mw in losses.items() if n not in adversarial}


class Adversary:
    """The discriminator, its optimizer and schedule, and the generator's adversarial terms (see the module doc)."""

    def __init__(self, network_d: dict, train: dict, d_lr: float, losses: Terms, device: torch.device,
                 dist: DistInfo):
        self.adversarial, self.pixel_losses = split_terms(losses)
        if not self.adversarial:
            raise ConfigError("an adversarial stage needs a [loss.*] term of type 'ragan'")
        if not self.pixel_losses and any(m.adaptive for m, _ in self.adversarial.values()):
            raise ConfigError("an adaptive adversarial term ([loss.*] adaptive = true) is weighted against the other "
                              "terms, and there is none with a non-zero weight")
        d_cfg = dict(network_d)
        d_arch = d_cfg.pop("arch")
        self._d_arch, self._d_cfg = d_arch, d_cfg
        try:
            # channels-last: the discriminator's many-pixel, few-channel convolutions run 1.5x faster on a CPU
            # (measured with oneDNN, num_feat 16, 96 px); the generators gain nothing (3 %) and stay as they are
            self.net_d = build_arch(d_arch, **d_cfg).to(device, memory_format=torch.channels_last)
        except TypeError as exc:
            raise ConfigError(f"config table 'network_d': {exc}") from exc
        except KeyError as exc:
            raise ConfigError(f"config key 'network_d.arch': {exc.args[0]}") from exc
        self.net_d_train = DistributedDataParallel(self.net_d) if dist.enabled else self.net_d
        t_d = {**train, "lr": float(d_lr)}
        self.opt_d = build_optimizer(self.net_d.parameters(), t_d)
        self.schedule_d = LRSchedule(t_d)

    # -- logits -------------------------------------------------------------------------------------------------
    def discriminate(self, hr: torch.Tensor, sr: torch.Tensor, train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of ``hr`` and ``sr`` from one forward of the discriminator on both. ``train``: the training
        step's forward, in training mode and through the training wrapper (DDP when distributed); otherwise the
        discriminator's mode is left as it is."""
        if train:
            self.net_d.train()
        net = self.net_d_train if train else self.net_d
        logits = net(torch.cat([hr, sr], 0).contiguous(memory_format=torch.channels_last))
        return logits[: hr.shape[0]], logits[hr.shape[0]:]

    def generator_terms(self, sr: torch.Tensor, hr: torch.Tensor, real: torch.Tensor | None,
                        fake: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Weighted generator terms: the ``(sr, hr)`` ones, and the adversarial ones from the logits (skipped
        when the logits are None)."""
        terms = {name: weight * module(sr, hr) for name, (module, weight) in self.pixel_losses.items()}
        if real is not None:
            for name, (module, weight) in self.adversarial.items():
                terms[name] = weight * module.generator(real, fake)
        return terms

    def frozen_terms(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted generator terms, the adversarial ones through the discriminator with its weights frozen (for
        callers outside the training step, which computes the logits once for both networks)."""
        flags = [p.requires_grad for p in self.net_d.parameters()]
        for p in self.net_d.parameters():
            p.requires_grad_(False)
        try:
            real, fake = self.discriminate(hr, sr)
        finally:
            for p, f in zip(self.net_d.parameters(), flags, strict=True):
                p.requires_grad_(f)
        return self.generator_terms(sr, hr, real, fake)

    # -- backward passes --------------------------------------------------------------------------------------
    def generator_backward(self, sr: torch.Tensor, hr: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                           params: list[nn.Parameter]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Backpropagate the generator's terms into ``params`` (not the discriminator's); returns the weighted
        terms and the adversarial terms' weights. An adaptive term (see :class:`~model_export.training.gan_losses.
        RaGANLoss`) is weighted by the ratio of gradient norms at ``sr``, and a term with ``highpass_sigma`` keeps
        only the detail band of its gradient there: the gradients with respect to ``sr`` are taken first (the
        adversarial one through the discriminator, as the full backward would), combined, and sent through the
        generator once, so neither costs an extra pass."""
        if not any(module.adaptive or module.highpass_sigma > 0 for module, _ in self.adversarial.values()):
            terms = self.generator_terms(sr, hr, real, fake)
            sum(terms.values()).backward(inputs=params, retain_graph=True)
            return terms, {name: weight for name, (_, weight) in self.adversarial.items()}
        terms = {name: weight * module(sr, hr) for name, (module, weight) in self.pixel_losses.items()}
        grad = torch.autograd.grad(sum(terms.values()), sr, retain_graph=True)[0]
        rec_norm = grad.norm()
        weights = {}
        for name, (module, weight) in self.adversarial.items():
            adv = module.generator(real, fake)
            g_adv = module.detail_band(torch.autograd.grad(adv, sr, retain_graph=True)[0])
            lam = torch.as_tensor(float(weight))
            if module.adaptive:
                lam = (weight * rec_norm / (g_adv.norm() + 1e-12)).clamp(max=module.max_weight).detach()
            grad = grad + lam * g_adv
            terms[name] = lam * adv
            weights[name] = float(lam)
        sr.backward(grad, inputs=params)  # the generator's graph only; the discriminator's stays for its loss
        return terms, weights

    def discriminator_backward(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        """The relativistic discriminator loss into the discriminator's weights only (their gradients are reset
        first); returns ``l_d`` and the mean logits for the log."""
        self.opt_d.zero_grad(set_to_none=True)
        l_d = gan_losses.ragan_discriminator_loss(real, fake)
        l_d.backward(inputs=list(self.net_d.parameters()))
        return {"l_d": float(l_d.detach()), "d_real": float(real.detach().mean()),
                "d_fake": float(fake.detach().mean())}

    def step(self, step: int, grad_clip: float = 0.0) -> None:
        """The discriminator's optimizer step at the learning rate of training step ``step``."""
        self.schedule_d.apply(self.opt_d, step)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net_d.parameters(), grad_clip)
        self.opt_d.step()

    def reset(self, seed: list[int]) -> None:
        """A fresh discriminator in place: weights (and spectral-norm vectors) of a new one drawn from ``seed``, so a
        resumed run is exact, and the optimizer's moments dropped. The same modules stay: the DDP wrapper and the
        optimizer hold them."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.default_rng(seed).integers(2**62)))
            fresh = build_arch(self._d_arch, **self._d_cfg)
        self.net_d.load_state_dict(fresh.state_dict())
        self.opt_d.state.clear()

    # -- checkpoints --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"net_d": self.net_d.state_dict(), "opt_d": self.opt_d.state_dict(),
                "schedule_d": self.schedule_d.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net_d.load_state_dict(state["net_d"])
        self.opt_d.load_state_dict(state["opt_d"])
