"""The serving side of a bus endpoint: run allowed actions, boundedly, and answer each request once.

:class:`Responder` receives requests the bus has already verified and routed (:mod:`ipc.bus`). It

- drops a request id it has seen within the frames' freshness window (reason ``replay``;
  :mod:`ipc.replay`);
- runs at most ``max_concurrent`` handlers at once. A request beyond that is not queued: it is
  answered at once with ``IPC_BUSY`` (``E3005``), and if even those answers pile up (more than
  :data:`MAX_BUSY_REPLIES` being sent), it is dropped (reason ``busy``). So however fast requests
  arrive, the tasks this process holds for them stay bounded;
- runs each handler within the smaller of its own and the request's time limit, and turns an
  exception, a timeout or an unknown action into an error response with an
  :class:`~innkeeper.errors.ErrorCode`.

Metric: ``innkeeper_ipc_requests_served_total{outcome}`` (``ok``, ``error``, ``timeout``,
``unknown_action``, ``busy``, ``unsendable``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter
from redis.exceptions import RedisError

from innkeeper.errors import ErrorCode, InnkeeperError, IPCError, UsageError
from innkeeper.services import BackgroundTasks

from .frames import pack
from .messages import ErrorInfo, Identity, Request, Response
from .replay import RecentIds

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .registry import HandlerRegistry
    from .signing import FrameSigner

__all__ = ("Responder", "MAX_BUSY_REPLIES")

_log = logging.getLogger(__name__)

SERVED = Counter("innkeeper_ipc_requests_served_total", "Bus requests this process answered, by outcome",
                 ["outcome"])
#: Busy answers being published at once; requests beyond that are dropped (reason ``busy``).
MAX_BUSY_REPLIES = 16


class Responder:
    """Answers the requests of one bus endpoint.

    Parameters
    ----------
    redis:
        Where answers are published.
    signer:
        Signs every answer for the channel it goes to; its ``max_age_s`` sets how long request
        ids are remembered against replays (twice that).
    identity:
        Who answers (the cluster id).
    registry:
        The allowed actions.
    max_concurrent:
        Handlers allowed to run at once.
    drop:
        Called with a reason for every request dropped here (the bus counts them).
    """

    __slots__ = ("redis", "signer", "identity", "registry", "max_concurrent", "_drop", "_tasks", "_seen",
                 "_running", "_busy_replies", "served")

    def __init__(self, redis: Redis, signer: FrameSigner, identity: Identity, registry: HandlerRegistry, *,
                 max_concurrent: int, drop: Callable[[str], None]) -> None:
        if max_concurrent < 1:
            raise UsageError("a bus runs at least one handler at a time")
        self.redis = redis
        self.signer = signer
        self.identity = identity
        self.registry = registry
        self.max_concurrent = max_concurrent
        self._drop = drop
        self._tasks = BackgroundTasks(f"bus {identity} handlers")
        self._seen = RecentIds(2 * signer.max_age_s)
        self._running = 0
        self._busy_replies = 0
        #: Requests answered (published) so far.
        self.served = 0

    @property
    def running(self) -> int:
        """Handlers running now."""
        return self._running

    def accept(self, req: Request) -> None:
        """Take a verified request addressed to this endpoint: serve it, refuse it busy, or drop it."""
        if self._seen.check_and_add(req.id):
            self._drop("replay")
            return
        if self._running >= self.max_concurrent:
            self._refuse_busy(req)
            return
        self._running += 1
        self._tasks.spawn(self._serve(req), name="serve")

    async def stop(self) -> None:
        """Cancel running handlers (their requesters time out)."""
        await self._tasks.cancel()
        self._running = self._busy_replies = 0  # a task cancelled before it ran never counted itself out

    def _refuse_busy(self, req: Request) -> None:
        SERVED.labels("busy").inc()
        if self._busy_replies >= MAX_BUSY_REPLIES:
            self._drop("busy")
            return
        self._busy_replies += 1
        response = self._error(req, ErrorCode.IPC_BUSY, f"cluster {self.identity} is busy: {self._running} requests "
                                                        "are running; try again shortly")
        self._tasks.spawn(self._answer_busy(req, response), name="busy")

    async def _answer_busy(self, req: Request, response: Response) -> None:
        try:
            await self._publish(req, response)
        finally:
            self._busy_replies -= 1

    async def _serve(self, req: Request) -> None:
        try:
            response = await self._run_handler(req)
        finally:
            self._running -= 1
        if await self._publish(req, response):
            self.served += 1

    async def _publish(self, req: Request, response: Response) -> bool:
        try:
            data = pack(self.signer, req.reply_to, response)
        except IPCError as exc:
            SERVED.labels("unsendable").inc()
            data = pack(self.signer, req.reply_to,
                        self._error(req, ErrorCode.INTERNAL, f"the result could not be sent: {exc.message}"))
        try:
            await self.redis.publish(req.reply_to, data)
        except (RedisError, OSError) as exc:
            _log.warning("bus %s: could not answer %r (%s): %s", self.identity, req.action, req.id, exc)
            return False
        return True

    async def _run_handler(self, req: Request) -> Response:
        handler = self.registry.get(req.action)
        if handler is None:
            SERVED.labels("unknown_action").inc()
            return self._error(req, ErrorCode.IPC_UNKNOWN_ACTION, f"unknown action {req.action!r}")
        limit = min(handler.timeout, req.timeout)
        try:
            async with asyncio.timeout(limit):
                result = await handler.func(dict(req.args))
        except TimeoutError:
            SERVED.labels("timeout").inc()
            return self._error(req, ErrorCode.IPC_TIMEOUT, f"{req.action!r} did not finish within {limit:g}s")
        except InnkeeperError as exc:
            SERVED.labels("error").inc()
            return self._error(req, exc.code, exc.message)
        except Exception as exc:
            SERVED.labels("error").inc()
            _log.exception("bus %s: handler %r failed", self.identity, req.action)
            return self._error(req, ErrorCode.INTERNAL, f"{req.action!r} failed: {type(exc).__name__}: {exc}"[:1000])
        SERVED.labels("ok").inc()
        return Response(id=req.id, cluster_id=self.identity, ok=True, result=result)

    def _error(self, req: Request, code: ErrorCode, message: str) -> Response:
        return Response(id=req.id, cluster_id=self.identity, ok=False,
                        error=ErrorInfo(code=code.value, message=message or code.name))
