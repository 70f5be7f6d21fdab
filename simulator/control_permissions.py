"""What server admins and users decide about the bot: channel permission overwrites and closed DMs.

- ``POST /_sim/channels/{channel_id}/overwrites`` with ``{"id", "type": "role"|"member", "allow"?,
  "deny"?}`` (permission bit sets as integers or strings of digits) sets the channel's overwrite
  for that role or member, as a server admin does in Discord's channel settings (``PUT
  /channels/{id}/permissions/{overwrite_id}``); ``allow`` and ``deny`` both 0 remove it. As on
  Discord, the guild's shard gets a CHANNEL_UPDATE with the new ``permission_overwrites``, so a
  bot's cache learns it. Answers ``{"channel": the channel object, "delivered": bool}``.
- ``DELETE /_sim/channels/{channel_id}/overwrites/{target_id}``: removes one (same answer).
- ``POST /_sim/users/{user_id}/dms`` with ``{"open": false}`` closes the user's DMs to the bot
  (their privacy settings, or a block): the bot can still open the DM channel, but its messages
  there are answered 403 50007 "Cannot send messages to this user". ``{"open": true}`` reopens
  them. Answers ``{"user_id", "open"}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .control_input import ControlError, boolean, choice, control_handler, json_body, snowflake
from .permissions import ALL_PERMISSIONS, OVERWRITE_MEMBER, OVERWRITE_ROLE
from .rest_channels import deliver
from .rest_common import json_response

if TYPE_CHECKING:
    from .state import SimState
    from .world_model import Channel, Guild

__all__ = ("setup",)


def _channel(state: SimState, request: web.Request) -> tuple[Guild, Channel]:
    raw = request.match_info["channel_id"]
    found = state.world.channel(int(raw)) if raw.isdigit() else None
    if found is None:
        raise ControlError(404, f"unknown guild channel {raw[:30]!r}")
    return found


def _bits(body: dict[str, Any], key: str) -> int:
    value = body.get(key, 0)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= ALL_PERMISSIONS:
        raise ControlError(400, f"{key} must be a permission bit set (an integer or a string of digits)")
    return value


def _updated(state: SimState, guild: Guild, channel: Channel) -> web.Response:
    payload = state.world.channel_payload(channel)
    delivered = deliver(state, guild, "CHANNEL_UPDATE", payload)
    return json_response({"channel": payload, "delivered": delivered})


async def set_overwrite(request: web.Request, state: SimState) -> web.Response:
    guild, channel = _channel(state, request)
    body = await json_body(request)
    target = snowflake(body, "id")
    assert target is not None
    kind = OVERWRITE_ROLE if choice(body, "type", ("role", "member")) == "role" else OVERWRITE_MEMBER
    if kind == OVERWRITE_ROLE and state.world.role(guild, target) is None:
        raise ControlError(400, f"{target} is not a role of guild {guild.id}")
    if kind == OVERWRITE_MEMBER and state.world.member(guild.id, target) is None:
        raise ControlError(400, f"{target} is not a member of guild {guild.id}")
    allow, deny = _bits(body, "allow"), _bits(body, "deny")
    channel.overwrites = [o for o in channel.overwrites if o["id"] != str(target)]
    if allow or deny:
        channel.overwrites.append({"id": str(target), "type": kind, "allow": str(allow), "deny": str(deny)})
    return _updated(state, guild, channel)


async def delete_overwrite(request: web.Request, state: SimState) -> web.Response:
    guild, channel = _channel(state, request)
    target = request.match_info["target_id"]
    kept = [o for o in channel.overwrites if o["id"] != target]
    if len(kept) == len(channel.overwrites):
        raise ControlError(404, f"channel {channel.id} has no overwrite for {target[:30]!r}")
    channel.overwrites = kept
    return _updated(state, guild, channel)


async def set_dms(request: web.Request, state: SimState) -> web.Response:
    raw = request.match_info["user_id"]
    if not raw.isdigit() or state.world.user(int(raw)) is None or int(raw) == state.world.application_id:
        raise ControlError(404, f"unknown user {raw[:30]!r}")
    body = await json_body(request)
    if "open" not in body:
        raise ControlError(400, "open is required")
    is_open = boolean(body, "open", True)
    if is_open:
        state.closed_dms.discard(int(raw))
    else:
        state.closed_dms.add(int(raw))
    return json_response({"user_id": raw, "open": is_open})


def setup(app: web.Application) -> None:
    """Add the routes to the control API."""
    r = app.router
    r.add_post("/_sim/channels/{channel_id}/overwrites", control_handler(set_overwrite))
    r.add_delete("/_sim/channels/{channel_id}/overwrites/{target_id}", control_handler(delete_overwrite))
    r.add_post("/_sim/users/{user_id}/dms", control_handler(set_dms))
