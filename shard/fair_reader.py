"""Gateway readers that share the event loop: each yields it after a few milliseconds of reading.

discord.py reads each shard's websocket in a loop (``Shard.worker`` → ``DiscordWebSocket.poll_event``).
While frames are already buffered, ``poll_event`` returns without ever suspending: aiohttp hands out
buffered frames synchronously. After a stall, or under a burst, one shard can so parse thousands of
events in a single turn of the event loop (every dispatch also schedules its listeners), and for
that whole turn nothing else runs: Redis and PostgreSQL replies, REST responses, heartbeats. Replies
then trickle out while the backlog drains, and every timer around an await times the backlog.

:class:`FairReader` gives each shard's reader a time slice: after ``slice_s`` of reading without a
pause it yields once (``await asyncio.sleep(0)``), so the loop polls its sockets and runs what is
ready before the reader goes on. The events still arrive in order and none is dropped; what
changes is that I/O completions wait at most about one slice behind a backlog.

discord.py's files are not touched: every gateway connection (the first and each reconnect) is
handed to ``ConnectionState._update_references``, which this wraps on the bot's own state to give
the new connection's ``poll_event`` the slice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

if TYPE_CHECKING:
    from discord.ext import commands

__all__ = ("FairReader", "YIELDS")

_log = logging.getLogger(__name__)

YIELDS = Counter("innkeeper_gateway_reader_yields_total",
                 "Times a shard's gateway reader gave the event loop back in the middle of a backlog")


class FairReader:
    """Gives every gateway connection of a bot a reading time slice.

    Parameters
    ----------
    slice_s:
        Seconds a reader may read buffered frames before it yields the event loop once.
    """

    __slots__ = ("slice_s", "yields", "_inc")

    def __init__(self, slice_s: float = 0.002) -> None:
        if slice_s <= 0:
            raise ValueError("slice_s must be positive")
        self.slice_s = slice_s
        #: Yields so far, over every connection.
        self.yields = 0
        self._inc = YIELDS.inc

    def install(self, bot: commands.AutoShardedBot) -> None:
        """Wrap ``bot``'s connection hand-over so that each new gateway connection reads in slices."""
        state = getattr(bot, "_connection", None)
        update = getattr(state, "_update_references", None)
        if state is None or update is None:
            _log.warning("discord.py has no _update_references here: gateway readers read without slices")
            return

        def update_references(ws: Any) -> None:
            update(ws)
            self.wrap(ws)

        state._update_references = update_references

    def wrap(self, ws: Any) -> None:
        """Give the connection ``ws`` (its ``poll_event``) a time slice."""
        poll: Callable[[], Awaitable[None]] = ws.poll_event
        slice_s, clock = self.slice_s, time.perf_counter
        since = [clock()]

        async def poll_event() -> None:
            await poll()
            now = clock()
            if now - since[0] >= slice_s:
                self.yields += 1
                self._inc()
                await asyncio.sleep(0)
                since[0] = clock()

        ws.poll_event = poll_event
