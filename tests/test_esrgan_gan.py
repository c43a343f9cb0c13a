"""ESRGAN's perceptual stage: the U-Net discriminator, the RaGAN and detail losses, the esrgan_gan family (a tiny
fine-tune from a tiny PSNR model file, exact resume, export to the app), and the colour-shift check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from model_export.archs import build_arch, count_parameters
from model_export.train import main as train_main
from model_export.training import checkpoint as ckpt_io
from model_export.training.config import ConfigError, load_config
from model_export.training.gan_losses import (
    FrequencyLoss,
    GradientLoss,
    RaGANLoss,
    ragan_discriminator_loss,
    ragan_generator_loss,
)
from model_export.training.models import get_model_class

TINY_G = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "residual": "nearest", "upsampler": "pixelshuffle"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- discriminator ----------------------------------------------------------------------------------------------


def test_discriminator_per_pixel_map_and_spectral_norm():
    torch.manual_seed(0)
    net = build_arch("unet_discriminator_sn", num_feat=4)
    x = torch.rand(2, 3, 16, 24)
    assert net(x).shape == (2, 1, 16, 24)  # one logit per pixel
    normed = [f"conv{i}" for i in range(1, 9)]
    for name in normed:
        conv = getattr(net, name)
        assert parametrize.is_parametrized(conv, "weight"), name
        assert any(isinstance(p, _SpectralNorm) for p in conv.parametrizations.weight), name
    assert not parametrize.is_parametrized(net.conv0) and not parametrize.is_parametrized(net.conv9)
    # the power iteration's vectors are saved (exact resume) and the normalised weight has spectral norm ~1
    assert "conv1.parametrizations.weight.0._u" in net.state_dict()
    for _ in range(30):
        net(x)
    for name in normed:
        w = getattr(net, name).weight.detach()
        assert torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2) == pytest.approx(1.0, abs=0.02), name
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.rand(1, 3, 12, 16))
    assert count_parameters(build_arch("unet_discriminator_sn", num_feat=16)) == 274_001


# ---- losses -----------------------------------------------------------------------------------------------------


def test_ragan_hand_made_case():
    # a discriminator that cannot tell: every relativistic logit is 0, every term is log 2
    same = torch.zeros(4, 1, 2, 2)
    assert float(ragan_discriminator_loss(same, same)) == pytest.approx(math.log(2))
    assert float(ragan_generator_loss(same, same)) == pytest.approx(math.log(2))
    # C(real) = [2, 0], C(fake) = [0, -2]: real - mean fake = [3, 1], fake - mean real = [-1, -3]
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([0.0, -2.0])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731  -log(sigmoid(-v)) = -log(1 - sigmoid(v))
    d = 0.5 * ((sp(-3) + sp(-1)) / 2 + (sp(-1) + sp(-3)) / 2)  # -log D_Ra(real, fake), -log(1 - D_Ra(fake, real))
    g = 0.5 * ((sp(3) + sp(1)) / 2 + (sp(1) + sp(3)) / 2)  # -log(1 - D_Ra(real, fake)), -log D_Ra(fake, real)
    assert float(ragan_discriminator_loss(real, fake)) == pytest.approx(d) == pytest.approx(0.1809245, abs=1e-6)
    assert float(ragan_generator_loss(real, fake)) == pytest.approx(g) == pytest.approx(2.1809245, abs=1e-6)
    loss = RaGANLoss()
    assert float(loss.generator(real, fake)) == pytest.approx(g)
    assert float(loss.discriminator(real, fake)) == pytest.approx(d)
    # the generator's gradient raises its fakes' logits and lowers the reals'
    r, f = real.clone().requires_grad_(), fake.clone().requires_grad_()
    ragan_generator_loss(r, f).backward()
    assert (f.grad < 0).all() and (r.grad > 0).all()
    with pytest.raises(TypeError, match="esrgan_gan"):
        loss(real, fake)


def _texture(h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(2, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bicubic",
                         align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("loss", [FrequencyLoss(), FrequencyLoss(windows=[8]), GradientLoss()],
                         ids=["frequency", "frequency-8", "gradient"])
def test_detail_losses_zero_for_identical_positive_otherwise(loss):
    hr = _texture()
    assert float(loss(hr, hr.clone())) == 0.0
    blurred = F.avg_pool2d(F.pad(hr, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert float(loss(blurred, hr)) > 1e-4
    assert float(loss(hr + 0.01, hr)) > 0  # a colour offset too (the DC term)
    sr = blurred.clone().requires_grad_()
    loss(sr, hr).backward()
    assert torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0


def test_frequency_loss_tolerates_shifts_that_pixel_losses_punish():
    hr = _texture(48, 48, seed=3)
    shifted = torch.roll(hr, 1, dims=3)
    blurred = F.avg_pool2d(F.pad(hr, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    l1 = lambda a, b: float((a - b).abs().mean())  # noqa: E731
    freq = FrequencyLoss()
    assert l1(shifted, hr) > 0.5 * l1(blurred, hr)  # L1: a sharp image one pixel off is about as bad as a blur
    assert float(freq(shifted, hr)) < 0.5 * float(freq(blurred, hr))
    assert float(FrequencyLoss(windows=[64])(hr[..., :16, :16], hr[..., :16, :16] * 0.9)) > 0  # window > image


# ---- the family -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("gan_imgs")
    rng = np.random.default_rng(0)
    for i in range(8):
        base = (rng.random((12, 14, 3)) * 255).astype(np.uint8)
        Image.fromarray(base).resize((48, 40 + i), Image.BICUBIC).save(root / f"im{i}.png")
    return root


@pytest.fixture(scope="module")
def psnr_model(tmp_path_factory) -> Path:
    """A tiny first-stage model file, as invsr-train esrgan writes it."""
    torch.manual_seed(1)
    net = build_arch("rrdbnet", scale=4, **TINY_G)
    path = tmp_path_factory.mktemp("psnr") / "model_rrdbnet_x4.pt"
    torch.save({"format": "invsr-model/1", "family": "esrgan", "arch": "rrdbnet",
                "arch_kwargs": {**TINY_G, "scale": 4}, "scale": 4, "params_ema": net.state_dict(),
                "config": {"name": "tiny_psnr"}, "meta": {"step": 123, "val_psnr": 25.0, "degradation": "bicubic"}},
               path)
    return path


def _config(tmp_path: Path, images: Path, psnr_model: Path) -> Path:
    cfg = tmp_path / "gan_tiny.toml"
    cfg.write_text(f"""
name = "gan_tiny"
model = "esrgan_gan"
scale = 4
[network]
arch = "rrdbnet"
[network_d]
num_feat = 4
[gan]
init_from = {json.dumps(str(psnr_model))}
d_init_steps = 1
bicubic_fraction = 0.5
[data]
folders = [{json.dumps(str(images))}]
patch_size = 16
batch_size = 4
degradation = "real_photo"
num_workers = 0
val_count = 2
[train]
total_steps = 6
lr = 1e-3
scheduler = "cosine"
warmup_steps = 2
ema_decay = 0.9
threads = 1
[loss.pixel]
type = "l1"
weight = 1.0
[loss.frequency]
type = "frequency"
weight = 1.0
windows = [8]
[loss.gan]
type = "ragan"
weight = 0.5
adaptive = true
highpass_sigma = 2.0
[log]
log_every = 1
val_every = 3
save_every = 3
progress = false
""")
    return cfg


def test_gan_fine_tune_resumes_exactly_and_exports(tmp_path, images, psnr_model, capsys, monkeypatch):
    cfg = _config(tmp_path, images, psnr_model)
    full, parts = tmp_path / "full", tmp_path / "parts"
    assert train_main(["esrgan_gan", "--config", str(cfg), "--out", str(full)]) == 0
    assert train_main(["esrgan_gan", "--config", str(cfg), "--out", str(parts), "--stop-at", "3"]) == 0
    assert ckpt_io.load(parts / "latest.pt")["step"] == 3
    assert train_main(["esrgan_gan", "--config", str(cfg), "--out", str(parts), "--resume", "auto"]) == 0
    capsys.readouterr()

    a, b = ckpt_io.load(full / "latest.pt"), ckpt_io.load(parts / "latest.pt")
    assert a["step"] == b["step"] == 6
    ma, mb = a["model"], b["model"]
    for key in ("net_g", "net_d"):
        assert ma[key].keys() == mb[key].keys()
        for k in ma[key]:
            assert torch.equal(ma[key][k], mb[key][k]), (key, k)
    assert any(k.endswith("._u") for k in ma["net_d"])  # the spectral norms' power-iteration state
    for k in ma["ema_g"]["params"]:
        assert torch.equal(ma["ema_g"]["params"][k], mb["ema_g"]["params"][k]), k
    for key in ("opt_g", "opt_d"):
        sa, sb = ma[key]["state"], mb[key]["state"]
        assert sa.keys() == sb.keys() and sa
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert ma["init"]["step"] == 123 and ma["init"]["sha256"]
    rows_a = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (parts / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert [r["l_d"] for r in rows_a] == [r["l_d"] for r in rows_b]
    assert "l_gan" not in rows_a[0] and all("l_gan" in r for r in rows_a[1:])  # step 1: the discriminator alone
    assert all(0 < r["w_gan"] <= 10 for r in rows_a[1:])  # the adaptive weight

    # the generator started from the PSNR file and moved; the model file is the first stage's format
    init = torch.load(psnr_model, weights_only=True)["params_ema"]
    model = ckpt_io.load(full / "model_rrdbnet_x4.pt")
    assert model["format"] == "invsr-model/1" and model["arch"] == "rrdbnet" and model["scale"] == 4
    assert model["arch_kwargs"] == {**TINY_G, "scale": 4}
    assert model["meta"]["degradation"] == "real_photo"
    assert model["params_ema"].keys() == init.keys()
    assert any(not torch.equal(model["params_ema"][k], init[k]) for k in init)

    # invsr-export reads it like the PSNR model's, and the app's esrgan plugin serves it
    from model_export import export
    from invsr_desktop.engine import model_files as model_folder

    models = tmp_path / "models"
    monkeypatch.setenv("INVSR_MODELS_DIR", str(models))
    monkeypatch.setenv("INVSR_PLUGINS", "esrgan")
    monkeypatch.setattr(model_folder, "bundled_models_dir", lambda: tmp_path / "no-bundled-models")
    onnx_file = tmp_path / "esrgan-photo-x4.onnx"
    code = export.main([str(full / "model_rrdbnet_x4.pt"), "-o", str(onnx_file), "--name", "ESRGAN (photo)",
                        "--threads", "1", "--install"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "OK" in out.out
    from invsr_desktop.engine.pipeline import Engine, EngineOptions
    from invsr_desktop.engine.registry import Registry

    registry = Registry()
    registry.load_entry_points()
    spec = registry.get("esrgan-photo-x4")
    assert spec.name == "ESRGAN (photo)" and spec.kind == "gan" and spec.scales == (4,)
    assert "real_photo" in spec.info["invsr.trained_on"]
    image = np.random.default_rng(0).random((9, 11, 3)).astype(np.float32)
    result = Engine(registry=registry, options=EngineOptions(threads=1)).upscale_array(image, spec.id, 4)
    assert result.shape == (36, 44, 3)


def _frozen_gan_step_setup(tmp_path, images, psnr_model, sets: list[str]):
    """A GAN model (discriminator warm-up and the bicubic mix off, plus ``sets``), a 2-image batch, the
    discriminator's state before the step, and optimizers that keep the gradients but change nothing."""
    from model_export.training.distributed import DistInfo

    cls = get_model_class("esrgan_gan")
    sets = ["gan.d_init_steps=0", "gan.bicubic_fraction=0", *sets]
    cfg = load_config(str(_config(tmp_path, images, psnr_model)), sets, cls.config_defaults)
    torch.manual_seed(0)
    model = cls(cfg, torch.device("cpu"), DistInfo())
    hr = torch.rand(2, 3, 16, 16)
    batch = {"lr": F.avg_pool2d(hr, 4), "hr": hr, "index": torch.arange(2)}
    d_state = {k: v.clone() for k, v in model.net_d.state_dict().items()}
    model.opt_g.step = model.adversary.opt_d.step = lambda: None  # keep the gradients, change nothing
    return model, hr, batch, d_state


def test_one_discriminator_forward_gives_the_two_pass_gradients(tmp_path, images, psnr_model):
    """The step's single forward of the discriminator gives each network the gradients of ESRGAN's two passes
    (generator step with the discriminator frozen, then the discriminator on the detached output)."""
    sets = ["loss.gan.adaptive=false", "loss.gan.highpass_sigma=0", "loss.gan.weight=0.1"]
    model, hr, batch, d_state = _frozen_gan_step_setup(tmp_path, images, psnr_model, sets)
    model.optimize(batch, 5)
    grads_g = [p.grad.clone() for p in model.net_g.parameters()]
    grads_d = [p.grad.clone() for p in model.net_d.parameters()]

    # the reference: two passes, each from the same spectral-norm state
    model.net_d.load_state_dict(d_state)
    for p in list(model.net_g.parameters()) + list(model.net_d.parameters()):
        p.grad = None
    sr = model.net_g(batch["lr"])
    sum(model.compute_losses(sr, hr).values()).backward()
    assert all(p.grad is None for p in model.net_d.parameters())
    model.net_d.load_state_dict(d_state)
    real, fake = model.adversary.discriminate(hr, sr.detach())
    ragan_discriminator_loss(real, fake).backward()
    for got, p in zip(grads_g, model.net_g.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad, rtol=1e-4, atol=1e-7)
    for got, p in zip(grads_d, model.net_d.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad, rtol=1e-4, atol=1e-7)
    assert all(g.abs().sum() > 0 for g in grads_d)


def test_adaptive_detail_band_adversarial_gradient(tmp_path, images, psnr_model):
    """The adaptive term: lambda = weight * |grad_sr(L1 + frequency)| / |detail band of grad_sr(RaGAN)|, and the
    generator gets exactly the gradient of (L1 + frequency) + lambda * RaGAN with the RaGAN gradient at the output
    cut to its detail band."""
    from model_export.training.gan_losses import gaussian_blur

    model, hr, batch, d_state = _frozen_gan_step_setup(tmp_path, images, psnr_model, ["loss.gan.max_weight=1000"])
    stats = model.optimize(batch, 5)
    grads_g = [p.grad.clone() for p in model.net_g.parameters()]

    model.net_d.load_state_dict(d_state)
    for p in model.net_g.parameters():
        p.grad = None
    sr = model.net_g(batch["lr"])
    rec = sum(w * m(sr, hr) for m, w in model.adversary.pixel_losses.values())
    real, fake = model.adversary.discriminate(hr, sr)
    adv = ragan_generator_loss(real, fake)
    g_rec = torch.autograd.grad(rec, sr, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, sr, retain_graph=True)[0]
    band = g_adv - gaussian_blur(g_adv, 2.0)
    lam = 0.5 * g_rec.norm() / band.norm()
    assert 1 < lam < 1000  # a fresh discriminator: a large weight, not at the default cap
    assert stats["w_gan"] == pytest.approx(float(lam), rel=1e-4)
    assert stats["l_gan"] == pytest.approx(float(lam * adv.detach()), rel=1e-4)
    sr.backward(g_rec + lam * band)
    for got, p in zip(grads_g, model.net_g.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad, rtol=1e-4, atol=1e-7)
    # the detail band of a gradient has no low-frequency part: a constant (colour) gradient disappears
    flat = torch.ones(1, 3, 16, 16) * torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1)
    assert model.adversary.adversarial["gan"][0].detail_band(flat).abs().max() < 1e-6


def test_stlpips_feature_loss_in_the_gan_step(tmp_path, images, psnr_model):
    """``type = "stlpips"`` is one more (sr, hr) term: logged, weighted, its gradient reaches the generator (through
    the adaptive weight's reconstruction norm too), and the frozen metric network learns nothing."""
    pytest.importorskip("stlpips_pytorch", reason="the [train] extra's stlpips-pytorch wheel is not installed")
    sets = ['loss.perceptual={type = "stlpips", trunk = "alex", weight = 0.5}']
    model, _, _, _ = _frozen_gan_step_setup(tmp_path, images, psnr_model, sets)
    metric = model.losses["perceptual"][0].metric
    assert model.adversary.pixel_losses["perceptual"][0].metric is metric
    hr = torch.rand(2, 3, 32, 32)
    batch = {"lr": F.avg_pool2d(hr, 4), "hr": hr, "index": torch.arange(2)}
    stats = model.optimize(batch, 5)
    assert stats["l_perceptual"] > 0
    assert not metric.training and all(p.grad is None for p in metric.parameters())
    sr = model.net_g(batch["lr"]).detach().requires_grad_(True)
    (model.losses["perceptual"][0](sr, hr) * 0.5).backward()
    assert sr.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="loss.perceptual"):
        _frozen_gan_step_setup(tmp_path, images, psnr_model, ['loss.perceptual={type = "stlpips", trunk = "resnet"}'])


def test_config_errors_name_the_key(tmp_path, images, psnr_model):
    cls = get_model_class("esrgan_gan")
    cfg_file = _config(tmp_path, images, psnr_model)

    def build(*sets):
        cfg = load_config(str(cfg_file), list(sets), cls.config_defaults)
        cls(cfg, torch.device("cpu"), __import__("model_export.training.distributed", fromlist=["DistInfo"]).DistInfo())

    with pytest.raises(ConfigError, match="'network.num_feat'"):
        build("network.num_feat=16")
    with pytest.raises(ConfigError, match="x4 model, but 'scale' is 2"):
        build("scale=2", "data.patch_size=16")
    with pytest.raises(ConfigError, match="gan.init_from"):
        build(f"gan.init_from={json.dumps(str(tmp_path / 'missing.pt'))}")
    with pytest.raises(ConfigError, match="network_d"):
        build("network_d.num_feat=0.5")
    with pytest.raises(ConfigError, match="'gan.bogus'"):
        build("gan.bogus=1")
    build("network.num_feat=8")  # repeating the file's value is fine
    with pytest.raises(ConfigError, match="grow_blocks"):
        build("gan.grow_blocks=-1")


def test_grow_blocks_starts_a_deeper_generator_where_the_file_left_off(tmp_path, images, psnr_model):
    """``gan.grow_blocks`` builds the file's generator with more blocks, computing what the file's did."""
    cls = get_model_class("esrgan_gan")
    cfg = load_config(str(_config(tmp_path, images, psnr_model)), ["gan.grow_blocks=2"], cls.config_defaults)
    from model_export.training.distributed import DistInfo

    model = cls(cfg, torch.device("cpu"), DistInfo())
    small = build_arch("rrdbnet", scale=4, **TINY_G)
    small.load_state_dict(torch.load(psnr_model, weights_only=True)["params_ema"])
    assert len(model.net_g.body) == len(small.body) + 2
    lr = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(model.ema.module(lr), small(lr), rtol=1e-5, atol=1e-5)


def test_packaged_gan_config():
    cls = get_model_class("esrgan_gan")
    cfg = load_config("esrgan_gan_x4", [], cls.config_defaults)
    assert cfg["model"] == "esrgan_gan" and cfg["data"]["degradation"] == "real_photo"
    assert cfg["gan"]["init_from"].endswith("model_rrdbnet_x4.pt")
    assert {cfg["loss"][k]["type"] for k in cfg["loss"]} == {"l1", "frequency", "ragan"}
    assert cfg["loss"]["gan"]["adaptive"] is True and cfg["loss"]["gan"]["highpass_sigma"] > 0
    assert cfg["data"]["patch_size"] % 8 == 0
    from model_export.data import Degrader

    Degrader("real_photo", 4, True, cfg["data"]["real_photo"])  # the table's keys exist


def test_bicubic_mix_is_by_sample_index():
    from model_export.data.dataset import make_lr
    from model_export.training.models.esrgan_gan import bicubic_mix

    hr = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
    batch = {"lr": torch.zeros(8, 3, 4, 4), "hr": hr, "index": torch.arange(8)}
    out = bicubic_mix(batch, 0.5, 0, 4, True)
    mixed = [j for j in range(8) if out[j].abs().sum() > 0]
    assert 0 < len(mixed) < 8
    j = mixed[0]
    expected = make_lr(hr[j].permute(1, 2, 0).double().numpy(), 4).transpose(2, 0, 1)
    assert torch.allclose(out[j], torch.from_numpy(expected.copy()))
    shuffled = {"lr": batch["lr"][[3, 1]], "hr": hr[[3, 1]], "index": torch.tensor([3, 1])}
    again = bicubic_mix(shuffled, 0.5, 0, 4, True)
    assert torch.equal(again[0], out[3]) and torch.equal(again[1], out[1])
    assert bicubic_mix(batch, 0.0, 0, 4, True) is batch["lr"]


# ---- colour shift -----------------------------------------------------------------------------------------------


def test_colour_check(tmp_path, capsys):
    from model_export.commands import colour_check

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((24, 28, 3)) * 200 + 20).astype(np.uint8)).save(folder / f"c{i}.png")
    Image.fromarray((rng.random((24, 28)) * 255).astype(np.uint8)).save(folder / "grey.png")

    def nearest(x):
        return np.repeat(np.repeat(x, 4, 0), 4, 1)

    report = colour_check.colour_check(nearest, folder, 4)
    assert report["ok"] and len(report["images"]) == 3 and abs(report["worst"]["shift"]) < 0.002
    tinted = colour_check.colour_check(lambda x: nearest(x) * np.array([1.0, 1.0, 1.03], np.float32), folder, 4)
    assert not tinted["ok"] and tinted["worst"]["channel"] == "B"
    assert tinted["worst"]["shift"] == pytest.approx(0.03, abs=0.004)

    # the command line on a model file (a tiny RRDBNet with the nearest residual and zero body output: nearest x4)
    net = build_arch("rrdbnet", scale=4, **TINY_G)
    with torch.no_grad():
        net.conv_last.weight.zero_()
        net.conv_last.bias.zero_()
    model = tmp_path / "model.pt"
    torch.save({"format": "invsr-model/1", "arch": "rrdbnet", "arch_kwargs": {**TINY_G, "scale": 4}, "scale": 4,
                "params_ema": net.state_dict()}, model)
    assert colour_check.main(["--model", str(model), "--images", str(folder), "--json", str(tmp_path / "c.json")]) == 0
    assert "OK" in capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["ok"] is True
    with torch.no_grad():
        net.conv_last.bias[32:].fill_(0.03)  # pixel shuffle: channels 32..47 make the blue output
    torch.save({"format": "invsr-model/1", "arch": "rrdbnet", "arch_kwargs": {**TINY_G, "scale": 4}, "scale": 4,
                "params_ema": net.state_dict()}, model)
    assert colour_check.main(["--model", str(model), "--images", str(folder)]) == 1
    assert "SHIFTED" in capsys.readouterr().out
    assert colour_check.main(["--model", str(tmp_path / "none.pt"), "--images", str(folder)]) == 2


def test_a_fresh_discriminator_every_n_steps_resumes_exactly(tmp_path, images, psnr_model):
    """``gan.d_reset_every``: new weights and no Adam moments at steps 3 (and 6), the generator waiting
    ``d_init_steps`` after each; a run stopped across a reset continues bit for bit."""
    cfg = _config(tmp_path, images, psnr_model)
    sets = ["--set", "gan.d_reset_every=3"]
    full, parts = tmp_path / "full", tmp_path / "parts"
    assert train_main(["esrgan_gan", "--config", str(cfg), "--out", str(full), *sets]) == 0
    assert train_main(["esrgan_gan", "--config", str(cfg), "--out", str(parts), "--stop-at", "4", *sets]) == 0
    assert train_main(["esrgan_gan", "--config", str(cfg), "--out", str(parts), "--resume", "auto", *sets]) == 0
    rows = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    assert ["l_gan" in r for r in rows] == [False, True, True, False, True, True]  # warm-ups at steps 0 and 3
    a, b = ckpt_io.load(full / "latest.pt")["model"], ckpt_io.load(parts / "latest.pt")["model"]
    assert all(torch.equal(a["net_d"][k], b["net_d"][k]) for k in a["net_d"])
    assert [r["l_d"] for r in rows] == [json.loads(x)["l_d"] for x in (parts / "log.jsonl").read_text().splitlines()]

    from model_export.training.distributed import DistInfo

    cls = get_model_class("esrgan_gan")
    model = cls(load_config(str(cfg), ["gan.d_reset_every=3"], cls.config_defaults), torch.device("cpu"), DistInfo())
    before = {k: v.clone() for k, v in model.net_d.state_dict().items()}
    model.adversary.opt_d.state[next(model.net_d.parameters())] = {"step": torch.tensor(1.0)}
    model.adversary.reset([0, 1])
    after = {k: v.clone() for k, v in model.net_d.state_dict().items()}
    assert any(not torch.equal(before[k], after[k]) for k in before) and not model.adversary.opt_d.state
    model.adversary.reset([0, 2])
    assert any(not torch.equal(after[k], v) for k, v in model.net_d.state_dict().items())
    model.adversary.reset([0, 1])
    assert all(torch.equal(after[k], v) for k, v in model.net_d.state_dict().items())  # the seed decides
    with pytest.raises(ConfigError, match="gan.d_reset_every"):
        cls(load_config(str(cfg), ["gan.d_reset_every=1"], cls.config_defaults), torch.device("cpu"), DistInfo())
