"""Neither onnxruntime nor onnxruntime-gpu installed: both front ends say which extra to install and stop."""

from __future__ import annotations

import sys

import pytest

from invsr_desktop import cli


@pytest.fixture()
def no_onnxruntime(monkeypatch):
    """`import onnxruntime` fails exactly as it does when the package is absent (None in sys.modules)."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)


def test_cli_names_both_extras(no_onnxruntime, capsys, tmp_path):
    assert cli.main([str(tmp_path)]) == cli.EXIT_NO_ORT
    err = capsys.readouterr().err
    assert "invsr-desktop[cpu]" in err and "invsr-desktop[gpu]" in err and "Never both" in err


def test_gui_shows_a_dialog_and_exits(no_onnxruntime, qapp, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from invsr_desktop.app import main as app_main

    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text: shown.append((title, text)))
    assert app_main.onnxruntime_present() is False
    assert shown and "invsr-desktop[cpu]" in shown[0][1] and "invsr-desktop[gpu]" in shown[0][1]
