"""Role grants against Discord's role hierarchy, as properties over generated servers.

Each example is a server: @everyone plus up to eight roles with random positions (ties included)
and managed flags, an actor with some of those roles, Manage Roles or not, owning the server or
not. The oracle orders roles the way Discord's client does (sort by position, then by id, the lower
id above) instead of reusing the code's own comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import TypeVar

import discord
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from innkeeper.errors import CommandError, ErrorCode
from shard.pipeline.levels import Level, check_role_grant, member_level
from shard.pipeline.role_grants import (
    ActorFacts,
    RoleFacts,
    actor_facts,
    check_role_target,
    counts_for_levels,
    role_facts,
)

T = TypeVar("T")
GUILD_ID = 1000
EVERYONE_ROLE = RoleFacts(GUILD_ID, 0, "@everyone", is_default=True)


@dataclass(frozen=True)
class Server:
    roles: tuple[RoleFacts, ...]  # @everyone first
    actor_roles: frozenset[int]
    is_owner: bool
    manage_roles: bool
    administrator: bool
    moderator: bool
    grants: dict[int, Level]  # role id → level before the attempts (legacy grants included)


_IDS = st.lists(st.integers(2000, 2100), min_size=1, max_size=8, unique=True)
_FLAGS = st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans())


def _each(n: int, strategy: st.SearchStrategy[T]) -> st.SearchStrategy[list[T]]:
    return st.lists(strategy, min_size=n, max_size=n)


@st.composite
def servers(draw: st.DrawFn) -> Server:
    ids = draw(_IDS)
    n = len(ids)
    positions, managed, held = draw(st.tuples(_each(n, st.integers(1, 5)), _each(n, st.booleans()),
                                              _each(n, st.booleans())))
    grants = draw(_each(n + 1, st.integers(0, 2)))  # per role, @everyone first: 0 none, 1 mod, 2 admin
    owner, manage_roles, administrator, moderator = draw(_FLAGS)
    roles = [EVERYONE_ROLE] + [RoleFacts(rid, pos, f"role {rid}", managed=m)
                               for rid, pos, m in zip(ids, positions, managed, strict=True)]
    return Server(tuple(roles), frozenset(rid for rid, h in zip(ids, held, strict=True) if h), owner, manage_roles,
                  administrator, moderator,
                  {r.id: Level(g) for r, g in zip(roles, grants, strict=True) if g})


def hierarchy(server: Server) -> list[int]:
    """Role ids from the lowest to the highest, as Discord's client lists them (reversed)."""
    return [r.id for r in sorted(server.roles, key=lambda r: (r.position, -r.id))]


def top_role(server: Server) -> RoleFacts:
    order = hierarchy(server)
    held = [rid for rid in order if rid in server.actor_roles] or [GUILD_ID]
    return next(r for r in server.roles if r.id == held[-1])


def actor(server: Server) -> ActorFacts:
    return ActorFacts(is_guild_owner=server.is_owner, manage_roles=server.manage_roles, top_role=top_role(server))


def level_of(server: Server, role_ids: frozenset[int], grants: dict[int, Level], *, owner: bool = False,
             administrator: bool = False, moderator: bool = False) -> Level:
    """A member's level as the pipeline computes it (grants on @everyone and managed roles ignored)."""
    by_id = {r.id: r for r in server.roles}
    counted = [rid for rid in (GUILD_ID, *role_ids)
               if counts_for_levels(SimpleNamespace(id=rid, managed=by_id[rid].managed), GUILD_ID)]
    return member_level(0, owner_ids=(), is_guild_owner=owner, administrator=administrator, moderator=moderator,
                        role_ids=counted, role_levels=grants)


def refused(check: object) -> bool:
    try:
        check()  # type: ignore[operator]
    except CommandError as exc:
        assert exc.code is ErrorCode.COMMAND_FORBIDDEN and exc.user_message
        return True
    return False


@settings(max_examples=400, deadline=None)
@given(servers(), st.data(), st.sampled_from(list(Level)[:3]))
def test_a_grant_is_allowed_exactly_when_the_hierarchy_allows_it(server: Server, data: st.DataObject,
                                                                  new: Level) -> None:
    role = data.draw(st.sampled_from(server.roles))
    order = hierarchy(server)
    below_top = order.index(role.id) < order.index(top_role(server).id)
    expected = ((server.is_owner or server.manage_roles)
                and (new is Level.EVERYONE or not (role.is_default or role.managed))
                and (server.is_owner or below_top))
    assert refused(lambda: check_role_target(actor(server), role, new)) is not expected


@settings(max_examples=300, deadline=None)
@given(servers(), st.data())
def test_nobody_reaches_everyone_or_a_managed_role(server: Server, data: st.DataObject) -> None:
    role = data.draw(st.sampled_from([r for r in server.roles if r.is_default or r.managed]))
    for new in (Level.MOD, Level.ADMIN):
        owner = ActorFacts(is_guild_owner=True, manage_roles=True, top_role=top_role(server))
        assert refused(lambda: check_role_target(owner, role, new))  # noqa: B023 - called at once
        assert refused(lambda: check_role_target(actor(server), role, new))  # noqa: B023


@settings(max_examples=300, deadline=None)
@given(servers(), st.data())
def test_no_one_below_the_owner_touches_their_own_top_role_or_above(server: Server, data: st.DataObject) -> None:
    assume(not server.is_owner)
    order = hierarchy(server)
    top = top_role(server)
    at_or_above = [r for r in server.roles if order.index(r.id) >= order.index(top.id)]
    role = data.draw(st.sampled_from(at_or_above))
    for new in Level.EVERYONE, Level.MOD, Level.ADMIN:
        assert refused(lambda: check_role_target(actor(server), role, new))  # noqa: B023


@settings(max_examples=300, deadline=None)
@given(servers(), st.lists(st.tuples(st.integers(0, 8), st.sampled_from(list(Level))), max_size=8))
def test_no_sequence_of_grants_escalates_anyone(server: Server, attempts: list[tuple[int, Level]]) -> None:
    """Apply every attempt the rules allow (level rules and hierarchy), then compare levels."""
    actor_level = level_of(server, server.actor_roles, server.grants, owner=server.is_owner,
                           administrator=server.administrator, moderator=server.moderator)
    assume(actor_level >= Level.MOD)  # /permissions role needs mod to run at all
    grants = dict(server.grants)
    for index, new in attempts:
        role = server.roles[index % len(server.roles)]
        try:
            check_role_grant(actor_level, grants.get(role.id), new)
            check_role_target(actor(server), role, new)
        except CommandError:
            continue
        if new is Level.EVERYONE:
            grants.pop(role.id, None)
        else:
            grants[role.id] = new
    after = level_of(server, server.actor_roles, grants, owner=server.is_owner,
                     administrator=server.administrator, moderator=server.moderator)
    assert after <= actor_level  # the actor never raises themself
    order = hierarchy(server)
    top = top_role(server)
    for role in server.roles:
        # every member is at most the actor's level above where they were...
        before_one = level_of(server, frozenset({role.id} - {GUILD_ID}), server.grants)
        after_one = level_of(server, frozenset({role.id} - {GUILD_ID}), grants)
        assert after_one <= max(before_one, actor_level)
        # ...roles at or above the actor's top role keep their level, unless the server's owner acts...
        if not server.is_owner and order.index(role.id) >= order.index(top.id):
            assert grants.get(role.id) == server.grants.get(role.id)
        # ...and @everyone and managed roles never make anyone anything
        if role.is_default or role.managed:
            assert after_one == Level.EVERYONE


def test_discord_objects_are_read_as_discord_orders_them() -> None:
    guild = SimpleNamespace(id=GUILD_ID, owner_id=1)
    state = SimpleNamespace()

    def make(rid: int, position: int, **extra: object) -> discord.Role:
        data = {"id": str(rid), "name": f"r{rid}", "position": position, "permissions": "0", "managed": False,
                **extra}
        return discord.Role(guild=guild, state=state, data=data)  # type: ignore[arg-type]

    bot_role = role_facts(make(2001, 3, managed=True, tags={"bot_id": "9"}))
    booster = role_facts(make(2002, 2, tags={"premium_subscriber": None}))
    everyone = role_facts(make(GUILD_ID, 0))
    assert bot_role.managed and booster.managed and everyone.is_default and not everyone.managed
    # same position: the lower id is higher
    low_id, high_id = role_facts(make(2010, 4)), role_facts(make(2011, 4))
    member_top = ActorFacts(is_guild_owner=False, manage_roles=True, top_role=low_id)
    check_role_target(member_top, high_id, Level.MOD)
    with pytest.raises(CommandError, match="above your highest role"):
        check_role_target(replace(member_top, top_role=high_id), low_id, Level.MOD)
    with pytest.raises(CommandError, match="your highest role"):
        check_role_target(member_top, low_id, Level.MOD)


def test_the_actor_facts_of_a_member() -> None:
    perms = discord.Permissions(manage_roles=True)
    top = SimpleNamespace(id=5, position=2, name="Mods", managed=False, is_default=lambda: False,
                          is_bot_managed=lambda: False, is_integration=lambda: False,
                          is_premium_subscriber=lambda: False)
    member = SimpleNamespace(id=7, guild=SimpleNamespace(owner_id=7), guild_permissions=perms, top_role=top)
    facts = actor_facts(member)  # type: ignore[arg-type]
    assert facts == ActorFacts(True, True, RoleFacts(5, 2, "Mods"))
