"""Delivering reminders exactly once across clusters, without burning the bot's invalid-request budget.

Every cluster runs one :class:`ReminderService`. Each tick it claims due reminders with ``FOR
UPDATE SKIP LOCKED`` and a lease (:func:`db.reminders.claim_due`; ``INNKEEPER_REMINDER_LEASE``,
60 s), sends them, and marks them delivered.

Exactly once, and how
---------------------
Each reminder is posted once in its channel (or DMs), whichever cluster dies when. Four layers,
each covering what the one before cannot:

1. **The claim.** Two clusters never hold the same reminder: row locks and the lease. A cluster
   that dies after claiming loses nothing: the lease runs out and another cluster claims the
   reminder again (``attempts`` + 1).
2. **The claim is kept, and checked, around the send.** Right before sending, the claim is
   lengthened by a lease (:func:`db.reminders.extend_claim`), which fails when another cluster
   claimed the reminder meanwhile (a long batch, a stalled process): it is then left to that
   cluster, unsent. While the send is in flight the claim is lengthened every third of the
   lease, so a send slower than the lease (Discord answering slowly) keeps it: nobody else
   claims a reminder whose sender is alive and reaches the database. When the database cannot
   say, our own clock decides (the claim is trusted until a margin before its end).
3. **The marker.** A cluster that dies after its send reached Discord but before marking (or
   while the send was in flight) leaves a reminder that is claimed again. Every reminder message
   ends with a marker (``reminder #ID``), and a reminder claimed again (``attempts > 1``) is first
   looked for among the channel's (or DMs') last 50 messages: if the bot already posted it, it is
   only marked delivered (``innkeeper_reminders_delivered_total{how="found"}``).
4. **Discord's nonce.** Every send carries ``nonce`` ``ikr-<id>`` and discord.py adds
   ``enforce_nonce``: within "the past few minutes" Discord returns the message an earlier send
   with that nonce created instead of creating another. That covers the last gap: a send still in
   flight when the next claimer looks (its sender died, or could not lengthen its claim because
   its database connection was cut), which lands before or after the next claimer's own send.

What is not covered: a send that stays in flight longer than Discord remembers nonces (minutes)
*and* whose sender cannot reach the database meanwhile, and a reminder whose message a user
deleted before the next claimer looks (it is posted again). Tested end to end, with real
processes, in ``tests/e2e/test_reminders_once.py``.

Where a reminder goes: to the channel where it was set (mentioning its owner) or, for one set in
a DM or whose channel refuses it, to the owner's DMs, once.

Failures, and Discord's invalid-request ban
-------------------------------------------
Discord bans the bot's IP after 10,000 responses of 401/403/429 in 10 minutes, so a reminder
never asks twice where the answer is known to be no:

* **403 and 404 are final.** A channel that answers 403 or 404 sends the reminder to the owner's
  DMs (one attempt); DMs that answer 403 or 404 make the reminder *undeliverable*: it is marked so
  in the database (:func:`db.reminders.mark_failed`, with the reason) and never retried, and its
  owner is told the next time they use a reminder command (``shard/cogs/reminders.py``).
* **Nothing is asked whose answer is known.** Before posting in a channel, the bot's permissions
  there are read from discord.py's cache (:func:`~shard.channel_access.bot_can_post`: View
  Channel and Send Messages); and channels and DMs that refused in the last minutes are
  remembered (:class:`~shard.channel_access.RefusedTargets`: per process, bounded, expiring). So
  a hundred reminders due at once in a channel that denies the bot cost at most one 403 for the
  channel and one per owner's DMs, not one per reminder and attempt.
* **Other failures are retried with backoff** (5xx, timeouts, 429s, network errors): the reminder
  is released with a time before which no cluster claims it (``next_attempt_at``, jittered
  exponential :class:`~innkeeper.backoff.Backoff`), and after :data:`MAX_ATTEMPTS` tries it is
  undeliverable (``gave_up``).
* **The invalid-request guard refusing** (:class:`~ipc.ratelimit.RequestRefused`) means nothing
  was sent: the tick stops and every reminder it holds is released untried until the guard's
  ``retry_after``.
* **An undecryptable reminder** (its key left the ring, or a corrupt value) is marked
  undeliverable (``unreadable``) by :func:`db.reminders.claim_due`, logged once with its id, and
  delivery goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import discord
from prometheus_client import Counter

from db import reminders as db_reminders
from innkeeper.backoff import Backoff
from innkeeper.errors import DatabaseError
from innkeeper.services import BackgroundTasks
from ipc.ratelimit import RequestRefused

from .channel_access import RefusedTargets, TargetKind, bot_can_post
from .pipeline.validation import neutralise

if TYPE_CHECKING:
    from db.crypto import KeyRing
    from db.pool import Database
    from db.reminders import Failure, Reminder

__all__ = ("ReminderService", "render_reminder", "MARKER", "MAX_ATTEMPTS")

_log = logging.getLogger(__name__)

MARKER = "reminder #{id}"
MAX_ATTEMPTS = 5

DELIVERED = Counter("innkeeper_reminders_delivered_total", "Reminders delivered, by how (channel, dm, found)",
                    ["how"])
UNDELIVERABLE = Counter("innkeeper_reminders_undeliverable_total", "Reminders marked undeliverable, by reason",
                        ["reason"])
RETRIED = Counter("innkeeper_reminders_retried_total", "Reminder deliveries put off after a passing failure")
CLAIMS_LOST = Counter("innkeeper_reminders_claims_lost_total",
                      "Claims found taken over by another cluster, by when (before_send: not sent; while_sending)",
                      ["when"])
AVOIDED = Counter("innkeeper_reminders_requests_avoided_total",
                  "Sends not made because the cache or a recent refusal said they would be refused")

#: Failures worth another try later (403 and 404 are caught before these: they are final).
_PASSING = (discord.HTTPException, discord.RateLimited, TimeoutError, aiohttp.ClientError, OSError)


def render_reminder(reminder: Reminder) -> str:
    """The message text: a mention, the (neutralised) text, and the marker used to detect re-sends."""
    body = neutralise(reminder.body or "", limit=1700)
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
        The cluster's bot: it sends the reminders (``get_partial_messageable``, ``create_dm``,
        ``user``) and knows the bot's permissions (``get_guild``).
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
    retry_backoff:
        Delays between tries after passing failures (15 s, 30 s, 60 s, 120 s by default, jittered).
    refused:
        The channels and DMs that refused recently (a fresh one by default).
    """

    def __init__(self, client: discord.Client, db: Database, database: SchemaState, key_ring: KeyRing | None, *,
                 cluster_id: int, interval: float = 1.0, lease: float = 60.0, batch: int = 50,
                 retry_backoff: Backoff | None = None, refused: RefusedTargets | None = None) -> None:
        self.client = client
        self.db = db
        self.database = database
        self.key_ring = key_ring
        self.interval = interval
        self.lease = lease
        self.batch = batch
        self.retry_backoff = retry_backoff or Backoff(15.0, 900.0)
        self.refused = refused or RefusedTargets()
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
        asked = time.monotonic()  # the claims last at least until asked + lease, whatever the database's clock says
        due = await db_reminders.claim_due(self.db, self.key_ring, self.claimer, lease=self.lease, limit=self.batch)
        delivered = 0
        for i, reminder in enumerate(due):
            try:
                if await self.deliver(reminder, held_until=asked + self.lease):
                    delivered += 1
            except RequestRefused as exc:
                _log.warning("the invalid-request guard refuses requests for %.0f s: %d reminders put off",
                             exc.retry_after, len(due) - i)
                for held in due[i:]:
                    await db_reminders.release_claim(self.db, held.id, self.claimer, retry_in=exc.retry_after,
                                                     attempted=False)
                break
        return delivered

    async def deliver(self, reminder: Reminder, *, held_until: float | None = None) -> bool:
        """Send one claimed reminder and mark it; True when it counts as delivered by us.

        The claim is checked (and lengthened) first: a reminder another cluster took meanwhile is
        left to it, unsent. While it is being sent the claim is lengthened every third of the
        lease (:meth:`_hold`), so a slow send keeps it.

        Parameters
        ----------
        held_until:
            ``time.monotonic()`` until which the claim is known to last (by default a full lease
            from now: it was just claimed); used when the database cannot say.

        Raises
        ------
        RequestRefused
            The invalid-request guard refused a request: nothing was sent (the caller releases it).
        """
        claim = _Claim(time.monotonic() + self.lease if held_until is None else held_until)
        if not await self._still_ours(reminder, claim):
            return False
        try:
            async with self._hold(reminder, claim):
                if reminder.attempts > 1 and await self.already_sent(reminder):
                    DELIVERED.labels("found").inc()
                    failure = None
                else:
                    failure = await self.send(reminder)
        except _PASSING as exc:
            await self._retry_later(reminder, exc)
            return False
        if failure is not None:
            await self._give_up(reminder, failure)
            return False
        marked = await db_reminders.mark_delivered(self.db, reminder.id, self.claimer)
        if not marked:
            _log.warning("reminder %s: our claim ran out before it was marked delivered", reminder.id)
        return marked

    # --- the claim ----------------------------------------------------------------------------------
    async def _extend(self, reminder: Reminder, claim: _Claim) -> bool | None:
        """Lengthen the claim by a lease from now: True when done, False when it is not ours, None when unknown."""
        asked = time.monotonic()
        try:
            ours = await db_reminders.extend_claim(self.db, reminder.id, self.claimer, lease=self.lease)
        except DatabaseError as exc:
            _log.debug("reminder %s: could not lengthen the claim: %s", reminder.id, exc)
            return None
        if ours:
            claim.until = asked + self.lease
        return ours

    async def _still_ours(self, reminder: Reminder, claim: _Claim) -> bool:
        """Check the claim right before sending; False (and nothing sent) when it is gone."""
        ours = await self._extend(reminder, claim)
        if ours is None:  # the database cannot say: trust our own clock, with a margin
            ours = time.monotonic() < claim.until - min(5.0, self.lease / 3)
            if not ours:
                _log.info("reminder %s: the claim may have run out and the database cannot say; not sending",
                          reminder.id)
        elif not ours:
            _log.info("reminder %s was claimed by another cluster (or done) before we sent it; leaving it",
                      reminder.id)
        if not ours:
            CLAIMS_LOST.labels("before_send").inc()
        return ours

    @contextlib.asynccontextmanager
    async def _hold(self, reminder: Reminder, claim: _Claim) -> AsyncIterator[None]:
        """Lengthen the claim every third of the lease while the body runs (a slow send keeps it)."""
        async def keep() -> None:
            while True:
                await asyncio.sleep(self.lease / 3)
                ours = await self._extend(reminder, claim)
                if ours is False:
                    CLAIMS_LOST.labels("while_sending").inc()
                    _log.warning("reminder %s was claimed by another cluster while we were sending it; the "
                                 "message's nonce and marker keep it to one message", reminder.id)
                    return

        keeper = asyncio.create_task(keep(), name=f"reminder-{reminder.id}-claim")
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _retry_later(self, reminder: Reminder, exc: BaseException) -> None:
        if reminder.attempts >= MAX_ATTEMPTS:
            _log.warning("reminder %s not delivered after %d tries (%s)", reminder.id, reminder.attempts,
                         _describe(exc))
            await self._give_up(reminder, "gave_up")
            return
        delay = self.retry_backoff.delay(reminder.attempts - 1)
        if isinstance(exc, discord.RateLimited):
            delay = max(delay, exc.retry_after)
        RETRIED.inc()
        _log.info("reminder %s not delivered (%s); next try in %.0f s", reminder.id, _describe(exc), delay)
        await db_reminders.release_claim(self.db, reminder.id, self.claimer, retry_in=delay)

    async def _give_up(self, reminder: Reminder, failure: Failure) -> None:
        UNDELIVERABLE.labels(failure).inc()
        _log.info("reminder %s is undeliverable (%s); its owner will be told", reminder.id, failure)
        if not await db_reminders.mark_failed(self.db, reminder.id, self.claimer, failure):
            _log.warning("reminder %s: our claim ran out before it was marked undeliverable", reminder.id)

    # --- sending ------------------------------------------------------------------------------------
    def known_refusal(self, reminder: Reminder) -> Failure | None:
        """Why the reminder's channel would refuse it, known without a request; None when unknown."""
        if reminder.guild_id is None or reminder.channel_id is None:
            return None
        recent = self.refused.get("channel", reminder.channel_id)
        if recent is not None:
            return "gone" if recent == "gone" else "forbidden"
        guild = self.client.get_guild(reminder.guild_id)
        if guild is None:  # another cluster's server, or one the bot left: only a request can tell
            return None
        channel = guild.get_channel_or_thread(reminder.channel_id)
        return "forbidden" if channel is not None and bot_can_post(channel) is False else None

    async def send(self, reminder: Reminder) -> Failure | None:
        """Post the reminder: None once posted, else why it cannot be, for good.

        Its channel first (unless it is known to refuse), then, on 403/404, the owner's DMs once.
        """
        content = render_reminder(reminder)
        options: dict[str, Any] = {
            "allowed_mentions": discord.AllowedMentions(everyone=False, roles=False,
                                                        users=[discord.Object(reminder.user_id)]),
            "nonce": f"ikr-{reminder.id}",
        }
        if reminder.guild_id is None or reminder.channel_id is None:
            return None if await self._send_dm(reminder.user_id, content, options) else "dm_closed"
        refusal = self.known_refusal(reminder)
        if refusal is None:
            channel = self.client.get_partial_messageable(reminder.channel_id, guild_id=reminder.guild_id)
            try:
                await channel.send(content, **options)
            except discord.Forbidden:
                refusal = "forbidden"
            except discord.NotFound:
                refusal = "gone"
            else:
                DELIVERED.labels("channel").inc()
                return None
            self.refused.add("channel", reminder.channel_id, refusal)
        else:
            AVOIDED.inc()
        return None if await self._send_dm(reminder.user_id, content, options) else refusal

    async def _send_dm(self, user_id: int, content: str, options: dict[str, Any]) -> bool:
        """One try at the user's DMs: False when they refuse (now, or recently)."""
        if self.refused.get("dm", user_id) is not None:
            AVOIDED.inc()
            return False
        try:
            dm = await self.client.create_dm(discord.Object(user_id))
            await dm.send(content, **options)
        except (discord.Forbidden, discord.NotFound):
            self.refused.add("dm", user_id, "dm_closed")
            return False
        DELIVERED.labels("dm").inc()
        return True

    async def already_sent(self, reminder: Reminder) -> bool:
        """Whether a previous attempt already posted this reminder (looks at recent messages).

        Only where it could have been posted: not in a channel or DMs known to refuse the bot.
        """
        marker = MARKER.format(id=reminder.id)
        me = self.client.user
        places: list[tuple[TargetKind, int]] = []
        if reminder.guild_id is not None and reminder.channel_id is not None and self.known_refusal(reminder) is None:
            places.append(("channel", reminder.channel_id))
        if self.refused.get("dm", reminder.user_id) is None:
            places.append(("dm", reminder.user_id))
        for kind, target_id in places:
            try:
                target: Any = (await self.client.create_dm(discord.Object(target_id)) if kind == "dm" else
                               self.client.get_partial_messageable(target_id, guild_id=reminder.guild_id))
                async for message in target.history(limit=50):
                    if me is not None and message.author.id == me.id and message.content.endswith(marker):
                        return True
            except (discord.Forbidden, discord.NotFound) as exc:
                gone = isinstance(exc, discord.NotFound)
                self.refused.add(kind, target_id, "dm_closed" if kind == "dm" else "gone" if gone else "forbidden")
        return False


class _Claim:
    """How long our claim on one reminder is known to last (``time.monotonic()``)."""

    __slots__ = ("until",)

    def __init__(self, until: float) -> None:
        self.until = until


def _describe(exc: BaseException) -> str:
    if isinstance(exc, discord.HTTPException):
        return f"HTTP {exc.status}, code {exc.code}"
    if isinstance(exc, discord.RateLimited):
        return f"rate limited for {exc.retry_after:.0f} s"
    return type(exc).__name__
