"""Discord objects the REST side and the control API build: messages, DM channels, attachments.

Message payloads are complete (every field discord.py's ``Message.__init__`` reads), because an
exception in discord.py's event parsers ends the whole client. Message bodies posted by the bot
are validated here the way Discord validates them (50035 Invalid Form Body, 50006 empty message).
"""

from __future__ import annotations

import datetime
import re
from typing import TYPE_CHECKING, Any

from .message_nonces import MAX_NONCE_LENGTH
from .rest_common import RestError, form_error
from .snowflakes import iso

if TYPE_CHECKING:
    from .state import SimState
    from .world import World
    from .world_model import Guild

__all__ = ("snowflake_iso", "now_iso", "build_message", "validate_message_body", "attachments_from_files",
           "mentions_for", "dm_channel", "dm_channel_id", "check_snowflake", "MessageFields", "apply_edit",
           "EPHEMERAL", "LOADING")

#: Message flags Discord sets: EPHEMERAL and LOADING (a deferred "thinking" response).
EPHEMERAL = 1 << 6
LOADING = 1 << 7
#: Flags a bot may set when sending (SUPPRESS_EMBEDS, EPHEMERAL on interactions, SUPPRESS_NOTIFICATIONS,
#: IS_COMPONENTS_V2).
_SETTABLE_FLAGS = (1 << 2) | EPHEMERAL | (1 << 12) | (1 << 15)
_USER_MENTION = re.compile(r"<@!?(\d{15,21})>")
_ROLE_MENTION = re.compile(r"<@&(\d{15,21})>")

#: What a message body may carry, with the Python type each field must have.
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "content": str, "embeds": list, "components": list, "allowed_mentions": dict, "tts": bool,
    "flags": int, "nonce": (str, int), "message_reference": dict, "sticker_ids": list, "attachments": list,
    "poll": dict, "enforce_nonce": bool,
}
MessageFields = dict[str, Any]


def snowflake_iso(snowflake_id: int) -> str:
    """The creation time of a snowflake, ISO 8601 as Discord writes timestamps."""
    return iso(snowflake_id >> 22)


def now_iso() -> str:
    return datetime.datetime.now(tz=datetime.UTC).isoformat()


def validate_message_body(payload: Any, *, files: int = 0, edit: bool = False) -> MessageFields:
    """Check a message create/edit body; return the fields it sets.

    Raises
    ------
    RestError
        400 50035 for a wrong type or an over-long content, 50006 for an empty new message.
    """
    if not isinstance(payload, dict):
        raise form_error("_body", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    for name, expected in _FIELD_TYPES.items():
        value = payload.get(name)
        if value is None:
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            kind = expected.__name__ if isinstance(expected, type) else "string or integer"
            raise form_error(name, "BASE_TYPE_BAD_TYPE", f"Must be a valid {kind}.")
    nonce = payload.get("nonce")
    if isinstance(nonce, str) and len(nonce) > MAX_NONCE_LENGTH:
        raise form_error("nonce", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_NONCE_LENGTH} or fewer in length.")
    content = payload.get("content")
    if content is not None and len(content) > 2000:
        raise form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    embeds = payload.get("embeds")
    if embeds is not None:
        if len(embeds) > 10:
            raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        for i, embed in enumerate(embeds):
            if not isinstance(embed, dict):
                raise form_error(f"embeds.{i}", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    components = payload.get("components")
    if components is not None and any(not isinstance(c, dict) for c in components):
        raise form_error("components", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    if not edit and not (content or embeds or files or components or payload.get("sticker_ids")
                         or payload.get("poll")):
        raise RestError(400, 50006, "Cannot send an empty message")
    return payload


def attachments_from_files(state: SimState, channel_id: int, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attachment objects for uploaded files (``files[n]`` parts of a multipart body)."""
    out = []
    for f in files:
        aid = state.ids.next()
        name = f.get("filename") or "file"
        url = f"https://cdn.discordapp.com/attachments/{channel_id}/{aid}/{name}"
        out.append({"id": str(aid), "filename": name, "size": f["size"], "url": url, "proxy_url": url,
                    "content_type": f.get("content_type") or "application/octet-stream", "flags": 0})
    return out


def mentions_for(world: World, guild: Guild | None, content: str,
                 allowed: dict[str, Any] | None) -> tuple[list[dict[str, Any]], list[str], bool]:
    """``(mentions, mention_roles, mention_everyone)`` parsed from ``content``.

    ``allowed`` (``allowed_mentions``) filters them as Discord does; None allows everything.
    In a guild each mentioned member's user object carries a partial ``member``.
    """
    if "<@" not in content and "@everyone" not in content and "@here" not in content:
        return [], [], False
    parse = None if allowed is None else set(allowed.get("parse") or ())
    allow_users = None if allowed is None else {str(u) for u in allowed.get("users") or ()}
    allow_roles = None if allowed is None else {str(r) for r in allowed.get("roles") or ()}
    users: list[dict[str, Any]] = []
    seen: set[str] = set()
    for raw in _USER_MENTION.findall(content):
        if raw in seen or (parse is not None and "users" not in parse and raw not in (allow_users or ())):
            continue
        seen.add(raw)
        user_id = int(raw)
        if guild is not None:
            member = world.member(guild.id, user_id)
            if member is None:
                continue
            user = dict(member["user"])
            partial = {k: v for k, v in member.items() if k != "user"}
            user["member"] = partial
        else:
            found = world.user(user_id)
            if found is None:
                continue
            user = found
        users.append(user)
    roles: list[str] = []
    if guild is not None:
        role_ids = {str(r.id) for r in guild.roles}
        for raw in dict.fromkeys(_ROLE_MENTION.findall(content)):
            if raw in role_ids and (parse is None or "roles" in parse or raw in (allow_roles or ())):
                roles.append(raw)
    everyone = ("@everyone" in content or "@here" in content) and (parse is None or "everyone" in parse)
    return users, roles, everyone


def build_message(state: SimState, *, message_id: int, channel_id: int, guild: Guild | None, author: dict[str, Any],
                  body: MessageFields, attachments: list[dict[str, Any]] | None = None, msg_type: int = 0,
                  member: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A complete message object.

    ``member`` is the author's partial member (no ``user``), added for gateway MESSAGE_CREATE in
    guilds; REST answers leave it out, as Discord does.
    """
    content = body.get("content") or ""
    mentions, mention_roles, everyone = mentions_for(state.world, guild, content, body.get("allowed_mentions"))
    flags = int(body.get("flags") or 0) & _SETTABLE_FLAGS
    embeds = [dict(e, type=e.get("type", "rich")) for e in body.get("embeds") or ()]
    msg: dict[str, Any] = {
        "id": str(message_id), "channel_id": str(channel_id), "author": author, "content": content,
        "timestamp": snowflake_iso(message_id), "edited_timestamp": None, "tts": bool(body.get("tts", False)),
        "mention_everyone": everyone, "mentions": mentions, "mention_roles": mention_roles,
        "attachments": attachments or [], "embeds": embeds, "pinned": False, "type": msg_type, "flags": flags,
        "components": list(body.get("components") or ()),
    }
    if guild is not None:
        msg["guild_id"] = str(guild.id)
    if member is not None:
        msg["member"] = member
    nonce = body.get("nonce")
    if nonce is not None:
        msg["nonce"] = nonce
    ref = body.get("message_reference")
    if isinstance(ref, dict) and ref.get("message_id") is not None:
        msg["type"] = 19 if msg_type == 0 else msg_type
        msg["message_reference"] = {"type": 0, "message_id": str(ref["message_id"]),
                                    "channel_id": str(ref.get("channel_id") or channel_id),
                                    **({"guild_id": str(guild.id)} if guild is not None else {})}
    if extra:
        msg.update(extra)
    return msg


def apply_edit(state: SimState, msg: dict[str, Any], body: MessageFields, guild: Guild | None,
               attachments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Apply an edit body to a stored message in place (content, embeds, components, flags, attachments)."""
    if "content" in body:
        content = body["content"] or ""
        msg["content"] = content
        mentions, roles, everyone = mentions_for(state.world, guild, content, body.get("allowed_mentions"))
        msg.update(mentions=mentions, mention_roles=roles, mention_everyone=everyone)
    if "embeds" in body:
        msg["embeds"] = [dict(e, type=e.get("type", "rich")) for e in body["embeds"] or ()]
    if "components" in body:
        msg["components"] = list(body["components"] or ())
    if "flags" in body and body["flags"] is not None:
        # Only SUPPRESS_EMBEDS may change on an edit; EPHEMERAL stays what it was.
        msg["flags"] = (msg.get("flags", 0) & ~(1 << 2)) | (int(body["flags"]) & (1 << 2))
    if "attachments" in body and body["attachments"] is not None:
        keep = {str(a.get("id")) for a in body["attachments"] if isinstance(a, dict)}
        msg["attachments"] = [a for a in msg.get("attachments", []) if a["id"] in keep]
    if attachments:
        msg["attachments"] = [*msg.get("attachments", []), *attachments]
    msg["flags"] = msg.get("flags", 0) & ~LOADING
    msg["edited_timestamp"] = now_iso()
    return msg


def dm_channel_id(user_id: int) -> int:
    """A DM channel id derived from the user id (its worker bits set to 6): unique and stable."""
    return (user_id & ~(0x1F << 17)) | (6 << 17)


def dm_channel(state: SimState, user: dict[str, Any]) -> dict[str, Any]:
    """The DM channel with ``user`` (created once, then the same object, as on Discord)."""
    channel_id = dm_channel_id(int(user["id"]))
    channel = state.dm_channels.get(channel_id)
    if channel is None:
        channel = {"id": str(channel_id), "type": 1, "last_message_id": None, "flags": 0, "recipients": [user]}
        state.dm_channels[channel_id] = channel
    return channel


def check_snowflake(value: Any, field: str) -> int:
    """A snowflake given as string or int in a JSON body (50035 otherwise)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise form_error(field, "NUMBER_TYPE_COERCE", "Value is not snowflake.")
    try:
        number = int(value)
    except ValueError:
        raise form_error(field, "NUMBER_TYPE_COERCE", f"Value \"{str(value)[:40]}\" is not snowflake.") from None
    if number <= 0 or number >= 1 << 64:
        raise form_error(field, "NUMBER_TYPE_COERCE", "Value is not snowflake.")
    return number
