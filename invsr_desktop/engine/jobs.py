"""The batch queue model: jobs, their states, and the loop that runs them. No Qt here.

The GUI's queue table is a view of a :class:`JobQueue` and its worker thread calls :meth:`JobQueue.run_pending`; a
script can do the same without Qt. The queue is shared by two threads (the GUI edits it, the worker runs it), so
every mutation happens under one lock and observers are told about it afterwards, outside the lock, from whichever
thread made the change (the Qt layer turns these callbacks into queued signals).

Pause works between images and between tiles: the engine polls the ``cancel`` callback between tiles, and the
callback a job gets from the queue blocks while the queue is paused. Cancelling works the same way; because the
engine writes a file only after the whole image is done, a cancelled job leaves nothing behind.

A job is one :class:`~invsr_desktop.engine.task.Task` (upscale, shrink or restore) and its state. The task is
planned when the job is queued (:func:`~invsr_desktop.engine.task.plan`: a shrunk image is always restored) and
run by :func:`run_job` through :meth:`Engine.run_file <invsr_desktop.engine.pipeline.Engine.run_file>`. The CLI
runs its files through this same queue.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

from invsr_desktop.engine.errors import CancelledError, InvsrError, OutputExistsError
from invsr_desktop.engine.formats import JPEG_SUFFIXES, READ_SUFFIXES
from invsr_desktop.engine.task import Task, TaskError, TaskMode, plan
from invsr_desktop.engine.output import (
    RESTORE_SUFFIX,
    check_writable,
    default_suffix,
    first_name,
    output_path,
    shrink_suffix,
)

if TYPE_CHECKING:  # the pipeline pulls in OpenCV and ONNX Runtime; the queue model itself needs neither
    from invsr_desktop.engine.pipeline import Engine
    from invsr_desktop.engine.shrink_marker import ShrinkMarker

#: File name suffixes the queue accepts when files or folders are added (what the image loader reads).
IMAGE_SUFFIXES = READ_SUFFIXES
#: Output formats offered to the user; ``same`` keeps the original's format where it can be written (else PNG).
FORMATS: tuple[str, ...] = ("png", "jpeg", "webp", "tiff", "same")
#: How many times a job picks a new output name when another file took the chosen one meanwhile.
NAME_ATTEMPTS = 3
#: The formats a shrunk image is written in: the ones the restore marker (in the EXIF) is known to survive.
SHRINK_FORMATS: tuple[str, ...] = ("png", "jpeg")


log = logging.getLogger(__name__)


class JobState(str, Enum):
    """Where a job is in its life. ``ready`` waits for the user's Start (the app adds photos so, as Upscayl and
    chaiNNer do, unless told to start at once); ``paused`` is a running job held between two tiles by a paused
    queue."""

    READY = "ready"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job will not run again unless retried."""
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)

    @property
    def active(self) -> bool:
        """Whether the worker holds the job right now (running or paused between tiles)."""
        return self in (JobState.RUNNING, JobState.PAUSED)


@dataclass(frozen=True)
class OutputSettings:
    """Where and how a job's result is written.

    ``folder`` None means next to the original. ``format`` is a key of :data:`FORMATS`. ``quality`` applies to
    JPEG and WebP, ``lossless`` to WebP. ``suffix`` replaces the name rule's suffix (``_x4_bicubic``,
    ``_shrunk_x4``, ``_restored``): the CLI's ``--suffix``.
    """

    folder: Path | None = None
    format: str = "png"
    quality: int = 95
    lossless: bool = False
    suffix: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown output format {self.format!r}; use one of {', '.join(FORMATS)}")

    @property
    def output_format(self) -> str | None:
        """The format as :func:`~invsr_desktop.engine.output.output_path` takes it (None: the original's)."""
        return None if self.format == "same" else self.format


def output_suffix(backend_id: str, scale: float) -> str:
    """The result's name suffix, e.g. ``_x4_bicubic``: the same names the CLI writes."""
    return default_suffix(scale, backend_id)


def shrink_output_format(output: OutputSettings, source: Path) -> str:
    """The format a shrunk image is written in: PNG or JPEG, ``same`` picking JPEG only for a JPEG original.

    WebP and TIFF are refused rather than replaced, so a job never writes a format other than the one asked for.
    """
    if output.format == "same":
        return "jpeg" if source.suffix.lower() in JPEG_SUFFIXES else "png"
    if output.format not in SHRINK_FORMATS:
        raise TaskError(f"a shrunk image is written as PNG or JPEG (the formats its restore marker is known to "
                       f"survive), not {output.format.upper()}")  # fmt: skip
    return output.format


@dataclass(eq=False)
class Job:
    """One image to upscale with one backend at one scale (or to shrink, or to restore: ``mode``), and what became
    of it. ``note`` says what the queue decided on its own (a shrunk image restored instead of upscaled); ``marker``
    is a restore job's shrink marker, read when it was queued.

    A job keeps its settings for life: retrying runs exactly what was asked, and running the same photo with a
    second backend is a second job, so every result of a photo stays available for comparison.
    """

    id: int
    source: Path
    backend_id: str
    scale: float
    params: dict[str, Any] = field(default_factory=dict)
    output: OutputSettings = field(default_factory=OutputSettings)
    state: JobState = JobState.QUEUED
    progress: float = 0.0
    eta: float | None = None
    error: str = ""
    details: str = ""
    result: Path | None = None
    started: float | None = None
    finished: float | None = None
    paused_for: float = 0.0
    cancel_requested: bool = False
    mode: TaskMode = TaskMode.UPSCALE
    note: str = ""
    marker: ShrinkMarker | None = None
    redo: bool = False  # run even when the same result exists ("Run again"); else a done-before result is kept
    reused: bool = False  # finished by finding its result done before: it took no measurable time
    max_pixels: int | None = None  # refuse a larger input (None: the loader's limit)
    _paused_at: float | None = field(default=None, repr=False)

    @property
    def task(self) -> Task:
        """What the job asks the engine to do (the engine's one request type; the rest of a job is its state)."""
        return Task(self.mode, self.backend_id, self.scale, dict(self.params), self.marker)

    @property
    def saving(self) -> bool:
        """Whether every unit of the model's work is done and the result is being finished and written."""
        return self.state is JobState.RUNNING and self.progress >= 1.0

    @property
    def elapsed(self) -> float:
        """Seconds spent working on the job, pauses excluded."""
        if self.started is None:
            return 0.0
        end = self.finished if self.finished is not None else time.monotonic()
        paused = self.paused_for + ((end - self._paused_at) if self._paused_at is not None else 0.0)
        return max(0.0, end - self.started - paused)

    def describe(self) -> str:
        """The task in a few words, e.g. ``bicubic x4``, ``esrgan x4, seed=3``, ``shrink ÷4 with inn-shrink`` or
        ``restore x4 with inn (irn_x4)``: the mode comes first, so a shrunk image queued to upscale shows why it is
        restored instead."""
        if self.mode is TaskMode.RESTORE:
            if self.marker is None:
                return "restore"
            model = f" ({self.marker.model})" if self.marker.model else ""
            text = f"restore x{self.marker.scale} with {self.marker.backend}{model}"
        elif self.mode is TaskMode.SHRINK:
            text = f"shrink ÷{self.scale:g} with {self.backend_id}"
        else:
            text = f"{self.backend_id} x{self.scale:g}"
        if self.params:
            text += ", " + ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                                     for name, value in sorted(self.params.items()))  # fmt: skip
        return text

    def output_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The result's size for an original of ``width`` x ``height`` (None when a restore has no marker to say)."""
        if self.mode is TaskMode.RESTORE:
            return (self.marker.width, self.marker.height) if self.marker is not None else None
        if self.mode is TaskMode.SHRINK:
            factor = int(self.scale)
            return math.ceil(width / factor), math.ceil(height / factor)
        return round(width * self.scale), round(height * self.scale)


EventKind = Literal["added", "removed", "moved", "changed", "paused"]


@dataclass(frozen=True)
class QueueEvent:
    """What changed in a queue. ``index`` is the job's row after the change (before it, for ``removed``);
    ``previous`` is its row before a move. A ``paused`` event carries no job: the queue's pause flag changed."""

    kind: EventKind
    job: Job | None = None
    index: int = -1
    previous: int = -1


Listener = Callable[[QueueEvent], None]


def describe_error(exc: BaseException) -> str:
    """A failure in one line a user can act on: the engine's own errors are written for users already."""
    if isinstance(exc, MemoryError):
        return "not enough memory for this image (try a smaller tile size or memory budget)"
    if isinstance(exc, (InvsrError, OSError)):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def expand_sources(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Files and folders (top level, sorted) to the image files among them; returns (images, problems).

    What is not an image (by its suffix) is skipped without complaint when it came from a folder and reported when
    it was named on its own, so dropping a folder full of sidecar files stays quiet.
    """
    images: list[Path] = []
    problems: list[str] = []
    for item in map(Path, paths):
        if item.is_dir():
            images.extend(p for p in sorted(item.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            if item.suffix.lower() in IMAGE_SUFFIXES:
                images.append(item)
            else:
                problems.append(f"{item.name}: not an image this app reads ({', '.join(sorted(IMAGE_SUFFIXES))})")
        else:
            problems.append(f"{item}: no such file or folder")
    return images, problems


def _destination_rule(job: Job) -> tuple[str, str | None]:
    """``(suffix, format)`` of a job's result: one naming rule for the CLI and the app."""
    if job.mode is TaskMode.SHRINK:
        rule, fmt = shrink_suffix(int(job.scale)), shrink_output_format(job.output, job.source)
    elif job.mode is TaskMode.RESTORE:
        rule, fmt = RESTORE_SUFFIX, job.output.output_format
    else:
        rule, fmt = output_suffix(job.backend_id, job.scale), job.output.output_format
    return (rule if job.output.suffix is None else job.output.suffix), fmt


def done_before(engine: Engine, job: Job) -> Path | None:
    """An earlier result of exactly this upscale (same photo, backend, scale, parameters, folder and format), or
    None: a folder queued again is not redone, nor duplicated as ``(1)`` copies. A job with ``redo`` always runs."""
    if job.redo or job.mode is not TaskMode.UPSCALE:
        return None
    suffix, fmt = _destination_rule(job)
    first = first_name(job.source, job.output.folder or job.source.parent, suffix, fmt)
    return engine.earlier_result(job.source, first, job.task)


def run_job(
    engine: Engine,
    job: Job,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[float], None] | None = None,
) -> Path:
    """Run one job (upscale, shrink or restore its image) to a fresh file and return its path; raises what the
    engine raises.

    The name is ``<stem>_x<scale>_<backend>.<ext>``, ``<stem>_shrunk_x<f>.<ext>`` or ``<stem>_restored.<ext>`` in
    the output folder (or next to the original), made unique by ``output_path``; if another program takes that
    name while the job runs, a new one is picked.
    """
    suffix, fmt = _destination_rule(job)
    folder = check_writable(job.output.folder or job.source.parent, create=True)
    for attempt in range(NAME_ATTEMPTS):
        destination = output_path(job.source, folder, suffix, fmt)
        try:
            return engine.run_file(job.source, destination, job.task, quality=job.output.quality,
                                   lossless=job.output.lossless, max_pixels=job.max_pixels, progress=progress,
                                   cancel=cancel)  # fmt: skip
        except OutputExistsError:
            if attempt == NAME_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


class JobQueue:
    """An ordered list of jobs, edited by the GUI thread and run by one worker thread.

    Order matters: :meth:`next_job` takes the first queued job, so moving a job up runs it sooner. The queue-wide
    pause stops new jobs from starting and holds the running one at its next tile.
    """

    def __init__(self) -> None:
        self._jobs: list[Job] = []
        self._ids = itertools.count(1)
        self._cond = threading.Condition(threading.RLock())
        self._paused = False
        self._closing = False
        self._listeners: list[Listener] = []

    # -- observing -------------------------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event)`` after every change, from the thread that made it."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, kind: EventKind, job: Job | None = None, index: int = -1, previous: int = -1) -> None:
        event = QueueEvent(kind, job, index, previous)
        for listener in list(self._listeners):
            listener(event)

    def _changed(self, job: Job) -> None:
        self._emit("changed", job, self.index_of(job.id))

    # -- queries ---------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._jobs)

    def jobs(self) -> list[Job]:
        """The jobs in queue order (a copy of the list; the jobs themselves are live)."""
        with self._cond:
            return list(self._jobs)

    def get(self, job_id: int) -> Job:
        with self._cond:
            for job in self._jobs:
                if job.id == job_id:
                    return job
        raise KeyError(f"no job {job_id} in the queue")

    def index_of(self, job_id: int) -> int:
        """The job's row, or -1 when it is not (or no longer) in the queue."""
        with self._cond:
            return next((i for i, job in enumerate(self._jobs) if job.id == job_id), -1)

    def results_for(self, source: Path) -> list[Job]:
        """Every finished result of one photo, in queue order: what the compare view switches between."""
        source = Path(source)
        with self._cond:
            return [j for j in self._jobs if j.source == source and j.state is JobState.DONE and j.result]

    def counts(self) -> dict[JobState, int]:
        with self._cond:
            counts = {state: 0 for state in JobState}
            for job in self._jobs:
                counts[job.state] += 1
            return counts

    def remaining_seconds(self) -> float | None:
        """A guess at the time left for the whole queue: the running job's ETA plus, for each queued job, the mean
        time of finished jobs per input byte. None until there is something to guess from: a running job with no
        ETA yet, or queued jobs and none finished (results found done before do not count: they took no time)."""
        with self._cond:
            done = [j for j in self._jobs if j.state is JobState.DONE and j.elapsed > 0 and not j.reused]
            active = [j for j in self._jobs if j.state.active]
            queued = [j for j in self._jobs if j.state is JobState.QUEUED]
        if any(j.eta is None and not j.saving for j in active):
            return None
        total = sum(j.eta or 0.0 for j in active)
        if queued:
            if not done:
                return None
            per_byte = sum(j.elapsed for j in done) / max(1, sum(_size(j.source) for j in done))
            total += per_byte * sum(_size(j.source) for j in queued)
        return total if (active or queued) else None

    @property
    def paused(self) -> bool:
        return self._paused

    # -- editing (GUI thread) --------------------------------------------------------------------------------------
    def add(
        self,
        source: str | Path,
        backend_id: str,
        scale: float,
        params: dict[str, Any] | None = None,
        output: OutputSettings | None = None,
        mode: TaskMode | str = TaskMode.UPSCALE,
        start: bool = True,
        redo: bool = False,
        max_pixels: int | None = None,
    ) -> Job:
        """Append a job and return it: queued, or with ``start=False`` ready (it waits for :meth:`start`).

        ``mode`` shrink needs a shrinking backend and a whole factor as ``scale``; restore takes the backend, model
        and scale from the image's marker. A shrunk image queued in any mode becomes a restore job whose ``note``
        says so (see :func:`~invsr_desktop.engine.task.plan`). ``max_pixels`` refuses a larger input.
        """
        source = Path(source)
        asked = Task(TaskMode(mode), backend_id, float(scale), dict(params or {}))
        task, note = plan(source, asked)
        with self._cond:
            job = Job(next(self._ids), source, task.backend_id, task.scale, dict(task.params),
                      output or OutputSettings(), mode=task.mode, note=note, marker=task.marker, redo=redo,
                      max_pixels=max_pixels)  # fmt: skip
            if not start:
                job.state = JobState.READY
            self._jobs.append(job)
            index = len(self._jobs) - 1
            self._cond.notify_all()
        self._emit("added", job, index)
        return job

    def remove(self, job_id: int) -> None:
        """Take a job off the list; a running one is cancelled first (its worker finishes it off-list)."""
        with self._cond:
            index = self.index_of(job_id)
            if index < 0:
                return
            job = self._jobs.pop(index)
            if job.state.active:
                job.cancel_requested = True
                self._cond.notify_all()
        self._emit("removed", job, index)

    def move(self, job_id: int, index: int) -> None:
        """Put a job at row ``index`` (clamped), shifting the others."""
        with self._cond:
            previous = self.index_of(job_id)
            if previous < 0:
                raise KeyError(f"no job {job_id} in the queue")
            index = max(0, min(index, len(self._jobs) - 1))
            if index == previous:
                return
            job = self._jobs.pop(previous)
            self._jobs.insert(index, job)
        self._emit("moved", job, index, previous)

    def move_by(self, job_id: int, delta: int) -> None:
        """Move a job ``delta`` rows (negative: up, towards the front of the queue)."""
        self.move(job_id, self.index_of(job_id) + delta)

    def ready(self) -> list[Job]:
        """The jobs waiting for Start, in queue order."""
        with self._cond:
            return [job for job in self._jobs if job.state is JobState.READY]

    def start(self, job_ids: Iterable[int] | None = None) -> list[Job]:
        """Queue the ready jobs (all, or those of ``job_ids``); returns those it queued."""
        wanted = None if job_ids is None else set(job_ids)
        with self._cond:
            started = [job for job in self._jobs
                       if job.state is JobState.READY and (wanted is None or job.id in wanted)]  # fmt: skip
            for job in started:
                job.state = JobState.QUEUED
            self._cond.notify_all()
        for job in started:
            self._changed(job)
        return started

    def mark_finished(
        self, job_id: int, state: JobState, result: Path | None = None, error: str = "", elapsed: float = 0.0
    ) -> Job:
        """Set a job that is not running to a finished state it reached in an earlier session (a restored queue):
        its result, or its failure, and the time it took then."""
        if not state.finished:
            raise ValueError(f"{state.value} is not a finished state")
        with self._cond:
            job = self.get(job_id)
            if job.state.active:
                raise ValueError("a running job finishes by running")
            now = time.monotonic()
            job.state, job.result, job.error, job.started, job.finished = state, result, error, now - elapsed, now
            job.progress = 1.0 if state is JobState.DONE else 0.0
        self._changed(job)
        return job

    def retry(self, job_id: int) -> Job:
        """Queue a failed or cancelled job again with the same settings (a done one is left alone)."""
        with self._cond:
            job = self.get(job_id)
            if job.state not in (JobState.FAILED, JobState.CANCELLED):
                return job
            job.state, job.progress, job.eta, job.error, job.details = JobState.QUEUED, 0.0, None, "", ""
            job.reused = False
            job.started = job.finished = job._paused_at = None
            job.paused_for, job.cancel_requested = 0.0, False
            self._cond.notify_all()
        self._changed(job)
        return job

    def cancel(self, job_id: int) -> None:
        """Cancel a job: a queued one at once, a running one at its next tile; finished ones are left alone."""
        with self._cond:
            job = self.get(job_id)
            if job.state in (JobState.QUEUED, JobState.READY):
                job.state, job.finished = JobState.CANCELLED, time.monotonic()
            elif job.state.active:
                job.cancel_requested = True
                self._cond.notify_all()
                return  # the worker reports the state once the engine has stopped
            else:
                return
        self._changed(job)

    def cancel_all(self) -> None:
        """Cancel every job that has not finished."""
        for job in self.jobs():
            if not job.state.finished:
                self.cancel(job.id)

    def clear_finished(self) -> None:
        """Remove every finished job (their result files stay on disk)."""
        for job in self.jobs():
            if job.state.finished:
                self.remove(job.id)

    def pause(self) -> None:
        """Start no new job, and hold the running one at its next tile."""
        with self._cond:
            if self._paused:
                return
            self._paused = True
        self._emit("paused")

    def resume(self) -> None:
        with self._cond:
            if not self._paused:
                return
            self._paused = False
            self._cond.notify_all()
        self._emit("paused")

    def close(self) -> None:
        """Stop for good (the window is closing): the running job is cancelled and no other starts."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    # -- running (worker thread) -------------------------------------------------------------------------------
    def next_job(self) -> Job | None:
        """The first queued job, or None when there is none or the queue is paused or closed."""
        with self._cond:
            if self._paused or self._closing:
                return None
            return next((job for job in self._jobs if job.state is JobState.QUEUED), None)

    def run_pending(self, engine: Engine, before_job: Callable[[Job], None] | None = None) -> int:
        """Run queued jobs one after another until none is left (or the queue is paused or closed).

        Every job's outcome is recorded on the job: nothing a job raises escapes, so one bad image, a broken
        plugin, a missing model or a full disk fails that job only. Returns how many jobs were started.
        """
        started = 0
        while (job := self._start_next()) is not None:
            started += 1
            if before_job:
                before_job(job)
            self._run(engine, job)
        return started

    def _start_next(self) -> Job | None:
        with self._cond:
            job = self.next_job()
            if job is None:
                return None
            job.state, job.started, job.progress = JobState.RUNNING, time.monotonic(), 0.0
        self._changed(job)
        return job

    def _run(self, engine: Engine, job: Job) -> None:
        done = done_before(engine, job)
        if done is not None:
            job.note = f"done before: {done.name} has this photo with the same settings (Run again redoes it)"
            job.reused = True
            self._finish(job, JobState.DONE, result=done)
            return
        try:
            result = run_job(
                engine, job, cancel=lambda: self._checkpoint(job), progress=lambda f: self._progress(job, f)
            )
        except CancelledError:
            self._finish(job, JobState.CANCELLED)
        except Exception as exc:  # noqa: BLE001 - a job's failure is shown in its row; the queue goes on
            expected = isinstance(exc, (InvsrError, OSError))  # a corrupt photo, a full disk: a line says it all
            log.error("%s failed: %s", job.source, describe_error(exc), exc_info=not expected)
            self._finish(job, JobState.FAILED, error=describe_error(exc), details=traceback.format_exc())
        else:
            self._finish(job, JobState.DONE, result=result)

    def _progress(self, job: Job, fraction: float) -> None:
        with self._cond:
            job.progress = min(1.0, max(job.progress, float(fraction)))
            elapsed = job.elapsed
            # from the first finished unit of work (a tile, a TTA pass, a sampler step) on: its time per unit
            # times the units left; none before (a guess from nothing said "0:00 left" at 0 %)
            job.eta = elapsed * (1.0 - job.progress) / job.progress if job.progress > 0 and elapsed > 0 else None
        self._changed(job)

    def _checkpoint(self, job: Job) -> bool:
        """The engine's ``cancel`` callback: blocks while the queue is paused, then says whether to stop."""
        while True:
            with self._cond:
                if job.cancel_requested or self._closing:
                    return True
                if not self._paused:
                    if job.state is not JobState.PAUSED:
                        return False
                    job.state = JobState.RUNNING
                    job.paused_for += time.monotonic() - (job._paused_at or time.monotonic())
                    job._paused_at = None
                elif job.state is JobState.PAUSED:
                    self._cond.wait()
                    continue
                else:
                    job.state, job._paused_at = JobState.PAUSED, time.monotonic()
            self._changed(job)

    def _finish(
        self, job: Job, state: JobState, error: str = "", details: str = "", result: Path | None = None
    ) -> None:
        with self._cond:
            now = time.monotonic()
            if job._paused_at is not None:
                job.paused_for += now - job._paused_at
                job._paused_at = None
            job.state, job.finished, job.eta = state, now, None
            job.error, job.details, job.result = error, details, result
            if state is JobState.DONE:
                job.progress = 1.0
        self._changed(job)

    def duplicate(self, job_id: int, **changes: Any) -> Job:
        """A new queued job for the same photo, with some settings changed (e.g. another backend); it runs even if
        the same result exists (the user asked again)."""
        job = self.get(job_id)
        template = replace(job, **changes)
        return self.add(template.source, template.backend_id, template.scale, template.params, template.output,
                        template.mode, redo=True)  # fmt: skip


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
