"""The user's settings, persisted with QSettings: last backend and its parameters, output, engine, window.

Typed accessors keep key names and conversions in one place: QSettings hands back strings from an INI file, and a
plugin that changed its parameters since the last run must not break the start-up (unknown or invalid values are
dropped and the backend's defaults used). Tests pass an INI path so they never touch the user's real settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from invsr_desktop.app import APPLICATION, ORGANISATION
from invsr_desktop.engine.backend import BackendSpec
from invsr_desktop.engine.jobs import FORMATS, SHRINK_FORMATS, OutputSettings
from invsr_desktop.engine.task import TaskMode
from invsr_desktop.engine.pipeline import EngineOptions


class AppSettings:
    """Typed access to the application's QSettings (the user's, or an INI file given by ``path``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            self.qsettings = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANISATION, APPLICATION)
        else:
            self.qsettings = QSettings(str(path), QSettings.Format.IniFormat)

    def sync(self) -> None:
        self.qsettings.sync()

    # -- low level -------------------------------------------------------------------------------------------------
    def _get(self, key: str, default: Any, kind: type) -> Any:
        value = self.qsettings.value(key, default)
        if value is None:
            return default
        try:
            if kind is bool and isinstance(value, str):
                return value.lower() in ("1", "true", "yes", "on")
            return kind(value)
        except (TypeError, ValueError):
            return default

    # -- mode ------------------------------------------------------------------------------------------------------
    def mode(self) -> TaskMode:
        """Upscale, shrink or restore: what dropped photos are queued for (an unknown value means upscale)."""
        value = self._get("mode", TaskMode.UPSCALE.value, str)
        return TaskMode(value) if value in {m.value for m in TaskMode} else TaskMode.UPSCALE

    def set_mode(self, mode: TaskMode) -> None:
        self.qsettings.setValue("mode", TaskMode(mode).value)

    # -- backend ---------------------------------------------------------------------------------------------------
    def backend_id(self, default: str = "bicubic") -> str:
        return self._get("backend/id", default, str)

    def set_backend_id(self, backend_id: str) -> None:
        self.qsettings.setValue("backend/id", backend_id)

    def shrink_backend_id(self, default: str = "inn-shrink") -> str:
        """The shrinking backend last used, kept apart from the upscaler so switching modes loses neither."""
        return self._get("shrink/backend", default, str)

    def set_shrink_backend_id(self, backend_id: str) -> None:
        self.qsettings.setValue("shrink/backend", backend_id)

    def shrink_format(self) -> str:
        """PNG or JPEG: a shrunk image's own format, so a JPEG habit for small files leaves upscales in PNG."""
        fmt = self._get("shrink/format", "png", str)
        return fmt if fmt in SHRINK_FORMATS else "png"

    def set_shrink_format(self, fmt: str) -> None:
        self.qsettings.setValue("shrink/format", fmt if fmt in SHRINK_FORMATS else "png")

    def scale(self, spec: BackendSpec) -> float:
        """The last scale used with ``spec``, if that backend still offers it; else its first native scale."""
        fallback = float(4 if 4 in spec.scales or spec.any_scale else spec.scales[0])
        value = self._get(f"backend/{spec.id}/scale", fallback, float)
        if value < 1 or (not spec.any_scale and value not in spec.offered_scales()):
            return fallback
        return value

    def set_scale(self, backend_id: str, scale: float) -> None:
        self.qsettings.setValue(f"backend/{backend_id}/scale", float(scale))

    def params(self, spec: BackendSpec) -> dict[str, Any]:
        """The last parameters used with ``spec``, each one checked by the spec; bad or stale ones are dropped."""
        try:
            stored = json.loads(self._get(f"backend/{spec.id}/params", "{}", str))
        except ValueError:
            stored = {}
        values = spec.defaults()
        for name, value in (stored if isinstance(stored, dict) else {}).items():
            try:
                values[name] = spec.resolve_params({name: value})[name]
            except ValueError:
                continue
        return values

    def set_params(self, backend_id: str, params: dict[str, Any]) -> None:
        self.qsettings.setValue(f"backend/{backend_id}/params", json.dumps(params, sort_keys=True))

    # -- output ----------------------------------------------------------------------------------------------------
    def output(self) -> OutputSettings:
        folder = self._get("output/folder", "", str)
        fmt = self._get("output/format", "png", str)
        return OutputSettings(
            folder=Path(folder) if folder else None,
            format=fmt if fmt in FORMATS else "png",
            quality=min(100, max(1, self._get("output/quality", 95, int))),
            lossless=self._get("output/lossless", False, bool),
        )

    def set_output(self, output: OutputSettings) -> None:
        self.qsettings.setValue("output/folder", str(output.folder) if output.folder else "")
        self.qsettings.setValue("output/format", output.format)
        self.qsettings.setValue("output/quality", output.quality)
        self.qsettings.setValue("output/lossless", output.lossless)

    # -- engine ----------------------------------------------------------------------------------------------------
    def engine_options(self) -> EngineOptions:
        tile = self._get("engine/tile", 0, int)
        return EngineOptions(
            provider=self._get("engine/provider", "auto", str),
            threads=max(0, self._get("engine/threads", 0, int)),
            precision="fp32" if self._get("engine/precision", "fast", str) == "fp32" else "fast",
            tile=tile if tile > 0 else None,
            memory_budget_mb=max(64, self._get("engine/memory_mb", 1024, int)),
        )

    def set_engine_options(self, options: EngineOptions) -> None:
        self.qsettings.setValue("engine/provider", options.provider)
        self.qsettings.setValue("engine/threads", options.threads)
        self.qsettings.setValue("engine/precision", options.precision)
        self.qsettings.setValue("engine/tile", options.tile or 0)
        self.qsettings.setValue("engine/memory_mb", options.memory_budget_mb)

    # -- window ----------------------------------------------------------------------------------------------------
    def geometry(self) -> QByteArray | None:
        value = self.qsettings.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_geometry(self, geometry: QByteArray) -> None:
        self.qsettings.setValue("window/geometry", geometry)

    def splitter_state(self) -> QByteArray | None:
        value = self.qsettings.value("window/splitter")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_splitter_state(self, state: QByteArray) -> None:
        self.qsettings.setValue("window/splitter", state)

    def compare_mode(self) -> str:
        mode = self._get("compare/mode", "split", str)
        return mode if mode in ("split", "side") else "split"

    def set_compare_mode(self, mode: str) -> None:
        self.qsettings.setValue("compare/mode", mode)

    def start_at_once(self) -> bool:
        """Whether photos start as soon as they are added (off: they wait as Ready for the Start button)."""
        return self._get("queue/start_at_once", False, bool)

    def set_start_at_once(self, on: bool) -> None:
        self.qsettings.setValue("queue/start_at_once", bool(on))

    def last_folder(self) -> str:
        return self._get("window/last_folder", "", str)

    def set_last_folder(self, folder: str | Path) -> None:
        self.qsettings.setValue("window/last_folder", str(folder))
