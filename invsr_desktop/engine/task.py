"""What the engine is asked to do with one image: one request type for upscale, shrink and restore, and the one
planner that decides which.

The job queue (and through it the GUI and the CLI) describes every piece of work as a :class:`Task`;
:meth:`Engine.run_file <invsr_desktop.engine.pipeline.Engine.run_file>` runs it (load, run, save). The planner,
:func:`plan`, holds the one rule both front ends follow: a shrunk image (one carrying the shrink marker) is always
restored, whatever it was queued for, because upscaling the small image with another backend would throw away what
only the inverse network can give back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from invsr_desktop.engine.errors import InvsrError
from invsr_desktop.engine.shrink_marker import ShrinkMarker, read_file_marker


class TaskMode(str, Enum):
    """What a task does with its image: upscale it, shrink it with an invertible network, or restore a shrunk one."""

    UPSCALE = "upscale"
    SHRINK = "shrink"
    RESTORE = "restore"


class TaskError(InvsrError):
    """A task that cannot run as asked (a fractional shrink factor, no shrinking model, a damaged marker, the wrong
    model): the message is written for the user."""


@dataclass(frozen=True)
class Task:
    """One image's work: ``mode`` with ``backend_id`` at ``scale`` (a shrink's factor), with ``params``.

    A restore takes its backend, model and scale from ``marker`` (read when it was planned; None: read from the
    image when it runs).
    """

    mode: TaskMode
    backend_id: str
    scale: float
    params: dict[str, Any] = field(default_factory=dict)
    marker: ShrinkMarker | None = None

    @classmethod
    def upscale(cls, backend_id: str, scale: float, params: dict[str, Any] | None = None) -> Task:
        return cls(TaskMode.UPSCALE, backend_id, float(scale), dict(params or {}))

    @classmethod
    def shrink(cls, backend_id: str, factor: int, params: dict[str, Any] | None = None) -> Task:
        return cls(TaskMode.SHRINK, backend_id, float(factor), dict(params or {}))

    @classmethod
    def restore(cls, params: dict[str, Any] | None = None, marker: ShrinkMarker | None = None) -> Task:
        return cls(TaskMode.RESTORE, marker.backend if marker else "", float(marker.scale if marker else 1),
                   dict(params or {}), marker)  # fmt: skip

    @property
    def factor(self) -> int:
        """A shrink's whole reduction factor; a TaskError for anything else (one check for the CLI and the app)."""
        factor = int(self.scale)
        if factor != self.scale or factor < 2:
            raise TaskError(f"shrinking needs a whole factor of 2 or more, not {self.scale:g}")
        return factor

    def check(self) -> None:
        """Refuse a task that cannot run, before any work."""
        if self.mode is TaskMode.SHRINK:
            self.factor  # noqa: B018 - the property raises for a bad factor
        elif self.mode is TaskMode.UPSCALE and self.scale < 1:
            raise TaskError(f"the scale must be 1 or more, not {self.scale:g}")


def read_source_marker(source: Path) -> tuple[ShrinkMarker | None, str]:
    """The shrink marker of ``source`` and, if the marker is damaged, what is wrong with it.

    Reads only the file's header and EXIF, so planning a folder stays quick; a file that is missing or not an
    image has no marker (running its task says what is wrong with it).
    """
    try:
        return read_file_marker(source), ""
    except ValueError as exc:
        return None, str(exc)


def plan(source: Path, task: Task) -> tuple[Task, str]:
    """``(task, note)``: the task to run for ``source`` when ``task`` was asked, and what was decided and why.

    A shrunk image is restored in any mode. A restore takes its backend, model and scale from the marker; the
    parameters asked for another backend are dropped (an explicit restore keeps its own, e.g. a temperature).
    """
    marker, damage = read_source_marker(source)
    if marker is None and not damage:
        note = "" if task.mode is not TaskMode.RESTORE else "no shrink marker: only images made by Shrink can be restored"
        return task, note
    automatic = task.mode is not TaskMode.RESTORE
    if damage:
        return Task.restore(), damage
    size = f"{marker.width}×{marker.height}"
    if automatic:
        instead = "upscaled" if task.mode is TaskMode.UPSCALE else "shrunk again"
        note = f"a shrunk image (÷{marker.scale}): restored to {size} instead of {instead}"
    else:
        note = f"restores to {size}"
    return Task.restore({} if automatic else task.params, marker), note
