"""A cache shared by every cluster: Redis behind a small per-process LRU, invalidated over pub/sub.

Reads look in the local layer first, then in Redis (one round trip: ``GET`` + ``PTTL``); values are
msgpack. Writes go to Redis and publish an invalidation on ``keys.cache_channel()``, and every other
process drops its local copy. A local copy never outlives the Redis key, nor ``local_ttl``, so a
lost invalidation (a pub/sub link that dropped) costs at most ``local_ttl`` of staleness; after a
reconnect the local layer is cleared anyway. A read that raced with an invalidation does not
repopulate the local layer. A read in the last quarter of a local copy's life (``refresh_ahead``)
also refreshes it from Redis in the background, so a key in steady use is never missed locally
(a guild's configuration under a burst of its messages). Invalidations are signed frames
(:mod:`ipc.frames`) like every bus message; an unsigned, forged or stale one is dropped and counted, never acted on.

:meth:`SharedCache.get_or_load` runs the loader once per key per process however many callers
ask at once (single flight), and stores the result only if the key was not invalidated since the
loader started (a generation per key, compared in Redis: :mod:`ipc.cache_versions`), and only if
no other cluster stored one first (``NX``), so concurrent loaders agree on one value and a load that
read the database before a write can never be stored after that write's invalidation. A caller that
arrives after an invalidation reached this process does not join a load that started before it.
When Redis is unreachable it calls the loader directly.

An invalidation that cannot reach Redis drops the local copy at once and is retried in the
background until Redis answers; meanwhile this process does not read that key from Redis (the
loader answers), so a value it failed to invalidate is never served again by it.

Metrics: ``innkeeper_cache_requests_total{namespace, result}`` with result ``local_hit``, ``hit``
(from Redis), ``miss``, ``error``, or ``prefetched`` (brought into the local layer by :meth:`SharedCache.prefetch`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgpack
from prometheus_client import Counter
from redis.exceptions import RedisError

from innkeeper.backoff import Backoff
from innkeeper.errors import ErrorCode, IPCError, UsageError
from innkeeper.services import BackgroundTasks

from .bus import DROPPED
from .cache_versions import Generations, Stored
from .frames import pack, unpack
from .messages import Event, is_plain
from .pubsub import Subscriber, check_binary_client

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .keys import Keys
    from .signing import FrameSigner

__all__ = ("SharedCache", "INVALIDATE_EVENT")

_log = logging.getLogger(__name__)

REQUESTS = Counter("innkeeper_cache_requests_total", "Shared cache lookups, by namespace and result",
                   ["namespace", "result"])

INVALIDATE_EVENT = "cache.invalidate"
_NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_MISSING: Any = object()
T = TypeVar("T")


def _pack(value: Any) -> bytes:
    if not is_plain(value):
        raise UsageError("cache values must be plain data (None, bool, int, float, str, bytes, lists, maps)")
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def _unpack(data: bytes | str) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class SharedCache:
    """Namespaced key → value cache in Redis with a local LRU in front.

    Parameters
    ----------
    redis:
        A ``redis.asyncio.Redis`` client with ``decode_responses=False``.
    keys:
        Key names (:class:`~ipc.keys.Keys`).
    signer:
        Signs the invalidations this cache publishes and verifies those it receives.
    default_ttl:
        Seconds a value lives in Redis unless ``set`` says otherwise.
    local_ttl:
        Longest a value is served from the local layer without asking Redis.
    local_max:
        Entries kept in the local layer (least recently used are dropped first).
    refresh_ahead:
        Share of a local copy's life, at its end, in which a read also refreshes it from Redis in the
        background (once per key), so that a key in use never expires under its readers: a burst of
        messages for a guild whose copy just expired would each take the slow path at once.
    max_inflight:
        Redis calls this cache makes at once; more wait their turn, so a burst cannot exhaust the
        client's connection pool.
    generation_ttl:
        Seconds a key's generation counter lives after its last invalidation (far longer than any load).
    """

    def __init__(self, redis: Redis, keys: Keys, *, signer: FrameSigner, default_ttl: float = 300.0,
                 local_ttl: float = 30.0, local_max: int = 10_000, max_inflight: int = 16,
                 generation_ttl: float = 86_400.0, refresh_ahead: float = 0.25) -> None:
        check_binary_client(redis)
        if default_ttl <= 0 or local_ttl < 0 or local_max < 0 or not 0 <= refresh_ahead < 1:
            raise UsageError("cache TTLs and sizes must be positive, refresh_ahead in [0, 1)")
        self.redis = redis
        self.keys = keys
        self.signer = signer
        self.default_ttl = default_ttl
        self.local_ttl = local_ttl
        self.local_max = local_max
        self.refresh_ahead = refresh_ahead
        self.instance = uuid.uuid4().hex[:16]
        #: (namespace, key) → (expires, value, refresh from): monotonic seconds
        self._local: collections.OrderedDict[tuple[str, str], tuple[float, Any, float]] = collections.OrderedDict()
        self._counters: dict[tuple[str, str], Callable[[], None]] = {}
        #: Background refreshes started so far (refresh-ahead).
        self.refreshes = 0
        self._generation: collections.Counter[str] = collections.Counter()
        self._versions = Generations(redis, keys, ttl=generation_ttl)
        #: (namespace, key) → (the load's future, the namespace's local generation when it started)
        self._flights: dict[tuple[str, str], tuple[asyncio.Future[Any], int]] = {}
        #: Invalidations that could not reach Redis yet, by namespace.
        self._pending: dict[str, set[str]] = {}
        self._tasks = BackgroundTasks("cache")
        self._subscriber = Subscriber(redis, [keys.cache_channel()], self._on_invalidation, name="cache",
                                      on_reconnect=self.clear_local)
        self._inflight = asyncio.Semaphore(max_inflight)
        #: Invalidations received from other processes.
        self.invalidations = 0

    async def start(self, *, retry: bool = False) -> None:
        """Listen for invalidations.

        Raises :class:`IPCError` when Redis is unreachable, unless ``retry``: then it keeps
        subscribing in the background (see :meth:`wait_connected`).
        """
        await self._subscriber.start(retry=retry)

    @property
    def connected(self) -> bool:
        """True while invalidations are being received."""
        return self._subscriber.connected

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until invalidations are being received; False when ``timeout`` passed first."""
        return await self._subscriber.wait_connected(timeout)

    async def stop(self) -> None:
        await self._tasks.cancel()
        await self._subscriber.stop()

    async def __aenter__(self) -> SharedCache:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def pending_invalidations(self) -> int:
        """Invalidations waiting for Redis to come back."""
        return sum(len(keys) for keys in self._pending.values())

    # --- reads ------------------------------------------------------------------------------------
    async def get(self, namespace: str, key: str | int, default: Any = None) -> Any:
        """The cached value, or ``default`` when there is none.

        Raises
        ------
        IPCError
            ``REDIS_UNAVAILABLE`` when the value is not held locally and Redis is unreachable.
        """
        ns, k = self._check(namespace, key)
        local = self._local_get(ns, k)
        if local is not _MISSING:
            self._count(ns, "local_hit")
            return local
        value, _ = await self._read(ns, k, with_generation=False)
        return default if value is _MISSING else value

    async def _read(self, ns: str, k: str, *, with_generation: bool) -> tuple[Any, bytes | None]:
        """The value in Redis (``_MISSING`` when none) and, if asked, the key's generation, in one round trip."""
        await self._settle(ns, k)
        generation = self._generation[ns]
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(self.keys.cache(ns, k))
            pipe.pttl(self.keys.cache(ns, k))
            if with_generation:
                self._versions.read(pipe, ns, k)
            async with self._inflight:
                raw, pttl, *seen = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._count(ns, "error")
            raise IPCError(f"cache {ns}: Redis is unreachable ({exc})", code=ErrorCode.REDIS_UNAVAILABLE) from exc
        version: bytes | None = seen[0] if seen else None
        if raw is None:
            self._count(ns, "miss")
            return _MISSING, version
        try:
            value = _unpack(raw)
        except Exception:  # noqa: BLE001 - a corrupt entry is a miss, never a crash
            self._count(ns, "error")
            _log.warning("cache %s: undecodable value under %r; treating it as a miss", ns, k)
            return _MISSING, version
        self._count(ns, "hit")
        if self._generation[ns] == generation:
            self._local_put(ns, k, value, pttl / 1000.0 if pttl and pttl > 0 else self.local_ttl)
        return value, version

    async def get_or_load(self, namespace: str, key: str | int, loader: Callable[[], Awaitable[T]], *,
                          ttl: float | None = None) -> T:
        """The cached value, or ``await loader()`` stored for ``ttl`` seconds.

        Concurrent callers for one key share one ``loader`` call, unless an invalidation reached
        this process after that call started: later callers then start a load of their own. When
        Redis is unreachable the loader is called and its result returned without caching.
        Loader exceptions propagate.
        """
        ns, k = self._check(namespace, key)
        local = self._local_get(ns, k)
        if local is not _MISSING:
            self._count(ns, "local_hit")
            return cast(T, local)
        flight = self._flights.get((ns, k))
        if flight is not None and flight[1] == self._generation[ns]:
            try:
                return await asyncio.shield(flight[0])
            except asyncio.CancelledError:
                if not flight[0].cancelled():
                    raise  # this caller was cancelled
                return await self.get_or_load(ns, k, loader, ttl=ttl)  # the loading caller was: try again
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._flights[(ns, k)] = (future, self._generation[ns])
        try:
            value = await self._load(ns, k, loader, ttl)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        else:
            future.set_result(value)
            return cast(T, value)
        finally:
            if self._flights.get((ns, k), (None, 0))[0] is future:
                del self._flights[(ns, k)]

    async def _load(self, ns: str, k: str, loader: Callable[[], Awaitable[Any]], ttl: float | None) -> Any:
        try:
            found, seen = await self._read(ns, k, with_generation=True)  # the generation, before the database
        except IPCError:
            _log.warning("cache %s: Redis unreachable; loading %r without caching", ns, k)
            return await loader()
        if found is not _MISSING:
            return found
        generation = self._generation[ns]
        value = await loader()
        data = _pack(value)
        seconds = ttl or self.default_ttl
        if k in self._pending.get(ns, ()):
            return value  # invalidated meanwhile and Redis has not heard of it yet: store nothing
        try:
            async with self._inflight:
                stored, theirs = await self._versions.store(ns, k, data, max(1, int(seconds * 1000)), seen)
        except (RedisError, OSError) as exc:
            _log.warning("cache %s: could not store %r (%s)", ns, k, exc)
            return value
        if stored is Stored.STALE:
            _log.debug("cache %s: %r was invalidated while it loaded; not cached", ns, k)
            return value
        if stored is Stored.TAKEN and theirs is not None:
            value = _unpack(theirs)  # another cluster loaded it first: use theirs, so every cluster agrees
        if self._generation[ns] == generation:
            self._local_put(ns, k, value, seconds)
        return value

    async def prefetch(self, namespace: str, keys: Iterable[str | int],
                       load_many: Callable[[list[str]], Awaitable[dict[str, Any]]], *, ttl: float | None = None) -> int:
        """Bring into the local layer every key of ``keys`` it does not hold, in a few round trips.

        Made for a cold start: a shard's READY names its guilds, and the first message of each would
        otherwise load its guild's entry alone. One pipelined read fetches what Redis holds (values,
        TTLs and generations); ``load_many`` is called once with the keys Redis lacks and returns
        ``{key: value}`` (a key it leaves out is not cached); one pipelined, version-checked store
        writes them (a key invalidated since its generation was read is refused, as in
        :meth:`get_or_load`; one another process stored first is taken from there). Best effort:
        with Redis unreachable it does nothing and returns 0. Loader exceptions propagate.

        Returns
        -------
        int
            Keys now held locally that were not before.
        """
        ns = self._check(namespace, "x")[0]
        wanted = [k for k in dict.fromkeys(self._check(ns, key)[1] for key in keys)
                  if (ns, k) not in self._local and k not in self._pending.get(ns, ()) and (ns, k) not in self._flights]
        if not wanted or self.local_max == 0 or self.local_ttl == 0:
            return 0
        generation = self._generation[ns]
        pipe = self.redis.pipeline(transaction=False)
        for k in wanted:
            pipe.get(self.keys.cache(ns, k))
            pipe.pttl(self.keys.cache(ns, k))
            self._versions.read(pipe, ns, k)
        try:
            async with self._inflight:
                replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            _log.warning("cache %s: prefetch skipped, Redis is unreachable (%s)", ns, exc)
            return 0
        held, missing = 0, []
        for i, k in enumerate(wanted):
            raw, pttl, seen = replies[3 * i: 3 * i + 3]
            if raw is None:
                missing.append((k, seen))
                continue
            try:
                value = _unpack(raw)
            except Exception:  # noqa: BLE001 - a corrupt entry is left for get_or_load to report
                continue
            if self._generation[ns] == generation:
                self._local_put(ns, k, value, pttl / 1000.0 if pttl and pttl > 0 else self.local_ttl)
                self._count(ns, "prefetched")
                held += 1
        if not missing:
            return held
        loaded = await load_many([k for k, _ in missing])
        seconds = ttl or self.default_ttl
        stores = [(k, seen, loaded[k], _pack(loaded[k])) for k, seen in missing if k in loaded]
        if not stores:
            return held
        pipe = self.redis.pipeline(transaction=False)
        for k, seen, _, data in stores:
            await self._versions.queue_store(pipe, ns, k, data, max(1, int(seconds * 1000)), seen)
        try:
            async with self._inflight:
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            _log.warning("cache %s: prefetched values not stored, Redis is unreachable (%s)", ns, exc)
            return held
        for (k, _, value, _), result in zip(stores, results, strict=True):
            stored, theirs = self._versions.reply(result)
            if stored is Stored.STALE or self._generation[ns] != generation or k in self._pending.get(ns, ()):
                continue
            self._local_put(ns, k, _unpack(theirs) if stored is Stored.TAKEN and theirs is not None else value, seconds)
            self._count(ns, "prefetched")
            held += 1
        return held

    # --- writes -----------------------------------------------------------------------------------
    async def set(self, namespace: str, key: str | int, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds and drop every other process's local copy.

        A load in progress anywhere cannot overwrite it (the key's generation moves on).

        Raises
        ------
        UsageError
            ``value`` is not plain data.
        IPCError
            ``REDIS_UNAVAILABLE``; the old value is then invalidated as soon as Redis answers.
        """
        ns, k = self._check(namespace, key)
        data = _pack(value)
        seconds = ttl or self.default_ttl
        self.drop_local(ns, [k])
        pipe = self.redis.pipeline(transaction=True)
        self._versions.bump(pipe, ns, [k])
        pipe.set(self.keys.cache(ns, k), data, px=max(1, int(seconds * 1000)))
        pipe.publish(self.keys.cache_channel(), self._invalidation(ns, [k]))
        await self._write(pipe, ns, [k])
        self._generation[ns] += 1
        self._local_put(ns, k, value, seconds)

    async def delete(self, namespace: str, *keys: str | int) -> None:
        """Remove keys everywhere: Redis, this process and (through pub/sub) every other one.

        The local copies go first. When Redis is unreachable this raises ``REDIS_UNAVAILABLE`` and
        retries the invalidation in the background until Redis answers.
        """
        if not keys:
            return
        checked = [self._check(namespace, key)[1] for key in keys]
        ns = namespace
        self.drop_local(ns, checked)
        await self._write(self._invalidate_pipe(ns, checked), ns, checked)

    def _invalidate_pipe(self, ns: str, keys: list[str]) -> Any:
        """One ``MULTI``: each key's generation moves on, then the values go and the others are told."""
        pipe = self.redis.pipeline(transaction=True)
        self._versions.bump(pipe, ns, keys)
        pipe.delete(*(self.keys.cache(ns, k) for k in keys))
        pipe.publish(self.keys.cache_channel(), self._invalidation(ns, keys))
        return pipe

    async def _write(self, pipe: Any, ns: str, keys: list[str]) -> None:
        """Run a write; when Redis is unreachable, remember to invalidate ``keys`` once it is back."""
        try:
            await self._execute(pipe, ns)
        except IPCError:
            self._pending.setdefault(ns, set()).update(keys)
            if not len(self._tasks):
                self._tasks.spawn(self._retry_pending(), name="invalidate")
            raise

    async def _flush_pending(self) -> None:
        """Send every invalidation still owed to Redis (raises ``IPCError`` while it is unreachable)."""
        for ns in list(self._pending):
            keys = sorted(self._pending.get(ns, ()))
            if keys:
                await self._execute(self._invalidate_pipe(ns, keys), ns)
            owed = self._pending.get(ns)
            if owed is not None:
                owed.difference_update(keys)
                if not owed:
                    del self._pending[ns]

    async def _retry_pending(self) -> None:
        backoff = Backoff(0.1, 5.0)
        while self._pending:
            await asyncio.sleep(backoff.next())
            try:
                await self._flush_pending()
            except IPCError:
                continue
            _log.info("cache: invalidations sent after Redis came back")

    async def _settle(self, ns: str, k: str) -> None:
        """Before reading ``k`` from Redis: send its owed invalidation, or fail as if Redis were down."""
        if k in self._pending.get(ns, ()):
            await self._flush_pending()

    async def _execute(self, pipe: Any, ns: str) -> None:
        try:
            async with self._inflight:
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise IPCError(f"cache {ns}: Redis is unreachable ({exc})", code=ErrorCode.REDIS_UNAVAILABLE) from exc

    def _invalidation(self, ns: str, keys: list[str] | None) -> bytes:
        event = Event(name=INVALIDATE_EVENT, data={"ns": ns, "keys": keys, "origin": self.instance})
        return pack(self.signer, self.keys.cache_channel(), event)

    # --- the local layer --------------------------------------------------------------------------
    def drop_local(self, namespace: str, keys: Iterable[str | int] | None = None) -> int:
        """Forget local copies of ``keys`` (all of the namespace when None); returns how many."""
        self._generation[namespace] += 1
        if keys is None:
            doomed = [entry for entry in self._local if entry[0] == namespace]
        else:
            doomed = [(namespace, str(k)) for k in keys]
        dropped = 0
        for entry in doomed:
            if self._local.pop(entry, None) is not None:
                dropped += 1
        return dropped

    def clear_local(self) -> None:
        """Forget every local copy (after a pub/sub reconnect, invalidations may have been missed)."""
        for ns in {ns for ns, _ in self._local}:
            self._generation[ns] += 1
        self._local.clear()

    def local_size(self) -> int:
        return len(self._local)

    def peek_local(self, namespace: str, key: str | int) -> tuple[bool, Any]:
        """``(True, value)`` when this process holds a fresh copy of the key, else ``(False, None)``.

        Synchronous and free of I/O, for decisions made inside discord.py's event parsers: a fresh
        local copy is exactly what :meth:`get_or_load` would answer with right now.
        """
        value = self._local_get(namespace, str(key))
        return (False, None) if value is _MISSING else (True, value)

    def _local_get(self, ns: str, k: str) -> Any:
        entry = self._local.get((ns, k))
        if entry is None:
            return _MISSING
        expires, value, refresh_from = entry
        now = time.monotonic()
        if expires <= now:
            del self._local[(ns, k)]
            return _MISSING
        if refresh_from <= now:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # a synchronous caller: the copy expires on time
                pass
            else:
                self._local[(ns, k)] = (expires, value, math.inf)  # one refresh at a time
                self._tasks.spawn(self._refresh(ns, k), name="refresh")
                self.refreshes += 1
        self._local.move_to_end((ns, k))
        return value

    async def _refresh(self, ns: str, k: str) -> None:
        """Read a key in use from Redis before its local copy expires (it replaces the copy when unchanged)."""
        try:
            await self._read(ns, k, with_generation=False)
        except IPCError:
            return  # Redis is down: the copy expires on time and the next read says so

    def _local_put(self, ns: str, k: str, value: Any, ttl: float) -> None:
        if self.local_max == 0 or self.local_ttl == 0:
            return
        life = min(ttl, self.local_ttl)
        now = time.monotonic()
        self._local[(ns, k)] = (now + life, value, now + life * (1.0 - self.refresh_ahead)
                                if self.refresh_ahead else math.inf)
        self._local.move_to_end((ns, k))
        while len(self._local) > self.local_max:
            self._local.popitem(last=False)

    def _count(self, ns: str, result: str) -> None:
        inc = self._counters.get((ns, result))
        if inc is None:
            inc = self._counters[(ns, result)] = REQUESTS.labels(ns, result).inc
        inc()

    async def _on_invalidation(self, channel: str, data: bytes) -> None:
        try:
            event = (await unpack(self.signer, channel, data)).message
        except IPCError as exc:
            DROPPED.labels(f"cache_{exc.context.get('reason', 'invalid')}").inc()
            return
        if not isinstance(event, Event) or event.name != INVALIDATE_EVENT:
            DROPPED.labels("cache_unexpected").inc()
            return
        ns, keys, origin = event.data.get("ns"), event.data.get("keys"), event.data.get("origin")
        if not isinstance(ns, str) or not (keys is None or isinstance(keys, list)):
            DROPPED.labels("cache_invalid").inc()
            return
        if origin == self.instance:
            return
        self.invalidations += 1
        self.drop_local(ns, None if keys is None else [str(k) for k in keys])

    @staticmethod
    def _check(namespace: str, key: str | int) -> tuple[str, str]:
        if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace):
            raise UsageError(f"bad cache namespace {namespace!r}: lowercase letters, digits and '_', up to 32")
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise UsageError(f"cache keys are strings or integers, not {type(key).__name__}")
        k = str(key)
        if not k or len(k) > 200:
            raise UsageError("cache keys are 1 to 200 characters")
        return namespace, k
