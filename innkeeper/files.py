"""Files that hold secrets or personal data: created private, never widened and narrowed later.

Backups, their sidecars and user exports are created with mode 0600 in directories created with
mode 0700. The mode is given when the file or directory is created (``os.open``, ``mkstemp``,
``mkdir(mode=...)``), so there is no moment at which another local user could open them; nothing
here calls ``chmod`` on a file that already holds data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path

__all__ = ("FILE_MODE", "DIR_MODE", "private_dir", "create_private", "write_private")

_log = logging.getLogger(__name__)

#: Mode of every private file.
FILE_MODE = 0o600
#: Mode of every directory created to hold private files.
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` and every missing parent with mode 0700; an existing directory is kept as it is.

    An existing directory that other users can read or enter is logged as a warning: the files in
    it are still private (0600), but their names are not.
    """
    missing = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # created meanwhile by someone else: judged below
            directory.mkdir(mode=DIR_MODE)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        _log.warning("%s is accessible to other users (mode %o); private files in it keep mode 0600, "
                     "but consider chmod 700", path, mode)
    return path


def create_private(path: Path) -> int:
    """Create ``path`` exclusively with mode 0600 and return a file descriptor open for writing.

    Raises
    ------
    FileExistsError
        When ``path`` exists (also as a symlink: it is never followed).
    """
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                   FILE_MODE)


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically, as a new file with mode 0600.

    The data goes to a temporary file created 0600 beside ``path`` (``mkstemp``), which then
    replaces ``path``: readers see the old file or the whole new one, and an existing file with a
    wider mode is replaced, not reused. Missing parent directories are created 0700.
    """
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
