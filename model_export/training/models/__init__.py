"""Model families (BasicSR's ``models``): what ``invsr-train <model>`` trains.

A family is a :class:`~model_export.training.models.base.BaseModel` subclass registered under its name. It holds
the network(s), the EMA, the loss terms and the optimizer(s), and does one optimisation step on a batch; the
training loop (:mod:`model_export.train`) does everything else (data, schedule of validation / checkpoints /
logs, DDP, signals). To add a family, write ``models/<name>.py`` with ``@register_model("<name>")`` on the class
and add one line to :data:`_MODEL_MODULES`.
"""

from __future__ import annotations

import importlib
from typing import Callable

from model_export.training.models.base import BaseModel

MODELS: dict[str, type[BaseModel]] = {}

_MODEL_MODULES: dict[str, str] = {
    "esrgan": "model_export.training.models.esrgan",
    "esrgan_gan": "model_export.training.models.esrgan_gan",
    "inn": "model_export.training.models.inn",
    "diffusion": "model_export.training.models.diffusion",
}


def register_model(name: str) -> Callable[[type[BaseModel]], type[BaseModel]]:
    def deco(cls: type[BaseModel]) -> type[BaseModel]:
        cls.family = name
        MODELS[name] = cls
        return cls

    return deco


def available_models() -> list[str]:
    return sorted(set(MODELS) | set(_MODEL_MODULES))


def get_model_class(name: str) -> type[BaseModel]:
    if name not in MODELS and name in _MODEL_MODULES:
        importlib.import_module(_MODEL_MODULES[name])
    if name not in MODELS:
        raise KeyError(f"unknown model family {name!r}; available: {', '.join(available_models())}")
    return MODELS[name]


__all__ = ["BaseModel", "MODELS", "register_model", "get_model_class", "available_models"]
