"""The main window driven like a person would: drop photos, watch the queue, cancel, pause, reorder, fail, restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage
from PySide6.QtCore import QByteArray, Qt
from PySide6.QtGui import QGuiApplication, QImage, QKeySequence
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

from appsupport import drop_files, make_photo, open_window, registry_for_tests
from invsr_desktop.app.main_window import MainWindow
from invsr_desktop.engine.sessions import planned_path
from invsr_desktop.app.plugins_dialog import PluginsDialog
from invsr_desktop.app.queue_model import RESULT, STATUS
from invsr_desktop.app.settings import AppSettings
from invsr_desktop.engine.jobs import JobState
import plugins.bicubic

pytestmark = pytest.mark.usefixtures("qapp")


@pytest.fixture()
def make_window(qtbot, tmp_path):
    """Windows with the test registry and settings in tmp_path (the same file for every window of a test)."""

    def make(delay: float = 0.02, settings: Path | None = None) -> MainWindow:
        return open_window(qtbot, tmp_path, delay, settings)

    return make


def select_backend(window: MainWindow, backend_id: str, tile: int = 0) -> None:
    window.panel.select_backend(backend_id)
    window.panel.tile_spin.setValue(tile)


def select_rows(window: MainWindow, *job_ids: int) -> None:
    window.queue_panel.table.clearSelection()
    for job_id in job_ids:
        window.queue_panel.table.selectRow(window.model.row_of(job_id))


def cell(window: MainWindow, job_id: int, column: int) -> str:
    model = window.model
    return model.data(model.index(model.row_of(job_id), column))


def test_dropping_photos_and_a_folder_runs_bicubic_to_the_end(make_window, qtbot, tmp_path):
    window = make_window()
    select_backend(window, "bicubic")
    window.panel.scale_picker.set_value(2)
    first = make_photo(tmp_path / "first.png", 40, 30)
    folder = tmp_path / "album"
    make_photo(folder / "second.jpg", 30, 20)
    (folder / "notes.txt").write_text("not a photo")

    assert drop_files(window, [first, folder])
    jobs = window.queue.jobs()
    assert [job.source.name for job in jobs] == ["first.png", "second.jpg"]
    assert window.model.rowCount() == 2
    qtbot.waitUntil(lambda: all(job.state is JobState.DONE for job in jobs), timeout=20_000)

    assert jobs[0].result == tmp_path / "first_x2_bicubic.png" and jobs[0].result.exists()
    assert jobs[1].result == folder / "second_x2_bicubic.png"
    with PILImage.open(jobs[0].result) as result:
        assert result.size == (80, 60)
    assert cell(window, jobs[0].id, STATUS).startswith("Done · ") and cell(window, jobs[0].id, RESULT) == "first_x2_bicubic.png"
    qtbot.waitUntil(lambda: "2 done" in window.summary_label.text())
    # what ran, always at full precision: OpenVINO f32, or ONNX Runtime CPU (without OpenVINO, or where the engine
    # race measured it faster: on a loaded machine it can, so the label is checked against what really ran)
    ran = window.engine.sessions.paths_in_use()
    assert window.provider_label.text() == "Runs on: " + ", ".join(ran)
    assert set(ran) <= {planned_path(precision=plugins.bicubic.PRECISION), "ONNX Runtime CPU"}


def test_drop_lands_anywhere_even_on_widgets_that_take_drops_themselves(make_window, tmp_path):
    window = make_window()
    window.queue.pause()  # only the queueing matters here
    photo = make_photo(tmp_path / "a.png")
    assert drop_files(window.queue_panel.table.viewport(), [photo])
    assert drop_files(window.panel.folder_edit, [photo])  # a line edit would otherwise take the path as text
    assert window.panel.folder_edit.text() == ""
    assert [job.source for job in window.queue.jobs()] == [photo, photo]
    drop_files(window, [tmp_path / "missing.png"])
    assert len(window.queue) == 2 and "missing.png: no such file" in window.statusBar().currentMessage()


def test_cancel_mid_image_leaves_no_partial_file(make_window, qtbot, tmp_path):
    window = make_window(delay=0.05)
    select_backend(window, "slow-test", tile=32)
    photo = make_photo(tmp_path / "big.png", 256, 256)  # 256 overlapping tiles of 50 ms: 13 s if left alone
    (job,) = window.add_paths([photo])
    qtbot.waitUntil(lambda: job.progress > 0, timeout=10_000)
    select_rows(window, job.id)
    qtbot.mouseClick(window.queue_panel.button("cancel"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: job.state is JobState.CANCELLED, timeout=5_000)
    assert 0 < job.progress < 1 and job.result is None
    assert {p.name for p in tmp_path.iterdir()} - {"settings.ini"} == {"big.png"}  # no result, no temporary file
    assert cell(window, job.id, STATUS) == "Cancelled"

    window.panel.tile_spin.setValue(256)  # one tile from the next job on
    select_rows(window, job.id)  # retry runs it to the end
    qtbot.mouseClick(window.queue_panel.button("retry"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: job.state is JobState.DONE, timeout=15_000)
    assert job.result == tmp_path / "big_x2_slow-test.png"


def test_cancel_all_stops_the_running_job_and_the_queued_ones(make_window, qtbot, tmp_path):
    window = make_window(delay=0.05)
    select_backend(window, "slow-test", tile=32)
    jobs = window.add_paths([make_photo(tmp_path / f"{n}.png", 128, 128) for n in "abc"])
    qtbot.waitUntil(lambda: jobs[0].progress > 0, timeout=10_000)
    window.actions_["cancel_all"].trigger()
    qtbot.waitUntil(lambda: all(job.state is JobState.CANCELLED for job in jobs), timeout=5_000)
    assert not list(tmp_path.glob("*_x2_*"))


def test_pause_holds_the_running_image_between_tiles_and_resume_goes_on(make_window, qtbot, tmp_path):
    window = make_window(delay=0.03)
    select_backend(window, "slow-test", tile=64)
    first, second = window.add_paths([make_photo(tmp_path / f"{n}.png", 192, 192) for n in "ab"])  # 16 tiles
    qtbot.waitUntil(lambda: first.progress > 0, timeout=10_000)
    window.actions_["pause"].trigger()
    assert window.actions_["pause"].text() == "Resume"
    qtbot.waitUntil(lambda: first.state is JobState.PAUSED, timeout=5_000)
    held = first.progress
    qtbot.wait(300)
    assert first.progress == held < 1 and second.state is JobState.QUEUED
    assert cell(window, first.id, STATUS).startswith("Paused · ") and "paused" in window.summary_label.text()
    window.actions_["pause"].trigger()
    qtbot.waitUntil(lambda: second.state is JobState.DONE, timeout=15_000)
    assert first.state is JobState.DONE and first.result.exists()


def test_reorder_with_buttons_and_by_dragging(make_window, qtbot, tmp_path):
    window = make_window()
    window.queue.pause()
    a, b, c = window.add_paths([make_photo(tmp_path / f"{n}.png") for n in "abc"])
    select_rows(window, c.id)
    qtbot.mouseClick(window.queue_panel.button("up"), Qt.MouseButton.LeftButton)
    assert [j.id for j in window.queue.jobs()] == [a.id, c.id, b.id]
    qtbot.mouseClick(window.queue_panel.button("down"), Qt.MouseButton.LeftButton)
    qtbot.mouseClick(window.queue_panel.button("down"), Qt.MouseButton.LeftButton)  # already last: stays
    assert [j.id for j in window.queue.jobs()] == [a.id, b.id, c.id]
    assert window.queue.next_job() is None  # paused
    model = window.model  # what the table does on a drag: mime data of the rows, dropped before row 0
    mime = model.mimeData([model.index(model.row_of(c.id), 0)])
    assert model.dropMimeData(mime, Qt.DropAction.MoveAction, 0, 0, model.index(-1, -1))
    assert [j.id for j in window.queue.jobs()] == [c.id, a.id, b.id]
    assert [model.job_at(r).id for r in range(3)] == [c.id, a.id, b.id]
    window.queue.resume()
    qtbot.waitUntil(lambda: all(job.state is JobState.DONE for job in (a, b, c)), timeout=20_000)
    assert c.started < a.started < b.started  # run in the new order


def test_failures_show_in_their_rows_and_the_queue_goes_on(make_window, qtbot, tmp_path):
    window = make_window()
    photo = make_photo(tmp_path / "a.png")
    select_backend(window, "missing-model")
    (missing,) = window.add_paths([photo])
    not_a_folder = tmp_path / "occupied"
    not_a_folder.write_text("a file where the output folder should be")
    select_backend(window, "bicubic")
    window.panel.folder_edit.setText(str(not_a_folder))
    (blocked,) = window.add_paths([photo])
    window.panel.folder_edit.setText("")
    (fine,) = window.add_paths([photo])
    qtbot.waitUntil(lambda: fine.state is JobState.DONE, timeout=20_000)

    assert missing.state is JobState.FAILED and "model file not found" in cell(window, missing.id, RESULT)
    assert "missing-model" in missing.error
    assert blocked.state is JobState.FAILED and "not a folder" in cell(window, blocked.id, RESULT)
    assert window.isVisible()
    tip = window.model.data(window.model.index(window.model.row_of(missing.id), STATUS), Qt.ItemDataRole.ToolTipRole)
    assert missing.error in tip and "Traceback" not in tip  # one sentence; the technical text is behind Details…

    view = window.queue_panel
    view.select_job(fine.id)
    assert not view.actions_["details"].isEnabled()
    view.select_job(missing.id)
    assert view.actions_["details"].isEnabled()
    box = view.show_details()
    assert box.text() == missing.error and "Traceback" in box.detailedText()
    box.close()


def test_rerun_with_another_backend_keeps_both_results(make_window, qtbot, tmp_path):
    window = make_window(delay=0)
    select_backend(window, "bicubic")
    window.panel.scale_picker.set_value(2)
    (first,) = window.add_paths([make_photo(tmp_path / "a.png")])
    qtbot.waitUntil(lambda: first.state is JobState.DONE, timeout=20_000)
    select_backend(window, "slow-test")
    select_rows(window, first.id)
    qtbot.mouseClick(window.queue_panel.button("rerun"), Qt.MouseButton.LeftButton)
    second = window.queue.jobs()[-1]
    qtbot.waitUntil(lambda: second.state is JobState.DONE, timeout=20_000)
    assert second.backend_id == "slow-test"
    assert window.queue.results_for(first.source) == [first, second]


def test_parameter_widgets_come_from_the_backend_description(make_window):
    window = make_window()
    select_backend(window, "params-test")
    editors = window.panel.param_form.editors
    assert isinstance(editors["steps"].widget, QSpinBox) and editors["steps"].widget.maximum() == 100
    assert isinstance(editors["temperature"].widget, QDoubleSpinBox)
    assert editors["temperature"].widget.maximum() == 2.0
    assert isinstance(editors["tta"].widget, QCheckBox)
    assert isinstance(editors["sampler"].widget, QComboBox) and editors["sampler"].widget.count() == 3
    assert window.panel.params() == {"steps": 20, "temperature": 0.8, "seed": 0, "tta": False, "sampler": "ddim"}
    picker = window.panel.scale_picker
    assert [picker.itemText(i) for i in range(picker.count())] == ["×2", "×3  (from ×4)", "×4"]
    assert not picker.isEditable()
    picker.set_value(3)
    assert window.panel.scale() == 3.0  # the x4 model, reduced by the engine
    select_backend(window, "bicubic")
    assert picker.isEditable() and window.panel.param_form.editors == {}
    picker.setEditText("2.5")
    assert window.panel.scale() == 2.5


def test_settings_survive_a_restart(make_window, qtbot, tmp_path):
    settings = tmp_path / "restart.ini"
    window = make_window(settings=settings)
    select_backend(window, "params-test")
    window.panel.scale_picker.set_value(4)
    window.panel.param_form.set_values({"steps": 42, "temperature": 1.25, "tta": True, "sampler": "heun"})
    window.panel.folder_edit.setText(str(tmp_path / "results"))
    window.panel.format_combo.setCurrentIndex(window.panel.format_combo.findData("webp"))
    window.panel.quality_spin.setValue(77)
    window.panel.lossless_check.setChecked(True)
    window.panel.provider_combo.setCurrentIndex(window.panel.provider_combo.findData("CPUExecutionProvider"))
    window.panel.tile_spin.setValue(384)
    window.panel.memory_spin.setValue(2048)
    window.compare.set_mode("side")
    window.setGeometry(30, 40, 760, 700)  # the offscreen screen is 800 x 800
    window.close()

    again = make_window(settings=settings)
    panel = again.panel
    assert panel.spec().id == "params-test" and panel.scale() == 4
    assert panel.params() == {"steps": 42, "temperature": 1.25, "seed": 0, "tta": True, "sampler": "heun"}
    output = panel.output()
    assert (output.folder, output.format, output.quality, output.lossless) == (tmp_path / "results", "webp", 77, True)
    options = panel.engine_options()
    assert (options.provider, options.tile, options.memory_budget_mb) == ("CPUExecutionProvider", 384, 2048)
    assert again.engine.options.provider == "CPUExecutionProvider" and again.engine.options.tile == 384
    assert again.compare.mode == "side"
    assert again.geometry() == window.geometry()
    assert isinstance(AppSettings(settings).geometry(), QByteArray)


def test_stale_settings_fall_back_to_defaults(make_window, tmp_path):
    settings = tmp_path / "stale.ini"
    stale = AppSettings(settings)
    stale.set_backend_id("uninstalled-backend")
    stale.set_params("params-test", {"steps": 1000, "gone": 1, "temperature": "warm"})
    stale.sync()
    window = make_window(settings=settings)
    assert window.panel.spec().id == "bicubic"  # the first backend
    select_backend(window, "params-test")
    assert window.panel.params()["steps"] == 20 and window.panel.params()["temperature"] == 0.8


def test_plugins_dialog_lists_broken_plugins(make_window, qtbot):
    window = make_window()
    assert window.broken_button.isVisible() and "1 plugin failed" in window.broken_button.text()
    dialog = window.show_plugins()
    qtbot.addWidget(dialog)
    assert isinstance(dialog, PluginsDialog)
    ids = [dialog.backends.topLevelItem(i).text(1) for i in range(dialog.backends.topLevelItemCount())]
    assert {"bicubic", "slow-test", "params-test", "missing-model"} <= set(ids)
    assert dialog.failures.count() == 1 and "libfoo" in dialog.failures.item(0).text()
    assert "ImportError" in dialog.details.toPlainText()


def test_paste_an_image_from_the_clipboard(make_window, tmp_path):
    window = make_window()
    window.queue.pause()
    image = QImage(20, 10, QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.darkCyan)
    QGuiApplication.clipboard().setImage(image)
    window.actions_["paste"].trigger()
    (job,) = window.queue.jobs()
    assert job.source.parent == tmp_path / "pasted" and job.source.suffix == ".png"
    assert QImage(str(job.source)).size() == image.size()


def test_files_on_the_command_line_go_straight_into_the_queue(tmp_path, monkeypatch, qapp):
    from PySide6.QtWidgets import QApplication

    from invsr_desktop.app import main as app_main

    photo = make_photo(tmp_path / "opened.png")
    seen = {}

    def fake_exec() -> int:
        (window,) = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        window.queue.pause()
        seen["sources"] = [job.source for job in window.queue.jobs()]
        window.ask_before_quit = False  # the question on quitting is tested on its own
        window.close()
        return 0

    monkeypatch.setattr(qapp, "exec", fake_exec)
    monkeypatch.setattr("invsr_desktop.app.main_window.default_registry", lambda: registry_for_tests()[0])
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert app_main.main([str(photo), "--settings", str(tmp_path / "cli.ini")]) == 0
    assert seen["sources"] == [photo]
    assert (tmp_path / "state" / "invsr-desktop" / "invsr-desktop.log").is_file()  # the app's log, for launcher starts
    import logging

    for handler in logging.getLogger("invsr_desktop").handlers[:]:  # the next tests log nowhere near tmp_path
        logging.getLogger("invsr_desktop").removeHandler(handler)
        handler.close()


def test_a_full_disk_and_a_provider_fallback_are_shown_and_the_window_stays(make_window, qtbot, tmp_path, monkeypatch):
    from invsr_desktop.engine import pipeline, sessions
    from invsr_desktop.engine.errors import ImageWriteError

    fallback = "CUDAExecutionProvider was requested but ONNX Runtime could not use it; running on CPU instead."
    monkeypatch.setattr(sessions, "fallback_message", lambda requested, got: fallback)
    monkeypatch.setattr(sessions, "available_providers", lambda: ["CPUExecutionProvider"])  # the ORT path
    real_save = pipeline.save_image
    full = {"disk": True}

    def save_image(image, destination, **kwargs):
        if full["disk"]:
            raise ImageWriteError(destination, "the disk is full")
        return real_save(image, destination, **kwargs)

    monkeypatch.setattr(pipeline, "save_image", save_image)
    window = make_window()
    select_backend(window, "bicubic")
    (job,) = window.add_paths([make_photo(tmp_path / "a.png")])
    qtbot.waitUntil(lambda: job.state is JobState.FAILED, timeout=20_000)
    assert "the disk is full" in cell(window, job.id, RESULT)
    qtbot.waitUntil(lambda: fallback in window.engine_messages)
    assert fallback in window.provider_label.toolTip() and window.isVisible()
    assert not list(tmp_path.glob("a_x*"))

    full["disk"] = False  # space freed: retry writes the file
    window.queue.retry(job.id)
    qtbot.waitUntil(lambda: job.state is JobState.DONE, timeout=20_000)
    assert job.result.exists()


def test_open_files_and_open_folder_dialogs(make_window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    window = make_window()
    window.queue.pause()
    one, two = make_photo(tmp_path / "one.png"), make_photo(tmp_path / "album" / "two.png")
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: ([str(one)], "Images"))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(two.parent))
    window.actions_["open_files"].trigger()
    window.actions_["open_folder"].trigger()
    assert [job.source for job in window.queue.jobs()] == [one, two]
    assert window.settings.last_folder() == str(two.parent)


def test_quitting_with_work_left_asks_first_and_ctrl_q_quits(make_window, qtbot, tmp_path):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    window = make_window(delay=0.5)
    window.ask_before_quit = True
    assert window.actions_["quit"].shortcut().matches(QKeySequence(QKeySequence.StandardKey.Quit)) \
        == QKeySequence.SequenceMatch.ExactMatch
    window.queue.pause()  # the photos stay in the queue
    drop_files(window, [make_photo(tmp_path / "a.png", 64, 48), make_photo(tmp_path / "b.png", 64, 48)])
    answers = []

    def answer(button_text: str):
        def click():
            box = QApplication.activeModalWidget()
            assert isinstance(box, QMessageBox) and "2 photos are still in the queue" in box.text()
            answers.append(box.text())
            next(b for b in box.buttons() if b.text().replace("&", "") == button_text).click()
        QTimer.singleShot(100, click)

    answer("Cancel")
    window.actions_["quit"].trigger()
    assert answers and window.isVisible() and not window._shut_down  # still there, queue intact
    answer("Quit")
    window.actions_["quit"].trigger()
    assert len(answers) == 2 and not window.isVisible() and window._shut_down


def test_added_photos_wait_as_ready_until_the_start_button(qtbot, tmp_path):
    """The default: dropped or opened photos are Ready; "Upscale 2 photos" (or Enter) starts them."""
    window = open_window(qtbot, tmp_path, 0.0, start_at_once=False)
    assert not window.panel.start_at_once_check.isChecked()
    select_backend(window, "bicubic")
    start = window.actions_["start"]
    assert not start.isEnabled()
    jobs = window.add_paths([make_photo(tmp_path / "a.png"), make_photo(tmp_path / "b.png")])
    assert [j.state for j in jobs] == [JobState.READY] * 2 and cell(window, jobs[0].id, STATUS) == "Ready"
    assert start.isEnabled() and start.text() == "Upscale 2 photos"
    qtbot.wait(200)
    assert all(j.state is JobState.READY for j in jobs) and not list(tmp_path.glob("*_x2_*"))
    start.trigger()
    qtbot.waitUntil(lambda: all(j.state is JobState.DONE for j in jobs), timeout=20_000)
    assert not start.isEnabled()

    window.panel.start_at_once_check.setChecked(True)  # the setting: photos run as soon as they are added
    (now,) = window.add_paths([make_photo(tmp_path / "c.png")])
    qtbot.waitUntil(lambda: now.state is JobState.DONE, timeout=20_000)
    assert AppSettings(tmp_path / "settings.ini").start_at_once()


def test_a_photo_queued_again_is_done_before_and_run_again_redoes_it(make_window, qtbot, tmp_path):
    """The same photo, backend, scale and folder a second time: kept as done before, no "(1)" copy; Run again
    asks explicitly and writes one."""
    window = make_window()
    select_backend(window, "bicubic")
    photo = make_photo(tmp_path / "a.png")
    (first,) = window.add_paths([photo])
    qtbot.waitUntil(lambda: first.state is JobState.DONE, timeout=20_000)
    (again,) = window.add_paths([photo])
    qtbot.waitUntil(lambda: again.state is JobState.DONE, timeout=20_000)
    assert again.result == first.result and "done before" in again.note
    assert sorted(p.name for p in tmp_path.glob("a_x*")) == [first.result.name]
    (redo,) = window.rerun([again.id])
    qtbot.waitUntil(lambda: redo.state is JobState.DONE, timeout=20_000)
    assert redo.result != first.result and redo.result.exists()


def test_the_list_follows_new_rows_and_an_empty_queue_says_how_to_add(make_window, qtbot, tmp_path):
    from invsr_desktop.app.queue_view import EMPTY_TEXT

    window = make_window()
    window.queue.pause()
    table = window.queue_panel.table
    assert "Drop photos" in EMPTY_TEXT and not table.grab().isNull()  # the empty state paints
    photos = [make_photo(tmp_path / f"p{i}.png") for i in range(25)]
    window.add_paths(photos)
    qtbot.wait(50)
    last = table.visualRect(window.model.index(len(photos) - 1, 0))
    assert table.viewport().rect().intersects(last)  # the newest row is in view, not below the fold


@pytest.mark.parametrize("size", [(1280, 800), (1024, 700)])
def test_the_queue_fits_the_window_without_scrolling_sideways(make_window, qtbot, tmp_path, size):
    """At 1280x800 and 1024x700: no horizontal scroll bar, the name / task / status / result columns all in view,
    the task in the backend's own name, and no toolbar spilling into its overflow menu."""
    from PySide6.QtWidgets import QToolBar, QToolButton

    from invsr_desktop.app.queue_model import IMAGE, SIZE, TASK

    window = make_window(delay=0)
    window.resize(*size)
    select_backend(window, "bicubic")
    long_name = make_photo(tmp_path / ("a holiday photo with a rather long file name, " * 2 + "final.png"), 40, 30)
    (job,) = window.add_paths([long_name])
    qtbot.waitUntil(lambda: job.state is JobState.DONE, timeout=20_000)
    qtbot.wait(20)
    table = window.queue_panel.table
    shown = [c for c in range(window.model.columnCount()) if not table.isColumnHidden(c)]
    assert {IMAGE, TASK, STATUS, RESULT} <= set(shown)
    assert sum(table.columnWidth(c) for c in shown) <= table.viewport().width()
    assert not table.horizontalScrollBar().isVisible()
    assert table.columnWidth(IMAGE) >= 150 and table.columnWidth(RESULT) >= 150
    assert cell(window, job.id, TASK) == f"Bicubic ×{job.scale:g}"
    assert table.isColumnHidden(SIZE) == (size[0] < 1280)
    for bar in window.findChildren(QToolBar):
        if bar.isVisible():
            extension = bar.findChild(QToolButton, "qt_toolbar_ext_button")
            assert extension is None or not extension.isVisible(), bar.objectName()


def test_the_row_menu_opens_the_result_and_its_folder_and_shows_shortcuts(make_window, qtbot, tmp_path):
    window = make_window(delay=0)
    select_backend(window, "bicubic")
    (job,) = window.add_paths([make_photo(tmp_path / "menu.png", 40, 30)])
    qtbot.waitUntil(lambda: job.state is JobState.DONE, timeout=20_000)
    panel = window.queue_panel
    opened = []
    panel.open_url = lambda url: opened.append(url.toLocalFile())
    table = panel.table
    table.clearSelection()
    pos = table.visualRect(window.model.index(window.model.row_of(job.id), 0)).center()
    menu = panel.row_menu(pos)
    texts = [a.text() for a in menu.actions() if not a.isSeparator()]
    assert texts[:3] == ["Open result", "Show in folder", "Compare"] and "Remove" in texts
    assert panel.selected_ids() == [job.id]  # the row under the pointer became the selection
    by_text = {a.text(): a for a in menu.actions()}
    assert by_text["Remove"].shortcut() == QKeySequence(QKeySequence.StandardKey.Delete)  # shown in the menu
    assert by_text["Open result"].isEnabled() and not by_text["Retry"].isEnabled()
    by_text["Open result"].trigger()
    by_text["Show in folder"].trigger()
    assert opened == [str(job.result), str(job.result.parent)]
    by_text["Remove"].trigger()
    assert window.queue.index_of(job.id) < 0 and job.result.exists()  # off the list; the file stays
    (other,) = window.add_paths([make_photo(tmp_path / "keys.png", 40, 30)])
    qtbot.waitUntil(lambda: other.state is JobState.DONE, timeout=20_000)
    panel.select_job(other.id)
    table.setFocus()
    qtbot.keyClick(table, Qt.Key.Key_Delete)  # the action's shortcut, where the queue has the focus
    assert window.queue.index_of(other.id) < 0
