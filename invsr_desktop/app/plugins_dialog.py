"""The plugins dialog: the backends that loaded, and the plugins that did not, with their errors; and the user's
model folder: "Add model…" and "Open models folder".

A broken plugin never stops the application (the registry isolates each one); this is where the user learns what
failed and why, with the full traceback one click away for a bug report.

Add model… takes an ONNX file made for this app (it carries ``invsr.backend``: copied into the user model folder) or
a standard ESRGAN / Real-ESRGAN ``.pth`` / ``.pt`` checkpoint or ncnn ``.param`` (Upscayl's model files, the
``.bin`` beside it), converted by ``invsr-export`` itself, run as its own process (the app does not import PyTorch;
the conversion needs the ``[train]`` extra, and says so when it is missing). Either way the new backend appears at
once (``modelsChanged``), and nothing in the folder is replaced.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QProcess, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from invsr_desktop.engine.errors import ModelFileError
from invsr_desktop.engine.registry import Registry

MODEL_FILTER = ("Models (*.onnx *.pth *.pt *.param);;ONNX models (*.onnx);;ESRGAN checkpoints (*.pth *.pt);;"
                "ncnn models, as Upscayl ships them (*.param)")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".param")


class PluginsDialog(QDialog):
    """Lists ``registry.backends()`` and ``registry.failures``; selecting a failure shows its details.
    ``modelsChanged`` once a model was added to the user folder (the window then describes the plugins again)."""

    modelsChanged = Signal()

    def __init__(self, registry: Registry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.registry = registry
        #: How the models folder is opened (the desktop's file manager); a test replaces it.
        self.open_url: Callable[[QUrl], object] = QDesktopServices.openUrl
        self.process: QProcess | None = None
        self.setWindowTitle("Plugins")
        self.resize(720, 520)
        layout = QVBoxLayout(self)

        layout.addWidget(QLabel("<b>Backends</b>"))
        self.backends = QTreeWidget(objectName="backends_tree")
        self.backends.setHeaderLabels(["Backend", "Id", "Kind", "Scales", "Plugin"])
        self.backends.setRootIsDecorated(False)
        self._fill_backends()
        layout.addWidget(self.backends, 1)
        self.model_status = QLabel(objectName="model_status", wordWrap=True)
        layout.addWidget(self.model_status)

        failures = [*registry.failures, *registry.warnings]  # broken plugins, then files a plugin had to skip
        title = f"<b>Plugin problems ({len(failures)})</b>" if failures else "<b>No plugin failed.</b>"
        layout.addWidget(QLabel(title))
        self.failures = QListWidget(objectName="failures_list")
        for failure in failures:
            item = QListWidgetItem(str(failure))
            item.setToolTip(failure.details or str(failure))
            self.failures.addItem(item)
        self.details = QPlainTextEdit(readOnly=True, objectName="failure_details")
        self.details.setPlaceholderText("Select a failed plugin to see the full error.")
        self.failures.currentRowChanged.connect(
            lambda row: self.details.setPlainText(failures[row].details or str(failures[row])) if row >= 0 else None
        )
        self.failures.setVisible(bool(failures))
        self.details.setVisible(bool(failures))
        layout.addWidget(self.failures, 1)
        layout.addWidget(self.details, 1)
        if failures:
            self.failures.setCurrentRow(0)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.add_button = buttons.addButton("Add model…", QDialogButtonBox.ButtonRole.ActionRole)
        self.add_button.setToolTip("Install an ONNX model made for InvSR Desktop, or convert an ESRGAN / "
                                   "Real-ESRGAN .pth checkpoint or an Upscayl (ncnn) .param + .bin model "
                                   "(needs the [train] extra)")  # fmt: skip
        self.add_button.clicked.connect(self._choose_model)
        folder = buttons.addButton("Open models folder", QDialogButtonBox.ButtonRole.ActionRole)
        folder.setToolTip("The folder the app reads your own models from")
        folder.clicked.connect(self.open_models_folder)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _fill_backends(self) -> None:
        self.backends.clear()
        for spec in self.registry.backends():
            scales = "any" if spec.any_scale else ", ".join(f"×{s}" for s in spec.scales)
            item = QTreeWidgetItem([spec.name, spec.id, spec.kind, scales, self.registry.owner(spec.id)])
            item.setToolTip(0, spec.description)
            self.backends.addTopLevelItem(item)
        for column in range(self.backends.columnCount()):
            self.backends.resizeColumnToContents(column)

    # -- the user's models -------------------------------------------------------------------------------------
    def open_models_folder(self) -> Path:
        from invsr_desktop.engine.model_files import user_models_dir

        folder = user_models_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self.open_url(QUrl.fromLocalFile(str(folder)))
        return folder

    def _choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add model", str(Path.home()), MODEL_FILTER)
        if path:
            self.add_model(Path(path))

    def add_model(self, path: Path) -> None:
        """Install ``path`` (an .onnx) or start converting it (a checkpoint); the outcome is shown in the dialog."""
        if path.suffix.lower() in CHECKPOINT_SUFFIXES:
            self._convert(path)
            return
        from invsr_desktop.engine.model_files import install_model

        try:
            installed = install_model(path)
        except (ModelFileError, FileExistsError, OSError) as exc:
            self._say(f"Not added: {exc}")
            return
        self._added(installed)

    def _convert(self, checkpoint: Path) -> None:
        from invsr_desktop.engine.model_files import user_models_dir

        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("model_export") is None:
            self._say(f"Not added: converting {checkpoint.name} needs PyTorch, which this installation does not "
                      "have. Install the training extra (pip install 'invsr-desktop[train]'), or convert it "
                      "elsewhere with invsr-export and add the .onnx file.")  # fmt: skip
            return
        dest = user_models_dir() / f"{checkpoint.stem}.onnx"
        if dest.exists():
            self._say(f"Not added: the model folder already has {dest.name}; remove it there first ({dest.parent})")
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.finished.connect(lambda code, _status: self._converted(checkpoint, dest, code))
        self.add_button.setEnabled(False)
        self._say(f"Converting {checkpoint.name} with invsr-export… (a minute for a large model)")
        self.process.start(sys.executable, ["-m", "model_export.export", str(checkpoint), "-o", str(dest)])

    def _converted(self, checkpoint: Path, dest: Path, code: int) -> None:
        output = bytes(self.process.readAll().data()).decode("utf-8", "replace").strip() if self.process else ""
        self.add_button.setEnabled(True)
        if code == 0 and dest.exists():
            self._added(dest)
            return
        reason = next((line for line in reversed(output.splitlines()) if line.strip()), "no output")
        self._say(f"Not added: invsr-export could not convert {checkpoint.name}: {reason}")

    def _added(self, installed: Path) -> None:
        self.modelsChanged.emit()
        self._fill_backends()
        self._say(f"Added {installed.name} to {installed.parent}: it is in the backend list now.")

    def _say(self, text: str) -> None:
        self.model_status.setText(text)
