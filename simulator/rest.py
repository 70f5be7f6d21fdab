"""The simulator's Discord REST API (``/api/v10`` and ``/api/v9``): what unmodified discord.py uses.

:func:`setup` registers every route; the routes for users, the gateway, guilds and application
commands live here, the application itself in ``simulator/rest_application.py``, channels and
messages in ``simulator/rest_channels.py``, interaction callbacks and webhook follow-ups in
``simulator/rest_interactions.py``. Auth, faults, rate limits and the invalid-request ban are
applied per route by ``simulator/rest_common.py``.
"""

from __future__ import annotations

import heapq
import itertools
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .intents import Intent
from .rest_application import APPLICATION_ROUTES
from .rest_channels import CHANNEL_ROUTES
from .rest_common import (
    API_PREFIXES,
    RestError,
    RestRoute,
    error_response,
    form_error,
    guarded,
    int_param,
    json_response,
    read_body,
    register,
    route,
)
from .rest_interactions import INTERACTION_ROUTES

if TYPE_CHECKING:
    from .state import SimState
    from .world_model import Guild

__all__ = ("setup", "ROUTES", "unknown_route")

_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$", re.UNICODE)
_MAX_COMMANDS = 110  # 100 chat-input + 5 user + 5 message commands


async def users_me(request: web.Request, state: SimState) -> web.Response:
    return json_response(state.world.bot_user())


async def get_user(request: web.Request, state: SimState) -> web.Response:
    user_id = int_param(request.match_info["user_id"], "user_id") or 0
    user = state.world.user(user_id)
    if user is None:
        raise RestError(404, 10013, "Unknown User")
    return json_response(user)


def _gateway_url(request: web.Request, state: SimState) -> str:
    host = request.host or f"{state.config.host}:{state.config.port}"
    return f"ws://{host}/gateway"


async def gateway(request: web.Request, state: SimState) -> web.Response:
    return json_response({"url": _gateway_url(request, state)})


async def gateway_bot(request: web.Request, state: SimState) -> web.Response:
    config = state.config
    hub: Any = state.gateway
    remaining = config.session_start_total
    reset_after = 86_400_000
    if callable(getattr(hub, "identify_remaining", None)):
        remaining = int(hub.identify_remaining())
    if callable(getattr(hub, "identify_reset_after_ms", None)):
        reset_after = int(hub.identify_reset_after_ms())
    return json_response({
        "url": _gateway_url(request, state), "shards": state.recommended_shards or config.shards,
        "session_start_limit": {"total": config.session_start_total, "remaining": remaining,
                                "reset_after": reset_after, "max_concurrency": config.max_concurrency},
    })


# -- guilds --------------------------------------------------------------------------------------

def _guild(request: web.Request, state: SimState) -> Guild:
    guild_id = int_param(request.match_info["guild_id"], "guild_id") or 0
    guild = state.world.guild(guild_id)
    if guild is None:
        raise RestError(404, 10004, "Unknown Guild")
    return guild


async def get_guild(request: web.Request, state: SimState) -> web.Response:
    guild = _guild(request, state)
    data = state.world.guild_payload(guild)
    if request.query.get("with_counts", "").lower() in ("true", "1"):
        data["approximate_member_count"] = guild.member_count
        data["approximate_presence_count"] = max(1, guild.member_count // 3)
    return json_response(data)


async def guild_channels(request: web.Request, state: SimState) -> web.Response:
    guild = _guild(request, state)
    return json_response([state.world.channel_payload(c) for c in guild.channels])


async def guild_roles(request: web.Request, state: SimState) -> web.Response:
    guild = _guild(request, state)
    return json_response([r.payload() for r in guild.roles])


async def guild_members(request: web.Request, state: SimState) -> web.Response:
    """``GET /guilds/{id}/members?limit&after``: members sorted by user id, the bot included.

    "This endpoint requires the ``GUILD_MEMBERS`` Privileged Intent" (``developers/resources/guild.mdx``,
    "List Guild Members"; ``developers/events/gateway.mdx``, "HTTP Restrictions": independent of the
    intents a session identified with): without it in the application's flags, 403 50001 Missing Access.

    One page costs a pass over the guild's members (no sorted index is kept), so paging through a
    250,000-member guild is slow here; bots fetch big member lists through the gateway instead.
    """
    guild = _guild(request, state)
    if state.application.disallowed(Intent.GUILD_MEMBERS):
        raise RestError(403, 50001, "Missing Access")
    limit = int_param(request.query.get("limit"), "limit", default=1, lo=1, hi=1000) or 1
    after = int_param(request.query.get("after"), "after", default=0, lo=0) or 0
    world = state.world
    candidates = (guild.member_id(k) for k in guild.positions())
    ids = heapq.nsmallest(limit, (u for u in itertools.chain(candidates, (world.application_id,)) if u > after))
    out = []
    for user_id in ids:
        member = world.member(guild.id, user_id)
        if member is not None:
            out.append(member)
        if len(out) >= limit:
            break
    return json_response(out)


async def guild_member(request: web.Request, state: SimState) -> web.Response:
    guild = _guild(request, state)
    user_id = int_param(request.match_info["user_id"], "user_id") or 0
    member = state.world.member(guild.id, user_id)
    if member is None:
        raise RestError(404, 10007, "Unknown Member")
    return json_response(member)


# -- application commands ------------------------------------------------------------------------

def _check_application(request: web.Request, state: SimState) -> int:
    app_id = int_param(request.match_info["application_id"], "application_id") or 0
    if app_id != state.world.application_id:
        raise RestError(403, 50001, "Missing Access")
    return app_id


def _command_guild(request: web.Request, state: SimState) -> int | None:
    if "guild_id" not in request.match_info:
        return None
    guild_id = int_param(request.match_info["guild_id"], "guild_id") or 0
    if state.world.guild(guild_id) is None:
        raise RestError(403, 50001, "Missing Access")
    return guild_id


def _validate_options(options: Any, where: str, depth: int = 0) -> None:
    if not isinstance(options, list):
        raise form_error(where, "BASE_TYPE_BAD_TYPE", "Must be a list.")
    if len(options) > 25:
        raise form_error(where, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for i, opt in enumerate(options):
        here = f"{where}.{i}"
        if not isinstance(opt, dict):
            raise form_error(here, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        otype = opt.get("type")
        if isinstance(otype, bool) or not isinstance(otype, int) or not 1 <= otype <= 11:
            raise form_error(f"{here}.type", "BASE_TYPE_CHOICES", "Value must be one of {1, 2, ..., 11}.")
        name = opt.get("name")
        if not isinstance(name, str) or not _COMMAND_NAME.match(name):
            raise form_error(f"{here}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        if not isinstance(opt.get("description", ""), str):
            raise form_error(f"{here}.description", "BASE_TYPE_BAD_TYPE", "Must be a valid string.")
        if otype in (1, 2) and "options" in opt:
            if depth >= 2:
                raise form_error(f"{here}.options", "BASE_TYPE_MAX_LENGTH", "Too deeply nested.")
            _validate_options(opt["options"], f"{here}.options", depth + 1)


def _validate_commands(payload: Any) -> list[dict[str, Any]]:
    if not isinstance(payload, list):
        raise form_error("_body", "BASE_TYPE_BAD_TYPE", "Must be a list.")
    if len(payload) > _MAX_COMMANDS:
        raise form_error("_body", "BASE_TYPE_MAX_LENGTH", f"Must be {_MAX_COMMANDS} or fewer in length.")
    seen: set[tuple[int, str]] = set()
    for i, cmd in enumerate(payload):
        if not isinstance(cmd, dict):
            raise form_error(str(i), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        ctype = cmd.get("type", 1)
        if isinstance(ctype, bool) or ctype not in (1, 2, 3, 4):
            raise form_error(f"{i}.type", "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4}.")
        name = cmd.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 32 or (ctype == 1 and not _COMMAND_NAME.match(name)):
            raise form_error(f"{i}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        description = cmd.get("description", "")
        if not isinstance(description, str) or len(description) > 100 or (ctype == 1 and not description):
            raise form_error(f"{i}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if (ctype, name) in seen:
            raise form_error(f"{i}.name", "APPLICATION_COMMANDS_DUPLICATE_NAME", f"Command name \"{name}\" is "
                             "already used by another command")
        seen.add((ctype, name))
        if "options" in cmd and cmd["options"] is not None:
            _validate_options(cmd["options"], f"{i}.options")
    return payload


async def get_commands(request: web.Request, state: SimState) -> web.Response:
    _check_application(request, state)
    guild_id = _command_guild(request, state)
    store = state.commands
    found = store.global_commands if guild_id is None else store.guild_commands.get(guild_id, {})
    return json_response(list(found.values()))


async def put_commands(request: web.Request, state: SimState) -> web.Response:
    app_id = _check_application(request, state)
    guild_id = _command_guild(request, state)
    body = await read_body(request)
    commands = _validate_commands(body.payload)
    return json_response(state.commands.overwrite(app_id, commands, guild_id))


ROUTES: list[RestRoute] = [
    route("GET", "/users/@me", users_me, "users-me"),
    route("GET", "/users/{user_id:\\d+}", get_user, "users-me"),
    *APPLICATION_ROUTES,
    route("GET", "/gateway", gateway, "gateway", auth=False),
    route("GET", "/gateway/bot", gateway_bot, "gateway"),
    route("GET", "/guilds/{guild_id}", get_guild, "guild-get"),
    route("GET", "/guilds/{guild_id}/channels", guild_channels, "guild-get"),
    route("GET", "/guilds/{guild_id}/roles", guild_roles, "guild-get"),
    route("GET", "/guilds/{guild_id}/members", guild_members, "guild-members-list"),
    route("GET", "/guilds/{guild_id}/members/{user_id}", guild_member, "guild-member-get"),
    route("GET", "/applications/{application_id}/commands", get_commands, "application-commands"),
    route("PUT", "/applications/{application_id}/commands", put_commands, "application-commands"),
    route("GET", "/applications/{application_id}/guilds/{guild_id}/commands", get_commands, "application-commands"),
    route("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", put_commands, "application-commands"),
    *CHANNEL_ROUTES,
    *INTERACTION_ROUTES,
]


async def _not_found(request: web.Request, state: SimState) -> web.Response:
    return error_response(404, 0, "404: Not Found")


async def unknown_route(request: web.Request) -> web.StreamResponse:
    """Anything else under the API prefix: Discord's JSON 404 (aiohttp's would be text/plain), or a ban."""
    return await guarded(request, _not_found)


def setup(app: web.Application) -> None:
    """Add the REST API to ``app`` (whose ``STATE_KEY`` is already set)."""
    register(app, ROUTES)
    for prefix in API_PREFIXES:
        app.router.add_route("*", prefix + "/{tail:.*}", unknown_route)
