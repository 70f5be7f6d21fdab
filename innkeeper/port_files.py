"""Port files: how a process that bound port 0 tells others the port it got.

The simulator (``--port-file``) and the status service (``run/status.port``) bind port 0 when asked
to, so tests and demos never guess a free port that someone else may take first. Once listening,
each writes its port to a file (atomically: a reader sees no file or the whole number) and removes
it on a clean stop, unless a process that replaced it has written its own port there since.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ("write_port_file", "read_port_file", "remove_port_file")


def write_port_file(path: Path, port: int) -> None:
    """Write ``port`` (and a newline) to ``path`` atomically, creating its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{port}\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_port_file(path: Path) -> int | None:
    """The port written to ``path``, or ``None`` while there is none."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def remove_port_file(path: Path, port: int) -> None:
    """Remove ``path`` if it still holds ``port`` (not the port of a process that replaced ours)."""
    if read_port_file(path) == port:
        with contextlib.suppress(OSError):
            Path(path).unlink()
