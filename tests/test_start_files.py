"""Start files that left the tree: the manifest names every one a packaged config needs, `get` brings one back from
the git history byte for byte, and a run naming a missing one is told the command."""

from __future__ import annotations

import hashlib
import subprocess
import tomllib
from pathlib import Path

import pytest

from model_export import start_files
from model_export.checkpoints import CheckpointError, load_untrusted

ROOT = Path(__file__).resolve().parents[1]


def _start_paths(table: dict, prefix: str = ""):
    """Every string value of a config that names a file under model_export/resume/."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _start_paths(value, f"{prefix}{key}.")
        elif isinstance(value, str) and value.startswith("model_export/resume/"):
            yield f"{prefix}{key}", value


def test_every_start_file_a_packaged_config_names_is_in_the_tree_or_the_manifest():
    manifest = start_files.read_manifest()
    for config in sorted((ROOT / "model_export" / "configs").glob("*.toml")):
        for key, value in _start_paths(tomllib.loads(config.read_text())):
            name = Path(value).name
            assert (ROOT / value).is_file() or name in manifest, f"{config.name}: {key} = {value} is nowhere"


def test_the_manifest_records_whole_commits_and_checksums():
    for entry in start_files.read_manifest().values():
        assert len(entry.commit) == 40 and len(entry.sha256) == 64 and entry.what


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def repo_with_a_moved_file(tmp_path):
    """A git repository whose resume/ folder had weights.pt in its first commit and not in its second."""
    folder = tmp_path / "resume"
    folder.mkdir()
    data = b"weights of a finished model"
    (folder / "weights.pt").write_bytes(data)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "with")
    commit = _git(tmp_path, "rev-parse", "HEAD").strip()
    (folder / "weights.pt").unlink()
    manifest = (f'[files."weights.pt"]\ncommit = "{commit}"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
                'what = "a test file"\n')
    (folder / start_files.MANIFEST_NAME).write_text(manifest)
    return folder, data


def test_get_brings_a_file_back_from_the_history(repo_with_a_moved_file):
    folder, data = repo_with_a_moved_file
    assert start_files.get("weights.pt", folder).read_bytes() == data
    assert start_files.get("weights.pt", folder).read_bytes() == data  # there already: left as it is


def test_get_never_overwrites_other_content_and_refuses_unknown_names(repo_with_a_moved_file):
    folder, _ = repo_with_a_moved_file
    (folder / "weights.pt").write_bytes(b"a user's own file")
    with pytest.raises(start_files.StartFileError, match="other content"):
        start_files.get("weights.pt", folder)
    assert (folder / "weights.pt").read_bytes() == b"a user's own file"
    with pytest.raises(start_files.StartFileError, match="not in"):
        start_files.get("other.pt", folder)


def test_get_refuses_a_copy_whose_checksum_differs(repo_with_a_moved_file):
    folder, _ = repo_with_a_moved_file
    manifest = folder / start_files.MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace('sha256 = "', 'sha256 = "0'))
    with pytest.raises(start_files.StartFileError, match="SHA-256"):
        start_files.get("weights.pt", folder)
    assert not (folder / "weights.pt").exists()


def test_a_missing_start_file_error_names_the_command(repo_with_a_moved_file):
    folder, _ = repo_with_a_moved_file
    with pytest.raises(CheckpointError, match=r"python -m model_export.start_files get weights.pt"):
        load_untrusted(folder / "weights.pt")
    with pytest.raises(CheckpointError, match=r"not found: .*other.pt$"):
        load_untrusted(folder / "other.pt")
