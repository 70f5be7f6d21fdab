"""Discord's invalid-request limit ("Cloudflare bans"), with an injectable clock.

``developers/topics/rate-limits.mdx``, "Invalid Request Limit aka Cloudflare bans": "IP addresses
that make too many invalid HTTP requests are automatically and temporarily restricted from accessing
the Discord API. Currently, this limit is 10,000 per 10 minutes. An invalid request is one that
results in 401, 403, or 429 statuses", and "429 errors returned with ``X-RateLimit-Scope: shared``
are not counted against you".

:class:`InvalidRequestLimit` counts those answers per client IP over a sliding window; one past
``limit`` bans the IP for ``ban`` seconds (Discord documents no duration). A banned IP gets what
Cloudflare sends instead of Discord's API: a 429 whose body is HTML, without Discord's ``Via``
header (:func:`banned_response`), which discord.py recognises as a ban and raises on at once
(``HTTPClient.request``: "Banned by Cloudflare more than likely"). ``--invalid-request-limit 0``
counts without ever banning.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from aiohttp import web

__all__ = ("InvalidRequestLimit", "banned_response", "counts_as_invalid")

#: What Cloudflare answers a banned client with (error 1015, "You are being rate limited").
_BAN_PAGE = (b"<!DOCTYPE html><html><head><title>Access denied | discord.com used Cloudflare to restrict access"
             b"</title></head><body><h1>Error 1015</h1><h2>You are being rate limited</h2><p>The owner of this "
             b"website (discord.com) has banned you temporarily from accessing this website.</p></body></html>")


def counts_as_invalid(response: web.StreamResponse) -> bool:
    """Whether a response counts toward the limit: 401, 403, and 429s other than ``shared`` ones."""
    status = response.status
    if status in (401, 403):
        return True
    return status == 429 and response.headers.get("X-RateLimit-Scope") != "shared"


def banned_response(retry_after: float) -> web.Response:
    """Cloudflare's answer to a banned IP: 429, an HTML body, ``Retry-After``, no ``Via``."""
    return web.Response(status=429, body=_BAN_PAGE, content_type="text/html",
                        headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class InvalidRequestLimit:
    """Invalid answers per IP over a sliding window, and the bans they earn.

    Parameters
    ----------
    limit:
        Invalid answers allowed per ``window``; one more bans the IP. 0: never ban (only count).
    window:
        Seconds of the sliding window (600 on Discord).
    ban:
        Seconds a ban lasts.
    clock:
        Monotonic seconds; injectable for tests.
    """

    __slots__ = ("limit", "window", "ban", "_clock", "_seen", "_banned_until")

    def __init__(self, limit: int, window: float, ban: float, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 0 or window <= 0 or ban < 0:
            raise ValueError("limit must be >= 0, window > 0 and ban >= 0")
        self.limit = limit
        self.window = window
        self.ban = ban
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._banned_until: dict[str, float] = {}

    def banned_for(self, ip: str) -> float:
        """Seconds left of ``ip``'s ban (0 when it is not banned)."""
        until = self._banned_until.get(ip)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._banned_until[ip]
            return 0.0
        return left

    def record(self, ip: str) -> bool:
        """Count one invalid answer to ``ip``; True when it starts a ban."""
        if not self.limit:
            return False
        now = self._clock()
        seen = self._seen.get(ip)
        if seen is None:
            seen = self._seen[ip] = deque()
        seen.append(now)
        while seen and now - seen[0] >= self.window:
            seen.popleft()
        if len(seen) <= self.limit:
            return False
        seen.clear()
        self._banned_until[ip] = now + self.ban
        return True

    def lift(self) -> None:
        """Forget every count and ban (``POST /_sim/reset-stats`` with ``rate_limits``)."""
        self._seen.clear()
        self._banned_until.clear()
