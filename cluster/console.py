"""What the ``innkeeper`` CLI tells its operator, and the signals that end a long-running command.

Shutdown must never depend on the terminal. ``innkeeper demo | tee demo.log`` then Ctrl-C kills
``tee`` first, so the next progress line meets a broken pipe; a closed terminal (SSH dropped) turns
every write into ``EIO`` and sends ``SIGHUP``. A plain ``print`` raises there, and the exception
would end the command before it stops what it started.

* :class:`Console` writes progress lines that never raise: once its stream breaks it silences that
  stream (the file descriptor is pointed at ``/dev/null``, so the interpreter's last flush cannot
  fail either) and goes on writing to its log file alone (``run/logs/innkeeper.log``), which keeps
  every line with a timestamp whatever happened to the terminal.
* :func:`stop_signals` routes SIGINT, SIGTERM and SIGHUP to one callback of the running event loop,
  so a long command (``demo``, ``launch``) decides itself what a signal means. A signal the command
  was started with ignored (``nohup``, a background job of a non-interactive shell) stays ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

__all__ = ("Console", "stop_signals", "silence", "STOP_SIGNALS", "CLI_LOG")

_log = logging.getLogger(__name__)

#: The signals that end ``innkeeper demo`` and interrupt ``innkeeper launch``.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The CLI's own log under the run directory: every progress line of launch, demo, stop, restart, reshard.
CLI_LOG = Path("logs") / "innkeeper.log"


def silence(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at ``/dev/null``: later writes (and the exit flush) succeed, unseen."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    except OSError:
        pass
    finally:
        os.close(devnull)


class Console:
    """A ``print`` for progress lines that never raises.

    Parameters
    ----------
    stream:
        Where lines go first; ``None`` is :data:`sys.stdout` at the time of each write.
    log_path:
        A file that receives every line too, with a UTC timestamp (created 0600 with its directory).
        It keeps the record when the terminal is gone. ``None``: no file.
    """

    __slots__ = ("_stream", "log_path", "broken")

    def __init__(self, stream: TextIO | None = None, *, log_path: Path | None = None) -> None:
        self._stream = stream
        self.log_path = log_path
        #: True once the stream failed (broken pipe, closed terminal): later lines go to the log only.
        self.broken = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def __call__(self, line: str) -> None:
        self._to_log(line)
        if self.broken:
            return
        stream = self.stream
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:  # EPIPE, EIO, or a closed file object
            self.broken = True
            silence(stream)
            _log.info("the terminal is gone (%s): progress goes to %s only", type(exc).__name__,
                      self.log_path or "nowhere")

    def _to_log(self, line: str) -> None:
        if self.log_path is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            _private_dirs(self.log_path.parent)
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as fh:
                fh.write(f"{stamp} [{os.getpid()}] {line}\n")
        except OSError as exc:  # a full or read-only disk must not stop a shutdown either
            _log.debug("cannot append to %s: %s", self.log_path, exc)


def _private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parent with mode 0700 (the run directory's mode)."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)


@contextlib.contextmanager
def stop_signals(callback: Callable[[signal.Signals], None]) -> Iterator[tuple[signal.Signals, ...]]:
    """Call ``callback(signal)`` from the running event loop on SIGINT, SIGTERM and SIGHUP, inside the block.

    SIGINT and SIGHUP keep an inherited ``SIG_IGN`` (``nohup``, ``&`` in a script): the operator
    asked that they not end the command. Yields the signals handled.
    """
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in STOP_SIGNALS:
        if sig != signal.SIGTERM and signal.getsignal(sig) == signal.SIG_IGN:
            continue
        loop.add_signal_handler(sig, callback, sig)
        installed.append(sig)
    try:
        yield tuple(installed)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
