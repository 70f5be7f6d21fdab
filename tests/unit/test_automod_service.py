"""Automod acting on raw messages against discord.py's real cache (an offline guild) and a recording client."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import discord
import pytest
from discord.state import ConnectionState
from prometheus_client import REGISTRY

from shard.automod import Automod
from shard.automod import service as automod_service
from shard.channel_access import RefusedTargets
from shard.pipeline.config import GuildConfig
from shard.pipeline.events import AuditEvent
from shard.pipeline.levels import Level
from tests.support import wait_for

GUILD, OWNER, BOT = 81384788765712384, 5, 999
CHAT, NO_MANAGE, LOG = 11, 12, 13
MOD_ROLE, HELPER_ROLE, ANNOUNCER_ROLE, BOT_ROLE = 21, 22, 23, 24
MEMBER, MODERATOR, HELPER, ANNOUNCER, CHANNEL_MOD = 101, 102, 103, 104, 105
VIEW, SEND, MANAGE_MESSAGES, MENTION_EVERYONE, HISTORY = 1 << 10, 1 << 11, 1 << 13, 1 << 17, 1 << 16


def _role(rid: int, name: str, perms: int, position: int, **extra: Any) -> dict[str, Any]:
    return {"id": str(rid), "name": name, "position": position, "permissions": str(perms), "color": 0,
            "hoist": False, "mentionable": False, "managed": False, **extra}


def _channel(cid: int, *overwrites: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(cid), "type": 0, "name": f"c{cid}", "position": cid, "permission_overwrites": list(overwrites)}


def make_guild() -> discord.Guild:
    state = ConnectionState(dispatch=lambda *a, **k: None, handlers={}, hooks={}, http=None,  # type: ignore[arg-type]
                            intents=discord.Intents.default())
    bot = {"id": str(BOT), "username": "Innkeeper", "discriminator": "0", "avatar": None, "bot": True}
    state.user = discord.ClientUser(state=state, data=bot)  # type: ignore[arg-type]
    roles = [_role(GUILD, "@everyone", VIEW | SEND | HISTORY, 0), _role(MOD_ROLE, "Moderator", MANAGE_MESSAGES, 2),
             _role(HELPER_ROLE, "Helper", 0, 1), _role(ANNOUNCER_ROLE, "Announcer", MENTION_EVERYONE, 1),
             _role(BOT_ROLE, "Innkeeper", MANAGE_MESSAGES, 3, managed=True, tags={"bot_id": str(BOT)})]
    channels = [_channel(CHAT, {"id": str(CHANNEL_MOD), "type": 1, "allow": str(MANAGE_MESSAGES), "deny": "0"}),
                _channel(NO_MANAGE, {"id": str(BOT), "type": 1, "allow": "0", "deny": str(MANAGE_MESSAGES)}),
                _channel(LOG)]
    me = {"user": bot, "roles": [str(BOT_ROLE)], "joined_at": None, "deaf": False, "mute": False, "flags": 0}
    return discord.Guild(data={"id": str(GUILD), "name": "T", "owner_id": str(OWNER), "member_count": 2,
                               "roles": roles, "channels": channels, "members": [me]}, state=state)


class Messageable:
    def __init__(self, client: FakeClient, channel_id: int) -> None:
        self.client, self.channel_id = client, channel_id

    async def send(self, content: str, *, allowed_mentions: discord.AllowedMentions) -> None:
        self.client.sent.append((self.channel_id, content, allowed_mentions.to_dict()))


class FakeHTTP:
    def __init__(self) -> None:
        self.deletes: list[tuple[int, int, str | None]] = []
        self.fail: Exception | None = None

    async def delete_message(self, channel_id: int, message_id: int, *, reason: str | None = None) -> None:
        self.deletes.append((channel_id, message_id, reason))
        await asyncio.sleep(0)  # a request takes a turn of the loop at least
        if self.fail is not None:
            raise self.fail


class FakeClient:
    """What automod uses of ``discord.Client``: the guild cache, the bot's user, HTTP and partial messageables."""

    def __init__(self) -> None:
        self.guild = make_guild()
        self.user = self.guild.me
        self.http = FakeHTTP()
        self.sent: list[tuple[int, str, dict[str, Any]]] = []

    def get_guild(self, guild_id: int) -> discord.Guild | None:
        return self.guild if guild_id == GUILD else None

    def get_partial_messageable(self, channel_id: int, *, guild_id: int | None = None) -> Messageable:
        return Messageable(self, channel_id)


class Audit:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def append(self, event: AuditEvent) -> None:
        self.events.append(event)


def cfg(level: int, *, log: int | None = LOG) -> GuildConfig:
    return GuildConfig(GUILD, automod_level=level, log_channel_id=log, role_levels={HELPER_ROLE: Level.MOD})


_ids = iter(range(5000, 10**6))


def message(author: int, content: str, *, channel: int = CHAT, roles: tuple[int, ...] = (),
            users: int = 0) -> dict[str, Any]:
    return {"id": str(next(_ids)), "channel_id": str(channel), "guild_id": str(GUILD), "content": content,
            "author": {"id": str(author), "username": f"u{author}", "discriminator": "0", "avatar": None},
            "member": {"roles": [str(r) for r in roles], "joined_at": None, "deaf": False, "mute": False, "flags": 0},
            "mentions": [{"id": str(900 + i)} for i in range(users)], "mention_roles": [], "mention_everyone": False}


def actions(rule: str, action: str) -> float:
    return REGISTRY.get_sample_value("innkeeper_automod_actions_total", {"rule": rule, "action": action}) or 0.0


def exempted() -> float:
    return REGISTRY.get_sample_value("innkeeper_automod_exempt_total") or 0.0


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
async def automod(client: FakeClient) -> Any:
    mod = Automod(client, audit=Audit(), refused=RefusedTargets(), log_window_s=3600)  # type: ignore[arg-type]
    await mod.start()
    yield mod
    await mod.stop()


async def settled(automod: Automod) -> None:
    """Every queued delete done."""
    await wait_for(lambda: not automod._queues and automod._pending == 0, timeout=5, message="deletes done")


async def test_an_invite_is_deleted_counted_logged_and_audited(client: FakeClient, automod: Automod) -> None:
    before = actions("invite_link", "delete")
    data = message(MEMBER, "join discord.gg/raiders")
    automod.inspect(data, cfg(2))
    await settled(automod)
    assert client.http.deletes == [(CHAT, int(data["id"]), "automod: invite link")]
    assert actions("invite_link", "delete") == before + 1
    assert client.sent == []  # the notice waits for the guild's window to close
    await automod.log.flush()
    ((channel, text, mentions),) = client.sent
    assert channel == LOG and mentions == {"parse": []}
    assert text == f"🛡️ Automod deleted a message by <@{MEMBER}> in <#{CHAT}>: invite link."
    (event,) = automod.log.audit.events  # type: ignore[attr-defined]
    assert (event.guild_id, event.actor_id, event.action, event.target_id) == (GUILD, BOT, "automod.invite_link",
                                                                              MEMBER)
    assert event.details == {"rule": "invite_link", "action": "delete", "count": 1, "channel_ids": [CHAT],
                             "message_ids": [int(data["id"])]}


async def test_plain_chat_and_lower_levels_do_nothing(client: FakeClient, automod: Automod) -> None:
    automod.inspect(message(MEMBER, "hello there, how are you"), cfg(3))
    automod.inspect(message(MEMBER, "discord.gg/fine-at-low"), cfg(1))
    automod.inspect(message(MEMBER, "five mentions are fine at medium", users=5), cfg(2))
    await settled(automod)
    assert client.http.deletes == [] and len(automod.log) == 0


async def test_moderators_are_exempt_however_they_are_moderators(client: FakeClient, automod: Automod) -> None:
    before = exempted()
    for author, roles in ((MODERATOR, (MOD_ROLE,)), (HELPER, (HELPER_ROLE,)), (OWNER, ()), (CHANNEL_MOD, ())):
        automod.inspect(message(author, "@everyone discord.gg/ours", roles=roles), cfg(3))
    await settled(automod)
    assert client.http.deletes == [] and exempted() == before + 4
    automod.owner_ids = frozenset({MEMBER})  # a bot owner too
    automod.inspect(message(MEMBER, "discord.gg/owner"), cfg(3))
    assert exempted() == before + 5


async def test_everyone_breaks_the_rule_only_without_mention_everyone(client: FakeClient, automod: Automod) -> None:
    allowed = message(ANNOUNCER, "@everyone the event starts now", roles=(ANNOUNCER_ROLE,))
    also_invite = message(ANNOUNCER, "@here join discord.gg/event", roles=(ANNOUNCER_ROLE,))
    not_allowed = message(MEMBER, "@here look")
    for data in (allowed, also_invite, not_allowed):
        automod.inspect(data, cfg(2))
    await settled(automod)
    assert [d[1] for d in client.http.deletes] == [int(also_invite["id"]), int(not_allowed["id"])]
    await automod.log.flush()
    rules = sorted(e.details["rule"] for e in automod.log.audit.events)  # type: ignore[attr-defined]
    assert rules == ["everyone_mention", "invite_link"]


async def test_where_the_cache_says_no_nothing_is_asked(client: FakeClient, automod: Automod) -> None:
    before = actions("invite_link", "flag")
    automod.inspect(message(MEMBER, "discord.gg/x1", channel=NO_MANAGE), cfg(2))
    assert client.http.deletes == [] and actions("invite_link", "flag") == before + 1
    await automod.log.flush()
    ((_, text, _),) = client.sent
    assert "flagged" in text and "I lack Manage Messages there" in text


async def test_a_403_is_asked_once_per_channel_even_in_a_burst(client: FakeClient, automod: Automod) -> None:
    client.http.fail = discord.Forbidden(SimpleNamespace(status=403, reason="Forbidden"),  # type: ignore[arg-type]
                                         {"code": 50013, "message": "Missing Permissions"})
    burst = [message(MEMBER, f"discord.gg/spam{i}") for i in range(6)]
    for data in burst:  # all judged before the first request is answered
        automod.inspect(data, cfg(2))
    await settled(automod)
    assert len(client.http.deletes) == 1
    later = message(MEMBER, "discord.gg/later")
    automod.inspect(later, cfg(2))
    await settled(automod)
    assert len(client.http.deletes) == 1
    await automod.log.flush()
    details = sorted((e.details["action"], e.details["count"]) for e in automod.log.audit.events)  # type: ignore[attr-defined]
    assert details == [("flag", 6), ("refused", 1)]
    ((_, text, _),) = client.sent
    assert text.endswith("… and 6 more (invite link: 6 not deleted).")


async def test_gone_and_failing_deletes_are_final(client: FakeClient, automod: Automod) -> None:
    response = SimpleNamespace(status=404, reason="Not Found")
    client.http.fail = discord.NotFound(response, {"code": 10008, "message": "Unknown Message"})  # type: ignore[arg-type]
    automod.inspect(message(MEMBER, "discord.gg/aa"), cfg(2))
    await settled(automod)
    client.http.fail = discord.HTTPException(SimpleNamespace(status=500, reason="x"), "boom")  # type: ignore[arg-type]
    automod.inspect(message(MEMBER, "discord.gg/bb"), cfg(2))
    await settled(automod)
    client.http.fail = None
    automod.inspect(message(MEMBER, "discord.gg/cc"), cfg(2))  # neither refused the channel
    await settled(automod)
    assert len(client.http.deletes) == 3
    await automod.log.flush()
    assert sorted(e.details["action"] for e in automod.log.audit.events) == ["delete", "failed", "gone"]  # type: ignore[attr-defined]


async def test_a_repeat_burst_makes_one_notice_and_one_row(client: FakeClient, automod: Automod) -> None:
    copies = [message(MEMBER, text) for text in ("Buy NOW", "buy   now", "buy now", "BUY NOW", "buy now")]
    for data in copies:
        automod.inspect(data, cfg(3))
    automod.inspect(message(HELPER + 50, "buy now"), cfg(3))  # another author's first copy
    await settled(automod)
    assert [d[1] for d in client.http.deletes] == [int(d["id"]) for d in copies[2:]]
    await automod.log.flush()
    ((_, text, _),) = client.sent
    assert text == (f"🛡️ Automod deleted a message by <@{MEMBER}> in <#{CHAT}>: repeated message.\n"
                    "… and 2 more (repeated message: 2 deleted).")
    (event,) = automod.log.audit.events  # type: ignore[attr-defined]
    assert event.details["count"] == 3


async def test_the_window_closes_by_itself_and_no_log_channel_means_no_notice(client: FakeClient) -> None:
    audit = Audit()
    mod = Automod(client, audit=audit, refused=RefusedTargets(), log_window_s=0.05)  # type: ignore[arg-type]
    try:
        mod.inspect(message(MEMBER, "discord.gg/aa"), cfg(2))
        mod.inspect(message(MEMBER, "discord.gg/bb"), cfg(2, log=None))
        await wait_for(lambda: len(audit.events) == 1, timeout=5, message="the window's audit row")
        assert audit.events[0].details["count"] == 2 and len(client.sent) == 1
        mod.inspect(message(MEMBER, "discord.gg/cc"), cfg(2, log=None))
        await wait_for(lambda: len(audit.events) == 2, timeout=5, message="the next window's row")
        assert len(client.sent) == 1 and len(mod.log) == 0
    finally:
        await mod.stop()


async def test_deferred_messages_are_inspected_once_and_in_order(client: FakeClient, automod: Automod) -> None:
    waiting = [message(MEMBER, "same again") for _ in range(3)]
    for data in waiting:
        automod.defer(data)
    fresh = message(MEMBER, "same again")
    automod.inspect(fresh, cfg(3))  # the configuration is cached now: the queue goes first
    automod.resume(GUILD, cfg(3))  # then the full path's lookup finds nothing left
    await settled(automod)
    assert [d[1] for d in client.http.deletes] == [int(waiting[2]["id"]), int(fresh["id"])]
    # a guild whose configuration could not be read: its messages are dropped, not inspected
    automod.defer(message(MEMBER, "discord.gg/xx"))
    automod.resume(GUILD, None)
    automod.defer(message(MEMBER, "discord.gg/yy"))
    automod.resume(GUILD, cfg(0))
    await settled(automod)
    assert len(client.http.deletes) == 2 and automod._deferred == {}


async def test_deferred_messages_are_bounded(client: FakeClient, automod: Automod,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(automod_service, "MAX_DEFERRED", 3)
    for i in range(5):
        automod.defer(message(MEMBER, f"discord.gg/x{i}"))
    assert automod._deferred_count == 3 and len(automod._deferred[GUILD]) == 3
    automod.resume(GUILD, cfg(2))
    await settled(automod)
    assert len(client.http.deletes) == 3 and automod._deferred_count == 0


async def test_a_broken_payload_never_raises(client: FakeClient, automod: Automod) -> None:
    before = REGISTRY.get_sample_value("innkeeper_automod_failures_total", {"stage": "inspect"}) or 0.0
    bad = message(MEMBER, "discord.gg/xx")
    bad["channel_id"] = "not a number"
    automod.inspect(bad, cfg(2))
    automod.inspect({"content": "discord.gg/xx", "author": "??"}, cfg(2))
    after = REGISTRY.get_sample_value("innkeeper_automod_failures_total", {"stage": "inspect"})
    assert after == before + 2
    without_member = message(MEMBER, "discord.gg/xx")
    del without_member["member"]  # a webhook's message: nobody to judge
    automod.inspect(without_member, cfg(2))
    await settled(automod)
    assert client.http.deletes == []


async def test_stop_writes_the_open_windows(client: FakeClient) -> None:
    audit = Audit()
    mod = Automod(client, audit=audit, refused=RefusedTargets(), log_window_s=3600)  # type: ignore[arg-type]
    await mod.start()
    mod.inspect(message(MEMBER, "discord.gg/bye"), cfg(2))
    await mod.stop()
    assert len(audit.events) == 1 and len(client.sent) == 1 and client.http.deletes


def test_audit_recent_shows_whom_automod_acted_on_and_how_often() -> None:
    import datetime as dt

    from db.audit import AuditEntry
    from shard.cogs.audit import render_entry

    entry = AuditEntry(7, GUILD, BOT, "automod.repeated_message", MEMBER, None,
                       {"rule": "repeated_message", "action": "delete", "count": 4, "channel_ids": [CHAT],
                        "message_ids": [1, 2, 3, 4]}, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), b"", False)
    assert render_entry(entry) == f"`#7` <t:1767225600:f> <@{BOT}> automod.repeated_message on <@{MEMBER}> delete ×4"
