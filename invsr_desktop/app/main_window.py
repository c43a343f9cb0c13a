"""The main window: drop photos anywhere, pick a backend, watch the queue, compare the results.

The window wires the parts together and owns nothing clever: the queue model and the engine are headless
(:mod:`invsr_desktop.engine`), the worker thread runs the queue, and the widgets show its events. Nothing a job
does (a broken plugin, a missing model, a full disk, a provider falling back) can close the window: the queue turns
every failure into a row state and the engine's messages into the status line.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable

from PySide6.QtCore import QEvent, QMimeData, QObject, QStandardPaths, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QIcon,
    QImage,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QToolButton,
    QWidget,
)

from invsr_desktop.app import APPLICATION
from invsr_desktop.app.backend_panel import BackendPanel
from invsr_desktop.app.compare import CompareView
from invsr_desktop.app.plugins_dialog import PluginsDialog
from invsr_desktop.app.queue_model import JobTableModel, QueueBridge, format_duration
from invsr_desktop.app.queue_view import QueuePanel
from invsr_desktop.app.settings import AppSettings
from invsr_desktop.app.worker import WorkerThread
from invsr_desktop.engine.jobs import Job, JobQueue, JobState, QueueEvent, expand_sources
from invsr_desktop.engine.task import TaskMode
from invsr_desktop.engine.pipeline import Engine
from invsr_desktop.engine.queue_store import Restored, load_records, restore, save_queue
from invsr_desktop.engine.registry import Registry, default_registry
from invsr_desktop.engine.sessions import planned_path
from invsr_desktop.resources import ICONS

DRAG_EVENTS = (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop)
ICON_PATH = ICONS / "invsr-desktop.svg"
log = logging.getLogger(__name__)
#: The most of a narrow window's width the side panel takes (it keeps its own minimum): the queue gets the rest.
PANEL_SHARE = 0.32
#: What the empty queue invites the user to do, per mode.
EMPTY_QUEUE_TEXT = {
    TaskMode.UPSCALE: "Drop photos or folders here to upscale them",
    TaskMode.SHRINK: "Drop photos or folders here to shrink them (INN shrink & restore)",
    TaskMode.RESTORE: "Drop images made by Shrink here to restore them to full size",
}


def added_text(jobs: list[Job], mode: TaskMode) -> str:
    """``Added 3 images``, and how many of them are shrunk images that will be restored instead."""
    text = f"Added {len(jobs)} image{'s' if len(jobs) != 1 else ''}"
    restored = sum(1 for job in jobs if job.mode is TaskMode.RESTORE)
    if restored and mode is not TaskMode.RESTORE:
        text += f" ({restored} made by Shrink: restored to full size)"
    return text


def default_paste_dir() -> Path:
    """Where pasted images are saved (and, unless an output folder is set, their results): Pictures/InvSR Desktop."""
    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation) or str(Path.home())
    return Path(pictures) / APPLICATION


def local_files(mime: QMimeData) -> list[Path]:
    """The local files a drag or the clipboard carries (URLs, or one path per line of plain text)."""
    if mime.hasUrls():
        return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]
    if mime.hasText():
        lines = [line.strip().removeprefix("file://") for line in mime.text().splitlines() if line.strip()]
        paths = [Path(line) for line in lines]
        return paths if paths and all(p.exists() for p in paths) else []
    return []


class MessageBridge(QObject):
    """The engine's ``on_message`` runs in the worker thread; this delivers the text in the GUI thread."""

    message = Signal(str)


class MainWindow(QMainWindow):
    """The application window. ``settings``, ``registry`` and ``paste_dir`` are injectable for tests."""

    def __init__(
        self,
        settings: AppSettings | None = None,
        registry: Registry | None = None,
        paste_dir: Path | None = None,
        parent: QWidget | None = None,
        queue_file: Path | None = None,
    ) -> None:
        """``queue_file``: where the queue is kept between sessions (the app passes its state folder's; None keeps
        it in memory only, as tests and screenshots do)."""
        super().__init__(parent)
        self.setWindowTitle(APPLICATION)
        self.setObjectName("main_window")
        if ICON_PATH.exists():
            self.setWindowIcon(QIcon(str(ICON_PATH)))
        self.settings = settings or AppSettings()
        self.registry = registry or default_registry()
        self.paste_dir = paste_dir or default_paste_dir()
        self.engine_messages: list[str] = []

        self.queue = JobQueue()
        self.bridge = QueueBridge(self.queue, self)
        self.message_bridge = MessageBridge(self)
        self.panel = BackendPanel(self.registry, self.settings)
        self.engine = Engine(self.registry, self.panel.engine_options(), on_message=self.message_bridge.message.emit)
        self.worker = WorkerThread(self.queue, self.engine)
        self.model = JobTableModel(self.queue, self.bridge, self, backend_name=lambda i: self.registry.get(i).name)
        self.queue_panel = QueuePanel(self.queue, self.model)
        self.compare = CompareView()
        self.compare.set_mode(self.settings.compare_mode())

        self._build_actions()
        self._build_layout()
        self._build_status_bar()
        self._connect()
        self._restore_geometry()
        self.setAcceptDrops(True)
        self._shut_down = False
        self.queue_file: Path | None = None  # set once the saved queue is back (restoring it need not rewrite it)
        self._saved_states: dict[int, JobState] = {}
        self._save_timer = QTimer(self, singleShot=True, interval=0)
        self._save_timer.timeout.connect(self.save_queue)
        self.restored = self._restore_queue(queue_file)
        self.queue_file = queue_file
        self.ask_before_quit = True  # tests that close windows with a queue turn it off
        QApplication.instance().aboutToQuit.connect(self.shutdown)
        QApplication.instance().installEventFilter(self)  # "drop anywhere": also over widgets that take drops
        self.status_timer = QTimer(self, interval=1000)  # the queue-wide time left moves between events too
        self.status_timer.timeout.connect(self._update_status)
        self.status_timer.start()
        self._update_status()

    # -- construction ------------------------------------------------------------------------------------------
    def _build_actions(self) -> None:
        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("main_toolbar")
        self.actions_: dict[str, QAction] = {}
        for key, text, shortcut, tip, slot in (
            ("start", "Upscale", None, "Start the photos waiting as Ready (Enter)", self.start_ready),
            (None, None, None, None, None),
            ("open_files", "Open files…", QKeySequence.StandardKey.Open, "Add photos to the queue", self.open_files),
            ("open_folder", "Open folder…", QKeySequence("Ctrl+Shift+O"), "Add every photo of a folder",
             self.open_folder),
            ("paste", "Paste", QKeySequence.StandardKey.Paste, "Add the image or files on the clipboard", self.paste),
            (None, None, None, None, None),
            ("pause", "Pause", QKeySequence("Ctrl+P"), "Pause the queue (the running image stops between tiles)",
             None),
            ("cancel_all", "Cancel all", None, "Cancel every image that has not finished", self.queue.cancel_all),
            (None, None, None, None, None),
            ("plugins", "Plugins…", None, "Installed backends and plugins that failed to load", self.show_plugins),
            ("quit", "Quit", QKeySequence.StandardKey.Quit, "Quit InvSR Desktop (asks first while photos are "
             "being upscaled)", self.close),
        ):  # fmt: skip
            if key is None:
                toolbar.addSeparator()
                continue
            action = QAction(text, self)
            action.setObjectName(f"action_{key}")
            action.setToolTip(tip)
            if shortcut is not None:
                action.setShortcut(shortcut)
            if slot is not None:
                action.triggered.connect(slot)
            if key == "quit":
                self.addAction(action)  # the shortcut works everywhere in the window; no toolbar button
            else:
                toolbar.addAction(action)
            self.actions_[key] = action
        start = self.actions_["start"]
        start.setShortcuts([QKeySequence(Qt.Key.Key_Return), QKeySequence(Qt.Key.Key_Enter),
                            QKeySequence("Ctrl+Return")])  # fmt: skip
        bold = start.font()
        bold.setBold(True)
        start.setFont(bold)
        pause = self.actions_["pause"]
        pause.setCheckable(True)
        pause.toggled.connect(lambda on: self.queue.pause() if on else self.queue.resume())

    def resizeEvent(self, event) -> None:  # noqa: ANN001 - Qt's QResizeEvent
        """In a narrow window the side panel gives way (to its own minimum) so the queue keeps its columns; a wide
        window keeps whatever width the user dragged it to."""
        super().resizeEvent(event)
        panel, rest = self.splitter.sizes()
        scroll = self._panel_scroll
        fits = self.panel.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width() + 4
        most = max(fits, int(self.width() * PANEL_SHARE))
        if panel > most:
            self.splitter.setSizes([most, rest + panel - most])

    def _build_layout(self) -> None:
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.panel)
        scroll.setMinimumWidth(240)  # small screens: the panel scrolls rather than pushing the window wider
        panel_width = self.panel.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width() + 4
        self.tabs = QTabWidget(objectName="tabs")
        self.tabs.addTab(self.queue_panel, "Queue")
        self.tabs.addTab(self.compare, "Compare")
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(scroll)
        self.splitter.addWidget(self.tabs)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([panel_width, 1280 - panel_width])
        self.setCentralWidget(self.splitter)
        self._panel_scroll = scroll
        self.resize(1280, 800)

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.summary_label = QLabel(objectName="summary_label")
        self.provider_label = QLabel(objectName="provider_label")
        self.broken_button = QToolButton(objectName="broken_plugins_button")
        self.broken_button.setAutoRaise(True)
        self.broken_button.clicked.connect(self.show_plugins)
        failures = len(self.registry.failures)
        self.broken_button.setText(f"⚠ {failures} plugin{'s' if failures != 1 else ''} failed to load")
        self.broken_button.setToolTip("\n".join(str(f) for f in self.registry.failures))
        self.broken_button.setVisible(bool(failures))
        status.addPermanentWidget(self.summary_label)
        status.addPermanentWidget(self.provider_label)
        status.addPermanentWidget(self.broken_button)
        if not self.registry.backends():
            status.showMessage("No backend could be loaded: see Plugins… for the reasons.")

    def _connect(self) -> None:
        self.bridge.connect(self._on_queue_event)
        self.message_bridge.message.connect(self._on_engine_message)
        self.panel.pluginsRequested.connect(self.show_plugins)
        self.panel.engineOptionsChanged.connect(self._engine_options_changed)
        self.panel.modeChanged.connect(lambda _mode: self._update_status())
        self.queue_panel.compareRequested.connect(self.show_compare)
        self.queue_panel.rerunRequested.connect(self.rerun)
        self.compare.modeChanged.connect(self.settings.set_compare_mode)
        self.worker.worker.idle.connect(self._update_status)

    def _restore_geometry(self) -> None:
        geometry = self.settings.geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        splitter = self.settings.splitter_state()
        if splitter is not None:
            self.splitter.restoreState(splitter)

    # -- adding work -------------------------------------------------------------------------------------------
    def add_paths(self, paths: Iterable[str | Path], redo: bool = False, start: bool | None = None) -> list[Job]:
        """Queue the photos among ``paths`` (files, or folders' top-level photos) with the panel's mode and settings.

        The queue recognises images made by Shrink and restores them whatever the mode (their rows say so). A photo
        whose result with the same settings exists is kept as "done before" unless ``redo``; ``start`` (None: the
        setting) runs the photos at once instead of leaving them Ready.
        """
        images, problems = expand_sources(paths)
        for problem in problems:
            self.statusBar().showMessage(problem, 8000)
        if not images:
            return []
        mode, spec = self.panel.mode(), self.panel.spec()
        if spec is None and mode is not TaskMode.RESTORE:
            self.statusBar().showMessage("No backend is available: see Plugins… for what failed to load.")
            return []
        try:
            params = self.panel.params()
            output = self.panel.output()
        except ValueError as exc:
            self.statusBar().showMessage(str(exc))
            return []
        self.panel.save()
        backend_id, scale = (spec.id, self.panel.scale()) if spec is not None else ("", 1.0)
        start = self.settings.start_at_once() if start is None else start
        jobs = [self.queue.add(image, backend_id, scale, params, output, mode, start=start, redo=redo)
                for image in images]  # fmt: skip
        self.settings.set_last_folder(images[-1].parent)
        self.tabs.setCurrentWidget(self.queue_panel)
        waiting = "" if start else f" — press {self.actions_['start'].text()} (Enter) to start"
        self.statusBar().showMessage(added_text(jobs, mode) + waiting, 8000)
        self._update_status()
        return jobs

    def start_ready(self) -> list[Job]:
        """Start every photo waiting as Ready (the Upscale N photos button, Enter)."""
        started = self.queue.start()
        self._update_status()
        return started

    def add_image(self, image: QImage) -> list[Job]:
        """Queue an image that has no file (pasted or dragged from a browser): saved first as a PNG."""
        self.paste_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.paste_dir / f"pasted-{stamp}.png"
        number = 1
        while path.exists():
            path = self.paste_dir / f"pasted-{stamp}-{number}.png"
            number += 1
        if not image.save(str(path), "PNG"):
            self.statusBar().showMessage(f"Cannot save the pasted image to {path}")
            return []
        return self.add_paths([path])

    def add_mime(self, mime: QMimeData) -> list[Job]:
        """Queue what a drop or the clipboard carries: files (and folders), or image data."""
        files = local_files(mime)
        if files:
            return self.add_paths(files)
        if mime.hasImage():
            image = QImage(mime.imageData())
            if not image.isNull():
                return self.add_image(image)
        return []

    def open_files(self) -> None:
        patterns = "Images (*.png *.jpg *.jpeg *.webp *.tif *.tiff *.bmp);;All files (*)"
        files, _ = QFileDialog.getOpenFileNames(self, "Add photos", self.settings.last_folder(), patterns)
        self.add_paths(files)

    def open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of photos", self.settings.last_folder())
        if folder:
            self.add_paths([folder])

    def paste(self) -> None:
        if not self.add_mime(QGuiApplication.clipboard().mimeData()):
            self.statusBar().showMessage("The clipboard holds no image and no image files.", 5000)

    def rerun(self, job_ids: list[int]) -> list[Job]:
        """Queue the photos of ``job_ids`` again with the settings now in the panel (results stay comparable)."""
        sources = []
        for job_id in job_ids:
            source = self.queue.get(job_id).source
            if source not in sources:
                sources.append(source)
        return self.add_paths(sources, redo=True, start=True)  # asked for explicitly: run it, even if done before

    # -- drag and drop anywhere on the window ------------------------------------------------------------------
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in DRAG_EVENTS and isinstance(watched, QWidget) and watched.window() is self:
            mime = event.mimeData()  # type: ignore[attr-defined]
            if local_files(mime) or mime.hasImage():
                if event.type() == QEvent.Type.Drop:
                    self.handle_drop(event)  # type: ignore[arg-type]
                else:
                    event.acceptProposedAction()  # type: ignore[attr-defined]
                return True
        return super().eventFilter(watched, event)

    def handle_drop(self, event: QDropEvent) -> None:
        event.acceptProposedAction()
        self.add_mime(event.mimeData())  # add_paths says what was added

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # reached only when the filter is not installed
        if local_files(event.mimeData()) or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        self.handle_drop(event)

    # -- queue events ------------------------------------------------------------------------------------------
    def _on_queue_event(self, event: QueueEvent) -> None:
        job = event.job
        self._save_queue_after(event)
        if event.kind == "added" or (event.kind == "changed" and job is not None and job.state is JobState.QUEUED):
            self.worker.wake()
        elif event.kind == "paused":
            paused = self.queue.paused
            action = self.actions_["pause"]
            action.blockSignals(True)
            action.setChecked(paused)
            action.blockSignals(False)
            action.setText("Resume" if paused else "Pause")
            if not paused:
                self.worker.wake()
        if job is not None and event.kind == "changed" and job.state.finished:
            self._job_finished(job)
        if event.kind != "changed" or job is None or job.state is not JobState.RUNNING:
            self._update_status()

    # -- the queue between sessions ----------------------------------------------------------------------------
    def _restore_queue(self, path: Path | None) -> Restored | None:
        """Bring back the last session's queue (unfinished photos as Ready) and say so in the status bar."""
        if path is None:
            return None
        restored = restore(self.queue, load_records(path))
        self._saved_states = {job.id: job.state for job in self.queue.jobs()}
        parts = []
        if restored.unfinished:
            n = len(restored.unfinished)
            parts.append(f"{n} photo{'s' if n != 1 else ''} from the last session {'are' if n != 1 else 'is'} back "
                         f"as Ready: press {self.actions_['start'].text()} (Enter) to finish")  # fmt: skip
        if restored.missing:
            parts.append(f"{restored.missing} could not be found any more")
        if parts:
            self.statusBar().showMessage("; ".join(parts), 20000)
        self._update_status()
        return restored

    def _save_queue_after(self, event: QueueEvent) -> None:
        """Keep the file in step: at once when a job finishes (a crash a moment later must not redo it), at the
        next pass of the event loop after rows are added, moved or removed or a job starts (a folder of 1,000
        photos dropped at once is one write, not 1,000); never on a tile's progress."""
        job = event.job
        if event.kind == "changed" and job is not None and self._saved_states.get(job.id) is job.state:
            return
        if event.kind == "changed" and job is not None and job.state.finished:
            self.save_queue()
        else:
            self._save_timer.start()

    def save_queue(self) -> None:
        """Write the queue file now (when there is one and the window is not shut down)."""
        if self.queue_file is None or self._shut_down:
            return
        jobs = self.queue.jobs()
        try:
            save_queue(self.queue_file, jobs)
        except OSError as exc:  # a full or read-only disk: the queue still runs, it is just not kept
            log.warning("could not keep the queue in %s: %s", self.queue_file, exc)
            return
        self._saved_states = {j.id: j.state for j in jobs}

    def _job_finished(self, job: Job) -> None:
        if job.state is JobState.DONE:
            self.statusBar().showMessage(f"Wrote {job.result}", 6000)
            if self.compare.source == job.source:
                self.compare.show_results(job.source, self.queue.results_for(job.source), self.compare.current_job())
        elif job.state is JobState.FAILED:
            self.statusBar().showMessage(f"{job.source.name} failed (the reason is in its row)", 12000)
        self._update_provider()

    def _on_engine_message(self, message: str) -> None:
        self.engine_messages.append(message)
        self.statusBar().showMessage(message)
        self._update_provider()

    def _engine_options_changed(self) -> None:
        options = self.panel.engine_options()
        self.settings.set_engine_options(options)
        self.worker.worker.configure(options)
        self._update_provider()

    # -- status ------------------------------------------------------------------------------------------------
    def _update_status(self) -> None:
        counts = self.queue.counts()
        parts = [f"{counts[state]} {state.value}" for state in JobState if counts[state]]
        parts[0:0] = [] if parts else [EMPTY_QUEUE_TEXT[self.panel.mode()]]
        text = " · ".join(parts)
        remaining = self.queue.remaining_seconds()
        if remaining is not None:
            text += f" — about {format_duration(remaining)} left"
        if self.queue.paused:
            text += " — paused"
        self.summary_label.setText(text)
        self._update_start(self.queue.ready())
        self._update_provider()

    def _update_start(self, ready: list[Job]) -> None:
        """"Upscale 3 photos", "Shrink 1 photo", "Start 4 photos" (mixed tasks); disabled with nothing ready."""
        verbs = {job.mode for job in ready}
        verb = {TaskMode.UPSCALE: "Upscale", TaskMode.SHRINK: "Shrink", TaskMode.RESTORE: "Restore"}.get(
            next(iter(verbs)) if len(verbs) == 1 else None, "Start")
        n = len(ready)
        action = self.actions_["start"]
        action.setText(f"{verb} {n} photo{'s' if n != 1 else ''}" if n else "Upscale")
        action.setEnabled(bool(n))

    def _update_provider(self) -> None:
        """Which path sessions really run on (``OpenVINO f32``, ``ONNX Runtime CUDA``); before the first session,
        the one that will be asked for."""
        try:
            in_use = self.engine.sessions.paths_in_use()
        except RuntimeError:  # the worker added a session while we looked: the next update shows it
            return
        if in_use:
            text = "Runs on: " + ", ".join(in_use)
        else:
            options = self.panel.engine_options()
            try:
                text = f"Runs on: {planned_path(options.provider, options.precision)} (no model loaded yet)"
            except (ValueError, ImportError) as exc:
                text = f"Runs on: {exc}"
        self.provider_label.setText(text)
        self.provider_label.setToolTip("\n".join(self.engine_messages) or "The inference path in use: ONNX Runtime's "
                                       "provider or OpenVINO, and OpenVINO's precision")

    # -- other windows -----------------------------------------------------------------------------------------
    def show_plugins(self) -> PluginsDialog:
        dialog = PluginsDialog(self.registry, self)
        dialog.modelsChanged.connect(self.models_changed)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def models_changed(self) -> None:
        """A model was added: describe the plugins again and refill the backend list (keeping the choice)."""
        self.registry.refresh()
        self.panel.refresh_backends()

    def show_compare(self, job_id: int) -> None:
        """Open the compare tab on a finished job, with every other result of the same photo to switch to."""
        job = self.queue.get(job_id)
        if job.state is not JobState.DONE:
            return
        self.compare.show_results(job.source, self.queue.results_for(job.source), job)
        self.tabs.setCurrentWidget(self.compare)

    # -- closing -----------------------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._shut_down and not self.confirm_quit():
            event.ignore()
            return
        self.shutdown()
        super().closeEvent(event)

    def unfinished(self) -> int:
        """Photos running, paused, queued or Ready: what quitting would stop or drop (the queue is not kept yet)."""
        counts = self.queue.counts()
        return sum(counts[s] for s in (JobState.RUNNING, JobState.PAUSED, JobState.QUEUED, JobState.READY))

    def confirm_quit(self) -> bool:
        """Ask before quitting with work left (a silent quit used to drop the queue); True to go ahead."""
        if not self.unfinished() or not self.ask_before_quit:
            return True
        box, quit_button = self.quit_question()
        box.exec()
        return box.clickedButton() is quit_button

    def quit_question(self) -> tuple[QMessageBox, QAbstractButton]:
        """The question :meth:`confirm_quit` asks (built apart so the screenshots can show it without a user)."""
        left = self.unfinished()
        box = QMessageBox(QMessageBox.Icon.Question, "Quit InvSR Desktop?",
                          f"{left} photo{'s are' if left != 1 else ' is'} still in the queue. Quit and stop "
                          f"{'them' if left != 1 else 'it'}?", parent=self)  # fmt: skip
        box.setObjectName("quit_dialog")
        kept = " They wait as Ready when you start the app again." if self.queue_file is not None else ""
        box.setInformativeText("The running image stops between two tiles; nothing half-written is left behind."
                               + kept)  # fmt: skip
        quit_button = box.addButton("Quit", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        return box, quit_button

    def shutdown(self) -> None:
        """Save the settings and stop the worker: a running image is cancelled (it leaves no partial file).

        Runs once, on close or when the application quits without closing its windows (``aboutToQuit``): a
        QThread destroyed while running aborts the process.
        """
        if self._shut_down:
            return
        self.save_queue()  # before the worker stops: a photo cut short by the quit comes back as Ready, not Cancelled
        self._shut_down = True
        self.status_timer.stop()
        self.save_settings()
        QApplication.instance().removeEventFilter(self)
        self.worker.stop()
        self.bridge.detach()

    def save_settings(self) -> None:
        self.panel.save()
        self.settings.set_geometry(self.saveGeometry())
        self.settings.set_splitter_state(self.splitter.saveState())
        self.settings.set_compare_mode(self.compare.mode)
        self.settings.sync()
