"""``innkeeper demo``: the simulator, migrations and the clusters, all under supervisord, on one machine.

The simulator runs under supervisord too (``run/simulator.conf``), with a scaled identify window so
a demo starts in seconds, and the clusters are launched against it exactly as ``innkeeper launch``
would launch them against Discord. Ctrl-C, SIGTERM or a closed terminal (SIGHUP) stops everything,
supervisord included, whatever became of stdout (:mod:`cluster.console`).

The demo keeps to itself: it uses a database of its own on the configured server
(``DATABASE_URL``'s name plus ``_demo``: :func:`demo_database_url`), never the configured one, and
without configured keys it encrypts with the public development key (``dev``), which is accepted
only because its clusters talk to the local simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from innkeeper.errors import ErrorCode, InnkeeperError
from innkeeper.settings import Settings

from .console import CLI_LOG, Console, stop_signals
from .launcher import Launcher
from .render import SIMULATOR_PORT_FILE, SimulatorSpec, render_simulator, write_private
from .state import health, read_status

__all__ = ("DemoOptions", "run_demo", "demo_settings", "demo_database_url")

_SIM_TOKEN = "demo-token"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """The demo's shape; the defaults suit a 2-core machine."""

    guilds: int = 2000
    shards: int = 8
    clusters: int = 2
    max_concurrency: int = 4
    identify_window: float = 0.5
    #: The simulator's port: ``None`` is 8765 when free (else a free one), 0 lets the simulator bind any
    #: free port and report it (``run/simulator.port``).
    port: int | None = None
    detach: bool = False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_database_url(database_url: str) -> str:
    """The demo's own database on the configured server: the configured name plus ``_demo``."""
    from db.migrate import database_name, maintenance_dsn

    name = database_name(database_url)
    return database_url if name.endswith("_demo") else maintenance_dsn(database_url, f"{name}_demo")


def demo_settings(settings: Settings, options: DemoOptions, port: int) -> Settings:
    """The settings the demo's clusters run with: pointed at the simulator, with its token and window.

    They use the demo's own database (:func:`demo_database_url`), so the demo's simulated users and
    the development key never reach the configured database.
    """
    # Without a key, feedback, reminders and privacy export stay off, and the bus cannot sign; the demo
    # uses the public development keys (``dev``) unless the operator set real ones. The encryption
    # key ``dev`` is accepted because these settings point DISCORD_API_URL at the local simulator.
    keys = settings.encryption_keys or ("dev",)
    ipc_keys = settings.ipc_keys or ("dev",)
    return dataclasses.replace(settings, api_url=f"http://127.0.0.1:{port}", discord_token=_SIM_TOKEN,
                               identify_window_s=options.identify_window, encryption_keys=keys, ipc_keys=ipc_keys,
                               database_url=demo_database_url(settings.database_url))


async def _wait_simulator(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            try:
                async with session.get(f"{url}/_sim/stats") as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise InnkeeperError(f"the simulator did not answer on {url} within {timeout:.0f} s "
                                     "(see run/logs/simulator.log)", code=ErrorCode.CLUSTER_UNHEALTHY)
            await asyncio.sleep(0.2)


async def _bound_port(launcher: Launcher, timeout: float = 30.0) -> int:
    """The port the demo's simulator bound (``--port 0``): its port file, written after its process started."""
    path = launcher.run_dir / SIMULATOR_PORT_FILE
    deadline = time.monotonic() + timeout
    while True:
        info = await launcher.supervisor.process("simulator")
        started = float(info.get("start") or 0)
        with contextlib.suppress(OSError, ValueError):
            if info.get("statename") in ("STARTING", "RUNNING") and path.stat().st_mtime >= started:
                return int(path.read_text().strip())
        if time.monotonic() > deadline:
            raise InnkeeperError(f"the simulator did not report its port in {path} within {timeout:.0f} s "
                                 "(see run/logs/simulator.log)", code=ErrorCode.CLUSTER_UNHEALTHY)
        await asyncio.sleep(0.1)


async def _migrate(settings: Settings, out: Callable[[str], None]) -> None:
    from db.migrate import migrate

    report = await migrate(settings.database_url)
    out(f"migrations: schema at version {report.version_after}"
        + (f" ({len(report.applied)} applied)" if report.applied else " (up to date)"))


async def _try_it(url: str, out: Callable[[str], None]) -> None:
    """Print a command that sends ``/ping`` to the bot through the simulator."""
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.get(f"{url}/_sim/world?limit=1") as resp):
        guild = (await resp.json())["guilds"][0]
    body = json.dumps({"guild_id": guild["id"], "channel_id": guild["channels"][0],
                       "user_id": guild["members"][0], "name": "ping"})
    out(f"try a command: curl -s -X POST {url}/_sim/interactions -H 'Content-Type: application/json' -d '{body}'")
    prefix_body = json.dumps({"guild_id": guild["id"], "channel_id": guild["channels"][0],
                              "author_id": guild["members"][0], "content": "!help"})
    out(f"or a prefix command: curl -s -X POST {url}/_sim/messages -H 'Content-Type: application/json' "
        f"-d '{prefix_body}'")


async def _watch(launcher: Launcher, stop: asyncio.Event) -> None:
    """While the demo runs, print a line whenever the cluster's health changes."""
    last = ""
    async with launcher.redis() as client:
        while not stop.is_set():
            plan, doc = await read_status(client, launcher.keys, stale_after_s=launcher.stale_after_s)
            h = health(doc, plan)
            line = f"{h.ready}/{h.expected} shards READY" + ("" if h.ok else f"; {'; '.join(h.problems[:3])}")
            if line != last:
                launcher.out(line)
                last = line
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2.0)


async def run_demo(settings: Settings, options: DemoOptions, *, out: Callable[[str], None] | None = None) -> int:
    """Run the demo until SIGINT (Ctrl-C), SIGTERM or SIGHUP (a closed terminal), then stop everything it started.

    With ``detach`` it returns once every shard is READY and leaves everything running, saying so.
    ``out`` receives the progress lines; by default a :class:`~cluster.console.Console` on stdout
    that keeps them in ``run/logs/innkeeper.log`` too and never raises, so a broken pipe or a gone
    terminal cannot keep the demo from stopping supervisord, the clusters and the simulator.
    """
    port = options.port if options.port is not None else (8765 if _port_free(8765) else _free_port())
    demo = demo_settings(settings, options, port)
    if out is None:
        out = Console(log_path=demo.run_dir.resolve() / CLI_LOG)
    launcher = Launcher(demo, out=out)
    sim = SimulatorSpec(port=port, guilds=options.guilds, shards=options.shards,
                        max_concurrency=options.max_concurrency, identify_window=options.identify_window,
                        token=_SIM_TOKEN)
    stop = asyncio.Event()
    said: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            out(f"{sig.name}: already stopping everything; it ends on its own (the clusters get up to "
                f"{launcher.policy.stopwaitsecs} s to close their sessions)")
            return
        said.append(sig)
        stop.set()

    async def bring_up() -> None:
        nonlocal port, demo
        write_private(launcher.run_dir / "simulator.conf", render_simulator(sim, demo))
        await launcher.ensure_supervisord()
        await launcher.supervisor.apply()
        if port == 0:  # the simulator bound a free port: point the clusters at the one it got
            port = await _bound_port(launcher)
            launcher.settings = demo = demo_settings(settings, options, port)
        out(f"simulator: {options.guilds} guilds on http://127.0.0.1:{port} (identify window "
            f"{options.identify_window:g} s, max_concurrency {options.max_concurrency})")
        await _wait_simulator(demo.api_url or "")
        await _migrate(demo, out)
        await launcher.launch(shards=options.shards, clusters=options.clusters)

    with stop_signals(on_signal):
        try:
            # A signal during start-up stops it where it is (everything started so far is stopped below).
            up = asyncio.create_task(bring_up())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({up, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not up.done():
                up.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await up
            else:
                up.result()
                if options.detach and not stop.is_set():
                    out("detached: everything keeps running under supervisord; `innkeeper stop` stops it")
                    return 0
                if not stop.is_set():
                    with contextlib.suppress(aiohttp.ClientError, KeyError, IndexError, TimeoutError):
                        await _try_it(demo.api_url or "", out)
                    out("press Ctrl-C to stop")
                    await _watch(launcher, stop)
        except BaseException as exc:
            out(f"stopping everything after an error ({type(exc).__name__})")
            await launcher.stop()
            raise
        why = f" ({said[0].name})" if said else ""
        out(f"stopping the clusters, the simulator and supervisord{why}")
        await launcher.stop()
        out("stopped")
    return 0
