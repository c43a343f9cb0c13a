"""The compare view: split and side by side, zoom by keys and wheel, pan by dragging, views in step, results."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from appsupport import make_photo, open_window
from invsr_desktop.app.compare import MAX_ZOOM, ImageView
from invsr_desktop.app.main_window import MainWindow
from invsr_desktop.engine.jobs import Job, JobState

pytestmark = pytest.mark.usefixtures("qapp")


def run(window: MainWindow, qtbot, photo, backend_id: str, scale: float = 4) -> Job:
    window.panel.select_backend(backend_id)
    window.panel.scale_picker.set_value(scale)
    (job,) = window.add_paths([photo])
    qtbot.waitUntil(lambda: job.state is JobState.DONE, timeout=20_000)
    return job


@pytest.fixture()
def compared(qtbot, tmp_path):
    """A window comparing a 64 x 48 photo with its bicubic x4 result (256 x 192), opened by double-click."""
    window = open_window(qtbot, tmp_path, delay=0)
    job = run(window, qtbot, make_photo(tmp_path / "photo.png", 64, 48), "bicubic")
    table = window.queue_panel.table
    rect = table.visualRect(window.model.index(window.model.row_of(job.id), 1))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # a double click's first
    qtbot.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.tabs.currentWidget() is window.compare
    return window, job


def wheel(view: ImageView, notches: int, at: QPoint | None = None) -> None:
    pos = QPointF(at or view.viewport().rect().center())
    event = QWheelEvent(
        pos,
        view.viewport().mapToGlobal(pos),
        QPoint(),
        QPoint(0, 120 * notches),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(view.viewport(), event)


def drag(qtbot, view: ImageView, start: QPoint, end: QPoint) -> None:
    viewport = view.viewport()
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=start)
    for step in range(1, 5):
        qtbot.mouseMove(viewport, start + (end - start) * step / 4)
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=end)


def centre(view: ImageView) -> QPointF:
    return view.mapToScene(view.viewport().rect().center())


def in_step(*views: ImageView) -> bool:
    """Same zoom, and the same result pixel in the middle of every view (to a screen pixel)."""
    first = views[0]
    tolerance = 1.0 / first.zoom()
    return all(
        v.transform() == first.transform()
        and abs(centre(v).x() - centre(first).x()) <= tolerance
        and abs(centre(v).y() - centre(first).y()) <= tolerance
        for v in views[1:]
    )


def test_split_view_shows_before_at_the_output_size_and_zooms_with_keys(compared, qtbot):
    window, job = compared
    compare = window.compare
    view = compare.split_view
    assert compare.stack.currentIndex() == 0 and compare.mode == "split"
    scene = compare.split_scene
    assert scene.sceneRect().size().toSize().width() == 256
    assert scene.before.sceneBoundingRect() == scene.after.sceneBoundingRect()  # original stretched to 256 x 192
    assert "bicubic x4" in compare.info.text() and "64×48 → 256×192" in compare.info.text()

    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_1)
    assert view.zoom() == 1.0 and compare.zoom_label.text() == "100%"
    for expected in (1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 8.0):
        qtbot.keyClick(view, Qt.Key.Key_Plus)
        assert view.zoom() == pytest.approx(expected)
    assert view.zoom() == MAX_ZOOM and compare.zoom_label.text() == "800%"
    assert scene.after.transformationMode() == Qt.TransformationMode.FastTransformation  # nearest: pixels visible
    qtbot.keyClick(view, Qt.Key.Key_Minus)
    assert view.zoom() == pytest.approx(6.0)
    qtbot.keyClick(view, Qt.Key.Key_0)
    assert view.zoom() == pytest.approx(view.fit_zoom()) and view.fitting
    view.set_zoom(0.5)
    assert scene.after.transformationMode() == Qt.TransformationMode.SmoothTransformation

    view.set_zoom(1.0)
    wheel(view, +2)
    assert view.zoom() == pytest.approx(1.25**2)
    wheel(view, -1)
    assert view.zoom() == pytest.approx(1.25)

    view.set_zoom(2.0)  # the image wider than the view: the line sits on the image pixel under its screen place
    compare.slider.setValue(250)
    x = round(view.viewport().width() * 0.25)
    assert view.line_x() == x
    assert scene.line.line().x1() == pytest.approx(view.mapToScene(QPoint(x, 0)).x())
    assert scene.clip.rect().left() == pytest.approx(scene.line.line().x1())


def test_side_by_side_views_zoom_and_pan_together(compared, qtbot):
    window, _ = compared
    compare = window.compare
    compare.set_mode("side")
    qtbot.wait(10)
    before, after = compare.before_view, compare.after_view
    assert compare.stack.currentIndex() == 1

    after.setFocus()
    qtbot.keyClick(after, Qt.Key.Key_1)
    for _ in range(4):
        qtbot.keyClick(after, Qt.Key.Key_Plus)  # 150%, 200%, 300%, 400%
    assert before.zoom() == after.zoom() == 4.0 and in_step(before, after)

    start = (after.horizontalScrollBar().value(), after.verticalScrollBar().value())
    centre = after.viewport().rect().center()
    drag(qtbot, after, centre, centre + QPoint(-120, -80))  # drag the image up-left: the view moves right/down
    moved = (after.horizontalScrollBar().value(), after.verticalScrollBar().value())
    assert moved[0] > start[0] and moved[1] > start[1]
    assert in_step(before, after)

    drag(qtbot, before, centre, centre + QPoint(60, 30))  # either side leads
    assert in_step(before, after) and after.horizontalScrollBar().value() < moved[0]

    wheel(before, -3)
    assert before.zoom() == after.zoom() == pytest.approx(4.0 / 1.25**3) and in_step(before, after)
    assert compare.split_view.zoom() == after.zoom()  # the hidden split view follows too

    compare.set_mode("split")  # switching modes keeps zoom and place
    assert compare.split_view.zoom() == pytest.approx(after.zoom())


def test_switching_between_results_of_several_backends(compared, qtbot, tmp_path):
    window, first = compared
    second = run(window, qtbot, first.source, "params-test")
    window.panel.param_form.set_values({"steps": 7})
    third = run(window, qtbot, first.source, "params-test")
    window.show_compare(second.id)
    compare = window.compare
    combo = compare.result_combo
    assert [combo.itemText(i) for i in range(combo.count())] == [first.describe(), second.describe(), third.describe()]
    assert compare.current_job() is second
    assert "params-test x4, sampler=ddim, seed=0, steps=20" in compare.info.text()

    view = compare.split_view
    view.set_zoom(6.0)
    view.horizontalScrollBar().setValue(300)
    combo.setCurrentIndex(2)
    assert compare.current_job() is third and "steps=7" in compare.info.text()
    assert view.zoom() == 6.0 and view.horizontalScrollBar().value() == 300  # same place, other backend
    combo.setCurrentIndex(0)
    assert "bicubic x4" in compare.info.text()


def line_on_screen(view) -> float:
    """Where the scene's split line is drawn, in viewport pixels."""
    return view.mapFromScene(QPointF(view.split_scene.line.line().x1(), 0)).x()


def test_the_split_line_keeps_its_place_on_screen_when_zoomed_and_panned(compared, qtbot):
    window, _ = compared
    compare = window.compare
    view = compare.split_view
    view.set_zoom(8.0)
    middle = view.viewport().width() // 2
    for scroll in (0, 400, 1200):  # pan across the image at 800%: the line stays in the middle of the view
        view.horizontalScrollBar().setValue(scroll)
        assert line_on_screen(view) == pytest.approx(middle, abs=1)
    compare.slider.setValue(900)
    view.set_zoom(6.0)
    assert line_on_screen(view) == pytest.approx(view.viewport().width() * 0.9, abs=1)


def test_the_split_line_is_dragged_in_the_picture_and_labelled(compared, qtbot):
    window, job = compared
    compare = window.compare
    view = compare.split_view
    view.set_zoom(4.0)
    compare.slider.setValue(500)
    y = view.viewport().height() // 2
    start = QPoint(view.line_x() + 3, y)  # within the grab distance of the line
    scroll = view.horizontalScrollBar().value()
    drag(qtbot, view, start, QPoint(view.viewport().width() // 4, y))
    assert view.split == pytest.approx(0.25, abs=0.01) and compare.slider.value() == pytest.approx(250, abs=10)
    assert view.horizontalScrollBar().value() == scroll  # the drag moved the line, not the image
    far = QPoint(view.viewport().width() * 3 // 4, y)
    drag(qtbot, view, far, far + QPoint(-100, 0))  # away from the line: a pan, the line stays
    assert view.horizontalScrollBar().value() > scroll and view.split == pytest.approx(0.25, abs=0.01)
    assert view.labels == ("Before: Original", f"After: {job.describe()}")
    labelled = view.viewport().grab().toImage()
    view.set_labels("", "")
    bare = view.viewport().grab().toImage()
    x, h = view.line_x(), labelled.height()
    assert labelled.copy(x + 2, 0, 60, 30) != bare.copy(x + 2, 0, 60, 30)  # "After" painted right of the line
    assert labelled.copy(max(0, x - 62), 0, 60, 30) != bare.copy(max(0, x - 62), 0, 60, 30)  # "Before" left of it
    assert labelled.copy(0, h - 40, labelled.width(), 40) == bare.copy(0, h - 40, labelled.width(), 40)


def test_compare_two_results_and_a_toolbar_that_stays_put(compared, qtbot):
    window, first = compared
    window.panel.param_form.set_values({"steps": 7})
    second = run(window, qtbot, first.source, "params-test")
    window.show_compare(second.id)
    compare = window.compare
    widths = (compare.result_combo.width(), compare.before_combo.width())
    before = compare.before_combo
    assert [before.itemText(i) for i in range(before.count())] == ["Original", first.describe(), second.describe()]
    before.setCurrentIndex(1)  # bicubic on the left, the other backend on the right
    assert compare.before_job() is first and compare.current_job() is second
    assert compare.split_view.labels == (f"Before: {first.describe()}", f"After: {second.describe()}")
    assert compare.before_title.text() == f"Before: {first.describe()}"
    assert compare.split_scene.before.pixmap().size() == compare.split_scene.after.pixmap().size()
    compare.result_combo.setCurrentIndex(0)  # a short label, then a long one: the combos keep their width
    compare.result_combo.setCurrentIndex(1)
    qtbot.wait(10)
    assert (compare.result_combo.width(), compare.before_combo.width()) == widths
    window.show_compare(first.id)  # the same photo again: the chosen "before" stays
    assert compare.before_job() is first
