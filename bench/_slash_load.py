"""Slash commands as users send them, for the load benchmarks: the mix, one request, open and closed loops.

Every request is a ``POST /_sim/interactions`` that waits for the bot's callback; the latency is the
simulator's (INTERACTION_CREATE written → callback received), which is what Discord's 3-second rule
counts. A result's ``outcome`` is the error code in the answer (``E5008`` for a shed command),
``deferred`` for a deferral, ``ok`` for an answer, or the client error when none came.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = ("MIX", "CODE", "SHED_CODE", "Result", "request_for", "post", "open_loop", "closed_loop", "pct",
           "summarize")

#: (label, weight, options): cheap commands and commands that read or write the database.
MIX: list[tuple[str, float, Any]] = [
    ("ping", 0.35, []),
    ("help", 0.20, []),
    ("reminders list", 0.10, [{"name": "reminders", "type": 1, "options": [{"name": "list", "type": 1}]}]),
    ("alias list", 0.10, [{"name": "alias", "type": 1, "options": [{"name": "list", "type": 1}]}]),
    ("permissions list", 0.10, [{"name": "permissions", "type": 1, "options": [{"name": "list", "type": 1}]}]),
    ("settings show", 0.05, [{"name": "settings", "type": 1, "options": [{"name": "show", "type": 1}]}]),
    ("remind", 0.05, None),
    ("health", 0.05, []),
]
CODE = re.compile(r"\((E\d{4})\)")
SHED_CODE = "E5008"


@dataclass(frozen=True, slots=True)
class Result:
    """One slash command: what it was, when it was sent (seconds from the loop's start), what came back."""

    label: str
    sent_at: float
    status: int
    latency_ms: float | None
    outcome: str


def request_for(guild: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A random command of :data:`MIX` by a random member of ``guild`` (a ``/_sim/world`` guild)."""
    name, _, opts = rng.choices(MIX, weights=[w for _, w, _ in MIX])[0]
    user = rng.choice(guild["members"])
    if name == "remind":
        top, options = "remind", [{"name": "when", "type": 3, "value": "3d"}, {"name": "text", "type": 3,
                                                                              "value": "benchmark"}]
    elif opts == []:
        top, options = name, []
    else:
        top, options = name.split()[0], opts[0]["options"]
    return {"label": name, "body": {"guild_id": guild["id"], "channel_id": guild["channels"][0],
                                    "user_id": user, "name": top, "options": options, "timeout": 15}}


async def post(http: aiohttp.ClientSession, sim: str, req: dict[str, Any], sent_at: float = 0.0) -> Result:
    """Send one command; its result once the bot answered (or the simulator gave up)."""
    try:
        async with http.post(sim + "/_sim/interactions", json=req["body"],
                             timeout=aiohttp.ClientTimeout(total=30)) as resp:
            data = await resp.json()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Result(req["label"], sent_at, 0, None, type(exc).__name__)
    callback = (data or {}).get("callback") or {}
    text = str((callback.get("data") or {}).get("content") or "")
    code = CODE.search(text)
    outcome = code.group(1) if code else ("deferred" if callback.get("type") == 5 else "ok")
    if status != 200:
        outcome = f"http_{status}"
    return Result(req["label"], sent_at, status, data.get("latency_ms") if status == 200 else None, outcome)


async def open_loop(http: aiohttp.ClientSession, sim: str, guilds: Sequence[dict[str, Any]], rate: float,
                    seconds: float, rng: random.Random) -> tuple[list[Result], float]:
    """``rate`` commands a second for ``seconds``, each sent on time whatever the answers do; returns the
    results and how long the sending took."""
    tasks: list[asyncio.Task[Result]] = []
    t0 = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(http, sim, request_for(rng.choice(guilds), rng),
                                              time.perf_counter() - t0)))
    sent_in = time.perf_counter() - t0
    return list(await asyncio.gather(*tasks)), sent_in


async def closed_loop(http: aiohttp.ClientSession, sim: str, guilds: Sequence[dict[str, Any]], concurrency: int,
                      seconds: float, rng: random.Random) -> list[Result]:
    """``concurrency`` users each sending their next command as soon as the last was answered."""
    results: list[Result] = []
    t0 = time.perf_counter()

    async def user() -> None:
        while time.perf_counter() - t0 < seconds:
            results.append(await post(http, sim, request_for(rng.choice(guilds), rng), time.perf_counter() - t0))

    await asyncio.gather(*(user() for _ in range(concurrency)))
    return results


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarize(results: Sequence[Result], seconds: float) -> dict[str, Any]:
    """Answered, within 3 s, shed, deferred, admitted latency and throughput of one run of ``seconds``."""
    answered = [r for r in results if r.status == 200 and r.latency_ms is not None]
    admitted = [r for r in answered if r.outcome != SHED_CODE]
    lat = [float(r.latency_ms) for r in admitted if r.latency_ms is not None]
    return {
        "sent": len(results),
        "answered": len(answered),
        "answered_within_3s": sum(1 for r in answered if (r.latency_ms or 0.0) <= 3000.0),
        "shed": sum(1 for r in answered if r.outcome == SHED_CODE),
        "deferred": sum(1 for r in answered if r.outcome == "deferred"),
        "unanswered": len(results) - len(answered),
        "admitted_per_s": round(len(admitted) / seconds, 1) if seconds > 0 else None,
        "p50_ms": round(pct(lat, 0.5), 1), "p99_ms": round(pct(lat, 0.99), 1),
        "max_ms": round(max(lat), 1) if lat else None,
        "outcomes": dict(Counter(r.outcome for r in results)),
    }
