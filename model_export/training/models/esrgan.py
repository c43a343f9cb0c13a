"""``esrgan``: an SR generator (RRDBNet by default, any registered arch) trained with pixel losses.

This is the PSNR-oriented first stage of ESRGAN. The adversarial stage will extend it (a discriminator, its
optimizer, perceptual / GAN loss terms): override :meth:`ESRGANModel.compute_losses` and :meth:`optimize`, and add
the discriminator to :meth:`state_dict`; the loss terms come from the ``[loss.*]`` tables either way.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from model_export.training.config import ConfigError
from model_export.training.distributed import DistInfo
from model_export.training.ema import EMA
from model_export.training.losses import build_loss
from model_export.training.models import register_model
from model_export.training.models.base import BaseModel
from model_export.training.optim import LRSchedule, build_optimizer
from model_export.training.validation import upscale


@register_model("esrgan")
class ESRGANModel(BaseModel):
    def __init__(self, cfg: dict, device: torch.device, dist: DistInfo):
        super().__init__(cfg, device, dist)
        self.net_g = self.build_network().to(device)
        t = cfg["train"]
        self.ema = EMA(self.net_g, t["ema_decay"], t["ema_warmup"])
        self.net_g_train = DistributedDataParallel(self.net_g) if dist.enabled else self.net_g
        self.losses: dict[str, tuple[nn.Module, float]] = {}
        for name, term in cfg["loss"].items():
            module, weight = build_loss(name, term)
            if weight != 0:
                self.losses[name] = (module.to(device), weight)
        if not self.losses:
            raise ConfigError("config table 'loss' has no term with a non-zero weight")
        self.opt_g = build_optimizer(self.net_g.parameters(), t)
        self.schedule = LRSchedule(t)
        self.grad_clip = t["grad_clip"]

    def compute_losses(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted loss terms of the generator output (name -> scalar tensor)."""
        return {name: weight * module(sr, hr) for name, (module, weight) in self.losses.items()}

    def optimize(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        lr_now = self.schedule.apply(self.opt_g, step)
        lr = batch["lr"].to(self.device, non_blocking=True)
        hr = batch["hr"].to(self.device, non_blocking=True)
        self.net_g.train()
        sr = self.net_g_train(lr)
        terms = self.compute_losses(sr, hr)
        total = sum(terms.values())
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), self.grad_clip)
        self.opt_g.step()
        self.ema.update(self.net_g)
        out = {"loss": float(total.detach()), "lr": lr_now}
        if len(terms) > 1:
            out.update({f"l_{k}": float(v.detach()) for k, v in terms.items()})
        return out

    def eval_net(self) -> nn.Module:
        return self.ema.module

    def run_eval(self, lr: torch.Tensor) -> torch.Tensor:
        net = self.ema.module.eval()
        return upscale(net, lr.to(self.device), self.cfg["scale"], getattr(net, "input_multiple", 1))

    def checkpoint_parts(self) -> dict[str, Any]:
        return {"net_g": self.net_g, "ema_g": self.ema, "opt_g": self.opt_g, "schedule": self.schedule}
