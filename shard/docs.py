"""``python -m shard.docs``: write ``docs/commands.md`` from the command registry.

Usage: ``python -m shard.docs > docs/commands.md`` (or ``--check`` to exit 1 when the file is
stale). The commands are loaded exactly as a cluster loads them (:data:`shard.cogs.EXTENSIONS`),
so the page lists every command with its arguments, level, throttle and examples, and cannot drift.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import discord
from discord.ext import commands

from innkeeper.errors import ErrorCode
from innkeeper.settings import PROJECT_ROOT

from .automod.rules import describe_levels
from .cogs import EXTENSIONS
from .pipeline.catalog import CommandInfo, describe_commands
from .pipeline.denials import DENIAL_WINDOW_S
from .pipeline.levels import Level
from .pipeline.refusals import REFUSAL_RULE
from .pipeline.spec import DEFAULT_THROTTLE, TOGGLEABLE

__all__ = ("render", "load_commands", "main", "DOC_PATH")

DOC_PATH = PROJECT_ROOT / "docs" / "commands.md"
PREFIX = "!"

_CODES = {
    ErrorCode.COMMAND_BAD_ARGUMENT: "an argument is missing, too long, out of range or malformed; the message "
                                    "says which and shows the usage",
    ErrorCode.COMMAND_FORBIDDEN: "your level is below what the command needs here, you tried to grant more "
                                 "than your own level, or the role is not one you may give a level",
    ErrorCode.COMMAND_THROTTLED: "you are going too fast; the message says how long to wait",
    ErrorCode.COMMAND_DISABLED: "the server turned the command or its feature off",
    ErrorCode.COMMAND_TIMEOUT: "the command took too long and was stopped",
    ErrorCode.COMMAND_FAILED: "the command could not do what you asked (the message says why)",
    ErrorCode.NOT_FOUND: "what you referred to does not exist (a reminder, feedback, alias or command)",
    ErrorCode.COMMAND_SHED: "the bot is at capacity right now and did not run your command; try again in a few "
                            "seconds",
    ErrorCode.CHANNEL_UNWRITABLE: "`/remind` in a channel where the bot cannot post (it needs View Channel and "
                                  "Send Messages there): set the reminder where it can post, or in DMs with it",
    ErrorCode.DB_UNAVAILABLE: "the database is unavailable; commands keep the server's last known settings, "
                              "but what needs the database (or settings the bot never read) waits: retry later",
    ErrorCode.DEPENDENCY_DOWN: "something the command needs is down (the database, Discord's API, …); the message "
                               "names it and says when to try again. Commands that don't need it keep working",
    ErrorCode.REST_COOLING_DOWN: "the bot is cooling down: Discord answered too many of its requests with errors "
                                 "lately, so it holds back until that falls; try again in a few minutes",
    ErrorCode.INTERNAL: "a bug on our side; it was logged with its context",
}


async def load_commands() -> list[CommandInfo]:
    """Load every extension into an offline bot and describe its commands."""
    bot = commands.AutoShardedBot(command_prefix=PREFIX, intents=discord.Intents.none(), help_command=None)
    for name in EXTENSIONS:
        await bot.load_extension(name)
    return describe_commands(bot)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section(info: CommandInfo) -> list[str]:
    spec = info.spec
    level = info.level.label
    if spec.level is Level.OWNER:
        level += " (bot owners from `INNKEEPER_OWNER_IDS` only; cannot be changed)"
    elif spec.floor < spec.level:
        level += f" (a server may lower it to {spec.floor.label})"
    rule = spec.rule
    throttle = f"{rule.rate} per {rule.per_seconds:g} s per {rule.scope}"
    if spec.throttle is None:
        throttle += " (default)"
    lines = [f"### /{info.name}", "", info.description, "",
             f"- **Level:** {level}", f"- **Throttle:** {throttle}"]
    extras = []
    if spec.guild_only:
        extras.append("servers only")
    if spec.ephemeral:
        extras.append("answers only you can see (the prefix form answers by DM)")
    if spec.audit:
        extras.append("written to the audit log (refused attempts too, gathered with their count)")
    if spec.feature in TOGGLEABLE:
        extras.append(f"part of the `{spec.feature}` feature, which a server can turn off")
    if extras:
        lines.append(f"- **Notes:** {'; '.join(extras)}")
    lines.append(f"- **Usage:** `{info.usage()}` · `{info.usage(PREFIX)}`")
    if info.arguments:
        lines += ["", "| argument | type | required | description |", "|---|---|---|---|"]
        for arg in info.arguments:
            required = "yes" if arg.required else f"no (default {arg.default})" if arg.default else "no"
            lines.append(f"| `{arg.name}` | {_cell(arg.kind)} | {required} | {_cell(arg.description)} |")
    lines.append("")
    lines.append("Examples:")
    for example in spec.examples:
        lines.append(f"- `{example}` · `{info.prefix_example(example, PREFIX)}`")
    lines.append("")
    return lines


def render(infos: Sequence[CommandInfo]) -> str:
    """The whole Markdown page."""
    out = [
        "# Commands",
        "",
        "<!-- Generated by `python -m shard.docs > docs/commands.md` from the command registry. Do not edit:",
        "     tests/unit/test_pipeline_docs.py fails when this file is stale. -->",
        "",
        "Every command works as a slash command and with the prefix (`!` unless a server set its own with",
        "`/settings set key:prefix`, or mention the bot). Both forms go through the same pipeline:",
        "arguments are validated, the server's feature toggles and permission levels are checked, uses are",
        "throttled, the command runs under a time limit, failures answer with a short message and a code,",
        "admin actions go to the audit log, and every use is counted for `/stats`.",
        "",
        "## Permission levels",
        "",
        "`everyone` < `mod` < `admin` < `owner`. Your level in a server is the highest of:",
        "",
        "- `owner` if your id is in the bot's `INNKEEPER_OWNER_IDS` (nothing else grants it);",
        "- `admin` if you own the server or have the Administrator permission;",
        "- `mod` if you have Manage Server, Manage Messages, Kick, Ban or Timeout Members;",
        "- the level a server admin gave one of your roles with `/permissions role` (at most `admin`).",
        "",
        "A server can change the level a command needs with `/permissions command`, down to the command's",
        "floor. Nobody can give a role or require a level above their own, or change a command that is",
        "above their own level. Giving a role a level also needs Discord's Manage Roles permission, and",
        "the role must be below your highest role (the server's owner is above every role); @everyone and",
        "managed roles (a bot's or an integration's role, the booster role) never have a level.",
        "",
        "## Answers and refusals",
        "",
        "Slash answers marked *only you can see* are ephemeral. Their prefix form cannot be private in the",
        "channel, so it answers by DM, and the channel only reads that the answer went by DM (or, when",
        "your DMs are closed to the bot, a pointer to the slash form; never the answer itself).",
        "",
        "A refused command (a bad argument, a command that is off or above your level, going too fast)",
        f"tells you why at most {REFUSAL_RULE.rate} times per {REFUSAL_RULE.per_seconds:g} s; past that, refusals "
        "get no answer until",
        "that window frees up. Refused attempts at audited commands are written to the audit log as one",
        f"entry per user and command per {DENIAL_WINDOW_S:g} s, with their count.",
        "",
        "## Error codes",
        "",
        "| code | meaning |",
        "|---|---|",
    ]
    out += [f"| {code.value} | {text} |" for code, text in _CODES.items()]
    default = DEFAULT_THROTTLE
    out += ["", f"Commands without their own throttle allow {default.rate} uses per {default.per_seconds:g} s "
                f"per {default.scope}; bot owners are never throttled.", ""]
    out += _automod()
    by_feature: dict[str, list[CommandInfo]] = {}
    for info in infos:
        by_feature.setdefault(info.spec.feature, []).append(info)
    out += ["## Contents", ""]
    for feature, items in by_feature.items():
        out.append(f"- **{feature}**: " + ", ".join(f"`/{i.name}`" for i in items))
    out.append("")
    for feature, items in by_feature.items():
        out += [f"## {feature}", ""]
        for info in items:
            out += _section(info)
    return "\n".join(out).rstrip("\n") + "\n"


def _automod() -> list[str]:
    return [
        "## Automod",
        "",
        "`/settings set key:automod value:<off|low|medium|high>` makes the bot act on every message in the",
        "server that breaks a rule of the level (off by default). Each level enforces:",
        "",
        *describe_levels(),
        "",
        "A *copy* is a message by the same member in this server with the same text, ignoring case and",
        "spacing; once a copy is caught, every further copy is too until the member stops repeating it",
        "for the window's length. Members at the `mod` level or above (see above: Manage Messages,",
        "Administrator, a role with the `mod` level, the server's owner) and members with Manage Messages",
        "in the channel are never acted on, nor are bots.",
        "",
        "The bot deletes the message when it has Manage Messages in the channel; otherwise it only",
        "reports it. With a log channel set (`/settings set key:log_channel`), it posts one short notice",
        "per burst there (the first message, then \"… and N more\"), pinging nobody. Every action is",
        "written to the audit log (`/audit recent`) as `automod.<rule>`.",
        "",
    ]


def _ordered(infos: list[CommandInfo]) -> list[CommandInfo]:
    from .pipeline.spec import FEATURES

    return sorted(infos, key=lambda i: (FEATURES.index(i.spec.feature), i.name))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shard.docs", description="Generate docs/commands.md.")
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/commands.md is stale")
    parser.add_argument("--output", type=Path, default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    text = render(_ordered(asyncio.run(load_commands())))
    if args.check:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
        if current != text:
            print("docs/commands.md is stale: run `python -m shard.docs > docs/commands.md`", file=sys.stderr)
            return 1
        return 0
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
