"""Application command sync: only when the command tree changed, in the background, never fatal.

Cluster 0 (with ``INNKEEPER_SYNC_COMMANDS``) makes Discord's global commands match its command
tree. Three rules:

- **Only when the tree changed.** Discord limits how many commands a bot may create a day, and a
  restart must not spend them. The payload ``tree.sync()`` would send (every global command's
  ``to_dict``, translated when the tree has a translator) is hashed as stable JSON (keys sorted,
  commands sorted by name and type), with the application id. The hash stored in Redis after the
  last successful sync (:class:`~ipc.synced_commands.SyncedCommands`) is compared: the same hash
  means nothing to do. When Redis cannot tell, the tree is synced anyway (an unchanged command
  costs no create).
- **Never fatal.** The sync runs as a background task of the cluster's services, after the
  extensions loaded. A failure (a rejected payload, a 5xx, Redis or the network down) is logged with
  ``E2007`` and retried with jittered exponential backoff (``INNKEEPER_COMMAND_SYNC_RETRY`` doubling
  up to 10 minutes) until it succeeds or the cluster stops. Prefix commands, and slash commands
  already registered, work meanwhile.
- **Visible.** ``innkeeper_command_syncs_total{outcome}`` counts ``synced``, ``unchanged`` and
  ``failed`` attempts; ``innkeeper_command_sync_pending`` is 1 from the first failure until a sync
  succeeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

import discord
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from innkeeper.backoff import Backoff
from innkeeper.errors import ErrorCode, InnkeeperError
from innkeeper.services import BackgroundTasks

if TYPE_CHECKING:
    from discord import app_commands

    from ipc.synced_commands import SyncedCommands

__all__ = ("CommandSync", "command_payload", "payload_hash", "SYNCS", "SYNC_PENDING", "RETRY_CAP_S")

_log = logging.getLogger(__name__)

SYNCS = Counter("innkeeper_command_syncs", "Application command sync attempts, by outcome (synced, unchanged, failed)",
                ["outcome"])
SYNC_PENDING = Gauge("innkeeper_command_sync_pending",
                     "1 while the application commands wait for a sync that failed (it is being retried)")
#: The longest wait between two attempts of a failing sync.
RETRY_CAP_S = 600.0


async def command_payload(tree: app_commands.CommandTree[Any]) -> list[dict[str, Any]]:
    """The global commands exactly as ``tree.sync()`` sends them, sorted by name and type."""
    commands = tree.get_commands()  # discord.py's sync sends _get_all_commands(guild=None): the same list
    translator = tree.translator
    if translator is not None:
        payload = [await command.get_translated_payload(tree, translator) for command in commands]
    else:
        payload = [command.to_dict(tree) for command in commands]
    return sorted(payload, key=lambda c: (str(c.get("name")), int(c.get("type") or 1)))


def payload_hash(application_id: int | None, payload: list[dict[str, Any]]) -> str:
    """The SHA-256 (hex) of ``payload`` for ``application_id``, as stable JSON: equal payloads, equal hashes."""
    blob = json.dumps({"application_id": None if application_id is None else str(application_id),
                       "commands": payload}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class CommandSync:
    """Syncs the tree's global commands when they changed, retrying in the background until it succeeds.

    Parameters
    ----------
    tree:
        The bot's command tree (its client must be logged in when :meth:`start` runs: ``setup_hook``).
    synced:
        Where the hash of the last synced payload is kept.
    retry_s:
        The first retry's delay; each next one doubles, up to :data:`RETRY_CAP_S`, with jitter.
    """

    __slots__ = ("tree", "synced", "backoff", "outcome", "_tasks", "_done")

    def __init__(self, tree: app_commands.CommandTree[Any], synced: SyncedCommands, *, retry_s: float = 5.0) -> None:
        self.tree = tree
        self.synced = synced
        self.backoff = Backoff(retry_s, max(retry_s, RETRY_CAP_S))
        #: ``synced`` or ``unchanged`` once done; None before, and while it fails.
        self.outcome: str | None = None
        self._tasks = BackgroundTasks("command-sync")
        self._done = asyncio.Event()

    async def start(self) -> None:
        """Start syncing in the background (the cluster goes on starting at once)."""
        self._tasks.spawn(self.run(), name="sync")

    async def stop(self) -> None:
        """Stop retrying (the cluster is closing)."""
        await self._tasks.cancel()

    async def wait(self) -> str:
        """Wait until a sync succeeded (or found nothing to do); its outcome."""
        await self._done.wait()
        assert self.outcome is not None
        return self.outcome

    async def run(self) -> str:
        """Sync until it succeeds; returns ``synced`` or ``unchanged``."""
        while True:
            try:
                outcome = await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                SYNCS.labels("failed").inc()
                SYNC_PENDING.set(1)
                delay = self.backoff.next()
                code = ErrorCode.COMMAND_SYNC_FAILED.value
                expected = isinstance(exc, discord.DiscordException | InnkeeperError | OSError | TimeoutError)
                _log.error("[%s] application command sync failed (%s: %s); prefix commands are not affected; "
                           "attempt %d, retrying in %.1f s", code, type(exc).__name__, exc, self.backoff.attempts,
                           delay, exc_info=None if expected else exc,
                           extra={"error_code": code, "attempt": self.backoff.attempts})
                await asyncio.sleep(delay)
                continue
            SYNCS.labels(outcome).inc()
            SYNC_PENDING.set(0)
            self.backoff.reset()
            self.outcome = outcome
            self._done.set()
            return outcome

    async def sync_once(self) -> str:
        """One attempt: ``unchanged`` when Discord already has this payload, else sync it and return ``synced``.

        Raises
        ------
        discord.HTTPException, discord.app_commands.MissingApplicationID, OSError
            The sync failed (what ``tree.sync()`` raises).
        """
        payload = await command_payload(self.tree)
        digest = payload_hash(self.tree.client.application_id, payload)
        try:
            stored = await self.synced.load()
        except (RedisError, OSError) as exc:  # Redis cannot tell: sync (unchanged commands cost no create)
            _log.warning("cannot read the synced commands' hash (%s): syncing anyway", exc)
            stored = None
        if stored == digest:
            _log.info("application commands unchanged since the last sync (%d commands, hash %s): not synced",
                      len(payload), digest[:12])
            return "unchanged"
        synced = await self.tree.sync()
        try:
            await self.synced.save(digest)
        except (RedisError, OSError) as exc:
            _log.warning("synced, but could not store the commands' hash (%s): the next start syncs again", exc)
        _log.info("synced %d application commands (hash %s)", len(synced), digest[:12])
        return "synced"
