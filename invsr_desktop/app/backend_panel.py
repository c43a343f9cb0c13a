"""The side panel: what to do (upscale, shrink, restore), with which backend, at which scale, with which parameters,
written where, computed how.

Everything in it comes from the registry (backends, their scales and parameters, which of them shrink) and from ONNX
Runtime (the providers it offers), so adding a plugin changes the panel without a line of GUI code.

The mode selector at the top makes shrink and restore (an invertible network's two directions) a first-class task
next to upscaling: Shrink lists the shrinking backends and their whole factors and writes PNG or JPEG; Restore needs
no choice at all, because the small image's marker names the network, the model and the size.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from invsr_desktop.app.param_form import ParamForm
from invsr_desktop.app.settings import AppSettings
from invsr_desktop.engine import sessions
from invsr_desktop.engine.backend import BackendSpec
from invsr_desktop.engine.jobs import FORMATS, SHRINK_FORMATS, OutputSettings
from invsr_desktop.engine.task import TaskMode
from invsr_desktop.engine.pipeline import EngineOptions
from invsr_desktop.engine.quality import user_line
from invsr_desktop.engine.registry import Registry

FORMAT_LABELS = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP", "tiff": "TIFF", "same": "Same as original"}
ANY_SCALE_PRESETS = (1.5, 2, 3, 4, 6, 8)
MAX_SCALE = 16.0

MODE_LABELS = {TaskMode.UPSCALE: "Upscale", TaskMode.SHRINK: "Shrink (INN)", TaskMode.RESTORE: "Restore"}
MODE_TIPS = {
    TaskMode.UPSCALE: "Make photos larger with the backend below",
    TaskMode.SHRINK: "Shrink & restore, step 1: make a small image that INN restore brings back to full size",
    TaskMode.RESTORE: "Shrink & restore, step 2: bring images made by Shrink back to full size",
}
MODE_HINTS = {
    TaskMode.UPSCALE: "Makes photos larger with the backend below. Images made by Shrink are recognised and restored "
    "instead.",
    TaskMode.SHRINK: "Shrink & restore: makes a small image that INN restore brings back to full size, far closer "
    "to the original than upscaling a downscaled photo. It is an ordinary PNG or JPEG with a marker inside: drop it "
    "back on this window (in any mode) to restore it.",
    TaskMode.RESTORE: "Brings images made by Shrink back to full size. The network, its model and the original size "
    "come from the marker inside the small image, so there is nothing to choose. (A shrunk image dropped in any mode "
    "is restored.)",
}
NO_SHRINK_TIP = (
    "Shrink needs an INN model with its shrink half (inn_<name>_up.onnx and inn_<name>_down.onnx, written by "
    "invsr-export) in the model folder, and none is installed. Plugins… lists the backends that are."
)


def available_providers() -> list[str]:
    """What this machine offers (ONNX Runtime's providers and OpenVINO; empty when ONNX Runtime is not installed:
    the engine reports that itself)."""
    try:
        return [name for name in sessions.available_providers() if name in sessions.PREFERENCE]
    except ImportError:
        return []


def scale_text(scale: float) -> str:
    return f"×{scale:g}"


class ScalePicker(QComboBox):
    """The backend's offered scales (:meth:`BackendSpec.offered_scales`: a x4 model also offers x2 and x3, labelled
    with the model that serves them); editable with any value from 1 to 16 when the backend has ``any_scale``."""

    def set_spec(self, spec: BackendSpec) -> None:
        self.blockSignals(True)
        self.clear()
        scales = sorted(set(spec.offered_scales()) | (set(ANY_SCALE_PRESETS) if spec.any_scale else set()))
        shrinks = spec.direction == "down"
        for scale in scales:
            native = spec.native_scale_for(scale) if not shrinks else scale
            label = f"÷{scale:g}" if shrinks else scale_text(scale)
            if native != scale:
                label += f"  (from {scale_text(native)})"
            self.addItem(label, float(scale))
        self.setEditable(spec.any_scale and not shrinks)
        if shrinks:
            self.setToolTip("Width and height are divided by this factor (the factors of the installed models).")
        elif spec.any_scale:  # typed text is parsed leniently by value(): "3", "x3", "×2.5" all work
            self.setToolTip("Native scales are listed; type any scale from 1 to 16.")
        else:
            self.setToolTip("The scales this backend's models were trained for; a smaller one runs the model and "
                            "reduces its result (\"from ×4\").")
        self.blockSignals(False)

    def value(self) -> float:
        """The chosen scale; an unreadable typed value falls back to the first listed scale."""
        if self.isEditable():
            match = re.search(r"\d+(?:[.,]\d+)?", self.currentText())
            if match:
                return min(MAX_SCALE, max(1.0, float(match.group().replace(",", "."))))
        data = self.currentData()
        return float(data) if data is not None else float(self.itemData(0) or 1.0)

    def set_value(self, scale: float) -> None:
        index = self.findData(float(scale))
        if index >= 0:
            self.setCurrentIndex(index)
        elif self.isEditable():
            self.setEditText(scale_text(scale))


class BackendPanel(QWidget):
    """Mode, backend picker, scale, parameters (built from the spec), output and performance settings.

    ``modeChanged(str)`` carries the new :class:`~invsr_desktop.engine.jobs.TaskMode` value.
    """

    pluginsRequested = Signal()
    engineOptionsChanged = Signal()
    modeChanged = Signal(str)

    def __init__(self, registry: Registry, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.registry = registry
        self.settings = settings
        self._spec: BackendSpec | None = None
        self._mode: TaskMode | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(self._mode_group())
        layout.addWidget(self._backend_group())
        layout.addWidget(self._output_group())
        layout.addWidget(self._engine_group())
        self.start_at_once_check = QCheckBox("Start as soon as photos are added", objectName="start_at_once")
        self.start_at_once_check.setToolTip("Off: added photos wait as Ready until you press Upscale (or Enter), so "
                                            "you can choose the backend first")
        self.start_at_once_check.setChecked(self.settings.start_at_once())
        self.start_at_once_check.toggled.connect(self.settings.set_start_at_once)
        layout.addWidget(self.start_at_once_check)
        layout.addStretch(1)
        self._fill_backends()
        self._load()

    # -- construction ------------------------------------------------------------------------------------------
    def _mode_group(self) -> QGroupBox:
        """Upscale | Shrink (INN) | Restore as one row of toggle buttons, with a line saying what the mode does."""
        group = QGroupBox("Task")
        column = QVBoxLayout(group)
        row = QHBoxLayout()
        row.setSpacing(0)
        self.mode_button_group = QButtonGroup(self)
        self.mode_buttons: dict[TaskMode, QPushButton] = {}
        for mode in TaskMode:
            button = QPushButton(MODE_LABELS[mode], objectName=f"mode_{mode.value}", checkable=True)
            button.setToolTip(MODE_TIPS[mode])
            button.clicked.connect(lambda _=False, m=mode: self.set_mode(m))
            self.mode_button_group.addButton(button)
            self.mode_buttons[mode] = button
            row.addWidget(button)
        if not self.shrink_specs():
            self.mode_buttons[TaskMode.SHRINK].setEnabled(False)
            self.mode_buttons[TaskMode.SHRINK].setToolTip(NO_SHRINK_TIP)
        column.addLayout(row)
        self.mode_hint = QLabel(wordWrap=True, objectName="mode_hint")
        column.addWidget(self.mode_hint)
        return group

    def _backend_group(self) -> QGroupBox:
        group = QGroupBox("Backend")
        self.backend_group = group
        form = QFormLayout(group)
        row = QHBoxLayout()
        self.backend_combo = QComboBox(objectName="backend_combo")
        # a long backend name elides instead of widening the panel (the queue needs the room in a 1024 px window)
        self.backend_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.backend_combo.setMinimumContentsLength(14)
        self.backend_combo.currentIndexChanged.connect(self._backend_changed)
        self.plugins_button = QToolButton(text="Plugins…", objectName="plugins_button")
        self.plugins_button.setToolTip("Installed backends and plugins that failed to load")
        self.plugins_button.clicked.connect(self.pluginsRequested)
        row.addWidget(self.backend_combo, 1)
        row.addWidget(self.plugins_button)
        form.addRow("Backend", row)
        self.description = QLabel(wordWrap=True, objectName="backend_description")
        self.description.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.description)
        self.scale_picker = ScalePicker(objectName="scale_picker")
        self.scale_label = QLabel("Scale")
        form.addRow(self.scale_label, self.scale_picker)
        self.param_form = ParamForm()
        form.addRow(self.param_form)
        self.reset_button = QPushButton("Reset parameters")
        self.reset_button.clicked.connect(lambda: self.param_form.reset())
        form.addRow(self.reset_button)
        return group

    def _output_group(self) -> QGroupBox:
        group = QGroupBox("Output")
        form = QFormLayout(group)
        row = QHBoxLayout()
        self.folder_edit = QLineEdit(objectName="output_folder")
        self.folder_edit.setPlaceholderText("Next to the original")
        self.folder_edit.setClearButtonEnabled(True)
        browse = QToolButton(text="…")
        browse.setToolTip("Choose the output folder")
        browse.clicked.connect(self._browse_folder)
        row.addWidget(self.folder_edit, 1)
        row.addWidget(browse)
        form.addRow("Folder", row)
        self.format_combo = QComboBox(objectName="output_format")
        for key in FORMATS:
            self.format_combo.addItem(FORMAT_LABELS[key], key)
        self.format_combo.currentIndexChanged.connect(self._format_changed)
        form.addRow("Format", self.format_combo)
        self.quality_spin = QSpinBox(objectName="output_quality", minimum=1, maximum=100, value=95)
        self.quality_spin.setToolTip("JPEG and WebP quality")
        form.addRow("Quality", self.quality_spin)
        self.lossless_check = QCheckBox("Lossless WebP", objectName="output_lossless")
        form.addRow(self.lossless_check)
        return group

    def _engine_group(self) -> QGroupBox:
        group = QGroupBox("Performance")
        form = QFormLayout(group)
        self.provider_combo = QComboBox(objectName="provider_combo")
        self.provider_combo.addItem("Automatic (best available)", "auto")
        for name in available_providers():
            self.provider_combo.addItem(sessions.short_name(name), name)
        self.provider_combo.setToolTip("Automatic: a GPU where ONNX Runtime has one; on the CPU, OpenVINO or ONNX "
                                       "Runtime, whichever ran each model faster on its first use here")
        form.addRow("Provider", self.provider_combo)
        self.precision_combo = QComboBox(objectName="precision_combo")
        self.precision_combo.addItem("Fast", "fast")
        self.precision_combo.addItem("Full (fp32)", "fp32")
        self.precision_combo.setToolTip("Fast runs bf16 on CPUs that do so natively (AMX, AVX-512 bf16), and "
                                        "elsewhere a model's int8 copy where it has one, with results a viewer "
                                        "cannot tell apart; Full never trades accuracy for speed. "
                                        "Shrink and restore always run at full precision.\n"
                                        + sessions.path_note())
        form.addRow("Precision", self.precision_combo)
        self.tile_spin = QSpinBox(objectName="tile_spin", minimum=0, maximum=4096, singleStep=64)
        self.tile_spin.setSpecialValueText("Automatic")
        self.tile_spin.setToolTip("Tile side in input pixels; automatic sizes tiles from the memory budget")
        form.addRow("Tile size", self.tile_spin)
        self.memory_spin = QSpinBox(objectName="memory_spin", minimum=64, maximum=1 << 20, singleStep=256)
        self.memory_spin.setSuffix(" MB")
        form.addRow("Memory budget", self.memory_spin)
        for signal in (self.provider_combo.currentIndexChanged, self.precision_combo.currentIndexChanged,
                       self.tile_spin.valueChanged, self.memory_spin.valueChanged):  # fmt: skip
            signal.connect(self.engineOptionsChanged)
        return group

    def shrink_specs(self) -> list[BackendSpec]:
        """The shrinking backends (``direction == "down"``, e.g. INN shrink): what the Shrink mode offers."""
        return [spec for spec in self.registry.backends() if spec.direction == "down"]

    def _fill_backends(self) -> None:
        """The combo lists the upscalers, or in Shrink mode the shrinking backends (never both: a shrinker makes
        images smaller, and an upscaler cannot write the marker that restore needs). In Restore mode it is empty:
        the image's marker names the backend."""
        direction = {TaskMode.UPSCALE: "up", TaskMode.SHRINK: "down"}.get(self.mode())
        self.backend_combo.blockSignals(True)
        self.backend_combo.clear()
        for spec in self.registry.backends():
            if spec.direction == direction:
                self.backend_combo.addItem(f"{spec.name}  ({spec.kind})", spec.id)
        self.backend_combo.blockSignals(False)

    def refresh_backends(self) -> None:
        """Refill the backend list from the registry (a model was added), keeping the chosen backend if it is
        still there."""
        chosen = self.backend_combo.currentData()
        self._fill_backends()
        index = self.backend_combo.findData(chosen)
        self.backend_combo.setCurrentIndex(max(0, index))
        self._spec = None  # the spec object may be new: describe the current choice again
        self._backend_changed()

    # -- state -------------------------------------------------------------------------------------------------
    def _load(self) -> None:
        self._chosen = {TaskMode.UPSCALE: self.settings.backend_id(), TaskMode.SHRINK: self.settings.shrink_backend_id()}
        output = self.settings.output()
        self._formats = {TaskMode.UPSCALE: output.format, TaskMode.SHRINK: self.settings.shrink_format()}
        self.folder_edit.setText(str(output.folder) if output.folder else "")
        self.quality_spin.setValue(output.quality)
        self.lossless_check.setChecked(output.lossless)
        options = self.settings.engine_options()
        self.provider_combo.setCurrentIndex(max(0, self.provider_combo.findData(options.provider)))
        self.precision_combo.setCurrentIndex(max(0, self.precision_combo.findData(options.precision)))
        self.tile_spin.setValue(options.tile or 0)
        self.memory_spin.setValue(options.memory_budget_mb)
        self.set_mode(self.settings.mode())

    def save(self) -> None:
        """Write the panel's state to the settings (called on every queued job and on close)."""
        self._remember_choices()
        self.settings.set_mode(self.mode())
        self.settings.set_backend_id(self._chosen[TaskMode.UPSCALE])
        self.settings.set_shrink_backend_id(self._chosen[TaskMode.SHRINK])
        self.settings.set_output(replace(self.output(), format=self._formats[TaskMode.UPSCALE]))
        self.settings.set_shrink_format(self._formats[TaskMode.SHRINK])
        self.settings.set_engine_options(self.engine_options())

    def _remember_choices(self) -> None:
        """Note the current backend (with its scale and parameters) and format under the current mode."""
        if self._mode is None:
            return
        spec = self._spec
        if spec is not None:
            self._chosen[self._mode] = spec.id
            self.settings.set_scale(spec.id, self.scale())
            self.settings.set_params(spec.id, self.params())
        fmt = self.format_combo.currentData()
        if fmt:
            self._formats[self._format_mode()] = fmt

    def _format_mode(self) -> TaskMode:
        """Restore shares the upscaler's output format (both write full-size photos); Shrink has its own."""
        return TaskMode.SHRINK if self._mode is TaskMode.SHRINK else TaskMode.UPSCALE

    def set_mode(self, mode: TaskMode | str) -> None:
        """Switch to upscale, shrink or restore (shrink falls back to upscale when no shrinking backend exists)."""
        mode = TaskMode(mode)
        if mode is TaskMode.SHRINK and not self.shrink_specs():
            mode = TaskMode.UPSCALE
        self.mode_buttons[mode].setChecked(True)
        if mode is self._mode:
            return
        self._remember_choices()
        self._mode, self._spec = mode, None
        self._fill_backends()
        if mode is not TaskMode.RESTORE:
            index = self.backend_combo.findData(self._chosen[mode])
            self.backend_combo.setCurrentIndex(max(0, index))
        self._backend_changed()
        self._show_mode()
        self.modeChanged.emit(mode.value)

    def _show_mode(self) -> None:
        """Labels, visibility and the formats on offer for the current mode."""
        mode = self.mode()
        shrinking = mode is TaskMode.SHRINK
        self.mode_hint.setText(MODE_HINTS[mode])
        self.backend_group.setVisible(mode is not TaskMode.RESTORE)
        self.backend_group.setTitle("Shrinking network" if shrinking else "Backend")
        self.scale_label.setText("Shrink by" if shrinking else "Scale")
        model = self.format_combo.model()
        for row in range(self.format_combo.count()):
            model.item(row).setEnabled(not shrinking or self.format_combo.itemData(row) in SHRINK_FORMATS)
        self.format_combo.setToolTip("A shrunk image is written as PNG or JPEG: the restore marker survives both. "
                                     "PNG keeps the small image exact; for JPEG the shrink uses a model trained to "
                                     "survive JPEG compression where one is installed (see the network's "
                                     "description)." if shrinking else "")  # fmt: skip
        wanted = self._formats[self._format_mode()]
        self.format_combo.setCurrentIndex(max(0, self.format_combo.findData(wanted)))
        self._format_changed()

    def _backend_changed(self) -> None:
        if self._spec is not None:  # remember the outgoing backend's choices
            self.settings.set_scale(self._spec.id, self.scale())
            self.settings.set_params(self._spec.id, self.params())
        backend_id = self.backend_combo.currentData()
        self._spec = self.registry.get(backend_id) if backend_id else None
        spec = self._spec
        if spec is None:
            self.description.setText("No backend is available: see Plugins… for what failed to load.")
            self.param_form.set_params(())
            return
        owner = self.registry.owner(spec.id)
        technical = f"{spec.description}\nPlugin: {owner}" if spec.description else f"Plugin: {owner}"
        measured = user_line(spec.info)  # what it is for and how it measured, from the model's metadata
        self.description.setText(measured or technical)
        self.description.setToolTip(technical if measured else "")
        self.scale_picker.set_spec(spec)
        self.scale_picker.set_value(self.settings.scale(spec))
        self.param_form.set_params(spec.params)
        self.param_form.set_values(self.settings.params(spec))
        self.reset_button.setVisible(bool(spec.params))

    def _format_changed(self) -> None:
        fmt = self.format_combo.currentData()
        self.quality_spin.setEnabled(fmt in ("jpeg", "webp", "same"))
        self.lossless_check.setEnabled(fmt in ("webp", "same") and self._mode is not TaskMode.SHRINK)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.folder_edit.text() or str(Path.home()))
        if folder:
            self.folder_edit.setText(folder)

    # -- values ------------------------------------------------------------------------------------------------
    def mode(self) -> TaskMode:
        return self._mode or TaskMode.UPSCALE

    def spec(self) -> BackendSpec | None:
        """The chosen backend (None in Restore mode, where the image's marker names it)."""
        return self._spec

    def select_backend(self, backend_id: str) -> None:
        """Choose a backend, switching to Shrink for a shrinking one and to Upscale for an upscaler."""
        spec = self.registry.get(backend_id)
        self.set_mode(TaskMode.SHRINK if spec.direction == "down" else TaskMode.UPSCALE)
        self.backend_combo.setCurrentIndex(self.backend_combo.findData(backend_id))

    def scale(self) -> float:
        return self.scale_picker.value()

    def params(self) -> dict[str, Any]:
        """The form's values, checked by the spec (so what is queued is what the engine will accept)."""
        spec = self.spec()
        return spec.resolve_params(self.param_form.values()) if spec else {}

    def output(self) -> OutputSettings:
        folder = self.folder_edit.text().strip()
        return OutputSettings(
            folder=Path(folder).expanduser() if folder else None,
            format=self.format_combo.currentData() or "png",
            quality=self.quality_spin.value(),
            lossless=self.lossless_check.isChecked(),
        )

    def engine_options(self) -> EngineOptions:
        base = self.settings.engine_options()
        return EngineOptions(
            provider=self.provider_combo.currentData() or "auto",
            threads=base.threads,
            precision=self.precision_combo.currentData() or "fast",
            tile=self.tile_spin.value() or None,
            overlap=base.overlap,
            memory_budget_mb=self.memory_spin.value(),
            alpha=base.alpha,
        )
