"""Network architectures (BasicSR's ``archs``): pure ``nn.Module`` classes, no training logic.

Architectures register themselves by name in :data:`ARCHS`; :func:`build_arch` builds one from a name and keyword
arguments (the ``[network]`` table of a training config, minus ``arch``). A module that defines an architecture is
listed in :data:`_ARCH_MODULES` and imported on first use, so adding an architecture is one new file and one line.

Every architecture here takes and returns NCHW float32 RGB in [0, 1] (the ONNX contract in DESIGN.md) and has
a ``scale`` attribute; ``input_multiple`` (default 1) says what the input's height and width must divide by.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

import torch.nn as nn

ARCHS: dict[str, type[nn.Module]] = {}

# name -> module that registers it (imported lazily by build_arch / get_arch)
_ARCH_MODULES: dict[str, str] = {
    "rrdbnet": "model_export.archs.rrdbnet",
    "irn": "model_export.archs.irn",
    "diffusion_unet": "model_export.archs.diffusion_unet",
    "unet_discriminator_sn": "model_export.archs.unet_discriminator",
}


def register_arch(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``@register_arch("rrdbnet")`` adds the class to :data:`ARCHS`."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in ARCHS and ARCHS[name] is not cls:
            raise ValueError(f"architecture {name!r} is registered twice ({ARCHS[name].__module__}, {cls.__module__})")
        ARCHS[name] = cls
        return cls

    return deco


def available_archs() -> list[str]:
    return sorted(set(ARCHS) | set(_ARCH_MODULES))


def get_arch(name: str) -> type[nn.Module]:
    """The architecture class registered as ``name`` (imports its module on first use)."""
    if name not in ARCHS and name in _ARCH_MODULES:
        importlib.import_module(_ARCH_MODULES[name])
    if name not in ARCHS:
        raise KeyError(f"unknown architecture {name!r}; available: {', '.join(available_archs())}")
    return ARCHS[name]


def arch_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments the architecture accepts (used to validate a config's ``[network]`` table)."""
    sig = inspect.signature(get_arch(name).__init__)
    return {k: p for k, p in sig.parameters.items() if k != "self" and p.kind is not p.VAR_KEYWORD}


def build_arch(name: str, **kwargs) -> nn.Module:
    """Build architecture ``name``; an unknown keyword is an error that names it."""
    params = arch_parameters(name)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(f"architecture {name!r} has no option(s) {', '.join(unknown)}; options: {', '.join(params)}")
    return get_arch(name)(**kwargs)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


__all__ = ["ARCHS", "register_arch", "get_arch", "build_arch", "arch_parameters", "available_archs", "count_parameters"]
