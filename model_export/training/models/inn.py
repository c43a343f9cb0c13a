"""``inn``: an invertible rescaling network (``irn``) trained with IRN's losses plus a term for ordinary photos.

One step on a batch ``{"hr", "lr"}`` (``lr`` from the data's degradation: the true MATLAB-bicubic LR, or a
"real photo" LR):

- forward ``hr -> (lr_f, z)``;
- ``guide``: ``lr_f`` against the bicubic LR (IRN's LR guidance; the batch's LR when the degradation is bicubic,
  else PyTorch's antialiased bicubic of ``hr``);
- ``distr``: ``z`` towards 0 (IRN's distribution term: the mean of ``z^2``, i.e. the loss's ``(z, 0)``);
- ``pixel``: ``hr`` reconstructed by the inverse from ``(Q(lr_f), sigma * eps)``: the shrink-and-restore round trip.
  ``Q`` rounds to 8 bit with a straight-through gradient (the stored small image is 8-bit);
- ``lr_pixel``: ``hr`` reconstructed by the inverse from the batch's LR (an ordinary photo's LR, which the forward
  never produced) and ``sigma * eps``: what makes "upscale any photo" work.

``sigma`` is the noise scale of the sampled z: 0 for ``inn.noise_warmup`` steps (a z = 0 warm-up: trained as IRN
is from the start, with a unit-variance z, the net fell below bicubic on this CPU budget), then growing linearly to
``inn.noise_max`` over ``inn.noise_ramp`` steps, so the inverse learns to accept sampled z without losing what the
warm-up gave. The app's "temperature" multiplies a unit normal z, so temperatures in [0, noise_max] stay within
what training saw. ``inn.zero_z_frac`` reconstructs that share of the samples at z = 0 even when sigma > 0: the
app restores at z = 0, and without it that path drifted while the training loss stayed flat. Each loss term is a ``[loss.<name>]`` table (``type``, ``weight``) like every family's.

``inn.jpeg_prob`` makes the shrink survive JPEG (SAIN's idea, issue 18): that fraction of the samples sends its
8-bit small image through :func:`~model_export.degradations.diff_jpeg.jpeg_simulate` at a quality drawn from
``inn.jpeg_quality`` (4:2:0 chroma below 90, as the app saves) before the restore, so the forward learns a small
image that compresses well and the inverse learns to undo what JPEG leaves. ``inn.val_jpeg`` adds, per quality,
the held-out round trip through Pillow's real JPEG (``val_round_trip_jpeg<q>``) and its bicubic baseline from the
same JPEG (``val_bicubic_jpeg<q>``).

``inn.hr_noise_prob`` adds sensor-like noise to that share of the HR patches before the forward (Gaussian, up to
``inn.hr_noise_max`` levels of 255, per channel or grey): trained on clean images only, the x4 shrinks turned the
pixel noise of a phone photo into a colour cast of their small image (irn_x4_v3: -17 levels of green at sigma 4).
The guide term still targets the clean bicubic LR, so the forward learns to keep the small image's colour (and to
leave the noise out of it); the round trip restores the noisy HR. ``inn.val_hr_noise`` (sigma in levels, 0 = off)
adds ``val_lr_shift_noise``, the mean over held-out images of the largest per-channel mean shift of the small image
from the noisy HR's, in levels, and ``val_round_trip_noise``.

``inn.init_from`` starts a larger net from a trained smaller one (:meth:`IRNet.grow_from`: the same function at
step 0), and validation also scores the shrink-and-restore round trip (``val_round_trip``), the number the INN is
bundled by.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from model_export.degradations.diff_jpeg import SUBSAMPLE_BELOW, jpeg_simulate, pillow_jpeg
from model_export.training.config import ConfigError
from model_export.training.distributed import DistInfo
from model_export.training.ema import EMA
from model_export.training.losses import build_loss
from model_export.training.models import register_model
from model_export.training.models.base import BaseModel
from model_export.training.optim import LRSchedule, build_optimizer
from model_export.training.validation import upscale

TERMS = ("pixel", "guide", "distr", "lr_pixel")


def quantize_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to 8 bit (clamped to [0, 1]) in the forward pass, identity gradient."""
    q = torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0
    return x + (q - x).detach()


def noise_scale(step: int, warmup: int, ramp: int, top: float) -> float:
    """0 during the warm-up, then linear up to ``top`` over ``ramp`` steps (a step when ``ramp`` is 0)."""
    if step < warmup:
        return 0.0
    if ramp <= 0:
        return float(top)
    return float(top) * min(1.0, (step - warmup + 1) / ramp)


def random_jpeg(lr: torch.Tensor, prob: float, qualities: tuple[int, int]) -> torch.Tensor:
    """``lr`` with a ``prob`` fraction of its samples (drawn from torch's RNG) JPEG-simulated at a uniform quality."""
    if prob <= 0:
        return lr
    b = lr.shape[0]
    chosen = torch.rand(b) < prob
    if not bool(chosen.any()):
        return lr
    quality = torch.randint(int(qualities[0]), int(qualities[1]) + 1, (b,))
    coded = jpeg_simulate(lr, quality, quality < SUBSAMPLE_BELOW)
    return torch.where(chosen.to(lr.device).reshape(b, 1, 1, 1), coded, lr)


def add_hr_noise(hr: torch.Tensor, prob: float, max_levels: float) -> torch.Tensor:
    """``hr`` with a ``prob`` share of its samples given Gaussian noise of a uniform std in [0, ``max_levels``] / 255,
    independent per channel (colour noise) in half of them and shared by the channels (grey) in the rest; clamped
    to [0, 1] as a saved photo is."""
    if prob <= 0 or max_levels <= 0:
        return hr
    b = hr.shape[0]
    chosen = (torch.rand(b, 1, 1, 1) < prob).to(hr)
    sigma = torch.rand(b, 1, 1, 1).to(hr) * (max_levels / 255.0) * chosen
    colour = torch.randn_like(hr)
    grey = torch.randn_like(hr[:, :1]).expand_as(hr)
    use_grey = (torch.rand(b, 1, 1, 1) < 0.5).to(hr)
    noise = colour * (1 - use_grey) + grey * use_grey
    return (hr + noise * sigma).clamp(0.0, 1.0)


def lr_colour_shift(lr: torch.Tensor, hr: torch.Tensor) -> float:
    """The largest per-channel difference of mean colour between a small image and its HR, in levels of 255."""
    return float((lr.mean(dim=(0, 2, 3)) - hr.mean(dim=(0, 2, 3))).abs().max()) * 255.0


class _Both(nn.Module):
    """``forward(hr, lr_in, sigma_own, sigma_in) -> (lr_f, z, hr_own, hr_in)``: one module for DDP."""

    def __init__(self, net: nn.Module, quantize: bool, jpeg_prob: float = 0.0, jpeg_quality=(50, 95),
                 zero_z_frac: float = 0.0):  # fmt: skip
        super().__init__()
        self.net = net
        self.quantize = quantize
        self.jpeg_prob = float(jpeg_prob)
        self.jpeg_quality = tuple(jpeg_quality)
        self.zero_z_frac = float(zero_z_frac)

    def forward(self, hr, lr_in, sigma_own: float, sigma_in: float, need_in: bool):
        lr_f, z = self.net(hr)
        lr_q = quantize_ste(lr_f) if self.quantize else lr_f
        lr_q = random_jpeg(lr_q, self.jpeg_prob, self.jpeg_quality)
        hr_own = self.net.inverse(lr_q, self.sample_z(z, sigma_own))
        hr_in = None
        if need_in:
            hr_in = self.net.inverse(lr_in, self.sample_z(z, sigma_in))
        return lr_f, z, hr_own, hr_in

    def sample_z(self, z: torch.Tensor, sigma: float) -> torch.Tensor | None:
        """``sigma`` * N(0, 1) shaped like ``z``, with a ``zero_z_frac`` share of the samples at z = 0.

        The app restores at z = 0, so that path is trained directly: with every sample's z drawn at sigma, nothing
        holds the z = 0 inverse, and it drifted away while the training loss stayed flat (runs inn_x4_large and
        inn_x4_s040, see model_export/configs/inn_x4.toml)."""
        if sigma <= 0:
            return None
        noise = torch.randn_like(z) * sigma
        if self.zero_z_frac > 0:
            keep = torch.rand(z.shape[0], 1, 1, 1, device=z.device) >= self.zero_z_frac
            noise = noise * keep.to(noise.dtype)
        return noise


@register_model("inn")
class INNModel(BaseModel):
    config_defaults: dict[str, Any] = {
        "network": {"arch": "irn"},
        "loss": {"pixel": {"type": "l1", "weight": 1.0}},
        "inn": {
            "noise_warmup": 2000,  # steps with z = 0 in the reconstructions
            "noise_ramp": 4000,  # then sigma grows linearly to noise_max over this many steps
            "noise_max": 1.0,  # final std of the sampled z (the app's temperature 1)
            "lr_noise": True,  # the lr_pixel term samples z at the same sigma (else z = 0)
            "quantize_lr": True,  # round the forward LR to 8 bit (straight-through) before the inverse
            "eval_temperature": 0.0,  # validation: inverse on the bicubic LR with this z scale (0 = mean)
            "init_from": "",  # a trained (smaller) irn of this scale to grow from: model file or latest.pt
            "zero_z_frac": 0.0,  # fraction of samples reconstructed at z = 0 (the app's restore) once sigma > 0
            "jpeg_prob": 0.0,  # fraction of samples whose small image is JPEG-simulated before the restore
            "jpeg_quality": [50, 95],  # the simulated quality, uniform over this range (inclusive)
            "val_jpeg": [],  # JPEG qualities at which validation also scores the round trip (real Pillow JPEG)
            "hr_noise_prob": 0.0,  # fraction of HR patches given sensor-like noise before the forward
            "hr_noise_max": 12.0,  # its largest std, in levels of 255 (uniform in [0, this])
            "val_hr_noise": 0.0,  # validation: also the small image's colour shift and the round trip at this noise
            "train_only": "",  # "prenet": train only the network's JPEG prenet, the INN itself stays as it is
        },
    }

    def __init__(self, cfg: dict, device: torch.device, dist: DistInfo):
        super().__init__(cfg, device, dist)
        self.net = self.build_network().to(device)
        if not hasattr(self.net, "inverse"):
            raise ConfigError(f"config key 'network.arch': {self.arch!r} is not invertible (the inn family needs irn)")
        self.opts = cfg["inn"]
        if self.opts["init_from"]:
            self.init_from(self.opts["init_from"])
        self.degradation = cfg["data"]["degradation"]
        t = cfg["train"]
        self.ema = EMA(self.net, t["ema_decay"], t["ema_warmup"])
        quality = self.opts["jpeg_quality"]
        if not (isinstance(quality, list) and len(quality) == 2 and 1 <= quality[0] <= quality[1] <= 100):
            raise ConfigError(f"config key 'inn.jpeg_quality': want [low, high] within 1-100, got {quality!r}")
        if not 0.0 <= float(self.opts["jpeg_prob"]) <= 1.0:
            raise ConfigError(f"config key 'inn.jpeg_prob': want a fraction in [0, 1], got {self.opts['jpeg_prob']!r}")
        if not 0.0 <= float(self.opts["hr_noise_prob"]) <= 1.0:
            got = self.opts["hr_noise_prob"]
            raise ConfigError(f"config key 'inn.hr_noise_prob': want a fraction in [0, 1], got {got!r}")
        if float(self.opts["hr_noise_max"]) < 0 or float(self.opts["val_hr_noise"]) < 0:
            raise ConfigError("config keys 'inn.hr_noise_max' and 'inn.val_hr_noise': want levels >= 0")
        if not 0.0 <= float(self.opts["zero_z_frac"]) <= 1.0:
            raise ConfigError(f"config key 'inn.zero_z_frac': want a fraction in [0, 1], got {self.opts['zero_z_frac']!r}")
        both = _Both(self.net, self.opts["quantize_lr"], self.opts["jpeg_prob"], quality, self.opts["zero_z_frac"])
        self._bicubic_jpeg: dict[int, float] = {}  # validation baselines: the same every time
        self.train_module = DistributedDataParallel(both) if dist.enabled else both
        self.losses: dict[str, tuple[nn.Module, float]] = {}
        for name, term in cfg["loss"].items():
            module, weight = build_loss(name, term)
            if weight == 0:
                continue
            if name not in TERMS:
                raise ConfigError(f"config table 'loss.{name}': the inn family's terms are {', '.join(TERMS)}")
            self.losses[name] = (module.to(device), weight)
        if "pixel" not in self.losses and "lr_pixel" not in self.losses:
            raise ConfigError("config table 'loss' needs a reconstruction term (pixel or lr_pixel) with a weight")
        self.opt = build_optimizer(self._trained_parameters(), t)
        self.schedule = LRSchedule(t)
        self.grad_clip = t["grad_clip"]

    def _trained_parameters(self) -> list[nn.Parameter]:
        """Every parameter, or with ``inn.train_only = "prenet"`` only the JPEG prenet's: the shrink and the exact
        inverse stay the grown model's, so its lossless round trip is kept and only the restore of a JPEG learns."""
        only = self.opts["train_only"]
        if not only:
            return list(self.net.parameters())
        if only != "prenet":
            raise ConfigError(f"config key 'inn.train_only': only \"prenet\" is known, got {only!r}")
        if getattr(self.net, "prenet", None) is None:
            raise ConfigError("config key 'inn.train_only': the network has no prenet (set network.jpeg_prenet)")
        for p in self.net.parameters():
            p.requires_grad_(False)
        trained = list(self.net.prenet.parameters())
        for p in trained:
            p.requires_grad_(True)
        return trained

    def init_from(self, path: str) -> None:
        """Grow this run's net from the EMA weights of a trained irn (``inn.init_from``), before the EMA is made."""
        from model_export.training import checkpoint as ckpt_io

        key = "config key 'inn.init_from'"
        try:
            state = ckpt_io.load(path)
        except (OSError, RuntimeError, ValueError) as exc:
            from model_export.start_files import history_hint

            raise ConfigError(f"{key}: cannot read {path}: {exc}.{history_hint(path)}") from None
        if state.get("format") == ckpt_io.MODEL_FORMAT and state.get("arch") == "irn":
            weights, scale = state["params_ema"], state.get("scale")
        elif state.get("format") == ckpt_io.TRAIN_FORMAT and state.get("family") == "inn":
            weights, scale = state["model"]["ema"]["params"], state["config"]["scale"]
        else:
            raise ConfigError(f"{key}: {path} is neither an irn model file nor an inn checkpoint")
        if int(scale) != int(self.cfg["scale"]):
            raise ConfigError(f"{key}: {path} is a x{scale} model, but 'scale' is {self.cfg['scale']}")
        try:
            self.net.grow_from(weights)
        except ValueError as exc:
            raise ConfigError(f"{key}: {path} does not fit in [network]: {exc}") from None

    def sigma(self, step: int) -> float:
        o = self.opts
        return noise_scale(step, o["noise_warmup"], o["noise_ramp"], o["noise_max"])

    def guide_target(self, hr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        if self.degradation == "bicubic":
            return lr
        s = self.cfg["scale"]
        with torch.no_grad():
            return F.interpolate(hr, size=(hr.shape[2] // s, hr.shape[3] // s), mode="bicubic",
                                 align_corners=False, antialias=True)  # fmt: skip

    def optimize(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        lr_now = self.schedule.apply(self.opt, step)
        lr = batch["lr"].to(self.device, non_blocking=True)
        hr = batch["hr"].to(self.device, non_blocking=True)
        hr_fwd = add_hr_noise(hr, float(self.opts["hr_noise_prob"]), float(self.opts["hr_noise_max"]))
        sigma = self.sigma(step)
        self.net.train()
        need_in = "lr_pixel" in self.losses
        lr_f, z, hr_own, hr_in = self.train_module(
            hr_fwd, lr, sigma, sigma if self.opts["lr_noise"] else 0.0, need_in
        )
        terms: dict[str, torch.Tensor] = {}
        for name, (module, weight) in self.losses.items():
            if name == "pixel":
                terms[name] = weight * module(hr_own, hr_fwd)
            elif name == "guide":
                terms[name] = weight * module(lr_f, self.guide_target(hr, lr))
            elif name == "distr":
                terms[name] = weight * module(z, torch.zeros_like(z))
            else:
                terms[name] = weight * module(hr_in, hr)
        total = sum(terms.values())
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.net.parameters() if p.requires_grad], self.grad_clip)
        self.opt.step()
        self.ema.update(self.net)
        out = {"loss": float(total.detach()), "lr": lr_now, "sigma": sigma}
        out.update({f"l_{k}": float(v.detach()) for k, v in terms.items()})
        return out

    def eval_net(self) -> nn.Module:
        return self.ema.module

    def run_eval(self, lr: torch.Tensor) -> torch.Tensor:
        """The inverse on an ordinary (bicubic) LR, z = ``inn.eval_temperature`` * N(0, 1) (seeded: repeatable)."""
        net = self.ema.module.eval()
        temperature = float(self.opts["eval_temperature"])

        class _Up(nn.Module):
            def forward(self, x):
                z = None
                if temperature > 0:
                    g = torch.Generator(device="cpu").manual_seed(0)
                    z = torch.randn((x.shape[0], net.z_channels, *x.shape[2:]), generator=g).to(x) * temperature
                return net.inverse(x, z)

        return upscale(_Up(), lr.to(self.device), self.cfg["scale"], 1)

    def validation_extras(self, val_set) -> dict[str, float]:
        """``val_round_trip``: mean PSNR-Y of shrink (8 bit) and restore at z = 0 over the held-out images; per
        ``inn.val_jpeg`` quality the same through a real JPEG of the small image, and bicubic from that JPEG.
        ``val_small_psnr``: the 8-bit small image against the MATLAB-bicubic one (PSNR-Y): the picture a user shares,
        which a looser ``loss.guide`` buys round-trip decibels with."""
        if not val_set.hr:
            return {}
        out = {"val_round_trip": self._mean_round_trip(val_set, None), "val_small_psnr": self._mean_small(val_set)}
        if float(self.opts["val_hr_noise"]) > 0:
            out.update(self._noisy_round_trip(val_set, float(self.opts["val_hr_noise"])))
        for q in self.opts["val_jpeg"]:
            out[f"val_round_trip_jpeg{q}"] = self._mean_round_trip(val_set, int(q))
            if q not in self._bicubic_jpeg:
                self._bicubic_jpeg[q] = _mean_bicubic_from_jpeg(val_set, self.cfg["scale"], int(q))
            out[f"val_bicubic_jpeg{q}"] = self._bicubic_jpeg[q]
        return out

    def _mean_round_trip(self, val_set, quality: int | None) -> float:
        from model_export.training.validation import psnr_y, to_uint8

        scores = []
        for hr in val_set.hr:
            x = torch.tensor(hr).permute(2, 0, 1).unsqueeze(0).float() / 255.0
            scores.append(psnr_y(to_uint8(self.round_trip(x, quality)), hr, self.cfg["scale"]))
        return float(np.mean(scores))

    @torch.inference_mode()
    def _mean_small(self, val_set) -> float:
        from model_export.training.validation import psnr_y, to_uint8

        net, scores = self.ema.module.eval(), []
        for lr, hr in zip(val_set.lr, val_set.hr):
            small, _ = net(torch.tensor(hr).permute(2, 0, 1).unsqueeze(0).float().to(self.device) / 255.0)
            scores.append(psnr_y(to_uint8(small), to_uint8(lr), 0))
        return float(np.mean(scores))

    @torch.inference_mode()
    def _noisy_round_trip(self, val_set, levels: float) -> dict[str, float]:
        """Shrink each held-out HR with seeded colour noise of ``levels`` std: the small image's colour shift
        (:func:`lr_colour_shift`) and the 8-bit round trip's PSNR-Y against the noisy HR, both averaged."""
        from model_export.training.validation import psnr_y, to_uint8

        net = self.ema.module.eval()
        g = torch.Generator().manual_seed(0)
        shifts, scores = [], []
        for hr in val_set.hr:
            x = torch.tensor(hr).permute(2, 0, 1).unsqueeze(0).float() / 255.0
            x = torch.round((x + torch.randn(x.shape, generator=g) * levels / 255.0).clamp(0, 1) * 255.0) / 255.0
            lr, _ = net(x.to(self.device))
            shifts.append(lr_colour_shift(lr.clamp(0, 1), x.to(self.device)))
            lr = torch.round(lr.clamp(0, 1) * 255.0) / 255.0
            noisy = to_uint8(x.to(self.device))
            scores.append(psnr_y(to_uint8(net.inverse(lr, None)), noisy, self.cfg["scale"]))
        return {"val_lr_shift_noise": float(np.mean(shifts)), "val_round_trip_noise": float(np.mean(scores))}

    @torch.inference_mode()
    def round_trip(self, hr: torch.Tensor, jpeg_quality: int | None = None) -> torch.Tensor:
        """Shrink (8-bit LR, or its Pillow JPEG at ``jpeg_quality``) and restore at z = 0 with the EMA net: what the
        app's shrink / restore does."""
        from model_export.training.validation import to_uint8

        net = self.ema.module.eval()
        lr, _ = net(hr.to(self.device))
        lr = torch.round(lr.clamp(0, 1) * 255.0) / 255.0
        if jpeg_quality is not None:
            small = pillow_jpeg(to_uint8(lr), jpeg_quality)
            lr = torch.from_numpy(small).permute(2, 0, 1).unsqueeze(0).float().to(self.device) / 255.0
        return net.inverse(lr, None)

    def checkpoint_parts(self) -> dict[str, Any]:
        return {"net": self.net, "ema": self.ema, "opt": self.opt, "schedule": self.schedule}


def _mean_bicubic_from_jpeg(val_set, scale: int, quality: int) -> float:
    """The baseline a JPEG-robust shrink must beat: MATLAB bicubic down, the same JPEG, MATLAB bicubic up."""
    from model_export.degradations import imresize
    from model_export.training.validation import psnr_y, to_uint8

    scores = []
    for lr, hr in zip(val_set.lr, val_set.hr):
        small = pillow_jpeg(to_uint8(lr), quality).astype(np.float64) / 255.0
        up = np.clip(np.round(imresize(small, scale) * 255.0), 0, 255).astype(np.uint8)
        scores.append(psnr_y(up, hr, scale))
    return float(np.mean(scores))
