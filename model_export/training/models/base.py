"""The interface every model family implements."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from model_export.training.distributed import DistInfo


class BaseModel:
    """A trainable model family.

    Built from the full config on every rank with the same seed, so all ranks start from the same weights.
    Subclasses set ``config_defaults`` for config keys of their own (merged into the defaults before the config
    file is read, so they are checked like the built-in ones).
    """

    family: str = ""
    config_defaults: dict[str, Any] = {}

    def __init__(self, cfg: dict, device: torch.device, dist: DistInfo):
        self.cfg = cfg
        self.device = device
        self.dist = dist

    def build_network(self) -> nn.Module:
        """The ``[network]`` table's architecture at the config's ``scale`` (on the CPU; the family moves it), with
        ``self.arch`` and ``self.arch_kwargs`` set for the model file. A bad table is a ConfigError naming the key."""
        from model_export.archs import build_arch
        from model_export.training.config import ConfigError

        net_cfg = dict(self.cfg["network"])
        self.arch = net_cfg.pop("arch")
        scale = self.cfg["scale"]
        if "scale" in net_cfg and net_cfg["scale"] != scale:
            raise ConfigError(f"config key 'network.scale' ({net_cfg['scale']}) disagrees with 'scale' ({scale})")
        net_cfg["scale"] = scale
        self.arch_kwargs = net_cfg
        try:
            return build_arch(self.arch, **net_cfg)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config table 'network': {exc}") from exc
        except KeyError as exc:
            raise ConfigError(f"config key 'network.arch': {exc.args[0]}") from exc

    # -- training -------------------------------------------------------------------------------------------
    def optimize(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        """One optimisation step on ``batch`` (``lr``, ``hr`` tensors) for 0-based ``step``. Returns floats to
        log: at least ``loss`` (the total) and ``lr`` (the learning rate used)."""
        raise NotImplementedError

    def validation_extras(self, val_set) -> dict[str, float]:
        """Figures of a family's own to log beside ``val_psnr`` at each validation (e.g. the INN's round trip);
        ``val_set`` is the held-out :class:`~model_export.data.dataset.ValidationSet`."""
        return {}

    # -- inference / export -----------------------------------------------------------------------------------
    def eval_net(self) -> nn.Module:
        """The network validation and export use (the EMA weights)."""
        raise NotImplementedError

    def run_eval(self, lr: torch.Tensor) -> torch.Tensor:
        """SR output of :meth:`eval_net` for one whole LR image (1, 3, h, w) in [0, 1]."""
        raise NotImplementedError

    def export_payload(self) -> dict[str, Any]:
        """``arch``, ``arch_kwargs``, ``params_ema`` for the model file (see training.checkpoint); a family may add
        keys, written into the model file as they are (e.g. the diffusion family's frozen ``prior``)."""
        return {"arch": self.arch, "arch_kwargs": dict(self.arch_kwargs), "params_ema": self.eval_net().state_dict()}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.eval_net().parameters())

    # -- checkpoints ------------------------------------------------------------------------------------------
    #: Parts saved for the record but not loaded back: the learning rate follows from the step and the config, so a
    #: resumed run may change its schedule in the config.
    RECORD_ONLY: tuple[str, ...] = ("schedule",)

    def checkpoint_parts(self) -> dict[str, Any]:
        """The stateful parts of a resume point (each with ``state_dict`` / ``load_state_dict``) by the key it is
        stored under. The keys are a file format: resume points written before must still load."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {key: part.state_dict() for key, part in self.checkpoint_parts().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, part in self.checkpoint_parts().items():
            if key not in self.RECORD_ONLY:
                part.load_state_dict(state[key])
