"""Background event streams for benchmarks (``POST /_sim/load``).

A :class:`LoadGenerator` dispatches ``rate`` events per second for ``seconds`` seconds (or, with
``rate`` 0, as fast as the event loop allows, in batches that leave the socket writers time to
drain) over the world's guilds, or the guilds of one shard. MESSAGE_CREATEs go round-robin over the
guilds, from templates built once per guild; each event only gets a fresh id. Presence, typing and
member events are spread in proportion to guild size by :class:`~simulator.guild_traffic.GuildTraffic`.
MESSAGE_CREATE streams may vary their text (``vary_content``: each message says ``content``
followed by its own id, so no two are copies of each other, in one run or across runs) and mix in
a share of other messages (``spam`` every ``spam_every`` messages, off the command positions),
e.g. rule-breaking ones for an automod benchmark.
When the gateway hub offers ``dispatch_guild_json(guild_id, event, d_json)`` the events are handed
over as JSON text, skipping the per-event encode.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .guild_traffic import TRAFFIC_KINDS, GuildTraffic
from .rest_objects import now_iso

if TYPE_CHECKING:
    from .state import SimState
    from .world_model import Guild

__all__ = ("LoadGenerator", "LOAD_KINDS", "LoadPlan")

_log = logging.getLogger(__name__)

#: ``message_create`` goes round-robin over the guilds; the others are spread in proportion to guild size
#: (:mod:`simulator.guild_traffic`), ``guild_traffic`` being Discord's usual blend of them.
LOAD_KINDS = ("message_create", *TRAFFIC_KINDS, "guild_traffic")
#: Distinct guild templates kept (events cycle through them).
_MAX_TEMPLATES = 2000
#: Events sent per loop turn when ``rate`` is 0; the gateway's writers yield every 64 frames.
_BATCH = 64
_TICK = 0.005


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class LoadPlan:
    """What one load run was asked to do."""

    __slots__ = ("kind", "rate", "seconds", "count", "shard_id", "content", "seed", "command", "command_every",
                 "vary_content", "spam", "spam_every")

    def __init__(self, kind: str, rate: float, seconds: float | None, count: int | None, shard_id: int | None,
                 content: str, seed: int = 0, command: str | None = None, command_every: int = 0,
                 vary_content: bool = False, spam: str | None = None, spam_every: int = 0) -> None:
        self.kind = kind
        self.rate = rate
        self.seconds = seconds
        self.count = count
        self.shard_id = shard_id
        self.content = content
        #: Seeds the size-weighted traffic: the same seed over the same world gives the same events.
        self.seed = seed
        #: MESSAGE_CREATE only: every ``command_every``-th message says ``command`` instead of ``content``,
        #: each from the next member of its guild, so a command stream comes from many distinct users.
        self.command = command
        self.command_every = command_every
        #: MESSAGE_CREATE only: each message says ``f"{content} {its id}"``.
        self.vary_content = vary_content
        #: MESSAGE_CREATE only: the message at ``n % spam_every == spam_every // 2`` says ``spam`` instead.
        self.spam = spam
        self.spam_every = spam_every

    @property
    def events(self) -> int | None:
        """How many events the run will send (None: as many as fit in ``seconds``)."""
        if self.count is not None:
            return self.count
        if self.rate > 0 and self.seconds is not None:
            return int(self.rate * self.seconds)
        return None


#: Stands for the content in a template whose content varies (split out of its JSON once).
_CONTENT_SLOT = "\x00content\x00"


class _Template:
    """One guild's pre-built event: a dict to copy, and JSON fragments around the varying field."""

    __slots__ = ("guild_id", "base", "varying", "head", "tail")

    def __init__(self, guild_id: int, base: dict[str, Any], varying: str | None) -> None:
        self.guild_id = guild_id
        self.base = base
        self.varying = varying
        if varying is None:
            self.head, self.tail = _dumps(base), ""
            return
        rest = _dumps({k: v for k, v in base.items() if k != varying})
        self.head = "{" + _dumps(varying) + ":"
        self.tail = "," + rest[1:] if len(rest) > 2 else "}"


class LoadGenerator:
    """At most one running event stream per simulator; a new :meth:`start` cancels the old one."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.plan: LoadPlan | None = None
        self.task: asyncio.Task[None] | None = None
        self.sent = 0
        self.delivered = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error: str | None = None
        #: Events sent per dispatch name in the current run.
        self.by_event: dict[str, int] = {}

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def start(self, plan: LoadPlan, guilds: list[Guild]) -> None:
        """Cancel any running stream, then start ``plan`` over ``guilds`` (not empty)."""
        await self.stop()
        if not guilds:
            raise ValueError("no guilds to send events to")
        templates = [self._template(plan, g) for g in guilds[:_MAX_TEMPLATES]] if plan.kind == "message_create" else []
        traffic = None if plan.kind == "message_create" else GuildTraffic(self.state.world, guilds, plan.seed)
        self.plan = plan
        self.by_event = {}
        self.sent = self.delivered = 0
        self.error = None
        self.started_at = time.monotonic()
        self.finished_at = None
        self.task = asyncio.get_running_loop().create_task(self._run(plan, templates, traffic), name="sim-load")

    async def stop(self) -> None:
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.task = None
        if self.started_at is not None and self.finished_at is None:
            self.finished_at = time.monotonic()

    def status(self) -> dict[str, Any]:
        plan = self.plan
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        elapsed = end - self.started_at if self.started_at is not None else 0.0
        return {
            "running": self.running, "kind": plan.kind if plan else None, "rate": plan.rate if plan else None,
            "seconds": plan.seconds if plan else None, "shard_id": plan.shard_id if plan else None,
            "events": plan.events if plan else None, "sent": self.sent, "delivered": self.delivered,
            "undelivered": self.sent - self.delivered, "elapsed_s": round(elapsed, 3),
            "achieved_rate": round(self.sent / elapsed, 1) if elapsed > 0 else 0.0, "error": self.error,
            "by_event": dict(self.by_event),
        }

    # -- payloads --------------------------------------------------------------------------------

    def _template(self, plan: LoadPlan, guild: Guild) -> _Template:
        world = self.state.world
        channel = guild.channels[0]
        author_id = guild.member_id(guild.index % guild.humans)
        member = world.member(guild.id, author_id) or world.member(guild.id, guild.owner_id)
        assert member is not None
        if plan.kind == "message_create":
            partial = {k: v for k, v in member.items() if k != "user"}
            base = {"id": "0", "channel_id": str(channel.id), "guild_id": str(guild.id), "author": member["user"],
                    "member": partial, "content": plan.content, "timestamp": now_iso(), "edited_timestamp": None,
                    "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
                    "attachments": [], "embeds": [], "pinned": False, "type": 0, "flags": 0, "components": []}
            return _Template(guild.id, base, "id")
        raise ValueError(f"no template for {plan.kind}")

    def _emitter(self, plan: LoadPlan, templates: list[_Template],
                 traffic: GuildTraffic | None) -> Callable[[int], bool]:
        """A function ``(n) -> delivered`` sending the ``n``-th event of the run."""
        hub: Any = self.state.gateway
        fast = getattr(hub, "dispatch_guild_json", None)
        by_event = self.by_event
        if traffic is not None:
            kind = plan.kind

            def emit_traffic(n: int) -> bool:
                guild_id, name, d_json = traffic.next(kind)
                by_event[name] = by_event.get(name, 0) + 1
                if callable(fast):
                    return bool(fast(guild_id, name, d_json))
                return bool(hub.dispatch_guild(guild_id, name, json.loads(d_json)))
            return emit_traffic
        event = "MESSAGE_CREATE"
        by_event[event] = 0
        ids = self.state.ids
        count = len(templates)

        every = plan.command_every if plan.command else 0
        command_json = self._command_json(plan, templates) if every else None

        if plan.vary_content or (plan.spam and plan.spam_every):
            return self._mixed_emitter(plan, templates, command_json, dispatch_json=fast)

        if callable(fast):
            def emit_fast(n: int) -> bool:
                by_event[event] += 1
                if every and n % every == 0:
                    assert command_json is not None
                    guild_id, d_json = command_json(n // every, str(ids.next()))
                    return bool(fast(guild_id, event, d_json))
                t = templates[n % count]
                return bool(fast(t.guild_id, event, t.head + _dumps(str(ids.next())) + t.tail))
            return emit_fast

        dispatch = hub.dispatch_guild

        def emit(n: int) -> bool:
            by_event[event] += 1
            if every and n % every == 0:
                assert command_json is not None
                guild_id, d_json = command_json(n // every, str(ids.next()))
                return bool(dispatch(guild_id, event, json.loads(d_json)))
            t = templates[n % count]
            data = dict(t.base)
            data["id"] = str(ids.next())
            return bool(dispatch(t.guild_id, event, data))
        return emit

    def _mixed_emitter(self, plan: LoadPlan, templates: list[_Template],
                       command_json: Callable[[int, str], tuple[int, str]] | None,
                       dispatch_json: Any) -> Callable[[int], bool]:
        """Like the plain emitter, with a varying text and a share of ``spam`` (see :class:`LoadPlan`)."""
        hub: Any = self.state.gateway
        by_event = self.by_event
        event = "MESSAGE_CREATE"
        ids = self.state.ids
        slot = _dumps(_CONTENT_SLOT)
        parts = []
        for t in templates:
            base = dict(t.base, content=_CONTENT_SLOT)
            head, _, tail = _dumps(base).partition(slot)
            id_head, _, id_tail = head.partition('"id":"0"')
            parts.append((t.guild_id, id_head + '"id":', id_tail, tail))
        count = len(parts)
        every = plan.command_every if command_json is not None else 0
        spam_every = plan.spam_every if plan.spam else 0
        spam_at = spam_every // 2
        spam_json = _dumps(plan.spam or "")
        content_json = _dumps(plan.content)
        prefix = plan.content + " "
        vary = plan.vary_content

        def emit(n: int) -> bool:
            by_event[event] += 1
            if every and n % every == 0:
                assert command_json is not None
                guild_id, d_json = command_json(n // every, str(ids.next()))
            else:
                guild_id, id_head, id_tail, tail = parts[n % count]
                message_id = str(ids.next())
                if spam_every and n % spam_every == spam_at:
                    text = spam_json
                else:
                    text = _dumps(prefix + message_id) if vary else content_json
                d_json = id_head + _dumps(message_id) + id_tail + text + tail
            if callable(dispatch_json):
                return bool(dispatch_json(guild_id, event, d_json))
            return bool(hub.dispatch_guild(guild_id, event, json.loads(d_json)))
        return emit

    def _command_json(self, plan: LoadPlan, templates: list[_Template]) -> Callable[[int, str], tuple[int, str]]:
        """A function ``(k, id) -> (guild_id, d)`` for the ``k``-th command message of the run.

        Commands go round-robin over the guilds, and within a guild to its members in turn, so
        consecutive commands of one user are ``guilds × members`` commands apart.
        """
        world = self.state.world
        guilds = [world.guild(t.guild_id) for t in templates]
        content = _dumps(plan.command)

        def make(k: int, message_id: str) -> tuple[int, str]:
            guild = guilds[k % len(guilds)]
            assert guild is not None
            author = guild.member_id((k // len(guilds)) % guild.humans)
            member = world.member(guild.id, author) or world.member(guild.id, guild.owner_id)
            assert member is not None
            partial = _dumps({k2: v for k2, v in member.items() if k2 != "user"})
            base = templates[k % len(templates)].base
            return guild.id, (f'{{"id":"{message_id}","channel_id":"{base["channel_id"]}","guild_id":"{guild.id}",'
                              f'"author":{_dumps(member["user"])},"member":{partial},"content":{content},'
                              f'"timestamp":"{base["timestamp"]}","edited_timestamp":null,"tts":false,'
                              '"mention_everyone":false,"mentions":[],"mention_roles":[],"attachments":[],'
                              '"embeds":[],"pinned":false,"type":0,"flags":0,"components":[]}')
        return make

    async def _run(self, plan: LoadPlan, templates: list[_Template], traffic: GuildTraffic | None) -> None:
        emit = self._emitter(plan, templates, traffic)
        total = plan.events
        start = time.monotonic()
        deadline = start + plan.seconds if plan.seconds is not None else None
        try:
            while total is None or self.sent < total:
                now = time.monotonic()
                if deadline is not None and now >= deadline and plan.rate == 0:
                    break
                if plan.rate > 0:
                    due = min(int((now - start) * plan.rate) + 1, total if total is not None else 1 << 62)
                    batch = due - self.sent
                else:
                    batch = _BATCH if total is None else min(_BATCH, total - self.sent)
                for _ in range(max(0, batch)):
                    if emit(self.sent):
                        self.delivered += 1
                    self.sent += 1
                await asyncio.sleep(_TICK if plan.rate > 0 else 0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken run must not take the simulator down; it is reported
            _log.exception("load run failed after %d events", self.sent)
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished_at = time.monotonic()
            _log.info("load run %s: %d events sent (%d delivered) in %.2fs", plan.kind, self.sent, self.delivered,
                      self.finished_at - start)
