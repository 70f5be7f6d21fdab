"""The incident log's one timer: windows of many guilds close on time, in order, each written once."""

from __future__ import annotations

import asyncio

from shard.automod.incidents import Incident, IncidentLog
from shard.pipeline.events import AuditEvent
from tests.support import wait_for


class Audit:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def append(self, event: AuditEvent) -> None:
        self.events.append(event)


class Poster:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int, str]] = []

    async def __call__(self, guild_id: int, channel_id: int, text: str) -> bool:
        self.sent.append((guild_id, channel_id, text))
        return True


def incident(guild_id: int, message_id: int = 1, log: int | None = 77) -> Incident:
    return Incident(guild_id=guild_id, channel_id=10, message_id=message_id, author_id=5, rule="invite_link",
                    action="delete", log_channel_id=log)


async def test_a_raid_over_many_guilds_arms_one_timer_and_no_task_per_guild() -> None:
    audit, post = Audit(), Poster()
    log = IncidentLog(post=post, audit=audit, actor_id=lambda: 1, window_s=0.2)
    try:
        for guild_id in range(1, 501):
            log.add(incident(guild_id))
            log.add(incident(guild_id, message_id=2))
        assert len(log) == 500 and len(log._tasks) == 0 and log._timer is not None
        await wait_for(lambda: len(audit.events) == 500, timeout=5, message="every window written")
        assert [e.guild_id for e in audit.events] == list(range(1, 501))  # in the order they opened
        assert all(e.details["count"] == 2 for e in audit.events) and len(post.sent) == 500
        assert len(log) == 0 and log._timer is None
    finally:
        await log.close()


async def test_windows_opened_later_close_later_and_a_guild_can_open_a_new_one() -> None:
    audit, post = Audit(), Poster()
    log = IncidentLog(post=post, audit=audit, actor_id=lambda: 1, window_s=0.3)
    try:
        log.add(incident(1))
        await asyncio.sleep(0.15)
        log.add(incident(2))
        log.add(incident(1, message_id=2))  # still guild 1's first window
        await wait_for(lambda: len(audit.events) == 1, timeout=5, message="the first window")
        assert audit.events[0].guild_id == 1 and audit.events[0].details["count"] == 2
        assert len(log) == 1 and log._timer is not None  # guild 2's window, opened later, is still open
        await wait_for(lambda: len(audit.events) == 2, timeout=5, message="the second window")
        assert audit.events[1].guild_id == 2
        log.add(incident(1, message_id=3))  # a new window for guild 1
        assert log._timer is not None
        await wait_for(lambda: len(audit.events) == 3, timeout=5, message="guild 1's next window")
        assert audit.events[2].details["message_ids"] == [3]
    finally:
        await log.close()


async def test_close_writes_the_open_windows_and_disarms_the_timer() -> None:
    audit, post = Audit(), Poster()
    log = IncidentLog(post=post, audit=audit, actor_id=lambda: 1, window_s=3600)
    log.add(incident(1))
    log.add(incident(2, log=None))
    await log.close()
    assert sorted(e.guild_id for e in audit.events) == [1, 2] and len(post.sent) == 1
    assert log._timer is None and len(log) == 0
