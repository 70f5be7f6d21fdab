"""``POST /_sim/interactions`` and ``GET /_sim/interactions/{id}``: users clicking the bot's UI.

An injected interaction is a complete INTERACTION_CREATE (as ``../shared/DISCORD.md`` lists and
discord.py's ``Interaction._from_data`` reads): slash and context-menu commands (``kind`` =
``"command"``), button and select clicks (``"component"``) and modal submits
(``"modal_submit"``), in a guild or in the bot's DMs (no ``guild_id``). It goes to the shard that
owns the guild (shard 0 for DMs); the request waits for the bot's callback and answers it with the
latency, or 504 after ``timeout`` seconds.

The deadlines the REST side enforces start at the dispatch: the initial response within
``--interaction-deadline`` seconds, follow-ups and edits within ``--interaction-token-ttl``
(``developers/interactions/receiving-and-responding.mdx``, "Responding to an Interaction"). The
control API keeps an interaction for twice the token's lifetime, so a late follow-up is answered
"Invalid Webhook Token" and the report can still be read.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .control_input import (
    ControlError,
    boolean,
    choice,
    integer,
    json_body,
    number,
    resolve_place,
    snowflake,
    string,
)
from .permissions import ALL_PERMISSIONS, channel_permissions, member_permissions
from .rest_common import MAX_UPLOAD_BYTES, json_response
from .rest_objects import build_message
from .world_model import Perm

if TYPE_CHECKING:
    from .state import PendingInteraction, SimState
    from .world_model import Guild

__all__ = ("inject_interaction", "get_interaction", "member_permissions")

_KINDS = ("command", "component", "modal_submit")
_KIND_TYPES = {"command": 2, "component": 3, "modal_submit": 5}
#: Pending interactions are dropped after twice the token lifetime (``--interaction-token-ttl``)...
KEEP_TOKEN_TTLS = 2
#: ...or, oldest first, when more than this many are kept (interaction benchmarks inject thousands).
MAX_PENDING = 20_000
_last_sweep: float | None = None


def _synthetic_command_id(name: str, guild_id: int | None) -> str:
    """A stable snowflake-shaped id for a command the bot never registered."""
    digest = hashlib.sha256(f"{name}:{guild_id or 0}".encode()).digest()
    return str((int.from_bytes(digest[:8], "big") >> 1) | (1 << 62))


def _find_message(state: SimState, channel_id: int, message_id: int) -> dict[str, Any] | None:
    msg = state.messages.get(channel_id, message_id)
    if msg is not None:
        return msg
    key = str(message_id)
    for pending in state.interactions:  # ephemeral messages live only on their interaction
        if pending.original is not None and pending.original["id"] == key:
            return pending.original
        if key in pending.followup_messages:
            return pending.followup_messages[key]
    return None


def _options(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ControlError(400, "options must be a list of {name, type, value}")
    for i, opt in enumerate(value):
        if not isinstance(opt, dict):
            raise ControlError(400, f"options[{i}] must be an object")
        if not isinstance(opt.get("name"), str) or not opt["name"]:
            raise ControlError(400, f"options[{i}].name must be a non-empty string")
        otype = opt.get("type")
        if isinstance(otype, bool) or not isinstance(otype, int) or not 1 <= otype <= 11:
            raise ControlError(400, f"options[{i}].type must be an option type 1..11")
        if otype in (1, 2):
            _options(opt.get("options"))
        elif "value" not in opt:
            raise ControlError(400, f"options[{i}].value is required for option type {otype}")
    return value


def _resolve(state: SimState, guild: Guild | None, options: list[dict[str, Any]],
             resolved: dict[str, dict[str, Any]]) -> None:
    """Fill ``resolved`` for user/channel/role/mentionable options, as Discord does."""
    world = state.world
    for opt in options:
        otype = opt["type"]
        if otype in (1, 2):
            _resolve(state, guild, opt.get("options") or [], resolved)
            continue
        if otype not in (6, 7, 8, 9):
            continue
        try:
            target = int(opt["value"])
        except (TypeError, ValueError):
            raise ControlError(400, f"option {opt['name']!r} needs an id as its value") from None
        opt["value"] = str(target)
        if otype in (6, 9):
            member = world.member(guild.id, target) if guild is not None else None
            user = member["user"] if member is not None else world.user(target)
            if user is not None:
                resolved.setdefault("users", {})[str(target)] = user
                if member is not None and guild is not None:
                    partial = {k: v for k, v in member.items() if k != "user"}
                    partial["permissions"] = str(member_permissions(guild, member))
                    resolved.setdefault("members", {})[str(target)] = partial
                continue
        if otype in (8, 9) and guild is not None:
            role = world.role(guild, target)
            if role is not None:
                resolved.setdefault("roles", {})[str(target)] = role.payload()
                continue
        if otype == 7:
            found = world.channel(target)
            if found is not None and (guild is None or found[0].id == guild.id):
                channel = world.channel_payload(found[1])
                channel["permissions"] = str(ALL_PERMISSIONS)
                resolved.setdefault("channels", {})[str(target)] = channel
                continue
        raise ControlError(400, f"option {opt['name']!r}: {target} is no user, role or channel of this guild")


def _command_data(state: SimState, body: dict[str, Any], guild: Guild | None,
                  channel_id: int) -> dict[str, Any]:
    name = string(body, "name", max_len=32)
    assert name is not None
    command_type = integer(body, "command_type", 1, lo=1, hi=3)
    options = _options(body.get("options"))
    registered = state.commands.find(name, guild.id if guild is not None else None)
    data: dict[str, Any] = {"id": registered["id"] if registered else _synthetic_command_id(name, None),
                            "name": name, "type": command_type, "options": options}
    if registered is not None and "guild_id" in registered:
        # Only guild commands carry guild_id; discord.py looks a command up in the tree by it.
        data["guild_id"] = registered["guild_id"]
    resolved: dict[str, dict[str, Any]] = {}
    _resolve(state, guild, options, resolved)
    if command_type in (2, 3):
        target = snowflake(body, "target_id")
        assert target is not None
        data["target_id"] = str(target)
        if command_type == 2:
            _resolve(state, guild, [{"name": "target_id", "type": 6, "value": target}], resolved)
        else:
            msg = _find_message(state, channel_id, target)
            if msg is None:
                raise ControlError(400, f"target_id {target} is no message of channel {channel_id}")
            resolved["messages"] = {str(target): msg}
    if resolved:
        data["resolved"] = resolved
    return data


def _component_data(body: dict[str, Any]) -> dict[str, Any]:
    custom_id = string(body, "custom_id", max_len=100)
    component_type = integer(body, "component_type", 2, lo=2, hi=8)
    data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
    values = body.get("values")
    if values is not None:
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ControlError(400, "values must be a list of strings (the selected options)")
        data["values"] = values
    elif component_type != 2:
        data["values"] = []
    return data


def _modal_data(body: dict[str, Any]) -> dict[str, Any]:
    custom_id = string(body, "custom_id", max_len=100)
    components = body.get("components")
    values = body.get("values")
    if components is None and isinstance(values, dict):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
            raise ControlError(400, "values must map text input custom_ids to strings")
        components = [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]}
                      for k, v in values.items()]
    if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
        raise ControlError(400, "a modal submit needs components (a list of rows) or values {custom_id: text}")
    return {"custom_id": custom_id, "components": components}


def build_interaction(state: SimState, body: dict[str, Any]) -> tuple[dict[str, Any], Guild | None, int,
                                                                      dict[str, Any] | None]:
    """``(INTERACTION_CREATE d, guild, channel id, message the component belongs to)`` from a control body."""
    world = state.world
    kind = choice(body, "kind", _KINDS, "command")
    if "type" in body:
        itype = integer(body, "type", lo=2, hi=5)
        if itype not in (2, 3, 5):
            raise ControlError(400, "type must be 2 (command), 3 (component) or 5 (modal submit)")
    else:
        itype = _KIND_TYPES[kind]
    user_id = snowflake(body, "user_id")
    assert user_id is not None
    user = world.user(user_id)
    if user is None or user_id == world.application_id:
        raise ControlError(400, f"unknown user {user_id}")
    place = resolve_place(state, body, user, user_id)
    guild, channel_id, member = place.guild, place.channel_id, place.member
    channel = place.dm if place.dm is not None else world.channel_payload(place.channel)
    message = None
    message_id = snowflake(body, "message_id", required=False)
    if message_id is not None:
        message = _find_message(state, channel_id, message_id)
        if message is None:
            raise ControlError(400, f"message {message_id} is not in channel {channel_id}")
    if itype == 2:
        data = _command_data(state, body, guild, channel_id)
    elif itype == 3:
        data = _component_data(body)
        if message is None:  # a click needs the message the button is on: a bot message stands in
            message = build_message(state, message_id=state.ids.next(), channel_id=channel_id, guild=guild,
                                    author=world.bot_user(), body={"content": ""})
    else:
        data = _modal_data(body)
    app_id = str(world.application_id)
    interaction_id = state.ids.next()
    d: dict[str, Any] = {
        "id": str(interaction_id), "application_id": app_id, "type": itype, "token": secrets.token_urlsafe(48),
        "version": 1, "attachment_size_limit": MAX_UPLOAD_BYTES, "channel_id": str(channel_id),
        "locale": string(body, "locale", required=False, max_len=10) or "en-US", "entitlements": [],
        "entitlement_sku_ids": [], "data": data,
    }
    if guild is not None and member is not None:
        # both in the channel, after its overwrites, as Discord sends them
        perms = channel_permissions(guild, place.channel, member)
        bot_member = world.member(guild.id, world.application_id)
        app_perms = channel_permissions(guild, place.channel, bot_member) if bot_member is not None else 0
        d.update(guild_id=str(guild.id), guild={"id": str(guild.id), "locale": "en-US", "features": []},
                 guild_locale="en-US", channel={**channel, "permissions": str(perms)},
                 member={**member, "permissions": str(perms)}, app_permissions=str(app_perms),
                 authorizing_integration_owners={"0": str(guild.id)}, context=0)
    else:
        d.update(channel=channel, user=user, app_permissions=str(Perm.EVERYONE),
                 authorizing_integration_owners={"0": "0"}, context=1)
    if message is not None:
        d["message"] = message
    return d, guild, channel_id, message


def _sweep(state: SimState) -> None:
    global _last_sweep
    state.interactions.trim(MAX_PENDING - 1)
    now = state.clock()
    if _last_sweep is None or abs(now - _last_sweep) > 10.0:
        _last_sweep = now
        state.interactions.forget_older_than(KEEP_TOKEN_TTLS * state.config.interaction_token_ttl, now)


def _report(state: SimState, pending: PendingInteraction) -> dict[str, Any]:
    done = pending.callback.done() and not pending.callback.cancelled()
    latency = None
    if pending.acknowledged_at is not None:
        latency = round((pending.acknowledged_at - pending.created) * 1000, 3)
    age = state.clock() - pending.created
    return {
        "interaction_id": str(pending.interaction_id), "type": pending.payload.get("type"),
        "acknowledged": done, "callback": pending.callback.result() if done else None, "latency_ms": latency,
        "followups": pending.followups, "original_edits": pending.original_edits, "original": pending.original,
        "deadline_missed": not done and age > state.config.interaction_deadline,
        "token_expired": age > state.config.interaction_token_ttl, "late_callbacks": pending.late_callbacks,
    }


async def inject_interaction(request: web.Request, state: SimState) -> web.Response:
    body = await json_body(request)
    timeout = number(body, "timeout", 10.0, lo=0.001, hi=state.config.interaction_token_ttl)
    wait = boolean(body, "wait", True)
    d, guild, channel_id, message = build_interaction(state, body)
    _sweep(state)
    interaction_id = int(d["id"])
    # The deadlines start here: registering and dispatching happen in one step of the event loop.
    pending = state.interactions.register(interaction_id, d["token"], guild.id if guild is not None else None,
                                          channel_id, state.clock())
    pending.payload = d
    if d["type"] in (3, 5) and message is not None:
        pending.original = message
    if guild is not None:
        shards = state.gateway.shard_count() or state.config.shards
        shard_id = (guild.id >> 22) % shards
        delivered = state.gateway.dispatch_guild(guild.id, "INTERACTION_CREATE", d)
    else:
        shard_id = 0
        delivered = state.gateway.dispatch_shard(0, "INTERACTION_CREATE", d) > 0
    if not delivered:
        state.interactions.discard(interaction_id)
        raise ControlError(503, f"no live or resumable session of shard {shard_id} received the interaction",
                           interaction_id=str(interaction_id), shard_id=shard_id)
    if not wait:
        return json_response({"interaction_id": str(interaction_id), "shard_id": shard_id}, 202)
    try:
        callback = await asyncio.wait_for(asyncio.shield(pending.callback), timeout)
    except TimeoutError:
        raise ControlError(504, f"no callback within {timeout:g}s", interaction_id=str(interaction_id),
                           shard_id=shard_id) from None
    report = _report(state, pending)
    return json_response({"interaction_id": str(interaction_id), "callback": callback,
                          "latency_ms": report["latency_ms"], "shard_id": shard_id,
                          "response_message_id": pending.original["id"] if pending.original else None})


async def get_interaction(request: web.Request, state: SimState) -> web.Response:
    raw = request.match_info["interaction_id"]
    if not raw.isdigit():
        raise ControlError(400, f"interaction id must be digits, got {raw[:30]!r}")
    pending = state.interactions.by_id(int(raw))
    if pending is None:
        raise ControlError(404, f"unknown interaction {raw} (never injected, or older than twice the token's "
                                f"lifetime, {KEEP_TOKEN_TTLS * state.config.interaction_token_ttl:g}s)")
    return json_response(_report(state, pending))
