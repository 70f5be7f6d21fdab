"""Not tests: a tiny Discord REST stand-in that enforces Discord's limits strictly, for the rate-limit tests.

Buckets are fixed windows opened by the first request (Discord's behaviour, and the simulator's),
``bucket_limit`` per ``bucket_window`` seconds per channel. The global limit is the strictest
reading of "N per second": at most ``global_rate`` requests in *any* ``global_window``-second span
(a sliding log), interaction callbacks exempt. Every 429 carries Discord's body and headers
(``Via``, ``Retry-After``, ``X-RateLimit-Scope``) so discord.py treats it as a real rate limit.
"""

from __future__ import annotations

import collections
import json
import math
import time
from typing import Any

from aiohttp import web

__all__ = ("FakeDiscord",)

_BUCKET_HASH = "fakemsgs0000"


class FakeDiscord:
    """Counts what it served; ``ok_times`` are monotonic arrival times of accepted requests."""

    def __init__(self, *, bucket_limit: int = 5, bucket_window: float = 1.0, global_rate: int = 50,
                 global_window: float = 1.0) -> None:
        self.bucket_limit = bucket_limit
        self.bucket_window = bucket_window
        self.global_rate = global_rate
        self.global_window = global_window
        self._windows: dict[str, tuple[float, int]] = {}
        self._global: collections.deque[float] = collections.deque()
        self.ok_times: list[float] = []
        self.callbacks = 0
        self.limited: collections.Counter[str] = collections.Counter()
        self.app = web.Application()
        self.app.router.add_get("/api/v10/users/@me", self._me)
        self.app.router.add_post("/api/v10/channels/{channel_id}/messages", self._send)
        self.app.router.add_post("/api/v10/interactions/{iid}/{token}/callback", self._callback)

    @property
    def total_429(self) -> int:
        return sum(self.limited.values())

    def _json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        resp = web.Response(body=json.dumps(data).encode(), status=status, headers=headers)
        resp.headers["Content-Type"] = "application/json"
        return resp

    def _rate_limited(self, scope: str, retry_after: float, extra: dict[str, str] | None = None) -> web.Response:
        self.limited[scope] += 1
        headers = {"Via": "1.1 google", "Retry-After": str(math.ceil(retry_after)), "X-RateLimit-Scope": scope,
                   **(extra or {})}
        if scope == "global":
            headers["X-RateLimit-Global"] = "true"
        return self._json({"message": "You are being rate limited.", "retry_after": round(retry_after, 3),
                           "global": scope == "global"}, 429, headers)

    def _check_global(self, now: float) -> web.Response | None:
        log = self._global
        while log and log[0] <= now - self.global_window:
            log.popleft()
        if len(log) >= self.global_rate:
            return self._rate_limited("global", log[0] + self.global_window - now)
        log.append(now)
        return None

    async def _me(self, request: web.Request) -> web.Response:
        limited = self._check_global(time.monotonic())
        if limited is not None:
            return limited
        return self._json({"id": "1", "username": "bot", "discriminator": "0", "global_name": None,
                           "avatar": None, "bot": True})

    async def _send(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        limited = self._check_global(now)
        if limited is not None:
            return limited
        channel = request.match_info["channel_id"]
        reset_at, count = self._windows.get(channel, (0.0, 0))
        if now >= reset_at:
            reset_at, count = now + self.bucket_window, 0
        reset_after = max(reset_at - now, 0.0)
        base = {"X-RateLimit-Limit": str(self.bucket_limit), "X-RateLimit-Bucket": _BUCKET_HASH,
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}"}
        if count >= self.bucket_limit:
            self._windows[channel] = (reset_at, count)
            return self._rate_limited("user", reset_after, {**base, "X-RateLimit-Remaining": "0"})
        count += 1
        self._windows[channel] = (reset_at, count)
        self.ok_times.append(now)
        await request.read()
        return self._json({"id": str(len(self.ok_times)), "channel_id": channel, "content": "ok"},
                          headers={**base, "X-RateLimit-Remaining": str(self.bucket_limit - count)})

    async def _callback(self, request: web.Request) -> web.Response:
        self.callbacks += 1
        return web.Response(status=204)

    def served_in(self, start: float, seconds: float) -> int:
        """Accepted requests that arrived in ``[start, start + seconds)``."""
        return sum(1 for t in self.ok_times if start <= t < start + seconds)
