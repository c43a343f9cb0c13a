"""``invsr-bench --memory 4000x3000``: the peak resident memory of a whole ``invsr-upscale`` run of a big photo,
per backend, against issue 22's bound (twice the result's 8-bit size plus 500 MB).

Each backend runs in its own child process (the app's CLI, file in and file out, as a user runs it), so one
backend's memory is not another's. The peak is the child's own high-water mark after ``exec`` (``VmHWM`` of
``/proc/self/status``, which the child writes when it exits): ``os.wait4``'s ``ru_maxrss`` would not do, since
Linux carries into it the high-water mark of the process the child was forked from (a test runner, this command).
Without ``/proc`` it falls back to ``ru_maxrss``. The photo is synthetic (smooth colour fields with fine grain,
seeded, saved as JPEG), so the command needs no data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MB = 1 << 20
BOUND_EXTRA_MB = 500  # issue 22: at most twice the output's 8-bit size plus this


@dataclass
class MemoryRow:
    backend: str
    size: tuple[int, int]  # input (width, height)
    scale: float
    peak_mb: float | None  # None: the run failed
    bound_mb: float
    seconds: float
    error: str = ""

    @property
    def holds(self) -> bool:
        return self.peak_mb is not None and self.peak_mb <= self.bound_mb


def parse_size(text: str) -> tuple[int, int]:
    """``4000x3000`` -> (4000, 3000)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected WIDTHxHEIGHT, e.g. 4000x3000, got {text!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"the size must be positive, got {text!r}")
    return width, height


def synthetic_photo(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A photo-like JPEG of ``size``: a small random field enlarged (smooth colour) plus grain."""
    import cv2

    rng = np.random.default_rng(seed)
    width, height = size
    field = rng.random((max(2, height // 40), max(2, width // 40), 3)).astype(np.float32)
    image = cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0.0, 0.03, image.shape).astype(np.float32)
    cv2.imwrite(str(path), np.clip(image * 255, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def bound_mb(size: tuple[int, int], scale: float) -> float:
    out = round(size[0] * scale) * round(size[1] * scale) * 3
    return 2 * out / MB + BOUND_EXTRA_MB


#: The child: invsr-upscale, reporting its VmHWM (kB) into the file named by $INVSR_BENCH_HWM as it exits.
CHILD = """
import atexit, os, runpy, sys

def report():
    try:
        with open("/proc/self/status") as status, open(os.environ["INVSR_BENCH_HWM"], "w") as out:
            out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
    except (OSError, StopIteration):
        pass

atexit.register(report)
sys.argv = ["invsr-upscale", *sys.argv[1:]]
runpy.run_module("invsr_desktop.cli", run_name="__main__")
"""


def measure(backend: str, photo: Path, size: tuple[int, int], scale: float, threads: int) -> MemoryRow:
    """One ``invsr-upscale`` run of ``photo`` in a child process: its peak RSS and wall time."""
    with tempfile.TemporaryDirectory(prefix="invsr-bench-memory-") as out:
        hwm = Path(out) / "hwm"
        command = [sys.executable, "-c", CHILD, str(photo), "-s", f"{scale:g}", "-b", backend, "-o", out,
                   "--threads", str(threads)]  # fmt: skip
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 env={**os.environ, "INVSR_BENCH_HWM": str(hwm)})  # fmt: skip
        assert child.stderr is not None
        stderr = child.stderr.read().decode(errors="replace")
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        reported = hwm.read_text().strip() if hwm.is_file() else ""
    peak = (int(reported) if reported.isdigit() else usage.ru_maxrss) / 1024  # kilobytes on Linux
    error = "" if child.returncode == 0 else (stderr.strip().splitlines() or [f"exit {child.returncode}"])[-1]
    return MemoryRow(backend, size, scale, None if error else peak, bound_mb(size, scale), seconds, error)


def run(backends: list[str], size: tuple[int, int], scale: float, threads: int) -> list[MemoryRow]:
    with tempfile.TemporaryDirectory(prefix="invsr-bench-photo-") as folder:
        photo = synthetic_photo(Path(folder) / "photo.jpg", size)
        rows = []
        for backend in backends:
            rows.append(measure(backend, photo, size, scale, threads))
            print(line(rows[-1]), flush=True)
        return rows


def header(size: tuple[int, int], scale: float) -> list[str]:
    w, h = size
    return [f"memory: one invsr-upscale run of a {w}x{h} photo x{scale:g} (a child process per backend); bound = "
            f"2 x the {round(w * scale)}x{round(h * scale)} 8-bit result + {BOUND_EXTRA_MB} MB = "
            f"{bound_mb(size, scale):.0f} MB",
            "| backend | peak RSS (MB) | bound (MB) | holds | seconds |", "|---|---|---|---|---|"]  # fmt: skip


def line(row: MemoryRow) -> str:
    if row.peak_mb is None:
        return f"| {row.backend} | failed: {row.error} | {row.bound_mb:.0f} | - | {row.seconds:.0f} |"
    return (f"| {row.backend} | {row.peak_mb:.0f} | {row.bound_mb:.0f} | {'yes' if row.holds else 'NO'} "
            f"| {row.seconds:.0f} |")

