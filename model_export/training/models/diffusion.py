"""``diffusion``: few-step residual-shifting diffusion for SR (in the spirit of ResShift, Yue et al., NeurIPS 2023).

The diffusion runs in pixel space at the output resolution, between the HR image ``x0`` and ``y0``, the LR
upsampled (bicubic, ``F.interpolate(..., mode="bicubic", align_corners=False)``, what OpenCV's ``INTER_CUBIC``
computes in the app). With the residual ``e0 = y0 - x0`` the forward process is

    q(x_s | x0, y0) = N(x0 + eta(s) e0, kappa^2 eta(s) I),      s in [0, 1],
    eta(s) = eta_min * (eta_max / eta_min) ** (s ** power)     (ResShift's schedule, made continuous)

so ``x_1`` is ``y0`` plus noise of scale ``kappa`` and ``x_0`` the HR image. Training draws a continuous ``s`` in
[0, 1] (so any number of sampling steps uses the same net): uniformly, or for ``diffusion.log_eta_fraction`` of the
samples uniformly in ``log eta`` (``s = u ** (1 / power)``). With ResShift's power 0.3, uniform ``s`` almost never
shows the net the low-noise levels of the last step (eta(0.01) is already 7 eta_min); uniform ``log eta`` does.
The network predicts ``x0``.
Sampling with ``N`` steps visits ``s_k = (k - 1) / (N - 1)``, k = N .. 1 (``s = 1`` alone for N = 1), starting at
``x = y0 + kappa sqrt(eta(1)) eps``; each step predicts ``x0`` (clipped to [0, 1]) and samples ResShift's posterior

    x <- (eta_prev / eta) x + (alpha / eta) x0  +  kappa sqrt(eta_prev alpha / eta) eps,    alpha = eta - eta_prev,

with ``eta_prev = 0`` after the last step (the result is then the last ``x0``). A "noise scale" multiplies both
noise terms (0 = deterministic; 1 = what the model was trained for).

:class:`Denoiser` is what is trained, validated and exported: ``(x_t, y0, s) -> x0``, with EDM's preconditioning
(Karras et al., NeurIPS 2022) written for residual shifting; see its docstring.

Prior-conditioned variant (``diffusion.prior``, in the spirit of SRDiff, Li et al., Neurocomputing 2022, and
ResDiff, Shang et al., AAAI 2024): ``y0`` is the output of a frozen regression SR network (an ``invsr-model/1``
file of ``invsr-train esrgan``, e.g. ``model_rrdbnet_x4.pt``) instead of the bicubic upsample, everywhere: training,
validation, export and the app's sampler. Why: a regression net trained for PSNR already gets the predictable part
of the residual (measured: the bicubic-conditioned diffusion_x4 reaches Set5 x4 29.24 dB at its defaults, the
plain RRDBNet about 31), and with the preconditioning below an untrained denoiser returns ``y0`` at noise 0, so the
diffusion starts from the regression's PSNR floor and learns only the detail that regression averages away (a
smaller residual: set ``sigma_data`` to its measured spread). The prior runs in eval mode under ``no_grad``, its
float32 output not clipped; it is never trained (not in the optimizer, the EMA or the trained state). See
:class:`Prior` for how it is stored (model file, resume).

Data: ``data.degradation`` makes the batch's LR (``real_photo`` or ``bicubic``); ``diffusion.bicubic_fraction`` of
the samples (chosen by sample index, so resuming is exact) get the MATLAB-bicubic LR of their HR instead: one
config trains on a mix of both. Loss: the ``[loss.pixel]`` term (l1 / mse / charbonnier) between predicted and
true ``x0``, plus any other ``(sr, hr)`` term (e.g. the GAN stage's ``frequency``).

Adversarial stage (a ``[loss.*] type = "ragan"`` term; Denoising Diffusion GANs, Xiao et al., ICLR 2022): a
discriminator (``[network_d]``, learning rate ``gan.d_lr``; :class:`~model_export.training.adversary.Adversary`,
the ESRGAN GAN stage's) judges the predicted ``x0`` against the HR at every noise level. Why: a pixel loss makes
the net predict the *mean* of the clean images that fit ``x_t``, and with few steps the last prediction is made
at a noise level that still hides the fine detail (4 steps: the step before the last is at eta 0.11, noise
0.17 against the residual's 0.05), so the sampler returns that mean, the prior's blur, plus grain. Under the
adversarial term the prediction must look like a real image at every step: the noise becomes detail instead of
being averaged away. ``diffusion.init_from`` starts the denoiser (and its EMA) from a trained one, an
``invsr-model/1`` file of this family or a ``latest.pt`` checkpoint, trained with the same prior.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from invsr_desktop.engine import model_metadata as keys
from model_export.training import gan_losses  # noqa: F401  (registers the 'frequency' and 'ragan' loss terms)
from model_export.training.adversary import NETWORK_D_DEFAULTS, Adversary, split_terms
from model_export.training.config import ConfigError
from model_export.training.distributed import DistInfo
from model_export.training.ema import EMA
from model_export.training.losses import build_loss
from model_export.training.models import register_model
from model_export.training.models.base import BaseModel
from model_export.training.optim import LRSchedule, build_optimizer
from model_export.training.validation import upscale
from plugins.diffusion import Schedule as AppSchedule

_SEED_MIX = 7


@dataclass(frozen=True)
class Schedule(AppSchedule):
    """The app's noise schedule (:class:`plugins.diffusion.Schedule`: its fields, its formula, its step order) with
    what training adds: defaults, the input normaliser's floor ``sigma_data``, ``eta`` on arrays and tensors (the
    same formula, vectorised: the exported graph computes it from ``s``) and the metadata the export writes."""

    kappa: float = 2.0
    eta_min: float = 4e-4
    eta_max: float = 0.99
    power: float = 0.3
    sigma_data: float = 0.1

    @classmethod
    def from_config(cls, d: dict) -> Schedule:
        return cls(float(d["kappa"]), float(d["eta_min"]), float(d["eta_max"]), float(d["power"]),
                   float(d["sigma_data"]))  # fmt: skip

    def eta(self, s):
        """eta(s) for a float (the app's own code), a numpy array or a tensor."""
        if isinstance(s, (int, float)):
            return super().eta(s)
        ratio = math.log(self.eta_max / self.eta_min)
        if torch.is_tensor(s):
            return self.eta_min * torch.exp(ratio * s.clamp(0.0, 1.0) ** self.power)
        return self.eta_min * np.exp(ratio * np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0) ** self.power)

    def metadata(self) -> dict[str, str]:
        return {
            keys.schedule_key("kappa"): repr(self.kappa),
            keys.schedule_key("eta_min"): repr(self.eta_min),
            keys.schedule_key("eta_max"): repr(self.eta_max),
            keys.schedule_key("power"): repr(self.power),
            keys.schedule_key("sigma_data"): repr(self.sigma_data),
        }


class Denoiser(nn.Module):
    """``(x_t, y0, s) -> x0``: the U-Net inside EDM's preconditioning, written for residual shifting.

    With the residual ``r = x0 - y0`` (standard deviation ``sigma_data``) the noisy input is
    ``u = x_t - y0 = a r + sigma n``, ``a = 1 - eta(s)``, ``sigma = kappa sqrt(eta(s))``, and with
    ``v = a^2 sigma_data^2 + sigma^2``::

        x0 = y0 + c_skip u + c_out F(c_skip u / sigma_data, y0, s),
        c_skip = a sigma_data^2 / v,  c_out = sigma sigma_data / sqrt(v)

    ``c_skip u`` is the best linear guess of ``r`` from ``u`` and ``c_out`` the standard deviation of its error, so
    the net's target is at unit scale at every step. Why: at low noise ``x0`` is nearly ``x_t`` and the skip
    carries it, so the net does not spend itself copying its input; at high noise ``c_skip`` is about 0 and the net
    is a plain SR regression of ``r / sigma_data`` from ``y0``.

    The net sees that same linear guess (in units of ``sigma_data``), not EDM's ``u / sqrt(v)``: EDM's input is
    unit-variance noise whenever the noise dominates (with kappa 2 in pixel space, every step but the last), noise
    that carries nothing and must share the first convolution with the condition's few-hundredths-sized detail.
    The guess keeps what ``u`` says about ``r`` and shrinks the noise by the same factor (its variance is the
    fraction of ``u``'s variance that is signal). What was measured: nets with EDM's input, or with this one,
    trained on the 50 % real-photo mix both still predicted ``y0`` at s = 1 after 2-4 k steps; with this input and
    bicubic LRs the error at s = 1 fell within a few hundred steps. The data mix was the blocker; this input's own
    share was not isolated. All of it is computed in the graph from ``s``: the exported model takes the same three
    inputs.
    """

    def __init__(self, net: nn.Module, schedule: Schedule):
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.scale = int(net.scale)
        self.input_multiple = int(net.input_multiple)

    def forward(self, x_t: torch.Tensor, y0: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        s = s.reshape(-1)
        sd = self.schedule
        eta = sd.eta(s)[:, None, None, None]
        a, var_noise, var_data = 1.0 - eta, sd.kappa**2 * eta, sd.sigma_data**2
        v = a * a * var_data + var_noise
        guess = (a * var_data / v) * (x_t - y0)
        f = self.net(guess / sd.sigma_data, y0, s)
        return y0 + guess + torch.sqrt(var_noise * var_data / v) * f


def upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The condition ``y0``: bicubic (a = -0.75, half-pixel centres, edge pixels repeated), not clipped."""
    return F.interpolate(lr, scale_factor=float(scale), mode="bicubic", align_corners=False)


def condition(lr: torch.Tensor, scale: int, prior: nn.Module | None = None) -> torch.Tensor:
    """The condition ``y0`` of an LR batch: the frozen prior's float32 output (not clipped) when the model has one,
    else the bicubic upsample (:func:`upsample`)."""
    if prior is None:
        return upsample(lr, scale)
    with torch.no_grad():
        return prior(lr).float()


# Architectures a prior may have: an ``lr -> sr`` network that invsr-export's plain (ESRGAN) path writes as ONNX.
PRIOR_ARCHS = ("rrdbnet",)


class Prior:
    """The frozen SR network behind ``diffusion.prior`` and its record.

    The record is the network in the ``invsr-model/1`` layout (``arch``, ``arch_kwargs``, ``scale``,
    ``params_ema``, ``meta``, ``config.name``) plus ``file`` (path, sha256 and source of the file it was read from,
    what it was trained on). Being a model file's layout, :func:`model_export.checkpoints.resolve` reads it as one:
    the exporter builds and exports the prior from the copy inside the diffusion model file, never from the path,
    so a later change to the prior's file cannot silently pair other weights with the denoiser.

    Resume: the training checkpoint holds the same record (the prior is small next to Adam's moments: 3 MB for
    the 744 k-parameter RRDBNet of the PSNR stage), and a resumed run continues with that stored copy, not with
    whatever the path holds now. Why: the path may name a file that moves on (the PSNR run rewrites its
    ``model_rrdbnet_x4.pt`` every 1000 steps; a committed prior may be replaced by a better one), and a denoiser
    trained half on one prior and half on another is trained for neither. A differing file is reported, not used.
    """

    def __init__(self, record: dict[str, Any], device: torch.device | str = "cpu"):
        from model_export.checkpoints import CheckpointError, resolve

        file = record.get("file") or {}
        where = str(file.get("path") or "the stored prior")
        try:
            ckpt = resolve(record, where)
        except CheckpointError as exc:
            raise ConfigError(f"config key 'diffusion.prior': {exc}") from None
        if ckpt.arch not in PRIOR_ARCHS:
            raise ConfigError(f"config key 'diffusion.prior': {where} holds a {ckpt.arch} network; the prior must be "
                              f"an lr -> sr network ({', '.join(PRIOR_ARCHS)}), e.g. a model file of invsr-train "
                              "esrgan")
        try:
            net = ckpt.build()
        except CheckpointError as exc:
            raise ConfigError(f"config key 'diffusion.prior': {exc}") from None
        for p in net.parameters():
            p.requires_grad_(False)
        self.record = record
        self.net = net.to(device).eval()
        self.scale = int(ckpt.scale)
        self.input_multiple = int(getattr(net, "input_multiple", 1))
        self.sha256 = str(file.get("sha256", ""))
        self.path = str(file.get("path", ""))

    @classmethod
    def from_file(cls, path: str, scale: int, device: torch.device | str = "cpu") -> Prior:
        """Read the file ``path`` (``diffusion.prior``) with the GAN stage's loader (``weights_only``), checked
        against ``scale``."""
        from model_export.training.checkpoint import MODEL_FORMAT
        from model_export.training.models.esrgan_gan import load_init

        net_cfg, state, info = load_init(path, {"scale": scale, "network": {}}, key="diffusion.prior")
        options = {k: v for k, v in net_cfg.items() if k != "arch"}
        record = {
            "format": MODEL_FORMAT,
            "arch": net_cfg["arch"],
            "arch_kwargs": options,
            "scale": int(options["scale"]),
            "params_ema": {k: v.detach().clone().float() for k, v in state.items()},
            "meta": dict(info.get("training") or {}),
            "config": {"name": Path(path).stem},
            "file": {"path": str(path), "sha256": info["sha256"], "source": info["source"],
                     "trained_on": info.get("trained_on", "")},
        }
        return cls(record, device)


@torch.no_grad()
def sample(denoiser: nn.Module, lr: torch.Tensor, schedule: Schedule, steps: int, noise_scale: float = 1.0,
           generator: torch.Generator | None = None, prior: nn.Module | None = None) -> torch.Tensor:
    """The sampler (see the module doc) on a whole LR batch; returns x0 (N, 3, sH, sW) in [0, 1]. ``prior``:
    the frozen network whose output is ``y0`` (None: bicubic)."""
    y0 = condition(lr, denoiser.scale, prior)
    noise = _noise_source(y0, generator)
    x = initial_state(y0, schedule, steps, noise_scale, noise)
    return sampler_steps(denoiser, x, y0, schedule, steps, 0, steps, noise_scale, noise)


Noise = Callable[[], torch.Tensor]  # the sampler's source of standard normal noise, one y0-shaped draw per call


def _noise_source(y0: torch.Tensor, generator: torch.Generator | None) -> Noise:
    """Draws from ``generator`` (None: torch's global RNG)."""
    return lambda: torch.randn(y0.shape, generator=generator, dtype=y0.dtype).to(y0.device)


def initial_state(y0: torch.Tensor, schedule: Schedule, steps: int, noise_scale: float, noise: Noise) -> torch.Tensor:
    """The sampler's start, ``x = y0 + kappa sqrt(eta(1)) eps`` (times the noise scale)."""
    k = noise_scale * schedule.kappa
    eta = float(schedule.eta(schedule.timesteps(steps)[0]))
    return y0 + k * math.sqrt(eta) * noise() if k > 0 else y0.clone()


def sampler_steps(denoiser: nn.Module, x: torch.Tensor, y0: torch.Tensor, schedule: Schedule, steps: int,
                  first: int, stop: int, noise_scale: float, noise: Noise) -> torch.Tensor:
    """Steps ``first`` .. ``stop - 1`` (level indices) of the ``steps``-step sampler from ``x``, the state at level
    ``first``: the state at level ``stop``, or with ``stop == steps`` the image (the last ``x0``). Not under
    ``no_grad`` (:func:`sample` is): the trajectory-aware adversarial stage backpropagates through its last steps."""
    ss = schedule.timesteps(steps)
    etas = [float(schedule.eta(s)) for s in ss] + [0.0]
    k = noise_scale * schedule.kappa
    for i in range(first, stop):
        s = torch.full((y0.shape[0],), ss[i], dtype=y0.dtype, device=y0.device)
        x0 = denoiser(x, y0, s).clamp(0.0, 1.0)
        eta, prev = etas[i], etas[i + 1]
        if prev == 0.0:
            return x0
        alpha = eta - prev
        x = (prev / eta) * x + (alpha / eta) * x0
        if k > 0:
            x = x + k * math.sqrt(prev * alpha / eta) * noise()
    return x


def lr_multiple(input_multiple: int, scale: int) -> int:
    """The LR side multiple that makes the output side a multiple of ``input_multiple``."""
    return input_multiple // math.gcd(input_multiple, scale)


@register_model("diffusion")
class DiffusionModel(BaseModel):
    config_defaults: dict[str, Any] = {
        "network": {"arch": "diffusion_unet"},
        "loss": {"pixel": {"type": "l1", "weight": 1.0}},
        "diffusion": {
            "kappa": 2.0,  # noise scale of the forward process
            "eta_min": 4e-4,  # eta at s = 0 (ResShift: min((0.04 / kappa)^2, 0.001))
            "eta_max": 0.99,  # eta at s = 1
            "power": 0.3,  # the schedule's exponent p (ResShift's)
            "sigma_data": 0.1,  # standard deviation of HR - y0 (the preconditioning's data scale)
            "prior": "",  # frozen lr -> sr model file (invsr-model/1) whose output is y0; "" = bicubic upsample
            "log_eta_fraction": 0.5,  # samples whose s is drawn uniformly in log eta (else uniformly in s)
            "bicubic_fraction": 0.5,  # samples whose LR is replaced by the MATLAB-bicubic LR of their HR
            "default_steps": 4,  # the app's default number of steps (model metadata)
            "eval_steps": 4,  # steps used by validation
            "eval_noise": 1.0,  # noise scale used by validation (seeded)
            "init_from": "",  # a trained denoiser to start from (invsr-model/1 file or latest.pt); "" = fresh
            "init_new_prior": False,  # init_from may have been trained with another prior: a fine-tune onto this one
        },
        # used with a [loss.*] term of type "ragan". max_s < 1: the discriminator judges only the first half of each
        # batch, whose timesteps are drawn in [0, max_s] (the sampler's last, low-noise levels; see judged_count)
        # trajectory_steps > 0: that half is instead the sampler's own image (trajectory_prediction)
        "gan": {"d_lr": 1e-4, "d_init_steps": 0, "max_s": 1.0, "trajectory_steps": 0},
        "network_d": dict(NETWORK_D_DEFAULTS),
    }

    def __init__(self, cfg: dict, device: torch.device, dist: DistInfo):
        super().__init__(cfg, device, dist)
        net = self.build_network()
        if not hasattr(net, "input_multiple") or self.arch != "diffusion_unet":
            raise ConfigError(f"config key 'network.arch': the diffusion family needs diffusion_unet, "
                              f"not {self.arch!r}")
        o = cfg["diffusion"]
        if not 0 < o["eta_min"] < o["eta_max"] < 1:
            raise ConfigError("config keys 'diffusion.eta_min' / 'eta_max' must satisfy 0 < eta_min < eta_max < 1")
        if o["kappa"] <= 0 or o["power"] <= 0 or o["sigma_data"] <= 0:
            raise ConfigError("config keys 'diffusion.kappa', 'power' and 'sigma_data' must be > 0")
        for key in ("bicubic_fraction", "log_eta_fraction"):
            if not 0.0 <= o[key] <= 1.0:
                raise ConfigError(f"config key 'diffusion.{key}' must be in [0, 1]")
        self.opts = o
        self.prior = Prior.from_file(o["prior"], int(cfg["scale"]), device) if o["prior"] else None
        self.schedule = Schedule.from_config(o)
        self.net = net.to(device)
        self.denoiser = Denoiser(self.net, self.schedule)
        t = cfg["train"]
        self.ema = EMA(self.net, t["ema_decay"], t["ema_warmup"])
        self.train_module = DistributedDataParallel(self.denoiser) if dist.enabled else self.denoiser
        self.losses: dict[str, tuple[nn.Module, float]] = {}
        for name, term in cfg["loss"].items():
            module, weight = build_loss(name, term)
            if weight != 0:
                self.losses[name] = (module.to(device), weight)
        adversarial, pixel = split_terms(self.losses)
        if "pixel" not in pixel:
            raise ConfigError("config table 'loss' needs the 'pixel' term with a non-zero weight")
        self.adversary = None
        if adversarial:
            self.adversary = Adversary(cfg["network_d"], t, cfg["gan"]["d_lr"], self.losses, device, dist)
        self.d_init_steps = int(cfg["gan"]["d_init_steps"])
        self.gan_max_s = float(cfg["gan"]["max_s"])
        if not 0.0 < self.gan_max_s <= 1.0:
            raise ConfigError("config key 'gan.max_s' must be in (0, 1]")
        self.trajectory_steps = int(cfg["gan"]["trajectory_steps"])
        if self.trajectory_steps < 0 or (self.trajectory_steps and self.adversary is None):
            raise ConfigError("config key 'gan.trajectory_steps' must be >= 0, and > 0 only with a 'ragan' loss term")
        if self.trajectory_steps and dist.enabled:
            raise ConfigError("config key 'gan.trajectory_steps': one process only (its forwards are not DDP's)")
        if o["init_from"]:
            self.init_from(o["init_from"])
        self.opt = build_optimizer(self.net.parameters(), t)
        self.lr_schedule = LRSchedule(t)
        self.grad_clip = t["grad_clip"]
        self.seed = int(cfg["seed"])
        self.mix = cfg["data"]["degradation"] != "bicubic" and o["bicubic_fraction"] > 0

    # -- data mix -------------------------------------------------------------------------------------------------
    def mixed_lr(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's LR with ``bicubic_fraction`` of the samples (by index) replaced by the bicubic LR of the HR."""
        lr = batch["lr"]
        if not self.mix:
            return lr
        from model_export.data.dataset import make_lr

        indices = batch.get("index")
        if indices is None:
            return lr
        lr = lr.clone()
        fraction = self.opts["bicubic_fraction"]
        scale = self.cfg["scale"]
        round_lr = self.cfg["data"]["round_lr"]
        for j, index in enumerate(torch.as_tensor(indices).tolist()):
            if np.random.default_rng([self.seed, _SEED_MIX, int(index)]).random() < fraction:
                hr = batch["hr"][j].permute(1, 2, 0).double().numpy()
                lr[j] = torch.from_numpy(make_lr(hr, scale, round_lr).transpose(2, 0, 1).copy())
        return lr

    # -- training ---------------------------------------------------------------------------------------------------
    def draw_s(self, n: int) -> torch.Tensor:
        """Timesteps for a batch: uniform in s, or (``log_eta_fraction``) uniform in log eta. Global torch RNG, so a
        resumed run draws what the uninterrupted one would."""
        u = torch.rand(n, device=self.device)
        pick = torch.rand(n, device=self.device) < self.opts["log_eta_fraction"]
        s = torch.where(pick, u ** (1.0 / self.schedule.power), u)
        k = self.judged_count(n)
        if k < n:
            s[:k] *= self.gan_max_s
        return s

    def judged_count(self, n: int) -> int:
        """How many of a batch of ``n`` the discriminator judges: all of them, or with ``gan.max_s`` < 1 the first
        half, drawn at the low noise levels (or with ``gan.trajectory_steps`` made by the sampler). Why: the
        few-step sampler's image is made at its low levels (4 steps: s = 1/3, then s = 0, nearly the identity);
        asking the predictions from high noise to look real asks for detail the input cannot hold, and the L1
        term then pulls them back to the mean (diffusion_gan_x4 at every level changed nothing measurable). The
        rest of the batch keeps every level's L1 training."""
        if self.adversary is None or (self.gan_max_s >= 1.0 and not self.trajectory_steps):
            return n
        return (n + 1) // 2

    def trajectory_prediction(self, y0: torch.Tensor) -> torch.Tensor:
        """The sampler's own image for ``y0``: its ``gan.trajectory_steps`` steps at noise 1 with the denoiser being
        trained, the gradient through the last two predictions (with the schedule's eta_min the last step, at
        s = 0, is nearly the identity: the image is made by the one before it).

        Why: at a low level the forward process hands the net ``x0`` itself plus a little noise, so the prediction
        there is already sharp and a discriminator on it has nothing to ask for (diffusion_gan_k01_x4 with
        ``max_s``: 4,300 steps, its output's sharpness unchanged). In sampling, that level's input is built from
        the earlier predictions, blurred means; the net never saw such an input in training (exposure bias). Here
        the L1 and adversarial terms judge what the app shows, made from what the sampler feeds the net."""
        n = self.trajectory_steps
        noise = _noise_source(y0, None)  # the global RNG: a resumed run draws the same
        tail = min(2, n)
        with torch.no_grad():
            x = initial_state(y0, self.schedule, n, 1.0, noise)
            x = sampler_steps(self.denoiser, x, y0, self.schedule, n, 0, n - tail, 1.0, noise)
        return sampler_steps(self.denoiser, x, y0, self.schedule, n, n - tail, n, 1.0, noise)

    def optimize(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        lr_now = self.lr_schedule.apply(self.opt, step)
        lr = self.mixed_lr(batch).to(self.device, non_blocking=True)
        hr = batch["hr"].to(self.device, non_blocking=True)
        y0 = condition(lr, self.cfg["scale"], self.prior_net())
        s = self.draw_s(hr.shape[0])
        eta = self.schedule.eta(s)[:, None, None, None]
        x_t = hr + eta * (y0 - hr) + self.schedule.kappa * eta.sqrt() * torch.randn_like(hr)
        self.net.train()
        train_g = self.adversary is None or step >= self.d_init_steps
        k = self.judged_count(hr.shape[0]) if self.trajectory_steps else 0
        with torch.set_grad_enabled(train_g):
            pred = self.train_module(x_t[k:], y0[k:], s[k:])
            if k:
                pred = torch.cat([self.trajectory_prediction(y0[:k]), pred])
        self.opt.zero_grad(set_to_none=True)
        out: dict[str, float] = {"lr": lr_now}
        if self.adversary is None:
            terms = {name: weight * module(pred, hr) for name, (module, weight) in self.losses.items()}
            sum(terms.values()).backward()
        else:
            terms = self.adversarial_backward(pred, hr, train_g, out)
        if train_g:
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
            self.opt.step()
            self.ema.update(self.net)
        if self.adversary is not None:
            self.adversary.step(step, self.grad_clip)
        out["loss"] = float(sum(terms.values()).detach())
        if len(terms) > 1:
            out.update({f"l_{k}": float(v.detach()) for k, v in terms.items()})
        return out

    def adversarial_backward(self, pred: torch.Tensor, hr: torch.Tensor, train_g: bool,
                             out: dict[str, float]) -> dict[str, torch.Tensor]:
        """The generator's terms into the denoiser's weights (unless the discriminator is warming up) and the
        discriminator's loss into its own, from one forward of the discriminator (on the judged part of the batch,
        :meth:`judged_count`); the weights and the discriminator's figures go into ``out``."""
        adversary = self.adversary
        judged = self.judged_count(pred.shape[0])
        real, fake = adversary.discriminate(hr[:judged], pred[:judged], train=True)
        if train_g:
            terms, weights = adversary.generator_backward(pred, hr, real, fake, list(self.net.parameters()))
            out.update({f"w_{k}": v for k, v in weights.items()})
        else:
            with torch.no_grad():
                terms = adversary.generator_terms(pred, hr, None, None)
        out.update(adversary.discriminator_backward(real, fake))
        return terms

    def init_from(self, path: str) -> None:
        """Start the denoiser and its EMA from a trained one (``diffusion.init_from``): the EMA weights of an
        ``invsr-model/1`` file of this family or of a ``latest.pt`` checkpoint. Its network and prior must be
        this run's (the denoiser learnt to refine that prior's ``y0``; a different network does not load), unless
        ``diffusion.init_new_prior`` says the run is a fine-tune onto a new prior: ``y0`` is the same kind of input
        (an upscale of the LR), so the old denoiser is a better start than fresh weights."""
        from model_export.training import checkpoint as ckpt_io

        key = "config key 'diffusion.init_from'"
        try:
            state = ckpt_io.load(path)
        except (OSError, RuntimeError, ValueError) as exc:
            from model_export.start_files import history_hint

            raise ConfigError(f"{key}: cannot read {path}: {exc}.{history_hint(path)}") from None
        if state.get("format") == ckpt_io.MODEL_FORMAT and state.get("arch") == self.arch:
            weights, prior = state["params_ema"], state.get("prior")
        elif state.get("format") == ckpt_io.TRAIN_FORMAT and state.get("family") == "diffusion":
            weights, prior = state["model"]["ema"]["params"], state["model"].get("prior")
        else:
            raise ConfigError(f"{key}: {path} is neither a diffusion model file nor a diffusion checkpoint")
        theirs = ((prior or {}).get("file") or {}).get("sha256", "")
        ours = self.prior.sha256 if self.prior is not None else ""
        if not self.opts["init_new_prior"] and (bool(prior) != (self.prior is not None) or theirs != ours):
            raise ConfigError(f"{key}: {path} was trained with another prior ({theirs[:12] or 'none'}) than "
                              f"diffusion.prior ({ours[:12] or 'none'})")
        try:
            self.net.load_state_dict(weights)
        except RuntimeError as exc:
            raise ConfigError(f"{key}: the weights do not fit: {str(exc).splitlines()[0]}") from None
        self.ema.module.load_state_dict(self.net.state_dict())

    def prior_net(self) -> nn.Module | None:
        """The frozen prior network (None without ``diffusion.prior``)."""
        return None if self.prior is None else self.prior.net

    # -- inference / export -------------------------------------------------------------------------------------
    def eval_net(self) -> nn.Module:
        return self.ema.module

    def eval_denoiser(self) -> Denoiser:
        return Denoiser(self.ema.module.eval(), self.schedule)

    def run_eval(self, lr: torch.Tensor) -> torch.Tensor:
        """The sampler at ``diffusion.eval_steps`` with a fixed seed (repeatable validation)."""
        denoiser = self.eval_denoiser()
        steps, noise = int(self.opts["eval_steps"]), float(self.opts["eval_noise"])
        schedule = self.schedule
        prior = self.prior_net()

        class _Sampler(nn.Module):
            def forward(self, x):
                g = torch.Generator(device="cpu").manual_seed(0)
                return sample(denoiser, x, schedule, steps, noise, g, prior)

        scale = self.cfg["scale"]
        multiple = lr_multiple(denoiser.input_multiple, scale)
        if self.prior is not None:
            multiple = math.lcm(multiple, self.prior.input_multiple)
        return upscale(_Sampler(), lr.to(self.device), scale, multiple)

    def export_payload(self) -> dict[str, Any]:
        """The model file's network; with a prior also ``prior``, its record (see :class:`Prior`), which the
        training loop writes into the model file next to ``params_ema``."""
        out = super().export_payload()
        if self.prior is not None:
            out["prior"] = self.prior.record
        return out

    def checkpoint_parts(self) -> dict[str, Any]:
        return {"net": self.net, "ema": self.ema, "opt": self.opt, "schedule": self.lr_schedule}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.prior is not None:
            state["prior"] = self.prior.record  # not trained: the copy a resumed run continues with
        if self.adversary is not None:
            state.update(self.adversary.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_prior_state(state.get("prior"))
        super().load_state_dict(state)
        if self.adversary is not None:
            if "net_d" not in state:
                raise ConfigError("the config has an adversarial term, the checkpoint has no discriminator: start a "
                                  "new run with diffusion.init_from naming the checkpoint")
            self.adversary.load_state_dict(state)

    def load_prior_state(self, record: dict[str, Any] | None) -> None:
        """Continue with the prior the checkpoint was trained with (see :class:`Prior`); a run and a checkpoint that
        disagree on having one are an error."""
        if (record is None) != (self.prior is None):
            had = "with a prior" if record is not None else "without a prior"
            raise ConfigError(f"config key 'diffusion.prior' is {self.opts['prior']!r}, but the checkpoint was "
                              f"trained {had}: the condition y0 cannot change within a run (start a new one)")
        if record is None or self.prior is None:
            return
        stored = Prior(record, self.device)
        if stored.sha256 != self.prior.sha256:
            print(f"note: diffusion.prior: {self.prior.path} (sha256 {self.prior.sha256[:12]}) is not the prior this "
                  f"run was trained with ({stored.path}, sha256 {stored.sha256[:12]}); resuming with the copy stored "
                  "in the checkpoint", file=sys.stderr)
        self.prior = stored
