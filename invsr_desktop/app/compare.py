"""The compare view: a result against its original, as a split slider or as two synced side-by-side views.

Every scene is laid out in the result's pixel coordinates; the original is drawn scaled up to the result's size, so
"before" and "after" line up pixel for pixel and one transform (zoom) plus one scroll position describe every view.
Above 100% images are sampled nearest-neighbour, so the pixels a backend produced can be inspected one by one.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QKeyEvent, QPainter, QPen, QPixmap, QTransform, QWheelEvent
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
    """Before on the left of a vertical line, after on its right; ``set_split(0..1)`` moves the line."""

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
        self.split = 0.5

    def set_images(self, before: QPixmap, after: QPixmap) -> None:
        place_before(self.before, before, after.size())
        self.after.setPixmap(after)
        self.setSceneRect(QRectF(0, 0, after.width(), after.height()))
        self.set_split(self.split)

    def set_split(self, fraction: float) -> None:
        self.split = min(1.0, max(0.0, fraction))
        rect = self.sceneRect()
        x = rect.width() * self.split
        self.clip.setRect(QRectF(x, 0, rect.width() - x, rect.height()))
        self.line.setLine(x, 0, x, rect.height())


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
        self._before = QPixmap()
        self._after = QPixmap()

        self.split_scene = SplitScene()
        self.split_view = ImageView(self.split_scene)
        self.split_view.setObjectName("split_view")
        self.slider = QSlider(Qt.Orientation.Horizontal, objectName="split_slider")
        self.slider.setRange(0, 1000)
        self.slider.setValue(500)
        self.slider.setToolTip("Drag to move the line between before (left) and after (right)")
        self.slider.valueChanged.connect(lambda v: self.split_scene.set_split(v / 1000))

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
        for title, view in (("Before (original, shown at the output size)", self.before_view),
                            ("After", self.after_view)):  # fmt: skip
            pane = QWidget()
            pane_layout = QVBoxLayout(pane)
            pane_layout.setContentsMargins(0, 0, 0, 0)
            pane_layout.addWidget(QLabel(title))
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
        bar.addWidget(QLabel("Result "))
        self.result_combo = QComboBox(objectName="result_combo")
        self.result_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.result_combo.setToolTip("Every result of this photo: switch backends at the same zoom and place")
        self.result_combo.currentIndexChanged.connect(self._result_chosen)
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
            self._before = QPixmap.fromImage(image)
            self.source = source
            self._after = QPixmap()  # another photo: start from "fit" again
        self.results = list(results)
        self.result_combo.blockSignals(True)
        self.result_combo.clear()
        for job in self.results:
            self.result_combo.addItem(job.describe(), job.id)
        self.result_combo.blockSignals(False)
        index = self.results.index(current) if current in self.results else len(self.results) - 1
        self.result_combo.setCurrentIndex(-1)
        self.result_combo.setCurrentIndex(index)

    def current_job(self) -> Job | None:
        index = self.result_combo.currentIndex()
        return self.results[index] if 0 <= index < len(self.results) else None

    def _result_chosen(self, index: int) -> None:
        job = self.current_job()
        if job is None or job.result is None:
            return
        image, _ = read_image(job.result)
        if image.isNull():
            self.info.setText(f"Cannot read {job.result}")
            return
        first = self._after.isNull()
        self._after = QPixmap.fromImage(image)
        self.split_scene.set_images(self._before, self._after)
        place_before(self.before_item, self._before, self._after.size())
        self.after_item.setPixmap(self._after)
        rect = QRectF(0, 0, self._after.width(), self._after.height())
        self.before_scene.setSceneRect(rect)
        self.after_scene.setSceneRect(rect)
        self._describe(job)
        if self.stack.currentWidget() is self.placeholder:
            self.stack.setCurrentIndex(0 if self.mode == "split" else 1)
        if first:
            self.current_view().fit()
        else:  # same zoom and place for the next result: that is what makes switching a comparison
            for view in self.link.views:
                view._update_sampling()
            self.link.follow(self.current_view(), force=True)

    def _describe(self, job: Job) -> None:
        before = f"{self._before.width()}×{self._before.height()}"
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
