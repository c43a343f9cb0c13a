"""The app's queue on disk, so a crash, a power cut or a quit with photos left loses nothing.

One JSON file (the app keeps it in ``$XDG_STATE_HOME/invsr-desktop/queue.json``), rewritten after every change to
the list and every job that starts or finishes. Each write goes to a temporary file beside it, is flushed to the
disk and then renamed over the old one (``os.replace`` is atomic), so the file is always the previous queue or the
new one, never half of one.

Read back at the next start: finished rows come back as they were (a result to compare, a failure and its reason),
unfinished ones (running, paused, queued, ready) come back as Ready, waiting for the user's Start. A photo whose
result was written just before the crash is then found by the queue's "done before" check, so nothing is redone
and no ``(1)`` copy is written. Rows whose photo (or, for a finished row, whose result) is gone are left out and
counted.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from invsr_desktop.engine.jobs import Job, JobQueue, JobState, OutputSettings
from invsr_desktop.engine.task import TaskMode

__all__ = ["VERSION", "Restored", "job_record", "load_records", "restore", "save_queue"]

VERSION = 1
log = logging.getLogger(__name__)


@dataclass
class Restored:
    """What came back from the file: the jobs put in the queue, and how many rows were left out (photo gone)."""

    unfinished: list[Job]
    finished: list[Job]
    missing: int = 0


def job_record(job: Job) -> dict[str, Any]:
    """A job's settings and outcome as plain JSON values (what a restart needs, nothing the engine can redo)."""
    out = job.output
    return {
        "source": str(job.source),
        "backend": job.backend_id,
        "scale": job.scale,
        "params": dict(job.params),
        "output": {"folder": str(out.folder) if out.folder else None, "format": out.format,
                   "quality": out.quality, "lossless": out.lossless},  # fmt: skip
        "mode": job.mode.value,
        "state": job.state.value,
        "result": str(job.result) if job.result else None,
        "error": job.error,
        "elapsed": round(job.elapsed, 3),
    }


def save_queue(path: Path, jobs: Iterable[Job]) -> None:
    """Write the queue to ``path`` atomically (temporary file, fsync, rename). OSError is the caller's to report."""
    data = json.dumps({"version": VERSION, "jobs": [job_record(job) for job in jobs]}, indent=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_records(path: Path) -> list[dict[str, Any]]:
    """The job records in ``path``; none when there is no file. A file that cannot be read as a queue (damaged, of
    another version) is logged, moved aside as ``<name>.unreadable`` for a bug report, and read as empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("jobs"), list):
            raise ValueError(f"not a version-{VERSION} queue file")
        return [record for record in data["jobs"] if isinstance(record, dict)]
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        log.warning("the saved queue %s could not be read (%s); starting with an empty queue", path, exc)
        try:
            os.replace(path, path.with_name(path.name + ".unreadable"))
        except OSError:
            pass
        return []


def restore(queue: JobQueue, records: Iterable[dict[str, Any]]) -> Restored:
    """Put the saved jobs back in ``queue``: finished ones as they were, the rest as Ready (see the module doc)."""
    restored = Restored([], [])
    for record in records:
        try:
            job = _restore_one(queue, record)
        except (KeyError, TypeError, ValueError) as exc:  # a record this version cannot use: say so, go on
            log.warning("a saved queue row was left out: %s (%r)", exc, record)
            job = None
        if job is None:
            restored.missing += 1
        elif job.state is JobState.READY:
            restored.unfinished.append(job)
        else:
            restored.finished.append(job)
    return restored


def _restore_one(queue: JobQueue, record: dict[str, Any]) -> Job | None:
    source = Path(record["source"])
    state = JobState(record["state"])
    result = Path(record["result"]) if record.get("result") else None
    if not source.is_file() or (state is JobState.DONE and (result is None or not result.is_file())):
        return None
    out = record.get("output") or {}
    output = OutputSettings(Path(out["folder"]) if out.get("folder") else None, out.get("format", "png"),
                            int(out.get("quality", 95)), bool(out.get("lossless", False)))  # fmt: skip
    job = queue.add(source, record["backend"], float(record["scale"]), dict(record.get("params") or {}), output,
                    TaskMode(record.get("mode", "upscale")), start=False)  # fmt: skip
    if state.finished:
        queue.mark_finished(job.id, state, result=result, error=str(record.get("error", "")),
                            elapsed=float(record.get("elapsed", 0.0)))  # fmt: skip
    return job
