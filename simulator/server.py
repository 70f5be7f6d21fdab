"""Assemble and run the simulator: one aiohttp app serving the gateway, REST and the control API.

- :func:`create_app` builds the world, the gateway hub and the shared :class:`~simulator.state.SimState`
  and registers every route.
- :func:`run_simulator` serves until cancelled or SIGINT/SIGTERM, then closes every socket cleanly;
  with ``port=0`` it binds a free port and can write the port it got to a file (``--port-file``).
- :class:`SimulatorServer` is the same server as an async context manager for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from aiohttp import web

from innkeeper.port_files import remove_port_file, write_port_file

from . import control, rest
from .application import Application
from .config import SimConfig
from .gateway import GATEWAY_PATH, GATEWAY_RESUME_PATH, Gateway
from .state import STATE_KEY, SimState, Stats
from .world import World

__all__ = ("create_app", "run_simulator", "SimulatorServer", "listening_line")

_log = logging.getLogger(__name__)


def create_app(config: SimConfig, *, clock: Callable[[], float] = time.monotonic) -> web.Application:
    """The simulator's aiohttp application for ``config`` (state under :data:`~simulator.state.STATE_KEY`).

    ``clock`` (monotonic seconds) drives the identify limits, resume TTLs, interaction deadlines
    and the invalid-request ban; tests inject one to move time without sleeping.
    """
    world = World(config)
    stats = Stats()
    application = Application.from_config(config)
    gateway = Gateway(config, world, stats, clock, application)
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[STATE_KEY] = SimState(config=config, world=world, gateway=gateway, stats=stats, application=application,
                              clock=clock)
    # The websocket also answers on the trailing-slash form discord.py's default URL has, and on
    # READY's resume_gateway_url.
    for path in (GATEWAY_PATH, GATEWAY_PATH + "/", GATEWAY_RESUME_PATH, GATEWAY_RESUME_PATH + "/"):
        app.router.add_get(path, gateway.handle)
    rest.setup(app)
    control.setup(app)

    async def close_sockets(_app: web.Application) -> None:
        await gateway.close_all()

    app.on_shutdown.append(close_sockets)
    return app


def listening_line(config: SimConfig) -> str:
    """The one line printed once the simulator listens."""
    return (f"simulator listening on {config.base_url} (guilds={config.guilds}, shards={config.shards}, "
            f"max_concurrency={config.max_concurrency}, identify_window={config.identify_window}s)")


class SimulatorServer:
    """A simulator on a real port inside the running event loop.

    Parameters
    ----------
    config:
        The settings; ``port=0`` picks a free port (``.url`` and ``.config`` then carry the real one).
    clock:
        Monotonic seconds for every deadline and limit (see :func:`create_app`); injectable for tests.

    Examples
    --------
    >>> async with SimulatorServer(SimConfig(port=0, guilds=10)) as sim:  # doctest: +SKIP
    ...     print(sim.url, sim.state.stats.identifies)
    """

    def __init__(self, config: SimConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://host:port``: REST is under ``/api/v10``, the gateway at ``ws://host:port/gateway``."""
        return self.config.base_url

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.config.host}:{self.config.port}{GATEWAY_PATH}"

    @property
    def resume_gateway_url(self) -> str:
        """READY's ``resume_gateway_url``: where a client should RESUME."""
        return f"ws://{self.config.host}:{self.config.port}{GATEWAY_RESUME_PATH}"

    @property
    def state(self) -> SimState:
        if self.app is None:
            raise RuntimeError("the simulator is not running")
        return self.app[STATE_KEY]

    async def start(self) -> None:
        self.app = create_app(self.config, clock=self.clock)
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        if self.config.port == 0:
            # The kernel picked the port when the socket was bound: no window for another process
            # to take it. The world keeps the config it was built with; only the address changes.
            port = int(self._runner.addresses[0][1])
            self.config = dataclasses.replace(self.config, port=port)
            self.app[STATE_KEY].config = self.config

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


async def run_simulator(config: SimConfig, *, announce: bool = True, port_file: Path | None = None) -> None:
    """Serve ``config`` until cancelled or until SIGINT/SIGTERM; then close every socket and return.

    With ``port_file`` the port actually bound (the one the kernel picked for ``port=0``) is
    written there once the simulator listens, and the file is removed again when it stops.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    server = SimulatorServer(config)
    wrote = False
    try:
        await server.start()
        if port_file is not None:
            write_port_file(port_file, server.config.port)
            wrote = True
        if announce:
            print(listening_line(server.config), flush=True)
        _log.info("simulator listening on %s", server.url)
        await stop.wait()
        _log.info("simulator stopping")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.stop()
        if wrote and port_file is not None:
            remove_port_file(port_file, server.config.port)
