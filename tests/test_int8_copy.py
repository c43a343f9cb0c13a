"""Precision ``fast`` on a CPU without native bf16: a model's int8 copy (``invsr-quantize``) stands in for it, only
when the copy is of this very file and passed the 45 dB check, and never where the user or the backend asks fp32.

The real bundled esrgan-faithful-x4 is quantized here, calibrated on the bundled sample photo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from invsr_desktop.engine import model_files, openvino_sessions
from invsr_desktop.engine import model_metadata as keys
from invsr_desktop.engine.sessions import SessionPool
from invsr_desktop.resources import MODELS
from model_export import quantize

SAMPLES = MODELS.parent / "samples"
FAITHFUL = MODELS / "esrgan-faithful-x4.onnx"
ON_CPU = ["OpenVINO", "CPUExecutionProvider"]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> Path:
    """A copy of esrgan-faithful-x4 with its int8 copy beside it, made by the command."""
    folder = tmp_path_factory.mktemp("int8")
    model = folder / "my-esrgan-x4.onnx"  # another name: a user model named as a bundled one would replace it
    shutil.copyfile(FAITHFUL, model)
    assert quantize.main([str(model), "--calibration", str(SAMPLES), "--count", "8", "--patch", "32"]) == 0
    return model


@pytest.fixture()
def no_bf16(monkeypatch):
    monkeypatch.setattr(openvino_sessions, "bf16_supported", lambda core: False)


def test_the_copy_carries_its_check_and_the_sha256_of_its_model(quantized):
    copy = model_files.int8_copy_path(quantized)
    assert copy.name == "my-esrgan-x4.int8.onnx"
    meta = model_files.read_metadata(copy)
    check = json.loads(meta[keys.INT8_CHECK])
    assert meta[keys.PRECISION] == "int8" and meta[keys.INT8_OF] == model_files.file_sha256(quantized)
    assert check["mean_psnr"] >= model_files.FAST_MIN_PSNR and check["worst_psnr"] <= check["mean_psnr"]
    convs = [name for name in check["float"] if name.endswith("Conv")]
    assert convs == ["/conv_first/Conv", *(f"/body/body.0/rdb{i}/conv5/Conv" for i in (1, 2, 3)), "/conv_body/Conv",
                     "/conv_last/Conv"]  # the ends, and what reaches the skip around the trunk
    ops = {node.op_type for node in onnx.load(str(copy)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert model_files.int8_copy(quantized) == copy


def test_fast_runs_the_copy_and_says_so_and_fp32_never_does(quantized, no_bf16):
    (x,) = quantize.calibration_patches(SAMPLES, 4, 1, 24, 1, seed=5)  # a photo: uniform noise is no photo
    fast = SessionPool(provider="cpu", threads=1, precision="fast")
    full = SessionPool(provider="cpu", threads=1, precision="fp32")
    got, reference = (pool.session(quantized).run(None, {"lr": x})[0] for pool in (fast, full))
    assert fast.paths_in_use() == ["ONNX Runtime CPU int8"]
    assert full.paths_in_use() == ["ONNX Runtime CPU"]
    psnr = 10 * np.log10(1.0 / float(np.mean((np.clip(got, 0, 1) - np.clip(reference, 0, 1)) ** 2)))
    assert 35 < psnr < 80  # int8 ran (not the fp32 file), and it agrees with fp32


def test_a_backend_that_asks_fp32_for_its_model_gets_the_fp32_file(quantized, no_bf16):
    pool = SessionPool(provider="cpu", threads=1, precision="fast")
    pool.session(quantized, precision="fp32")
    assert pool.paths_in_use() == ["ONNX Runtime CPU"]


def test_openvino_on_a_cpu_with_native_bf16_runs_bf16_not_the_copy(quantized, monkeypatch):
    if openvino_sessions.openvino_core() is None:
        pytest.skip("OpenVINO not installed")
    monkeypatch.setattr(openvino_sessions, "bf16_supported", lambda core: True)
    pool = SessionPool(provider="openvino", threads=1, precision="fast")
    pool.session(quantized)
    assert pool.paths_in_use() == ["OpenVINO bf16"]


def test_auto_on_a_cpu_with_native_bf16_races_bf16_against_the_copy(quantized, monkeypatch, tmp_path):
    """Whichever measures faster here: OpenVINO bf16 on the model, or ONNX Runtime on its int8 copy. The choice is
    remembered under both files (a race of the model alone, from before the copy existed, does not decide it)."""
    if openvino_sessions.openvino_core() is None:
        pytest.skip("OpenVINO not installed")
    monkeypatch.setattr(openvino_sessions, "bf16_supported", lambda core: True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    pool = SessionPool(threads=1, precision="fast", available=lambda: ON_CPU)
    (x,) = quantize.calibration_patches(SAMPLES, 4, 1, 160, 1, seed=5)  # long enough to time (20 ms)
    pool.session(quantized).run(None, {"lr": x})
    (ran,) = pool.paths_in_use()
    assert ran in ("OpenVINO bf16", "ONNX Runtime CPU int8")
    store = json.loads((tmp_path / "invsr-desktop" / "provider-choice.json").read_text())
    (key,) = store
    assert f"{quantized}:" in key.split(" vs ")[0] and model_files.INT8_SUFFIX in key.split(" vs ")[1]
    assert store[key]["provider"] == ("OpenVINO" if ran.startswith("OpenVINO") else "CPUExecutionProvider")


def test_a_copy_of_another_version_of_the_model_is_not_opened(quantized, tmp_path, no_bf16):
    model = tmp_path / quantized.name
    shutil.copyfile(MODELS / "esrgan-photo-x4.onnx", model)  # the user replaced the model, the old copy stayed
    shutil.copyfile(model_files.int8_copy_path(quantized), model_files.int8_copy_path(model))
    with pytest.warns(model_files.ModelFolderWarning, match="another version"):
        assert model_files.int8_copy(model) is None
    pool = SessionPool(provider="cpu", threads=1, precision="fast")
    pool.session(model)
    assert pool.paths_in_use() == ["ONNX Runtime CPU"]


def test_a_copy_whose_check_is_under_the_floor_is_not_opened(quantized, tmp_path):
    model = tmp_path / quantized.name
    shutil.copyfile(quantized, model)
    copy = onnx.load(str(model_files.int8_copy_path(quantized)))
    props = {p.key: p.value for p in copy.metadata_props}
    props[keys.INT8_CHECK] = json.dumps({"mean_psnr": 38.0})
    onnx.helper.set_model_props(copy, props)
    onnx.save(copy, str(model_files.int8_copy_path(model)))
    with pytest.warns(model_files.ModelFolderWarning, match="under 45"):
        assert model_files.int8_copy(model) is None


def test_a_copy_is_not_a_model_of_its_own(quantized, monkeypatch):
    monkeypatch.setenv(model_files.ENV_MODELS_DIR, str(quantized.parent))
    found = [m for m in model_files.scan("esrgan") if m.origin == "user"]
    assert [m.path.name for m in found] == [quantized.name]
    assert not [path for path, _ in model_files.problems() if path.parent == quantized.parent]


def test_the_command_writes_nothing_under_its_floor_and_refuses_what_is_not_fp32(quantized, tmp_path, capsys):
    model = tmp_path / quantized.name
    shutil.copyfile(quantized, model)
    args = [str(model), "--calibration", str(SAMPLES), "--count", "4", "--patch", "32"]
    assert quantize.main([*args, "--min-psnr", "99"]) == 1
    assert "nothing written" in capsys.readouterr().err and not model_files.int8_copy_path(model).exists()
    assert quantize.main([str(model_files.int8_copy_path(quantized)), *args[1:]]) == 2
    assert "not fp32" in capsys.readouterr().err


def test_the_ends_and_the_upsampling_path_stay_float():
    """Real-ESRGAN's layout: conv_first, a trunk closed by a skip, conv_up1 after a nearest upsampling, conv_hr,
    conv_last."""
    from onnx import TensorProto, helper

    def conv(name: str, x: str, y: str) -> onnx.NodeProto:
        return helper.make_node("Conv", [x, "w"], [y], name=name, pads=[1, 1, 1, 1])

    nodes = [conv("first", "lr", "a"), conv("trunk", "a", "b"), helper.make_node("Add", ["a", "b"], ["c"]),
             helper.make_node("Resize", ["c", "", "s"], ["d"], mode="nearest"), conv("up1", "d", "e"),
             conv("hr", "e", "f"), conv("last", "f", "sr")]  # fmt: skip
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 3, 3, 3], [0.0] * 81)
    s = helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, None)], [w, s])  # fmt: skip
    assert quantize.float_nodes(helper.make_model(graph)) == ["first", "trunk", "hr", "last", "up1"]


def test_every_bundled_int8_copy_stands_in_for_its_model():
    """A bundled model re-exported without a new copy would silently lose its fast path: the copy must match."""
    copies = sorted(MODELS.glob(f"*{model_files.INT8_SUFFIX}"))
    assert copies
    for copy in copies:
        model = copy.with_name(copy.name.removesuffix(model_files.INT8_SUFFIX) + model_files.MODEL_SUFFIX)
        assert model_files.int8_copy(model) == copy


def test_the_app_says_when_it_ran_a_models_int8_copy(qapp, qtbot, tmp_path, no_bf16):
    """A person on a CPU without bf16 upscales with the bundled faithful model at the default precision: the result
    is written and the status bar names the int8 path (not a bare "ONNX Runtime CPU" or "OpenVINO f32")."""
    import plugins.esrgan
    from appsupport import drop_files, make_photo
    from invsr_desktop.app.main_window import MainWindow
    from invsr_desktop.app.settings import AppSettings
    from invsr_desktop.engine.jobs import JobState
    from invsr_desktop.engine.registry import Registry

    registry = Registry()
    registry.register(plugins.esrgan, "esrgan")
    settings = AppSettings(tmp_path / "settings.ini")
    settings.set_start_at_once(True)
    window = MainWindow(settings, registry, tmp_path / "pasted")
    window.ask_before_quit = False
    qtbot.addWidget(window)
    window.show()
    window.panel.select_backend("esrgan-faithful-x4")
    assert window.panel.precision_combo.currentData() == "fast"
    assert drop_files(window, [make_photo(tmp_path / "photo.png", 40, 30)])
    (job,) = window.queue.jobs()
    qtbot.waitUntil(lambda: job.state is JobState.DONE, timeout=60_000)
    assert job.result.exists()
    assert window.provider_label.text() in ("Runs on: ONNX Runtime CPU int8", "Runs on: OpenVINO int8")
