"""Every documented example of every command works, through both paths, for the user it is documented for.

Each example in ``docs/commands.md`` runs as a slash command and as a prefix command, as a user of
the level it needs: a plain member for ``everyone``, a moderator for ``mod``, the server's owner for
``admin``, a bot owner for ``owner``. Each answer must be a success: no error code at all. The test
sets up what an example refers to (feedback #12 exists and is open, reminder #42 is pending for the
user who cancels it, alias ``r`` exists before it is removed), and puts back what an example changes
for the ones after it (a feature turned off, a command's level). Examples above ``everyone`` are also
tried by a plain member, who must be refused with E5002.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from discord import AppCommandOptionType

from db.crypto import KeyRing
from db.feedback import submit_feedback
from db.pool import Database
from db.reminders import create_reminder
from shard.docs import load_commands
from shard.pipeline.catalog import CommandInfo
from shard.pipeline.levels import Level
from tests.e2e.commands import (
    CommandBotFactory,
    World,
    answer_text,
    load_world,
    prefix,
    slash,
)
from tests.procs import SimulatorProc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

_CODE = re.compile(r"\((E\d{4})\)")
KEYS = KeyRing.parse(["dev"], allow_dev=True)  # the bot under test talks to the simulator


def slash_options(info: CommandInfo, values: dict[str, str], world: World) -> tuple[str, list[dict[str, Any]]]:
    app = info.command.app_command  # type: ignore[attr-defined]
    types = {p.name: p.type for p in app.parameters}
    opts: list[dict[str, Any]] = []
    for name, value in values.items():
        kind = types[name]
        if kind is AppCommandOptionType.integer:
            opts.append({"name": name, "type": 4, "value": int(value)})
        elif kind is AppCommandOptionType.role:
            opts.append({"name": name, "type": 8, "value": world.member_role})
        else:
            opts.append({"name": name, "type": 3, "value": value})
    parts = info.name.split()
    for sub in reversed(parts[1:]):
        opts = [{"name": sub, "type": 1, "options": opts}]
    return parts[0], opts


def codes(text: str) -> set[str]:
    return set(_CODE.findall(text))


@dataclass
class Run:
    """One run of one example: who runs it, by which path, in which world."""

    sim: SimulatorProc
    world: World
    db: Database
    dsn: str
    user: str
    bot_owner: str
    mention: str

    async def as_owner(self, line: str) -> None:
        """A bot owner (never throttled) runs a slash command line that must succeed: setup or cleanup."""
        await self.command(self.bot_owner, line)

    async def command(self, user: str, line: str) -> None:
        infos = {i.name: i for i in await _infos()}
        name = max((n for n in infos if line[1:].startswith(n)), key=len)
        info = infos[name]
        root, opts = slash_options(info, info.example_values(line), self.world)
        text = await answer_text(self.sim, await slash(self.sim, self.world, user, root, opts))
        assert not codes(text), f"setup {line} as {user}: {text}"


Step = Callable[[Run], Awaitable[None]]


async def _sql(run: Run, query: str, *args: object) -> None:
    """Test setup straight in the database (not through the bot's query funnel)."""
    conn = await asyncpg.connect(run.dsn)
    try:
        await conn.execute(query, *args)
    finally:
        await conn.close()


async def _reopen(run: Run, *ids: int) -> None:
    await _sql(run, "UPDATE feedback SET status = 'open', acknowledged_by = NULL, acknowledged_at = NULL, "
               "closed_by = NULL, closed_at = NULL, resolution = NULL WHERE id = ANY($1::bigint[])", list(ids))


async def _feedback_12_13_open(run: Run) -> None:
    await _reopen(run, 12, 13)


async def _reminder_42_pending(run: Run) -> None:
    """Reminder #42 exists, pending, and belongs to the user who cancels it."""
    await _sql(run, "SELECT setval(pg_get_serial_sequence('reminders', 'id'), 41)")
    made = await create_reminder(run.db, KEYS, user_id=int(run.user), body="stretch", guild_id=int(run.world.guild_id),
                                 channel_id=int(run.world.channel_id),
                                 due_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    assert made.id == 42


async def _alias_r(run: Run) -> None:
    await run.command(run.user, "/alias add name:r command:remind 10m stretch")


async def _no_server_alias_p(run: Run) -> None:
    await run.as_owner("/alias remove name:p scope:server")


async def _reminders_on(run: Run) -> None:
    await run.as_owner("/settings set key:feature.reminders value:on")


async def _prefix_back(run: Run) -> None:
    await run.as_owner("/settings set key:prefix value:!")


async def _remind_reset(run: Run) -> None:
    await run.as_owner("/permissions command command:remind setting:reset")


async def _stats_reset(run: Run) -> None:
    await run.as_owner("/permissions command command:stats daily setting:reset")


async def _helpers_everyone(run: Run) -> None:
    # role levels need Discord's Manage Roles, which the bot owner (a plain member here) lacks
    await run.command(run.world.owner, "/permissions role role:@Helpers level:everyone")


@dataclass(frozen=True)
class Needs:
    """What one example needs beyond its command's defaults."""

    level: Level | None = None  # the level it is documented for, when above the command's
    before: Step | None = None  # makes what it refers to exist
    after: Step | None = None  # undoes what it changes, so the examples after it see the defaults


NEEDS: dict[str, Needs] = {
    "/alias add name:p scope:server command:ping": Needs(level=Level.MOD, after=_no_server_alias_p),
    "/alias remove name:r": Needs(before=_alias_r),
    "/feedback ack id:12": Needs(before=_feedback_12_13_open),
    "/feedback resolve id:12 outcome:resolved note:Fixed in today's update": Needs(before=_feedback_12_13_open),
    "/feedback resolve id:13 outcome:rejected note:Works as intended": Needs(before=_feedback_12_13_open),
    "/reminders cancel id:42": Needs(before=_reminder_42_pending),
    "/settings set key:prefix value:?": Needs(after=_prefix_back),
    "/settings set key:feature.reminders value:off": Needs(after=_reminders_on),
    "/permissions command command:remind setting:mod": Needs(after=_remind_reset),
    "/permissions command command:stats daily setting:off": Needs(after=_stats_reset),
    "/permissions role role:@Helpers level:mod": Needs(after=_helpers_everyone),
}
#: Slash-only examples: a form opens. Their prefix form has nothing to open and says what to type.
SLASH_ONLY = {"/feedback submit": "Write your feedback after the command"}

_INFOS: list[CommandInfo] = []


async def _infos() -> list[CommandInfo]:
    if not _INFOS:
        _INFOS.extend(await load_commands())
    return _INFOS


async def _step(step: Step, run: Run, problems: list[str]) -> None:
    try:
        await step(run)
    except AssertionError as exc:
        problems.append(str(exc).splitlines()[0])


@pytest.fixture
async def db(migrated_db: str) -> AsyncIterator[Database]:
    async with Database(migrated_db) as database:
        yield database


async def test_every_example_both_paths(sim: SimulatorProc, migrated_db: str, db: Database,
                                        command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    assert world.moderator is not None and len(world.members) >= 8, world
    bot_owner, plain = world.members[-1], world.members[:-1]
    bot = await command_bot(owners=(bot_owner,))
    assert bot.user is not None
    mention = f"<@{bot.user.id}> "
    # feedback #1-#13 in this server: the examples acknowledge and resolve #12 and #13
    for i in range(13):
        await submit_feedback(db, KEYS, author_id=int(plain[i % len(plain)]), body=f"idea {i + 1}",
                              guild_id=int(world.guild_id), channel_id=int(world.channel_id))
    members = itertools.cycle(plain)  # a fresh member for each run: per-user throttles stay out of the way
    by_level = {Level.MOD: world.moderator, Level.ADMIN: world.owner, Level.OWNER: bot_owner}
    ran: list[str] = []
    problems: list[str] = []  # every example that did not work, so one does not hide the others
    for info in await _infos():
        for example in info.spec.examples:
            needs = NEEDS.get(example, Needs())
            level = max(info.spec.level, needs.level or Level.EVERYONE)
            name, opts = slash_options(info, info.example_values(example), world)
            line = info.prefix_example(example, mention).replace("@Helpers", f"<@&{world.member_role}>")
            if level > Level.EVERYONE:  # a plain member is refused, and nothing breaks
                refused = await answer_text(sim, await slash(sim, world, next(members), name, opts))
                if codes(refused) != {"E5002"}:
                    problems.append(f"{example} (a plain member): {refused}")
            for path in ("slash", "prefix"):
                user = by_level.get(level) or next(members)
                run = Run(sim, world, db, migrated_db, user, bot_owner, mention)
                if needs.before is not None:
                    await _step(needs.before, run, problems)
                if path == "slash":
                    text = await answer_text(sim, await slash(sim, world, user, name, opts))
                else:
                    text = str((await prefix(sim, world, user, line))["content"])
                where = f"{example} ({path} {line if path == 'prefix' else ''}, as {level.label} {user})"
                if path == "prefix" and example in SLASH_ONLY:
                    if codes(text) != {"E5001"} or SLASH_ONLY[example] not in text:
                        problems.append(f"{where}: {text}")
                elif not text or codes(text):
                    problems.append(f"{where}: {text}")
                if needs.after is not None:
                    await _step(needs.after, run, problems)
            ran.append(example)
    assert not problems, "\n".join(problems)
    assert len(ran) >= 40
    assert set(NEEDS) | set(SLASH_ONLY) <= set(ran), "a documented example this test prepares for is gone"
