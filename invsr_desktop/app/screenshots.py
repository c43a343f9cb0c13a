"""Render the documentation screenshots offscreen: the main window with a queue, shrink and restore with the
bundled INN, and the compare view at 400%.

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m invsr_desktop.app.screenshots [--out docs/screenshots] [--icon]

The queue is real: the bundled sample photo is upscaled with bicubic (x4 and x2) by the installed backends, a
larger generated photo is paused half-way, one more waits, and an unreadable file shows how a failure looks. The
shrink screenshot shrinks the sample x4 with the bundled INN and drops the small image back, which restores it. Work
happens in a temporary folder; settings never touch the user's. ``--icon`` also re-renders the PNG icon from the
SVG (the PNG in ``resources/icons`` is made this way).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QPointF, QRectF, Qt  # noqa: E402
from PySide6.QtGui import QImage, QPainter  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from invsr_desktop.app.settings import AppSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]  # the repository (docs/, resources/)
SAMPLE = ROOT / "resources" / "samples" / "astronaut.png"
FACE = QPointF(98, 44)  # the astronaut's eyes, in the sample's pixels
WINDOW_SIZE = (1280, 800)  # the default window, as a new user first sees it
SMALL_WINDOW_SIZE = (1024, 700)


def wait(app: QApplication, predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the queue did not get there in time")
        app.processEvents()
        time.sleep(0.01)
    for _ in range(5):  # let queued signals and repaints land
        app.processEvents()
        time.sleep(0.01)


def render_icon(svg: Path, png: Path, size: int = 256) -> None:
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    image.save(str(png))


def photos(work: Path) -> dict[str, Path]:
    """The sample (or a generated stand-in when the sample is absent), a larger photo and a broken file."""
    from invsr_desktop.app.sample_photo import make_photo

    sample = work / "astronaut.png"
    if SAMPLE.exists():
        shutil.copyfile(SAMPLE, sample)
    else:
        make_photo(sample, 224, 224)
    broken = work / "holiday-scan.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this download stopped half-way")
    return {
        "sample": sample,
        "large": make_photo(work / "harbour.png", 1600, 1200, seed=3),
        "next": make_photo(work / "garden.png", 800, 600, seed=5),
        "broken": broken,
    }


def shrink_and_restore(app: QApplication, work: Path, sample: Path, out: Path) -> None:
    """Shrink (INN) mode: the sample shrunk x4, then the small image dropped back and restored to full size."""
    from invsr_desktop.app.main_window import MainWindow
    from invsr_desktop.engine.task import TaskMode

    window = MainWindow(started_settings(work / "settings-shrink.ini"), paste_dir=work / "pasted")
    window.ask_before_quit = False
    window.resize(*WINDOW_SIZE)
    window.show()
    window.panel.set_mode(TaskMode.SHRINK)
    window.panel.scale_picker.set_value(4)
    (shrink,) = window.add_paths([sample])
    wait(app, lambda: shrink.state.finished)
    if shrink.result is None:
        raise RuntimeError(f"shrinking the sample failed: {shrink.error}")
    (restore,) = window.add_paths([shrink.result])  # recognised by its marker, whatever the mode
    wait(app, lambda: restore.state.finished)
    window.queue_panel.select_job(restore.id)
    window.grab().save(str(out / "shrink-and-restore.png"))
    window.close()


def started_settings(path: Path) -> AppSettings:
    """Settings where added photos run at once: the shots show a queue at work (else they would wait as Ready)."""
    from invsr_desktop.app.settings import AppSettings

    settings = AppSettings(path)
    settings.set_start_at_once(True)
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--icon", action="store_true", help="also render resources/icons/invsr-desktop.png")
    args = parser.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    if args.icon:
        render_icon(ROOT / "resources/icons/invsr-desktop.svg", ROOT / "resources/icons/invsr-desktop.png")

    from invsr_desktop.app.main_window import MainWindow
    from invsr_desktop.engine.jobs import JobState

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="invsr-screenshots-") as tmp:
        work = Path(tmp)
        files = photos(work)
        window = MainWindow(started_settings(work / "settings.ini"), paste_dir=work / "pasted",
                            queue_file=work / "queue.json")  # as the app keeps it: the quit question says so
        window.ask_before_quit = False
        window.resize(*WINDOW_SIZE)
        window.show()
        panel = window.panel
        panel.select_backend("bicubic")

        panel.scale_picker.set_value(4)
        (x4,) = window.add_paths([files["sample"]])
        wait(app, lambda: x4.state.finished)
        panel.scale_picker.set_value(2)
        (x2,) = window.add_paths([files["sample"]])
        (broken,) = window.add_paths([files["broken"]])
        wait(app, lambda: broken.state.finished)

        panel.scale_picker.set_value(4)
        panel.tile_spin.setValue(96)  # small tiles: the large photo is paused part-way through
        (large,) = window.add_paths([files["large"]])
        window.add_paths([files["next"]])
        wait(app, lambda: large.progress >= 0.4)
        window.actions_["pause"].trigger()
        wait(app, lambda: large.state is JobState.PAUSED)
        panel.tile_spin.setValue(0)
        window.queue_panel.select_job(broken.id)
        window.grab().save(str(args.out / "main-window.png"))
        window.resize(*SMALL_WINDOW_SIZE)  # a small laptop screen: the panel gives way, the columns still fit
        wait(app, lambda: True)
        window.grab().save(str(args.out / "main-window-1024x700.png"))
        window.resize(*WINDOW_SIZE)

        window.show_compare(x4.id)
        compare = window.compare
        for mode, zoom, name in (("split", 8.0, "compare-split-800.png"), ("side", 4.0, "compare-side-by-side-400.png")):
            compare.set_mode(mode)
            wait(app, lambda: True)
            compare.set_zoom(zoom)
            centre = QPointF(FACE.x() * 4, FACE.y() * 4)  # in result pixels (x4)
            compare.slider.setValue(500)  # the line in the middle of the view, on the face
            compare.center_on(centre)
            wait(app, lambda: True)
            window.grab().save(str(args.out / name))

        box, _ = window.quit_question()  # what closing with photos left asks (shown, not run modally)
        box.show()
        wait(app, lambda: True)
        box.grab().save(str(args.out / "quit-dialog.png"))
        box.close()
        window.queue.cancel_all()
        window.close()
        shrink_and_restore(app, work, files["sample"], args.out)
    for path in sorted(args.out.glob("*.png")):
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
