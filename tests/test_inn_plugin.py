"""The INN plugin: no model -> no backend and no error; a freshly exported tiny model -> "INN upscale / restore" and
"INN shrink" through the engine's tiling, ONNX Runtime against PyTorch, position-keyed z (same seed, any tiling)."""

import numpy as np
import pytest
import torch

import plugins.inn as inn
from invsr_desktop.engine.pipeline import Engine, EngineOptions
from invsr_desktop.engine.registry import Registry
from invsr_desktop.engine.tiling import upscale_tiled

# the tiny exported models come from the ``inn_models`` / ``models_dir`` fixtures of conftest.py


def _registry() -> Registry:
    import plugins.bicubic

    registry = Registry()
    registry.register(plugins.bicubic, "bicubic")
    registry.register(inn, "inn")
    return registry


def test_no_model_no_backend_no_error(tmp_path, monkeypatch):
    monkeypatch.setenv("INVSR_MODELS_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr("invsr_desktop.engine.model_files.bundled_models_dir", lambda: tmp_path / "none")
    assert inn.invsr_backends() == []
    registry = _registry()
    assert not registry.failures
    assert [s.id for s in registry.backends()] == ["bicubic"]


def test_backends_from_metadata(models_dir):
    specs = {s.id: s for s in inn.invsr_backends()}
    assert set(specs) == {"inn", "inn-shrink"}
    assert specs["inn"].scales == (2, 4) and specs["inn"].direction == "up" and specs["inn"].kind == "inn"
    assert specs["inn-shrink"].direction == "down" and specs["inn-shrink"].restored_by == "inn"
    params = {p.name: p for p in specs["inn"].params}
    assert params["temperature"].default == 0.0 and "tiny_x4" in params["model"].choices


def test_position_noise_is_keyed_by_pixel():
    whole = inn.position_noise(7, 5, (0, 0), 20, 30)
    part = inn.position_noise(7, 5, (6, 11), 9, 13)
    assert np.array_equal(whole[:, 6:15, 11:24], part)
    assert not np.array_equal(inn.position_noise(8, 5, (0, 0), 20, 30), whole)
    big = inn.position_noise(1, 45, (0, 0), 64, 64)
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1) < 0.02


@pytest.mark.parametrize("scale", [2, 4])
def test_up_runner_matches_torch(models_dir, scale):
    _, nets = models_dir
    engine = Engine(_registry(), EngineOptions(threads=1))
    lr = np.random.default_rng(0).random((13, 17, 3)).astype(np.float32)
    sr = engine.upscale_array(lr, "inn", scale, {"model": f"tiny_x{scale}"})
    with torch.no_grad():
        ref = nets[scale].inverse(torch.from_numpy(lr.transpose(2, 0, 1))[None], None)
    ref = ref[0].numpy().transpose(1, 2, 0).clip(0, 1)
    assert sr.shape == (13 * scale, 17 * scale, 3)
    assert np.abs(sr - ref).max() < 1e-4


def test_down_runner_matches_torch_and_tiles(models_dir):
    _, nets = models_dir
    engine = Engine(_registry(), EngineOptions(threads=1))
    spec, runner = engine.runner("inn-shrink", 4, {})
    assert runner.scale == 0.25 and runner.multiple == 4 and runner.model_name == "tiny_x4"
    hr = np.random.default_rng(1).random((52, 68, 3)).astype(np.float32)
    whole = runner(hr)
    with torch.no_grad():
        ref, _ = nets[4](torch.from_numpy(hr.transpose(2, 0, 1))[None])
    assert np.abs(whole - ref[0].numpy().transpose(1, 2, 0)).max() < 1e-4
    tiled = upscale_tiled(hr, runner, tile=32, overlap=8)
    assert tiled.shape == (13, 17, 3)
    # tiles see less context at their borders; the blend keeps the difference small
    assert np.abs(tiled - whole).mean() < 0.01


def test_sampled_z_same_image_on_any_tiling(models_dir):
    lr = np.random.default_rng(2).random((40, 36, 3)).astype(np.float32)
    params = {"temperature": 0.8, "seed": 3, "model": "tiny_x2"}
    outs = []
    for tile in (None, 16, 24):
        engine = Engine(_registry(), EngineOptions(threads=1, tile=tile, overlap=8))
        outs.append(engine.upscale_array(lr, "inn", 2, params))
    mean = Engine(_registry(), EngineOptions(threads=1)).upscale_array(lr, "inn", 2, {"model": "tiny_x2"})
    assert np.abs(outs[0] - mean).max() > 1e-3  # the temperature does something
    for other in outs[1:]:
        # only the tiles' border context differs, never the noise
        assert np.abs(other - outs[0]).mean() < 0.01 * np.abs(outs[0] - mean).mean() + 1e-3
    different_seed = Engine(_registry(), EngineOptions(threads=1)).upscale_array(lr, "inn", 2, {**params, "seed": 4})
    assert np.abs(different_seed - outs[0]).max() > 1e-3


def test_shrink_backend_refuses_to_upscale(models_dir):
    engine = Engine(_registry(), EngineOptions(threads=1))
    with pytest.raises(ValueError, match="shrink"):
        engine.upscale_array(np.zeros((8, 8, 3), np.float32), "inn-shrink", 4)


def test_unknown_model_is_a_clear_error(models_dir):
    engine = Engine(_registry(), EngineOptions(threads=1))
    with pytest.raises(ValueError, match="must be one of"):
        engine.upscale_array(np.zeros((8, 8, 3), np.float32), "inn", 4, {"model": "nope"})
