"""Automod against Discord: who is exempt, whether the bot may delete, and the two requests it makes.

Everything here runs only for a message that broke a rule on its face (:mod:`shard.automod.rules`).

**Exempt members.** :func:`judge` builds the author's ``discord.Member`` from the payload (the one
discord.py object automod builds, and only here) and reads the permissions discord.py computes
from its cache (roles, channel overwrites, timeouts). The author is exempt at the pipeline's
``mod`` level or above (:func:`~shard.pipeline.levels.member_level`: the server's owner,
Administrator, Manage Server/Messages, Kick, Ban or Timeout Members, a role the server gave the mod
level, a bot owner) and also with Manage Messages in that channel alone. ``@everyone``/``@here``
breaks its rule only for an author without Mention Everyone in the channel.

**Deleting, and Discord's invalid-request ban.** Each 403 counts toward the ban (10,000 per 10
minutes per IP), so :class:`MessageRemover` asks only where the answer is not known to be no: the
bot's cached permissions in the channel must include Manage Messages (else the incident is
``flag``: logged, no request), and a channel that answered 403 (or 404 Unknown Channel) is
remembered for a while (:class:`~shard.channel_access.RefusedTargets`, its own instance: a channel
that refuses deletes may still accept posts), so a raid in it costs one 403, not one per message.
403 and 404 are final; nothing is retried (discord.py itself rides out 429s and 5xx).

**Notices** (:class:`NoticePoster`) follow the reminders' rules for posting: the cache's verdict
(:func:`~shard.channel_access.bot_can_post`) and the shared record of channels that refused the bot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from ipc.ratelimit import RequestRefused

from ..channel_access import RefusedTargets, bot_can_post
from ..pipeline.levels import Level, is_moderator, member_level
from ..pipeline.role_grants import counts_for_levels

if TYPE_CHECKING:
    from ..pipeline.config import GuildConfig

__all__ = ("judge", "may_delete", "MessageRemover", "NoticePoster", "UNKNOWN_CHANNEL", "EXEMPT")

_log = logging.getLogger(__name__)

#: What :func:`judge` answers for an author automod leaves alone.
EXEMPT = "exempt"
#: Discord's JSON error code for a channel that does not exist (any more).
UNKNOWN_CHANNEL = 10003

#: Failures after which a request is given up, not retried (discord.py already retried 429s and 5xx).
_PASSING = (discord.HTTPException, discord.RateLimited, RequestRefused, aiohttp.ClientError, OSError, TimeoutError)


def _author(guild: discord.Guild, data: dict[str, Any]) -> discord.Member | None:
    member = data.get("member")
    author = data.get("author")
    if not isinstance(member, dict) or not isinstance(author, dict):
        return None
    payload = {**member, "user": author, "roles": member.get("roles") or [], "flags": member.get("flags") or 0}
    return discord.Member(data=payload, guild=guild, state=guild._state)  # type: ignore[arg-type]


def judge(guild: discord.Guild, channel: Any, data: dict[str, Any], cfg: GuildConfig, candidates: Iterable[str],
          *, owner_ids: frozenset[int]) -> str | None:
    """The rule the message breaks once its author is known, :data:`EXEMPT`, or None (allowed after all).

    Parameters
    ----------
    guild, channel:
        From discord.py's cache (``channel`` None when not cached: the guild's permissions then).
    data:
        The raw MESSAGE_CREATE.
    cfg:
        The guild's configuration (its role levels).
    candidates:
        What :func:`~shard.automod.rules.raw_violations` and the repeat counter found, in order.
    owner_ids:
        ``INNKEEPER_OWNER_IDS``.
    """
    author = _author(guild, data)
    if author is None:
        return None  # no member in the payload (a webhook's message): nobody to judge
    guild_perms = author.guild_permissions
    try:
        perms = channel.permissions_for(author) if channel is not None else guild_perms
    except discord.ClientException:  # a thread whose parent is not cached
        perms = guild_perms
    level = member_level(author.id, owner_ids=owner_ids, is_guild_owner=guild.owner_id == author.id,
                         administrator=guild_perms.administrator, moderator=is_moderator(guild_perms),
                         role_ids=[r.id for r in author.roles if counts_for_levels(r, guild.id)],
                         role_levels=cfg.role_levels)
    if level >= Level.MOD or perms.administrator or perms.manage_messages:
        return EXEMPT
    for rule in candidates:
        if rule == "everyone_mention" and perms.mention_everyone:
            continue
        return rule
    return None


def may_delete(guild: discord.Guild, channel: Any) -> bool | None:
    """Whether the bot may delete others' messages in ``channel`` by the cache; None when it cannot tell."""
    me = guild.me
    if me is None or channel is None:
        return None
    try:
        perms = channel.permissions_for(me)
    except discord.ClientException:
        return None
    return bool(perms.manage_messages and perms.view_channel)


class MessageRemover:
    """Deletes rule-breaking messages, asking at most once where Discord said no.

    Parameters
    ----------
    client:
        The bot (its HTTP client sends ``DELETE /channels/{id}/messages/{id}``).
    refused:
        Channels that refused deletes recently (a fresh one by default).
    """

    __slots__ = ("client", "refused")

    def __init__(self, client: discord.Client, *, refused: RefusedTargets | None = None) -> None:
        self.client = client
        self.refused = refused or RefusedTargets()

    def known_refusal(self, guild: discord.Guild, channel: Any, channel_id: int) -> bool:
        """True when a delete in the channel is known to fail: the cache says so, or it refused lately."""
        return self.refused.get("channel", channel_id) is not None or may_delete(guild, channel) is False

    async def delete(self, channel_id: int, message_id: int, reason: str) -> str:
        """Delete one message; returns the action: ``delete``, ``refused``, ``gone`` or ``failed``."""
        try:
            await self.client.http.delete_message(channel_id, message_id, reason=reason)
        except discord.Forbidden:
            self.refused.add("channel", channel_id, "forbidden")
            return "refused"
        except discord.NotFound as exc:
            if exc.code == UNKNOWN_CHANNEL:
                self.refused.add("channel", channel_id, "gone")
            return "gone"
        except _PASSING as exc:
            _log.info("automod could not delete message %s in channel %s: %s", message_id, channel_id, exc)
            return "failed"
        return "delete"


class NoticePoster:
    """Posts automod's notices to log channels, pinging nobody.

    Parameters
    ----------
    client:
        The bot.
    refused:
        Channels and DMs that refused the bot recently (shared with reminders and private answers).
    """

    __slots__ = ("client", "refused")

    def __init__(self, client: discord.Client, *, refused: RefusedTargets) -> None:
        self.client = client
        self.refused = refused

    async def __call__(self, guild_id: int, channel_id: int, text: str) -> bool:
        """Post ``text`` in the log channel; False when it is known to refuse, or refused now."""
        if self.refused.get("channel", channel_id) is not None:
            return False
        guild = self.client.get_guild(guild_id)
        channel = guild.get_channel_or_thread(channel_id) if guild is not None else None
        if channel is not None and bot_can_post(channel) is False:
            return False
        target = self.client.get_partial_messageable(channel_id, guild_id=guild_id)
        try:
            await target.send(text, allowed_mentions=discord.AllowedMentions.none())
        except discord.Forbidden:
            self.refused.add("channel", channel_id, "forbidden")
            return False
        except discord.NotFound:
            self.refused.add("channel", channel_id, "gone")
            return False
        except _PASSING as exc:
            _log.info("automod could not post its notice in channel %s: %s", channel_id, exc)
            return False
        return True
