"""Input checking and error handling for the control API (``/_sim/…``).

Every control handler is wrapped by :func:`control_handler`: a :class:`ControlError` becomes a JSON
``{"error": …}`` with its status, anything unexpected a logged 500; the server never crashes on a
bad request. The field readers name the field and what was wrong in the message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .rest_common import json_response
from .rest_objects import dm_channel
from .state import STATE_KEY, SimState

if TYPE_CHECKING:
    from .world_model import Guild

__all__ = ("ControlError", "ControlHandler", "control_handler", "json_body", "snowflake", "integer", "number",
           "boolean", "string", "choice", "query_int", "Place", "resolve_place")

_log = logging.getLogger(__name__)

ControlHandler = Callable[[web.Request, SimState], Awaitable[web.StreamResponse]]


class ControlError(Exception):
    """A control request that cannot be served: answered ``{"error": message, **extra}``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def response(self) -> web.Response:
        return json_response({"error": self.message, **self.extra}, self.status)


def control_handler(handler: ControlHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request, request.app[STATE_KEY])
        except ControlError as exc:
            return exc.response()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.exception("control request failed", extra={"method": request.method, "path": request.path})
            return json_response({"error": f"internal error: {type(exc).__name__}: {exc}"[:300]}, 500)

    handle.__name__ = handler.__name__
    return handle


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (an empty body is ``{}``)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ControlError(400, f"body must be a JSON object, not {type(body).__name__}")
    return body


def _missing(key: str) -> ControlError:
    return ControlError(400, f"{key} is required")


def snowflake(body: Mapping[str, Any], key: str, *, required: bool = True) -> int | None:
    """An id given as a decimal string or an integer."""
    value = body.get(key)
    if value is None:
        if required:
            raise _missing(key)
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ControlError(400, f"{key} must be an id (a string of digits), not {type(value).__name__}")
    text = str(value)
    if not text.isdigit() or not 0 < int(text) < 1 << 64:
        raise ControlError(400, f"{key} must be an id (a string of digits), got {text[:30]!r}")
    return int(text)


def integer(body: Mapping[str, Any], key: str, default: int | None = None, *, lo: int | None = None,
            hi: int | None = None) -> int:
    value = body.get(key)
    if value is None:
        if default is None:
            raise _missing(key)
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ControlError(400, f"{key} must be an integer, not {type(value).__name__}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ControlError(400, f"{key} must be between {lo} and {hi}, got {value}")
    return value


def number(body: Mapping[str, Any], key: str, default: float | None = None, *, lo: float | None = None,
           hi: float | None = None) -> float:
    value = body.get(key)
    if value is None:
        if default is None:
            raise _missing(key)
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ControlError(400, f"{key} must be a number, not {type(value).__name__}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ControlError(400, f"{key} must be between {lo} and {hi}, got {value}")
    return float(value)


def boolean(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ControlError(400, f"{key} must be true or false, not {type(value).__name__}")
    return value


def string(body: Mapping[str, Any], key: str, *, required: bool = True, max_len: int = 4000,
           allow_empty: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise _missing(key)
        return None
    if not isinstance(value, str):
        raise ControlError(400, f"{key} must be a string, not {type(value).__name__}")
    if not value and not allow_empty:
        raise ControlError(400, f"{key} must not be empty")
    if len(value) > max_len:
        raise ControlError(400, f"{key} is longer than {max_len} characters")
    return value


def choice(body: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str | None = None) -> str:
    value = body.get(key, default)
    if value is None:
        raise _missing(key)
    if value not in choices:
        raise ControlError(400, f"{key} must be one of {', '.join(choices)}; got {str(value)[:40]!r}")
    return str(value)


def query_int(request: web.Request, key: str, default: int, *, lo: int, hi: int | None = None) -> int:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ControlError(400, f"{key} must be an integer, got {raw[:30]!r}") from None
    if value < lo or (hi is not None and value > hi):
        raise ControlError(400, f"{key} must be between {lo} and {hi}, got {value}")
    return value


@dataclass(slots=True)
class Place:
    """Where an injected event happens: a guild channel (with the user's member) or the user's DM."""

    guild: Guild | None
    channel_id: int
    #: The world's channel record in a guild; ``None`` in a DM.
    channel: Any
    #: The DM channel payload in a DM; ``None`` in a guild.
    dm: dict[str, Any] | None
    member: dict[str, Any] | None


def resolve_place(state: SimState, body: Mapping[str, Any], user: dict[str, Any], user_id: int) -> Place:
    """Check ``guild_id`` / ``channel_id`` of a control request against the world, for ``user``.

    Raises
    ------
    ControlError
        400 naming what does not fit: an unknown guild, a channel of another guild, a user who is not
        a member, or a channel that is not the user's DM channel.
    """
    world = state.world
    guild_id = snowflake(body, "guild_id", required=False)
    if guild_id is None:
        dm = dm_channel(state, user)
        dm_id = int(dm["id"])
        given = snowflake(body, "channel_id", required=False)
        if given is not None and given != dm_id:
            raise ControlError(400, f"channel {given} is not the DM channel of user {user_id} ({dm_id})")
        return Place(None, dm_id, None, dm, None)
    guild = world.guild(guild_id)
    if guild is None:
        raise ControlError(400, f"unknown guild {guild_id}")
    channel_id = snowflake(body, "channel_id")
    assert channel_id is not None
    found = world.channel(channel_id)
    if found is None or found[0].id != guild.id:
        raise ControlError(400, f"channel {channel_id} is not a channel of guild {guild_id}")
    member = world.member(guild.id, user_id)
    if member is None:
        raise ControlError(400, f"user {user_id} is not a member of guild {guild_id}")
    return Place(guild, channel_id, found[1], None, member)
