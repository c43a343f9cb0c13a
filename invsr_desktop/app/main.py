"""``invsr-desktop``: start the GUI (files given on the command line go straight into the queue), or install or
remove the per-user desktop launcher."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Sequence

from PySide6.QtCore import QCoreApplication, QTimer

from invsr_desktop import __version__
from invsr_desktop.app import APPLICATION, DESKTOP_ID, ORGANISATION

#: The queue kept between sessions, in :func:`state_dir` (see :mod:`invsr_desktop.engine.queue_store`).
QUEUE_FILE = "queue.json"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Our options and whatever is left for Qt (``-platform``, ``-style``...)."""
    parser = argparse.ArgumentParser(prog=DESKTOP_ID, description="Upscale photos with InvSR Desktop's backends.")
    parser.add_argument("files", nargs="*", type=Path, help="photos or folders to queue at start")
    parser.add_argument(
        "--install-launcher",
        action="store_true",
        help="add InvSR Desktop to this user's application menu (and as an 'Open with' choice)",
    )
    parser.add_argument("--uninstall-launcher", action="store_true", help="remove the launcher and icons again")
    parser.add_argument("--settings", type=Path, default=None,
                        help="use this INI file for the settings instead of the user's")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if a.startswith("--")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args, rest


def quit_on_signals(app: QCoreApplication) -> QTimer:
    """Ctrl-C in the terminal and ``kill`` quit cleanly (the running image is cancelled, nothing partial is left).

    Python runs signal handlers only when it gets control, which a C++ event loop never gives it; a short timer
    does. Returns the timer, which must stay referenced.
    """
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: app.quit())
    timer = QTimer(app, interval=250)
    timer.timeout.connect(lambda: None)
    timer.start()
    return timer


def onnxruntime_present() -> bool:
    """Say at start-up, in a dialog, which of the two ONNX Runtime extras to install when neither is there."""
    from invsr_desktop.engine.sessions import import_onnxruntime

    try:
        import_onnxruntime()
    except ImportError as exc:
        from PySide6.QtWidgets import QMessageBox

        print(f"invsr-desktop: {exc}", file=sys.stderr)
        QMessageBox.critical(None, "ONNX Runtime is not installed", str(exc))
        return False
    return True


def state_dir() -> Path:
    """The app's folder for what it keeps between sessions (XDG state: the log, the queue)."""
    import os

    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "invsr-desktop"


def log_to_file() -> Path | None:
    """The app's log (failures with their tracebacks, decoder warnings) in the user's state folder (XDG), so that
    an app started from the launcher, whose stderr goes nowhere, still keeps them. None if it cannot be opened."""
    import logging
    import logging.handlers

    base = state_dir()
    try:
        base.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(base / "invsr-desktop.log", maxBytes=1 << 20, backupCount=2,
                                                       encoding="utf-8")  # fmt: skip
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("invsr_desktop").addHandler(handler)
    return base / "invsr-desktop.log"


def main(argv: Sequence[str] | None = None) -> int:
    args, qt_args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.install_launcher or args.uninstall_launcher:
        from invsr_desktop.app.launcher import install_launcher, uninstall_launcher

        if args.install_launcher:
            for path in install_launcher():
                print(f"installed {path}")
        else:
            for path in uninstall_launcher():
                print(f"removed {path}")
        return 0

    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from invsr_desktop.app.main_window import ICON_PATH, MainWindow
    from invsr_desktop.app.settings import AppSettings

    log_to_file()
    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    app.setOrganizationName(ORGANISATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationVersion(__version__)
    app.setDesktopFileName(DESKTOP_ID)  # lets the desktop match the window to the launcher and its icon
    if ICON_PATH.exists():
        app.setWindowIcon(QIcon(str(ICON_PATH)))
    if not onnxruntime_present():
        return 5
    window = MainWindow(AppSettings(args.settings), queue_file=state_dir() / QUEUE_FILE)
    quit_on_signals(app)
    try:
        window.show()
        if args.files:
            window.add_paths(args.files)
        return app.exec()
    finally:
        window.shutdown()


if __name__ == "__main__":
    sys.exit(main())
