"""cluster.console: progress lines that never raise, and the signals that end a long command."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from cluster.console import Console, stop_signals
from tests.support import wait_for


def test_a_broken_pipe_silences_the_stream_and_the_log_keeps_every_line(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w")
    log = tmp_path / "run" / "logs" / "innkeeper.log"
    console = Console(stream, log_path=log)
    console("first")
    assert os.read(read_fd, 100) == b"first\n"
    os.close(read_fd)  # the reader left (`tee` killed by Ctrl-C)
    console("second")  # EPIPE: no exception
    console("third")
    assert console.broken
    stream.write("more\n")
    stream.flush()  # the descriptor now points at /dev/null: the interpreter's exit flush cannot fail
    stream.close()
    lines = log.read_text().splitlines()
    assert [line.rsplit("] ", 1)[1] for line in lines] == ["first", "second", "third"]
    assert (log.parent.stat().st_mode & 0o777, log.stat().st_mode & 0o777) == (0o700, 0o600)


def test_a_closed_stream_object_never_raises(tmp_path: Path) -> None:
    stream = (tmp_path / "out").open("w")
    stream.close()  # writes raise ValueError
    console = Console(stream)
    console("line")
    assert console.broken


async def test_stop_signals_call_back_and_keep_an_inherited_ignore() -> None:
    got: list[signal.Signals] = []
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # even in a job started in the background
    try:
        with stop_signals(got.append) as handled:
            assert signal.SIGHUP not in handled and {signal.SIGINT, signal.SIGTERM} <= set(handled)
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing happens
            await wait_for(lambda: got, timeout=5, message="the SIGTERM callback")
        assert got == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
        signal.signal(signal.SIGINT, previous_int)
