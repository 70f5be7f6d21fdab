"""The simulator's control API under ``/_sim/`` (no auth): for tests, the demo and benchmarks.

Routes (bodies and answers are JSON; ids travel as strings; bad input is a 400 ``{"error": …}``):

- ``GET /_sim/world?limit=N&offset=M``: guilds with their shard, channels and human members;
- ``POST /_sim/interactions`` / ``GET /_sim/interactions/{id}``: see ``control_interactions``;
- ``POST /_sim/messages``: a user posts a message (MESSAGE_CREATE to the owning shard);
- ``POST /_sim/load`` / ``GET /_sim/load`` / ``DELETE /_sim/load``: benchmark event streams;
- ``POST /_sim/faults`` / ``GET /_sim/faults`` / ``DELETE /_sim/faults``: gateway and REST faults
  (``GET`` also lists the requests a latency fault holds now, under ``held``);
- ``GET /_sim/stats`` (the counters, and every session's books: dispatched, buffered, replayed, lost),
  ``POST /_sim/reset-stats``;
- ``GET /_sim/dms/{user_id}``: the DM channel the bot opened with a user and its messages;
- ``POST /_sim/channels/{id}/overwrites``, ``DELETE …/overwrites/{target}``, ``POST
  /_sim/users/{id}/dms``: channel permissions and closed DMs, see ``control_permissions``;
- ``POST /_sim/token/reset``: a new bot token and a refilled IDENTIFY budget, see ``control_token``;
- ``POST /_sim/gateway``: the shard count ``GET /gateway/bot`` recommends from now on (a bot that grew).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import control_permissions, control_token
from .control_input import (
    ControlError,
    boolean,
    choice,
    control_handler,
    integer,
    json_body,
    number,
    query_int,
    resolve_place,
    snowflake,
    string,
)
from .control_interactions import get_interaction, inject_interaction
from .load import LOAD_KINDS, LoadGenerator, LoadPlan
from .rest_channels import deliver
from .rest_common import INVALID_REQUESTS_KEY, LIMITER_KEY, json_response
from .rest_objects import build_message, dm_channel, dm_channel_id
from .state import STATE_KEY, ShardStats, Stats

if TYPE_CHECKING:
    from .state import SimState

__all__ = ("setup", "LOAD_KEY", "reset_stats")

LOAD_KEY = web.AppKey("innkeeper_sim_load", LoadGenerator)
_GATEWAY_FAULTS = ("disconnect", "reconnect", "invalid_session", "silent", "outage")
_REST_FAULTS = ("http_error", "latency")
#: What a latency fault does with a request whose client hung up while it was held.
_IF_CLIENT_GONE = ("complete", "drop")
_FAULT_STATUSES = (400, 401, 403, 404, 429, 500, 502, 503, 504)
#: ShardStats fields that are gauges, not counters (kept by a reset).
_GAUGES = {"guilds"}


#: Members ``GET /_sim/world`` lists per guild (the owner first); ``member_count`` says how many there are.
_LISTED_MEMBERS = 100


def _shard_count(state: SimState) -> int:
    return state.gateway.shard_count() or state.config.shards


async def world_view(request: web.Request, state: SimState) -> web.Response:
    world = state.world
    limit = query_int(request, "limit", 100, lo=1)
    offset = query_int(request, "offset", 0, lo=0)
    shards = _shard_count(state)
    guilds = [{"id": str(g.id), "name": g.name, "shard_id": (g.id >> 22) % shards, "member_count": g.member_count,
               "channels": [str(c.id) for c in g.channels],
               "members": [str(g.member_id(k)) for k in itertools.islice(g.positions(), _LISTED_MEMBERS)]}
              for g in world.guilds[offset:offset + limit]]
    return json_response({"guilds": guilds, "total": len(world.guilds), "shard_count": shards,
                          "bot_id": str(world.application_id), "application_id": str(world.application_id)})


# -- messages ------------------------------------------------------------------------------------

async def post_message(request: web.Request, state: SimState) -> web.Response:
    """A user says something: stored, and MESSAGE_CREATE to the shard owning the guild (shard 0 for DMs)."""
    body = await json_body(request)
    world = state.world
    author_id = snowflake(body, "author_id")
    content = string(body, "content", max_len=4000)
    assert author_id is not None
    user = world.user(author_id)
    if user is None or author_id == world.application_id:
        raise ControlError(400, f"unknown user {author_id} (the author must be a human user of the world)")
    place = resolve_place(state, body, user, author_id)
    guild, channel_id = place.guild, place.channel_id
    if place.channel is not None and place.channel.type not in (0, 2):
        raise ControlError(400, f"channel {channel_id} is not a text channel")
    member_partial = None if place.member is None else {k: v for k, v in place.member.items() if k != "user"}
    fields: dict[str, Any] = {"content": content}
    reply_to = snowflake(body, "reply_to", required=False)
    if reply_to is not None:
        fields["message_reference"] = {"message_id": reply_to, "channel_id": channel_id}
    msg = build_message(state, message_id=state.ids.next(), channel_id=channel_id, guild=guild, author=user,
                        body=fields)
    state.messages.add(channel_id, msg)
    data = {**msg, "member": member_partial} if member_partial is not None else msg
    delivered = deliver(state, guild, "MESSAGE_CREATE", data)
    shard_id = (guild.id >> 22) % _shard_count(state) if guild is not None else 0
    return json_response({"id": msg["id"], "channel_id": str(channel_id), "delivered": delivered,
                          "shard_id": shard_id})


async def dm_view(request: web.Request, state: SimState) -> web.Response:
    raw = request.match_info["user_id"]
    if not raw.isdigit():
        raise ControlError(400, f"user id must be digits, got {raw[:30]!r}")
    user = state.world.user(int(raw))
    if user is None:
        raise ControlError(404, f"unknown user {raw}")
    channel = state.dm_channels.get(dm_channel_id(int(raw)))
    if channel is None:
        if request.query.get("create") not in ("1", "true"):
            raise ControlError(404, f"the bot has no DM channel with user {raw} (add ?create=1 to open one)")
        channel = dm_channel(state, user)
    limit = query_int(request, "limit", 50, lo=1, hi=1000)
    return json_response({"channel": channel, "messages": state.messages.list(int(channel["id"]), limit=limit)})


# -- load ----------------------------------------------------------------------------------------

async def start_load(request: web.Request, state: SimState) -> web.Response:
    body = await json_body(request)
    kind = choice(body, "kind", LOAD_KINDS, "message_create")
    rate = number(body, "rate", lo=0, hi=1_000_000)
    seconds = number(body, "seconds", 0, lo=0, hi=3600) or None
    count = integer(body, "count", 0, lo=0, hi=100_000_000) or None
    content = string(body, "content", required=False, max_len=2000) or "load test message"
    target = choice(body, "target", ("all", "shard"), "all")
    seed = integer(body, "seed", 0, lo=0, hi=2**63)
    command = string(body, "command", required=False, max_len=2000) or None
    command_every = integer(body, "command_every", 0, lo=0, hi=1_000_000)
    if (command is None) != (command_every == 0) or (command is not None and kind != "message_create"):
        raise ControlError(400, "command and command_every go together, with kind message_create")
    vary_content = boolean(body, "vary_content", False)
    spam = string(body, "spam", required=False, max_len=2000) or None
    spam_every = integer(body, "spam_every", 0, lo=0, hi=1_000_000)
    if (spam is None) != (spam_every == 0) or ((spam is not None or vary_content) and kind != "message_create"):
        raise ControlError(400, "spam and spam_every go together, and they and vary_content need kind message_create")
    if rate > 0 and seconds is None and count is None:
        raise ControlError(400, "give seconds (or count) with a rate")
    if rate == 0 and seconds is None and count is None:
        raise ControlError(400, "rate 0 (as fast as possible) needs seconds or count")
    world = state.world
    shard_id = None
    if target == "shard":
        shards = _shard_count(state)
        shard_id = integer(body, "shard_id", lo=0, hi=shards - 1)
        guilds = world.guilds_for_shard(shard_id, shards)
        if not guilds:
            raise ControlError(400, f"shard {shard_id} of {shards} has no guilds")
    else:
        guilds = world.guilds
    plan = LoadPlan(kind, rate, seconds, count, shard_id, content, seed, command, command_every, vary_content, spam,
                    spam_every)
    await request.app[LOAD_KEY].start(plan, guilds)
    return json_response({"started": True, "events": plan.events, "kind": kind, "guilds": len(guilds),
                          "shard_id": shard_id}, 202)


async def load_status(request: web.Request, state: SimState) -> web.Response:
    return json_response(request.app[LOAD_KEY].status())


async def stop_load(request: web.Request, state: SimState) -> web.Response:
    gen = request.app[LOAD_KEY]
    await gen.stop()
    return json_response(gen.status())


# -- faults --------------------------------------------------------------------------------------

def _raw_dispatch(body: dict[str, Any], state: SimState) -> int:
    """The ``dispatch`` fault: ``data`` sent as is as the ``d`` of an ``event`` dispatch (malformed input for
    the bot), to the sessions of ``guild_id``'s shard, of ``shard_id``, or of every live shard."""
    event = string(body, "event", max_len=100)
    assert event is not None
    if not event.replace("_", "").isalnum() or not event.isupper():
        raise ControlError(400, f"event must be an event name such as MESSAGE_CREATE, got {event[:40]!r}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise ControlError(400, "data must be a JSON object: the dispatch's d, sent as is")
    guild_id = snowflake(body, "guild_id", required=False)
    hub = state.gateway
    if guild_id is not None:
        return 1 if hub.dispatch_guild(guild_id, event, data) else 0
    if body.get("shard_id") is not None:
        shards = [integer(body, "shard_id", lo=0)]
    else:
        shards = sorted(shard for shard, live in hub.live_shards().items() if live)
    return sum(hub.dispatch_shard(shard, event, data) for shard in shards)


async def post_gateway(request: web.Request, state: SimState) -> web.Response:
    """``{"shards": N}``: ``GET /gateway/bot`` recommends N shards from now on (``null``: ``--shards`` again)."""
    body = await json_body(request)
    state.recommended_shards = None if body.get("shards") is None else integer(body, "shards", lo=1, hi=65_536)
    return json_response({"shards": state.recommended_shards or state.config.shards})


async def post_fault(request: web.Request, state: SimState) -> web.Response:
    body = await json_body(request)
    kind = choice(body, "kind", _GATEWAY_FAULTS + _REST_FAULTS + ("dispatch",))
    if kind == "dispatch":
        applied = _raw_dispatch(body, state)
        state.stats.faults_applied += 1
        return json_response({"applied": applied, "kind": kind, "event": body["event"]})
    if kind in _GATEWAY_FAULTS:
        shard_id = integer(body, "shard_id", lo=0) if body.get("shard_id") is not None else None
        resumable = boolean(body, "resumable", True)
        code = integer(body, "code", 4000, lo=1000, hi=4999)
        seconds = number(body, "seconds", 0, lo=0, hi=3600) if kind == "outage" else 0.0
        try:
            applied = state.gateway.apply_fault(kind, shard_id, resumable=resumable, code=code, seconds=seconds)
        except ValueError as exc:
            raise ControlError(400, str(exc)) from None
        return json_response({"applied": applied, "kind": kind, "shard_id": shard_id})
    route = string(body, "route", required=False, max_len=200)
    count = integer(body, "count", 1, lo=1, hi=1_000_000)
    fault: dict[str, Any] = {"kind": kind, "route": route, "count": count}
    if kind == "latency":
        fault["ms"] = number(body, "ms", lo=0, hi=120_000)
        fault["if_client_gone"] = choice(body, "if_client_gone", _IF_CLIENT_GONE, "complete")
    else:
        if "if_client_gone" in body:
            raise ControlError(400, "if_client_gone only applies to latency faults")
        status = integer(body, "status", 500)
        if status not in _FAULT_STATUSES:
            raise ControlError(400, f"status must be one of {', '.join(map(str, _FAULT_STATUSES))}")
        fault["status"] = status
        if status == 429:
            fault["scope"] = choice(body, "scope", ("user", "global", "shared"), "user")
            fault["retry_after"] = number(body, "retry_after", 0.5, lo=0.001, hi=3600)
        elif "scope" in body or "retry_after" in body:
            raise ControlError(400, "scope and retry_after only apply to status 429")
    state.rest_faults.append(fault)
    return json_response({"applied": count, "kind": kind, "fault": fault})


async def list_faults(request: web.Request, state: SimState) -> web.Response:
    return json_response({"rest_faults": state.rest_faults, "held": state.held_requests})


async def clear_faults(request: web.Request, state: SimState) -> web.Response:
    cleared = len(state.rest_faults)
    state.rest_faults.clear()
    return json_response({"cleared": cleared})


# -- stats ---------------------------------------------------------------------------------------

def reset_stats(stats: Stats) -> None:
    """Zero every counter in place (the gateway and its sessions hold references to these objects)."""
    for f in dataclasses.fields(Stats):
        value = getattr(stats, f.name)
        if f.name == "started_at":
            stats.started_at = time.monotonic()
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            setattr(stats, f.name, 0)
        elif f.name in ("rate_limited", "connections_by_compress"):
            for key in value:
                value[key] = 0
    for shard in stats.shards.values():
        for f in dataclasses.fields(ShardStats):
            if f.name in _GAUGES:
                continue
            value = getattr(shard, f.name)
            if isinstance(value, int):
                setattr(shard, f.name, 0)
            elif isinstance(value, dict):
                value.clear()


async def get_stats(request: web.Request, state: SimState) -> web.Response:
    hub: Any = state.gateway
    report = hub.delivery_report()  # first: it ends the sessions whose resume window passed (their losses count)
    data = state.stats.as_dict()
    data.update(report)
    data["live_shards"] = {str(k): v for k, v in hub.live_shards().items()}
    data["shard_count"] = hub.shard_count()
    data["identify_remaining"] = (int(hub.identify_remaining()) if callable(getattr(hub, "identify_remaining", None))
                                  else state.config.session_start_total)
    data["pending_interactions"] = len(state.interactions)
    data["rest_faults_pending"] = len(state.rest_faults)
    data["load"] = request.app[LOAD_KEY].status()
    return json_response(data)


async def post_reset_stats(request: web.Request, state: SimState) -> web.Response:
    body = await json_body(request)
    reset_stats(state.stats)
    if boolean(body, "rate_limits", False) and LIMITER_KEY in request.app:
        request.app[LIMITER_KEY].reset()
        request.app[INVALID_REQUESTS_KEY].lift()
    return json_response({"reset": True})


async def _stop_load_on_cleanup(app: web.Application) -> None:
    await app[LOAD_KEY].stop()


def setup(app: web.Application) -> None:
    """Add the control API to ``app`` (whose ``STATE_KEY`` is already set)."""
    app[LOAD_KEY] = LoadGenerator(app[STATE_KEY])
    app.on_cleanup.append(_stop_load_on_cleanup)
    r = app.router
    r.add_get("/_sim/world", control_handler(world_view))
    r.add_post("/_sim/interactions", control_handler(inject_interaction))
    r.add_get("/_sim/interactions/{interaction_id}", control_handler(get_interaction))
    r.add_post("/_sim/messages", control_handler(post_message))
    r.add_get("/_sim/dms/{user_id}", control_handler(dm_view))
    r.add_post("/_sim/load", control_handler(start_load))
    r.add_get("/_sim/load", control_handler(load_status))
    r.add_delete("/_sim/load", control_handler(stop_load))
    r.add_post("/_sim/faults", control_handler(post_fault))
    r.add_post("/_sim/gateway", control_handler(post_gateway))
    r.add_get("/_sim/faults", control_handler(list_faults))
    r.add_delete("/_sim/faults", control_handler(clear_faults))
    r.add_get("/_sim/stats", control_handler(get_stats))
    r.add_post("/_sim/reset-stats", control_handler(post_reset_stats))
    control_permissions.setup(app)
    control_token.setup(app)
