"""The side panel: which backend, at which scale, with which parameters, written where, computed how.

Everything in it comes from the registry (backends, their scales and parameters) and from ONNX Runtime (the
providers it offers), so adding a plugin changes the panel without a line of GUI code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
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
from invsr_desktop.engine.backend import BackendSpec
from invsr_desktop.engine.jobs import FORMATS, OutputSettings
from invsr_desktop.engine.pipeline import EngineOptions
from invsr_desktop.engine.registry import Registry

FORMAT_LABELS = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP", "tiff": "TIFF", "same": "Same as original"}
ANY_SCALE_PRESETS = (1.5, 2, 3, 4, 6, 8)
MAX_SCALE = 16.0


def available_providers() -> list[str]:
    """What this ONNX Runtime offers (empty when it is not installed: the engine reports that itself)."""
    try:
        from invsr_desktop.engine.sessions import import_onnxruntime

        return list(import_onnxruntime().get_available_providers())
    except ImportError:
        return []


def scale_text(scale: float) -> str:
    return f"×{scale:g}"


class ScalePicker(QComboBox):
    """The backend's native scales; editable with any value from 1 to 16 when the backend has ``any_scale``."""

    def set_spec(self, spec: BackendSpec) -> None:
        self.blockSignals(True)
        self.clear()
        scales = sorted(set(spec.scales) | (set(ANY_SCALE_PRESETS) if spec.any_scale else set()))
        for scale in scales:
            self.addItem(scale_text(scale), float(scale))
        self.setEditable(spec.any_scale)
        if spec.any_scale:  # typed text is parsed leniently by value(): "3", "x3", "×2.5" all work
            self.setToolTip("Native scales are listed; type any scale from 1 to 16.")
        else:
            self.setToolTip("The scales this backend's models were trained for.")
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
    """Backend picker, scale, parameters (built from the spec), output and performance settings."""

    pluginsRequested = Signal()
    engineOptionsChanged = Signal()

    def __init__(self, registry: Registry, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.registry = registry
        self.settings = settings
        self._spec: BackendSpec | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(self._backend_group())
        layout.addWidget(self._output_group())
        layout.addWidget(self._engine_group())
        layout.addStretch(1)
        self._fill_backends()
        self._load()

    # -- construction ------------------------------------------------------------------------------------------
    def _backend_group(self) -> QGroupBox:
        group = QGroupBox("Backend")
        form = QFormLayout(group)
        row = QHBoxLayout()
        self.backend_combo = QComboBox(objectName="backend_combo")
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
        form.addRow("Scale", self.scale_picker)
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
            self.provider_combo.addItem(name.removesuffix("ExecutionProvider"), name)
        form.addRow("Provider", self.provider_combo)
        self.tile_spin = QSpinBox(objectName="tile_spin", minimum=0, maximum=4096, singleStep=64)
        self.tile_spin.setSpecialValueText("Automatic")
        self.tile_spin.setToolTip("Tile side in input pixels; automatic sizes tiles from the memory budget")
        form.addRow("Tile size", self.tile_spin)
        self.memory_spin = QSpinBox(objectName="memory_spin", minimum=64, maximum=1 << 20, singleStep=256)
        self.memory_spin.setSuffix(" MB")
        form.addRow("Memory budget", self.memory_spin)
        for signal in (self.provider_combo.currentIndexChanged, self.tile_spin.valueChanged,
                       self.memory_spin.valueChanged):  # fmt: skip
            signal.connect(self.engineOptionsChanged)
        return group

    def _fill_backends(self) -> None:
        self.backend_combo.blockSignals(True)
        for spec in self.registry.backends():
            if spec.direction != "up":  # a shrinking backend (INN shrink) is not an upscaler: the CLI's --shrink
                continue
            self.backend_combo.addItem(f"{spec.name}  ({spec.kind})", spec.id)
        self.backend_combo.blockSignals(False)

    # -- state -------------------------------------------------------------------------------------------------
    def _load(self) -> None:
        index = self.backend_combo.findData(self.settings.backend_id())
        self.backend_combo.setCurrentIndex(max(0, index))
        self._backend_changed()
        output = self.settings.output()
        self.folder_edit.setText(str(output.folder) if output.folder else "")
        self.format_combo.setCurrentIndex(max(0, self.format_combo.findData(output.format)))
        self.quality_spin.setValue(output.quality)
        self.lossless_check.setChecked(output.lossless)
        self._format_changed()
        options = self.settings.engine_options()
        self.provider_combo.setCurrentIndex(max(0, self.provider_combo.findData(options.provider)))
        self.tile_spin.setValue(options.tile or 0)
        self.memory_spin.setValue(options.memory_budget_mb)

    def save(self) -> None:
        """Write the panel's state to the settings (called on every queued job and on close)."""
        spec = self.spec()
        if spec is not None:
            self.settings.set_backend_id(spec.id)
            self.settings.set_scale(spec.id, self.scale())
            self.settings.set_params(spec.id, self.params())
        self.settings.set_output(self.output())
        self.settings.set_engine_options(self.engine_options())

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
        self.description.setText(f"{spec.description}\nPlugin: {owner}" if spec.description else f"Plugin: {owner}")
        self.scale_picker.set_spec(spec)
        self.scale_picker.set_value(self.settings.scale(spec))
        self.param_form.set_params(spec.params)
        self.param_form.set_values(self.settings.params(spec))
        self.reset_button.setVisible(bool(spec.params))

    def _format_changed(self) -> None:
        fmt = self.format_combo.currentData()
        self.quality_spin.setEnabled(fmt in ("jpeg", "webp", "same"))
        self.lossless_check.setEnabled(fmt in ("webp", "same"))

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.folder_edit.text() or str(Path.home()))
        if folder:
            self.folder_edit.setText(folder)

    # -- values ------------------------------------------------------------------------------------------------
    def spec(self) -> BackendSpec | None:
        return self._spec

    def select_backend(self, backend_id: str) -> None:
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
            tile=self.tile_spin.value() or None,
            overlap=base.overlap,
            memory_budget_mb=self.memory_spin.value(),
            alpha=base.alpha,
        )
