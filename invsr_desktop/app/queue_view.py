"""The queue page: the job table (drag to reorder, progress bars) and the buttons that act on selected jobs.

Actions that only touch the queue (cancel, retry, move, remove) are carried out here; the ones that need the rest of
the window (compare, run again with the current settings) are signals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPoint, QRect, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHeaderView,
    QMenu,
    QMessageBox,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
    QTableView,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from invsr_desktop.app.images import THUMBNAIL_SIDE
from invsr_desktop.app.queue_model import (
    IMAGE,
    PROGRESS_ROLE,
    RESULT,
    SIZE,
    STATUS,
    TASK,
    JobTableModel,
)
from invsr_desktop.engine.jobs import Job, JobQueue, JobState

BAR_HEIGHT = 22
EMPTY_TEXT = "Drop photos or folders here\n\nor Open files… (Ctrl+O), Open folder… (Ctrl+Shift+O), Paste (Ctrl+V)"
#: Fixed widths (fitting to contents costs O(rows) per change); Image and Result share what is left.
COLUMN_WIDTHS = {SIZE: 180, TASK: 170, STATUS: 160}
#: Below this table width the Size column goes (the row's tooltip and the compare view still say it), so the
#: name, the status and the result stay readable in a 1024 px window.
NARROW_TABLE = 760


class ProgressDelegate(QStyledItemDelegate):
    """Draws a working job's status as the platform's progress bar, its text (percent, time left) on the bar."""

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        value = index.data(PROGRESS_ROLE)
        if value is None:
            super().paint(painter, option, index)
            return
        bar = QStyleOptionProgressBar()
        cell = QRect(option.rect)  # type: ignore[attr-defined]
        height = min(cell.height() - 8, BAR_HEIGHT)
        bar.rect = QRect(cell.left() + 4, cell.center().y() - height // 2, cell.width() - 8, height)
        bar.minimum, bar.maximum = 0, 1000
        bar.progress = int(round(float(value) * 1000))
        bar.text = str(index.data(Qt.ItemDataRole.DisplayRole) or f"{float(value):.0%}")
        bar.textVisible = True
        bar.state = option.state | QStyle.StateFlag.State_Horizontal  # type: ignore[attr-defined]  # Qt 6: else vertical
        style = option.widget.style() if option.widget else QApplication.style()  # type: ignore[attr-defined]
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter)


class QueueTable(QTableView):
    """The job table: whole-row selection, drag and drop to reorder, a progress bar column."""

    def __init__(self, model: JobTableModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("queue_table")
        self.setModel(model)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.setDragEnabled(True)
        self.setDropIndicatorShown(True)
        self.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.setDragDropOverwriteMode(False)
        self.setIconSize(QRect(0, 0, THUMBNAIL_SIDE, THUMBNAIL_SIDE).size())
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.verticalHeader().setDefaultSectionSize(THUMBNAIL_SIDE + 8)
        self.verticalHeader().hide()
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for column in (IMAGE, RESULT):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
        for column, width in COLUMN_WIDTHS.items():
            self.setColumnWidth(column, width)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # the columns fit; text elides
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # long names keep their start and their extension
        self.setItemDelegateForColumn(STATUS, ProgressDelegate(self))
        # New rows come in at the bottom: the list follows them, so dropped photos are seen arriving.
        # Deferred: the scroll range grows only once the view has laid the new rows out.
        model.rowsInserted.connect(lambda parent, first, last: QTimer.singleShot(0, self._follow))

    def resizeEvent(self, event) -> None:  # noqa: ANN001 - Qt's QResizeEvent
        super().resizeEvent(event)
        self.setColumnHidden(SIZE, self.viewport().width() < NARROW_TABLE)

    def _follow(self) -> None:
        if self.model().rowCount():
            self.scrollTo(self.model().index(self.model().rowCount() - 1, 0))

    def paintEvent(self, event: QPaintEvent) -> None:
        """An empty queue shows the three ways in, large, where the rows would be (Upscayl's and chaiNNer's empty
        state; Qt's views have no placeholder of their own)."""
        super().paintEvent(event)
        if self.model().rowCount() == 0:
            painter = QPainter(self.viewport())
            font = painter.font()
            font.setPointSizeF(font.pointSizeF() * 1.4)
            painter.setFont(font)
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter, EMPTY_TEXT)
            painter.end()


class QueuePanel(QWidget):
    """The table plus buttons for the selected jobs; ``compareRequested(job_id)``, ``rerunRequested(ids)``."""

    compareRequested = Signal(int)
    rerunRequested = Signal(list)

    def __init__(self, queue: JobQueue, model: JobTableModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.queue = queue
        self.model = model
        self.table = QueueTable(model)
        self.table.doubleClicked.connect(self._double_clicked)
        self.table.selectionModel().selectionChanged.connect(self._update_buttons)
        model.dataChanged.connect(self._update_buttons)
        model.rowsInserted.connect(self._update_buttons)
        model.rowsRemoved.connect(self._update_buttons)

        self.toolbar = QToolBar(objectName="queue_toolbar")
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.actions_: dict[str, QAction] = {}
        for key, text, tip, slot in (
            ("up", "Move up", "Run the selected images sooner (Ctrl+Up)", lambda: self._move(-1)),
            ("down", "Move down", "Run the selected images later (Ctrl+Down)", lambda: self._move(+1)),
            ("cancel", "Cancel", "Cancel the selected images (a running one stops after its current tile)",
             self.cancel_selected),
            ("retry", "Retry", "Queue the selected failed or cancelled images again", self.retry_selected),
            ("remove", "Remove", "Take the selected images off the list (result files stay)", self.remove_selected),
            ("rerun", "Run again", "Queue the selected photos again with the backend and parameters now chosen, "
             "keeping the earlier results for comparison", lambda: self.rerunRequested.emit(self.selected_ids())),
            ("compare", "Compare", "Compare the selected result with its original", self._compare_selected),
            ("details", "Details…", "Why the selected image failed, with the technical text to report it (also: "
             "double-click a failed row)", self.show_details),
            ("clear", "Clear finished", "Remove every finished image from the list", queue.clear_finished),
        ):  # fmt: skip
            action = self.toolbar.addAction(text)
            action.setObjectName(f"queue_{key}")
            action.setToolTip(tip)
            action.triggered.connect(slot)
            self.actions_[key] = action
        for key, text, tip, slot in (  # in the row menu only: the toolbar keeps to what fits a 1024 px window
            ("open", "Open result", "Open the result in the desktop's image viewer", self._open_result),
            ("folder", "Show in folder", "Open the folder that holds the result", self._show_folder),
        ):
            action = QAction(text, self, objectName=f"queue_{key}", toolTip=tip)
            action.triggered.connect(slot)
            self.actions_[key] = action
        for key, keys in (("up", "Ctrl+Up"), ("down", "Ctrl+Down"), ("remove", QKeySequence.StandardKey.Delete),
                          ("details", "Ctrl+I")):  # fmt: skip
            action = self.actions_[key]
            action.setShortcut(QKeySequence(keys))
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(action)  # the keys work wherever the queue has the focus, and menus show them
        #: How results and folders are opened (QDesktopServices: the user's viewer and file manager).
        self.open_url: Callable[[QUrl], object] = QDesktopServices.openUrl
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(lambda pos: self.row_menu(pos).popup(
            self.table.viewport().mapToGlobal(pos)))  # fmt: skip

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.table, 1)
        self._update_buttons()

    def button(self, key: str) -> QWidget:
        """The tool button of an action (what a user clicks)."""
        return self.toolbar.widgetForAction(self.actions_[key])

    # -- selection ---------------------------------------------------------------------------------------------
    def selected_ids(self) -> list[int]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        jobs = [self.model.job_at(row) for row in rows]
        return [job.id for job in jobs if job is not None]

    def selected_jobs(self) -> list[Job]:
        return [self.queue.get(i) for i in self.selected_ids() if self.queue.index_of(i) >= 0]

    def select_job(self, job_id: int) -> None:
        row = self.model.row_of(job_id)
        if row >= 0:
            self.table.selectRow(row)

    # -- the row menu ------------------------------------------------------------------------------------------
    def row_menu(self, pos: QPoint) -> QMenu:
        """The menu of the row under ``pos`` (viewport coordinates; it becomes the selection unless it is in it):
        open the result or its folder, compare, run again, retry, cancel, details, remove."""
        index = self.table.indexAt(pos)
        if index.isValid() and index.row() not in {i.row() for i in self.table.selectionModel().selectedRows()}:
            self.table.selectRow(index.row())
        self._update_buttons()
        menu = QMenu(self, objectName="queue_menu")
        for key in ("open", "folder", None, "compare", "rerun", "retry", "cancel", "details", None, "up", "down",
                    None, "remove"):  # fmt: skip
            if key is None:
                menu.addSeparator()
            else:
                menu.addAction(self.actions_[key])
        return menu

    def _result(self) -> Path | None:
        return next((job.result for job in self.selected_jobs() if job.state is JobState.DONE and job.result), None)

    def _open_result(self) -> None:
        result = self._result()
        if result is not None:
            self.open_url(QUrl.fromLocalFile(str(result)))

    def _show_folder(self) -> None:
        result = self._result()
        if result is not None:
            self.open_url(QUrl.fromLocalFile(str(result.parent)))

    # -- actions -----------------------------------------------------------------------------------------------
    def _move(self, delta: int) -> None:
        ids = self.selected_ids()
        ordered = ids if delta < 0 else list(reversed(ids))  # so a block of rows keeps its order
        for job_id in ordered:
            self.queue.move_by(job_id, delta)
        selection = self.table.selectionModel()
        selection.clearSelection()
        for job_id in ids:
            row = self.model.row_of(job_id)
            selection.select(self.model.index(row, 0), selection.SelectionFlag.Select | selection.SelectionFlag.Rows)

    def cancel_selected(self) -> None:
        for job_id in self.selected_ids():
            self.queue.cancel(job_id)

    def retry_selected(self) -> None:
        for job_id in self.selected_ids():
            self.queue.retry(job_id)

    def remove_selected(self) -> None:
        for job_id in self.selected_ids():
            self.queue.remove(job_id)

    def _compare_selected(self) -> None:
        done = [job for job in self.selected_jobs() if job.state is JobState.DONE]
        if done:
            self.compareRequested.emit(done[0].id)

    def _double_clicked(self, index: QModelIndex) -> None:
        job = self.model.job_at(index.row())
        if job is not None and job.state is JobState.DONE:
            self.compareRequested.emit(job.id)
        elif job is not None and job.state is JobState.FAILED:
            self.show_details(job)

    def show_details(self, job: Job | None = None) -> QMessageBox | None:
        """The failure in one sentence, the technical text (the traceback the log also holds) behind Qt's own
        "Show Details..." button, where a bug report can copy it from."""
        job = job or next((j for j in self.selected_jobs() if j.state is JobState.FAILED), None)
        if job is None:
            return None
        box = QMessageBox(QMessageBox.Icon.Warning, "Why this image failed", job.error or "It failed.",
                          QMessageBox.StandardButton.Close, self, objectName="failure_box")  # fmt: skip
        box.setInformativeText(f"{job.source.name}: Retry runs it again; Remove takes it off the list.")
        if job.details:
            box.setDetailedText(job.details)
        box.open()
        return box

    def _update_buttons(self, *args: object) -> None:
        jobs = self.selected_jobs()
        states = {job.state for job in jobs}
        enabled = {
            "up": bool(jobs),
            "down": bool(jobs),
            "cancel": any(not s.finished for s in states),
            "retry": bool(states & {JobState.FAILED, JobState.CANCELLED}),
            "remove": bool(jobs),
            "rerun": bool(jobs),
            "compare": JobState.DONE in states,
            "open": JobState.DONE in states,
            "folder": JobState.DONE in states,
            "details": JobState.FAILED in states,
            "clear": any(job.state.finished for job in self.queue.jobs()),
        }
        for key, on in enabled.items():
            self.actions_[key].setEnabled(on)
