"""The queue table's Qt model: a view of the headless :class:`~invsr_desktop.engine.jobs.JobQueue`.

The queue tells its observers about every change from the thread that made it (the worker reports progress from
its own thread). :class:`QueueBridge` turns those callbacks into a Qt signal, which Qt delivers in the GUI thread,
and :class:`JobTableModel` keeps its own list of row ids in step with the events, so Qt's begin/end row protocol is
honoured exactly even though the queue itself changes elsewhere.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from typing import Any, Callable

from PySide6.QtCore import (
    QAbstractTableModel,
    QMimeData,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QImage, QPixmap

from invsr_desktop.app.images import ThumbnailLoader
from invsr_desktop.engine.jobs import Job, JobQueue, JobState, QueueEvent
from invsr_desktop.engine.task import TaskMode

#: What fits a 1280 px window without scrolling sideways: the photo, its size, the task in the backend's own
#: name, the status (a progress bar with the time left while it runs) and the result (its file, or why it failed).
COLUMNS = ("Image", "Size", "Task", "Status", "Result")
IMAGE, SIZE, TASK, STATUS, RESULT = range(len(COLUMNS))
JOB_IDS_MIME = "application/x-invsr-job-ids"
#: Role under which the status column hands a working job's 0..1 progress to the progress-bar delegate (None for
#: a job that is not working: its status is plain text).
PROGRESS_ROLE = Qt.ItemDataRole.UserRole + 1
STATE_TEXT = {
    JobState.READY: "Ready",
    JobState.QUEUED: "Queued",
    JobState.RUNNING: "Running",
    JobState.PAUSED: "Paused",
    JobState.DONE: "Done",
    JobState.FAILED: "Failed",
    JobState.CANCELLED: "Cancelled",
}
STATE_COLOURS = {
    JobState.FAILED: QColor("#c62828"),
    JobState.DONE: QColor("#2e7d32"),
    JobState.PAUSED: QColor("#ef6c00"),
}

Index = QModelIndex | QPersistentModelIndex
ROOT = QModelIndex()  # the invalid index: a table's rows hang off it


def format_duration(seconds: float) -> str:
    """``42`` -> ``0:42``, ``3723`` -> ``1:02:03``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class QueueBridge(QObject):
    """Re-emits the queue's events as a Qt signal in the bridge's (the GUI) thread.

    Events made in the GUI thread (adding, moving, removing rows) are passed on at once. Events from the worker
    thread (a job's progress: one per tile, hundreds a second with small tiles) are kept here, the latest per job,
    and passed on at the GUI thread's next pass through its event loop, woken by one signal that carries nothing:
    one redraw per row per frame shows the same as one per tile, and Qt's cross-thread queue holds no Python
    objects. Receivers (:meth:`connect`) are plain Python callables, called in the GUI thread.
    """

    _wake = Signal()

    def __init__(self, queue: JobQueue, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.queue = queue
        self._gui_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._pending: dict[object, QueueEvent] = {}  # insertion-ordered; "changed" keyed by job, so the latest wins
        self._serial = itertools.count()
        self._receivers: list[Callable[[QueueEvent], None]] = []
        self._wake.connect(self.deliver, Qt.ConnectionType.QueuedConnection)
        queue.subscribe(self._forward)

    def _forward(self, event: QueueEvent) -> None:
        if threading.get_ident() == self._gui_thread:
            self.deliver()  # what the worker said before this comes first
            self._send(event)
            return
        key = ("changed", event.job.id) if event.kind == "changed" and event.job is not None else next(self._serial)
        with self._lock:
            first = not self._pending
            self._pending.pop(key, None)
            self._pending[key] = event
        if first:
            self._wake.emit()

    def deliver(self) -> None:
        """Re-emit the events kept from the worker thread (GUI thread only)."""
        with self._lock:
            events, self._pending = list(self._pending.values()), {}
        for event in events:
            self._send(event)

    def connect(self, receiver: Callable[[QueueEvent], None]) -> None:
        """Call ``receiver(event)`` in the GUI thread for every queue event."""
        self._receivers.append(receiver)

    def _send(self, event: QueueEvent) -> None:
        for receiver in list(self._receivers):
            receiver(event)

    def detach(self) -> None:
        self.queue.unsubscribe(self._forward)
        with self._lock:
            self._pending.clear()


def task_text(job: Job, backend_name: str) -> str:
    """The row's task in the user's words: ``Bicubic ×4``, ``ESRGAN (faithful) x4``, ``Shrink ÷4 (INN shrink)``,
    ``Restore ×4``; the parameters are in the tooltip (:meth:`Job.describe`)."""
    if job.mode is TaskMode.RESTORE:
        return f"Restore ×{job.marker.scale}" if job.marker is not None else "Restore"
    if job.mode is TaskMode.SHRINK:
        return f"Shrink ÷{job.scale:g} ({backend_name})"
    return backend_name if backend_name.endswith(f"x{job.scale:g}") else f"{backend_name} ×{job.scale:g}"


def status_text(job: Job) -> str:
    """``Ready``, ``41% · 0:03 left``, ``Paused · 41%``, ``Saving…``, ``Done · 0:04``, ``Failed``..."""
    if job.state.active and job.cancel_requested:
        return "Cancelling…"
    if job.saving:
        return "Saving…"
    if job.state is JobState.RUNNING:
        # rounded up: "0:00 left" while work remains reads as a stuck bar
        return f"{job.progress:.0%}" + (f" · {format_duration(math.ceil(job.eta))} left" if job.eta is not None else "")
    if job.state is JobState.PAUSED:
        return f"Paused · {job.progress:.0%}"
    if job.state is JobState.DONE:
        return f"Done · {format_duration(job.elapsed)}" if not job.reused else "Done before"
    return STATE_TEXT[job.state]


class JobTableModel(QAbstractTableModel):
    """One row per job: thumbnail and name, size before -> after, task, status (with progress), result.

    ``backend_name`` maps a backend id to its display name (the registry's ``BackendSpec.name``).
    """

    def __init__(
        self,
        queue: JobQueue,
        bridge: QueueBridge,
        parent: QObject | None = None,
        backend_name: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(parent)
        self.queue = queue
        self.backend_name = backend_name or (lambda backend_id: backend_id)
        self._ids: list[int] = [job.id for job in queue.jobs()]
        self._thumbnails: dict[str, QPixmap] = {}
        self._sizes: dict[str, QSize] = {}
        self.thumbnails = ThumbnailLoader(parent=self)
        self.thumbnails.loaded.connect(self._thumbnail_loaded)
        bridge.connect(self._on_event)
        for job in queue.jobs():
            self.thumbnails.request(job.source)

    # -- keeping in step with the queue ------------------------------------------------------------------------
    def _on_event(self, event: QueueEvent) -> None:
        job = event.job
        if event.kind == "added" and job is not None:
            row = min(event.index, len(self._ids))
            self.beginInsertRows(QModelIndex(), row, row)
            self._ids.insert(row, job.id)
            self.endInsertRows()
            self.thumbnails.request(job.source)
        elif event.kind == "removed" and job is not None and job.id in self._ids:
            row = self._ids.index(job.id)
            self.beginRemoveRows(QModelIndex(), row, row)
            self._ids.pop(row)
            self.endRemoveRows()
        elif event.kind == "moved" and job is not None and job.id in self._ids:
            source = self._ids.index(job.id)
            target = max(0, min(event.index, len(self._ids) - 1))
            if source != target:
                # Qt wants the row *before which* the moved row lands, counted before the move.
                self.beginMoveRows(
                    QModelIndex(), source, source, QModelIndex(), target + 1 if target > source else target
                )
                self._ids.insert(target, self._ids.pop(source))
                self.endMoveRows()
        elif event.kind == "changed" and job is not None and job.id in self._ids:
            row = self._ids.index(job.id)
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def _thumbnail_loaded(self, path: str, image: QImage, size: QSize) -> None:
        if not image.isNull():
            self._thumbnails[path] = QPixmap.fromImage(image)
        self._sizes[path] = size
        for row, job_id in enumerate(self._ids):
            job = self._job(job_id)
            if job is not None and str(job.source) == path:
                self.dataChanged.emit(self.index(row, IMAGE), self.index(row, SIZE))

    # -- access ------------------------------------------------------------------------------------------------
    def _job(self, job_id: int) -> Job | None:
        try:
            return self.queue.get(job_id)
        except KeyError:
            return None

    def job_at(self, row: int) -> Job | None:
        return self._job(self._ids[row]) if 0 <= row < len(self._ids) else None

    def row_of(self, job_id: int) -> int:
        return self._ids.index(job_id) if job_id in self._ids else -1

    # -- QAbstractTableModel -----------------------------------------------------------------------------------
    def rowCount(self, parent: Index = ROOT) -> int:
        return 0 if parent.isValid() else len(self._ids)

    def columnCount(self, parent: Index = ROOT) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        job = self.job_at(index.row()) if index.isValid() else None
        if job is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(job, column)
        if role == Qt.ItemDataRole.DecorationRole and column == IMAGE:
            return self._thumbnails.get(str(job.source))
        if role == PROGRESS_ROLE:
            return job.progress if column == STATUS and job.state.active else None
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(job, column)
        if role == Qt.ItemDataRole.ForegroundRole and column in (STATUS, RESULT) and job.state in STATE_COLOURS:
            return QBrush(STATE_COLOURS[job.state])
        return None

    def _tooltip(self, job: Job, column: int) -> str:
        if column == IMAGE:
            return str(job.source)
        if job.state is JobState.FAILED:  # the traceback is behind Details… (and in the log), not here
            return f"{job.error}\n\nDouble-click or Details… for the technical text."
        if column == TASK:
            return "\n".join(filter(None, (job.describe(), job.note)))
        if column == RESULT and job.result:
            return f"{job.result}\n{job.note}".strip()
        if column == RESULT and job.note:
            return job.note
        return self._text(job, column)

    def _text(self, job: Job, column: int) -> str:
        if column == IMAGE:
            return job.source.name
        if column == SIZE:
            size = self._sizes.get(str(job.source))
            if size is None or size.isEmpty():
                return ""
            w, h = size.width(), size.height()
            after = job.output_size(w, h)
            return f"{w}×{h} → {after[0]}×{after[1]}" if after else f"{w}×{h}"
        if column == TASK:
            try:
                name = self.backend_name(job.backend_id) if job.backend_id else ""
            except KeyError:  # a backend that is gone (its plugin failed to load this time): its id says enough
                name = job.backend_id
            return task_text(job, name or job.backend_id)
        if column == STATUS:
            return status_text(job)
        if column == RESULT:
            if job.state is JobState.FAILED:  # the row names the file already: keep the reason in view
                return job.error.replace(str(job.source), job.source.name)
            if job.result is not None:
                return job.result.name
            return job.note  # e.g. why a photo queued to upscale is restored instead
        return ""

    # -- drag to reorder ---------------------------------------------------------------------------------------
    def flags(self, index: Index) -> Qt.ItemFlag:
        base = super().flags(index)
        if index.isValid():
            return base | Qt.ItemFlag.ItemIsDragEnabled
        return base | Qt.ItemFlag.ItemIsDropEnabled

    def supportedDropActions(self) -> Qt.DropAction:
        return Qt.DropAction.MoveAction

    def mimeTypes(self) -> list[str]:
        return [JOB_IDS_MIME]

    def mimeData(self, indexes: list[QModelIndex]) -> QMimeData:
        rows = sorted({i.row() for i in indexes if i.isValid()})
        mime = QMimeData()
        mime.setData(JOB_IDS_MIME, json.dumps([self._ids[r] for r in rows]).encode())
        return mime

    def dropMimeData(self, data: QMimeData, action: Qt.DropAction, row: int, column: int, parent: Index) -> bool:
        """Move the dragged jobs to the drop row; the view's own row removal is a no-op (removeRows is not
        implemented), so the queue alone decides the order."""
        if action != Qt.DropAction.MoveAction or not data.hasFormat(JOB_IDS_MIME):
            return False
        dragged = [i for i in json.loads(bytes(data.data(JOB_IDS_MIME)).decode()) if i in self._ids]
        if row < 0:
            row = parent.row() if parent.isValid() else len(self._ids)
        before = sum(1 for i in dragged if self._ids.index(i) < row)
        rest = [i for i in self._ids if i not in dragged]
        at = row - before
        order = rest[:at] + dragged + rest[at:]
        for position, job_id in enumerate(order):  # settle rows front to back: each move leaves earlier rows alone
            if self._ids.index(job_id) != position:
                self.queue.move(job_id, position)
        return True
