"""The esrgan plugin: one backend per ONNX model in the model folders, described from metadata only, run by the engine.

Models are made here: a tiny RRDBNet exported with invsr-export (random weights, x2, so the engine must pad to the
pixel-unshuffle's multiple of 2), and hand-written ONNX graphs for the folder-scanning cases.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from invsr_desktop.engine.pipeline import Engine, EngineOptions
from invsr_desktop.engine.registry import BackendBuildError, Registry
from invsr_desktop.engine import model_files as model_folder
from invsr_desktop.engine.model_files import problems, read_metadata, user_models_dir


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    """An empty user model folder (INVSR_MODELS_DIR) and no bundled models; only the esrgan plugin loads."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("INVSR_MODELS_DIR", str(folder))
    monkeypatch.setenv("INVSR_PLUGINS", "esrgan")
    monkeypatch.setattr(model_folder, "bundled_models_dir", lambda: tmp_path / "no-bundled-models")
    return folder


def load_registry() -> Registry:
    registry = Registry()
    registry.load_entry_points()
    return registry


def nearest_model(path: Path, scale: int, props: dict[str, str], input_name: str = "lr", weights: int = 0) -> Path:
    """A hand-made model: nearest upscaling by ``scale`` (plus ``weights`` unused float32 values, to make it big)."""
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, float(scale), float(scale)])
    inits = [scales]
    if weights:
        inits.append(onnx.numpy_helper.from_array(np.zeros(weights, np.float32), "unused"))
    graph = helper.make_graph(
        [helper.make_node("Resize", [input_name, "", "scales"], ["sr"], mode="nearest")],
        "nearest",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, [1, 3, "out_height", "out_width"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def esrgan_props(scale: int, name: str, **extra: str) -> dict[str, str]:
    return {"invsr.backend": "esrgan", "invsr.arch": "nearest-test", "invsr.scale": str(scale), "invsr.version": "0",
            "invsr.trained_on": "nothing", "invsr.name": name, **extra}


@pytest.fixture(scope="module")
def tiny_x2(tmp_path_factory):
    """A tiny Real-ESRGAN-style x2 RRDBNet exported with invsr-export, and the PyTorch net it came from."""
    torch = pytest.importorskip("torch")
    from model_export import export
    from model_export.archs import build_arch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        options = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "scale": 2, "residual": "nearest"}
        net = build_arch("rrdbnet", **options).eval()
        folder = tmp_path_factory.mktemp("tiny-x2")
        ckpt = folder / "model_rrdbnet_x2.pt"
        torch.save({"format": "invsr-model/1", "arch": "rrdbnet", "arch_kwargs": options, "scale": 2,
                    "params_ema": net.state_dict(), "config": {"name": "tiny"}, "meta": {}}, ckpt)
        out = folder / "esrgan-tiny-x2.onnx"
        assert export.main([str(ckpt), "-o", str(out), "--name", "Tiny test x2", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out, net


def test_model_in_user_folder_is_a_backend_and_upscales(models, tiny_x2):
    torch = pytest.importorskip("torch")
    source, net = tiny_x2
    (models / source.name).write_bytes(source.read_bytes())

    registry = load_registry()
    assert registry.failures == []
    spec = registry.get("esrgan-tiny-x2")
    assert registry.owner("esrgan-tiny-x2") == "esrgan"
    assert (spec.name, spec.kind, spec.scales) == ("Tiny test x2", "gan", (2,))
    assert spec.info["file"] == str(models / source.name) and spec.info["origin"] == "user"
    assert spec.info["invsr.input_multiple"] == "2"

    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (15, 13, 3)).astype(np.float32)  # odd: the engine pads to the multiple of 2
    engine = Engine(registry=registry, options=EngineOptions(threads=1, precision="fp32"))
    out = engine.upscale_array(image, "esrgan-tiny-x2", 2)

    assert out.shape == (30, 26, 3) and out.dtype == np.float32
    padded = np.pad(image, ((0, 1), (0, 1), (0, 0)), mode="reflect")  # the engine's bottom/right reflection
    with torch.no_grad():
        expected = net(torch.from_numpy(padded.transpose(2, 0, 1)[None].copy()))[0].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(out, np.clip(expected[:30, :26], 0, 1), atol=1e-4)
    assert engine.runner("esrgan-tiny-x2", 2)[1].multiple == 2


def test_tta_averages_the_eight_flips_and_turns(models, tiny_x2):
    """TTA = the mean of the net over the 8 dihedral transforms of the input, each turned back (checked against
    PyTorch), so its output commutes with a flip of the input, which a plain run of a random net does not."""
    torch = pytest.importorskip("torch")
    from plugins.onnx_runner import dihedral, undo_dihedral

    source, net = tiny_x2
    (models / source.name).write_bytes(source.read_bytes())
    registry = load_registry()
    assert [p.name for p in registry.get("esrgan-tiny-x2").params] == ["tta", "colour_fix"]
    engine = Engine(registry=registry, options=EngineOptions(threads=1, precision="fp32"))
    image = np.random.default_rng(1).uniform(0, 1, (12, 10, 3)).astype(np.float32)  # even, not square: no padding

    seen: list[float] = []
    out = engine.upscale_array(image, "esrgan-tiny-x2", 2, params={"tta": "on"}, progress=seen.append)
    assert sorted(set(seen)) == pytest.approx([k / 8 for k in range(1, 9)])  # one tile, 8 passes: it moves

    def torch_net(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))[0].numpy().transpose(1, 2, 0)

    expected = np.mean([undo_dihedral(torch_net(dihedral(image, k)), k) for k in range(8)], axis=0)
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-4)
    mirrored = engine.upscale_array(image[:, ::-1].copy(), "esrgan-tiny-x2", 2, params={"tta": True})
    np.testing.assert_allclose(mirrored[:, ::-1], out, atol=1e-5)
    plain = engine.upscale_array(image[:, ::-1].copy(), "esrgan-tiny-x2", 2)
    assert np.abs(plain[:, ::-1] - engine.upscale_array(image, "esrgan-tiny-x2", 2)).max() > 1e-3


def test_dihedral_transforms_are_the_eight_distinct_ones_and_undo():
    from plugins.onnx_runner import dihedral, undo_dihedral

    image = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    seen = {dihedral(image, k).tobytes() + bytes(dihedral(image, k).shape) for k in range(8)}
    assert len(seen) == 8
    for k in range(8):
        np.testing.assert_array_equal(undo_dihedral(dihedral(image, k), k), image)


def test_colour_fix_removes_a_colour_shift_and_keeps_detail():
    """colour_fixed: a darker, bluer output gets the input's colours back; the fine detail a model adds stays."""
    import cv2

    from plugins.onnx_runner import colour_fixed

    rng = np.random.default_rng(0)
    lr = cv2.GaussianBlur(rng.uniform(0.2, 0.8, (24, 20, 3)).astype(np.float32), (0, 0), 2.0)
    up = cv2.resize(lr, (80, 96), interpolation=cv2.INTER_CUBIC)
    detail = 0.05 * (np.indices((96, 80)).sum(axis=0)[..., None] % 2)  # a one-pixel checkerboard: pure detail
    shifted = up * np.float32([0.95, 0.95, 1.0]) + np.float32([0.0, 0.0, 0.03]) + detail
    fixed = colour_fixed(lr, shifted)
    shrunk = cv2.resize(fixed, (20, 24), interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk.mean(axis=(0, 1)) - lr.mean(axis=(0, 1))).max() < 2e-3
    assert np.abs(shifted.mean(axis=(0, 1)) - lr.mean(axis=(0, 1))).max() > 0.02
    kept = fixed - cv2.GaussianBlur(fixed, (0, 0), 2.0)
    added = shifted - cv2.GaussianBlur(shifted, (0, 0), 2.0)
    np.testing.assert_allclose(kept[8:-8, 8:-8], added[8:-8, 8:-8], atol=5e-3)


def test_colour_fix_is_on_by_default_for_models_trained_on_noisy_photos(models):
    photo = {"invsr.training": '{"degradation": "real_photo", "step": 5}'}
    nearest_model(models / "photo-x2.onnx", 2, esrgan_props(2, "Photo", **photo))
    nearest_model(models / "clean-x2.onnx", 2, esrgan_props(2, "Clean", **{"invsr.training": "not json"}))
    registry = load_registry()
    assert registry.get("photo-x2").defaults() == {"tta": False, "colour_fix": True}
    assert registry.get("clean-x2").defaults() == {"tta": False, "colour_fix": False}
    image = np.random.default_rng(0).uniform(0, 1, (8, 8, 3)).astype(np.float32)
    engine = Engine(registry=registry, options=EngineOptions(threads=1, precision="fp32"))
    nearest = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    np.testing.assert_allclose(engine.upscale_array(image, "clean-x2", 2), nearest, atol=1e-6)
    assert engine.runner("photo-x2", 2)[1].colour_fix and not engine.runner("clean-x2", 2)[1].colour_fix
    assert not engine.runner("photo-x2", 2, {"colour_fix": "off"})[1].colour_fix
    # nearest upscaling shrinks back to its input exactly: no drift, nothing changed
    np.testing.assert_allclose(engine.upscale_array(image, "photo-x2", 2), nearest, atol=1e-6)


def test_scale_comes_from_metadata_not_the_file_name(models):
    nearest_model(models / "esrgan-misnamed-x4.onnx", 2, esrgan_props(2, "Misnamed"))
    registry = load_registry()
    spec = registry.get("esrgan-misnamed-x4")
    assert spec.scales == (2,)
    image = np.random.default_rng(1).uniform(0, 1, (5, 4, 3)).astype(np.float32)
    out = Engine(registry=registry, options=EngineOptions(threads=1, precision="fp32")).upscale_array(image, spec.id, 2)
    np.testing.assert_allclose(out, image.repeat(2, axis=0).repeat(2, axis=1), atol=1e-6)


def test_bad_files_are_skipped_and_reported_without_hiding_good_ones(models):
    good = nearest_model(models / "esrgan-good-x2.onnx", 2, esrgan_props(2, "Good"))
    (models / "garbage.onnx").write_bytes(os.urandom(3000))
    (models / "empty.onnx").write_bytes(b"")
    (models / "truncated.onnx").write_bytes(good.read_bytes()[:150])
    nearest_model(models / "no-metadata.onnx", 2, {})
    nearest_model(models / "bad-scale.onnx", 2, esrgan_props(2, "Bad", **{"invsr.scale": "four"}))
    nearest_model(models / "other-plugin.onnx", 2, {**esrgan_props(2, "INN"), "invsr.backend": "inn"})
    (models / "notes.txt").write_text("not a model")

    registry = load_registry()

    assert [s.id for s in registry.backends()] == ["esrgan-good-x2"]
    assert registry.failures == []
    bad = {"garbage.onnx", "empty.onnx", "truncated.onnx", "no-metadata.onnx", "bad-scale.onnx"}
    # The registry collects the skipped files (shown by --list-backends and the plugins dialog) as the model
    # folder's problems, not as the fault of whichever plugin happened to read the file first.
    from invsr_desktop.engine.registry import MODEL_FILES

    assert registry.warnings and all(w.plugin == MODEL_FILES for w in registry.warnings)
    warned = " ".join(w.message for w in registry.warnings)
    assert all(name in warned for name in bad)
    reported = {path.name for path, _ in problems() if path.parent == models}
    assert reported == bad
    reasons = {path.name: reason for path, reason in problems() if path.parent == models}
    assert "invsr.backend" in reasons["no-metadata.onnx"] and "invsr.scale" in reasons["bad-scale.onnx"]


def test_metadata_is_read_without_reading_the_weights(tmp_path, monkeypatch):
    path = nearest_model(tmp_path / "big.onnx", 4, esrgan_props(4, "Big"), weights=2_000_000)  # 8 MB of weights
    expected = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    read = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def read(self, n=-1):
            data = self.f.read(n)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(model_folder, "open", lambda p, mode="r": Counting(real_open(p, mode)), raising=False)
    assert read_metadata(path) == expected
    assert read and path.stat().st_size > 8_000_000 and sum(read) < 4096


def test_user_file_shadows_a_bundled_one(models, tmp_path, monkeypatch):
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    monkeypatch.setattr(model_folder, "bundled_models_dir", lambda: bundled)
    nearest_model(bundled / "esrgan-a.onnx", 2, esrgan_props(2, "Bundled A"))
    nearest_model(bundled / "esrgan-b.onnx", 4, esrgan_props(4, "Bundled B"))
    nearest_model(models / "esrgan-a.onnx", 2, esrgan_props(2, "User A"))
    registry = load_registry()
    by_id = {s.id: s for s in registry.backends()}
    assert sorted(by_id) == ["esrgan-a", "esrgan-b"]
    assert by_id["esrgan-a"].name == "User A" and by_id["esrgan-a"].info["origin"] == "user"
    assert by_id["esrgan-b"].info["origin"] == "bundled"


def test_wrong_input_name_fails_at_build_naming_the_file(models):
    path = nearest_model(models / "esrgan-wrong-io.onnx", 2, esrgan_props(2, "Wrong"), input_name="x")
    registry = load_registry()
    engine = Engine(registry=registry, options=EngineOptions(threads=1, precision="fp32"))
    with pytest.raises(BackendBuildError, match="esrgan-wrong-io") as exc:
        engine.upscale_array(np.zeros((4, 4, 3), np.float32), "esrgan-wrong-io", 2)
    assert str(path) in str(exc.value)


def test_user_models_dir_follows_env_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("INVSR_MODELS_DIR", str(tmp_path / "explicit"))
    assert user_models_dir() == tmp_path / "explicit"
    monkeypatch.delenv("INVSR_MODELS_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert user_models_dir() == tmp_path / "xdg" / "invsr-desktop" / "models"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_models_dir() == tmp_path / "home" / ".local" / "share" / "invsr-desktop" / "models"
