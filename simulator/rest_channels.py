"""Channel and message routes: send, list, fetch, edit, delete, typing, and opening DMs.

A message the bot sends is stored in ``state.messages`` and echoed to the owning shard as
MESSAGE_CREATE (Discord echoes a bot's own messages); DM messages go to shard 0.

The bot's permissions in a guild channel are checked as Discord checks them
(:func:`~simulator.permissions.channel_permissions`, after the channel's overwrites): without
VIEW_CHANNEL a channel route answers 403 50001 Missing Access; sending also needs SEND_MESSAGES
(else 403 50013 Missing Permissions); listing messages without READ_MESSAGE_HISTORY returns none.
A message to a user whose DMs are closed to the bot (``POST /_sim/users/{id}/dms``) is 403 50007.
A send with ``nonce`` and ``enforce_nonce: true`` whose nonce the bot used within the last
``--nonce-window`` seconds returns the message that nonce created, and creates nothing
(:mod:`simulator.message_nonces`, counted in ``nonce_duplicates``).
Deleting another user's message needs MANAGE_MESSAGES, and so does changing the ``flags`` of one
(``developers/resources/message.mdx``, "Delete Message", "Edit Message"): else 403 50013; in a DM
another user's message cannot be deleted at all (403 50003).

Without MESSAGE_CONTENT in the application's flags, guild messages read over REST come with
empty content fields, except the bot's own and those that mention it (``developers/events/
gateway.mdx``, "Message Content Intent": it "permits your app to receive message content data
across the APIs"; "HTTP Restrictions" are independent of a session's intents).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .intents import Intent, strip_content
from .permissions import channel_permissions
from .rest_common import RestError, RestRoute, empty_response, int_param, json_response, read_body, route
from .rest_objects import (
    apply_edit,
    attachments_from_files,
    build_message,
    check_snowflake,
    dm_channel,
    validate_message_body,
)
from .world_model import Perm

if TYPE_CHECKING:
    from .state import SimState
    from .world_model import Guild

__all__ = ("CHANNEL_ROUTES", "resolve_channel", "deliver", "bot_partial_member", "bot_channel_permissions")

#: Channel types a message can be sent in: GUILD_TEXT, DM, GUILD_VOICE (text in voice).
_MESSAGEABLE = (0, 1, 2)


def resolve_channel(state: SimState, channel_id: int) -> tuple[Guild | None, dict[str, Any]]:
    """``(guild or None for a DM, channel object)``; 404 Unknown Channel otherwise."""
    found = state.world.channel(channel_id)
    if found is not None:
        guild, channel = found
        return guild, state.world.channel_payload(channel)
    dm = state.dm_channels.get(channel_id)
    if dm is not None:
        return None, dm
    raise RestError(404, 10003, "Unknown Channel")


def bot_channel_permissions(state: SimState, channel_id: int) -> int | None:
    """The bot's permissions in a guild channel (None for a DM or an unknown channel)."""
    found = state.world.channel(channel_id)
    if found is None:
        return None
    guild, channel = found
    bot = state.world.member(guild.id, state.world.application_id)
    return channel_permissions(guild, channel, bot) if bot is not None else 0


def _require(state: SimState, channel_id: int, needed: int = 0) -> int | None:
    """403 unless the bot may view the channel (and has ``needed``); its permissions there (None in DMs)."""
    perms = bot_channel_permissions(state, channel_id)
    if perms is None:
        return None
    if not perms & Perm.VIEW_CHANNEL:
        raise RestError(403, 50001, "Missing Access")
    if perms & needed != needed:
        raise RestError(403, 50013, "Missing Permissions")
    return perms


def _readable(state: SimState, guild: Guild | None, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Guild messages as an application without the MESSAGE_CONTENT flag reads them (DMs keep theirs)."""
    if guild is None or not state.application.disallowed(Intent.MESSAGE_CONTENT):
        return messages
    bot_id = state.world.application_id
    return [strip_content(m, bot_id) for m in messages]


def _dm_recipient(channel: dict[str, Any]) -> int | None:
    recipients = channel.get("recipients") or ()
    return int(recipients[0]["id"]) if recipients else None


def _channel_id(request: web.Request) -> int:
    return int_param(request.match_info["channel_id"], "channel_id") or 0


def bot_partial_member(state: SimState, guild: Guild) -> dict[str, Any] | None:
    member = state.world.member(guild.id, state.world.application_id)
    if member is None:
        return None
    return {k: v for k, v in member.items() if k != "user"}


def deliver(state: SimState, guild: Guild | None, event: str, data: dict[str, Any]) -> bool:
    """Dispatch to the shard owning ``guild`` (shard 0 for DMs); True when a session got it."""
    if guild is None:
        return state.gateway.dispatch_shard(0, event, data) > 0
    return state.gateway.dispatch_guild(guild.id, event, data)


def _gateway_copy(state: SimState, guild: Guild | None, msg: dict[str, Any]) -> dict[str, Any]:
    """The gateway form of a bot message: plus the author's partial ``member`` in guilds."""
    if guild is None:
        return dict(msg)
    member = bot_partial_member(state, guild)
    return {**msg, "member": member} if member is not None else dict(msg)


async def get_channel(request: web.Request, state: SimState) -> web.Response:
    channel_id = _channel_id(request)
    _, channel = resolve_channel(state, channel_id)
    _require(state, channel_id)
    return json_response(channel)


async def create_message(request: web.Request, state: SimState) -> web.Response:
    channel_id = _channel_id(request)
    guild, channel = resolve_channel(state, channel_id)
    _require(state, channel_id, Perm.SEND_MESSAGES)
    if guild is None and _dm_recipient(channel) in state.closed_dms:
        raise RestError(403, 50007, "Cannot send messages to this user")
    if channel["type"] not in _MESSAGEABLE:
        raise RestError(400, 50008, "Cannot send messages in a non-text channel")
    body = await read_body(request)
    fields = validate_message_body(body.payload, files=len(body.files))
    author = state.world.bot_user()
    nonce = fields.get("nonce") if fields.get("enforce_nonce") else None
    if nonce is not None:
        earlier = state.nonces.find(int(author["id"]), nonce)
        known = state.messages.get(*earlier) if earlier is not None else None
        if known is not None:  # "that message will be returned and no new message will be created"
            state.stats.nonce_duplicates += 1
            return json_response(known)
    message_id = state.ids.next()
    attachments = attachments_from_files(state, channel_id, body.files)
    msg = build_message(state, message_id=message_id, channel_id=channel_id, guild=guild,
                        author=author, body=fields, attachments=attachments)
    state.messages.add(channel_id, msg)
    if nonce is not None:
        state.nonces.remember(int(author["id"]), nonce, channel_id, message_id)
    state.stats.messages_created += 1
    channel["last_message_id"] = msg["id"]
    deliver(state, guild, "MESSAGE_CREATE", _gateway_copy(state, guild, msg))
    return json_response(msg)


async def list_messages(request: web.Request, state: SimState) -> web.Response:
    """Newest first; ``before``/``after``/``around`` as on Discord; ``limit`` 1–100 (default 50)."""
    channel_id = _channel_id(request)
    guild, _ = resolve_channel(state, channel_id)
    perms = _require(state, channel_id)
    q = request.query
    limit = int_param(q.get("limit"), "limit", default=50, lo=1, hi=100) or 50
    before = int_param(q.get("before"), "before", lo=0)
    after = int_param(q.get("after"), "after", lo=0)
    around = int_param(q.get("around"), "around", lo=0)
    if perms is not None and not perms & Perm.READ_MESSAGE_HISTORY:
        return json_response([])  # as on Discord: no history, no error
    if around is not None:
        newer = state.messages.list(channel_id, limit=limit // 2, after=around)
        older = state.messages.list(channel_id, limit=limit - len(newer), before=around + 1)
        return json_response(_readable(state, guild, newer + older))
    listed = state.messages.list(channel_id, limit=limit, before=before, after=after)
    return json_response(_readable(state, guild, listed))


def _stored(state: SimState, request: web.Request) -> tuple[int, Guild | None, dict[str, Any]]:
    channel_id = _channel_id(request)
    guild, _ = resolve_channel(state, channel_id)
    _require(state, channel_id)
    message_id = int_param(request.match_info["message_id"], "message_id") or 0
    msg = state.messages.get(channel_id, message_id)
    if msg is None:
        raise RestError(404, 10008, "Unknown Message")
    return channel_id, guild, msg


async def get_message(request: web.Request, state: SimState) -> web.Response:
    _, guild, msg = _stored(state, request)
    return json_response(_readable(state, guild, [msg])[0])


async def edit_message(request: web.Request, state: SimState) -> web.Response:
    channel_id, guild, msg = _stored(state, request)
    body = await read_body(request)
    fields = validate_message_body(body.payload, files=len(body.files), edit=True)
    # Only the author may change the content; others may at most change flags, with MANAGE_MESSAGES.
    if msg["author"]["id"] != str(state.world.application_id):
        if set(fields) - {"flags"}:
            raise RestError(403, 50005, "Cannot edit a message authored by another user")
        _require(state, channel_id, Perm.MANAGE_MESSAGES)
    apply_edit(state, msg, fields, guild, attachments_from_files(state, channel_id, body.files))
    deliver(state, guild, "MESSAGE_UPDATE", _gateway_copy(state, guild, msg))
    return json_response(msg)


async def delete_message(request: web.Request, state: SimState) -> web.Response:
    channel_id, guild, msg = _stored(state, request)
    if msg["author"]["id"] != str(state.world.application_id):  # another user's message
        if guild is None:
            raise RestError(403, 50003, "Cannot execute action on a DM channel")
        _require(state, channel_id, Perm.MANAGE_MESSAGES)
    state.messages.remove(channel_id, int(msg["id"]))
    event: dict[str, Any] = {"id": msg["id"], "channel_id": str(channel_id)}
    if guild is not None:
        event["guild_id"] = str(guild.id)
    deliver(state, guild, "MESSAGE_DELETE", event)
    return empty_response()


async def typing(request: web.Request, state: SimState) -> web.Response:
    resolve_channel(state, _channel_id(request))
    return empty_response()


async def create_dm(request: web.Request, state: SimState) -> web.Response:
    body = await read_body(request)
    payload = body.payload
    if not isinstance(payload, dict) or "recipient_id" not in payload:
        raise RestError(400, 50035, "Invalid Form Body",
                        {"recipient_id": {"_errors": [{"code": "BASE_TYPE_REQUIRED",
                                                       "message": "This field is required"}]}})
    user_id = check_snowflake(payload["recipient_id"], "recipient_id")
    user = state.world.user(user_id)
    if user is None or user_id == state.world.application_id:
        raise RestError(400, 50007, "Cannot send messages to this user")
    return json_response(dm_channel(state, user))


CHANNEL_ROUTES: list[RestRoute] = [
    route("GET", "/channels/{channel_id}", get_channel, "channel-get"),
    route("POST", "/channels/{channel_id}/messages", create_message, "channel-messages-create"),
    route("GET", "/channels/{channel_id}/messages", list_messages, "channel-messages-list"),
    route("GET", "/channels/{channel_id}/messages/{message_id}", get_message, "channel-message-get"),
    route("PATCH", "/channels/{channel_id}/messages/{message_id}", edit_message, "channel-message-edit"),
    route("DELETE", "/channels/{channel_id}/messages/{message_id}", delete_message, "channel-message-delete"),
    route("POST", "/channels/{channel_id}/typing", typing, "channel-typing"),
    route("POST", "/users/@me/channels", create_dm, "dm-create"),
]
