"""The machinery every simulated REST route shares: auth, faults, rate limits, errors, bodies.

Each route is declared once with :func:`route` (method, path, bucket, whether it needs the bot's
token, whether it is exempt from the global limit) and registered under ``/api/v10`` and
``/api/v9`` by :func:`register`. The wrapper built by :func:`_wrap` runs, per request:

1. ``stats.requests += 1``;
2. the invalid-request ban: a banned IP gets Cloudflare's 429 and nothing else
   (:mod:`simulator.invalid_requests`);
3. the ``Authorization: Bot <token>`` check against the application's current token (401);
4. REST faults from ``state.rest_faults`` (latency, then an injected error status): a held
   request whose client hangs up is dropped unhandled when its fault says ``if_client_gone:
   drop`` (see :func:`_hold`);
5. the global limit and the route bucket (429 with Discord's body and headers);
6. the handler, whose :class:`RestError` becomes Discord's JSON error shape and whose unexpected
   exceptions become a logged 500, never a crash;
7. whatever answered, a 401, a 403 or a 429 that is not ``shared`` counts in ``invalid_requests``
   and toward the IP's ban, as Discord counts them.

Every JSON answer has ``Content-Type: application/json`` exactly: discord.py parses a body as JSON
only when the header is exactly that (``json_or_text`` in ``discord/http.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from .invalid_requests import InvalidRequestLimit, banned_response, counts_as_invalid
from .ratelimit import DEFAULT_BUCKET, BucketSpec, RateLimiter, default_buckets
from .state import STATE_KEY, SimState

__all__ = (
    "API_PREFIXES", "JSON_CT", "LIMITER_KEY", "RestError", "RestRoute", "Handler", "dumps", "json_response",
    "error_response", "empty_response", "form_error", "read_body", "int_param", "register", "route", "take_faults",
    "rate_limited_response", "ParsedBody", "MAX_UPLOAD_BYTES", "INVALID_REQUESTS_KEY", "guarded",
)

_log = logging.getLogger(__name__)

API_PREFIXES = ("/api/v10", "/api/v9")
JSON_CT = "application/json"
#: What INTERACTION_CREATE advertises as ``attachment_size_limit``; bigger uploads get 413.
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
#: Where :func:`register` keeps the app's :class:`RateLimiter` and bucket table.
LIMITER_KEY = web.AppKey("innkeeper_sim_ratelimiter", RateLimiter)
#: Where :func:`register` keeps the app's :class:`~simulator.invalid_requests.InvalidRequestLimit`.
INVALID_REQUESTS_KEY = web.AppKey("innkeeper_sim_invalid_requests", InvalidRequestLimit)
_BUCKETS_KEY = web.AppKey("innkeeper_sim_buckets", dict)

Handler = Callable[[web.Request, SimState], Awaitable[web.StreamResponse]]

_STATUS_TEXT = {400: "400: Bad Request", 401: "401: Unauthorized", 403: "Missing Access", 404: "404: Not Found",
                405: "405: Method Not Allowed", 413: "Request entity too large", 500: "500: Internal Server Error",
                502: "502: Bad Gateway", 503: "503: Service Unavailable", 504: "504: Gateway Timeout"}
_STATUS_CODE = {403: 50001, 413: 40005}


def dumps(obj: Any) -> bytes:
    """Compact JSON, UTF-8, as Discord sends it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response whose Content-Type is exactly ``application/json`` (no charset)."""
    resp = web.Response(body=dumps(data), status=status, headers=headers)
    resp.headers["Content-Type"] = JSON_CT
    return resp


def empty_response(headers: dict[str, str] | None = None) -> web.Response:
    """204 No Content, as Discord answers deletes and typing."""
    return web.Response(status=204, headers=headers)


def error_response(status: int, code: int | None = None, message: str | None = None,
                   errors: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> web.Response:
    """Discord's error body: ``{"message", "code"[, "errors"]}``."""
    body: dict[str, Any] = {"message": message or _STATUS_TEXT.get(status, f"{status}: Error"),
                            "code": _STATUS_CODE.get(status, 0) if code is None else code}
    if errors:
        body["errors"] = errors
    return json_response(body, status, headers)


class RestError(Exception):
    """Raised by a handler to answer with Discord's error shape."""

    __slots__ = ("status", "code", "message", "errors")

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.errors)


def form_error(field: str, code: str, message: str) -> RestError:
    """A 50035 Invalid Form Body for one field, nested as Discord nests it (``a.b`` → ``{a:{b:…}}``)."""
    leaf: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(field.split(".")):
        leaf = {part: leaf}
    return RestError(400, 50035, "Invalid Form Body", leaf)


def int_param(value: str | None, name: str, *, default: int | None = None, lo: int | None = None,
              hi: int | None = None) -> int | None:
    """A query-string integer (snowflake or limit), validated the way Discord does (50035 on junk)."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise form_error(name, "NUMBER_TYPE_COERCE", f"Value \"{value[:40]}\" is not int.") from None
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise form_error(name, "NUMBER_TYPE_MAX" if hi is not None and number > hi else "NUMBER_TYPE_MIN",
                         f"Value must be between {lo} and {hi}.")
    return number


@dataclass(slots=True)
class ParsedBody:
    """A request body: the JSON payload and, for multipart requests, the uploaded files."""

    payload: Any
    #: ``{"name": field name, "filename", "size", "content_type"}`` per uploaded file.
    files: list[dict[str, Any]]


async def read_body(request: web.Request, *, required: bool = True) -> ParsedBody:
    """Parse a JSON or ``multipart/form-data`` (``payload_json`` + ``files[n]``) body.

    Raises :class:`RestError` 50109 for unparseable JSON, 50035 for a missing body, 413 for an
    upload past :data:`MAX_UPLOAD_BYTES`.
    """
    ctype = request.content_type
    if ctype.startswith("multipart/"):
        return await _read_multipart(request)
    raw = await request.read()
    if not raw.strip():
        if required:
            raise form_error("_body", "BASE_TYPE_REQUIRED", "This field is required")
        return ParsedBody(None, [])
    try:
        return ParsedBody(json.loads(raw), [])
    except (ValueError, UnicodeDecodeError):
        raise RestError(400, 50109, "The request body contains invalid JSON.") from None


async def _read_multipart(request: web.Request) -> ParsedBody:
    payload: Any = None
    files: list[dict[str, Any]] = []
    total = 0
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue  # nested multipart: Discord ignores it too
            if part.name == "payload_json":
                text = await part.text()
                try:
                    payload = json.loads(text)
                except ValueError:
                    raise RestError(400, 50109, "The request body contains invalid JSON.") from None
                continue
            size = 0
            while chunk := await part.read_chunk(65536):
                size += len(chunk)
                total += len(chunk)
                if total > MAX_UPLOAD_BYTES:
                    raise RestError(413, 40005, "Request entity too large")
            files.append({"name": part.name, "filename": part.filename, "size": size,
                          "content_type": part.headers.get("Content-Type")})
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:  # malformed multipart framing
        raise RestError(400, 50035, "Invalid Form Body",
                        {"_body": {"_errors": [{"code": "MULTIPART_INVALID", "message": str(exc)[:200]}]}}) from None
    if payload is None and not files:
        raise form_error("payload_json", "BASE_TYPE_REQUIRED", "This field is required")
    return ParsedBody(payload, files)


@dataclass(frozen=True, slots=True)
class RestRoute:
    """One REST endpoint as declared by :func:`route`."""

    method: str
    path: str
    handler: Handler
    bucket: str
    auth: bool = True
    exempt_global: bool = False


def route(method: str, path: str, handler: Handler, bucket: str, *, auth: bool = True,
          exempt_global: bool = False) -> RestRoute:
    return RestRoute(method, path, handler, bucket, auth, exempt_global)


def register(app: web.Application, routes: list[RestRoute]) -> None:
    """Add ``routes`` under every prefix in :data:`API_PREFIXES` (creates the limiter once per app)."""
    state = app[STATE_KEY]
    if LIMITER_KEY not in app:
        config = state.config
        app[LIMITER_KEY] = RateLimiter(config.global_rate, clock=state.clock)
        app[_BUCKETS_KEY] = default_buckets(config)
        app[INVALID_REQUESTS_KEY] = InvalidRequestLimit(config.invalid_request_limit, config.invalid_request_window,
                                                        config.invalid_request_ban, state.clock)
    buckets: dict[str, BucketSpec] = app[_BUCKETS_KEY]
    for r in routes:
        spec = buckets.get(r.bucket, DEFAULT_BUCKET)
        wrapped = _wrap(r, spec)
        for prefix in API_PREFIXES:
            app.router.add_route(r.method, prefix + r.path, wrapped)


def _major(info: Any) -> str:
    return "+".join(info[k] for k in ("channel_id", "guild_id", "webhook_id", "webhook_token") if k in info)


def take_faults(state: SimState, method: str, path: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Consume the first matching latency fault and the first matching http_error fault.

    A fault's ``route`` matches when it is a substring of the path, optionally preceded by a
    method (``"POST /messages"``); ``None`` matches every request.
    """
    latency = error = None
    faults = state.rest_faults
    i = 0
    while i < len(faults):
        fault = faults[i]
        kind = fault.get("kind")
        wanted = (kind == "latency" and latency is None) or (kind == "http_error" and error is None)
        if wanted and _fault_matches(fault.get("route"), method, path):
            fault["count"] = int(fault.get("count", 1)) - 1
            if kind == "latency":
                latency = fault
            else:
                error = fault
            state.stats.faults_applied += 1
            if fault["count"] <= 0:
                del faults[i]
                continue
        i += 1
    return latency, error


#: Held requests whose handling goes on whatever happens to their client (strong references).
_COMPLETING: set[asyncio.Task[web.StreamResponse]] = set()


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _hold(request: web.Request, state: SimState, fault: dict[str, Any]) -> bool:
    """Hold ``request`` for the latency fault's ``ms``; False when it is dropped instead of handled.

    ``if_client_gone``: ``complete`` (the default) handles the request after the delay even when
    its client hung up meanwhile, as a server that already received it does (a JSON body is read
    before the delay; a multipart upload is read after it, so its client must stay); ``drop`` stops
    holding it as soon as the client is gone and never handles it, as a request lost on its way
    (a client killed while it waited has then sent nothing). Held requests are listed in
    ``state.held_requests`` while they wait.
    """
    seconds = max(0.0, float(fault.get("ms", 0))) / 1000
    drop = fault.get("if_client_gone") == "drop"
    held = {"method": request.method, "path": request.path, "ms": fault.get("ms", 0),
            "if_client_gone": fault.get("if_client_gone", "complete")}
    state.held_requests.append(held)
    try:
        if not drop:
            await asyncio.sleep(seconds)
            return True
        deadline = asyncio.get_running_loop().time() + seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            if _client_gone(request):
                state.stats.dropped_requests += 1
                return False
            await asyncio.sleep(min(left, 0.02))
        if _client_gone(request):
            state.stats.dropped_requests += 1
            return False
        return True
    except asyncio.CancelledError:  # a web server that cancels handlers when their client goes
        if drop:
            state.stats.dropped_requests += 1
        raise
    finally:
        state.held_requests.remove(held)


def _fault_matches(pattern: str | None, method: str, path: str) -> bool:
    if not pattern:
        return True
    head, sep, rest = pattern.partition(" ")
    if sep and head.isupper() and head.isalpha():
        return head == method and rest in path
    return pattern in path


def rate_limited_response(state: SimState, retry_after: float, scope: str, headers: dict[str, str]) -> web.Response:
    """A 429 discord.py rides out: JSON body with ``retry_after``/``global``, ``Via`` header, scope.

    Counts ``stats.rate_limited[scope]`` (``_wrap`` counts user and global 429s as invalid requests).
    """
    state.stats.rate_limited[scope] = state.stats.rate_limited.get(scope, 0) + 1
    message = "The resource is being rate limited." if scope == "shared" else "You are being rate limited."
    body = {"message": message, "retry_after": round(retry_after, 3), "global": scope == "global", "code": 0}
    headers = dict(headers)
    headers["Via"] = "1.1 google"
    headers.setdefault("X-RateLimit-Scope", scope)
    return json_response(body, 429, headers)


def _injected_error(state: SimState, fault: dict[str, Any], spec: BucketSpec) -> web.Response:
    status = int(fault.get("status", 500))
    if status == 429:
        scope = str(fault.get("scope") or "user")
        retry = float(fault.get("retry_after", 0.5))
        headers = {"Retry-After": str(math.ceil(retry)), "X-RateLimit-Scope": scope}
        if scope == "global":
            headers["X-RateLimit-Global"] = "true"
        else:
            headers["X-RateLimit-Bucket"] = spec.hash
        return rate_limited_response(state, retry, scope, headers)
    return error_response(status)


def _wrap(r: RestRoute, spec: BucketSpec) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    handler = r.handler
    needs_auth = r.auth
    exempt = r.exempt_global

    async def respond(request: web.Request, state: SimState) -> web.StreamResponse:
        if needs_auth and request.headers.get("Authorization") != "Bot " + state.application.token:
            return error_response(401, 0, "401: Unauthorized")
        if state.rest_faults:
            latency, error = take_faults(state, request.method, request.path)
            if latency is not None and latency.get("if_client_gone") == "drop":
                if not await _hold(request, state, latency):
                    return error_response(499, 0, "Client Closed Request")  # nobody reads it: the client is gone
            elif latency is not None:
                # The server has the request: it completes even when the client hangs up meanwhile (and the
                # web server cancels this handler), so the rest runs in a task of its own.
                async def held() -> web.StreamResponse:
                    if not request.content_type.startswith("multipart/"):
                        try:
                            await request.read()  # received with the request (kept: handlers read it again)
                        except ConnectionResetError:
                            return error_response(499, 0, "Client Closed Request")
                    await _hold(request, state, latency)
                    return await proceed(request, state, error)
                task = asyncio.create_task(held())
                _COMPLETING.add(task)
                task.add_done_callback(_COMPLETING.discard)
                return await asyncio.shield(task)
            return await proceed(request, state, error)
        return await proceed(request, state, None)

    async def proceed(request: web.Request, state: SimState, error: dict[str, Any] | None) -> web.StreamResponse:
        app = request.app
        if error is not None:
            return _injected_error(state, error, spec)
        decision = app[LIMITER_KEY].hit(spec, _major(request.match_info), exempt_global=exempt)
        headers = decision.headers()
        if not decision.allowed:
            return rate_limited_response(state, decision.retry_after, decision.scope or "user", headers)
        try:
            response = await handler(request, state)
        except RestError as exc:
            response = exc.response()
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("simulator REST handler failed", extra={"method": request.method, "path": request.path})
            response = error_response(500)
        response.headers.update(headers)
        return response

    async def handle(request: web.Request) -> web.StreamResponse:
        return await guarded(request, respond)

    handle.__name__ = getattr(handler, "__name__", "handle")
    return handle


async def guarded(request: web.Request, respond: Handler) -> web.StreamResponse:
    """Serve ``request`` with ``respond`` unless its IP is banned; count invalid answers toward the ban."""
    app = request.app
    state = app[STATE_KEY]
    state.stats.requests += 1
    limit = app[INVALID_REQUESTS_KEY]
    ip = request.remote or "?"
    left = limit.banned_for(ip)
    if left:
        state.stats.banned_requests += 1
        return banned_response(left)
    response = await respond(request, state)
    if counts_as_invalid(response):  # every 401/403/429 counts toward Discord's ban, whatever answered it
        state.stats.invalid_requests += 1
        if limit.record(ip):
            state.stats.invalid_request_bans += 1
            _log.warning("%s made more than %d invalid requests in %.0fs: banned for %.0fs", ip, limit.limit,
                         limit.window, limit.ban)
    return response
