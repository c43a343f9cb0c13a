"""A wheel built from the repository carries the built-in plugins, their models and the resources, and
`pip install` of it (not editable) into a clean venv gives a working `invsr-upscale`."""

from __future__ import annotations

import os
import shutil
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


def test_wheel_installs_into_a_clean_venv_and_upscales_the_sample(wheel, tmp_path):
    """`pip install invsr_desktop-*.whl[cpu]` into a new venv (dependencies resolved by pip from the package
    index or its cache), then the installed `invsr-upscale` upscales the bundled sample from a neutral folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    install = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[cpu]"], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stdout + install.stderr
    script = (
        "import invsr_desktop\n"
        "from invsr_desktop.resources import SAMPLES\n"
        "print(invsr_desktop.__file__)\n"
        "print(sorted(p for p in SAMPLES.iterdir() if p.suffix in ('.png', '.jpg'))[0])\n"
    )
    where = subprocess.run([str(bin_dir / "python"), "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    package_file, sample = where.stdout.split()
    assert package_file.startswith(str(venv)), "the package must come from the wheel, not the source tree"
    out = tmp_path / "out"
    run = subprocess.run(
        [str(bin_dir / "invsr-upscale"), sample, "-o", str(out), "--scale", "2", "--quiet"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(list(out.glob("*_x2_bicubic.png"))) == 1
