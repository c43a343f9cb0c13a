"""``invsr-upscale``: the engine from the command line (batch files and folders, progress bar, clean Ctrl-C).

The CLI is argument parsing, a folder scan and a progress bar over the app's own :class:`JobQueue`: the same
planner, runner, naming rule and "done before" check as the GUI's queue.

``--shrink`` makes small images with an invertible network (the INN's forward pass) and marks them; a marked image
is always restored to full size (by ``--restore``, or by any run that meets it, as the app does): upscaling the
small image with another backend would throw away what only the inverse network can give back.

Exit codes say what happened: 0 all written, 1 some images failed, 2 bad usage, 3 no images found, 4 the backend
could not start, 5 ONNX Runtime missing, 130 cancelled by Ctrl-C (nothing partial left behind).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tqdm import tqdm

from invsr_desktop import __version__
from invsr_desktop.engine.backend import BackendSpec
from invsr_desktop.engine.formats import WRITE_EXTENSIONS, canonical_format, readable
from invsr_desktop.engine.jobs import Job, JobQueue, JobState, OutputSettings, QueueEvent
from invsr_desktop.engine.output import remove_stale_parts
from invsr_desktop.engine.provenance import read_file
from invsr_desktop.engine.registry import BackendBuildError, Registry, default_registry, describe_backends
from invsr_desktop.engine.task import Task, TaskError, TaskMode
from invsr_desktop.engine.sessions import (
    OPENVINO,
    PREFERENCE,
    PRECISIONS,
    Precision,
    available_providers,
    path_note,
    planned_path,
    short_name,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_INPUT, EXIT_BACKEND, EXIT_NO_ORT, EXIT_CANCELLED = 0, 1, 2, 3, 4, 5, 130
FORMATS = WRITE_EXTENSIONS


@dataclass(frozen=True)
class Input:
    """One input file and the folder its result goes to."""

    source: Path
    out_dir: Path


EPILOG = """examples:
  invsr-upscale photo.jpg                                  bicubic x4, writes photo_x4_bicubic.png next to it
  invsr-upscale photos/ -r -o big/ -b esrgan-faithful-x4   a folder tree, mirrored under big/
  invsr-upscale photos/ -o big/ --skip-existing            resume a batch that was interrupted
  invsr-upscale photo.png -b esrgan-sharp-x4 -p tta=on     a backend parameter (see --list-backends)
  invsr-upscale --shrink -s 4 photo.png -f jpeg -q 90      a small image that --restore brings back
  invsr-upscale photo_shrunk_x4.png                        restores it (a marked image is recognised)

exit codes:
  0 all written   1 some images failed   2 bad usage   3 no images found
  4 the backend could not start   5 ONNX Runtime missing   130 cancelled (Ctrl-C or SIGTERM)
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="invsr-upscale",
        description="Upscale photos with InvSR Desktop's backends. Results are written next to the originals "
        "(or under --output), never over an existing file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", type=Path, help="image files and/or folders")
    p.add_argument("-o", "--output", type=Path, help="output folder (default: next to each original)")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders, mirroring the tree")
    p.add_argument("-b", "--backend", default=None,
                   help="backend id (see --list-backends; default bicubic, or the INN shrink with --shrink)")
    p.add_argument("-s", "--scale", type=float, default=4.0,
                   help="output scale, any number >= 1 (default 4); with --shrink the factor to shrink by")
    p.add_argument("--shrink", action="store_true",
                   help="shrink and restore, first half: write a small image (PNG, or -f jpeg -q QUALITY) that "
                   "--restore brings back to full size")
    p.add_argument("--restore", action="store_true",
                   help="restore images made by --shrink (a run without --backend also restores any it meets)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="backend parameter")
    p.add_argument("-f", "--format", default="png", choices=sorted(FORMATS), help="output format (default png)")
    p.add_argument("-q", "--quality", type=int, default=95, help="JPEG/WebP quality 1-100 (default 95)")
    p.add_argument("--lossless", action="store_true", help="lossless WebP")
    p.add_argument("--tile", type=int, default=None, help="tile size in input pixels (default: from --memory-mb)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in input pixels (default 16)")
    p.add_argument("--memory-mb", type=int, default=1024, help="memory budget that sizes tiles (default 1024)")
    p.add_argument("--provider", default="auto",
                   help="auto, cpu, openvino, cuda or tensorrt (default auto: a GPU if there is one, else OpenVINO "
                   "where installed, else ONNX Runtime's CPU provider)")
    p.add_argument("--precision", choices=PRECISIONS, default="fast",
                   help="fast (default): bf16 on CPUs that run it natively (AMX, AVX-512 bf16); elsewhere a model's "
                   "int8 copy (MODEL.int8.onnx from invsr-quantize, checked at 45 dB against fp32) where it has one, "
                   "else fp32. fp32: never trade accuracy for speed. Shrink and restore always run fp32")
    p.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    p.add_argument("--alpha", choices=("bicubic", "backend"), default="bicubic", help="how alpha is upscaled")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse inputs larger than this many pixels")
    p.add_argument("--suffix", default=None, help="output name suffix (default _x<scale>_<backend>)")
    p.add_argument("--skip-existing", action="store_true",
                   help="resume a batch: skip an image whose result with the same backend, scale and parameters "
                   "already exists (and decodes) in the output folder")
    p.add_argument("--list-backends", action="store_true", help="list backends and broken plugins, then exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p.parse_args(argv)


@dataclass
class Scan:
    """What a scan of the inputs found: the tasks, missing paths, and every file or folder it left out, by reason
    (so a summary can say "30 skipped: .gif is not a supported image type" instead of dropping them silently)."""

    inputs: list[Input] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def find_inputs(inputs: Iterable[Path], output: Path | None, recursive: bool) -> Scan:
    """Expand files and folders into inputs. Folders are walked without following symbolic links (no loops); with
    ``-r`` the output folder itself is not descended into, so earlier results are not upscaled again."""
    scan = Scan()
    out_dir = output.resolve() if output is not None else None
    for item in inputs:
        if item.is_dir():
            for path, reason in _walk(item, recursive, out_dir):
                if reason:
                    scan.skipped[reason] += 1
                else:
                    relative_dir = path.parent.relative_to(item)
                    scan.inputs.append(Input(path, (output / relative_dir) if output else path.parent))
        elif item.is_file():
            scan.inputs.append(Input(item, output or item.parent))
        else:
            scan.problems.append(f"{item}: no such file or folder")
    return scan


def _walk(folder: Path, recursive: bool, out_dir: Path | None) -> Iterator[tuple[Path, str]]:
    """``(path, "")`` for each image under ``folder`` in sorted order, ``(path, reason)`` for what is left out."""
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() and entry.is_dir():
            yield entry, "symbolic link to a folder, not followed"
        elif entry.is_dir():
            if readable(entry.suffix):
                yield entry, "folder named like an image"
            if not recursive:
                continue
            if out_dir is not None and entry.resolve() == out_dir:
                yield entry, "the output folder (its images are results)"
                continue
            yield from _walk(entry, recursive, out_dir)
        elif not entry.is_file():
            yield entry, "not a regular file"
        elif not readable(entry.suffix):
            yield entry, (f"{entry.suffix.lower()} is not a supported image type" if entry.suffix
                          else "no file type (suffix)")
        elif read_file(entry) is not None:
            yield entry, "a result of this program (name it on its own to process it again)"
        else:
            yield entry, ""


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--param expects NAME=VALUE, got {pair!r}")
        params[name.strip()] = value.strip()
    return params


class CancelOnSigint:
    """The first Ctrl-C (or SIGTERM, as a logout or ``kill`` sends) closes the queue: the engine stops after the
    current tile and no other image starts; a second one aborts the current image at once. Either way the summary
    is printed and no partial file stays."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.event = threading.Event()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> CancelOnSigint:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        self.queue.close()  # the queue's lock is reentrant: safe from a handler interrupting this thread
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{what}: cancelling after the current tile (Ctrl-C again to abort this image)...", file=sys.stderr)

    def __call__(self) -> bool:
        return self.event.is_set()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from invsr_desktop.engine.sessions import import_onnxruntime

        import_onnxruntime()
    except ImportError as exc:
        print(f"invsr-upscale: {exc}", file=sys.stderr)
        return EXIT_NO_ORT
    registry = default_registry()
    if args.list_backends:
        for line in describe_backends(registry):
            print(line)
        print(runs_on_line(args.provider, args.precision))
        return EXIT_OK
    return run(args, registry)


def runs_on_line(provider: str, precision: Precision) -> str:
    """``Runs on: OpenVINO f32 (available: OpenVINO, CPU; ...)`` for ``--list-backends``."""
    try:
        available = available_providers()
        planned = planned_path(provider, precision, available)
    except ValueError as exc:
        return f"Runs on: {exc}"
    offered = ", ".join(short_name(name) for name in available if name in PREFERENCE)
    line = f"Runs on: {planned} (--provider {provider}, --precision {precision}; offered: {offered}; {path_note()})"
    if planned.startswith(OPENVINO) and provider.lower() == "auto":
        line += "\n  auto: each model's first use times OpenVINO against ONNX Runtime here and keeps the faster"
    return line


def run(args: argparse.Namespace, registry: Registry) -> int:
    from invsr_desktop.engine.pipeline import Engine, EngineOptions

    try:
        asked = requested_task(args, registry)
    except (KeyError, ValueError, TaskError) as exc:
        print(f"invsr-upscale: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.inputs:
        print("invsr-upscale: give at least one image file or folder (or --list-backends)", file=sys.stderr)
        return EXIT_USAGE
    if args.output is not None and args.output.exists() and not args.output.is_dir():
        print(f"invsr-upscale: -o {args.output}: that is a file; -o takes a folder (it is created if missing)",
              file=sys.stderr)
        return EXIT_USAGE
    scan = find_inputs(args.inputs, args.output, args.recursive)
    for problem in scan.problems:
        print(f"invsr-upscale: {problem}", file=sys.stderr)
    if not scan.inputs:
        print("invsr-upscale: no images found" + "".join(f"; {line}" for line in skipped_lines(scan)),
              file=sys.stderr)
        return EXIT_NO_INPUT

    options = EngineOptions(provider=args.provider, threads=args.threads, precision=args.precision, tile=args.tile,
                            overlap=args.overlap, memory_budget_mb=args.memory_mb, alpha=args.alpha)
    engine = Engine(registry, options, on_message=lambda m: tqdm.write(f"note: {m}"))
    stale = sum(remove_stale_parts(folder) for folder in {i.out_dir for i in scan.inputs} if folder.is_dir())
    if stale:
        print(f"note: removed {stale} unfinished temporary file(s) that an interrupted run left behind", file=sys.stderr)
    queue = queue_inputs(args, asked, scan.inputs)
    try:
        prepare(engine, queue.jobs())
    except BackendBuildError as exc:
        print(f"invsr-upscale: {exc}", file=sys.stderr)
        return EXIT_BACKEND
    with CancelOnSigint(queue) as cancel, tqdm(
        total=len(queue), unit="img", disable=args.quiet, dynamic_ncols=True, bar_format=BAR
    ) as bar:
        queue.subscribe(BarView(bar).update)
        try:
            queue.run_pending(engine)
        except KeyboardInterrupt:  # a second Ctrl-C: the image in hand is dropped (it was never written)
            cancel.event.set()
    return report(queue.jobs(), cancelled=cancel(), engine=engine, skipped=skipped_lines(scan))


def requested_task(args: argparse.Namespace, registry: Registry) -> Task:
    """The task the command line asks for (before the planner sees each file): its backend id is resolved (the
    first shrinking backend for a bare ``--shrink``) and its parameters checked."""
    mode, spec = choose_mode(args, registry)
    params = spec.resolve_params(parse_params(args.param)) if spec else parse_params(args.param)
    if args.scale < 1:
        raise ValueError(f"--scale must be >= 1, got {args.scale:g}")
    task = Task(mode, spec.id if spec is not None else "", float(args.scale), params)
    task.check()  # a shrink by a fractional factor is a usage error, as in the app
    return task


def choose_mode(args: argparse.Namespace, registry: Registry) -> tuple[TaskMode, BackendSpec | None]:
    """``(mode, spec)``; the spec is None for --restore (the marker names the backend)."""
    if args.shrink and args.restore:
        raise ValueError("--shrink and --restore exclude each other")
    if args.restore:
        return TaskMode.RESTORE, registry.get(args.backend) if args.backend else None
    if args.shrink:
        if args.backend:
            return TaskMode.SHRINK, registry.get(args.backend)
        found = [s for s in registry.backends() if s.direction == "down"]
        if not found:
            raise ValueError("--shrink needs a shrinking backend (an INN model); none is installed")
        return TaskMode.SHRINK, found[0]
    spec = registry.get(args.backend or "bicubic")
    if spec.direction == "down":
        raise ValueError(f"backend {spec.id!r} shrinks images: use --shrink")
    return TaskMode.UPSCALE, spec


def queue_inputs(args: argparse.Namespace, asked: Task, inputs: Sequence[Input]) -> JobQueue:
    """A queue with one job per input, planned as the app plans it (a marked image becomes a restore, said in a
    note); ``--skip-existing`` is the queue's "done before"."""
    queue = JobQueue()
    fmt = canonical_format(args.format)
    for item in inputs:
        output = OutputSettings(item.out_dir, fmt, args.quality, args.lossless, args.suffix)
        job = queue.add(item.source, asked.backend_id, asked.scale, asked.params, output, mode=asked.mode,
                        redo=not args.skip_existing, max_pixels=args.max_pixels)  # fmt: skip
        if job.mode is not asked.mode and job.note:
            print(f"note: {item.source.name}: {job.note}", file=sys.stderr)
    return queue


def prepare(engine: object, jobs: Sequence[Job]) -> None:
    """Build the asked backend once before the first image, so a backend that cannot start (a broken model file,
    a provider that fails) ends the run at once with its reason (exit 4) instead of failing every image."""
    for job in jobs:
        if job.mode is TaskMode.UPSCALE:
            engine.runner(job.backend_id, job.scale, job.params)  # type: ignore[attr-defined]
            return


class BarView:
    """The batch progress bar as a view of the queue: per-image progress moves within a long image too, and each
    failure is printed as it happens."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar
        self.finished: set[int] = set()

    def update(self, event: QueueEvent) -> None:
        job = event.job
        if event.kind != "changed" or job is None:
            return
        if job.state.finished and job.id not in self.finished:
            self.finished.add(job.id)
            if job.state is JobState.FAILED:
                tqdm.write(f"failed: {job.source}: {job.error}")
        elif job.state.active:
            self.bar.set_postfix_str(job.source.name, refresh=False)
        running = job.progress if job.state.active else 0.0
        self.bar.n = len(self.finished) + min(1.0, max(0.0, running))
        self.bar.refresh()


BAR = "{l_bar}{bar}| {n:.2f}/{total} img [{elapsed}<{remaining}{postfix}]"


def skipped_lines(scan: Scan) -> list[str]:
    """``"30 skipped: .gif is not a supported image type"``, one line per reason, most frequent first."""
    return [f"{n} skipped: {reason}" for reason, n in scan.skipped.most_common()]


def report(jobs: Sequence[Job], cancelled: bool, engine: object, skipped: Sequence[str] = ()) -> int:
    """Print what was written, what failed and what the scan left out; return the exit code."""
    written = [j for j in jobs if j.state is JobState.DONE and not j.reused]
    reused = [j for j in jobs if j.state is JobState.DONE and j.reused]
    failed = [j for j in jobs if j.state is JobState.FAILED]
    for job in written:
        print(f"wrote {job.result}  (from {job.source})")
    for job in failed:
        print(f"FAILED {job.source}: {job.error}", file=sys.stderr)
    paths = ", ".join(engine.sessions.paths_in_use()) or "none"  # type: ignore[attr-defined]
    not_started = len(jobs) - len(written) - len(reused) - len(failed)
    print(f"{len(written)} written, {len(failed)} failed, {not_started} not started (ran on: {paths})",
          file=sys.stderr)  # fmt: skip
    if reused:
        print(f"{len(reused)} skipped: done before (--skip-existing found the result)", file=sys.stderr)
    for line in skipped:
        print(line, file=sys.stderr)
    if cancelled:
        print("cancelled: no partial file was left behind", file=sys.stderr)
        return EXIT_CANCELLED
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
