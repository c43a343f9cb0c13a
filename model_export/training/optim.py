"""Optimizers and the learning-rate schedule.

The schedule is a pure function of the step (no hidden state), so resuming needs only the step:
a linear warm-up from 0 over ``warmup_steps``, then ``cosine`` (down to ``min_lr`` at ``total_steps``; with
``restarts``, a new cycle from ``lr x restart_weight`` begins at each of those steps, as in SGDR / BasicSR's
CosineAnnealingRestartLR, so a finished run can be trained on with a fresh, annealed cycle),
``multistep`` (times ``gamma`` at each of ``milestones``) or ``constant``.
"""

from __future__ import annotations

import bisect
import math
from typing import Iterable

import torch


def build_optimizer(params: Iterable[torch.nn.Parameter], train_cfg: dict) -> torch.optim.Optimizer:
    kwargs = dict(lr=train_cfg["lr"], betas=tuple(train_cfg["betas"]), weight_decay=train_cfg["weight_decay"])
    if train_cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    return torch.optim.Adam(params, **kwargs)


class LRSchedule:
    """``lr(step)`` for the step about to be taken (0-based)."""

    def __init__(self, train_cfg: dict):
        self.kind = train_cfg["scheduler"]
        self.base = float(train_cfg["lr"])
        self.total = int(train_cfg["total_steps"])
        self.warmup = int(train_cfg["warmup_steps"])
        self.milestones = sorted(int(m) for m in train_cfg["milestones"])
        self.gamma = float(train_cfg["gamma"])
        self.min_lr = float(train_cfg["min_lr"])
        self.restarts = [int(r) for r in train_cfg.get("restarts", [])]
        weights = train_cfg.get("restart_weights") or [1.0] * len(self.restarts)
        self.restart_weights = [float(w) for w in weights]

    def lr(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return self.base * (step + 1) / self.warmup
        if self.kind == "cosine":
            cycle = bisect.bisect_right(self.restarts, step)
            start = self.restarts[cycle - 1] if cycle else self.warmup
            end = self.restarts[cycle] if cycle < len(self.restarts) else self.total
            peak = self.base * (self.restart_weights[cycle - 1] if cycle else 1.0)
            t = min(1.0, (step - start) / max(1, end - start))
            return self.min_lr + 0.5 * (peak - self.min_lr) * (1.0 + math.cos(math.pi * t))
        if self.kind == "multistep":
            return self.base * self.gamma ** bisect.bisect_right(self.milestones, step)
        return self.base

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"kind": self.kind, "base": self.base, "total": self.total, "warmup": self.warmup,
                "restarts": self.restarts, "restart_weights": self.restart_weights}
