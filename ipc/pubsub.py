"""A pub/sub listener that survives Redis going away.

:class:`Subscriber` subscribes to a few channels and hands every message's raw bytes to a
callback. When the connection drops it says so once in the logs, reconnects with jittered
backoff, resubscribes, says so once more, and calls ``on_reconnect`` so the owner can drop state
that may have missed messages meanwhile (a local cache layer, for instance). A callback that
raises is logged and never stops the loop. The bus (:mod:`ipc.bus`) and the shared cache
(:mod:`ipc.cache`) both listen through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from innkeeper.backoff import Backoff
from innkeeper.errors import ErrorCode, IPCError, UsageError
from innkeeper.services import BackgroundTasks

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

__all__ = ("Subscriber", "check_binary_client")

_log = logging.getLogger(__name__)

OnMessage = Callable[[str, bytes], Awaitable[None] | None]


def check_binary_client(redis: Redis) -> None:
    """Refuse a client built with ``decode_responses=True``: msgpack needs the raw bytes."""
    kwargs = getattr(redis, "connection_pool", None)
    if kwargs is not None and kwargs.connection_kwargs.get("decode_responses"):
        raise UsageError("the Redis client must be created with decode_responses=False (msgpack is binary)")


class Subscriber:
    """Listen on ``channels`` and call ``on_message(channel, data)`` for each message.

    Parameters
    ----------
    redis:
        A ``redis.asyncio.Redis`` client with ``decode_responses=False``.
    channels:
        The channels to subscribe to.
    on_message:
        Called for every message, sync or async. Exceptions are logged and swallowed.
    name:
        Used in log lines (``"bus cluster-3"``).
    on_reconnect:
        Called after the subscription was re-established, since messages may have been missed.
    """

    __slots__ = ("redis", "channels", "on_message", "name", "on_reconnect", "_pubsub", "_tasks",
                 "_connected", "_backoff", "_stopping", "reconnects", "__weakref__")

    def __init__(self, redis: Redis, channels: Sequence[str], on_message: OnMessage, *, name: str,
                 on_reconnect: Callable[[], None] | None = None, backoff: Backoff | None = None) -> None:
        check_binary_client(redis)
        if not channels:
            raise UsageError("a subscriber needs at least one channel")
        self.redis = redis
        self.channels = tuple(channels)
        self.on_message = on_message
        self.name = name
        self.on_reconnect = on_reconnect
        self._pubsub: PubSub | None = None
        self._tasks = BackgroundTasks(f"subscriber {name}")
        self._connected = asyncio.Event()
        self._backoff = backoff or Backoff(0.1, 5.0)
        self._stopping = False
        #: How many times the subscription was re-established.
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until subscribed; False when ``timeout`` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def start(self, *, retry: bool = False) -> None:
        """Subscribe and start listening.

        Parameters
        ----------
        retry:
            When the first subscription fails, log it and keep trying in the background (with
            backoff, as after a lost connection) instead of raising. ``on_reconnect`` is called
            once the subscription is up.

        Raises
        ------
        IPCError
            ``REDIS_UNAVAILABLE`` when the first subscription fails and ``retry`` is False.
        """
        if len(self._tasks):
            return
        try:
            await self._subscribe()
        except (RedisError, OSError) as exc:
            if not retry:
                raise IPCError(f"{self.name}: cannot subscribe to Redis: {exc}",
                               code=ErrorCode.REDIS_UNAVAILABLE) from exc
            _log.warning("%s: Redis is unreachable (%s); subscribing in the background with backoff",
                         self.name, exc)
        self._stopping = False
        self._tasks.spawn(self._run(), name="listen")

    async def stop(self) -> None:
        """Stop listening and close the subscription; safe to call twice."""
        self._stopping = True
        await self._tasks.cancel()
        await self._close_pubsub()

    async def _subscribe(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(*self.channels)
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            raise
        if pubsub.connection is not None:
            # redis-py reconnects on its own within its retry budget and resubscribes in its
            # connect callback; ours tells the owner that messages may have been missed.
            pubsub.connection.register_connect_callback(self._redis_reconnected)
        self._pubsub = pubsub
        self._connected.set()

    def _redis_reconnected(self, connection: Any) -> None:
        if self._stopping:
            return
        self.reconnects += 1
        _log.info("%s: Redis connection re-established by the client; resubscribed", self.name)
        self._notify_reconnect()

    def _notify_reconnect(self) -> None:
        if self.on_reconnect is not None:
            try:
                self.on_reconnect()
            except Exception:
                _log.exception("%s: on_reconnect callback failed", self.name)

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._connected.clear()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    async def _run(self) -> None:
        while not self._stopping:
            pubsub = self._pubsub
            if pubsub is None:
                await self._reconnect()
                continue
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (RedisError, OSError) as exc:
                _log.warning("%s: lost the Redis pub/sub connection (%s); reconnecting with backoff",
                             self.name, exc)
                await self._close_pubsub()
                continue
            if message is None or message.get("type") != "message":
                continue
            await self._deliver(message)

    async def _reconnect(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._backoff.next())
            try:
                await self._subscribe()
            except (RedisError, OSError) as exc:
                if self._backoff.attempts in (1, 10) or self._backoff.attempts % 100 == 0:
                    _log.warning("%s: Redis still unreachable after %d attempts: %s",
                                 self.name, self._backoff.attempts, exc)
                continue
            self.reconnects += 1
            _log.info("%s: pub/sub subscription restored after %d attempts", self.name, self._backoff.attempts)
            self._backoff.reset()
            self._notify_reconnect()
            return

    async def _deliver(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        data = message.get("data")
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        if isinstance(data, str):  # a client with decode_responses; keep going, the decoder will judge
            data = data.encode("utf-8", "surrogateescape")
        if not isinstance(data, bytes):
            return
        try:
            result = self.on_message(str(channel), data)
            if inspect.isawaitable(result):
                await result
        except Exception:
            _log.exception("%s: message handler failed; message dropped", self.name)
