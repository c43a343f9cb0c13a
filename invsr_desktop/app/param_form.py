"""Widgets built from a backend's :class:`~invsr_desktop.engine.backend.Param` list, so a plugin needs no GUI code.

``int`` -> spin box, ``float`` -> double spin box, ``bool`` -> check box, ``str`` with choices -> combo box, any
other ``str`` -> line edit. Ranges, defaults, labels and help texts come from the plugin's description.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from invsr_desktop.engine.backend import Param

INT_LIMIT = 2**31 - 1
FLOAT_LIMIT = 1e9


def _decimals(param: Param) -> int:
    """Enough decimals to show the default and the range ends exactly (at least 2, at most 6)."""
    values = [v for v in (param.default, param.minimum, param.maximum) if isinstance(v, (int, float))]
    needed = 2
    for value in values:
        text = f"{float(value):.6f}".rstrip("0")
        needed = max(needed, len(text.split(".")[1]) if "." in text else 0)
    return min(6, needed)


class ParamEditor:
    """One parameter's widget with uniform get/set, whatever the widget type."""

    def __init__(self, param: Param, on_change: Callable[[], None]) -> None:
        self.param = param
        self.widget = self._make(param, on_change)
        self.widget.setObjectName(f"param_{param.name}")
        if param.help:
            self.widget.setToolTip(param.help)
        self.set(param.default)

    @staticmethod
    def _make(param: Param, on_change: Callable[[], None]) -> QWidget:
        if param.type is bool:
            box = QCheckBox()
            box.toggled.connect(on_change)
            return box
        if param.type is int:
            spin = QSpinBox()
            spin.setRange(int(param.minimum) if param.minimum is not None else -INT_LIMIT,
                          int(param.maximum) if param.maximum is not None else INT_LIMIT)  # fmt: skip
            spin.valueChanged.connect(on_change)
            return spin
        if param.type is float:
            dspin = QDoubleSpinBox()
            dspin.setDecimals(_decimals(param))
            dspin.setRange(param.minimum if param.minimum is not None else -FLOAT_LIMIT,
                           param.maximum if param.maximum is not None else FLOAT_LIMIT)  # fmt: skip
            span = (param.maximum - param.minimum) if param.minimum is not None and param.maximum is not None else 10
            dspin.setSingleStep(10 ** math.floor(math.log10(max(span, 1e-6) / 20)) if span > 0 else 0.1)
            dspin.valueChanged.connect(on_change)
            return dspin
        if param.choices:
            combo = QComboBox()
            combo.addItems(list(param.choices))
            combo.currentIndexChanged.connect(on_change)
            return combo
        line = QLineEdit()
        line.editingFinished.connect(on_change)
        return line

    def get(self) -> Any:
        w = self.widget
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, (QSpinBox, QDoubleSpinBox)):
            return w.value()
        if isinstance(w, QComboBox):
            return w.currentText()
        return w.text()  # type: ignore[attr-defined]

    def set(self, value: Any) -> None:
        w = self.widget
        if isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QSpinBox):
            w.setValue(int(value))
        elif isinstance(w, QDoubleSpinBox):
            w.setValue(float(value))
        elif isinstance(w, QComboBox):
            w.setCurrentIndex(max(0, w.findText(str(value))))
        else:
            w.setText(str(value))  # type: ignore[attr-defined]


class ParamForm(QWidget):
    """A form with one row per parameter of a backend; ``changed`` fires on every edit."""

    changed = Signal()

    def __init__(self, params: tuple[Param, ...] = (), parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QFormLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self.editors: dict[str, ParamEditor] = {}
        self.set_params(params)

    def set_params(self, params: tuple[Param, ...]) -> None:
        """Replace the rows with widgets for ``params`` (a backend switch)."""
        while self._layout.rowCount():
            self._layout.removeRow(0)
        self.editors = {}
        for param in params:
            editor = ParamEditor(param, lambda *_: self.changed.emit())
            label = QLabel(param.label or param.name.replace("_", " ").capitalize())
            label.setToolTip(param.help)
            self._layout.addRow(label, editor.widget)
            self.editors[param.name] = editor
        if not params:
            self._layout.addRow(QLabel("This backend has no parameters."))

    def values(self) -> dict[str, Any]:
        return {name: editor.get() for name, editor in self.editors.items()}

    def set_values(self, values: dict[str, Any]) -> None:
        self.blockSignals(True)
        try:
            for name, value in values.items():
                if name in self.editors:
                    self.editors[name].set(value)
        finally:
            self.blockSignals(False)
        self.changed.emit()

    def reset(self) -> None:
        self.set_values({name: editor.param.default for name, editor in self.editors.items()})
