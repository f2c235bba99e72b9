"""`gyre-stack logs [NAME]`: the end of each component's log, or of one."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from gyre_stack.components import BROKER, POSTGRES
from gyre_stack.errors import StackError
from gyre_stack.logtail import tail
from gyre_stack.settings import StackSettings
from gyre_stack.state import StateFolder


def log_files(folder: StateFolder) -> dict[str, Path]:
    """Every log in the state folder by component name: broker, postgres, then services by name."""
    if not folder.logs_dir.is_dir():
        return {}
    found = {path.stem: path for path in folder.logs_dir.glob("*.log")}
    first = [name for name in (BROKER, POSTGRES) if name in found]
    rest = sorted(name for name in found if name not in first)
    return {name: found[name] for name in [*first, *rest]}


def logs(settings: StackSettings, out: TextIO, name: str | None = None, lines: int = 50) -> int:
    """Print the last ``lines`` lines of the log of ``name``, or of every log with a header each.

    Raises:
        StackError: ``name`` has no log (the known names are listed).
    """
    folder = StateFolder(settings.home_dir)
    files = log_files(folder)
    if name:
        if name not in files:
            known = ", ".join(files) or "none yet"
            raise StackError(f"no log named {name!r} in {folder.logs_dir} (known: {known})")
        print(tail(files[name], lines), file=out)
        return 0
    if not files:
        print(f"No logs yet in {folder.logs_dir}.", file=out)
        return 0
    for index, (component, path) in enumerate(files.items()):
        print(f"{'' if index == 0 else chr(10)}==> {component} ({path}) <==", file=out)
        text = tail(path, lines)
        if text:
            print(text, file=out)
    return 0
