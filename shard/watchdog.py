"""The per-shard watchdog: revive zombie shards in-process; give up on a cluster that cannot recover.

discord.py already reconnects a socket that stays silent past its heartbeat timeout (60 s) and
retries failed connections. The watchdog is the second line, for what falls through:

* A shard whose socket has received nothing for ``INNKEEPER_ZOMBIE_AFTER`` seconds is a zombie.
  First it is closed with code 4000, which makes discord.py RESUME (no identify spent). If it is
  still silent after another ``zombie_after``, it is reconnected from scratch
  (``ShardInfo.reconnect()``, which identifies through the shared queue).
* When no shard of the cluster has been READY, identifying or held by the budget guard for
  ``3 × zombie_after`` seconds, the process cannot recover by itself: the watchdog records a fatal
  error and closes the bot, and ``python -m shard`` exits 1 so that supervisord restarts it (a
  fresh process, fresh sockets). Fatal gateway closes (4004, 4010-4014) and a rejected token exit
  78 instead, which supervisord does not restart (see ``docs/operations.md``).

The receive time comes from discord.py's private ``KeepAliveHandler._last_recv``. Should a
discord.py release move it, the watchdog says so (an error log, ``innkeeper_watchdog_blind`` 1)
instead of silently never firing; ``tests/e2e/test_watchdog.py`` fails in that case too.
Metrics: ``innkeeper_watchdog_zombies_total{action}`` (``resume``, ``reconnect``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from innkeeper.errors import ErrorCode, InnkeeperError
from innkeeper.services import BackgroundTasks

if TYPE_CHECKING:
    import discord

    from .tracker import ShardTracker

__all__ = ("Watchdog", "ClusterUnrecoverable")

_log = logging.getLogger(__name__)

_ALIVE = frozenset({"READY", "IDENTIFYING"})

ZOMBIES = Counter("innkeeper_watchdog_zombies_total",
                  "Silent shards the watchdog acted on: closed to resume, then reconnected from scratch",
                  ["action"])
BLIND = Gauge("innkeeper_watchdog_blind",
              "1 while the watchdog cannot read when a READY shard last received a frame (discord.py's private "
              "KeepAliveHandler._last_recv moved): zombie shards are then not detected")


class ClusterUnrecoverable(InnkeeperError):
    """No shard of the cluster could get back to READY for too long."""

    default_code = ErrorCode.CLUSTER_UNHEALTHY


class Watchdog:
    """Checks the cluster's shards every few seconds.

    Parameters
    ----------
    client:
        The cluster's bot, to reconnect a shard (``get_shard``).
    tracker:
        The cluster's shard states.
    give_up:
        Called with a :class:`ClusterUnrecoverable` when the cluster cannot recover: it records the
        error and closes the bot (which stops this watchdog).
    zombie_after_s:
        ``INNKEEPER_ZOMBIE_AFTER``.
    unrecoverable_after_s:
        How long the whole cluster may be down before the process gives up; default ``3 × zombie_after_s``.
    check_every_s:
        Check period; default ``min(zombie_after_s / 4, 15)``.
    """

    __slots__ = ("client", "tracker", "give_up", "zombie_after_s", "unrecoverable_after_s", "check_every_s", "kicked",
                 "down_since", "_tasks", "_closing", "zombies_closed", "zombies_reconnected", "blind")

    def __init__(
        self,
        client: discord.AutoShardedClient,
        tracker: ShardTracker,
        *,
        give_up: Callable[[BaseException], Coroutine[Any, Any, None]],
        zombie_after_s: float,
        unrecoverable_after_s: float | None = None,
        check_every_s: float | None = None,
    ) -> None:
        self.client = client
        self.tracker = tracker
        self.give_up = give_up
        self.zombie_after_s = zombie_after_s
        self.unrecoverable_after_s = unrecoverable_after_s or 3 * zombie_after_s
        self.check_every_s = check_every_s or min(zombie_after_s / 4, 15.0)
        #: shard id → monotonic time of the gentle close (step one).
        self.kicked: dict[int, float] = {}
        self.down_since: float | None = None
        self._tasks = BackgroundTasks("watchdog")
        self._closing: asyncio.Task[None] | None = None
        self.zombies_closed = 0
        self.zombies_reconnected = 0
        #: Whether the last check could not read a READY shard's receive time (see :data:`BLIND`).
        self.blind = False

    async def check(self) -> None:
        """One pass over every shard (also called directly by tests)."""
        now = time.monotonic()
        blind = False
        for sid, rec in self.tracker.shards.items():
            if rec.state == "IDENTIFYING" or not self.tracker.is_open(sid):
                self.kicked.pop(sid, None)
                continue
            age = self.tracker.last_receive_age_s(sid)
            if age is None and rec.state == "READY" and self.tracker.websocket(sid) is not None:
                blind = True  # a live, READY socket whose receive time cannot be read
            if age is None or age < self.zombie_after_s:
                self.kicked.pop(sid, None)
                continue
            kicked_at = self.kicked.get(sid)
            if kicked_at is None:
                _log.warning("shard %d received nothing for %.0f s: closing it so that it resumes", sid, age,
                             extra={"shard_id": sid})
                self.kicked[sid] = now
                self.zombies_closed += 1
                ZOMBIES.labels("resume").inc()
                await self._close_for_resume(sid)
            elif now - kicked_at >= self.zombie_after_s:
                _log.error("shard %d is still silent after a resume attempt: reconnecting it", sid,
                           extra={"shard_id": sid})
                self.kicked[sid] = now
                self.zombies_reconnected += 1
                ZOMBIES.labels("reconnect").inc()
                shard = self.client.get_shard(sid)
                if shard is not None:
                    await shard.reconnect()
        self._note_blind(blind)
        self._check_cluster(now)

    def _note_blind(self, blind: bool) -> None:
        if blind and not self.blind:
            _log.error("the watchdog cannot read when READY shards last received a frame (discord.py's "
                       "KeepAliveHandler._last_recv): zombie shards will not be detected",
                       extra={"error_code": ErrorCode.CLUSTER_UNHEALTHY.value})
        elif self.blind and not blind:
            _log.info("the watchdog can read the shards' receive times again")
        self.blind = blind
        BLIND.set(1 if blind else 0)

    async def _close_for_resume(self, shard_id: int) -> None:
        ws: Any = self.tracker.websocket(shard_id)
        if ws is None:
            return
        try:
            await ws.close(code=4000)
        except Exception:
            _log.exception("closing zombie shard %d failed", shard_id)

    def _check_cluster(self, now: float) -> None:
        t = self.tracker
        alive = t.blocked_reason is not None or any(r.state in _ALIVE for r in t.shards.values())
        if alive or t.stopping:
            self.down_since = None
            return
        if self.down_since is None:
            self.down_since = now
            return
        if now - self.down_since >= self.unrecoverable_after_s and self._closing is None:
            err = ClusterUnrecoverable(
                f"no shard READY for {now - self.down_since:.0f} s; exiting so that supervisord restarts "
                "the cluster")
            _log.critical("%s", err, extra={"error_code": err.code.value})
            # giving up closes the bot, which stops this watchdog: run it outside our own task.
            self._closing = asyncio.create_task(self.give_up(err), name="watchdog-give-up")

    async def start(self) -> None:
        if not len(self._tasks):
            self._tasks.every(self.check_every_s, self.check, name="check", run_first=False)

    async def stop(self) -> None:
        await self._tasks.cancel()
