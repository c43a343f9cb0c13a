"""The worker thread that runs the queue, so the GUI thread only ever draws and reacts.

The worker is a QObject living in its own QThread; ``wake()`` queues a call to :meth:`QueueWorker.process`, which
runs :meth:`JobQueue.run_pending` until nothing runnable is left. Progress, pause and cancel need no Qt here: the
queue's own callbacks carry them (see :mod:`invsr_desktop.engine.jobs`), and the window sees them through the
:class:`~invsr_desktop.app.queue_model.QueueBridge`. Engine settings changed while a job runs apply from the next
job on, because sessions and runners must not be swapped under a running tile.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, QThread, Signal, Slot

from invsr_desktop.engine.jobs import Job, JobQueue
from invsr_desktop.engine.pipeline import Engine, EngineOptions


class QueueWorker(QObject):
    """Runs queued jobs in the thread it was moved to; ``idle`` once the queue has nothing runnable left."""

    idle = Signal()
    _wake = Signal()

    def __init__(self, queue: JobQueue, engine: Engine) -> None:
        super().__init__()
        self.queue = queue
        self.engine = engine
        self._pending_options: EngineOptions | None = None
        self._lock = threading.Lock()
        self._wake.connect(self.process)  # queued: the signal is emitted in the GUI thread, the slot runs here

    def wake(self) -> None:
        """Ask the worker to look for queued jobs (cheap and harmless when it is already busy)."""
        self._wake.emit()

    def configure(self, options: EngineOptions) -> None:
        """Use ``options`` from the next job on (thread-safe)."""
        with self._lock:
            self._pending_options = options

    @Slot()
    def process(self) -> None:
        self.queue.run_pending(self.engine, before_job=self._before_job)
        self.idle.emit()

    def _before_job(self, job: Job) -> None:
        with self._lock:
            options, self._pending_options = self._pending_options, None
        if options is not None and options != self.engine.options:
            self.engine.configure(options)


class WorkerThread:
    """Owns the QThread and its :class:`QueueWorker`; :meth:`stop` cancels the running job and joins the thread."""

    def __init__(self, queue: JobQueue, engine: Engine) -> None:
        self.queue = queue
        self.thread = QThread()
        self.thread.setObjectName("invsr-queue-worker")
        self.worker = QueueWorker(queue, engine)
        self.worker.moveToThread(self.thread)
        self.thread.start()

    def wake(self) -> None:
        self.worker.wake()

    def stop(self) -> None:
        """Close the queue (the running job stops at its next tile) and wait for the thread to end.

        There is no time limit on purpose: the engine stops between tiles, so the wait is one tile at most, and a
        QThread destroyed while running aborts the whole process (worse than waiting, and it could cut a write).
        """
        self.queue.close()
        self.thread.quit()
        self.thread.wait()
