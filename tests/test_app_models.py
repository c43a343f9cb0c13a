"""Models, for users (issue 19, item 7): the plugins dialog's Add model… (an ONNX file made for the app, or an
ESRGAN checkpoint converted by invsr-export in its own process) and Open models folder; the new backend is in the
window's list at once, and nothing in the model folder is ever replaced."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appsupport import open_window

pytestmark = pytest.mark.usefixtures("qapp")
BUNDLED = Path(__file__).resolve().parents[1] / "resources" / "models" / "esrgan-sharp-x4.onnx"


@pytest.fixture()
def window_with_esrgan(qtbot, tmp_path, monkeypatch):
    import plugins.esrgan

    monkeypatch.setenv("INVSR_MODELS_DIR", str(tmp_path / "user-models"))
    window = open_window(qtbot, tmp_path, delay=0)
    window.registry.register(plugins.esrgan, "esrgan", builtin=True)
    window.models_changed()
    return window


def backend_ids(window) -> list[str]:
    combo = window.panel.backend_combo
    return [combo.itemData(i) for i in range(combo.count())]


def test_add_an_onnx_model_and_open_the_folder(window_with_esrgan, tmp_path, qtbot):
    window = window_with_esrgan
    dialog = window.show_plugins()
    opened = []
    dialog.open_url = lambda url: opened.append(url.toLocalFile())
    mine = tmp_path / "downloads" / "mine-x4.onnx"
    mine.parent.mkdir()
    shutil.copy(BUNDLED, mine)
    assert "mine-x4" not in backend_ids(window)
    with qtbot.waitSignal(dialog.modelsChanged):
        dialog.add_model(mine)
    installed = tmp_path / "user-models" / "mine-x4.onnx"
    assert installed.read_bytes() == mine.read_bytes() and "Added mine-x4.onnx" in dialog.model_status.text()
    assert "mine-x4" in backend_ids(window)  # no restart
    assert any(dialog.backends.topLevelItem(i).text(1) == "mine-x4" for i in range(dialog.backends.topLevelItemCount()))

    installed.write_bytes(installed.read_bytes() + b"")  # the same name again: refused, the installed file kept
    before = installed.stat().st_mtime_ns
    dialog.add_model(mine)
    assert "already has mine-x4.onnx" in dialog.model_status.text() and installed.stat().st_mtime_ns == before

    assert dialog.open_models_folder() == tmp_path / "user-models" and opened == [str(tmp_path / "user-models")]


def test_a_file_that_is_not_a_model_for_the_app_is_refused(window_with_esrgan, tmp_path):
    dialog = window_with_esrgan.show_plugins()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    dialog.add_model(junk)
    assert dialog.model_status.text().startswith("Not added:")
    assert not (tmp_path / "user-models" / "junk.onnx").exists()


def test_an_esrgan_checkpoint_is_converted_by_invsr_export(window_with_esrgan, tmp_path, qtbot):
    torch = pytest.importorskip("torch")
    from model_export.archs import build_arch

    net = build_arch("rrdbnet", scale=2, num_feat=8, num_block=1, num_grow_ch=4)
    checkpoint = tmp_path / "RealESRGAN_tiny_x2.pth"
    torch.save({"params_ema": net.state_dict()}, checkpoint)  # Real-ESRGAN's release layout
    window = window_with_esrgan
    dialog = window.show_plugins()
    with qtbot.waitSignal(dialog.modelsChanged, timeout=120_000):
        dialog.add_model(checkpoint)
    assert (tmp_path / "user-models" / "RealESRGAN_tiny_x2.onnx").is_file()
    assert "RealESRGAN_tiny_x2" in backend_ids(window) and dialog.add_button.isEnabled()


def test_an_upscayl_ncnn_model_is_converted_by_invsr_export(window_with_esrgan, tmp_path, qtbot):
    """Upscayl's form of a model: an ncnn .param with its float16 .bin, written here by pnnx from a tiny net."""
    from ncnn_pairs import upscayl_pair

    param = upscayl_pair(tmp_path / "upscayl", "upscayl-tiny-x4")
    window = window_with_esrgan
    dialog = window.show_plugins()
    with qtbot.waitSignal(dialog.modelsChanged, timeout=120_000):
        dialog.add_model(param)
    assert (tmp_path / "user-models" / "upscayl-tiny-x4.onnx").is_file()
    assert "upscayl-tiny-x4" in backend_ids(window)


def test_a_checkpoint_that_cannot_be_converted_says_why(window_with_esrgan, tmp_path, qtbot, monkeypatch):
    dialog = window_with_esrgan.show_plugins()
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    dialog.add_model(broken)
    qtbot.waitUntil(lambda: dialog.model_status.text().startswith("Not added:"), timeout=120_000)
    assert "broken.pth" in dialog.model_status.text() and not (tmp_path / "user-models" / "broken.onnx").exists()

    import invsr_desktop.app.plugins_dialog as module

    real = module.importlib.util.find_spec
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None if name == "torch" else real(name))
    dialog.add_model(broken)  # an installation without the [train] extra
    assert "needs PyTorch" in dialog.model_status.text() and "[train]" in dialog.model_status.text()
