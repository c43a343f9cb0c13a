"""The queue on disk (issue 24, item 1): atomic writes, unreadable files set aside, and a restored queue whose
unfinished photos wait as Ready while finished ones keep their results."""

from __future__ import annotations

import json

import pytest

from appsupport import make_photo
from invsr_desktop.engine.jobs import JobQueue, JobState, OutputSettings
from invsr_desktop.engine.queue_store import load_records, restore, save_queue


def test_save_and_restore_keeps_settings_and_outcomes(tmp_path):
    queue = JobQueue()
    photos = [make_photo(tmp_path / f"p{i}.png", 16, 12) for i in range(4)]
    out = OutputSettings(tmp_path / "out", "jpeg", 80)
    done = queue.add(photos[0], "bicubic", 2, {"tta": True}, out)
    failed, waiting, queued = (queue.add(p, "bicubic", 3) for p in photos[1:])
    result = tmp_path / "p0_x2_bicubic.jpg"
    result.write_bytes(b"a result")
    queue.mark_finished(done.id, JobState.DONE, result=result, elapsed=4.5)
    queue.mark_finished(failed.id, JobState.FAILED, error="the disk is full")
    waiting.state = JobState.RUNNING  # cut short by the crash
    path = tmp_path / "state" / "queue.json"
    save_queue(path, queue.jobs())
    assert not list(path.parent.glob("*.part"))  # the temporary file was renamed, not left behind

    again = JobQueue()
    restored = restore(again, load_records(path))
    assert restored.missing == 0
    assert [j.source for j in restored.finished] == [photos[0], photos[1]]
    assert [j.source for j in restored.unfinished] == [photos[2], photos[3]]
    first = restored.finished[0]
    assert first.state is JobState.DONE and first.result == result and first.params == {"tta": True}
    assert first.output == out and first.scale == 2.0 and first.elapsed == pytest.approx(4.5, abs=0.01)
    assert restored.finished[1].state is JobState.FAILED and restored.finished[1].error == "the disk is full"
    assert all(j.state is JobState.READY for j in restored.unfinished)  # they wait for the user's Start
    assert again.ready() == restored.unfinished


def test_rows_whose_photo_or_result_is_gone_are_counted_not_restored(tmp_path):
    queue = JobQueue()
    gone, kept, result_gone = (make_photo(tmp_path / f"p{i}.png", 16, 12) for i in range(3))
    for photo in (gone, kept, result_gone):
        queue.add(photo, "bicubic", 2)
    queue.mark_finished(queue.jobs()[2].id, JobState.DONE, result=tmp_path / "deleted.png")
    path = tmp_path / "queue.json"
    save_queue(path, queue.jobs())
    gone.unlink()
    restored = restore(JobQueue(), load_records(path))
    assert restored.missing == 2 and [j.source for j in restored.unfinished] == [kept]


def test_an_unreadable_file_is_set_aside_and_a_failed_write_keeps_the_old_one(tmp_path):
    path = tmp_path / "queue.json"
    path.write_text("{ not json")
    assert load_records(path) == []
    assert not path.exists() and (tmp_path / "queue.json.unreadable").read_text() == "{ not json"
    path.write_text(json.dumps({"version": 99, "jobs": []}))
    assert load_records(path) == []  # another version's file is not guessed at

    queue = JobQueue()
    queue.add(make_photo(tmp_path / "a.png", 16, 12), "bicubic", 2)
    save_queue(path, queue.jobs())
    before = path.read_bytes()
    queue.add(make_photo(tmp_path / "b.png", 16, 12), "bicubic", 2, {"bad": object()})  # not JSON: the write fails
    with pytest.raises(TypeError):
        save_queue(path, queue.jobs())
    assert path.read_bytes() == before and not list(tmp_path.glob("*.part"))
