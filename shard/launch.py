"""Launch a cluster's shards one lane per identify bucket, so no shard waits on another bucket's turn.

discord.py's ``AutoShardedClient.launch_shards`` connects a process's shards strictly one after
the other: each ``launch_shard`` awaits connect, HELLO, ``before_identify_hook`` and the IDENTIFY
before the next shard even opens its socket. With the shared identify queue that serialises
buckets that Discord lets run in parallel: at ``max_concurrency`` 16 the 16th shard of a round
identifies only after 15 connects and HELLOs, and every round of the cold start pays that again.

:func:`launch_shards` groups the shards by bucket (``shard_id % max_concurrency``) into lanes
and runs the lanes concurrently. Inside a lane the shards still go one after the other, lowest id
first, as the queue serves them: while one shard's IDENTIFY holds the bucket for a window, the
next one connects and waits for HELLO, so its IDENTIFY goes out the moment the queue grants it,
and no socket sits idle for long before its turn. The identify queue stays the only gate.

:func:`launch_shard` is discord.py's ``launch_shard`` with one change: the connect timeout
(``shard_connect_timeout``, 180 s) is paused while the shard waits in the identify queue
(:meth:`shard.identify.IdentifyGate.connect_deadline`), since a shard of a big bot can wait
longer than that for its turn. Like discord.py it retries a failed connect after 5 s, and it
stores the shard in the client's own table, so reconnects and re-identifies (``Shard.reidentify``
→ ``before_identify_hook``) run through discord.py unchanged.

A shard with a session saved by the process before this one (:mod:`shard.session_keeper`)
RESUMEs instead (:mod:`shard.resume`): no lane, no queue, no identify. If the gateway cannot be
reached it tries again with backoff while the saved session may still be resumed; without a
snapshot to rebuild its guilds from, or once the session's time is up, it joins the identify
path; if Discord refuses the session, discord.py identifies it
again through ``before_identify_hook``, and so through the queue.

Before the first shard connects, :func:`launch_shards` has the gate build its queue
(:meth:`~shard.identify.IdentifyGate.prepare`), with Discord's ``session_start_limit`` when it had
to ask ``GET /gateway/bot`` for the shard count itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import yarl
from discord.gateway import DiscordWebSocket, ReconnectWebSocket
from discord.shard import Shard
from prometheus_client import Counter

from innkeeper.backoff import Backoff

if TYPE_CHECKING:
    from discord.ext import commands

    from ipc.sessions import SessionInfo

    from .identify import IdentifyGate
    from .resume import Resumer

__all__ = ("launch_shards", "launch_shard", "lanes")

_log = logging.getLogger(__name__)

#: discord.py's pause before it retries a shard that failed to connect.
RETRY_DELAY_S = 5.0

RECONNECT_RESUMES = Counter("innkeeper_reconnect_resumes_total",
                            "Reconnects after a failed connection that RESUMEd the shard's session instead of "
                            "identifying from scratch")


def lanes(shard_ids: list[int], max_concurrency: int) -> list[list[int]]:
    """The shards grouped by identify bucket, each lane in ascending shard id, lanes by their first shard."""
    by_bucket: dict[int, list[int]] = {}
    for sid in sorted(shard_ids):
        by_bucket.setdefault(sid % max(1, max_concurrency), []).append(sid)
    return sorted(by_bucket.values(), key=lambda lane: lane[0])


async def launch_shards(bot: commands.AutoShardedBot, gate: IdentifyGate, resumer: Resumer | None = None) -> None:
    """Connect every shard of ``bot``: saved sessions RESUME, the others identify one lane per bucket.

    The same set-up as discord.py's ``launch_shards`` (shard count and gateway, the connection
    state's shard ids), then the gate's queue; then, all at once, the RESUME of every shard with a
    saved session (``resumer``, see :mod:`shard.resume`) and the identify lanes of the others.
    """
    if bot.is_closed():
        return
    limits = None
    if bot.shard_count is None:
        bot.shard_count, gateway_url, limits = await bot.http.get_bot_gateway()
        gateway = yarl.URL(gateway_url)
    else:
        gateway = DiscordWebSocket.DEFAULT_GATEWAY
    bot._connection.shard_count = bot.shard_count
    shard_ids = list(bot.shard_ids or range(bot.shard_count))
    bot._connection.shard_ids = shard_ids
    gate.tracker.expect(shard_ids)
    queue = await gate.prepare(limits)
    saved = await resumer.saved(shard_ids, bot.shard_count) if resumer is not None else {}
    first = shard_ids[0]

    async def resume(info: SessionInfo) -> None:
        assert resumer is not None
        backoff = Backoff(0.5, RETRY_DELAY_S)
        while not bot.is_closed():
            ws = await resumer.connect(bot, info)
            if ws is not None:
                _start(bot, info.shard_id, ws)
                return
            if not resumer.worth_retrying(info):
                break
            await asyncio.sleep(backoff.next())  # the gateway is unreachable: the session outlives a short outage
        # no snapshot, or the session's time is up: the identify queue, as a cold start would
        await launch_shard(bot, gate, gateway, info.shard_id)

    async def lane(ids: list[int]) -> None:
        for sid in ids:
            await launch_shard(bot, gate, gateway, sid, initial=sid == first)

    fresh = [sid for sid in shard_ids if sid not in saved]
    await asyncio.gather(*(resume(info) for info in saved.values()),
                         *(lane(ids) for ids in lanes(fresh, queue.max_concurrency)))


async def launch_shard(bot: commands.AutoShardedBot, gate: IdentifyGate, gateway: yarl.URL, shard_id: int, *,
                       initial: bool = False) -> None:
    """Connect, HELLO, identify (through the queue) and start one shard; retry every 5 s on failure."""
    while True:
        try:
            async with gate.connect_deadline(shard_id, bot.shard_connect_timeout):
                ws = await DiscordWebSocket.from_client(bot, initial=initial, gateway=gateway, shard_id=shard_id)
            break
        except Exception:
            if bot.is_closed():
                return
            _log.exception("Failed to connect for shard_id: %s. Retrying...", shard_id)
            await asyncio.sleep(RETRY_DELAY_S)
            initial = False
    _start(bot, shard_id, ws)


def _start(bot: commands.AutoShardedBot, shard_id: int, ws: DiscordWebSocket) -> None:
    """Hand a connected socket to discord.py's shard worker, as its own launch does."""
    # discord.py keeps its shards in a private table (AutoShardedClient.__shards); reconnects,
    # close() and latencies all read it, so the shard must go there, as discord.py's own launch does.
    shards: dict[int, Shard] = bot._AutoShardedClient__shards  # type: ignore[attr-defined]
    put = bot._AutoShardedClient__queue.put_nowait  # type: ignore[attr-defined]
    shards[shard_id] = shard = ResumingShard(ws, bot, put)
    shard.launch()


class ResumingShard(Shard):
    """discord.py's ``Shard``, except that a reconnect after a failed connection RESUMEs.

    When a connection attempt fails (the gateway unreachable, a 5xx on the upgrade, a timeout),
    discord.py backs off and then ``reconnect()``s from scratch: a new session, one IDENTIFY per
    shard, whereas the session it had is still resumable for Discord's resume window. Through a
    gateway outage every shard would spend identify budget, and lose the events it missed. Here
    ``reconnect()`` resumes the session the shard still holds, through discord.py's own resume path
    (``reidentify`` with ``resume=True``), and keeps doing so with discord.py's backoff until it
    connects or Discord answers INVALID_SESSION, on which discord.py identifies through the queue.
    A session this process closed with 1000 or 1001 (``ShardInfo.reconnect()``, the watchdog's
    second step) is over: that reconnect starts a new one, as discord.py's does.

    discord.py also runs every shard's reconnect inline in the client's one event queue, backoff
    sleeps included: while one shard waits to retry, no other shard even notices it was
    disconnected. Here each shard reconnects in a task of its own (one at a time per shard), so the
    queue moves on, every shard reports its disconnect at once, and all of them retry together.
    """

    _reconnecting: asyncio.Task[None] | None = None

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        if self._reconnecting is not None and not self._reconnecting.done():
            work.close()  # this shard is already reconnecting: that attempt goes on
            return
        self._reconnecting = asyncio.create_task(work, name=f"shard-{self.id}-reconnect")

    def stop_reconnecting(self) -> None:
        """Cancel a reconnect under way (a clean stop: the process is going)."""
        if self._reconnecting is not None and not self._reconnecting.done():
            self._reconnecting.cancel()

    async def reidentify(self, exc: ReconnectWebSocket) -> None:
        self._in_background(super().reidentify(exc))

    async def reconnect(self) -> None:
        ws = self.ws
        if (getattr(ws, "session_id", None) is None or getattr(ws, "sequence", None) is None
                or getattr(ws, "_close_code", None) in (1000, 1001)):
            self._in_background(super().reconnect())
            return
        RECONNECT_RESUMES.inc()
        self._in_background(super().reidentify(ReconnectWebSocket(self.id, resume=True)))

    async def close(self) -> None:
        self.stop_reconnecting()
        await super().close()
