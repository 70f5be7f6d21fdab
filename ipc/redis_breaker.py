"""The ``redis`` circuit breaker, on every connection of a process's Redis client.

Every Redis user of a cluster (the shared limiter, the bus, the cache, the throttle, the identify
queue, heartbeats, sessions, snapshots) draws its connections from one client's pool, so the
pool's connection class is the one funnel all of them pass through. :func:`guard` swaps it for a
subclass that tells the process's ``redis`` :class:`~innkeeper.breakers.Breaker` how each call
went:

* a **connect** asks the breaker first. While it is open the connect fails at once with
  :class:`RedisBreakerOpen` (a ``RedisError``, so every user's existing fallback for an
  unreachable Redis takes over: local limits, the local throttle, the database, heartbeats
  skipped), instead of waiting for a refused or hanging socket. A connect that fails is a failure,
  one that succeeds a success (the probe while half-open);
* on a connection that is already open, a reply is a success, and a dropped connection (or a
  command that timed out on the client's ``socket_timeout``) a failure. Pub/sub reads with their
  own timeout are not judged: waiting for a message is not a failure.

:class:`RedisBreakerOpen` is not a ``ConnectionError``, so redis-py's own retry does not try
again behind the breaker's back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from innkeeper.breakers import Breaker

__all__ = ("guard", "RedisBreakerOpen")


class RedisBreakerOpen(RedisError):
    """The ``redis`` breaker is open: the connection was not even attempted."""


class _Guarded:
    """Mixed in before the pool's own connection class (see :func:`guard`)."""

    breaker: ClassVar[Breaker]
    is_connected: bool

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if self.is_connected:
            return
        breaker = self.breaker
        permit = breaker.enter()
        if permit is None:
            raise RedisBreakerOpen(f"Redis is down (circuit breaker open); next try in {breaker.retry_after():.1f}s")
        try:
            await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except (RedisConnectionError, RedisTimeoutError, OSError):
            breaker.failure(permit)
            raise
        except BaseException:
            breaker.release(permit)
            raise
        breaker.success(permit)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        judged = kwargs.get("timeout") is None  # pub/sub polls pass their own timeout
        try:
            response = await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except RedisConnectionError:
            self.breaker.observe(False)
            raise
        except RedisTimeoutError:
            if judged:
                self.breaker.observe(False)
            raise
        self.breaker.observe(True)
        return response


def guard(client: aioredis.Redis, breaker: Breaker) -> aioredis.Redis:
    """Make every connection of ``client``'s pool report to ``breaker`` (and obey it); returns ``client``.

    Call it before the client's first command: connections already made keep their class.
    """
    pool = client.connection_pool
    base = pool.connection_class
    pool.connection_class = type(f"Guarded{base.__name__}", (_Guarded, base), {"breaker": breaker})
    return client
