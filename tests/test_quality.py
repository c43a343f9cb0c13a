"""A model's measured quality in its metadata, and the line the backend picker shows for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from invsr_desktop.engine.quality import QUALITY_KEY, SUMMARY_KEY, Quality, user_line
from invsr_desktop.engine.registry import Registry
from model_export.commands.quality_metadata import quality_from_report, write_metadata

BUNDLED = Path(__file__).resolve().parents[1] / "resources" / "models" / "esrgan-sharp-x4.onnx"
REPORT = {
    "protocol": "rgb", "scale": 4,
    "sets": [
        {"name": "Set5", "mean": {"psnr": 31.1634, "ssim": 0.8751, "stlpips": 0.11163, "bicubic_psnr": 28.4311,
                                  "bicubic_stlpips": 0.32741, "hr_niqe": 5.6}},
        {"name": "Set14", "mean": {"psnr": 27.8, "stlpips": 0.2146}},
    ],
}  # fmt: skip


def test_quality_round_trip_and_its_line():
    q = quality_from_report(REPORT, seconds_per_mp=0.6123)
    assert Quality.parse(q.to_json()) == q
    assert "hr_niqe" not in q.sets["Set5"]  # only the backend's and bicubic's figures
    assert q.line() == ("Set5 x4: PSNR 31.16 dB, ST-LPIPS 0.112 (bicubic 28.43 dB, 0.327; ST-LPIPS: lower is "
                        "closer); 0.61 s per output megapixel")  # fmt: skip
    assert Quality.parse("{not json") is None and Quality.parse(None) is None
    assert user_line({SUMMARY_KEY: "Sharper detail for clean photos", QUALITY_KEY: q.to_json()}).splitlines() == [
        "Sharper detail for clean photos", q.line()]
    assert user_line({}) == ""


@pytest.fixture
def measured_model(tmp_path, monkeypatch):
    """A copy of a bundled ESRGAN model with quality metadata, as the only model the plugins see."""
    folder = tmp_path / "models"
    folder.mkdir()
    model = folder / "measured-x4.onnx"
    shutil.copy(BUNDLED, model)
    write_metadata(model, {QUALITY_KEY: quality_from_report(REPORT).to_json(), SUMMARY_KEY: "Sharper detail"})
    monkeypatch.setenv("INVSR_MODELS_DIR", str(folder))
    monkeypatch.setattr("invsr_desktop.engine.model_files.bundled_models_dir", lambda: tmp_path / "no-bundled-models")
    return model


def test_metadata_reaches_the_backend_and_the_weights_are_untouched(measured_model):
    import onnx

    import plugins.esrgan

    before, after = onnx.load(str(BUNDLED)), onnx.load(str(measured_model))
    assert before.graph.SerializeToString() == after.graph.SerializeToString()
    registry = Registry()
    registry.register(plugins.esrgan, "esrgan")
    line = user_line(registry.get("measured-x4").info)
    assert line.startswith("Sharper detail\nSet5 x4: PSNR 31.16 dB, ST-LPIPS 0.112")


def test_the_backend_picker_shows_the_measured_line(measured_model, qtbot, tmp_path):
    pytest.importorskip("PySide6")
    import plugins.esrgan
    from invsr_desktop.app.backend_panel import BackendPanel
    from invsr_desktop.app.settings import AppSettings

    registry = Registry()
    registry.register(plugins.esrgan, "esrgan")
    panel = BackendPanel(registry, AppSettings(tmp_path / "settings.ini"))
    qtbot.addWidget(panel)
    panel.select_backend("measured-x4")
    assert "ST-LPIPS 0.112" in panel.description.text() and "Sharper detail" in panel.description.text()
    assert "File:" in panel.description.toolTip()  # the technical description stays one hover away


@pytest.mark.parametrize("bad", ["nan", "inf", "-3", "four"])
def test_one_model_with_bad_metadata_hides_no_other(tmp_path, monkeypatch, bad):
    import plugins.esrgan

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(BUNDLED, folder / "bad-x4.onnx")
    write_metadata(folder / "bad-x4.onnx", {"invsr.scale": bad})
    monkeypatch.setenv("INVSR_MODELS_DIR", str(folder))
    registry = Registry()
    registry.register(plugins.esrgan, "esrgan")
    ids = {s.id for s in registry.backends()}
    assert "esrgan-sharp-x4" in ids and "bad-x4" not in ids  # the bundled ones are still there
    assert not registry.failures
    assert any("bad-x4.onnx" in str(w) and "invsr.scale" in str(w) for w in registry.warnings)


def test_the_timing_runs_the_model_its_params_name(monkeypatch):
    """``--param model=...`` times that INN model, not the one ``auto`` picks: a model that is not there is refused."""
    import pytest

    from model_export.commands.quality_metadata import seconds_per_megapixel

    monkeypatch.setattr("invsr_desktop.engine.registry._default", None)
    assert seconds_per_megapixel("inn", size=32, repeats=1, params={"model": "irn_x4_jpeg"}, scale=4) > 0
    with pytest.raises(Exception, match="must be one of"):
        seconds_per_megapixel("inn", size=32, repeats=1, params={"model": "no_such_model"}, scale=4)
