"""What automod tells the server and writes down: one log notice and a few audit rows per guild per window.

A raid must not flood a server's log channel, nor the audit log's chain (each row locks the
guild's chain head). So :class:`IncidentLog` gathers a guild's incidents, once each one's action
is done, for ``window_s`` seconds from the first, then:

* posts **one notice** to the guild's log channel (when one is set): the first incident in full
  (the rule, the author's mention, the channel, what was done), then ``… and N more`` with a count
  per rule and action. Mentions are rendered but ping nobody (``allowed_mentions`` none);
* writes **one audit row per author, rule and action** (``automod.<rule>``, the bot as the actor,
  the author as the target), whose details carry the action, how many messages, and their
  channel and message ids (the first :data:`MAX_IDS`).

A steady raid therefore costs one notice per window per guild. **One timer serves every window**:
windows all last ``window_s`` and are kept in the order they opened, so the log arms a single
event-loop timer for the oldest one; when it fires, every window due by then is written by one
background task, and the timer is armed again for the next. A raid across a thousand guilds
costs one timer and a write task per firing, not a sleeping task per guild. Memory is bounded: at most
``max_guilds`` open windows and :data:`MAX_GROUPS` rows per window; past that, incidents are only
counted (``innkeeper_automod_dropped_total{what="incidents"}``). Windows still open at shutdown
are flushed by :meth:`IncidentLog.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from innkeeper.services import BackgroundTasks

from ..pipeline.events import AuditEvent
from .metrics import dropped, failure
from .rules import RULE_LABELS

if TYPE_CHECKING:
    from ..pipeline.events import AuditSink

__all__ = ("Incident", "IncidentLog", "render_notice", "MAX_GROUPS", "MAX_IDS")

_log = logging.getLogger(__name__)

#: Audit rows one window writes at most (distinct author, rule and action).
MAX_GROUPS = 50
#: Message and channel ids one audit row lists at most.
MAX_IDS = 20

#: How each action reads in a notice.
_DONE = {
    "delete": ("deleted", ""),
    "flag": ("flagged", " (not deleted: I lack Manage Messages there)"),
    "refused": ("flagged", " (not deleted: Discord refused, 403)"),
    "gone": ("found", " (it was already deleted)"),
    "failed": ("flagged", " (not deleted: the request failed)"),
}
_SHORT = {"delete": "deleted", "flag": "not deleted", "refused": "not deleted", "gone": "already gone",
          "failed": "not deleted"}


@dataclass(frozen=True, slots=True)
class Incident:
    """One message that broke a rule, and what was done about it."""

    guild_id: int
    channel_id: int
    message_id: int
    author_id: int
    rule: str
    action: str
    #: The guild's log channel when the message was judged (None: no notice).
    log_channel_id: int | None


class _Window:
    __slots__ = ("first", "due", "count", "tally", "groups", "log_channel_id")

    def __init__(self, first: Incident, due: float) -> None:
        self.first = first
        #: When the window closes, on the event loop's clock.
        self.due = due
        self.count = 0
        self.tally: dict[tuple[str, str], int] = {}
        #: (author, rule, action) → [count, channel ids, message ids]
        self.groups: dict[tuple[int, str, str], tuple[list[int], list[int], list[int]]] = {}
        self.log_channel_id = first.log_channel_id

    def add(self, incident: Incident) -> bool:
        """Count ``incident``; False when its audit row would be past :data:`MAX_GROUPS`."""
        self.count += 1
        key = (incident.rule, incident.action)
        self.tally[key] = self.tally.get(key, 0) + 1
        if incident.log_channel_id is not None or self.count == 1:
            self.log_channel_id = incident.log_channel_id
        group_key = (incident.author_id, incident.rule, incident.action)
        group = self.groups.get(group_key)
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                return False
            group = self.groups[group_key] = ([0], [], [])
        group[0][0] += 1
        if incident.channel_id not in group[1] and len(group[1]) < MAX_IDS:
            group[1].append(incident.channel_id)
        if len(group[2]) < MAX_IDS:
            group[2].append(incident.message_id)
        return True


def render_notice(first: Incident, count: int, tally: dict[tuple[str, str], int]) -> str:
    """The log notice of one window: the first incident, then ``… and N more`` by rule and action."""
    verb, why = _DONE[first.action]
    text = (f"🛡️ Automod {verb} a message by <@{first.author_id}> in <#{first.channel_id}>: "
            f"{RULE_LABELS[first.rule]}{why}.")
    if count > 1:
        rest = dict(tally)
        rest[(first.rule, first.action)] -= 1
        parts = [f"{RULE_LABELS[rule]}: {n} {_SHORT[action]}" for (rule, action), n in rest.items() if n > 0]
        text += f"\n… and {count - 1} more ({'; '.join(parts)})."
    return text


#: Posts a notice: ``(guild_id, channel_id, text)``; True when it was posted.
Poster = Callable[[int, int, str], Awaitable[bool]]


class IncidentLog:
    """Gathers incidents per guild and writes each window out once (see the module docstring).

    Parameters
    ----------
    post:
        Posts a notice to a log channel.
    audit:
        Where the audit rows go (the pipeline's :class:`~shard.pipeline.sinks.AuditToDatabase`).
    actor_id:
        The bot's user id (the actor of every row), or None before login.
    window_s:
        Seconds a guild's window stays open from its first incident.
    max_guilds:
        Open windows at most.
    """

    __slots__ = ("post", "audit", "actor_id", "window_s", "max_guilds", "_windows", "_timer", "_tasks", "notices",
                 "rows")

    def __init__(self, *, post: Poster, audit: AuditSink, actor_id: Callable[[], int | None], window_s: float = 10.0,
                 max_guilds: int = 10_000) -> None:
        self.post = post
        self.audit = audit
        self.actor_id = actor_id
        self.window_s = window_s
        self.max_guilds = max_guilds
        #: guild → its open window, in the order they opened (so the first is the first due)
        self._windows: dict[int, _Window] = {}
        #: The one timer, armed for the first window's end while any window is open.
        self._timer: asyncio.TimerHandle | None = None
        self._tasks = BackgroundTasks("automod-log")
        #: Notices posted and audit rows written so far.
        self.notices = 0
        self.rows = 0

    def __len__(self) -> int:
        """Open windows."""
        return len(self._windows)

    def add(self, incident: Incident) -> None:
        """Record an incident whose action is done; opens the guild's window if none is open."""
        window = self._windows.get(incident.guild_id)
        if window is None:
            if len(self._windows) >= self.max_guilds:
                dropped("incidents").inc()
                return
            loop = asyncio.get_running_loop()
            window = self._windows[incident.guild_id] = _Window(incident, loop.time() + self.window_s)
            if self._timer is None:
                self._timer = loop.call_at(window.due, self._close_due, window.due)
        if not window.add(incident):
            dropped("incidents").inc()

    def _close_due(self, when: float) -> None:
        """The timer: every window due by ``when`` goes to one write task; the timer is armed for the next."""
        self._timer = None
        windows = self._windows
        due = []
        for guild_id, window in windows.items():  # in the order they opened: the first not due ends the run
            if window.due > when:
                break
            due.append(guild_id)
        if due:
            self._tasks.spawn(self._write_all([windows.pop(guild_id) for guild_id in due]), name="windows")
        if windows:
            first = next(iter(windows.values()))
            self._timer = asyncio.get_running_loop().call_at(first.due, self._close_due, first.due)

    async def _write_all(self, windows: list[_Window]) -> None:
        for window in windows:
            await self._write(window)

    async def flush(self) -> None:
        """Write out every open window now (at shutdown, and for tests)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        windows = list(self._windows.values())
        self._windows.clear()
        await self._write_all(windows)

    async def close(self, *, grace_s: float = 5.0) -> None:
        """Flush the open windows, let the writes under way finish (up to ``grace_s``), then end them."""
        await self.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._tasks.wait()
        await self._tasks.cancel()

    async def _write(self, window: _Window) -> None:
        first = window.first
        if window.log_channel_id is not None:
            try:
                if await self.post(first.guild_id, window.log_channel_id,
                                   render_notice(first, window.count, window.tally)):
                    self.notices += 1
            except Exception:
                failure("notice").inc()
                _log.exception("posting the automod notice of guild %s failed", first.guild_id)
        actor = self.actor_id()
        if actor is None:
            return
        for (author_id, rule, action), (count, channels, messages) in window.groups.items():
            event = AuditEvent(guild_id=first.guild_id, actor_id=actor, action=f"automod.{rule}",
                               target_id=author_id, target=None,
                               details={"rule": rule, "action": action, "count": count[0], "channel_ids": channels,
                                        "message_ids": messages})
            try:
                await self.audit.append(event)
                self.rows += 1
            except Exception:
                failure("audit").inc()
                _log.exception("writing the automod audit row of guild %s failed", first.guild_id)
