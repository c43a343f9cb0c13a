"""A real full disk (issue 24, item 4): a batch of six written into a 1.5 MB tmpfs. The first results fit, the
rest fail with "the disk is full", the batch goes on and says so, inputs are untouched and no half-written file is left.

Mounting needs root and a kernel that lets this process mount (a container may not): elsewhere it skips, and the
injected ``ENOSPC`` tests of ``test_imageio.py`` cover the same path without a real disk.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from invsr_desktop import cli
from invsr_desktop.engine.imageio import load_image


@pytest.fixture()
def small_disk(tmp_path):
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount_point)],
                              capture_output=True, text=True, timeout=20)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); test_imageio's injected ENOSPC covers it")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); test_imageio's injected ENOSPC covers it")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=20)


def test_a_full_disk_fails_the_files_that_do_not_fit_and_nothing_else(tmp_path, small_disk, capsys):
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        PILImage.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    code = cli.main([str(photos), "-o", str(small_disk), "--quiet"])
    err = capsys.readouterr().err
    written = sorted(small_disk.iterdir())
    names = [p.name for p in written]
    assert code == cli.EXIT_FAILED and 1 <= len(written) < 6, names  # some fitted, the disk filled
    assert names == [f"p{i}_x4_bicubic.png" for i in range(len(written))]  # no .part file, no partial result
    assert all(load_image(p).size == (640, 480) for p in written)  # each one whole
    failed = 6 - len(written)
    assert err.count("the disk is full") == failed and f"{len(written)} written, {failed} failed" in err
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before
