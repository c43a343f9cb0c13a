"""The house rules on imports, checked on the source with ``ast`` (every import, at any depth: a lazy import inside
a function counts too, since it runs in the same process).

- the engine (``invsr_desktop`` outside ``app/``) imports neither Qt, torch, ``plugins``, ``model_export`` nor the app;
- only ``invsr_desktop/app`` imports Qt;
- only ``model_export`` imports torch;
- ``plugins`` import neither torch, Qt nor the app.

import-linter (napari's choice) does the same from a config file; an ``ast`` walk needs no extra dependency and
sees imports inside functions, which is where this project keeps its optional ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QT = ("PySide6", "shiboken6")
TORCH = ("torch", "torchvision")

# (area, files, forbidden top-level modules or module prefixes)
RULES = [
    ("the engine", lambda p: p.is_relative_to(ROOT / "invsr_desktop") and not p.is_relative_to(ROOT / "invsr_desktop/app"),
     QT + TORCH + ("plugins", "model_export", "invsr_desktop.app")),
    ("the app", lambda p: p.is_relative_to(ROOT / "invsr_desktop/app"), TORCH + ("model_export",)),
    ("plugins", lambda p: p.is_relative_to(ROOT / "plugins"), QT + TORCH + ("invsr_desktop.app", "model_export")),
    ("model_export", lambda p: p.is_relative_to(ROOT / "model_export"), QT + ("invsr_desktop.app",)),
]  # fmt: skip


def imported_modules(source: str) -> set[str]:
    """Every absolute module name an import statement in ``source`` names (relative imports stay inside)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def violations(path: Path, source: str) -> list[str]:
    found = []
    for area, owns, forbidden in RULES:
        if not owns(path):
            continue
        for name in sorted(imported_modules(source)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)}: {area} must not import {name}")
    return found


def project_files() -> list[Path]:
    return sorted(p for d in ("invsr_desktop", "plugins", "model_export") for p in (ROOT / d).rglob("*.py"))


def test_the_tree_keeps_the_house_rules():
    problems = [v for path in project_files() for v in violations(path, path.read_text(encoding="utf-8"))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path, line", [
    ("invsr_desktop/engine/tiling.py", "import torch"),
    ("invsr_desktop/engine/jobs.py", "from PySide6.QtCore import QObject"),
    ("invsr_desktop/engine/pipeline.py", "def f():\n    from plugins.bicubic import build"),
    ("invsr_desktop/cli.py", "from invsr_desktop.app.main_window import MainWindow"),
    ("plugins/esrgan/__init__.py", "import torch.nn"),
    ("model_export/evaluate.py", "from PySide6 import QtWidgets"),
])  # fmt: skip
def test_a_deliberately_added_import_is_caught(path, line):
    file = ROOT / path
    assert not violations(file, file.read_text(encoding="utf-8"))
    assert violations(file, file.read_text(encoding="utf-8") + "\n" + line + "\n")


def test_every_error_the_project_raises_on_purpose_shares_one_base():
    """The GUI and the CLI catch :class:`InvsrError` and show its message: an error class outside it would reach the
    user as a traceback. Every ``*Error`` class defined in the project derives from it."""
    import importlib

    from invsr_desktop.engine.errors import InvsrError

    outside = []
    for path in project_files():
        if "/app/" in path.as_posix():
            continue  # Qt; its errors (none today) would be checked by the app's own tests
        classes = [n.name for n in ast.parse(path.read_text(encoding="utf-8")).body
                   if isinstance(n, ast.ClassDef) and n.name.endswith("Error")]  # fmt: skip
        if classes:
            module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"))
            outside += [f"{module.__name__}.{c}" for c in classes if not issubclass(getattr(module, c), InvsrError)]
    assert not outside, f"not under InvsrError: {outside}"
