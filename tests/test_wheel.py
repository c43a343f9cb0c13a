"""A wheel built from the repository carries the built-in plugins, their models and the resources.

The wheel is installed (without dependencies: they come from this environment) into its own folder and run from
a neutral directory with the source tree and the editable install out of sight, so only what the wheel holds is
importable. Dependency resolution itself is pip's job and is exercised by the README's install command in CI.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# A copy of the source: setuptools keeps a build/ folder in the tree it builds, and stale files there would end
# up in the wheel (and the test would write into the user's checkout).
IGNORED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "runs", "__pycache__", "*.egg-info", ".pytest_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "invsr-desktop"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = out.glob("invsr_desktop-*.whl")
    return path


def test_wheel_holds_plugins_models_and_resources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "plugins/bicubic/__init__.py" in names
    assert "invsr_desktop/engine/pipeline.py" in names
    assert "model_export/niqe_pristine.npz" in names
    repo_models = sorted(p.relative_to(ROOT / "resources").as_posix() for p in (ROOT / "resources").rglob("*.onnx"))
    for model in repo_models:
        assert f"invsr_desktop/resources/{model}" in names
    assert any(n.startswith("invsr_desktop/resources/samples/") for n in names)
    assert "tests/test_wheel.py" not in names


def test_installed_wheel_upscales_the_sample(wheel, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    # With -S, site-packages on PYTHONPATH are plain path entries: their .pth files (the editable finder) never run.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), *site.getsitepackages()]))
    script = (
        "import sys, invsr_desktop, plugins.bicubic\n"
        "from invsr_desktop.resources import SAMPLES\n"
        f"assert invsr_desktop.__file__.startswith({str(target)!r}), invsr_desktop.__file__\n"
        "sample = sorted(p for p in SAMPLES.iterdir() if p.suffix in ('.png', '.jpg'))[0]\n"
        "from invsr_desktop.cli import main\n"
        f"sys.exit(main([str(sample), '-o', {str(tmp_path / 'out')!r}, '--scale', '2', '--quiet']))\n"
    )
    run = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(list((tmp_path / "out").glob("*_x2_bicubic.png"))) == 1
