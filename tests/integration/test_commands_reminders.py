"""Reminder delivery against a real PostgreSQL: claims, leases, crash recovery without duplicates, and
failures that never ask Discord twice where the answer is known to be no."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from db import reminders as db_reminders
from db.crypto import KeyRing
from db.migrate import migrate
from db.pool import Database
from db.testing import make_keys
from innkeeper.backoff import Backoff
from ipc.ratelimit import RequestRefused
from shard.reminder_service import MAX_ATTEMPTS, ReminderService, render_reminder
from tests.support import wait_for

pytestmark = pytest.mark.integration

BOT_ID = 999
GUILD, CHANNEL = 1, 2


class _Resp:
    def __init__(self, status: int) -> None:
        self.status = status
        self.reason = "boom"


def http_error(status: int) -> discord.HTTPException:
    kind = {403: discord.Forbidden, 404: discord.NotFound}.get(status, discord.HTTPException)
    return kind(_Resp(status), "refused")  # type: ignore[arg-type]


class FakeChannel:
    """A messageable that records every send attempt (``tries``) and what it accepted."""

    def __init__(self, fail: Exception | None = None, took: float = 0.0) -> None:
        self.messages: list[SimpleNamespace] = []
        self.fail = fail
        self.took = took  # seconds each send takes
        self.tries = 0

    async def send(self, content: str, **kwargs: Any) -> SimpleNamespace:
        self.tries += 1
        if self.took:
            await asyncio.sleep(self.took)
        if self.fail is not None:
            raise self.fail
        msg = SimpleNamespace(author=SimpleNamespace(id=BOT_ID), content=content, nonce=kwargs.get("nonce"))
        self.messages.append(msg)
        return msg

    async def history(self, limit: int = 50) -> AsyncIterator[SimpleNamespace]:
        for m in reversed(self.messages[-limit:]):
            yield m


class FakeBot:
    """One channel and one DM for everybody; ``guild`` is what discord.py's cache holds (None: not cached)."""

    def __init__(self, channel: FakeChannel, dm: FakeChannel, guild: Any = None) -> None:
        self.user = SimpleNamespace(id=BOT_ID)
        self.channel, self.dm, self.guild = channel, dm, guild

    def get_partial_messageable(self, channel_id: int, *, guild_id: int | None = None) -> FakeChannel:
        return self.channel

    async def create_dm(self, user: Any) -> FakeChannel:
        return self.dm

    def get_guild(self, guild_id: int) -> Any:
        return self.guild


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await migrate(database_url)
    async with Database(database_url) as database:
        yield database


KEYS = KeyRing.parse(["dev"], allow_dev=True)  # the bot under test talks to the simulator
QUICK = Backoff(0.001, 0.001)  # retries at once, for the tests that walk through every attempt


async def due_reminder(db: Database, keys: KeyRing = KEYS, *, user_id: int = 42, in_dm: bool = False) -> int:
    item = await db_reminders.create_reminder(db, keys, user_id=user_id, body="stretch",
                                              guild_id=None if in_dm else GUILD, channel_id=None if in_dm else CHANNEL,
                                              due_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    return item.id


def service(db: Database, channel: FakeChannel, dm: FakeChannel | None = None, cluster: int = 0,
            lease: float = 60.0, guild: Any = None, backoff: Backoff | None = None) -> ReminderService:
    return ReminderService(FakeBot(channel, dm or FakeChannel(), guild), db,  # type: ignore[arg-type]
                           SimpleNamespace(available=True), KEYS, cluster_id=cluster, lease=lease,
                           retry_backoff=backoff)


async def row(db: Database, rid: int) -> db_reminders.Reminder:
    got = await db_reminders.get_reminder(db, KEYS, rid)
    assert got is not None
    return got


async def test_two_clusters_deliver_each_reminder_once(db: Database) -> None:
    ids = [await due_reminder(db) for _ in range(20)]
    channel = FakeChannel()
    a, b = service(db, channel, cluster=0), service(db, channel, cluster=1)
    counts = await asyncio.gather(a.tick(), b.tick())
    assert sum(counts) == 20
    assert sorted(m.content for m in channel.messages) == sorted(
        render_reminder(SimpleNamespace(id=i, user_id=42, body="stretch")) for i in ids)  # type: ignore[arg-type]
    assert await a.tick() == 0 and await b.tick() == 0


async def test_a_crash_after_sending_does_not_send_twice(db: Database) -> None:
    rid = await due_reminder(db)
    channel = FakeChannel()
    crashed = service(db, channel, lease=0.2)
    (claimed,) = await db_reminders.claim_due(db, KEYS, crashed.claimer, lease=0.2)
    await crashed.send(claimed)  # ...and the process dies before marking it
    survivor = service(db, channel, cluster=1)
    # nothing to claim until the lease runs out; then the survivor delivers it
    assert await wait_for(survivor.tick, timeout=10, message="the crashed claim's lease to run out") == 1
    assert len(channel.messages) == 1 and channel.messages[0].content.endswith(f"reminder #{rid}")
    got = await row(db, rid)
    assert got.delivered_at is not None and got.attempts == 2


async def test_a_crash_before_sending_is_delivered_by_another_cluster(db: Database) -> None:
    rid = await due_reminder(db)
    channel = FakeChannel()
    await db_reminders.claim_due(db, KEYS, "cluster-dead", lease=0.2)
    survivor = service(db, channel, cluster=1)
    assert await survivor.tick() == 0  # still leased
    assert await wait_for(survivor.tick, timeout=10, message="the dead claim's lease to run out") == 1
    assert [m.content.endswith(f"reminder #{rid}") for m in channel.messages] == [True]


async def test_a_claim_taken_over_before_the_send_is_left_unsent(db: Database) -> None:
    rid = await due_reminder(db)
    channel = FakeChannel()
    slow = service(db, channel, lease=0.3)
    (claimed,) = await db_reminders.claim_due(db, KEYS, slow.claimer, lease=0.3)
    # the claimer stalls past its lease (a long batch, a stopped process); another cluster claims it
    (taken,) = await wait_for(lambda: db_reminders.claim_due(db, KEYS, "cluster-other", lease=60), timeout=10,
                              message="the lease to run out")
    assert not await slow.deliver(claimed)  # its claim is checked before anything is sent
    assert channel.tries == 0
    got = await row(db, rid)
    assert got.claimed_by == "cluster-other" and got.delivered_at is None and got.attempts == 2


async def test_a_send_slower_than_the_lease_keeps_its_claim(db: Database) -> None:
    """The claim is lengthened every third of the lease while the send is in flight: no other cluster
    takes the reminder meanwhile, however long the send takes."""
    rid = await due_reminder(db)
    channel = FakeChannel(took=2.0)  # more than three leases
    sender, other = service(db, channel, lease=0.6), service(db, channel, cluster=1, lease=0.6)
    sending = asyncio.create_task(sender.tick())
    await wait_for(lambda: channel.tries == 1, timeout=10, message="the send in flight")
    while not sending.done():
        assert await other.tick() == 0  # never claimable while the send goes on
        held = await row(db, rid)
        assert held.claimed_by == sender.claimer or held.delivered_at is not None
        await asyncio.sleep(0.1)
    assert await sending == 1
    got = await row(db, rid)
    assert got.delivered_at is not None and got.attempts == 1 and got.claimed_by == sender.claimer
    assert len(channel.messages) == 1


async def test_a_passing_failure_waits_for_its_backoff_before_the_next_try(db: Database) -> None:
    rid = await due_reminder(db)
    broken = FakeChannel(fail=http_error(503))
    svc = service(db, broken)  # the default backoff: 15 s after the first failure
    assert await svc.tick() == 0
    got = await row(db, rid)
    assert got.failed_at is None and got.delivered_at is None and got.claimed_by is None and got.attempts == 1
    assert got.next_attempt_at is not None
    wait = (got.next_attempt_at - dt.datetime.now(dt.UTC)).total_seconds()
    assert 5 <= wait <= 15  # jittered, half to all of the first ceiling
    for _ in range(5):
        assert await svc.tick() == 0
    assert broken.tries == 1  # not retried every second


async def test_passing_failures_are_retried_then_the_reminder_is_undeliverable(db: Database) -> None:
    rid = await due_reminder(db)
    broken = FakeChannel(fail=http_error(500))
    svc = service(db, broken, backoff=QUICK)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        await wait_for(lambda: _claimable(db, rid), timeout=5, message="the retry time")
        assert await svc.tick() == 0
        assert broken.tries == attempt
    got = await row(db, rid)
    assert (got.failure, got.delivered_at, got.attempts) == ("gave_up", None, MAX_ATTEMPTS)
    assert got.failed_at is not None
    assert await svc.tick() == 0 and broken.tries == MAX_ATTEMPTS  # final: never claimed again


async def _claimable(db: Database, rid: int) -> bool:
    return bool(await db.fetchval("t", "SELECT next_attempt_at IS NULL OR next_attempt_at <= now() "
                                       "FROM reminders WHERE id = $1", rid))


async def test_a_forbidden_channel_falls_back_to_dms(db: Database) -> None:
    await due_reminder(db)
    forbidden = FakeChannel(fail=http_error(403))
    dm = FakeChannel()
    assert await service(db, forbidden, dm).tick() == 1
    assert len(dm.messages) == 1 and dm.messages[0].content.startswith("<@42> ⏰ stretch")


@pytest.mark.parametrize(("status", "reason"), [(403, "forbidden"), (404, "gone")])
async def test_403_and_404_are_final_and_asked_once_per_channel(db: Database, status: int, reason: str) -> None:
    """The attack: many reminders into a channel that refuses the bot, from users whose DMs are closed."""
    users = (41, 42, 43)
    ids = [await due_reminder(db, user_id=u) for u in users for _ in range(10)]
    channel, dm = FakeChannel(fail=http_error(status)), FakeChannel(fail=http_error(403))
    svc = service(db, channel, dm)
    assert await svc.tick() == 0
    # one refusal for the channel, one per user's DMs: not one per reminder, and no retries
    assert channel.tries == 1 and dm.tries == len(users)
    for rid in ids:
        got = await row(db, rid)
        assert (got.failure, got.claimed_by, got.attempts) == (reason, svc.claimer, 1) and got.failed_at is not None
    assert await svc.tick() == 0 and channel.tries == 1 and dm.tries == len(users)
    # each owner is told once, in the order the reminders were due, without their text
    told = await db_reminders.take_failures(db, 42)
    assert [t.id for t in told] == ids[10:20] and {t.failure for t in told} == {reason}
    assert {(t.guild_id, t.channel_id) for t in told} == {(GUILD, CHANNEL)}
    assert await db_reminders.take_failures(db, 42) == []
    assert len(await db_reminders.take_failures(db, 41)) == 10


async def test_a_dm_reminder_with_closed_dms_is_undeliverable(db: Database) -> None:
    rid = await due_reminder(db, in_dm=True)
    dm = FakeChannel(fail=http_error(403))
    assert await service(db, FakeChannel(), dm).tick() == 0
    assert dm.tries == 1 and (await row(db, rid)).failure == "dm_closed"


async def test_the_cache_saying_the_bot_cannot_post_skips_the_channel(db: Database,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import shard.reminder_service as module

    rid = await due_reminder(db)
    verdicts: list[object] = []

    def cannot_post(channel: object) -> bool:
        verdicts.append(channel)
        return False

    monkeypatch.setattr(module, "bot_can_post", cannot_post)
    guild = SimpleNamespace(get_channel_or_thread=lambda cid: f"#channel-{cid}")
    channel, dm = FakeChannel(), FakeChannel()
    assert await service(db, channel, dm, guild=guild).tick() == 1
    assert verdicts == [f"#channel-{CHANNEL}"] and channel.tries == 0  # asked the cache, not Discord
    assert len(dm.messages) == 1 and (await row(db, rid)).delivered_at is not None


async def test_an_undecryptable_reminder_is_marked_and_delivery_goes_on(db: Database,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    retired = make_keys("retired")
    lost = await due_reminder(db, retired)  # under a key the ring no longer has
    corrupt = await due_reminder(db)
    await db.execute("t", "UPDATE reminders SET body = body || 'x' WHERE id = $1", corrupt)
    fine = await due_reminder(db)
    channel = FakeChannel()
    svc = service(db, channel)
    assert await svc.tick() == 1
    assert [m.content.endswith(f"reminder #{fine}") for m in channel.messages] == [True]
    for rid in (lost, corrupt):
        got = await row(db, rid)
        assert got.failure == "unreadable" and got.body is None
        logged = [r.getMessage() for r in caplog.records if f"reminder {rid} cannot be decrypted" in r.getMessage()]
        assert len(logged) == 1 and "stretch" not in logged[0]
    assert await svc.tick() == 0  # not claimed again: logged once
    assert [r.failure for r in await db_reminders.take_failures(db, 42)] == ["unreadable", "unreadable"]
    listed = await db_reminders.list_for_user(db, KEYS, 42)
    assert listed == []


async def test_a_refusing_guard_puts_every_held_reminder_off_untried(db: Database) -> None:
    ids = [await due_reminder(db) for _ in range(3)]
    channel = FakeChannel(fail=RequestRefused(120.0, 9000))
    svc = service(db, channel)
    assert await svc.tick() == 0
    assert channel.tries == 1  # the tick stopped at the first refusal
    for rid in ids:
        got = await row(db, rid)
        assert got.attempts == 0 and got.claimed_by is None and got.failed_at is None  # not an attempt
        assert got.next_attempt_at is not None
        assert 100 < (got.next_attempt_at - dt.datetime.now(dt.UTC)).total_seconds() <= 120


async def test_a_reminder_written_before_row_binding_waits_for_the_upgrade(db: Database) -> None:
    """Not marked unreadable: maintenance binds it to its row within a minute, then it is delivered."""
    from db.testing import legacy_value

    rid = int(await db.fetchval("t", "INSERT INTO reminders (user_id, guild_id, channel_id, body, due_at) "
                                     "VALUES (42, $1, $2, $3, now() - interval '1 second') RETURNING id",
                                GUILD, CHANNEL, legacy_value("dev", "old text", db_reminders.BODY_CONTEXT)))
    assert await db_reminders.claim_due(db, KEYS, "cluster-0") == []
    row = await db.fetchrow("t", "SELECT attempts, failed_at, claimed_by, next_attempt_at > now() AS later "
                                 "FROM reminders WHERE id = $1", rid)
    assert row is not None and row["failed_at"] is None and row["claimed_by"] is None and row["later"]
    assert row["attempts"] == 0  # put back untried
