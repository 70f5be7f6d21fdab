"""Plug the shared REST limiter (:class:`~ipc.ratelimit.SharedRateLimiter`) and the per-process
invalid-request guard (:class:`~shard.rest_guard.LocalInvalidGuard`) into discord.py's HTTP path.

Where it plugs in, and why there
--------------------------------
discord.py 2.7 sends every REST call from ``HTTPClient.request`` and every webhook and
interaction call from ``AsyncWebhookAdapter.request``; both loop over up to five attempts (429
and 5xx retries) and send each attempt through the client's one ``aiohttp.ClientSession``
(interactions reuse it as ``state.http._HTTPClient__session``). Two small hooks cover all of it:

1. **Which route** — ``HTTPClient.request`` on this client, and ``request`` on the default
   webhook adapter, are wrapped (instance attributes, not class patches) to put the ``Route``'s
   key and major parameters in a context variable for the duration of the call.
2. **Each attempt** — an ``aiohttp.TraceConfig`` (discord.py's public ``http_trace`` option)
   awaits :meth:`~ipc.ratelimit.SharedRateLimiter.acquire` in ``on_request_start`` (no Redis call
   when the cluster holds a lease, at most one round trip otherwise), records the response in
   ``on_request_end`` (before discord.py reads it; applied locally at once, nothing awaited on
   Redis) or releases the slot in ``on_request_exception``. Nothing here holds a lock.

The local guard
---------------
Every response to a routed request that counts toward Discord's invalid-request ban (401, 403,
non-``shared`` 429) is counted by the process's :class:`~shard.rest_guard.LocalInvalidGuard`, with
or without a shared limiter. While no shared guard is in charge (no limiter installed, i.e.
``INNKEEPER_SHARED_RATELIMIT=false``, or the limiter fell back because Redis is unreachable), the
local guard delays or refuses (:class:`~ipc.ratelimit.RequestRefused`) each request before it
leaves, as the shared guard would. Interaction callbacks are never delayed or refused by either.

This keeps discord.py's own code untouched: its local ``Ratelimit`` buckets, its 429 retry loop and
its global event still run, so when Redis is down (the limiter steps aside) the bot behaves
exactly like stock discord.py. Wrapping ``request`` alone would miss the retries inside it and the
webhook path; replacing the session would break on re-login; subclassing ``HTTPClient`` would
force a custom client on the bot. Requests without a route in context (the gateway websocket,
CDN downloads) pass through untouched.

Interaction callbacks (``POST /interactions/{id}/{token}/callback``) are exempt from the global
limit, as on Discord, are not bucket-limited (each can happen once), and are never delayed or
refused by an invalid-request guard; their responses still count for it. Follow-ups and other
webhook calls use their per-webhook buckets (major parameters ``webhook_id+token``, the token
stored only as a digest) and, conservatively, count toward the global limit.

Interaction follow-ups (``/webhooks/{webhook_id}/{webhook_token}…``: the follow-up messages and
edits of the original response, the only webhooks this bot uses) are never delayed or refused by
the invalid-request guards either: after a deferral they are the only way to tell the user
anything, including that the bot is cooling down. They keep their buckets and the global limit.

Circuit breakers
----------------
With :class:`~innkeeper.breakers.Breakers` given, the hook feeds two of them. ``discord_rest``:
every routed attempt takes a permit; a 5xx answer or a failed connection is a failure, any other
answer a success. While it is open, requests are refused before they leave with
:class:`~innkeeper.breakers.DependencyDown` (``E6003``, "Discord's API is unreachable…"), except
interaction callbacks and follow-ups, which always go (they are how users hear about it).
``http``: requests of the session without a route (CDN downloads; never the gateway's websocket),
judged the same way. The breaker is asked first, so a refused request spends no rate-limit token.

Install before login: the trace config must be in place when discord.py creates its session in
``static_login``. In a bot, call :func:`install` in ``__init__``; install it even without a shared
limiter, for the local guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from contextvars import ContextVar
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord.http import HTTPClient, Route
from discord.webhook.async_ import async_context

from innkeeper.breakers import DependencyDown
from innkeeper.errors import UsageError
from ipc.ratelimit import RequestRefused, ResponseInfo, SharedRateLimiter, Ticket, WaitTooLong

from .rest_guard import LocalInvalidGuard

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from innkeeper.breakers import Breaker, Breakers, Permit

__all__ = ("install", "limiter_of", "hook_of", "RestHook", "INTERACTION_CALLBACK_PATH", "major_parameters")

_log = logging.getLogger(__name__)

INTERACTION_CALLBACK_PATH = "/interactions/{webhook_id}/{webhook_token}/callback"
#: Interaction follow-ups and edits of the original response (token-authenticated webhook routes).
FOLLOWUP_PATH_PREFIX = "/webhooks/{webhook_id}/{webhook_token}"


class _RouteInfo:
    __slots__ = ("key", "major", "global_exempt", "bucket_exempt", "guard_exempt", "breaker_exempt", "max_wait")

    def __init__(self, route: Route, max_wait: float | None) -> None:
        callback = route.path == INTERACTION_CALLBACK_PATH
        followup = route.path.startswith(FOLLOWUP_PATH_PREFIX)
        self.key = route.key
        self.major = major_parameters(route)
        self.global_exempt = callback
        self.bucket_exempt = callback
        #: Never delayed or refused by an invalid-request guard, nor by an open breaker: a user's answer.
        self.guard_exempt = callback or followup
        self.breaker_exempt = callback or followup
        self.max_wait = max_wait


def major_parameters(route: Route) -> str:
    """discord.py's ``Route.major_parameters``, with a webhook token replaced by a digest of it.

    The major parameters end up in Redis key names; interaction and webhook tokens are credentials
    and must not.
    """
    if route.webhook_token is None:
        return route.major_parameters
    digest = hashlib.sha256(str(route.webhook_token).encode()).hexdigest()[:20]
    parts = (route.channel_id, route.guild_id, route.webhook_id)
    return "+".join([*(str(p) for p in parts if p is not None), "t" + digest])


_ROUTE: ContextVar[_RouteInfo | None] = ContextVar("innkeeper_rest_route", default=None)
_WEBHOOK_PATCHED = "_innkeeper_route_wrapped"


class RestHook:
    """What :func:`install` attached to one ``HTTPClient``.

    Attributes
    ----------
    limiter:
        The :class:`~ipc.ratelimit.SharedRateLimiter` consulted for every attempt, or None.
    guard:
        The process's :class:`~shard.rest_guard.LocalInvalidGuard`.
    enabled:
        Set to False to let requests through without consulting the limiter (the local guard
        still counts and, with no shared guard in charge, still acts).
    rest_breaker, http_breaker:
        The ``discord_rest`` and ``http`` circuit breakers, or None.
    slow_call_s:
        An attempt cancelled after running this long counts as a failure for its breaker.
    """

    __slots__ = ("http", "limiter", "guard", "enabled", "rest_breaker", "http_breaker", "slow_call_s", "_warned")

    def __init__(self, http: HTTPClient, limiter: SharedRateLimiter | None,
                 guard: LocalInvalidGuard | None = None, breakers: Breakers | None = None,
                 slow_call_s: float = 5.0) -> None:
        self.http = http
        self.limiter = limiter
        self.guard = guard or LocalInvalidGuard()
        self.enabled = True
        self.rest_breaker: Breaker | None = breakers["discord_rest"] if breakers is not None else None
        self.http_breaker: Breaker | None = breakers["http"] if breakers is not None else None
        self.slow_call_s = slow_call_s
        self._warned = False

    @property
    def shared_guard(self) -> bool:
        """True while the shared limiter's guard is in charge (then the local one only counts)."""
        return self.enabled and self.limiter is not None and self.limiter.shared

    def _unexpected(self, where: str) -> None:
        if not self._warned:
            self._warned = True
            _log.exception("shared rate limiter failed in %s; letting the request through (logged once)", where)

    async def on_request_start(self, session: aiohttp.ClientSession, ctx: SimpleNamespace,
                               params: aiohttp.TraceRequestStartParams) -> None:
        info = _ROUTE.get()
        if info is None:
            if self.http_breaker is not None and params.headers.get("Upgrade", "").lower() != "websocket":
                ctx.innkeeper_breaker, ctx.innkeeper_permit = self.http_breaker, _admit(self.http_breaker, "http")
            return
        if self.rest_breaker is not None:
            ctx.innkeeper_breaker = self.rest_breaker
            ctx.innkeeper_permit = _admit(self.rest_breaker, "discord_rest", exempt=info.breaker_exempt)
        try:
            await self._take_turn(ctx, info)
        except BaseException:  # refused or cancelled before leaving: aiohttp reports nothing more
            _settle(ctx, None, self.slow_call_s, sent=False)
            raise
        ctx.innkeeper_routed = True

    async def _take_turn(self, ctx: SimpleNamespace, info: _RouteInfo) -> None:
        if not info.guard_exempt and not self.shared_guard:
            delay = self.guard.check()  # raises RequestRefused from the hard threshold on
            if delay > 0:
                await asyncio.sleep(delay)
        if self.limiter is None or not self.enabled:
            return
        try:
            ctx.innkeeper_ticket = await self.limiter.acquire(
                info.key, info.major, global_exempt=info.global_exempt, bucket_exempt=info.bucket_exempt,
                guard_exempt=info.guard_exempt, max_wait=info.max_wait)
        except WaitTooLong as exc:
            raise discord.RateLimited(exc.retry_after) from None
        except RequestRefused:
            raise
        except Exception:
            self._unexpected("acquire")

    async def on_request_end(self, session: aiohttp.ClientSession, ctx: SimpleNamespace,
                             params: aiohttp.TraceRequestEndParams) -> None:
        _settle(ctx, params.response.status, self.slow_call_s)
        if not getattr(ctx, "innkeeper_routed", False):
            return
        ctx.innkeeper_routed = False
        ticket: Ticket | None = getattr(ctx, "innkeeper_ticket", None)
        ctx.innkeeper_ticket = None
        response = params.response
        if ticket is None and response.status not in (401, 403, 429):
            return
        try:
            retry_after: float | None = None
            is_global: bool | None = None
            if response.status == 429:
                retry_after, is_global = await _body_retry_after(response)
            info = ResponseInfo(response.status, response.headers, body_retry_after=retry_after,
                                body_global=is_global)
            if info.counts_as_invalid:
                self.guard.record()
            if ticket is not None and self.limiter is not None:
                self.limiter.update(ticket, info)  # applied locally; no Redis round trip here
        except Exception:
            self._unexpected("update")

    async def on_request_exception(self, session: aiohttp.ClientSession, ctx: SimpleNamespace,
                                   params: aiohttp.TraceRequestExceptionParams) -> None:
        _settle(ctx, params.exception, self.slow_call_s)
        ticket: Ticket | None = getattr(ctx, "innkeeper_ticket", None)
        if ticket is None:
            return
        ctx.innkeeper_ticket = None
        if self.limiter is None:
            return
        try:
            self.limiter.release(ticket)  # queued for the limiter's next round trip; nothing awaited here
        except Exception:
            self._unexpected("release")


def _admit(breaker: Breaker, name: str, *, exempt: bool = False) -> Permit | None:
    """A permit for one attempt; :class:`DependencyDown` while the breaker is open (None for exempt requests)."""
    if exempt and breaker.refuses():
        return None  # it goes anyway; its outcome does not count while the breaker is open
    permit = breaker.enter()
    if permit is None:
        raise DependencyDown(name, breaker.retry_after())
    return permit


def _settle(ctx: SimpleNamespace, outcome: int | BaseException | None, slow_call_s: float, *,
            sent: bool = True) -> None:
    """Tell the attempt's breaker how it went: a status, the exception it failed with, or nothing."""
    permit: Permit | None = getattr(ctx, "innkeeper_permit", None)
    breaker: Breaker | None = getattr(ctx, "innkeeper_breaker", None)
    ctx.innkeeper_permit = None
    if permit is None or breaker is None:
        return
    if not sent or outcome is None:
        breaker.release(permit)
    elif isinstance(outcome, int):
        (breaker.failure if outcome >= 500 else breaker.success)(permit)
    elif isinstance(outcome, Exception):
        breaker.failure(permit)  # no answer: refused, reset, timed out
    elif breaker.age(permit) >= slow_call_s:  # cancelled while hanging
        breaker.failure(permit)
    else:
        breaker.release(permit)


async def _body_retry_after(response: aiohttp.ClientResponse) -> tuple[float | None, bool | None]:
    """``retry_after`` and ``global`` from a 429's JSON body (aiohttp caches it for discord.py)."""
    with contextlib.suppress(Exception):
        data = json.loads(await response.read())
        if isinstance(data, dict):
            retry = data.get("retry_after")
            retry_f = float(retry) if isinstance(retry, int | float) and not isinstance(retry, bool) else None
            return retry_f, bool(data.get("global", False))
    return None, None


def _wrap_route(func: Callable[..., Coroutine[Any, Any, Any]], max_wait: Callable[[], float | None]
                ) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def request(route: Route, *args: Any, **kwargs: Any) -> Any:
        token = _ROUTE.set(_RouteInfo(route, max_wait()))
        try:
            return await func(route, *args, **kwargs)
        finally:
            _ROUTE.reset(token)

    setattr(request, _WEBHOOK_PATCHED, True)
    return request


def _patch_webhook_adapter() -> None:
    adapter = async_context.get()
    if getattr(adapter.request, _WEBHOOK_PATCHED, False):
        return
    adapter.request = _wrap_route(adapter.request, lambda: None)  # type: ignore[method-assign]


def install(target: discord.Client | HTTPClient, limiter: SharedRateLimiter | None = None, *,
            guard: LocalInvalidGuard | None = None, breakers: Breakers | None = None) -> RestHook:
    """Send every REST, webhook and interaction request of ``target`` through ``limiter`` and ``guard``.

    Parameters
    ----------
    target:
        A ``discord.Client`` (``AutoShardedBot``…) or its ``HTTPClient``, not yet logged in.
    limiter:
        The shared limiter, or None (``INNKEEPER_SHARED_RATELIMIT=false``: discord.py's own limits).
    guard:
        The process's invalid-request guard (a default one when None).
    breakers:
        The process's circuit breakers (``discord_rest`` and ``http`` are fed and obeyed), or None.

    Raises
    ------
    UsageError
        ``target`` already logged in (its session's trace configs are frozen), or already has the
        hook installed.
    """
    http: HTTPClient = target.http if isinstance(target, discord.Client) else target
    if not isinstance(http, HTTPClient):
        raise UsageError(f"install() needs a discord.Client or discord.http.HTTPClient, not {type(target).__name__}")
    if getattr(http, "_innkeeper_rest_hook", None) is not None:
        raise UsageError("the REST hook (shared limiter, invalid-request guard) is already installed on this client")
    if getattr(http, "_HTTPClient__session", None):
        raise UsageError("install the REST hook before login: discord.py's HTTP session already exists")
    hook = RestHook(http, limiter, guard, breakers)
    trace = http.http_trace or aiohttp.TraceConfig()
    trace.on_request_start.append(hook.on_request_start)
    trace.on_request_end.append(hook.on_request_end)
    trace.on_request_exception.append(hook.on_request_exception)
    http.http_trace = trace
    http.request = _wrap_route(http.request, lambda: http.max_ratelimit_timeout)  # type: ignore[method-assign]
    _patch_webhook_adapter()
    http._innkeeper_rest_hook = hook  # type: ignore[attr-defined]
    return hook


def hook_of(target: discord.Client | HTTPClient) -> RestHook | None:
    """The hook :func:`install` put on ``target``, or None."""
    http = target.http if isinstance(target, discord.Client) else target
    hook: RestHook | None = getattr(http, "_innkeeper_rest_hook", None)
    return hook


def limiter_of(target: discord.Client | HTTPClient) -> SharedRateLimiter | None:
    """The shared limiter :func:`install` put on ``target``, or None (stock discord.py limits)."""
    hook = hook_of(target)
    return hook.limiter if hook is not None else None
