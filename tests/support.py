"""Helpers shared by the tests: waiting on conditions, ports, service checks, a private Redis.

Ports: nothing here guesses a free port and hands the number to someone else to bind later (another
test, running in parallel, could bind it in between). Processes bind port 0 and report the port they
got (a port file, a log line, a heartbeat); a test that needs a port of its own holds it, bound, for
as long as it needs it (:class:`ReservedPort`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

if TYPE_CHECKING:
    from ipc.signing import FrameSigner

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: argv of the ``innkeeper`` command as this interpreter runs it.
INNKEEPER_CLI = (sys.executable, "-m", "cluster.innkeeper_cli")
PG_ADMIN_DSN = os.environ.get("INNKEEPER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("INNKEEPER_TEST_REDIS", "redis://127.0.0.1:6379/0")


#: ``INNKEEPER_IPC_KEYS`` of every process a test starts: the public development key.
IPC_KEYS = "dev"
#: The environment of a CLI run against a test's deployment: the public ``dev`` keys, which are only
#: accepted while Discord is a local simulator (``DISCORD_API_URL`` on loopback; nothing needs to listen).
DEV_CLI_ENV = {"INNKEEPER_IPC_KEYS": IPC_KEYS, "DISCORD_API_URL": "http://127.0.0.1:9"}


def ipc_signer(max_age_s: float = 30.0) -> FrameSigner:
    """A bus signer holding :data:`IPC_KEYS`, as every cluster a test starts does."""
    from ipc.signing import FrameSigner

    return FrameSigner.parse([IPC_KEYS], max_age_s=max_age_s, allow_dev=True)


def as_from_a_terminal() -> None:
    """``preexec_fn`` for a command a test signals as a user at a terminal would: SIGINT and SIGHUP back to
    their defaults, even when the test run itself inherited them ignored (a CI job started in the
    background, or under ``nohup``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def service_missing(name: str, why: object) -> None:
    """Fail under CI, skip elsewhere: a test that needs a service must not pass silently in CI."""
    message = f"{name} is not reachable: {why}"
    if IN_CI:
        pytest.fail(message + " (CI=true: services are required)")
    pytest.skip(message)


# --- waiting --------------------------------------------------------------------------------------


async def wait_for(
    predicate: Callable[[], Awaitable[T] | T], *, timeout: float = 10.0, interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    A falsy result means "not yet": the predicate is asked again after ``interval`` seconds, and the
    test fails after ``timeout`` seconds. Anything the predicate raises (an ``AssertionError``
    included) fails the test at once: a predicate asserts what must hold while it waits.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={result!r}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running_client(client: Any, token: str, *, what: str = "the client",
                         timeout: float = 60.0) -> AsyncIterator[asyncio.Task[None]]:
    """Start a discord.py client, wait until it is READY (failing at once if it crashes), close it after.

    Yields the client's task, for predicates that must notice a crash while they wait.
    """
    task: asyncio.Task[None] = asyncio.create_task(client.start(token))
    try:
        def ready() -> bool:
            if task.done():
                task.result()
            return bool(client.is_ready())

        await wait_for(ready, timeout=timeout, message=f"{what} to be READY")
        yield task
    finally:
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


def wait_for_sync(predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05,
                  message: str = "condition") -> T:
    """Blocking variant of :func:`wait_for` (same rules: falsy is "not yet", an exception fails at once)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={result!r}")
        time.sleep(interval)


class ManualClock:
    """A monotonic clock a test moves by hand (``clock.advance(3.5)``), for code that takes a ``clock``.

    It starts near the real ``time.monotonic()``, at a whole second: whole-second steps then add up
    exactly, so a test that steps to a boundary (a window of 600 s) lands on it, not a rounding
    error away.
    """

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = float(int(time.monotonic()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def read_port(path: Path) -> int | None:
    """The port a process wrote to ``path`` (``--port-file``, ``status.port``), or ``None`` while it has not."""
    from innkeeper.port_files import read_port_file

    return read_port_file(path)


def view_listening(client: object, custom_id: str) -> bool:
    """Whether an in-process discord.py client has the view or modal with ``custom_id`` registered.

    discord.py registers a view or modal only once the HTTP call that showed it has returned, so a
    click sent as soon as the simulator reports the callback can arrive before it: the click would be
    dropped. Tests wait on this before they click.
    """
    store = client._connection._view_store  # type: ignore[attr-defined]
    if custom_id in store._modals:
        return True
    return any(cid == custom_id for items in store._views.values() for (_, cid) in items)


# --- ports ----------------------------------------------------------------------------------------


class ReservedPort:
    """A TCP port on 127.0.0.1 that this test holds until :meth:`close`.

    A socket bound to port 0 (with ``SO_REUSEPORT``) and never listening holds the port: no other
    process can bind it, and connections to it are refused. :meth:`listen` opens a listening socket
    on the same port for a server of this test; when that server closes it, connections are refused
    again, and :meth:`listen` can open it again: the port never goes back to the pool meanwhile.
    """

    __slots__ = ("_holder", "port")

    def __init__(self) -> None:
        self._holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._holder.bind(("127.0.0.1", 0))
        self.port = int(self._holder.getsockname()[1])

    def listen(self, backlog: int = 100) -> socket.socket:
        """A new non-blocking socket listening on the port (for ``asyncio.start_server(sock=...)``)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(backlog)
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        self._holder.close()

    def __enter__(self) -> ReservedPort:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# --- a TCP proxy in front of PostgreSQL -----------------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


class PgProxy:
    """A TCP proxy in front of PostgreSQL that can be stopped (server "down") and started again.

    Its port is held for the whole test (:class:`ReservedPort`): while stopped, connections to it
    are refused, and nobody else can take it before it starts again.
    """

    def __init__(self, database_url: str) -> None:
        self.target = urlsplit(database_url)
        self.reserved = ReservedPort()
        self.port = self.reserved.port
        self.url = urlunsplit(self.target._replace(netloc=f"{self.target.username}@127.0.0.1:{self.port}"))
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.target.hostname, self.target.port or 5432)
        for task in (asyncio.create_task(_pipe(reader, up_writer)), asyncio.create_task(_pipe(up_reader, writer))):
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, sock=self.reserved.listen())

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None


# --- a private redis-server -----------------------------------------------------------------------


class PrivateRedis:
    """A ``redis-server`` owned by one test (no persistence), killed and started again by the test.

    It listens on a unix socket only (``--port 0``), in a directory of its own: nothing to guess,
    and it comes back at the same address after a kill.
    """

    def __init__(self, log: Path | None = None) -> None:
        # Unix socket paths are limited to ~107 bytes: a short directory under the system tmp dir.
        self.dir = Path(tempfile.mkdtemp(prefix="ikr-"))
        self.socket = self.dir / "redis.sock"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        # A host part keeps innkeeper's URL check happy (it wants a netloc); redis-py uses the path.
        return f"unix://localhost{self.socket}?db=0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            service_missing("redis-server", "the binary is not on PATH")
        assert binary is not None
        argv = [binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with self.log.open("ab") as fh:
                self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)  # noqa: S603 - fixed argv
        else:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        import redis

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, \
                f"redis-server exited: {self.log.read_text() if self.log else ''}"
            try:
                with redis.Redis(unix_socket_path=str(self.socket), socket_timeout=0.5) as client:
                    return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_for_sync(up, timeout=15, message="the private redis-server answering")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
