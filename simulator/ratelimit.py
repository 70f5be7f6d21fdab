"""Discord-like REST rate limits for the simulator: per-route buckets and one global limit.

Pure logic with an injectable clock, so it can be unit-tested without sleeping. The REST layer
(``simulator/rest_common.py``) asks :meth:`RateLimiter.hit` once per request and turns the
:class:`Decision` into ``X-RateLimit-*`` headers or a 429.

Buckets behave as Discord's do: a fixed window opens with the first request, allows ``limit``
requests, and resets ``window`` seconds later. A bucket is named by a hash
(``X-RateLimit-Bucket``) that does not include the major parameter; the counters are kept per
(bucket, major parameter), where the major parameter is the channel id, the guild id, or the
webhook id plus token of the path (Discord's "top-level resources").
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import SimConfig

__all__ = ("BucketSpec", "Decision", "RateLimiter", "default_buckets", "DEFAULT_BUCKET")


def _bucket_hash(name: str) -> str:
    return hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """One kind of per-route limit: ``limit`` requests per ``window`` seconds per major parameter.

    Parameters
    ----------
    name:
        A readable name; routes that share a limit share a name (and so the hash).
    limit:
        Requests allowed per window.
    window:
        Window length in seconds.
    """

    name: str
    limit: int
    window: float
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window <= 0:
            raise ValueError(f"bucket {self.name!r} needs limit >= 1 and window > 0")
        object.__setattr__(self, "hash", _bucket_hash(self.name))


#: Routes without a specific bucket share this one (per major parameter).
DEFAULT_BUCKET = BucketSpec("default", 50, 1.0)


def default_buckets(config: SimConfig) -> dict[str, BucketSpec]:
    """The simulator's bucket table, keyed by bucket name.

    Message sends follow ``config.message_limit`` per ``config.message_window``; the others are
    close to what Discord answers today (they change over time on Discord too).
    """
    specs = [
        BucketSpec("channel-messages-create", config.message_limit, config.message_window),
        BucketSpec("channel-messages-list", 50, 1.0),
        BucketSpec("channel-message-edit", 5, 5.0),
        BucketSpec("channel-message-delete", 5, 1.0),
        BucketSpec("channel-message-get", 50, 1.0),
        BucketSpec("channel-typing", 5, 5.0),
        BucketSpec("channel-get", 50, 1.0),
        BucketSpec("dm-create", 5, 1.0),
        BucketSpec("guild-get", 50, 1.0),
        BucketSpec("guild-members-list", 10, 10.0),
        BucketSpec("guild-member-get", 50, 1.0),
        BucketSpec("users-me", 50, 1.0),
        BucketSpec("application-get", 50, 1.0),
        BucketSpec("gateway", 50, 1.0),
        BucketSpec("application-commands", 10, 10.0),
        BucketSpec("interaction-callback", 20, 1.0),
        BucketSpec("webhook-execute", 5, 2.0),
        BucketSpec("webhook-message", 5, 1.0),
        DEFAULT_BUCKET,
    ]
    return {s.name: s for s in specs}


class Decision:
    """The outcome of one :meth:`RateLimiter.hit`.

    ``allowed`` False means answer 429; ``scope`` is then ``"user"`` (the route bucket) or
    ``"global"``. :meth:`headers` gives the headers every response carries.
    """

    __slots__ = ("allowed", "scope", "limit", "remaining", "reset_after", "reset_at_epoch", "bucket", "retry_after")

    def __init__(self, *, allowed: bool, scope: str | None, limit: int, remaining: int, reset_after: float,
                 reset_at_epoch: float, bucket: str | None, retry_after: float) -> None:
        self.allowed = allowed
        self.scope = scope
        self.limit = limit
        self.remaining = remaining
        self.reset_after = reset_after
        self.reset_at_epoch = reset_at_epoch
        self.bucket = bucket
        self.retry_after = retry_after

    @property
    def is_global(self) -> bool:
        return self.scope == "global"

    def headers(self) -> dict[str, str]:
        """``X-RateLimit-*`` headers, plus ``Retry-After``/scope on a rejection.

        A global 429 carries only the global headers, as in Discord's documented example.
        """
        if self.is_global:
            return {
                "Retry-After": str(math.ceil(self.retry_after)),
                "X-RateLimit-Global": "true",
                "X-RateLimit-Scope": "global",
            }
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": f"{self.reset_at_epoch:.3f}",
            "X-RateLimit-Reset-After": f"{self.reset_after:.3f}",
        }
        if self.bucket is not None:
            out["X-RateLimit-Bucket"] = self.bucket
        if not self.allowed:
            out["Retry-After"] = str(math.ceil(self.retry_after))
            out["X-RateLimit-Scope"] = self.scope or "user"
        return out


class _Window:
    __slots__ = ("count", "reset_at")

    def __init__(self, reset_at: float) -> None:
        self.count = 0
        self.reset_at = reset_at


class RateLimiter:
    """Per-route windows plus a bot-wide global window.

    Parameters
    ----------
    global_rate:
        Requests per ``global_window`` seconds across every non-exempt route (Discord: 50/s).
    clock:
        Monotonic seconds; injected by tests.
    wall:
        Epoch seconds, for ``X-RateLimit-Reset``; injected by tests.
    global_window:
        Length of the global window in seconds.
    """

    __slots__ = ("global_rate", "global_window", "_clock", "_wall", "_windows", "_global", "_prune_at")

    def __init__(self, global_rate: int, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, global_window: float = 1.0) -> None:
        if global_rate < 1 or global_window <= 0:
            raise ValueError("global_rate must be >= 1 and global_window > 0")
        self.global_rate = global_rate
        self.global_window = global_window
        self._clock = clock
        self._wall = wall
        self._windows: dict[tuple[str, str], _Window] = {}
        self._global: _Window | None = None
        self._prune_at = 1024

    def __len__(self) -> int:
        """Live (bucket, major) windows; expired ones are pruned as the table grows."""
        return len(self._windows)

    def reset(self) -> None:
        """Forget every window (a fresh bot)."""
        self._windows.clear()
        self._global = None

    def hit(self, spec: BucketSpec, major: str = "", *, exempt_global: bool = False) -> Decision:
        """Count one request on ``spec`` for ``major``; say whether it may proceed.

        The global limit is checked first; a request it rejects does not touch the route bucket.
        A request that passes the global check counts against it even if its route bucket then
        rejects it (Discord counts every request).
        """
        now = self._clock()
        if not exempt_global:
            g = self._global
            if g is None or now >= g.reset_at:
                g = self._global = _Window(now + self.global_window)
            if g.count >= self.global_rate:
                retry = max(g.reset_at - now, 0.001)
                return Decision(allowed=False, scope="global", limit=self.global_rate, remaining=0,
                                reset_after=retry, reset_at_epoch=self._wall() + retry, bucket=None,
                                retry_after=retry)
            g.count += 1

        key = (spec.name, major)
        w = self._windows.get(key)
        if w is None or now >= w.reset_at:
            if len(self._windows) >= self._prune_at:
                self._prune(now)
            w = self._windows[key] = _Window(now + spec.window)
        reset_after = max(w.reset_at - now, 0.001)
        if w.count >= spec.limit:
            return Decision(allowed=False, scope="user", limit=spec.limit, remaining=0, reset_after=reset_after,
                            reset_at_epoch=self._wall() + reset_after, bucket=spec.hash, retry_after=reset_after)
        w.count += 1
        return Decision(allowed=True, scope=None, limit=spec.limit, remaining=spec.limit - w.count,
                        reset_after=reset_after, reset_at_epoch=self._wall() + reset_after, bucket=spec.hash,
                        retry_after=0.0)

    def _prune(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if now >= w.reset_at]:
            del self._windows[key]
        self._prune_at = max(1024, 2 * len(self._windows))
