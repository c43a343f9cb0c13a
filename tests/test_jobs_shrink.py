"""Shrink and restore through the headless job queue (what the GUI runs): modes, the automatic restore of a shrunk
image queued to upscale, the CLI's file names, and clear per-job failures. Uses the tiny INN of conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from invsr_desktop.engine.imageio import Image, save_image
from invsr_desktop.engine.jobs import Job, JobQueue, JobState, OutputSettings
from invsr_desktop.engine.task import Task, TaskMode
from invsr_desktop.engine.pipeline import Engine, EngineOptions
from invsr_desktop.engine.registry import Registry
from invsr_desktop.engine.shrink_marker import ShrinkMarker, read_file_marker, with_marker


def registry() -> Registry:
    import plugins.bicubic
    import plugins.inn

    registry = Registry()
    registry.register(plugins.bicubic, "bicubic")
    registry.register(plugins.inn, "inn")
    return registry


def photo(path: Path, width: int = 37, height: int = 26) -> Path:
    rng = np.random.default_rng(width * height)
    PILImage.fromarray((rng.random((height, width, 3)) * 128 + 64).astype(np.uint8)).save(path)
    return path


def run(queue: JobQueue, engine: Engine) -> None:
    queue.run_pending(engine)


def test_shrink_then_queue_the_result_to_upscale_restores_it(models_dir, tmp_path):
    engine = Engine(registry(), EngineOptions(threads=1))
    source = photo(tmp_path / "photo.png")
    queue = JobQueue()
    shrink = queue.add(source, "inn-shrink", 2, mode="shrink")
    jpeg = queue.add(source, "inn-shrink", 2, output=OutputSettings(format="jpeg", quality=80), mode=TaskMode.SHRINK)
    assert shrink.describe() == "shrink ÷2 with inn-shrink" and shrink.output_size(37, 26) == (19, 13)
    run(queue, engine)
    assert shrink.state is JobState.DONE, shrink.error
    assert shrink.result == tmp_path / "photo_shrunk_x2.png"  # the CLI's name
    assert jpeg.result == tmp_path / "photo_shrunk_x2.jpg"
    assert read_file_marker(jpeg.result) == read_file_marker(shrink.result) == ShrinkMarker("inn", "tiny_x2", 2, 37, 26)
    with PILImage.open(shrink.result) as small:
        assert small.size == (19, 13)

    # queued to upscale with bicubic x4: recognised and restored, and the job says so
    restore = queue.add(shrink.result, "bicubic", 4, {"unused": 1})
    assert restore.mode is TaskMode.RESTORE and restore.backend_id == "inn" and restore.scale == 2
    assert restore.params == {} and "restored to 37×26 instead of upscaled" in restore.note
    assert restore.describe() == "restore x2 with inn (tiny_x2)" and restore.output_size(19, 13) == (37, 26)
    run(queue, engine)
    assert restore.state is JobState.DONE, restore.error
    assert restore.result == tmp_path / "photo_shrunk_x2_restored.png"
    assert read_file_marker(restore.result) is None
    expected = engine.run_file(shrink.result, tmp_path / "expected.png", Task.restore())
    assert np.array_equal(np.asarray(PILImage.open(restore.result)), np.asarray(PILImage.open(expected)))
    # a second restore never overwrites the first
    again = queue.add(shrink.result, "", 1, mode="restore")
    assert again.note == "restores to 37×26"
    run(queue, engine)
    assert again.result == tmp_path / "photo_shrunk_x2_restored (1).png"


def test_shrink_and_restore_failures_are_per_job_and_say_why(models_dir, tmp_path):
    engine = Engine(registry(), EngineOptions(threads=1))
    source = photo(tmp_path / "photo.png")
    queue = JobQueue()
    unmarked = queue.add(source, "", 1, mode="restore")
    assert "no shrink marker" in unmarked.note
    webp = queue.add(source, "inn-shrink", 2, output=OutputSettings(format="webp"), mode="shrink")
    not_a_shrinker = queue.add(source, "bicubic", 2, mode="shrink")
    wrong_factor = queue.add(source, "inn-shrink", 3, mode="shrink")
    small = Image(np.full((6, 7, 3), 0.5, np.float32))
    gone = save_image(with_marker(small, ShrinkMarker("inn", "gone", 2, 14, 12)), tmp_path / "gone.png")
    wrong_model = queue.add(gone, "bicubic", 2)
    exif = PILImage.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\0\0\0invsr-shrink: v=1; backend=inn; model=tiny_x2; scale=2; size=14y12"
    PILImage.new("RGB", (7, 6)).save(tmp_path / "damaged.png", exif=exif.tobytes())
    damaged = queue.add(tmp_path / "damaged.png", "bicubic", 2)
    assert damaged.mode is TaskMode.RESTORE and "damaged" in damaged.note
    good = queue.add(source, "bicubic", 2)
    run(queue, engine)

    assert good.state is JobState.DONE and good.mode is TaskMode.UPSCALE  # the queue went on
    for job, words in ((unmarked, "no invsr-shrink marker"), (webp, "PNG or JPEG"), (not_a_shrinker, "does not shrink"),
                       (wrong_factor, "shrinks by 2, 4, not 3"), (wrong_model, "'gone'"), (damaged, "damaged")):
        assert job.state is JobState.FAILED, job
        assert words in job.error and not job.error.startswith(("ValueError", "KeyError")), job.error
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["damaged.png", "gone.png", "photo.png", "photo_x2_bicubic.png"]  # nothing partial left


def test_shrink_without_an_inn_model_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("INVSR_MODELS_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr("invsr_desktop.engine.model_files.bundled_models_dir", lambda: tmp_path / "none")
    queue = JobQueue()
    job = queue.add(photo(tmp_path / "photo.png"), "inn-shrink", 4, mode="shrink")
    queue.run_pending(Engine(registry(), EngineOptions(threads=1)))
    assert job.state is JobState.FAILED and "unknown backend 'inn-shrink'" in job.error


def test_describe_and_sizes_of_each_mode():
    job = Job(1, Path("a.png"), "bicubic", 4.0)
    assert job.mode is TaskMode.UPSCALE and job.output_size(10, 7) == (40, 28)
    assert Job(2, Path("a.png"), "", 1.0, mode=TaskMode.RESTORE).output_size(10, 7) is None
    with pytest.raises(ValueError):
        TaskMode("grow")
