"""The app's process ends cleanly after a busy queue (issue 19, item 8: "Fatal Python error: bool_dealloc" while
finalising, once thousands of per-tile progress events had crossed from the worker thread)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent)  # the scripts below import the tests' appsupport

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from PySide6.QtWidgets import QApplication
    from appsupport import make_photo
    from invsr_desktop.app.main_window import MainWindow
    from invsr_desktop.app.settings import AppSettings
    from invsr_desktop.engine.jobs import JobState

    folder = Path(sys.argv[1])
    app = QApplication([])
    settings = AppSettings(folder / "settings.ini")
    settings.set_start_at_once(True)
    window = MainWindow(settings, paste_dir=folder / "pasted")
    window.ask_before_quit = False
    window.show()
    window.panel.select_backend("bicubic")
    window.panel.scale_picker.set_value(2)
    window.panel.tile_spin.setValue(16)  # hundreds of tiles: one progress event each
    jobs = window.add_paths([make_photo(folder / f"p{i}.png", 320, 240) for i in range(3)])
    deadline = time.monotonic() + 60
    while not all(j.state.finished for j in jobs) and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.001)
    assert all(j.state is JobState.DONE for j in jobs), [j.error for j in jobs]
    window.close()
    print("closed")
    """
)


def test_the_process_exits_cleanly_after_a_busy_queue(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_STATE_HOME": str(tmp_path / "state"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": TESTS}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert "closed" in done.stdout, done.stderr[-2000:]
    assert done.returncode == 0 and "Fatal Python error" not in done.stderr, done.stderr[-2000:]


def test_emitting_a_signal_keeps_the_reference_counts_of_true(qapp):
    """The cause of the exit crash: PySide6 6.12.0's ``Signal.emit()`` drops one reference to ``True`` per call
    (measured: -100 over 100 emits; 6.11.3: 0), so any app that emits a few thousand signals dies when Python frees
    ``True`` at exit. pyproject.toml excludes that release; this fails on an installation that has it."""
    from PySide6.QtCore import QObject, Qt, Signal

    class Emitter(QObject):
        ping = Signal()

    emitter = Emitter()
    emitter.ping.connect(lambda: None, Qt.ConnectionType.DirectConnection)
    before = sys.getrefcount(True)
    for _ in range(200):
        emitter.ping.emit()
    assert sys.getrefcount(True) - before > -20


KILLED_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from PySide6.QtWidgets import QApplication
    from appsupport import make_photo, registry_for_tests
    from invsr_desktop.app.main_window import MainWindow
    from invsr_desktop.app.settings import AppSettings
    from invsr_desktop.engine.jobs import JobState

    folder = Path(sys.argv[1])
    app = QApplication([])
    settings = AppSettings(folder / "settings.ini")
    settings.set_start_at_once(True)
    registry, _ = registry_for_tests(0.05)
    window = MainWindow(settings, registry, folder / "pasted", queue_file=folder / "queue.json")
    window.show()
    window.panel.select_backend("slow-test")
    window.panel.tile_spin.setValue(16)
    photos = [make_photo(folder / "photos" / f"p{i}.png", 48, 32, seed=i) for i in range(4)]

    def on_event(event):
        if event.job is not None and event.job.state is JobState.DONE:
            print("one done", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # a crash, a power cut: nothing is shut down

    window.bridge.connect(on_event)
    window.add_paths(photos)
    app.exec()
    """
)


def test_a_killed_app_resumes_its_queue_without_redoing_or_duplicating(qtbot, tmp_path):
    """kill -9 after the first photo of four: the next start has that one Done (its result to compare) and the
    other three Ready; starting them writes three more results, no " (1)" copies, no partial files."""
    from appsupport import open_window
    from invsr_desktop.engine.jobs import JobState

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": TESTS}
    done = subprocess.run([sys.executable, "-c", KILLED_SCRIPT, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == -9 and "one done" in done.stdout, done.stderr[-2000:]
    photos = tmp_path / "photos"
    written = sorted(p.name for p in photos.glob("*_x2_*"))
    assert len(written) >= 1 and not list(photos.glob(".*"))  # results before the kill; no half-written file

    window = open_window(qtbot, tmp_path, delay=0, queue_file=tmp_path / "queue.json", start_at_once=False)
    restored = window.restored
    assert len(restored.finished) >= 1 and len(restored.finished) + len(restored.unfinished) == 4
    assert all(j.state is JobState.DONE for j in restored.finished)
    assert all(j.state is JobState.READY for j in restored.unfinished)
    assert "back as Ready" in window.statusBar().currentMessage()
    window.start_ready()
    qtbot.waitUntil(lambda: all(j.state.finished for j in window.queue.jobs()), timeout=20_000)
    assert all(j.state is JobState.DONE for j in window.queue.jobs())
    results = sorted(p.name for p in photos.glob("*_x2_*"))
    assert results == [f"p{i}_x2_slow-test.png" for i in range(4)]  # one each: nothing redone into a (1) copy


def test_a_folder_dropped_at_once_is_one_write_of_the_queue(qtbot, tmp_path, monkeypatch):
    """Adding many photos in one go writes the queue file once (at the next event-loop pass), not once per photo."""
    import invsr_desktop.app.main_window as main_window
    from appsupport import make_photo, open_window

    writes = []
    real = main_window.save_queue
    monkeypatch.setattr(main_window, "save_queue", lambda path, jobs: (writes.append(len(jobs)), real(path, jobs)))
    window = open_window(qtbot, tmp_path, delay=0, queue_file=tmp_path / "queue.json", start_at_once=False)
    photos = [make_photo(tmp_path / "many" / f"p{i}.png", 16, 12, seed=i) for i in range(40)]
    window.add_paths(photos)
    qtbot.waitUntil(lambda: bool(writes), timeout=5_000)
    qtbot.wait(50)
    assert writes == [40]
