"""``esrgan_gan``: the perceptual (adversarial) second stage of ESRGAN, fine-tuned from the PSNR-stage model.

    invsr-train esrgan_gan --config model_export/configs/esrgan_gan_x4.toml --out runs/esrgan_gan_x4 --resume auto

Generator: the ``esrgan`` family's (:class:`~model_export.training.models.esrgan.ESRGANModel`: network, EMA,
optimizer, schedule, ``[loss.*]`` terms), started from a model file of the first stage: ``gan.init_from`` names an
``invsr-model/1`` file (``model_rrdbnet_x4.pt`` of ``invsr-train esrgan``), or any checkpoint ``invsr-export``
reads (BasicSR / Real-ESRGAN / original ESRGAN RRDBNet). The architecture and its options come from that file, so
they match; the config's ``[network]`` table may name only ``arch`` (or repeat the file's options: a disagreement
is an error). The generator and its EMA start from the file's weights (``params_ema`` for our files). With
``init_from = ""`` the generator is built from ``[network]`` with fresh weights (not what ESRGAN does).
``gan.grow_blocks = N`` starts a deeper RRDBNet instead: the file's generator with N more blocks that compute the
same function at step 0 (:meth:`~model_export.archs.rrdbnet.RRDBNet.grow_from`), to measure what depth buys.

Discriminator: ``[network_d]`` (default Real-ESRGAN's U-Net with spectral normalisation,
:mod:`model_export.archs.unet_discriminator`), its own Adam optimizer with learning rate ``gan.d_lr`` on the same
schedule shape as the generator's (``[train]``: scheduler, warm-up, betas, gradient clipping).

Losses: the ``[loss.*]`` terms of the generator. Pixel / detail terms take ``(sr, hr)``; the adversarial term
(type ``ragan``, :mod:`model_export.training.gan_losses`) takes the discriminator's logits of ``hr`` and ``sr``;
with ``adaptive = true`` its weight is relative to the other terms' gradient at ``sr``, and with
``highpass_sigma`` it moves only the detail band of the output (see :class:`~model_export.training.gan_losses.
RaGANLoss`: both are done on the gradient at ``sr``, before the generator's backward pass).
One step computes what ESRGAN's two (generator, then discriminator) compute, with one forward of the
discriminator instead of two: the generator's output ``sr``; the discriminator's logits of ``hr`` and ``sr`` in one
batch; from them the generator's loss, backpropagated into the generator's weights only, and the discriminator's
loss, backpropagated into the discriminator's weights only (``backward(inputs=...)``); then both optimizers step.
Both losses see the weights from before the step, as in ESRGAN's order, so the gradients are the ones of the
two-pass step; only the spectral norms run one power iteration per step instead of two. On the CPU this is a
quarter less work per step (the discriminator runs at the HR size and costs as much as the generator). For the
first ``gan.d_init_steps`` steps only the discriminator learns (the generator is already good; this keeps a random
discriminator's gradients away from it, BasicSR's ``net_d_init_iters``). ``gan.d_reset_every = N`` replaces the
discriminator by a fresh one every N steps (weights drawn from the seed and the step, Adam's moments dropped), each
followed by the same warm-up: in the camera fine-tunes the gains came in the few hundred steps after a fresh
discriminator, while the adaptive GAN weight was 5e-3 to 1.6e-2; once it was confident (logits 13-15 on real
against -3 on fake) the weight fell to ~1.5e-4 and the generator stopped improving.

Data: ``data.degradation`` makes the LR (``real_photo`` for this stage); ``gan.bicubic_fraction`` of the samples,
chosen by sample index (so a resumed run is exact), get the MATLAB-bicubic LR of their HR instead, so the model
also stays good on clean downscaled images (the benchmarks' LR).

Checkpoint (``latest.pt`` ``model``): ``net_g``, ``ema_g``, ``opt_g``, ``net_d`` (with the spectral norms' ``u`` /
``v``), ``opt_d``, the schedules and where the generator came from (``init``). The model file is the generator's
EMA in the first stage's format (``arch`` ``rrdbnet``, ``params_ema``), so ``invsr-export`` reads it unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from model_export.archs import build_arch
from model_export.training.adversary import NETWORK_D_DEFAULTS, Adversary
from model_export.training.config import ConfigError
from model_export.training.distributed import DistInfo
from model_export.training.models import register_model
from model_export.training.models.esrgan import ESRGANModel
from model_export.training.optim import LRSchedule, build_optimizer

_SEED_MIX = 11


def load_init(path: str, cfg: dict,
              key: str = "gan.init_from") -> tuple[dict, dict[str, torch.Tensor], dict[str, Any]]:
    """``(network table, state dict, provenance)`` of the generator file ``path`` (``gan.init_from``), checked
    against the config's ``scale`` and ``[network]`` table. Loaded with ``weights_only=True``.

    ``key`` is the config key that named the file, for the error messages (the diffusion family loads its frozen
    ``diffusion.prior`` with this same function). The provenance also says what the file was trained on and its
    training record (``trained_on``, ``training``), so a copy of the weights can carry them on."""
    from model_export.checkpoints import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise ConfigError(f"config key '{key}': {exc}") from None
    net_cfg = {"arch": ckpt.arch, **ckpt.options}
    if int(ckpt.scale) != int(cfg["scale"]):
        raise ConfigError(f"config key '{key}': {path} is a x{ckpt.scale} model, "
                          f"but 'scale' is {cfg['scale']}")
    for option, value in cfg["network"].items():
        if option in net_cfg and net_cfg[option] != value:
            raise ConfigError(f"config key 'network.{option}' is {value!r} but the generator in {path} has "
                              f"{net_cfg[option]!r} (leave [network] to the file: it needs only 'arch')")
        if option not in net_cfg and option != "scale":
            net_cfg[option] = value  # an option the file does not say (e.g. residual of a third-party checkpoint)
    info = {"path": str(path), "sha256": ckpt.sha256, "source": ckpt.source, "arch": ckpt.arch,
            "options": copy.deepcopy(ckpt.options), "step": ckpt.training.get("step"),
            "val_psnr": ckpt.training.get("val_psnr"), "trained_on": ckpt.trained_on,
            "training": copy.deepcopy(ckpt.training)}
    return net_cfg, ckpt.state_dict, info


def bicubic_mix(batch: dict[str, Any], fraction: float, seed: int, scale: int, round_lr: bool) -> torch.Tensor:
    """The batch's LR with ``fraction`` of the samples (picked by sample index) replaced by the MATLAB-bicubic LR
    of their HR."""
    lr = batch["lr"]
    indices = batch.get("index")
    if fraction <= 0 or indices is None:
        return lr
    from model_export.data.dataset import make_lr

    lr = lr.clone()
    for j, index in enumerate(torch.as_tensor(indices).tolist()):
        if np.random.default_rng([seed, _SEED_MIX, int(index)]).random() < fraction:
            hr = batch["hr"][j].permute(1, 2, 0).double().numpy()
            lr[j] = torch.from_numpy(make_lr(hr, scale, round_lr).transpose(2, 0, 1).copy())
    return lr


def _grown(net_cfg: dict, blocks: int) -> dict:
    """The generator's network table with ``gan.grow_blocks`` more RRDB blocks (an RRDBNet only)."""
    if blocks < 0:
        raise ConfigError("config key 'gan.grow_blocks' must be >= 0")
    if not blocks:
        return net_cfg
    if net_cfg["arch"] != "rrdbnet":
        raise ConfigError(f"config key 'gan.grow_blocks': only an rrdbnet grows, not {net_cfg['arch']!r}")
    return {**net_cfg, "num_block": int(net_cfg.get("num_block", 23)) + int(blocks)}


@register_model("esrgan_gan")
class ESRGANGANModel(ESRGANModel):
    config_defaults = {
        "gan": {
            "init_from": "",  # generator file of the PSNR stage (invsr-model/1); "" = fresh [network] weights
            "d_lr": 1e-4,  # discriminator learning rate (same schedule shape as train.lr)
            "d_init_steps": 0,  # first steps train only the discriminator
            "bicubic_fraction": 0.0,  # samples whose LR is the MATLAB-bicubic LR of their HR instead
            "d_reset_every": 0,  # every this many steps a fresh discriminator (0 = never); d_init_steps after each
            "grow_blocks": 0,  # RRDB blocks added to init_from's generator, the same function at step 0 (grow_from)
        },
        "network_d": dict(NETWORK_D_DEFAULTS),
    }

    def __init__(self, cfg: dict, device: torch.device, dist: DistInfo):
        g = cfg["gan"]
        init_state = None
        self.init_info: dict[str, Any] = {}
        if g["init_from"]:
            net_cfg, init_state, self.init_info = load_init(g["init_from"], cfg)
            net_cfg = _grown(net_cfg, g["grow_blocks"])
            cfg = {**cfg, "network": net_cfg}  # a copy: the run's config keeps the table as written
        elif g["grow_blocks"]:
            raise ConfigError("config key 'gan.grow_blocks' needs 'gan.init_from' (the generator to grow)")
        super().__init__(cfg, device, dist)
        if init_state is not None:
            try:
                if g["grow_blocks"]:
                    self.net_g.grow_from(init_state)
                else:
                    self.net_g.load_state_dict(init_state, strict=True)
            except (RuntimeError, ValueError) as exc:
                why = str(exc).splitlines()[0]
                raise ConfigError(f"config key 'gan.init_from': the weights do not fit: {why}") from None
            self.ema.module.load_state_dict(self.net_g.state_dict())
        for key in ("bicubic_fraction",):
            if not 0.0 <= g[key] <= 1.0:
                raise ConfigError(f"config key 'gan.{key}' must be in [0, 1]")
        if g["d_init_steps"] < 0:
            raise ConfigError("config key 'gan.d_init_steps' must be >= 0")
        if g["d_reset_every"] < 0 or (g["d_reset_every"] and g["d_reset_every"] <= g["d_init_steps"]):
            raise ConfigError("config key 'gan.d_reset_every' must be 0 or more than gan.d_init_steps")

        self.adversary = Adversary(cfg["network_d"], cfg["train"], g["d_lr"], self.losses, device, dist)
        self.net_d = self.adversary.net_d
        self.d_init_steps = int(g["d_init_steps"])
        self.d_reset_every = int(g["d_reset_every"])
        self.mix_fraction = float(g["bicubic_fraction"]) if cfg["data"]["degradation"] != "bicubic" else 0.0
        self.seed = int(cfg["seed"])

    def compute_losses(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted generator terms, the adversarial ones through the discriminator with its weights frozen."""
        return self.adversary.frozen_terms(sr, hr)

    # -- one step -------------------------------------------------------------------------------------------------
    def optimize(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        lr_now = self.schedule.apply(self.opt_g, step)
        lr = bicubic_mix(batch, self.mix_fraction, self.seed, self.cfg["scale"], self.cfg["data"]["round_lr"])
        lr = lr.to(self.device, non_blocking=True)
        hr = batch["hr"].to(self.device, non_blocking=True)
        self.net_g.train()
        train_g = self._fresh_discriminator_age(step) >= self.d_init_steps  # before: its warm-up

        with torch.set_grad_enabled(train_g):
            sr = self.net_g_train(lr)
        real, fake = self.adversary.discriminate(hr, sr, train=True)
        self.opt_g.zero_grad(set_to_none=True)
        weights: dict[str, float] = {}
        if train_g:  # into the generator's weights only ...
            terms, weights = self.adversary.generator_backward(sr, hr, real, fake, list(self.net_g.parameters()))
        else:
            with torch.no_grad():
                terms = self.adversary.generator_terms(sr, hr, None, None)
        d_stats = self.adversary.discriminator_backward(real, fake)  # ... and the discriminator's into its own
        if train_g:
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), self.grad_clip)
            self.opt_g.step()
            self.ema.update(self.net_g)
        self.adversary.step(step, self.grad_clip)

        out = {"loss": float(sum(terms.values()).detach()), "lr": lr_now}
        out.update({f"l_{k}": float(v.detach()) for k, v in terms.items()})
        out.update({f"w_{k}": v for k, v in weights.items()})
        out.update(d_stats)
        return out

    def _fresh_discriminator_age(self, step: int) -> int:
        """Steps since the discriminator was made; at every ``gan.d_reset_every``-th step it first makes a fresh one
        (so this is called once per training step, from :meth:`optimize`)."""
        if not self.d_reset_every:
            return step
        since = step % self.d_reset_every
        if step > 0 and since == 0:
            self.adversary.reset([self.seed, _SEED_MIX, step])
        return since

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(self.adversary.state_dict())
        state["init"] = copy.deepcopy(self.init_info)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.adversary.load_state_dict(state)
        self.init_info = dict(state.get("init") or self.init_info)
