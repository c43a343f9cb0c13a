"""The per-user launcher: a valid .desktop file whose Exec is the installed script, icons in the hicolor theme."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from invsr_desktop.app import launcher
from invsr_desktop.app.main import main


def read_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


def test_install_and_uninstall_through_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert main(["--install-launcher"]) == 0
    desktop = tmp_path / "data" / "applications" / "invsr-desktop.desktop"
    svg = tmp_path / "data" / "icons" / "hicolor" / "scalable" / "apps" / "invsr-desktop.svg"
    png = tmp_path / "data" / "icons" / "hicolor" / "256x256" / "apps" / "invsr-desktop.png"
    assert desktop.is_file() and svg.is_file() and png.is_file()
    assert f"installed {desktop}" in capsys.readouterr().out

    entry = read_entry(desktop)
    assert entry["Type"] == "Application" and entry["Icon"] == "invsr-desktop"
    assert entry["MimeType"] == "image/png;image/jpeg;image/webp;image/tiff;image/bmp;"
    command, files = entry["Exec"].rsplit(" ", 1)
    assert files == "%F"
    script = Path(command.strip('"'))
    assert script.is_absolute() and script.name == "invsr-desktop"
    assert script == Path(sys.executable).parent / "invsr-desktop"  # the venv's script, not whatever is on PATH
    assert entry["TryExec"] == str(script)

    assert main(["--uninstall-launcher"]) == 0
    assert not desktop.exists() and not svg.exists() and not png.exists()


def test_exec_arguments_are_quoted_as_the_spec_says():
    assert launcher.quote_exec_argument("/usr/bin/invsr-desktop") == "/usr/bin/invsr-desktop"
    assert launcher.quote_exec_argument("/home/me/My Apps/invsr-desktop") == '"/home/me/My Apps/invsr-desktop"'
    assert launcher.quote_exec_argument('/opt/a"b$/x') == '"/opt/a\\"b\\$/x"'
    assert launcher.quote_exec_argument("/opt/100%/x") == "/opt/100%%/x"
    entry = launcher.desktop_entry(["/home/me/My Apps/python", "-m", "invsr_desktop.app.main"])
    assert 'Exec="/home/me/My Apps/python" -m invsr_desktop.app.main %F' in entry


def test_relative_xdg_data_home_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert launcher.data_home() == tmp_path / ".local" / "share"


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="desktop-file-utils is not installed")
def test_the_installed_file_validates(tmp_path):
    (desktop, *_icons) = launcher.install_launcher(tmp_path)
    result = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
