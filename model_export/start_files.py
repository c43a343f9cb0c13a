"""Training start files that left the tree for the git history, and the command that brings one back.

``model_export/resume/`` holds the files configs start from (``gan.init_from``, ``inn.init_from``,
``diffusion.prior``) and the resume point of a model still training. Each copy of the repository pays for every
file there in its working tree, and the lent accelerator takes a working tree of at most 64 MiB, so a finished
model's files leave the tree. They stay in the history: ``resume/in_history.toml`` records, per file, the commit
that still holds it and its SHA-256, and this command restores it byte for byte::

    python -m model_export.start_files list
    python -m model_export.start_files get esrgan_sharp_x4_model.pt [NAME ...]

A training run that names a missing file gets this command in its error (``checkpoints.load_untrusted``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from invsr_desktop.engine.errors import InvsrError

RESUME_DIR = Path(__file__).resolve().parent / "resume"
MANIFEST_NAME = "in_history.toml"


class StartFileError(InvsrError):
    """A start file that cannot be brought back (not in the manifest, no git history, a wrong checksum)."""


@dataclass(frozen=True)
class StartFile:
    name: str
    commit: str  # a commit whose tree still holds model_export/resume/<name>
    sha256: str
    what: str  # what the file is, and which configs start from it


def read_manifest(folder: Path = RESUME_DIR) -> dict[str, StartFile]:
    """The files of ``folder``'s manifest, by name; empty when there is none."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return {}
    table = tomllib.loads(path.read_text(encoding="utf-8")).get("files", {})
    return {name: StartFile(name, entry["commit"], entry["sha256"], entry.get("what", ""))
            for name, entry in table.items()}  # fmt: skip


def history_hint(path: str | os.PathLike) -> str:
    """For a missing checkpoint ``path``: how to bring it back when it is a start file that left the tree, else ""."""
    path = Path(path)
    folder = path.parent.resolve() if path.parent.is_dir() else None
    if folder is None or path.name not in read_manifest(folder):
        return ""
    return (f" It left the tree and stays in the git history: `python -m model_export.start_files get {path.name}` "
            "brings it back.")  # fmt: skip


def _repo_root(folder: Path) -> Path:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        raise StartFileError(f"{folder} is not in a git clone: the start files live in the project's history "
                             "(a clone of the repository, not an installed copy)") from None
    return Path(out.stdout.strip())


def get(name: str, folder: Path = RESUME_DIR) -> Path:
    """Write ``folder/name`` from the commit the manifest names, after checking its SHA-256; returns the path.

    A file already there with the right checksum is left as it is; one with another content is never overwritten."""
    entry = read_manifest(folder).get(name)
    if entry is None:
        raise StartFileError(f"{name} is not in {folder / MANIFEST_NAME}")
    target = folder / name
    if target.is_file():
        if _sha256(target.read_bytes()) == entry.sha256:
            return target
        raise StartFileError(f"{target} exists with other content than the one recorded; move it away first")
    root = _repo_root(folder)
    relative = target.resolve().relative_to(root).as_posix()
    show = subprocess.run(["git", "-C", str(root), "show", f"{entry.commit}:{relative}"], capture_output=True)
    if show.returncode != 0:
        why = show.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["git show failed"]
        raise StartFileError(f"{name}: commit {entry.commit[:12]} is not in this clone ({why[0]}); a shallow clone "
                             "needs `git fetch --unshallow`")  # fmt: skip
    if _sha256(show.stdout) != entry.sha256:
        raise StartFileError(f"{name}: the copy in {entry.commit[:12]} does not match the recorded SHA-256")
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(show.stdout)
    os.replace(partial, target)
    return target


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_export.start_files", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("list", help="the start files kept in the history, and whether each is in the tree")
    get_parser = sub.add_parser("get", help="bring start files back from the history")
    get_parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    manifest = read_manifest()
    if args.verb == "list":
        for entry in manifest.values():
            here = "in the tree" if (RESUME_DIR / entry.name).is_file() else f"in {entry.commit[:12]}"
            print(f"{entry.name:40s} {here:18s} {entry.what}")
        return 0
    status = 0
    for name in args.names:
        try:
            print(f"{get(name)}")
        except StartFileError as exc:
            print(f"start_files: {exc}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
