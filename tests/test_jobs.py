"""The batch queue model, headless: ordering, states, pause between tiles, cancel, retry, failures, real files."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from invsr_desktop.engine.errors import CancelledError, ImageWriteError
from invsr_desktop.engine.jobs import (
    Job,
    JobQueue,
    JobState,
    OutputSettings,
    QueueEvent,
    expand_sources,
    output_suffix,
    run_job,
)


class FakeEngine:
    """Stands in for Engine.run_file: ``tiles`` steps, polling cancel and reporting progress like the tiler."""

    def __init__(self, tiles: int = 4, delay: float = 0.0, fail: dict[str, Exception] | None = None) -> None:
        self.tiles, self.delay, self.fail = tiles, delay, fail or {}
        self.calls: list[Path] = []
        self.tile_started = threading.Event()

    def earlier_result(self, source, first_name, task):
        return None  # the fake writes b"result", not an image: nothing it wrote is ever found again

    def run_file(self, source, destination, task, quality, lossless, max_pixels, progress, cancel):
        self.calls.append(Path(source))
        if Path(source).name in self.fail:
            raise self.fail[Path(source).name]
        for i in range(self.tiles):
            if cancel and cancel():
                raise CancelledError("cancelled")
            self.tile_started.set()
            time.sleep(self.delay)
            if progress:
                progress((i + 1) / self.tiles)
        Path(destination).write_bytes(b"result")
        return Path(destination)


def photo(folder: Path, name: str = "a.png", size: tuple[int, int] = (24, 16)) -> Path:
    path = folder / name
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def test_add_move_remove_and_events(tmp_path):
    queue = JobQueue()
    events: list[QueueEvent] = []
    queue.subscribe(events.append)
    a, b, c = (queue.add(tmp_path / f"{n}.png", "bicubic", 2) for n in "abc")
    assert [j.id for j in queue.jobs()] == [a.id, b.id, c.id]
    queue.move(c.id, 0)
    assert [j.source.stem for j in queue.jobs()] == ["c", "a", "b"]
    queue.move_by(c.id, +1)
    assert [j.source.stem for j in queue.jobs()] == ["a", "c", "b"]
    queue.move_by(a.id, -5)  # clamped: already first
    queue.remove(c.id)
    assert [j.source.stem for j in queue.jobs()] == ["a", "b"]
    kinds = [(e.kind, e.index, e.previous) for e in events]
    assert kinds == [("added", 0, -1), ("added", 1, -1), ("added", 2, -1), ("moved", 0, 2), ("moved", 1, 0),
                     ("removed", 1, -1)]  # fmt: skip


def test_next_job_respects_order_pause_and_cancel(tmp_path):
    queue = JobQueue()
    a = queue.add(tmp_path / "a.png", "bicubic", 2)
    b = queue.add(tmp_path / "b.png", "bicubic", 2)
    assert queue.next_job() is a
    queue.move(b.id, 0)
    assert queue.next_job() is b
    queue.cancel(b.id)
    assert b.state is JobState.CANCELLED and queue.next_job() is a
    queue.pause()
    assert queue.next_job() is None
    queue.resume()
    assert queue.next_job() is a
    queue.cancel_all()
    assert queue.next_job() is None
    queue.retry(b.id)
    assert b.state is JobState.QUEUED and queue.next_job() is b


def test_run_pending_writes_results_and_reports_progress(tmp_path):
    queue = JobQueue()
    source = photo(tmp_path)
    job = queue.add(source, "bicubic", 4)
    seen: list[float] = []
    queue.subscribe(lambda e: e.kind == "changed" and seen.append(e.job.progress))
    assert queue.run_pending(FakeEngine(tiles=4)) == 1
    assert job.state is JobState.DONE and job.progress == 1.0 and job.eta is None
    assert job.result == tmp_path / "a_x4_bicubic.png" and job.result.exists()
    assert seen[1:5] == [0.25, 0.5, 0.75, 1.0]
    assert queue.results_for(source) == [job]


def test_a_failure_stays_in_its_row_and_the_queue_goes_on(tmp_path):
    queue = JobQueue()
    bad, good = photo(tmp_path, "bad.png"), photo(tmp_path, "good.png")
    disk_full = ImageWriteError(tmp_path / "bad_x2_bicubic.png", "the disk is full")
    engine = FakeEngine(fail={"bad.png": disk_full})
    first, second = queue.add(bad, "bicubic", 2), queue.add(good, "bicubic", 2)
    queue.run_pending(engine)
    assert first.state is JobState.FAILED and "the disk is full" in first.error and "Traceback" in first.details
    assert second.state is JobState.DONE
    engine.fail.clear()
    queue.retry(first.id)
    queue.run_pending(engine)
    assert first.state is JobState.DONE and first.error == ""


def test_unexpected_exceptions_name_their_type(tmp_path):
    queue = JobQueue()
    job = queue.add(photo(tmp_path), "bicubic", 2)
    queue.run_pending(FakeEngine(fail={"a.png": ZeroDivisionError("plugin bug")}))
    assert job.state is JobState.FAILED and job.error == "ZeroDivisionError: plugin bug"


def test_pause_holds_the_running_job_between_tiles_and_resume_finishes_it(tmp_path):
    queue = JobQueue()
    job = queue.add(photo(tmp_path), "bicubic", 2)
    engine = FakeEngine(tiles=50, delay=0.01)
    worker = threading.Thread(target=queue.run_pending, args=(engine,))
    worker.start()
    engine.tile_started.wait(5)
    queue.pause()
    wait_for(lambda: job.state is JobState.PAUSED)
    held = job.progress
    time.sleep(0.1)
    assert job.progress == held < 1.0 and job.result is None
    queue.resume()
    worker.join(10)
    assert job.state is JobState.DONE and job.result.exists()
    assert job.elapsed < job.finished - job.started  # the pause is not counted as work


def test_cancel_mid_image_leaves_no_file(tmp_path):
    queue = JobQueue()
    job = queue.add(photo(tmp_path), "bicubic", 2)
    engine = FakeEngine(tiles=200, delay=0.005)
    worker = threading.Thread(target=queue.run_pending, args=(engine,))
    worker.start()
    engine.tile_started.wait(5)
    queue.cancel(job.id)
    worker.join(10)
    assert job.state is JobState.CANCELLED and job.result is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_cancelling_a_paused_job_wakes_it(tmp_path):
    queue = JobQueue()
    job = queue.add(photo(tmp_path), "bicubic", 2)
    engine = FakeEngine(tiles=50, delay=0.01)
    worker = threading.Thread(target=queue.run_pending, args=(engine,))
    worker.start()
    engine.tile_started.wait(5)
    queue.pause()
    wait_for(lambda: job.state is JobState.PAUSED)
    queue.cancel(job.id)
    worker.join(5)
    assert not worker.is_alive() and job.state is JobState.CANCELLED


def test_close_stops_a_paused_worker(tmp_path):
    queue = JobQueue()
    queue.add(photo(tmp_path), "bicubic", 2)
    engine = FakeEngine(tiles=50, delay=0.01)
    worker = threading.Thread(target=queue.run_pending, args=(engine,))
    worker.start()
    engine.tile_started.wait(5)
    queue.pause()
    queue.close()
    worker.join(5)
    assert not worker.is_alive()


def test_eta_and_remaining_time(tmp_path):
    queue = JobQueue()
    first = queue.add(photo(tmp_path, "a.png"), "bicubic", 2)
    etas: list[float | None] = []
    queue.subscribe(lambda e: e.kind == "changed" and etas.append(first.eta))
    assert queue.remaining_seconds() is None  # nothing to guess from yet
    queue.run_pending(FakeEngine(tiles=4, delay=0.02))
    assert any(eta is not None and 0 < eta < 1 for eta in etas)
    queue.add(photo(tmp_path, "b.png"), "bicubic", 2)  # same size: about as long as the first took
    assert queue.remaining_seconds() == pytest.approx(first.elapsed)


def test_outputs_go_to_the_chosen_folder_and_format_and_never_overwrite(tmp_path):
    source = photo(tmp_path)
    out = tmp_path / "out" / "deeper"
    queue = JobQueue()
    settings = OutputSettings(folder=out, format="jpeg", quality=80)
    first = queue.add(source, "bicubic", 1.5, output=settings)
    second = queue.duplicate(first.id)
    queue.run_pending(FakeEngine())
    assert first.result == out / "a_x1.5_bicubic.jpg"
    assert second.result == out / "a_x1.5_bicubic (1).jpg"
    assert output_suffix("esrgan", 4.0) == "_x4_esrgan"


def test_expand_sources_takes_images_from_folders_and_reports_the_rest(tmp_path):
    photo(tmp_path, "b.png")
    photo(tmp_path, "a.jpg")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    images, problems = expand_sources([tmp_path, tmp_path / "notes.txt", tmp_path / "missing.png"])
    assert [p.name for p in images] == ["a.jpg", "b.png"]
    assert len(problems) == 2 and "not an image" in problems[0] and "no such file" in problems[1]


def test_describe_shows_backend_scale_and_params():
    job = Job(1, Path("a.png"), "esrgan", 4.0, {"seed": 3, "temperature": 0.8})
    assert job.describe() == "esrgan x4, seed=3, temperature=0.8"


def test_run_job_with_the_real_engine_and_bicubic(tmp_path):
    from invsr_desktop.engine.pipeline import Engine

    source = photo(tmp_path, size=(40, 30))
    job = Job(1, source, "bicubic", 2.0)
    result = run_job(Engine(), job)
    with PILImage.open(result) as image:
        assert image.size == (80, 60)
    calls = iter([False, True])  # cancelled at the second check between tiles: nothing may be written
    with pytest.raises(CancelledError):
        run_job(Engine(), Job(2, source, "bicubic", 3.0), cancel=lambda: next(calls, True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_x2_bicubic.png"]


def test_ready_jobs_wait_for_start_and_can_be_cancelled(tmp_path):
    queue = JobQueue()
    first, second, third = (queue.add(photo(tmp_path, f"{n}.png"), "bicubic", 2, start=False) for n in "abc")
    assert [j.state for j in queue.jobs()] == [JobState.READY] * 3 and queue.next_job() is None
    engine = FakeEngine()
    assert queue.run_pending(engine) == 0 and engine.calls == []
    queue.cancel(third.id)
    assert third.state is JobState.CANCELLED
    assert queue.start([second.id]) == [second] and queue.ready() == [first]
    assert queue.run_pending(engine) == 1 and second.state is JobState.DONE and first.state is JobState.READY
    assert queue.start() == [first] and queue.run_pending(engine) == 1 and first.state is JobState.DONE


def test_progress_saving_and_eta_with_the_real_engine(tmp_path):
    """A real bicubic run in 64 px tiles: no time left is guessed before the first tile; the row's ETA comes from
    the first tiles; "Saving" once every tile is done and before the job is Done."""
    from invsr_desktop.engine.pipeline import Engine, EngineOptions

    queue = JobQueue()
    job = queue.add(photo(tmp_path, size=(200, 130)), "bicubic", 2)
    seen: list[tuple[JobState, float, float | None, bool, float | None]] = []
    queue.subscribe(lambda e: e.kind == "changed" and seen.append(
        (e.job.state, e.job.progress, e.job.eta, e.job.saving, queue.remaining_seconds())))  # fmt: skip
    queue.run_pending(Engine(options=EngineOptions(tile=64, threads=1)))
    running = [s for s in seen if s[0] is JobState.RUNNING]
    assert running[0][1] == 0.0 and running[0][2] is None and running[0][4] is None  # at 0 %: no "0:00 left"
    partial = [s for s in running if 0 < s[1] < 1]
    assert len(partial) >= 5 and all(s[2] is not None and s[4] is not None for s in partial)
    assert [s[1] for s in running] == sorted(s[1] for s in running)
    saving = [s for s in running if s[3]]
    assert saving and saving[0][1] == 1.0 and seen.index(saving[0]) < len(seen) - 1
    assert job.state is JobState.DONE and not job.saving
