"""Gateway intents: which dispatches a session asked for, and the MESSAGE_CONTENT rule.

As on Discord, a session only gets the events of the intents it identified with (events that
belong to no intent always go out), and without ``MESSAGE_CONTENT`` the content fields of guild
messages arrive empty, except for messages the bot wrote and messages that mention it.

One event crosses the intents: a GUILD_MEMBER_UPDATE of the bot itself "is sent for current-user
updates regardless of whether the ``GUILD_MEMBERS`` intent is set" (``developers/events/gateway.mdx``,
"Gateway Intents" → "Caveats"); :func:`allows_dispatch` knows it.
"""

from __future__ import annotations

from typing import Any

__all__ = ("Intent", "allows", "allows_dispatch", "is_self_member_update", "strip_content", "MESSAGE_EVENTS",
           "SELF_EVENTS")


class Intent:
    """Discord's intent bits."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MODERATION = 1 << 2
    GUILD_EXPRESSIONS = 1 << 3
    GUILD_INTEGRATIONS = 1 << 4
    GUILD_WEBHOOKS = 1 << 5
    GUILD_INVITES = 1 << 6
    GUILD_VOICE_STATES = 1 << 7
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    GUILD_MESSAGE_TYPING = 1 << 11
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    DIRECT_MESSAGE_TYPING = 1 << 14
    MESSAGE_CONTENT = 1 << 15
    GUILD_SCHEDULED_EVENTS = 1 << 16
    AUTO_MODERATION_CONFIGURATION = 1 << 20
    AUTO_MODERATION_EXECUTION = 1 << 21
    GUILD_MESSAGE_POLLS = 1 << 24
    DIRECT_MESSAGE_POLLS = 1 << 25


def _events(bit: int, *names: str) -> dict[str, int]:
    return dict.fromkeys(names, bit)


_MESSAGES = ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE")
_REACTIONS = ("MESSAGE_REACTION_ADD", "MESSAGE_REACTION_REMOVE", "MESSAGE_REACTION_REMOVE_ALL",
              "MESSAGE_REACTION_REMOVE_EMOJI")
_POLLS = ("MESSAGE_POLL_VOTE_ADD", "MESSAGE_POLL_VOTE_REMOVE")

#: Guild event → the intent it needs.
_GUILD: dict[str, int] = {
    **_events(Intent.GUILDS, "GUILD_UPDATE", "GUILD_ROLE_CREATE", "GUILD_ROLE_UPDATE", "GUILD_ROLE_DELETE",
              "CHANNEL_CREATE", "CHANNEL_UPDATE", "CHANNEL_DELETE", "CHANNEL_PINS_UPDATE", "THREAD_CREATE",
              "THREAD_UPDATE", "THREAD_DELETE", "THREAD_LIST_SYNC", "THREAD_MEMBER_UPDATE", "STAGE_INSTANCE_CREATE",
              "STAGE_INSTANCE_UPDATE", "STAGE_INSTANCE_DELETE"),
    **_events(Intent.GUILD_MEMBERS, "GUILD_MEMBER_ADD", "GUILD_MEMBER_UPDATE", "GUILD_MEMBER_REMOVE"),
    **_events(Intent.GUILD_MODERATION, "GUILD_AUDIT_LOG_ENTRY_CREATE", "GUILD_BAN_ADD", "GUILD_BAN_REMOVE"),
    **_events(Intent.GUILD_EXPRESSIONS, "GUILD_EMOJIS_UPDATE", "GUILD_STICKERS_UPDATE"),
    **_events(Intent.GUILD_INTEGRATIONS, "GUILD_INTEGRATIONS_UPDATE", "INTEGRATION_CREATE", "INTEGRATION_UPDATE",
              "INTEGRATION_DELETE"),
    **_events(Intent.GUILD_WEBHOOKS, "WEBHOOKS_UPDATE"),
    **_events(Intent.GUILD_INVITES, "INVITE_CREATE", "INVITE_DELETE"),
    **_events(Intent.GUILD_VOICE_STATES, "VOICE_STATE_UPDATE"),
    **_events(Intent.GUILD_PRESENCES, "PRESENCE_UPDATE"),
    **_events(Intent.GUILD_MESSAGES, *_MESSAGES, "MESSAGE_DELETE_BULK"),
    **_events(Intent.GUILD_MESSAGE_REACTIONS, *_REACTIONS),
    **_events(Intent.GUILD_MESSAGE_TYPING, "TYPING_START"),
    **_events(Intent.GUILD_SCHEDULED_EVENTS, "GUILD_SCHEDULED_EVENT_CREATE", "GUILD_SCHEDULED_EVENT_UPDATE",
              "GUILD_SCHEDULED_EVENT_DELETE", "GUILD_SCHEDULED_EVENT_USER_ADD",
              "GUILD_SCHEDULED_EVENT_USER_REMOVE"),
    **_events(Intent.AUTO_MODERATION_CONFIGURATION, "AUTO_MODERATION_RULE_CREATE", "AUTO_MODERATION_RULE_UPDATE",
              "AUTO_MODERATION_RULE_DELETE"),
    **_events(Intent.AUTO_MODERATION_EXECUTION, "AUTO_MODERATION_ACTION_EXECUTION"),
    **_events(Intent.GUILD_MESSAGE_POLLS, *_POLLS),
}

#: Event outside any guild (DMs) → the intent it needs.
_DIRECT: dict[str, int] = {
    **_events(Intent.DIRECT_MESSAGES, *_MESSAGES, "CHANNEL_PINS_UPDATE"),
    **_events(Intent.DIRECT_MESSAGE_REACTIONS, *_REACTIONS),
    **_events(Intent.DIRECT_MESSAGE_TYPING, "TYPING_START"),
    **_events(Intent.DIRECT_MESSAGE_POLLS, *_POLLS),
}

#: Events whose content fields follow the MESSAGE_CONTENT rule.
MESSAGE_EVENTS = frozenset({"MESSAGE_CREATE", "MESSAGE_UPDATE"})
_CONTENT_FIELDS = {"content": "", "embeds": [], "attachments": [], "components": []}


def allows(intents: int, event: str, *, in_guild: bool) -> bool:
    """Whether a session that identified with ``intents`` receives ``event``."""
    need = (_GUILD if in_guild else _DIRECT).get(event)
    return need is None or bool(intents & need)


#: Events that may be sent past the intents when they are about the bot itself.
SELF_EVENTS = frozenset({"GUILD_MEMBER_UPDATE"})


def is_self_member_update(event: str, data: dict[str, Any], bot_id: int) -> bool:
    """Whether ``event`` is a GUILD_MEMBER_UPDATE of the bot itself (sent whatever the intents)."""
    if event != "GUILD_MEMBER_UPDATE":
        return False
    user = data.get("user")
    return isinstance(user, dict) and user.get("id") == str(bot_id)


def allows_dispatch(intents: int, event: str, data: dict[str, Any], *, in_guild: bool, bot_id: int) -> bool:
    """:func:`allows`, plus the bot's own GUILD_MEMBER_UPDATE, which needs no intent."""
    return allows(intents, event, in_guild=in_guild) or is_self_member_update(event, data, bot_id)


def strip_content(data: dict[str, Any], bot_id: int) -> dict[str, Any]:
    """A guild message as a session without MESSAGE_CONTENT sees it (``data`` itself when exempt)."""
    bot = str(bot_id)
    author = data.get("author")
    if isinstance(author, dict) and author.get("id") == bot:
        return data
    mentions = data.get("mentions")
    if isinstance(mentions, list) and any(isinstance(m, dict) and m.get("id") == bot for m in mentions):
        return data
    stripped = {**data, **{k: v for k, v in _CONTENT_FIELDS.items() if k in data}}
    stripped.pop("poll", None)
    return stripped
