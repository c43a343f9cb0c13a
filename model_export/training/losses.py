"""Loss terms, by name. A config's ``[loss.<term>]`` table picks one: ``type`` (a name in :data:`LOSSES`),
``weight`` (0 disables the term) and the loss's own keyword options.

The pixel losses here take ``(sr, hr)``. Terms that need more (perceptual: a feature network; adversarial: a
discriminator) are registered the same way by the model family that uses them; the family decides what it
passes in (see :class:`model_export.training.models.esrgan.ESRGANModel.compute_losses`).
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn as nn

LOSSES: dict[str, type[nn.Module]] = {}


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        LOSSES[name] = cls
        return cls

    return deco


@register_loss("l1")
class L1Loss(nn.Module):
    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return torch.mean(torch.abs(sr - hr))


@register_loss("mse")
class MSELoss(nn.Module):
    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return torch.mean((sr - hr) ** 2)


@register_loss("charbonnier")
class CharbonnierLoss(nn.Module):
    """sqrt((sr - hr)^2 + eps^2), a smooth L1."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return torch.mean(torch.sqrt((sr - hr) ** 2 + self.eps * self.eps))


@register_loss("stlpips")
class STLPIPSLoss(nn.Module):
    """ST-LPIPS (``trunk`` alex or vgg, vST0.0) as a feature-space loss: the batch mean of the metric itself.

    The network is frozen and stays in eval mode (see :class:`model_export.stlpips.STLPIPS`); the family moves it
    to the training device with the other terms. ``layer_weights`` (five numbers) stress some taps over others.
    """

    def __init__(self, trunk: str = "alex", layer_weights: list[float] | None = None):
        super().__init__()
        from model_export.stlpips import STLPIPS

        self.metric = STLPIPS(trunk, layer_weights)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.metric(sr, hr).mean()


def build_loss(name: str, term: dict) -> tuple[nn.Module, float]:
    """``(module, weight)`` for the config table ``[loss.<name>]``; unknown types / options name the key."""
    from model_export.training.config import ConfigError

    options = {k: v for k, v in term.items() if k not in ("type", "weight")}
    kind = term["type"]
    if kind not in LOSSES:
        raise ConfigError(f"config key 'loss.{name}.type': unknown loss {kind!r}; known: {', '.join(sorted(LOSSES))}")
    cls = LOSSES[kind]
    params = {k for k in inspect.signature(cls.__init__).parameters if k != "self"}
    for k in options:
        if k not in params:
            raise ConfigError(f"unknown config key 'loss.{name}.{k}' (loss {kind!r} takes: {', '.join(sorted(params)) or 'nothing'})")
    try:
        module = cls(**options)
    except (ValueError, RuntimeError) as exc:  # e.g. an unknown ST-LPIPS trunk, its weights not installed
        raise ConfigError(f"config table 'loss.{name}': {exc}") from None
    return module, float(term.get("weight", 1.0))
