"""Delivering reminders exactly once across clusters: :class:`ReminderService`.

Every cluster runs one. Each tick it claims due reminders with ``FOR UPDATE SKIP LOCKED`` and a
lease (:func:`db.reminders.claim_due`), sends them, and marks them delivered. So:

* two clusters never claim the same reminder while a lease is held (row locks + the lease);
* a cluster that dies after claiming loses nothing: the lease runs out and another cluster claims
  the reminder again;
* a cluster that dies after *sending* but before marking could cause a second message. Every
  reminder message therefore ends with a marker (``reminder #ID``), and a reminder claimed again
  (``attempts > 1``) is first looked for in the channel's recent messages: if the bot already
  posted it, it is only marked delivered. Sends also carry a ``nonce`` (discord.py adds
  ``enforce_nonce``), which Discord itself deduplicates for a few minutes.

A reminder goes to the channel where it was set (mentioning its owner) or, for one set in a DM or
whose channel is gone, to the owner's DMs. After :data:`MAX_ATTEMPTS` failed tries it is dropped
(marked delivered) and logged, so one broken reminder cannot loop forever.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import discord
from prometheus_client import Counter

from db import reminders as db_reminders
from innkeeper.errors import DatabaseError
from innkeeper.services import BackgroundTasks

from .pipeline.validation import neutralise

if TYPE_CHECKING:
    from db.crypto import KeyRing
    from db.pool import Database
    from db.reminders import Reminder

__all__ = ("ReminderService", "render_reminder", "MARKER", "MAX_ATTEMPTS")

_log = logging.getLogger(__name__)

MARKER = "reminder #{id}"
MAX_ATTEMPTS = 5

DELIVERED = Counter("innkeeper_reminders_delivered_total", "Reminders delivered, by how", ["how"])


def render_reminder(reminder: Reminder) -> str:
    """The message text: a mention, the (neutralised) text, and the marker used to detect re-sends."""
    body = neutralise(reminder.body, limit=1700)
    return f"<@{reminder.user_id}> ⏰ {body}\n-# {MARKER.format(id=reminder.id)}"


class SchemaState(Protocol):
    """Whether the database is connected with the schema this code needs (``shard.database.DatabaseService``)."""

    @property
    def available(self) -> bool: ...


class ReminderService:
    """Claims and delivers due reminders (see the module docstring).

    Parameters
    ----------
    client:
        The cluster's bot: it sends the reminders (``get_partial_messageable``, ``create_dm``, ``user``).
    db:
        The database.
    database:
        Whether the database is usable now; ticks are skipped while it is not.
    key_ring:
        Decrypts reminder texts; without one (no ``INNKEEPER_ENCRYPTION_KEYS``) nothing is delivered.
    cluster_id:
        Names this cluster's claims.
    interval:
        Seconds between ticks.
    lease:
        Seconds a claim is held before another cluster may take the reminder.
    batch:
        Reminders claimed per tick.
    """

    def __init__(self, client: discord.Client, db: Database, database: SchemaState, key_ring: KeyRing | None, *,
                 cluster_id: int, interval: float = 1.0, lease: float = 60.0, batch: int = 50) -> None:
        self.client = client
        self.db = db
        self.database = database
        self.key_ring = key_ring
        self.interval = interval
        self.lease = lease
        self.batch = batch
        self.claimer = f"cluster-{cluster_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tasks = BackgroundTasks("reminders")

    async def start(self) -> None:
        if not len(self._tasks):
            self._tasks.every(self.interval, self.tick, name="tick", on_error=self._tick_failed)

    async def stop(self) -> None:
        await self._tasks.cancel()

    @staticmethod
    def _tick_failed(exc: Exception) -> None:
        if isinstance(exc, DatabaseError):
            _log.debug("reminder tick skipped: %s", exc)
        else:
            _log.error("reminder tick failed", exc_info=exc)

    async def tick(self) -> int:
        """Claim and deliver what is due now; returns how many were delivered."""
        if self.key_ring is None or not self.database.available:
            return 0
        due = await db_reminders.claim_due(self.db, self.key_ring, self.claimer, lease=self.lease, limit=self.batch)
        delivered = 0
        for reminder in due:
            if await self.deliver(reminder):
                delivered += 1
        return delivered

    async def deliver(self, reminder: Reminder) -> bool:
        """Send one claimed reminder and mark it; True when it counts as delivered by us."""
        db = self.db
        try:
            if reminder.attempts > 1 and await self.already_sent(reminder):
                DELIVERED.labels("found").inc()
            else:
                await self.send(reminder)
                DELIVERED.labels("sent").inc()
        except discord.HTTPException as exc:
            if reminder.attempts >= MAX_ATTEMPTS:
                _log.warning("reminder %s undeliverable after %d tries (%s); dropping it", reminder.id,
                             reminder.attempts, exc)
                DELIVERED.labels("dropped").inc()
            else:
                _log.info("reminder %s not delivered (%s); it will be retried", reminder.id, exc)
                await db_reminders.release_claim(db, reminder.id, self.claimer)
                return False
        marked = await db_reminders.mark_delivered(db, reminder.id, self.claimer)
        if not marked:
            _log.warning("reminder %s: our claim ran out before it was marked delivered", reminder.id)
        return marked

    async def _target(self, reminder: Reminder) -> discord.abc.Messageable:
        if reminder.channel_id is not None and reminder.guild_id is not None:
            return self.client.get_partial_messageable(reminder.channel_id, guild_id=reminder.guild_id)
        return await self.client.create_dm(discord.Object(reminder.user_id))

    async def send(self, reminder: Reminder) -> None:
        """Post the reminder (falling back to the owner's DMs when the channel refuses)."""
        content = render_reminder(reminder)
        mentions = discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(reminder.user_id)])
        nonce = f"ikr-{reminder.id}"
        target = await self._target(reminder)
        try:
            await target.send(content, allowed_mentions=mentions, nonce=nonce)
        except (discord.Forbidden, discord.NotFound):
            if reminder.guild_id is None:
                raise
            dm = await self.client.create_dm(discord.Object(reminder.user_id))
            await dm.send(content, allowed_mentions=mentions, nonce=nonce)

    async def already_sent(self, reminder: Reminder) -> bool:
        """Whether a previous attempt already posted this reminder (looks at recent messages)."""
        marker = MARKER.format(id=reminder.id)
        me = self.client.user
        targets: list[Any] = [await self._target(reminder)]
        if reminder.guild_id is not None:
            targets.append(await self.client.create_dm(discord.Object(reminder.user_id)))
        for target in targets:
            try:
                async for message in target.history(limit=50):
                    if me is not None and message.author.id == me.id and message.content.endswith(marker):
                        return True
            except (discord.Forbidden, discord.NotFound):
                continue
        return False
