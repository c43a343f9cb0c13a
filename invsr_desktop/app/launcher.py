"""Per-user desktop integration: ``invsr-desktop --install-launcher`` / ``--uninstall-launcher``.

Follows the freedesktop.org specs: the ``.desktop`` file goes to ``$XDG_DATA_HOME/applications`` and the icon to
``$XDG_DATA_HOME/icons/hicolor/<size>/apps``. ``Exec`` names the absolute path of the installed ``invsr-desktop``
script, because a menu launched by the session does not see the virtual environment's ``PATH``. Nothing here
needs Qt: it only copies files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from invsr_desktop.app import DESKTOP_ID
from invsr_desktop.resources import ICONS, ROOT

DESKTOP_TEMPLATE = ROOT / f"{DESKTOP_ID}.desktop"
ICON_FILES = {  # resource file -> where it goes under the hicolor theme
    ICONS / f"{DESKTOP_ID}.svg": Path("scalable/apps") / f"{DESKTOP_ID}.svg",
    ICONS / f"{DESKTOP_ID}.png": Path("256x256/apps") / f"{DESKTOP_ID}.png",
}
_EXEC_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def data_home() -> Path:
    """``$XDG_DATA_HOME``, or ``~/.local/share`` when it is unset or not absolute (as the spec says)."""
    value = os.environ.get("XDG_DATA_HOME", "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / ".local" / "share"


def installed_command() -> list[str]:
    """The command that starts the app: the ``invsr-desktop`` script next to this Python, else on PATH, else
    ``python -m invsr_desktop.app.main`` with this interpreter."""
    beside = Path(sys.executable).parent / DESKTOP_ID
    if beside.is_file():
        return [str(beside.absolute())]
    found = shutil.which(DESKTOP_ID)
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "invsr_desktop.app.main"]


def quote_exec_argument(argument: str) -> str:
    """Quote one ``Exec`` argument as the Desktop Entry spec requires (double quotes, escaped specials)."""
    if not any(ch in _EXEC_RESERVED for ch in argument):
        return argument.replace("%", "%%")
    escaped = "".join("\\" + ch if ch in '"`$\\' else ch for ch in argument).replace("%", "%%")
    return f'"{escaped}"'


def desktop_entry(command: list[str]) -> str:
    """The bundled ``.desktop`` file with ``Exec`` and ``TryExec`` pointing at ``command``."""
    lines = []
    for line in DESKTOP_TEMPLATE.read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec="):
            line = "Exec=" + " ".join(quote_exec_argument(part) for part in command) + " %F"
        elif line.startswith("TryExec="):
            line = f"TryExec={command[0]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def launcher_paths(base: Path | None = None) -> list[Path]:
    """Every file the installer writes, under ``base`` (default: the XDG data home)."""
    base = base or data_home()
    return [base / "applications" / f"{DESKTOP_ID}.desktop"] + [
        base / "icons" / "hicolor" / rel for rel in ICON_FILES.values()
    ]


def install_launcher(base: Path | None = None, command: list[str] | None = None) -> list[Path]:
    """Write the launcher and icons for this user; returns the files written."""
    base = base or data_home()
    desktop, *icons = launcher_paths(base)
    desktop.parent.mkdir(parents=True, exist_ok=True)
    desktop.write_text(desktop_entry(command or installed_command()), encoding="utf-8")
    desktop.chmod(0o755)  # some desktops only trust executable launchers
    for source, target in zip(ICON_FILES, icons, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    _refresh_caches(base)
    return [desktop, *icons]


def uninstall_launcher(base: Path | None = None) -> list[Path]:
    """Remove what :func:`install_launcher` wrote; returns the files that were removed."""
    base = base or data_home()
    removed = []
    for path in launcher_paths(base):
        if path.exists():
            path.unlink()
            removed.append(path)
    _refresh_caches(base)
    return removed


def _refresh_caches(base: Path) -> None:
    """Let the desktop notice at once (MIME associations, icon cache); harmless where the tools are missing."""
    for tool, arguments in (("update-desktop-database", [str(base / "applications")]),
                            ("gtk-update-icon-cache", ["-q", "-t", str(base / "icons" / "hicolor")])):  # fmt: skip
        executable = shutil.which(tool)
        if executable and Path(arguments[-1]).is_dir():
            subprocess.run([executable, *arguments], check=False, capture_output=True, timeout=30)
