"""The IPC bus: request/response and broadcast-gather between clusters over Redis pub/sub.

Every cluster runs one :class:`Bus` with its cluster id as identity. It listens on the broadcast
channel (``keys.bus_channel()``) and on its own channel (``keys.bus_cluster_channel(id)``), answers
requests whose action is in its :class:`~ipc.registry.HandlerRegistry`, and collects the
responses to its own requests. A non-cluster client (the CLI, the status service) uses an
identity such as ``"cli-<uuid>"``, listens on its own channel only and answers nothing.

Guarantees
----------
- Every frame is signed (:mod:`ipc.signing`, :mod:`ipc.frames`). A frame that is too large
  (checked on its length, before anything else), unsigned, signed with an unknown key or a wrong
  signature, stale, a replayed request, does not decode, or makes no sense here (a response nobody
  waits for, a request with a foreign ``reply_to``) is dropped and counted in ``Bus.dropped`` and
  in the Prometheus counter ``innkeeper_ipc_dropped_total{reason}``. Nothing a peer publishes can
  stop the loop: large frames are examined in a worker thread, and decoding is bounded.
- Requests are served by a :class:`~ipc.responder.Responder`: a replayed request id is dropped, at
  most ``max_concurrent`` handlers run at once and a request beyond that is answered at once with
  ``IPC_BUSY`` (``E3005``), not queued; handlers run with a time limit (the smaller of theirs and
  the request's), and an exception, a timeout or an unknown action becomes an error response with
  an :class:`~innkeeper.errors.ErrorCode`.
- :meth:`Bus.broadcast_gather` returns what arrived before the timeout and names who did not
  answer (:attr:`GatherResult.missing`).
- A dropped Redis connection is re-established with backoff (:class:`~ipc.pubsub.Subscriber`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from redis.exceptions import RedisError

from innkeeper.errors import ErrorCode, IPCError, UsageError

from .frames import pack, unpack
from .messages import ErrorInfo, Identity, Request, Response, new_message_id
from .pubsub import Subscriber
from .responder import Responder

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .keys import Keys
    from .registry import HandlerRegistry
    from .signing import FrameSigner

__all__ = ("Bus", "GatherResult", "live_clusters", "DROPPED")

_log = logging.getLogger(__name__)

DROPPED = Counter("innkeeper_ipc_dropped_total", "IPC messages dropped by the bus, by reason", ["reason"])

_CODES = {c.value: c for c in ErrorCode}


@dataclass(slots=True)
class GatherResult:
    """What a broadcast-gather collected before its timeout.

    Attributes
    ----------
    results:
        Responder → result, for those that answered ``ok``.
    errors:
        Responder → :class:`~ipc.messages.ErrorInfo`, for those that answered with an error.
    missing:
        Expected responders that did not answer in time.
    """

    results: dict[Identity, Any] = field(default_factory=dict)
    errors: dict[Identity, ErrorInfo] = field(default_factory=dict)
    missing: set[Identity] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        """True when every expected responder answered without an error."""
        return not self.errors and not self.missing


class _Pending:
    __slots__ = ("expected", "results", "errors", "done")

    def __init__(self, expected: set[Identity]) -> None:
        self.expected = expected
        self.results: dict[Identity, Any] = {}
        self.errors: dict[Identity, ErrorInfo] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def answered(self) -> set[Identity]:
        return set(self.results) | set(self.errors)


def _redis_error(what: str, exc: BaseException) -> IPCError:
    return IPCError(f"{what}: Redis is unreachable ({exc})", code=ErrorCode.REDIS_UNAVAILABLE)


async def live_clusters(redis: Redis, keys: Keys) -> set[int]:
    """Cluster ids with a live heartbeat key (the key names are enough; records are not read).

    Raises
    ------
    IPCError
        ``REDIS_UNAVAILABLE`` when Redis cannot be reached.
    """
    pattern = keys.heartbeat_pattern()
    head, _, tail = pattern.partition("*")
    found: set[int] = set()
    try:
        async for raw in redis.scan_iter(match=pattern, count=500):
            key = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            middle = key[len(head):len(key) - len(tail)] if tail else key[len(head):]
            if key.startswith(head) and key.endswith(tail) and middle.isdigit():
                found.add(int(middle))
    except (RedisError, OSError) as exc:
        raise _redis_error("cannot list live clusters", exc) from exc
    return found


class Bus:
    """One process's endpoint on the IPC bus.

    Parameters
    ----------
    redis:
        A ``redis.asyncio.Redis`` client with ``decode_responses=False``.
    keys:
        The :class:`~ipc.keys.Keys` naming the channels.
    identity:
        The cluster id (an ``int``), or a client name such as ``"cli-3f2a"`` for processes that
        only ask.
    signer:
        Signs every frame this bus sends and verifies every frame it receives
        (``INNKEEPER_IPC_KEYS``); every process on the bus must share a key.
    registry:
        The actions this process answers. Clusters pass one; clients leave it ``None``.
    max_concurrent:
        Handlers allowed to run at once; a request beyond that is answered ``IPC_BUSY`` at once.

    Use it as ``async with Bus(...) as bus:`` or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, redis: Redis, keys: Keys, identity: Identity, *, signer: FrameSigner,
                 registry: HandlerRegistry | None = None, max_concurrent: int = 64) -> None:
        if isinstance(identity, bool) or not isinstance(identity, int | str) or identity == "":
            raise UsageError("a bus identity is a cluster id or a non-empty client name")
        self.redis = redis
        self.signer = signer
        self.keys = keys
        self.identity: Identity = identity
        self.registry = registry
        self.channel = keys.bus_cluster_channel(identity)
        channels = [self.channel]
        if isinstance(identity, int):
            channels.insert(0, keys.bus_channel())
        self._reply_prefix = keys.bus_cluster_channel("")
        self._subscriber = Subscriber(redis, channels, self._on_message, name=f"bus {identity}")
        self._pending: dict[str, _Pending] = {}
        self._responder = None if registry is None else Responder(
            redis, signer, identity, registry, max_concurrent=max_concurrent, drop=self._drop)
        #: Messages dropped by this bus, by reason.
        self.dropped: collections.Counter[str] = collections.Counter()

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self, *, retry: bool = False) -> None:
        """Subscribe.

        Parameters
        ----------
        retry:
            When Redis is unreachable, keep subscribing in the background with backoff instead of
            raising (what a cluster process wants: the bot runs on, the bus joins when it can).

        Raises
        ------
        IPCError
            ``REDIS_UNAVAILABLE`` when Redis is unreachable and ``retry`` is False.
        """
        await self._subscriber.start(retry=retry)

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the bus is subscribed; False when ``timeout`` passed first."""
        return await self._subscriber.wait_connected(timeout)

    async def stop(self) -> None:
        """Stop listening, cancel running handlers and fail pending requests."""
        await self._subscriber.stop()
        if self._responder is not None:
            await self._responder.stop()
        for pending in self._pending.values():
            if not pending.done.done():
                pending.done.cancel()
        self._pending.clear()

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def served(self) -> int:
        """Requests this bus answered."""
        return 0 if self._responder is None else self._responder.served

    @property
    def running(self) -> int:
        """Handlers running now (at most ``max_concurrent``)."""
        return 0 if self._responder is None else self._responder.running

    @property
    def connected(self) -> bool:
        return self._subscriber.connected

    # --- asking -----------------------------------------------------------------------------------
    async def request(self, target: Identity, action: str, args: dict[str, Any] | None = None, *,
                      timeout: float = 5.0) -> Any:
        """Ask one cluster to run ``action`` and return its result.

        Raises
        ------
        IPCError
            ``IPC_TIMEOUT`` when it did not answer in ``timeout`` seconds (or nobody listens on its
            channel); the responder's own code when it answered with an error; ``REDIS_UNAVAILABLE``
            when the request could not be published.
        """
        req = Request(id=new_message_id(), action=action, args=dict(args or {}), sender=self.identity,
                      reply_to=self.channel, expected=(target,) if isinstance(target, int) else "all",
                      timeout=timeout)
        pending = await self._send(req, self.keys.bus_cluster_channel(target), {target})
        if pending is None:
            raise IPCError(f"cluster {target} is not listening on the bus", code=ErrorCode.IPC_TIMEOUT,
                           target=target, action=action)
        try:
            async with asyncio.timeout(timeout):
                await pending.done
        except TimeoutError:
            raise IPCError(f"cluster {target} did not answer {action!r} within {timeout:g}s",
                           code=ErrorCode.IPC_TIMEOUT, target=target, action=action) from None
        finally:
            self._pending.pop(req.id, None)
        if target in pending.results:
            return pending.results[target]
        error = pending.errors[target]
        raise IPCError(f"cluster {target} answered {action!r} with an error: [{error.code}] {error.message}",
                       code=_CODES.get(error.code, ErrorCode.INTERNAL), target=target, remote_code=error.code)

    async def broadcast_gather(self, action: str, args: dict[str, Any] | None = None, *,
                               expected: Iterable[int] | None = None, timeout: float = 5.0) -> GatherResult:
        """Ask every expected cluster to run ``action`` and collect the answers.

        Parameters
        ----------
        expected:
            The cluster ids that should answer; ``None`` reads the live ones from the heartbeats
            (:func:`live_clusters`).
        timeout:
            Seconds to wait. Whoever has not answered by then is in :attr:`GatherResult.missing`.

        Raises
        ------
        IPCError
            ``REDIS_UNAVAILABLE`` when the request could not be published.
        """
        wanted: set[Identity] = set(await live_clusters(self.redis, self.keys) if expected is None else expected)
        if not wanted:
            return GatherResult()
        req = Request(id=new_message_id(), action=action, args=dict(args or {}), sender=self.identity,
                      reply_to=self.channel, expected=tuple(sorted(int(c) for c in wanted)), timeout=timeout)
        pending = await self._send(req, self.keys.bus_channel(), wanted)
        if pending is None:
            return GatherResult(missing=set(wanted))
        try:
            async with asyncio.timeout(timeout):
                await pending.done
        except TimeoutError:
            pass
        finally:
            self._pending.pop(req.id, None)
        return GatherResult(results=dict(pending.results), errors=dict(pending.errors),
                            missing=set(wanted) - pending.answered())

    async def _send(self, req: Request, channel: str, expected: set[Identity]) -> _Pending | None:
        data = pack(self.signer, channel, req)
        pending = _Pending(expected)
        self._pending[req.id] = pending
        try:
            receivers = await self.redis.publish(channel, data)
        except (RedisError, OSError) as exc:
            self._pending.pop(req.id, None)
            raise _redis_error(f"cannot send {req.action!r}", exc) from exc
        if not receivers:
            self._pending.pop(req.id, None)
            return None
        return pending

    # --- receiving --------------------------------------------------------------------------------
    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        DROPPED.labels(reason).inc()

    async def _on_message(self, channel: str, data: bytes) -> None:
        try:
            frame = await unpack(self.signer, channel, data)
        except IPCError as exc:
            reason = str(exc.context.get("reason", "invalid"))
            self._drop(reason)
            _log.debug("bus %s dropped a message on %s: %s", self.identity, channel, exc.message)
            return
        msg = frame.message
        if isinstance(msg, Response):
            self._on_response(msg)
        elif isinstance(msg, Request):
            self._on_request(msg)
        else:  # events belong to other channels (cache invalidations); nobody listens for them here
            self._drop("no_listener")

    def _on_response(self, msg: Response) -> None:
        pending = self._pending.get(msg.id)
        if pending is None:
            self._drop("late")
            return
        if msg.cluster_id not in pending.expected:
            self._drop("unexpected_responder")
            return
        if msg.cluster_id in pending.results or msg.cluster_id in pending.errors:
            self._drop("duplicate")
            return
        if msg.ok:
            pending.results[msg.cluster_id] = msg.result
        else:
            assert msg.error is not None  # decode guarantees it
            pending.errors[msg.cluster_id] = msg.error
        if pending.answered() >= pending.expected and not pending.done.done():
            pending.done.set_result(None)

    def _on_request(self, msg: Request) -> None:
        if self._responder is None:
            self._drop("not_served")
            return
        if not msg.expects(self.identity):
            return  # a broadcast meant for other clusters: not ours, not an error
        if not msg.reply_to.startswith(self._reply_prefix):
            self._drop("bad_reply_to")
            return
        self._responder.accept(msg)
