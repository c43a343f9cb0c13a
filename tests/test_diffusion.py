"""The diffusion backend: the U-Net and its schedule, the training family (mixed degradations, exact resume), the
denoiser's ONNX export against PyTorch, the plugin (no model -> no backend; a freshly exported tiny model through
the engine), the seed and the tiling (same seed -> same image on any tiling, tiled vs untiled >= 40 dB), and the
engine's whole-image runner contract (``Tiler.map``)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import plugins.diffusion as dp
from invsr_desktop.engine.errors import CancelledError
from invsr_desktop.engine.pipeline import Engine, EngineOptions
from invsr_desktop.engine.registry import Registry
from invsr_desktop.engine.tiling import Tiler
from model_export.archs import build_arch
from model_export.export_diffusion import export_checkpoint, load_diffusion
from model_export.train import main as train_main
from model_export.training import checkpoint as ckpt_io
from model_export.training.config import load_config
from model_export.training.distributed import DistInfo
from model_export.training.models import get_model_class
from model_export.training.models.diffusion import Denoiser, Schedule, lr_multiple, sample, upsample

TINY_NET = {"arch": "diffusion_unet", "base": 8, "mults": [1, 2], "time_dim": 16}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    return cv2.resize(rng.random((h // 6 + 2, w // 6 + 2, 3)).astype(np.float32), (w, h),
                      interpolation=cv2.INTER_CUBIC).clip(0, 1)  # fmt: skip


def tiny_model_file(path, seed: int = 0):
    """A tiny, untrained diffusion model file (weights perturbed so the net is not the identity)."""
    cls = get_model_class("diffusion")
    cfg = load_config(None, [], cls.config_defaults, data={"name": "tiny_diffusion", "network": TINY_NET})
    torch.manual_seed(seed)
    model = cls(cfg, torch.device("cpu"), DistInfo())
    with torch.no_grad():
        for p in model.ema.module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    exp = model.export_payload()
    ckpt_io.atomic_save({"format": ckpt_io.MODEL_FORMAT, "family": "diffusion", "arch": exp["arch"],
                         "arch_kwargs": exp["arch_kwargs"], "scale": 4, "params_ema": exp["params_ema"],
                         "config": cfg, "meta": {"step": 0, "data": ["nothing (test)"], "degradation": "bicubic"}},
                        path)  # fmt: skip
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("diffusion_models")
    model = tiny_model_file(folder / "model_diffusion_unet_x4.pt")
    result = export_checkpoint(folder / "model_diffusion_unet_x4.pt", folder / "models" / "tiny_diffusion.onnx",
                               card=True)
    return folder, model, result


def _only_models_in(folder, monkeypatch):
    """The plugins see ``folder`` as the user model folder and no bundled models."""
    monkeypatch.setenv("INVSR_MODELS_DIR", str(folder))
    monkeypatch.setattr("invsr_desktop.engine.model_files.bundled_models_dir", lambda: folder / "none")
    return folder


@pytest.fixture
def models_dir(exported, monkeypatch):
    return _only_models_in(exported[0] / "models", monkeypatch)


def _registry() -> Registry:
    import plugins.bicubic

    registry = Registry()
    registry.register(plugins.bicubic, "bicubic")
    registry.register(dp, "diffusion")
    return registry


def _engine(tile=None, overlap=None) -> Engine:
    """fp32: these tests compare against PyTorch and the plain formula; bf16 (``fast`` on an AVX-512 bf16 CPU) is
    the session pool's concern and its error is measured by ``invsr-bench``."""
    return Engine(registry=_registry(), options=EngineOptions(tile=tile, overlap=overlap, threads=1, precision="fp32"))


# ---- the network and the schedule ------------------------------------------------------------------------------


def test_unet_shapes_and_zero_start():
    torch.manual_seed(0)
    net = build_arch("diffusion_unet", scale=4, **{k: v for k, v in TINY_NET.items() if k != "arch"})
    assert net.input_multiple == 8 and net.scale == 4
    x, cond = torch.rand(2, 3, 24, 40), torch.rand(2, 3, 24, 40)
    out = net(x, cond, torch.tensor([0.3, 1.0]))
    assert out.shape == cond.shape and not out.any()  # zero-initialised output conv
    assert lr_multiple(16, 4) == 4 and lr_multiple(8, 4) == 2 and lr_multiple(16, 3) == 16


def test_denoiser_preconditioning_is_the_linear_estimate_at_start():
    """An untrained net (F = 0) gives y0 + c_skip (x_t - y0): x_t itself at low noise, y0 at s = 1."""
    torch.manual_seed(0)
    net = build_arch("diffusion_unet", scale=4, **{k: v for k, v in TINY_NET.items() if k != "arch"})
    sd = Schedule()
    den = Denoiser(net, sd)
    hr, y0 = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    out_low = den(hr, y0, torch.tensor([0.0]))
    eta = sd.eta_min
    a, v = 1 - eta, (1 - eta) ** 2 * sd.sigma_data**2 + sd.kappa**2 * eta
    assert torch.allclose(out_low, y0 + a * sd.sigma_data**2 / v * (hr - y0), atol=1e-6)
    assert (out_low - hr).abs().mean() < 0.2 * (y0 - hr).abs().mean()  # mostly the input at low noise
    assert torch.allclose(den(hr, y0, torch.tensor([1.0])), y0, atol=1e-4)  # the condition at s = 1


def test_schedule_torch_and_plugin_agree():
    sd = Schedule()
    assert isinstance(sd, dp.Schedule)  # one definition: training's schedule is the app's, with its additions
    assert sd.eta(0.37) == dp.Schedule.eta(sd, 0.37)  # a float goes through the app's own code
    plug = dp.Schedule(sd.kappa, sd.eta_min, sd.eta_max, sd.power)
    for s in (0.0, 0.1, 0.5, 1.0):
        assert float(sd.eta(torch.tensor([s]))[0]) == pytest.approx(plug.eta(s), rel=1e-5)
        assert float(sd.eta(s)) == pytest.approx(plug.eta(s), rel=1e-12)
    assert plug.eta(0.0) == pytest.approx(sd.eta_min) and plug.eta(1.0) == pytest.approx(sd.eta_max)
    assert Schedule.timesteps(4) == dp.Schedule.timesteps(4) == [1.0, 2 / 3, 1 / 3, 0.0]
    assert Schedule.timesteps(1) == [1.0]
    etas = [plug.eta(s) for s in Schedule.timesteps(15)]
    assert all(a > b for a, b in zip(etas, etas[1:]))


def test_condition_upsampling_matches_opencv():
    lr = np.random.default_rng(0).random((13, 17, 3)).astype(np.float32)
    ours = dp.upsample(lr, 4)
    theirs = upsample(torch.from_numpy(lr.transpose(2, 0, 1))[None], 4)[0].numpy().transpose(1, 2, 0)
    assert ours.shape == (52, 68, 3) and np.abs(ours - theirs).max() < 1e-5


def test_position_noise_keyed_by_pixel():
    whole = dp.position_noise(5, 2, 300, 520)
    assert np.array_equal(dp.position_noise(5, 2, 100, 270), whole[:100, :270])  # any image size
    assert not np.array_equal(dp.position_noise(6, 2, 100, 100), whole[:100, :100])
    assert not np.array_equal(dp.position_noise(5, 3, 100, 100), whole[:100, :100])
    assert abs(whole.mean()) < 0.01 and abs(whole.std() - 1) < 0.01


# ---- training ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion_imgs")
    rng = np.random.default_rng(0)
    for i in range(6):
        base = (rng.random((12, 14, 3)) * 255).astype(np.uint8)
        Image.fromarray(base).resize((48, 40 + i), Image.BICUBIC).save(root / f"im{i}.png")
    return root


def _train_sets(images) -> list[str]:
    net = [f"network.{k}={json.dumps(v)}" for k, v in TINY_NET.items()]
    return [*net, f"data.folders={json.dumps(str(images))}", "data.patch_size=32", "data.batch_size=2",
            "data.num_workers=0", "data.val_count=2", "train.total_steps=6", "train.threads=1",
            "train.warmup_steps=2", "log.log_every=1", "log.val_every=3", "log.save_every=3", "log.progress=false",
            "diffusion.eval_steps=2"]  # fmt: skip


def _train_args(images, out) -> list[str]:
    args = ["diffusion", "--config", "diffusion_x4", "--out", str(out)]
    for s in _train_sets(images):
        args += ["--set", s]
    return args


def _train(images, out, *extra):
    assert train_main(_train_args(images, out) + list(extra)) == 0


def test_config_loads():
    cls = get_model_class("diffusion")
    cfg = load_config("diffusion_x4", [], cls.config_defaults)
    assert cfg["model"] == "diffusion" and cfg["data"]["degradation"] == "real_photo"
    assert 0 < cfg["diffusion"]["bicubic_fraction"] < 1 and cfg["network"]["arch"] == "diffusion_unet"
    net = build_arch("diffusion_unet", scale=cfg["scale"], **{k: v for k, v in cfg["network"].items() if k != "arch"})
    assert 5e5 < sum(p.numel() for p in net.parameters()) < 5e6


def test_mixed_degradation_by_index():
    cls = get_model_class("diffusion")
    cfg = load_config("diffusion_x4", ["diffusion.bicubic_fraction=0.5", "data.folders=[]"], cls.config_defaults,
                      data={"network": TINY_NET})  # fmt: skip
    model = cls(cfg, torch.device("cpu"), DistInfo())
    hr = torch.rand(16, 3, 32, 32, dtype=torch.float64).float()
    lr = torch.zeros(16, 3, 8, 8)
    batch = {"hr": hr, "lr": lr, "index": torch.arange(100, 116)}
    mixed = model.mixed_lr(batch)
    replaced = [bool(mixed[j].abs().sum() > 0) for j in range(16)]
    assert 2 <= sum(replaced) <= 14  # about half, decided per sample index
    assert torch.equal(model.mixed_lr(batch), mixed)  # the same indices, the same choice (exact resume)


def test_train_and_exact_resume(images, tmp_path):
    full, parts = tmp_path / "full", tmp_path / "parts"
    _train(images, full)
    _train(images, parts, "--stop-at", "3")
    _train(images, parts, "--resume", "auto")
    a, b = ckpt_io.load(full / "latest.pt"), ckpt_io.load(parts / "latest.pt")
    assert a["step"] == b["step"] == 6
    for k, v in a["model"]["net"].items():
        assert torch.equal(v, b["model"]["net"][k]), k
    for k, v in a["model"]["ema"]["params"].items():
        assert torch.equal(v, b["model"]["ema"]["params"][k]), k
    rows_a = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (parts / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert rows_a[-1]["val_psnr"] is not None and rows_a[-1]["val_psnr"] == rows_b[-1]["val_psnr"]
    model_file = ckpt_io.load(full / "model_diffusion_unet_x4.pt")
    assert model_file["family"] == "diffusion" and model_file["config"]["diffusion"]["kappa"] == 0.5
    # the run's model file exports
    result = export_checkpoint(full / "model_diffusion_unet_x4.pt", tmp_path / "d.onnx")
    assert result.max_abs < 1e-4


# ---- export ------------------------------------------------------------------------------------------------------


def test_export_matches_torch_and_metadata(exported):
    folder, _, result = exported
    assert result.max_abs < 1e-4
    assert all(side // 8 % 2 == 1 for side in result.check_size)  # odd number of U-Net blocks per side
    meta = dp_model_folder_meta(result.path)
    assert meta["invsr.backend"] == "diffusion" and meta["invsr.arch"] == "diffusion_unet"
    assert meta["invsr.scale"] == "4" and meta["invsr.input_multiple"] == "8" and meta["invsr.version"]
    assert float(meta["invsr.diffusion.kappa"]) == 2.0 and meta["invsr.diffusion.default_steps"] == "4"
    assert "x_t" in meta["invsr.inputs"] and "lr_up" in meta["invsr.inputs"] and meta["invsr.trained_on"]
    card = result.path.with_suffix(".md").read_text()
    assert "kappa 2.0" in card and "parameters" in card

    import onnxruntime as ort

    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x_t", "lr_up", "t"]
    _, denoiser, _, _ = load_diffusion(folder / "model_diffusion_unet_x4.pt")
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(1, 3, 56, 24, generator=g), torch.rand(1, 3, 56, 24, generator=g)  # 7 x 3 blocks
    t = torch.tensor([0.7])
    with torch.no_grad():
        ref = denoiser(x, y, t).numpy()
    (got,) = session.run(["x0"], {"x_t": x.numpy(), "lr_up": y.numpy(), "t": t.numpy()})
    assert np.abs(got - ref).max() < 1e-4


def dp_model_folder_meta(path):
    from invsr_desktop.engine.model_files import read_metadata

    return read_metadata(path)


def test_invsr_export_hands_diffusion_to_its_exporter(exported, tmp_path, capsys):
    from model_export.export import main as export_main

    folder = exported[0]
    assert export_main([str(folder / "model_diffusion_unet_x4.pt"), "-o", str(tmp_path / "e.onnx")]) == 0
    assert "max |diff|" in capsys.readouterr().out and (tmp_path / "e.onnx").is_file()
    assert export_main([str(folder / "model_diffusion_unet_x4.pt"), "-o", str(tmp_path / "f.onnx"), "--fp16"]) == 2


# ---- plugin ------------------------------------------------------------------------------------------------------


def test_no_model_no_backend_no_error(tmp_path, monkeypatch):
    monkeypatch.setenv("INVSR_MODELS_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr("invsr_desktop.engine.model_files.bundled_models_dir", lambda: tmp_path / "none")
    assert dp.invsr_backends() == []
    registry = _registry()
    assert not registry.failures and [s.id for s in registry.backends()] == ["bicubic"]


def test_backend_params(models_dir):
    (spec,) = dp.invsr_backends()
    assert spec.id == "diffusion" and spec.kind == "diffusion" and spec.scales == (4,)
    params = {p.name: p for p in spec.params}
    assert params["steps"].default == 4 and params["steps"].type is int and params["steps"].maximum >= 15
    assert params["seed"].type is int and params["noise"].default == 1.0
    assert "tiny_diffusion" in params["model"].choices
    with pytest.raises(ValueError, match="steps"):
        spec.resolve_params({"steps": 0})


def test_numpy_sampler_matches_torch(models_dir, exported):
    """Noise 0 (deterministic): the plugin's loop through ONNX Runtime equals the family's torch sampler."""
    _, denoiser, schedule, _ = load_diffusion(exported[0] / "model_diffusion_unet_x4.pt")
    lr = smooth_image(16, 24, seed=1)
    ours = _engine().upscale_array(lr, "diffusion", 4, {"steps": 3, "noise": 0.0})
    with torch.no_grad():
        ref = sample(denoiser, torch.from_numpy(lr.transpose(2, 0, 1))[None], schedule, 3, noise_scale=0.0)
    ref = ref[0].numpy().transpose(1, 2, 0).clip(0, 1)
    assert ours.shape == (64, 96, 3) and np.abs(ours - ref).max() < 1e-3


def test_seed_repeatable_and_noise_matters(models_dir):
    lr = smooth_image(20, 20, seed=2)
    engine = _engine()
    a = engine.upscale_array(lr, "diffusion", 4, {"seed": 1})
    b = _engine().upscale_array(lr, "diffusion", 4, {"seed": 1})
    c = engine.upscale_array(lr, "diffusion", 4, {"seed": 2})
    d = engine.upscale_array(lr, "diffusion", 4, {"seed": 1, "noise": 0.0})
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, d)


@pytest.mark.parametrize("folder", ["models_dir", "prior_models_dir"])
def test_same_seed_same_image_on_any_tiling(folder, request):
    """Tiles blended at every step, noise keyed by output position: tiled == untiled within 40 dB (and more); with
    a prior, its pass is tiled too."""
    request.getfixturevalue(folder)
    lr = smooth_image(64, 72, seed=3)
    untiled = _engine().upscale_array(lr, "diffusion", 4, {"seed": 7, "steps": 4})
    for tile, overlap in ((32, None), (40, 12)):
        tiled = _engine(tile=tile, overlap=overlap).upscale_array(lr, "diffusion", 4, {"seed": 7, "steps": 4})
        assert tiled.shape == untiled.shape == (256, 288, 3)
        assert psnr(tiled, untiled) >= 40.0, (tile, overlap, psnr(tiled, untiled))


def test_grey_alpha_and_progress_through_the_engine(models_dir):
    rgba = np.concatenate([smooth_image(12, 10), np.full((12, 10, 1), 0.5, np.float32)], axis=2)
    seen = []
    out = _engine(tile=8).upscale_array(rgba, "diffusion", 4, {"steps": 2}, progress=seen.append)
    assert out.shape == (48, 40, 4) and np.allclose(out[..., 3], 0.5, atol=1e-3)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 4
    grey = _engine().upscale_array(smooth_image(9, 11)[..., :1], "diffusion", 2, {"steps": 1})
    assert grey.shape == (18, 22, 1)  # x4 model, resampled to x2 by the engine


def test_cancel_between_tiles(models_dir):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(CancelledError):
        _engine(tile=8).upscale_array(smooth_image(24, 24), "diffusion", 4, {"steps": 4}, cancel=cancel)


# ---- the engine's whole-image contract ------------------------------------------------------------------------------


def test_tiler_map_identity_blends_exactly():
    rng = np.random.default_rng(0)
    a = rng.random((70, 90, 3)).astype(np.float32)
    b = rng.random((70, 90, 2)).astype(np.float32)
    tiler = Tiler(tile=10, overlap=4)
    seen = []
    tiler.progress = seen.append
    out = tiler.map(lambda x, y, origin: np.concatenate([x, y], axis=2), a, b, density=2, multiple=8,
                    span=(0.25, 0.5))  # fmt: skip
    assert out.shape == (70, 90, 5) and np.allclose(out, np.concatenate([a, b], axis=2), atol=1e-6)
    assert tiler.calls > 1 and seen[-1] == pytest.approx(0.5) and min(seen) > 0.25


def test_tiler_map_origins_are_positions_and_aligned():
    tiler = Tiler(tile=20, overlap=4)
    origins = []

    def fn(x, origin):
        origins.append(origin)
        return np.full(x.shape[:2] + (1,), float(origin[0] * 1000 + origin[1]), np.float32)

    tiler.map(fn, np.zeros((100, 130, 3), np.float32), multiple=16)
    assert len(origins) > 4 and all(y % 16 == 0 and x % 16 == 0 for y, x in origins)


def test_tiler_map_halves_on_out_of_memory():
    tiler = Tiler(tile=64, overlap=4)
    sizes = []

    def fn(x, origin):
        sizes.append(x.shape[0])
        if x.shape[0] > 32:
            raise RuntimeError("Failed to allocate memory for requested buffer")
        return x

    a = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    assert np.allclose(tiler.map(fn, a), a, atol=1e-6)
    assert sizes[0] == 64 and max(sizes[1:]) <= 32 and tiler.tile_side() == 32  # balanced: 3 tiles of 24


def test_other_runners_unchanged():
    """A plain runner still goes through upscale_tiled (its __call__ per tile), never run_whole."""
    engine = _engine(tile=16)
    out = engine.upscale_array(smooth_image(20, 20), "bicubic", 2)
    assert out.shape == (40, 40, 3)


def test_benchmark_command(exported, tmp_path, capsys, monkeypatch):
    from model_export.commands.bench_diffusion import main as bench_main

    monkeypatch.setattr("invsr_desktop.engine.model_files.bundled_models_dir", lambda: tmp_path / "none")
    monkeypatch.setenv("INVSR_MODELS_DIR", str(tmp_path))  # the command points it at its own folder
    model = exported[2].path
    assert bench_main(["--model", str(model), "--size", "16", "--steps", "1", "2", "--threads", "1",
                       "--tiled-check", "24", "--tile", "8", "--sheet", str(tmp_path / "sheet.png")]) == 0
    out = capsys.readouterr().out
    assert "1 steps:" in out and "2 steps:" in out and "s per output megapixel" in out
    assert "tiled vs untiled" in out and "sampled independently" in out
    assert (tmp_path / "sheet.png").stat().st_size > 1000



def test_benchmark_and_seed_spread_bring_a_models_prior_along(exported_prior, tmp_path, capsys, monkeypatch):
    """The commands run the model from a folder of their own: a prior-conditioned one needs its prior there too."""
    from model_export.commands.bench_diffusion import main as bench_main
    from model_export.commands.seed_spread import main as spread_main

    monkeypatch.setattr("invsr_desktop.engine.model_files.bundled_models_dir", lambda: tmp_path / "none")
    model = str(exported_prior[2].path)
    assert bench_main(["--model", model, "--size", "16", "--steps", "1", "--threads", "1"]) == 0
    assert "1 steps:" in capsys.readouterr().out
    assert spread_main(["--model", model, "--size", "12", "--steps", "1", "--out", str(tmp_path / "spread")]) == 0
    assert (tmp_path / "spread" / "spread.json").is_file()

def test_tiler_sizes_are_in_input_pixels():
    from invsr_desktop.engine.tiling import auto_tile_size

    auto = Tiler(budget_bytes=64 << 20, bytes_per_pixel=4096)
    assert auto.tile_side(density=4, multiple=16) == auto_tile_size(4096, 64 << 20) * 4 // 16 * 16
    assert Tiler(tile=100).tile_side(density=4, multiple=16) == 400


def test_timesteps_cover_low_noise_levels():
    cls = get_model_class("diffusion")
    cfg = load_config("diffusion_x4", ["data.folders=[]"], cls.config_defaults, data={"network": TINY_NET})
    model = cls(cfg, torch.device("cpu"), DistInfo())
    torch.manual_seed(0)
    s = model.draw_s(20000)
    assert 0 <= float(s.min()) and float(s.max()) <= 1
    eta = model.schedule.eta(s)
    low = float((eta < 3 * model.schedule.eta_min).float().mean())
    assert low > 0.05  # uniform s alone gives about 0.0006 (power 0.3)
    assert float((s > 0.5).float().mean()) > 0.2  # the high-noise steps stay covered


# ---- the sampler's memory: in place, and the same numbers as the plain formula ------------------------------------


def reference_sample(session, meta: dict, lr: np.ndarray, steps: int, seed: int, noise: float) -> np.ndarray:
    """The sampler written the plain way (whole image, one ONNX call per step, whole-image noise and temporaries):
    what the optimised runner must equal."""
    import cv2

    kappa, eta_min, eta_max, power = (float(meta[f"invsr.diffusion.{k}"]) for k in ("kappa", "eta_min", "eta_max",
                                                                                   "power"))  # fmt: skip
    h, w = lr.shape[:2]
    y0 = cv2.resize(lr, (4 * w, 4 * h), interpolation=cv2.INTER_CUBIC)

    def eps(step: int) -> np.ndarray:
        out = np.empty(y0.shape, np.float32)
        for by in range(0, y0.shape[0], 256):
            for bx in range(0, y0.shape[1], 256):
                cell = np.random.default_rng([seed, step, by // 256, bx // 256]).standard_normal((256, 256, 3),
                                                                                                 dtype=np.float32)
                part = out[by : by + 256, bx : bx + 256]
                part[...] = cell[: part.shape[0], : part.shape[1]]
        return out

    def x0_of(x: np.ndarray, s: float) -> np.ndarray:
        feeds = {"x_t": x.transpose(2, 0, 1)[None].copy(), "lr_up": y0.transpose(2, 0, 1)[None].copy(),
                 "t": np.array([s], np.float32)}  # fmt: skip
        return np.clip(session.run(["x0"], feeds)[0][0].transpose(1, 2, 0), 0, 1)

    def eta(s: float) -> float:
        return eta_min * (eta_max / eta_min) ** (s**power)

    ts = [(k - 1) / (steps - 1) for k in range(steps, 0, -1)]
    c = noise * kappa
    x = y0 + c * math.sqrt(eta(ts[0])) * eps(0)
    for i, s in enumerate(ts[:-1]):
        x0 = x0_of(x, s)
        e, p = eta(s), eta(ts[i + 1])
        x = p / e * x + (e - p) / e * x0 + c * math.sqrt(p * (e - p) / e) * eps(i + 1)
    return x0_of(x, ts[-1])


def test_sampler_equals_the_plain_formula(models_dir):
    """In-place update, noise added cell by cell, the blend into one array: the numbers of the plain sampler."""
    import onnxruntime as ort

    (model,) = dp.find_models()
    session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    lr = smooth_image(16, 72, seed=4)  # 64 x 288 output: across a noise cell border
    for steps, noise in ((3, 1.0), (2, 0.0)):
        ours = _engine().upscale_array(lr, "diffusion", 4, {"steps": steps, "seed": 3, "noise": noise})
        ref = reference_sample(session, model.metadata, lr, steps, 3, noise)
        assert ours.shape == ref.shape == (64, 288, 3)
        assert np.abs(ours - ref).max() < 1e-5, (steps, noise, np.abs(ours - ref).max())


def test_auto_picks_the_general_model_at_the_scale(models_dir):
    """``model=auto`` takes ``diffusion-x<scale>`` even where another model at the scale sorts first (the photo
    model), else the first at the scale, else the first; a named model that is missing is an error."""
    from dataclasses import replace

    (m,) = dp.find_models()
    photo, general, x2 = replace(m, id="diffusion-photo-x4"), replace(m, id="diffusion-x4"), replace(m, id="b", scale=2)
    assert dp.pick_model([photo, general, x2], "auto", 4) is general
    assert dp.pick_model([x2, photo], "auto", 4) is photo
    assert dp.pick_model([x2, photo], "auto", 3) is x2
    assert dp.pick_model([photo, general], "diffusion-photo-x4", 4) is photo
    with pytest.raises(ValueError, match="not installed"):
        dp.pick_model([general], "nope", 4)


def test_in_place_helpers_keep_the_bits():
    rng = np.random.default_rng(0)
    x = rng.random((300, 270, 3)).astype(np.float32)
    expected = x + 0.37 * dp.position_noise(9, 2, 300, 270)
    dp.add_position_noise(x, 9, 2, 0.37)
    assert np.array_equal(x, expected)
    x0 = rng.random(x.shape).astype(np.float32)
    expected = 0.8 * x + 0.2 * x0
    dp.step_update(x, x0, 0.8, 0.2)
    assert np.array_equal(x, expected)


def _traced_peak(fn) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("tile,bound", [(None, 60), (32, 48)])
def test_sampler_memory_per_output_pixel(models_dir, tile, bound):
    """Peak numpy memory of a run, in bytes per output pixel (now 48.2 and 39.3). The code before the in-place
    sampler and blend peaked at 72.2 (one tile) and 63.3 (tiles of 32 LR pixels) on this test: it fails both."""
    from model_export.commands.bench_diffusion import sampler_memory

    (spec,) = dp.invsr_backends()
    assert spec.bytes_per_pixel == dp.run_bytes_per_pixel(dp.find_models()[0])
    # ONNX Runtime: its output arrays come from its own allocator, which tracemalloc does not see, so the figure is
    # the sampler's own arrays. OpenVINO's outputs are numpy copies (12 bytes per output pixel more, traced).
    engine = Engine(registry=_registry(), options=EngineOptions(provider="cpu", threads=1, precision="fp32"))
    _, runner = engine.runner("diffusion", 4, {"steps": 3, "seed": 1})
    lr = smooth_image(128, 128, seed=5)
    runner.run_whole(lr[:16, :16], Tiler())  # the session's first run outside the measurement
    m = sampler_memory(runner, lr, Tiler(tile=tile))
    assert m["pixels"] == 512 * 512
    assert m["traced"] < bound, m
    assert m["traced"] < dp.SAMPLER_BYTES_PER_OUTPUT_PIXEL + 12  # the constant the tile size is planned with


def test_tiler_map_allocates_one_full_size_array():
    """The blend accumulates into its result; padding is seen through indices, not copied; weights are vectors."""
    a = np.random.default_rng(0).random((1000, 470, 3)).astype(np.float32)  # not a multiple of 16: padded
    result = {}
    peak = _traced_peak(lambda: result.setdefault("out", Tiler(tile=64, overlap=8).map(lambda x, origin: x, a,
                                                                                       multiple=16)))  # fmt: skip
    assert np.allclose(result["out"], a, atol=1e-6)
    assert peak < 1.2 * a.nbytes, peak / a.nbytes  # the result (padded size: 1.03) and 64-row bands (before: 2.8)


# ---- the spread across seeds (model_export/commands/seed_spread.py) ----------------------------------------------------------


def test_seed_spread_figures(models_dir):
    from model_export.commands.seed_spread import spread_map, spread_stats, upscale_seeds

    lr = smooth_image(16, 20, seed=6)
    engine = _engine()
    same = upscale_seeds(engine, lr, 4, {"steps": 2}, [5, 5])
    assert spread_map(same).shape == (64, 80) and spread_stats(same)["max"] == 0.0
    assert spread_stats(same)["psnr_to_mean_db"] == [None, None]
    differ = upscale_seeds(engine, lr, 4, {"steps": 2}, [0, 1, 2, 3])
    stats = spread_stats(differ)
    assert stats["seeds"] == 4 and 0 < stats["median"] <= stats["p99"] <= stats["max"] and stats["mean"] > 0
    assert all(p is not None and 10 < p < 80 for p in stats["psnr_to_mean_db"])
    deterministic = upscale_seeds(engine, lr, 4, {"steps": 2, "noise": 0.0}, [0, 1, 2])
    assert spread_stats(deterministic)["max"] == 0.0
    with pytest.raises(ValueError, match="two"):
        spread_map(same[:1])


def test_seed_spread_command(exported, tmp_path, capsys, monkeypatch):
    from model_export.commands.seed_spread import main as spread_main

    monkeypatch.setattr("invsr_desktop.engine.model_files.bundled_models_dir", lambda: tmp_path / "none")
    monkeypatch.setenv("INVSR_MODELS_DIR", str(tmp_path))  # the command points it at its own folder
    image = tmp_path / "in.png"
    Image.fromarray((smooth_image(40, 30, seed=7) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "spread"
    assert spread_main(["--model", str(exported[2].path), "--image", str(image), "--size", "16", "--seeds", "0", "1",
                        "--steps", "2", "--threads", "1", "--out", str(out)]) == 0  # fmt: skip
    report = json.loads((out / "spread.json").read_text())
    assert report["seeds"] == 2 and report["mean"] > 0 and report["heat_map_range"] == [0.0, 0.1]
    assert "median" in capsys.readouterr().out
    with Image.open(out / "spread.png") as picture:
        assert picture.width > 3 * picture.height  # one row of four panels


# ---- the prior-conditioned variant (diffusion.prior: y0 = a frozen regression net's output) ------------------------

TINY_PRIOR = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "residual": "nearest", "upsampler": "pixelshuffle"}


def tiny_prior_file(path, scale: int = 4, seed: int = 1):
    """A tiny random RRDBNet written as ``invsr-train esrgan`` writes its model file; its detail branch is scaled
    down so the output is an image (nearest upsample plus a few hundredths), not noise. Returns the net (eval)."""
    torch.manual_seed(seed)
    opts = {**TINY_PRIOR, "scale": scale}
    net = build_arch("rrdbnet", **opts)
    with torch.no_grad():
        net.conv_last.weight.mul_(0.1)
        net.conv_last.bias.mul_(0.1)
    ckpt_io.atomic_save({"format": ckpt_io.MODEL_FORMAT, "family": "esrgan", "arch": "rrdbnet", "arch_kwargs": opts,
                         "scale": scale, "params_ema": net.state_dict(), "config": {"name": "tiny_prior"},
                         "meta": {"step": 5, "data": ["nothing (test)"], "degradation": "bicubic"}}, path)  # fmt: skip
    return net.eval()


def _prior_model(prior_path, sets=()):
    cls = get_model_class("diffusion")
    cfg = load_config(None, [f"diffusion.prior={json.dumps(str(prior_path))}", *sets], cls.config_defaults,
                      data={"name": "tiny_prior_diffusion", "network": TINY_NET})  # fmt: skip
    return cls(cfg, torch.device("cpu"), DistInfo()), cfg


@pytest.fixture(scope="module")
def exported_prior(tmp_path_factory):
    """A tiny prior-conditioned model file (denoiser weights perturbed, as in tiny_model_file), exported."""
    folder = tmp_path_factory.mktemp("diffusion_prior_models")
    prior_net = tiny_prior_file(folder / "model_rrdbnet_x4.pt")
    model, cfg = _prior_model(folder / "model_rrdbnet_x4.pt")
    torch.manual_seed(2)
    with torch.no_grad():
        for p in model.ema.module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    exp = model.export_payload()
    ckpt_io.atomic_save({"format": ckpt_io.MODEL_FORMAT, "family": "diffusion", "arch": exp["arch"],
                         "arch_kwargs": exp["arch_kwargs"], "scale": 4, "params_ema": exp["params_ema"],
                         "prior": exp["prior"], "config": cfg,
                         "meta": {"step": 0, "data": ["nothing (test)"], "degradation": "bicubic"}},
                        folder / "model_diffusion_unet_x4.pt")  # fmt: skip
    result = export_checkpoint(folder / "model_diffusion_unet_x4.pt", folder / "models" / "tiny_prior.onnx",
                               card=True)
    return folder, prior_net, result


@pytest.fixture
def prior_models_dir(exported_prior, monkeypatch):
    return _only_models_in(exported_prior[0] / "models", monkeypatch)


def _lr_tensor(lr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(lr.transpose(2, 0, 1).copy())[None]


def test_no_prior_is_todays_model(exported):
    """prior = "" (the default): bicubic y0, nothing stored or exported beyond what the model had before."""
    from model_export.training.models.diffusion import condition

    cls = get_model_class("diffusion")
    assert cls.config_defaults["diffusion"]["prior"] == ""
    cfg = load_config("diffusion_x4", ["data.folders=[]"], cls.config_defaults, data={"network": TINY_NET})
    model = cls(cfg, torch.device("cpu"), DistInfo())
    assert model.prior is None and model.prior_net() is None
    assert set(model.state_dict()) == {"net", "ema", "opt", "schedule"}
    assert set(model.export_payload()) == {"arch", "arch_kwargs", "params_ema"}
    lr = torch.rand(1, 3, 7, 9)
    assert torch.equal(condition(lr, 4), upsample(lr, 4))
    folder, _, result = exported
    assert result.prior is None and not any(k.startswith("invsr.diffusion.prior") for k in result.metadata)
    assert not list((folder / "models").glob("*_prior.onnx"))
    (model_,) = dp.find_models([dp_model_file(result.path)])
    assert model_.prior is None


def dp_model_file(path):
    from invsr_desktop.engine.model_files import ModelFile

    return ModelFile(path=path, origin="user", metadata=dp_model_folder_meta(path))


def test_prior_config_errors(tmp_path, exported):
    from model_export.training.config import ConfigError

    tiny_prior_file(tmp_path / "x2.pt", scale=2)
    with pytest.raises(ConfigError, match=r"diffusion\.prior.*x2 model, but 'scale' is 4"):
        _prior_model(tmp_path / "x2.pt")
    with pytest.raises(ConfigError, match=r"diffusion\.prior.*not found.*missing\.pt"):
        _prior_model(tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match=r"diffusion_unet network; the prior must be an lr -> sr network"):
        _prior_model(exported[0] / "model_diffusion_unet_x4.pt")


def test_untrained_denoiser_reproduces_the_prior(tmp_path):
    """EDM preconditioning: an untrained denoiser returns y0 at noise 0, so the sampler starts at the prior's
    output (its PSNR floor). The prior is frozen: not in the optimizer, not changed by a training step."""
    prior_net = tiny_prior_file(tmp_path / "prior.pt")
    model, _ = _prior_model(tmp_path / "prior.pt", ["diffusion.eval_noise=0.0", "diffusion.eval_steps=3"])
    lr = torch.rand(1, 3, 10, 14)
    with torch.no_grad():
        y0 = prior_net(lr)
    assert torch.equal(model.prior_net()(lr), y0)
    den = model.eval_denoiser()
    assert torch.allclose(den(y0, y0, torch.tensor([0.0])), y0, atol=1e-6)
    out = model.run_eval(lr)
    assert out.shape == (1, 3, 40, 56) and torch.allclose(out, y0.clamp(0, 1), atol=1e-5)
    assert not torch.allclose(out, upsample(lr, 4).clamp(0, 1), atol=1e-2)  # the prior's, not bicubic

    trained = {id(p) for group in model.opt.param_groups for p in group["params"]}
    assert all(id(p) not in trained and not p.requires_grad for p in model.prior_net().parameters())
    before = {k: v.clone() for k, v in model.prior_net().state_dict().items()}
    hr = torch.rand(2, 3, 32, 32)
    model.optimize({"hr": hr, "lr": torch.nn.functional.avg_pool2d(hr, 4)}, 0)
    assert all(torch.equal(v, model.prior_net().state_dict()[k]) for k, v in before.items())


def test_train_with_prior_and_exact_resume(images, tmp_path, capsys):
    """Training with a prior writes it into the model file and the checkpoint; a resumed run continues with the
    stored copy (exactly as the uninterrupted run), even after the prior's file changed."""
    prior = tmp_path / "prior.pt"
    prior_net = tiny_prior_file(prior)
    sha = ckpt_io_sha(prior)
    full, parts = tmp_path / "full", tmp_path / "parts"
    _train(images, full, "--set", f"diffusion.prior={json.dumps(str(prior))}")
    _train(images, parts, "--set", f"diffusion.prior={json.dumps(str(prior))}", "--stop-at", "3")
    tiny_prior_file(prior, seed=9)  # the file moves on (as a training run's model file does)
    capsys.readouterr()
    _train(images, parts, "--set", f"diffusion.prior={json.dumps(str(prior))}", "--resume", "auto")
    assert "resuming with the copy stored in the checkpoint" in capsys.readouterr().err
    a, b = ckpt_io.load(full / "latest.pt"), ckpt_io.load(parts / "latest.pt")
    assert a["step"] == b["step"] == 6
    for k, v in a["model"]["net"].items():
        assert torch.equal(v, b["model"]["net"][k]), k
    assert b["model"]["prior"]["file"]["sha256"] == sha
    model_file = ckpt_io.load(parts / "model_diffusion_unet_x4.pt")
    stored = model_file["prior"]
    assert stored["arch"] == "rrdbnet" and stored["file"]["sha256"] == sha and stored["scale"] == 4
    for k, v in prior_net.state_dict().items():
        assert torch.equal(stored["params_ema"][k], v), k
    assert "prior" not in model_file["params_ema"] and set(model_file["params_ema"]) == set(a["model"]["net"])
    rows_a = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (parts / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert rows_a[-1]["val_psnr"] == rows_b[-1]["val_psnr"] is not None
    # a run cannot switch its condition: resuming without the prior is refused
    assert train_main(_train_args(images, parts) + ["--resume", "auto"]) == 2
    assert "but the checkpoint was trained with a prior" in capsys.readouterr().err


def ckpt_io_sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prior_export_writes_the_pair(exported_prior):
    import onnxruntime as ort

    folder, prior_net, result = exported_prior
    prior_file = folder / "models" / "tiny_prior_prior.onnx"
    assert result.prior is not None and result.prior.path == prior_file and prior_file.is_file()
    meta = dp_model_folder_meta(result.path)
    assert meta["invsr.diffusion.prior"] == "tiny_prior_prior.onnx"
    assert meta["invsr.diffusion.prior_sha256"] == ckpt_io_sha(prior_file) == result.prior.sha256
    assert "prior network's output" in meta["invsr.inputs"]
    pmeta = dp_model_folder_meta(prior_file)
    assert pmeta["invsr.backend"] == "diffusion_prior" and pmeta["invsr.arch"] == "rrdbnet"
    assert pmeta["invsr.scale"] == "4" and pmeta["invsr.source_sha256"] == ckpt_io_sha(folder / "model_rrdbnet_x4.pt")
    assert int(meta["invsr.bytes_per_pixel"]) >= int(pmeta["invsr.bytes_per_pixel"])
    assert result.prior.max_abs < 1e-4 and "tiny_prior_prior.onnx" in result.path.with_suffix(".md").read_text()
    # the prior's ONNX file against the original network (not only against the copy it was exported from)
    session = ort.InferenceSession(str(prior_file), providers=["CPUExecutionProvider"])
    lr = torch.rand(1, 3, 13, 11, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = prior_net(lr).numpy()
    (got,) = session.run(["sr"], {"lr": lr.numpy()})
    assert np.abs(got - ref).max() < 1e-4


def test_prior_sampler_through_the_engine_matches_torch(prior_models_dir, exported_prior):
    """Noise 0: the app's y0 (the prior's ONNX file, tiled by the engine) and its sampler equal the family's torch
    sampler with the prior, and differ from a bicubic y0."""
    from model_export.export_diffusion import load_prior

    folder = exported_prior[0]
    from invsr_desktop.engine.model_files import scan

    (model,) = dp.find_models()  # the prior is no diffusion model of its own, nor an ESRGAN one
    assert model.prior == prior_models_dir / "tiny_prior_prior.onnx" and scan("esrgan") == []
    _, denoiser, schedule, _ = load_diffusion(folder / "model_diffusion_unet_x4.pt")
    _, prior_net = load_prior(folder / "model_diffusion_unet_x4.pt")
    lr = smooth_image(16, 24, seed=1)
    ours = _engine().upscale_array(lr, "diffusion", 4, {"steps": 3, "noise": 0.0})
    with torch.no_grad():
        ref = sample(denoiser, _lr_tensor(lr), schedule, 3, noise_scale=0.0, prior=prior_net)
        bicubic = sample(denoiser, _lr_tensor(lr), schedule, 3, noise_scale=0.0)
    ref, bicubic = (t[0].numpy().transpose(1, 2, 0).clip(0, 1) for t in (ref, bicubic))
    assert ours.shape == (64, 96, 3) and np.abs(ours - ref).max() < 1e-3
    assert np.abs(ours - bicubic).max() > 1e-2


def test_prior_pass_is_tiled_and_progress_counts_it(prior_models_dir):
    _, runner = _engine().runner("diffusion", 4, {"steps": 2, "seed": 1})
    assert runner.prior_session is not None
    lr = smooth_image(40, 40, seed=8)
    seen = []
    tiler = Tiler(tile=16, overlap=4, progress=seen.append)
    out = runner.run_whole(lr, tiler)
    whole = runner.run_whole(lr, Tiler())
    assert out.shape == whole.shape == (160, 160, 3) and psnr(out, whole) >= 40.0
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    assert any(0 < f <= 1 / 3 + 1e-6 for f in seen)  # the prior's third of the run (2 steps + 1 prior pass)
    packed = np.random.default_rng(0).random((5, 7, 48)).astype(np.float32)
    assert np.array_equal(dp.pack(dp.unpack(packed, 4), 4), packed)


def _copy_models(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", ["missing", "other_file"])
def test_prior_missing_or_mismatched_is_a_clear_error(exported_prior, tmp_path, monkeypatch, damage):
    from invsr_desktop.engine.errors import ModelFileError
    from invsr_desktop.engine.registry import BackendBuildError

    folder = _copy_models(exported_prior[0] / "models", tmp_path / "models")
    monkeypatch.setenv("INVSR_MODELS_DIR", str(folder))
    monkeypatch.setattr("invsr_desktop.engine.model_files.bundled_models_dir", lambda: tmp_path / "none")
    prior = folder / "tiny_prior_prior.onnx"
    if damage == "missing":
        prior.unlink()
        expected = "missing"
    else:  # another (valid) prior file under the expected name: the pair no longer matches
        import onnx

        m = onnx.load(str(prior))
        onnx.helper.set_model_props(m, {**{p.key: p.value for p in m.metadata_props}, "invsr.name": "other"})
        onnx.save(m, str(prior))
        expected = "not the one tiny_prior.onnx was exported with"
    with pytest.raises(BackendBuildError) as info:
        _engine().upscale_array(smooth_image(8, 8), "diffusion", 4, {"steps": 1})
    assert isinstance(info.value.__cause__, ModelFileError)
    assert expected in str(info.value) and str(prior) in str(info.value), str(info.value)


@pytest.mark.parametrize("name", ["../elsewhere.onnx", "/tmp/x.onnx", "prior.bin"])
def test_prior_name_in_metadata_stays_in_the_folder(tmp_path, name):
    from invsr_desktop.engine.errors import ModelFileError

    meta = {"invsr.diffusion.prior": name, "invsr.diffusion.prior_sha256": "0" * 64}
    with pytest.raises(ModelFileError, match="invsr.diffusion.prior"):
        dp._prior_of(meta, tmp_path / "m.onnx")
    with pytest.raises(ModelFileError, match="not a sha256"):
        dp._prior_of({"invsr.diffusion.prior": "p.onnx", "invsr.diffusion.prior_sha256": "abc"}, tmp_path / "m.onnx")


def test_prior_sampler_memory(prior_models_dir):
    """The prior's pass (packed blend, then y0) stays under the sampler's own peak per output pixel."""
    from model_export.commands.bench_diffusion import sampler_memory

    _, runner = _engine().runner("diffusion", 4, {"steps": 3, "seed": 1})
    lr = smooth_image(128, 128, seed=5)
    runner.run_whole(lr[:16, :16], Tiler())
    m = sampler_memory(runner, lr, Tiler(tile=32))
    assert m["traced"] < dp.SAMPLER_BYTES_PER_OUTPUT_PIXEL + 12, m


def test_prior_config_loads():
    """The prior-conditioned config: diffusion_x4's network and schedule, a prior, bicubic LRs, a smaller
    sigma_data (the residual left by a regression net is smaller than bicubic's)."""
    cls = get_model_class("diffusion")
    cfg = load_config("diffusion_prior_x4", [], cls.config_defaults)
    base = load_config("diffusion_x4", [], cls.config_defaults)
    assert cfg["diffusion"]["prior"].endswith(".pt") and cfg["data"]["degradation"] == "bicubic"
    assert cfg["network"] == base["network"] and cfg["diffusion"]["kappa"] == base["diffusion"]["kappa"]
    assert 0 < cfg["diffusion"]["sigma_data"] < base["diffusion"]["sigma_data"]


# ---- adversarial stage (diffusion GAN) ---------------------------------------------------------------------------

GAN_SETS = ["loss.gan.type=\"ragan\"", "loss.gan.weight=0.5", "loss.gan.adaptive=true", "loss.gan.highpass_sigma=2.0",
            "loss.frequency.type=\"frequency\"", "loss.frequency.weight=1.0", "loss.frequency.windows=[8]",
            "network_d.num_feat=4", "gan.d_init_steps=1", "gan.d_lr=1e-3"]  # fmt: skip


def test_adversarial_stage_starts_from_a_denoiser_and_resumes_exactly(images, tmp_path):
    """diffusion.init_from + a ragan term: the denoiser starts from the trained one (model file or latest.pt), a
    discriminator judges its x0, the first step trains the discriminator alone, and a resumed run is exact. A
    denoiser of another prior starts a run only with diffusion.init_new_prior."""
    _train(images, tmp_path / "base")
    init = tmp_path / "base" / "model_diffusion_unet_x4.pt"
    sets = [f"diffusion.init_from={json.dumps(str(init))}", *GAN_SETS]
    extra = [a for s in sets for a in ("--set", s)]
    full, parts = tmp_path / "full", tmp_path / "parts"
    _train(images, full, *extra)
    _train(images, parts, *extra, "--stop-at", "3")
    _train(images, parts, *extra, "--resume", "auto")

    a, b = ckpt_io.load(full / "latest.pt"), ckpt_io.load(parts / "latest.pt")
    for key in ("net", "net_d"):
        for k, v in a["model"][key].items():
            assert torch.equal(v, b["model"][key][k]), (key, k)
    rows = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [json.loads(x)["loss"] for x in (parts / "log.jsonl").read_text().splitlines()]
    assert "w_gan" not in rows[0] and all(0 < r["w_gan"] <= 10 for r in rows[1:])  # step 1: the discriminator alone
    assert all({"l_pixel", "l_frequency", "l_d", "d_real", "d_fake"} <= set(r) for r in rows)

    # the start was the trained denoiser: after the discriminator-only step the weights are still init's
    start = ckpt_io.load(init)["params_ema"]
    one = tmp_path / "one"
    _train(images, one, *extra, "--stop-at", "1")
    for k, v in ckpt_io.load(one / "latest.pt")["model"]["net"].items():
        assert torch.equal(v, start[k]), k
    # a latest.pt is a start too; a denoiser of another prior is refused
    from model_export.training.config import ConfigError

    cls = get_model_class("diffusion")
    cfg = load_config("diffusion_x4", ["data.folders=[]", *_train_sets(images)[:len(TINY_NET)],
                                       f"diffusion.init_from={json.dumps(str(tmp_path / 'base' / 'latest.pt'))}"],
                      cls.config_defaults)
    model = cls(cfg, torch.device("cpu"), DistInfo())
    assert model.adversary is None
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, ckpt_io.load(tmp_path / "base" / "latest.pt")["model"]["ema"]["params"][k]), k
    tiny_prior_file(tmp_path / "prior.pt")
    with pytest.raises(ConfigError, match=r"diffusion\.init_from.*another prior"):
        _prior_model(tmp_path / "prior.pt", [f"diffusion.init_from={json.dumps(str(init))}"])
    # ... unless the run says it is a fine-tune onto a new prior
    moved, _ = _prior_model(tmp_path / "prior.pt", [f"diffusion.init_from={json.dumps(str(init))}",
                                                    "diffusion.init_new_prior=true"])
    for k, v in moved.net.state_dict().items():
        assert torch.equal(v, start[k]), k


def test_adversarial_stage_judges_only_the_low_noise_half(images, tmp_path):
    """gan.max_s: the first half of each batch is drawn at s <= max_s and only it reaches the discriminator; the
    rest keeps the full range of levels. Without it (max_s 1) every sample is judged, as before."""
    from model_export.training.config import ConfigError

    cls = get_model_class("diffusion")

    def model(*sets):
        cfg = load_config("diffusion_x4", ["data.folders=[]", *_train_sets(images)[:len(TINY_NET)], *GAN_SETS, *sets],
                          cls.config_defaults)
        return cls(cfg, torch.device("cpu"), DistInfo())

    low = model("gan.max_s=0.25")
    torch.manual_seed(0)
    s = low.draw_s(400)
    assert low.judged_count(400) == 200 and low.judged_count(5) == 3
    assert float(s[:200].max()) <= 0.25 and float(s[200:].max()) > 0.9
    every = model()
    torch.manual_seed(0)
    assert every.judged_count(400) == 400 and torch.equal(every.draw_s(400)[:200] * 0.25, s[:200])

    seen = []
    discriminate = low.adversary.discriminate
    low.adversary.discriminate = lambda hr, sr, train=False: seen.append(len(sr)) or discriminate(hr, sr, train)
    hr = torch.rand(4, 3, 32, 32)
    low.optimize({"hr": hr, "lr": torch.nn.functional.avg_pool2d(hr, 4)}, step=5)
    assert seen == [2]
    with pytest.raises(ConfigError, match="gan.max_s"):
        model("gan.max_s=0")


def test_trajectory_stage_trains_on_the_samplers_own_image(images):
    """gan.trajectory_steps: the judged half of each batch is the image the app's sampler makes (same noise, same
    result as ``sample``), with the gradient reaching the denoiser; split sampling runs equal whole ones."""
    from model_export.training.config import ConfigError
    from model_export.training.models.diffusion import condition, initial_state, sampler_steps

    cls = get_model_class("diffusion")

    def model(*sets):
        cfg = load_config("diffusion_x4", ["data.folders=[]", *_train_sets(images)[:len(TINY_NET)], *sets],
                          cls.config_defaults)
        return cls(cfg, torch.device("cpu"), DistInfo())

    m = model(*GAN_SETS, "gan.trajectory_steps=4")
    lr = torch.rand(2, 3, 8, 8)
    torch.manual_seed(3)
    whole = sample(m.denoiser, lr, m.schedule, 4)
    y0 = condition(lr, 4)
    torch.manual_seed(3)
    traj = m.trajectory_prediction(y0)
    assert traj.requires_grad and torch.allclose(traj, whole, atol=1e-6)
    traj.mean().backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.net.parameters())

    noise = lambda: torch.randn_like(y0)  # noqa: E731
    torch.manual_seed(3)
    x = sampler_steps(m.denoiser, initial_state(y0, m.schedule, 4, 1.0, noise), y0, m.schedule, 4, 0, 1, 1.0, noise)
    split = sampler_steps(m.denoiser, x, y0, m.schedule, 4, 1, 4, 1.0, noise)
    assert torch.allclose(split, whole, atol=1e-6)

    seen = []
    discriminate = m.adversary.discriminate
    m.adversary.discriminate = lambda hr, sr, train=False: seen.append(len(sr)) or discriminate(hr, sr, train)
    hr = torch.rand(4, 3, 32, 32)
    out = m.optimize({"hr": hr, "lr": torch.nn.functional.avg_pool2d(hr, 4)}, step=5)
    assert seen == [2] and math.isfinite(out["loss"])
    with pytest.raises(ConfigError, match="trajectory_steps"):
        model("gan.trajectory_steps=4")  # no adversarial term
