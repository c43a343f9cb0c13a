"""Shrink & restore in the desktop app, driven like a person would: pick Shrink (INN), drop a photo, drop the small
image back, and the app restores it. Uses the tiny random-weight INN of conftest.py (no trained model needed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage
from PySide6.QtCore import Qt

from appsupport import drop_files, make_photo, open_window
from invsr_desktop.app.main_window import MainWindow
from invsr_desktop.app.queue_model import RESULT, SIZE, TASK
from invsr_desktop.app.settings import AppSettings
from invsr_desktop.engine.imageio import Image, save_image
from invsr_desktop.engine.jobs import Job, JobState
from invsr_desktop.engine.task import Task, TaskMode
from invsr_desktop.engine.pipeline import Engine
from invsr_desktop.engine.shrink_marker import ShrinkMarker, read_file_marker, with_marker

pytestmark = pytest.mark.usefixtures("qapp")
TIMEOUT_MS = 30_000


def cell(window: MainWindow, job: Job, column: int, role: Qt.ItemDataRole = Qt.ItemDataRole.DisplayRole) -> str:
    model = window.model
    return model.data(model.index(model.row_of(job.id), column), role)


def click_mode(qtbot, window: MainWindow, mode: TaskMode) -> None:
    qtbot.mouseClick(window.panel.mode_buttons[mode], Qt.MouseButton.LeftButton)


def offered_formats(window: MainWindow) -> list[str]:
    combo = window.panel.format_combo
    return [combo.itemData(i) for i in range(combo.count()) if combo.model().item(i).isEnabled()]


def finish(qtbot, job: Job) -> Job:
    qtbot.waitUntil(lambda: job.state.finished, timeout=TIMEOUT_MS)
    return job


def test_shrink_mode_is_disabled_without_an_inn_model(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("INVSR_MODELS_DIR", str(tmp_path / "no-models"))
    monkeypatch.setattr("invsr_desktop.engine.model_files.bundled_models_dir", lambda: tmp_path / "no-bundled-models")
    stored = AppSettings(tmp_path / "settings.ini")
    stored.set_mode(TaskMode.SHRINK)  # left over from a machine that had a model
    stored.sync()
    window = open_window(qtbot, tmp_path, inn=True)
    shrink = window.panel.mode_buttons[TaskMode.SHRINK]
    assert not shrink.isEnabled() and "needs an INN model" in shrink.toolTip()
    assert window.panel.mode() is TaskMode.UPSCALE and window.panel.spec().id == "bicubic"
    click_mode(qtbot, window, TaskMode.SHRINK)
    assert window.panel.mode() is TaskMode.UPSCALE
    assert window.panel.mode_buttons[TaskMode.RESTORE].isEnabled()  # its jobs say what is missing


def test_shrink_in_the_app_then_drop_the_small_image_back_to_restore_it(models_dir, qtbot, tmp_path):
    window = open_window(qtbot, tmp_path, inn=True)
    panel = window.panel
    click_mode(qtbot, window, TaskMode.SHRINK)
    assert panel.mode() is TaskMode.SHRINK and panel.spec().id == "inn-shrink"
    assert "INN restore brings back to full size" in panel.mode_hint.text()
    assert panel.scale_label.text() == "Shrink by" and panel.scale_picker.currentText().startswith("÷")
    assert offered_formats(window) == ["png", "jpeg"]
    assert "shrink them" in window.summary_label.text()
    panel.scale_picker.set_value(2)
    photo = make_photo(tmp_path / "photo.png", 37, 26)  # odd sizes: padded to the factor, cropped back on restore

    assert drop_files(window, [photo])
    (shrink,) = window.queue.jobs()
    assert shrink.mode is TaskMode.SHRINK and cell(window, shrink, TASK) == "Shrink ÷2 (INN shrink)"
    assert cell(window, shrink, TASK, Qt.ItemDataRole.ToolTipRole) == "shrink ÷2 with inn-shrink, model=auto"
    qtbot.waitUntil(lambda: cell(window, shrink, SIZE) == "37×26 → 19×13", timeout=TIMEOUT_MS)
    assert finish(qtbot, shrink).state is JobState.DONE, shrink.error
    assert shrink.result == tmp_path / "photo_shrunk_x2.png"  # the CLI's name
    with PILImage.open(shrink.result) as small:
        assert small.size == (19, 13)
    assert read_file_marker(shrink.result) == ShrinkMarker("inn", "tiny_x2", 2, 37, 26)

    # back to upscaling with bicubic x4: the dropped small image is recognised and restored instead
    click_mode(qtbot, window, TaskMode.UPSCALE)
    panel.select_backend("bicubic")
    assert drop_files(window.queue_panel.table.viewport(), [shrink.result])
    restore = window.queue.jobs()[-1]
    assert restore.mode is TaskMode.RESTORE
    assert cell(window, restore, TASK) == "Restore ×2"
    assert cell(window, restore, TASK, Qt.ItemDataRole.ToolTipRole).startswith("restore x2 with inn (tiny_x2)")
    # the tooltip: the cell's text turns into the output's name once the (tiny) job is done, which can be by now
    assert "instead of upscaled" in cell(window, restore, RESULT, Qt.ItemDataRole.ToolTipRole)
    assert "restored to full size" in window.statusBar().currentMessage()
    assert finish(qtbot, restore).state is JobState.DONE, restore.error
    assert restore.result == tmp_path / "photo_shrunk_x2_restored.png"
    assert read_file_marker(restore.result) is None
    engine = Engine(window.registry, panel.engine_options())
    expected = engine.run_file(shrink.result, tmp_path / "engine.png", Task.restore())
    with PILImage.open(restore.result) as got, PILImage.open(expected) as want:
        assert got.size == (37, 26)
        assert np.array_equal(np.asarray(got), np.asarray(want))
    # the compare view takes a restore like any result
    window.show_compare(restore.id)
    assert window.tabs.currentWidget() is window.compare


def test_shrink_as_jpeg_and_the_mode_survive_a_restart(models_dir, qtbot, tmp_path):
    settings = tmp_path / "restart.ini"
    window = open_window(qtbot, tmp_path, settings=settings, inn=True)
    panel = window.panel
    panel.format_combo.setCurrentIndex(panel.format_combo.findData("webp"))  # the upscaler's own format
    click_mode(qtbot, window, TaskMode.SHRINK)
    assert panel.format_combo.currentData() == "png"  # a shrunk image is never WebP
    panel.format_combo.setCurrentIndex(panel.format_combo.findData("jpeg"))
    panel.quality_spin.setValue(80)
    panel.scale_picker.set_value(4)
    (job,) = window.add_paths([make_photo(tmp_path / "photo.png", 40, 28)])
    assert finish(qtbot, job).state is JobState.DONE, job.error
    assert job.result == tmp_path / "photo_shrunk_x4.jpg"
    assert read_file_marker(job.result) == ShrinkMarker("inn", "tiny_x4", 4, 40, 28)
    window.close()

    again = open_window(qtbot, tmp_path, settings=settings, inn=True).panel
    assert again.mode() is TaskMode.SHRINK and again.spec().id == "inn-shrink" and again.scale() == 4
    assert (again.output().format, again.output().quality) == ("jpeg", 80)
    click_mode(qtbot, again.window(), TaskMode.UPSCALE)
    assert again.output().format == "webp"


def test_the_quality_chosen_in_the_panel_picks_the_bundled_jpeg_shrink(qtbot, tmp_path, monkeypatch):
    """The bundled models: at JPEG q75 the shrink trained for q1-88 (irn_x4_jpeg_low), at q95 irn_x4_jpeg; the
    shrink's tooltip says so."""
    monkeypatch.setenv("INVSR_MODELS_DIR", str(tmp_path / "no-user-models"))
    window = open_window(qtbot, tmp_path, inn=True)
    panel = window.panel
    click_mode(qtbot, window, TaskMode.SHRINK)
    panel.format_combo.setCurrentIndex(panel.format_combo.findData("jpeg"))
    panel.scale_picker.set_value(4)
    assert "as JPEG irn_x4_jpeg_low at quality 1-88, irn_x4_jpeg at 89-100" in panel.spec().description
    for quality, model in ((75, "irn_x4_jpeg_low"), (95, "irn_x4_jpeg")):
        panel.quality_spin.setValue(quality)
        (job,) = window.add_paths([make_photo(tmp_path / f"photo{quality}.png", 40, 28)])
        assert finish(qtbot, job).state is JobState.DONE, job.error
        assert read_file_marker(job.result).model == model


def test_restore_mode_needs_no_choice_and_bad_images_fail_in_their_rows(models_dir, qtbot, tmp_path):
    window = open_window(qtbot, tmp_path, inn=True)
    click_mode(qtbot, window, TaskMode.RESTORE)
    assert window.panel.spec() is None and not window.panel.backend_group.isVisible()
    assert "marker" in window.panel.mode_hint.text()
    small = Image(np.full((6, 7, 3), 0.5, np.float32))
    gone = save_image(with_marker(small, ShrinkMarker("inn", "gone", 2, 14, 12)), tmp_path / "other.png")
    plain = make_photo(tmp_path / "plain.png")
    jobs = window.add_paths([plain, gone])
    assert [job.mode for job in jobs] == [TaskMode.RESTORE, TaskMode.RESTORE]
    for job, reason in zip(jobs, ("no invsr-shrink marker", "shrunk with model 'gone'")):
        assert finish(qtbot, job).state is JobState.FAILED
        assert reason in cell(window, job, RESULT)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["other.png", "plain.png"]
