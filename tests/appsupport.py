"""Helpers for the GUI tests: a test registry, drag and drop, a shown window (the app never imports this).

A test registry holds the real bicubic plugin plus small plugins made for tests: one slow enough to cancel or pause
mid-image, one with a parameter of every type, one whose model file is missing and one that fails to load; with
``inn=True`` also the real INN plugin (shrink and restore), which finds whatever INN models the model folders hold.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QWidget

from invsr_desktop.app.sample_photo import make_photo  # noqa: F401  (the tests' photos)
from invsr_desktop.engine.backend import BackendSpec, BuildRequest, Param
from invsr_desktop.engine.hookspecs import hookimpl
from invsr_desktop.engine.registry import Registry

SLOW_TILE_SECONDS = 0.02


class NearestRunner:
    """Nearest-neighbour upscaling that sleeps per tile: a backend slow enough to interrupt, and easy to check."""

    multiple = 1

    def __init__(self, delay: float, scale: int = 2) -> None:
        self.delay = delay
        self.scale = scale
        self.tiles = 0
        self.lock = threading.Lock()

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        with self.lock:
            self.tiles += 1
        return tile.repeat(self.scale, axis=0).repeat(self.scale, axis=1)


class SampleBackends:
    """A plugin object (registered like any third-party plugin) with the backends the GUI tests need."""

    def __init__(self, delay: float = SLOW_TILE_SECONDS) -> None:
        self.delay = delay
        self.runners: list[NearestRunner] = []

    def _build(self, request: BuildRequest) -> NearestRunner:
        runner = NearestRunner(self.delay, int(request.scale))
        self.runners.append(runner)
        return runner

    @hookimpl
    def invsr_backends(self) -> list[BackendSpec]:
        params = (
            Param("steps", int, 20, 1, 100, label="Steps", help="Sampler steps"),
            Param("temperature", float, 0.8, 0.0, 2.0, help="Sampling temperature"),
            Param("seed", int, 0, 0, 2**31 - 1),
            Param("tta", bool, False, help="Test-time augmentation"),
            Param("sampler", str, "ddim", choices=("ddim", "euler", "heun")),
        )
        return [
            BackendSpec(id="slow-test", name="Slow nearest (test)", kind="gan", scales=(2,), build=self._build,
                        description="Nearest neighbour, slowly: for tests.", bytes_per_pixel=64),
            BackendSpec(id="params-test", name="Every parameter (test)", kind="diffusion", scales=(2, 4),
                        build=self._build, params=params, bytes_per_pixel=64),
            BackendSpec(id="missing-model", name="Missing model (test)", kind="gan", scales=(4,),
                        build=_missing_model),
        ]  # fmt: skip


def _missing_model(request: BuildRequest) -> NearestRunner:
    raise FileNotFoundError("model file not found: /nowhere/esrgan_x4.onnx (download it or re-export it)")


class BrokenPlugin:
    """A plugin that fails while describing itself, as a plugin with a missing dependency would."""

    @hookimpl
    def invsr_backends(self) -> list[BackendSpec]:
        raise ImportError("this plugin needs libfoo, which is not installed")


def registry_for_tests(delay: float = SLOW_TILE_SECONDS, inn: bool = False) -> tuple[Registry, SampleBackends]:
    """The real bicubic plugin (and INN plugin), the test backends and one broken plugin; nothing else installed."""
    import plugins.bicubic

    registry = Registry()
    registry.register(plugins.bicubic, "bicubic")
    if inn:
        import plugins.inn

        registry.register(plugins.inn, "inn")
    backends = SampleBackends(delay)
    registry.register(backends, "test-backends")
    registry.register(BrokenPlugin(), "broken-test")
    return registry, backends


def file_mime(paths: list[Path]) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def drop_files(widget: QWidget, paths: list[Path], pos: QPoint | None = None) -> bool:
    """Drag ``paths`` over ``widget`` and drop them, as a file manager does; True if the drop was accepted."""
    mime = file_mime(paths)
    point = pos or widget.rect().center()
    actions = Qt.DropAction.CopyAction | Qt.DropAction.MoveAction
    buttons, modifiers = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    try:  # Qt's C++ takes a QPoint (PySide6 up to 6.11); PySide6 6.12 binds it with a QPointF
        enter = QDragEnterEvent(QPoint(point), actions, mime, buttons, modifiers)
    except TypeError:
        enter = QDragEnterEvent(QPointF(point), actions, mime, buttons, modifiers)
    QApplication.sendEvent(widget, enter)
    if not enter.isAccepted():
        return False
    drop = QDropEvent(QPointF(point), actions, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return drop.isAccepted()


def open_window(
    qtbot: object, folder: Path, delay: float = SLOW_TILE_SECONDS, settings: Path | None = None, inn: bool = False,
    start_at_once: bool = True, queue_file: Path | None = None,
):
    """A shown main window with the test registry, settings in ``folder`` and pasted images under it; closed by
    pytest-qt at the end of the test (which stops its worker thread). ``start_at_once``: added photos run at once
    (what most tests of the queue want; the Ready / Start path has its own tests)."""
    from invsr_desktop.app.main_window import MainWindow
    from invsr_desktop.app.settings import AppSettings

    registry, _ = registry_for_tests(delay, inn)
    app_settings = AppSettings(settings or folder / "settings.ini")
    app_settings.set_start_at_once(start_at_once)
    window = MainWindow(app_settings, registry, folder / "pasted", queue_file=queue_file)
    window.ask_before_quit = False  # pytest-qt closes windows with work left; a test of the question turns it on
    qtbot.addWidget(window)  # type: ignore[attr-defined]
    window.show()
    return window
