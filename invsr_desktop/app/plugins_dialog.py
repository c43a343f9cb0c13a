"""The plugins dialog: the backends that loaded, and the plugins that did not, with their errors.

A broken plugin never stops the application (the registry isolates each one); this is where the user learns what
failed and why, with the full traceback one click away for a bug report.
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from invsr_desktop.engine.registry import Registry


class PluginsDialog(QDialog):
    """Lists ``registry.backends()`` and ``registry.failures``; selecting a failure shows its details."""

    def __init__(self, registry: Registry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Plugins")
        self.resize(720, 520)
        layout = QVBoxLayout(self)

        layout.addWidget(QLabel("<b>Backends</b>"))
        self.backends = QTreeWidget(objectName="backends_tree")
        self.backends.setHeaderLabels(["Backend", "Id", "Kind", "Scales", "Plugin"])
        self.backends.setRootIsDecorated(False)
        for spec in registry.backends():
            scales = "any" if spec.any_scale else ", ".join(f"×{s}" for s in spec.scales)
            item = QTreeWidgetItem([spec.name, spec.id, spec.kind, scales, registry.owner(spec.id)])
            item.setToolTip(0, spec.description)
            self.backends.addTopLevelItem(item)
        for column in range(self.backends.columnCount()):
            self.backends.resizeColumnToContents(column)
        layout.addWidget(self.backends, 1)

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
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
