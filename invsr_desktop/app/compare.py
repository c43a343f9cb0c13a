"""The compare view: a result against its original (or another result of the same photo), as a split line or as
two synced side-by-side views.

Every scene is laid out in the result's pixel coordinates; the "before" image is drawn scaled to the result's size,
so before and after line up pixel for pixel and one transform (zoom) plus one scroll position describe every view.
Above 100% images are sampled nearest-neighbour, so the pixels a backend produced can be inspected one by one.

The split line is measured on the screen (a fraction of the view's width), not on the image: at 800% it stays where
the user put it while the image pans and zooms under it. It is dragged in the picture itself (or with the slider),
and "Before" / "After" labels sit on either side of it.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QColor,
    QFontMetrics,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPen,
    QPixmap,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsItem,
    QGraphicsLineItem,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QLabel,
    QSlider,
    QSplitter,
    QStackedWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from invsr_desktop.app.images import read_image
from invsr_desktop.engine.jobs import Job

#: Zoom steps for the keys and buttons (1.0 = 100%: one result pixel per screen pixel); 800% is the most.
ZOOM_STEPS = (0.0625, 0.125, 0.25, 1 / 3, 0.5, 2 / 3, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
MAX_ZOOM = ZOOM_STEPS[-1]
WHEEL_STEP = 1.25
BACKGROUND = QColor("#2b2b2b")
#: How close (screen pixels) a press must be to the split line to drag it rather than pan the image.
GRAB_DISTANCE = 8
#: What the "before" side shows when it is not another result.
ORIGINAL = "Original"


class ImageView(QGraphicsView):
    """A zoomable, pannable view: wheel and keys zoom, dragging pans; ``viewChanged`` on any zoom or scroll.

    Keys: ``+``/``=`` zoom in, ``-`` zoom out, ``0`` or ``F`` fit, ``1`` 100%.
    """

    viewChanged = Signal()

    def __init__(self, scene: QGraphicsScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setBackgroundBrush(BACKGROUND)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAcceptDrops(False)  # dropped files belong to the window (the queue), not the scene
        self.viewport().setAcceptDrops(False)
        self.fitting = True
        self.horizontalScrollBar().valueChanged.connect(self.viewChanged)
        self.verticalScrollBar().valueChanged.connect(self.viewChanged)

    # -- zoom --------------------------------------------------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def fit_zoom(self) -> float:
        rect = self.sceneRect()
        if rect.isEmpty():
            return 1.0
        view = self.viewport().rect()
        return max(1e-3, min(view.width() / rect.width(), view.height() / rect.height()))

    def min_zoom(self) -> float:
        return min(self.fit_zoom(), ZOOM_STEPS[0])

    def set_zoom(self, zoom: float, anchor_under_mouse: bool = False) -> None:
        """Zoom to ``zoom`` (clamped), keeping the view centre fixed (or the point under the mouse)."""
        zoom = max(self.min_zoom(), min(MAX_ZOOM, zoom))
        self.fitting = False
        anchor = (QGraphicsView.ViewportAnchor.AnchorUnderMouse if anchor_under_mouse
                  else QGraphicsView.ViewportAnchor.AnchorViewCenter)  # fmt: skip
        self.setTransformationAnchor(anchor)
        self.setTransform(QTransform.fromScale(zoom, zoom))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self._update_sampling()
        self.viewChanged.emit()

    def fit(self) -> None:
        """Show the whole image (and keep fitting when the window is resized)."""
        self.set_zoom(self.fit_zoom())
        self.fitting = True
        self.centerOn(self.sceneRect().center())

    def zoom_in(self) -> None:
        self.set_zoom(next((z for z in ZOOM_STEPS if z > self.zoom() * 1.001), MAX_ZOOM))

    def zoom_out(self) -> None:
        lower = [z for z in ZOOM_STEPS if z < self.zoom() * 0.999]
        self.set_zoom(lower[-1] if lower else self.min_zoom())

    def _update_sampling(self) -> None:
        """Smooth when an image is shrunk on screen, nearest-neighbour when its pixels are magnified."""
        zoom = self.zoom()
        for item in self.scene().items():
            if isinstance(item, QGraphicsPixmapItem):
                on_screen = zoom * item.sceneTransform().m11()
                mode = (Qt.TransformationMode.SmoothTransformation if on_screen < 1.0
                        else Qt.TransformationMode.FastTransformation)  # fmt: skip
                if item.transformationMode() != mode:
                    item.setTransformationMode(mode)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, zoom < 1.0)

    # -- events ------------------------------------------------------------------------------------------------
    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.set_zoom(self.zoom() * WHEEL_STEP**steps, anchor_under_mouse=True)
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_in()
        elif key == Qt.Key.Key_Minus:
            self.zoom_out()
        elif key in (Qt.Key.Key_0, Qt.Key.Key_F):
            self.fit()
        elif key == Qt.Key.Key_1:
            self.set_zoom(1.0)
        else:
            super().keyPressEvent(event)

    def resizeEvent(self, event) -> None:  # noqa: ANN001 - Qt's QResizeEvent
        super().resizeEvent(event)
        if self.fitting:
            self.fit()


class ViewLink:
    """Keeps several views at the same zoom and scroll position: whichever moves, the others follow."""

    def __init__(self, *views: ImageView) -> None:
        self.views = list(views)
        self._syncing = False
        for view in self.views:
            view.viewChanged.connect(lambda v=view: self.follow(v))

    def follow(self, leader: ImageView, force: bool = False) -> None:
        """Bring every other view to ``leader``'s zoom and place. A hidden view does not lead (its scroll bars
        reset when its scene changes, which must not move what the user is looking at) unless ``force``."""
        if self._syncing or not (force or leader.isVisible()):
            return
        self._syncing = True
        try:
            centre = leader.mapToScene(leader.viewport().rect().center())
            for view in self.views:
                if view is leader:
                    continue
                view.fitting = leader.fitting
                if view.transform() != leader.transform():
                    view.setTransform(leader.transform())
                    view._update_sampling()
                if view.viewport().size() == leader.viewport().size():
                    view.horizontalScrollBar().setValue(leader.horizontalScrollBar().value())
                    view.verticalScrollBar().setValue(leader.verticalScrollBar().value())
                else:
                    view.centerOn(centre)
        finally:
            self._syncing = False


class SplitScene(QGraphicsScene):
    """Before on the left of a vertical line, after on its right; ``set_split_x`` moves the line (scene pixels)."""

    def __init__(self) -> None:
        super().__init__()
        self.before = QGraphicsPixmapItem()
        self.clip = QGraphicsRectItem()
        self.clip.setFlag(QGraphicsItem.GraphicsItemFlag.ItemClipsChildrenToShape)
        self.clip.setPen(Qt.PenStyle.NoPen)
        self.after = QGraphicsPixmapItem(self.clip)
        self.line = QGraphicsLineItem()
        pen = QPen(QColor("white"), 2)
        pen.setCosmetic(True)
        self.line.setPen(pen)
        for item in (self.before, self.clip, self.line):
            self.addItem(item)
        self.split_x = 0.0

    def set_images(self, before: QPixmap, after: QPixmap) -> None:
        place_before(self.before, before, after.size())
        self.after.setPixmap(after)
        self.setSceneRect(QRectF(0, 0, after.width(), after.height()))
        self.set_split_x(self.split_x)

    def set_split_x(self, x: float) -> None:
        """Put the line at scene x ``x`` (clamped to the image: off the image, one side shows whole)."""
        rect = self.sceneRect()
        self.split_x = x = min(rect.width(), max(0.0, x))
        self.clip.setRect(QRectF(x, 0, rect.width() - x, rect.height()))
        self.line.setLine(x, 0, x, rect.height())


class SplitView(ImageView):
    """The split mode's view: the line at a fraction of the *viewport's* width, dragged in the picture, labelled.

    ``split`` (0..1 of the view's width) is what the user set; on every zoom, scroll or resize the scene's line is
    moved to the image pixel under that screen position. A press within :data:`GRAB_DISTANCE` pixels of the line
    drags it; anywhere else pans as in every view.
    """

    splitChanged = Signal(float)

    def __init__(self, scene: SplitScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.split_scene = scene
        self.split = 0.5
        self.labels = ("Before", "After")
        self._dragging = False
        self.viewport().setMouseTracking(True)
        self.viewChanged.connect(self._place_line)

    def set_split(self, fraction: float) -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        if fraction != self.split:
            self.split = fraction
            self.splitChanged.emit(fraction)
        self._place_line()

    def set_labels(self, before: str, after: str) -> None:
        self.labels = (before, after)
        self.viewport().update()

    def line_x(self) -> int:
        """The line's position in viewport pixels."""
        return round(self.split * self.viewport().width())

    def _place_line(self) -> None:
        self.split_scene.set_split_x(self.mapToScene(QPoint(self.line_x(), 0)).x())
        self.viewport().update()

    def _near_line(self, event: QMouseEvent) -> bool:
        return abs(event.position().x() - self.line_x()) <= GRAB_DISTANCE

    # -- events ------------------------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self._near_line(event):
            self._dragging = True
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._dragging:
            self.set_split(event.position().x() / max(1, self.viewport().width()))
            event.accept()
            return
        if not event.buttons():
            near = self._near_line(event)
            self.viewport().setCursor(Qt.CursorShape.SplitHCursor if near else Qt.CursorShape.OpenHandCursor)
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._dragging and event.button() == Qt.MouseButton.LeftButton:
            self._dragging = False
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def resizeEvent(self, event) -> None:  # noqa: ANN001 - Qt's QResizeEvent
        super().resizeEvent(event)
        self._place_line()

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        """The two labels, in screen coordinates beside the line (elided to their side; none on a side too narrow)."""
        super().drawForeground(painter, rect)
        if self.split_scene.sceneRect().isEmpty():
            return
        painter.save()
        painter.resetTransform()
        metrics = QFontMetrics(painter.font())
        x, width, pad = self.line_x(), self.viewport().width(), 6
        for text, left, room in ((self.labels[0], None, x - 2 * pad), (self.labels[1], x + pad, width - x - 2 * pad)):
            if room < 40 or not text:
                continue
            shown = metrics.elidedText(text, Qt.TextElideMode.ElideRight, room - 2 * pad)
            box = QRectF(0, pad, metrics.horizontalAdvance(shown) + 2 * pad, metrics.height() + pad)
            box.moveLeft(left if left is not None else x - pad - box.width())
            painter.fillRect(box, QColor(0, 0, 0, 150))
            painter.setPen(QColor("white"))
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, shown)
        painter.restore()


def place_before(item: QGraphicsPixmapItem, before: QPixmap, output: QSize) -> None:
    """Show the original stretched to the result's size, so both share coordinates."""
    item.setPixmap(before)
    if before.width() and before.height():
        item.setTransform(QTransform.fromScale(output.width() / before.width(), output.height() / before.height()))


class CompareView(QWidget):
    """Results of one photo against its original: pick the result, the mode, the zoom; pan by dragging."""

    modeChanged = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source: Path | None = None
        self.results: list[Job] = []
        self._original = QPixmap()
        self._before = QPixmap()
        self._after = QPixmap()

        self.split_scene = SplitScene()
        self.split_view = SplitView(self.split_scene)
        self.split_view.setObjectName("split_view")
        self.slider = QSlider(Qt.Orientation.Horizontal, objectName="split_slider")
        self.slider.setRange(0, 1000)
        self.slider.setValue(500)
        self.slider.setToolTip("Where the line between before (left) and after (right) sits in the view; the line "
                               "can also be dragged in the picture")  # fmt: skip
        self.slider.valueChanged.connect(lambda v: self.split_view.set_split(v / 1000))
        self.split_view.splitChanged.connect(self._split_moved)

        self.before_scene, self.after_scene = QGraphicsScene(), QGraphicsScene()
        self.before_item, self.after_item = QGraphicsPixmapItem(), QGraphicsPixmapItem()
        self.before_scene.addItem(self.before_item)
        self.after_scene.addItem(self.after_item)
        self.before_view, self.after_view = ImageView(self.before_scene), ImageView(self.after_scene)
        self.before_view.setObjectName("before_view")
        self.after_view.setObjectName("after_view")
        self.link = ViewLink(self.split_view, self.before_view, self.after_view)
        for view in self.link.views:
            view.viewChanged.connect(self._show_zoom)

        self.stack = QStackedWidget()
        split_page = QWidget()
        split_layout = QVBoxLayout(split_page)
        split_layout.setContentsMargins(0, 0, 0, 0)
        split_layout.addWidget(self.split_view, 1)
        split_layout.addWidget(self.slider)
        self.side_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.before_title, self.after_title = QLabel(objectName="before_title"), QLabel(objectName="after_title")
        for title, view in ((self.before_title, self.before_view), (self.after_title, self.after_view)):
            pane = QWidget()
            pane_layout = QVBoxLayout(pane)
            pane_layout.setContentsMargins(0, 0, 0, 0)
            pane_layout.addWidget(title)
            pane_layout.addWidget(view, 1)
            self.side_splitter.addWidget(pane)
        self.side_splitter.setStretchFactor(0, 1)
        self.side_splitter.setStretchFactor(1, 1)
        self.side_splitter.setSizes([1 << 16, 1 << 16])  # equal halves, whatever the titles' widths
        self.stack.addWidget(split_page)
        self.stack.addWidget(self.side_splitter)
        self.placeholder = QLabel("Double-click a finished image in the queue to compare it with its original.")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.stack.addWidget(self.placeholder)
        self.stack.setCurrentWidget(self.placeholder)

        layout = QVBoxLayout(self)
        layout.addWidget(self._toolbar())
        self.info = QLabel(objectName="compare_info", wordWrap=True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.info)
        layout.addWidget(self.stack, 1)
        self.mode = "split"

    def _toolbar(self) -> QToolBar:
        bar = QToolBar(objectName="compare_toolbar")  # overflows into a menu when the window is narrow
        bar.addWidget(QLabel("Before "))
        self.before_combo = _fixed_combo("before_combo", "What the left side (before) shows: the original, or "
                                         "another result of this photo (two backends, two seeds)")  # fmt: skip
        self.before_combo.currentIndexChanged.connect(lambda _: self._show_pair())
        bar.addWidget(self.before_combo)
        bar.addWidget(QLabel(" After "))
        self.result_combo = _fixed_combo("result_combo", "Every result of this photo: switch backends at the "
                                         "same zoom and place")  # fmt: skip
        self.result_combo.currentIndexChanged.connect(lambda _: self._show_pair())
        bar.addWidget(self.result_combo)
        bar.addSeparator()
        self.mode_group = QActionGroup(self)
        self.mode_actions: dict[str, QAction] = {}
        for key, text in (("split", "Split"), ("side", "Side by side")):
            action = bar.addAction(text)
            action.setObjectName(f"mode_{key}")
            action.setCheckable(True)
            action.triggered.connect(lambda checked=False, k=key: self.set_mode(k))
            self.mode_group.addAction(action)
            self.mode_actions[key] = action
        self.mode_actions["split"].setChecked(True)
        bar.addSeparator()
        for text, tip, slot in (("Fit", "Fit the image in the view (0)", lambda: self.current_view().fit()),
                                ("100%", "One result pixel per screen pixel (1)", lambda: self.set_zoom(1.0)),
                                ("−", "Zoom out (-)", lambda: self.current_view().zoom_out()),
                                ("+", "Zoom in (+), up to 800%", lambda: self.current_view().zoom_in())):  # fmt: skip
            action = bar.addAction(text)
            action.setToolTip(tip)
            action.triggered.connect(slot)
        self.zoom_label = QLabel(objectName="zoom_label")
        self.zoom_label.setMinimumWidth(50)
        self.zoom_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        bar.addWidget(self.zoom_label)
        return bar

    # -- content -----------------------------------------------------------------------------------------------
    def show_results(self, source: Path, results: list[Job], current: Job | None = None) -> None:
        """Compare ``source`` with its ``results`` (finished jobs of that photo), starting with ``current``."""
        if source != self.source:
            image, _ = read_image(source)
            self._original = QPixmap.fromImage(image)
            self.source = source
            self._after = QPixmap()  # another photo: start from "fit" again
            self.before_combo.blockSignals(True)
            self.before_combo.clear()  # a new photo compares with its original first
            self.before_combo.blockSignals(False)
        chosen_before = self.before_job()
        self.results = list(results)
        for combo, first in ((self.before_combo, ORIGINAL), (self.result_combo, None)):
            combo.blockSignals(True)
            combo.clear()
            if first:
                combo.addItem(first, None)
            for job in self.results:
                combo.addItem(job.describe(), job.id)
            combo.blockSignals(False)
        before = self.before_combo.findData(chosen_before.id) if chosen_before in self.results else 0
        self.before_combo.setCurrentIndex(max(0, before))
        index = self.results.index(current) if current in self.results else len(self.results) - 1
        self.result_combo.setCurrentIndex(-1)
        self.result_combo.setCurrentIndex(index)

    def current_job(self) -> Job | None:
        index = self.result_combo.currentIndex()
        return self.results[index] if 0 <= index < len(self.results) else None

    def before_job(self) -> Job | None:
        """The result shown as "before", or None for the original."""
        job_id = self.before_combo.currentData()
        return next((job for job in self.results if job.id == job_id), None) if job_id is not None else None

    def _show_pair(self) -> None:
        job = self.current_job()
        if job is None or job.result is None:
            return
        image, _ = read_image(job.result)
        if image.isNull():
            self.info.setText(f"Cannot read {job.result}")
            return
        before_job = self.before_job()
        if before_job is not None and before_job.result is not None:
            before_image, _ = read_image(before_job.result)
            self._before = QPixmap.fromImage(before_image) if not before_image.isNull() else self._original
        else:
            self._before = self._original
        first = self._after.isNull()
        self._after = QPixmap.fromImage(image)
        self.split_scene.set_images(self._before, self._after)
        place_before(self.before_item, self._before, self._after.size())
        self.after_item.setPixmap(self._after)
        rect = QRectF(0, 0, self._after.width(), self._after.height())
        self.before_scene.setSceneRect(rect)
        self.after_scene.setSceneRect(rect)
        before_name = before_job.describe() if before_job is not None else ORIGINAL
        self.split_view.set_labels(f"Before: {before_name}", f"After: {job.describe()}")
        self.before_title.setText(f"Before: {before_name}" + ("" if before_job else " (shown at the output size)"))
        self.after_title.setText(f"After: {job.describe()}")
        self._describe(job)
        if self.stack.currentWidget() is self.placeholder:
            self.stack.setCurrentIndex(0 if self.mode == "split" else 1)
        if first:
            self.current_view().fit()
        else:  # same zoom and place for the next result: that is what makes switching a comparison
            for view in self.link.views:
                view._update_sampling()
            self.link.follow(self.current_view(), force=True)

    def _split_moved(self, fraction: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(round(fraction * 1000))
        self.slider.blockSignals(False)

    def _describe(self, job: Job) -> None:
        before = f"{self._original.width()}×{self._original.height()}"
        after = f"{self._after.width()}×{self._after.height()}"
        self.info.setText(f"<b>{job.source.name}</b> — {job.describe()} — {before} → {after} — "
                          f"{job.result.name if job.result else ''} (took {job.elapsed:.1f} s)")  # fmt: skip

    # -- mode and zoom -----------------------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """``split`` (one view, a line to drag) or ``side`` (two views side by side), keeping zoom and place."""
        if mode not in self.mode_actions:
            return
        previous = self.current_view()
        self.mode = mode
        self.mode_actions[mode].setChecked(True)
        if self.stack.currentWidget() is not self.placeholder:
            self.stack.setCurrentIndex(0 if mode == "split" else 1)
            self.link.follow(previous, force=True)
        self.modeChanged.emit(mode)

    def current_view(self) -> ImageView:
        return self.split_view if self.mode == "split" else self.after_view

    def set_zoom(self, zoom: float) -> None:
        self.current_view().set_zoom(zoom)

    def zoom(self) -> float:
        return self.current_view().zoom()

    def _show_zoom(self) -> None:
        self.zoom_label.setText(f"{self.zoom():.0%}")

    def center_on(self, point: QPointF) -> None:
        """Centre the current view on a point in result pixels (the linked views follow)."""
        view = self.current_view()
        view.centerOn(point)
        self.link.follow(view)


def _fixed_combo(name: str, tip: str) -> QComboBox:
    """A combo box whose width does not follow its current text, so the toolbar beside it stays put."""
    combo = QComboBox(objectName=name)
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(16)
    combo.setToolTip(tip)
    return combo
