"""The cluster caches no members and chunks no guild, and no command needs a member it was not sent.

The choice and its reasons: docs/architecture.md, "Intents and caches". A command that took a
``discord.Member`` or ``discord.User`` argument would resolve it through discord.py's member cache,
then a gateway member query, which needs the members intent the cluster does not ask for: such a
command must fetch the member through REST instead, and this test must then name it.
"""

from __future__ import annotations

import typing
from typing import Any

import discord
from discord.ext import commands

from innkeeper.settings import Settings
from shard.assembly import build_cluster
from shard.bot import build_intents
from shard.cogs import EXTENSIONS
from shard.context import ClusterContext

_MEMBER_TYPES = (discord.Member, discord.User, discord.abc.User)


def _names_a_member(annotation: Any) -> bool:
    if annotation in _MEMBER_TYPES:
        return True
    return any(_names_a_member(arg) for arg in typing.get_args(annotation))


def test_the_intents_leave_members_and_presences_out() -> None:
    intents = build_intents()
    assert not intents.members and not intents.presences and not intents.typing
    assert intents.guilds and intents.guild_messages and intents.message_content


async def test_the_cluster_caches_no_member_but_itself_and_chunks_nothing() -> None:
    settings = Settings(api_url="http://127.0.0.1:1", encryption_keys=("dev",), ipc_keys=("dev",), discord_token="t")
    ctx = ClusterContext.create(settings, cluster_id=0, shard_ids=[0], shard_count=1, max_concurrency=1)
    try:
        bot = build_cluster(ctx)
        state = bot._connection
        assert state.member_cache_flags.value == 0  # MemberCacheFlags.none(): discord.py still keeps guild.me
        assert state._chunk_guilds is False
        assert state.max_messages == 1000
    finally:
        await ctx.aclose()


async def test_no_command_takes_a_member_or_user_argument() -> None:
    bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.none(), help_command=None)
    for name in EXTENSIONS:
        await bot.load_extension(name)
    takes_members = [f"{cmd.qualified_name} {param.name}" for cmd in bot.walk_commands()
                     for param in cmd.clean_params.values()
                     if _names_a_member(param.annotation) or _names_a_member(param.converter)]
    assert takes_members == []
