"""Exponential moving average of a network's weights (what validation, the model file and export use)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMA:
    """``ema = decay * ema + (1 - decay) * weights`` after each optimizer step; buffers are copied.

    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the average is not
    dominated by the random initial weights in short runs. ``decay = 0`` makes the EMA a plain copy.
    """

    def __init__(self, net: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.module = copy.deepcopy(net).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = warmup
        self.updates = 0

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        return self.decay

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        d = self.current_decay()
        for e, p in zip(self.module.parameters(), net.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.module.buffers(), net.buffers()):
            e.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"params": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["params"])
        self.updates = int(state["updates"])
