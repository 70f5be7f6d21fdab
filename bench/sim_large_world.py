"""The simulator's own cost for the large-guild benchmark world: memory, GUILD_CREATE time, chunking throughput.

``python -m bench sim_large_world [--guilds 10000] [--huge 3] [--shards 10] [--runs 3] [--compress zlib|none]``

The world is the one the performance work measures against: ``--guilds`` guilds of realistic sizes
(median 20 members, a long tail) plus ``--huge`` guilds of 250,000 members, over ``--shards``
shards. A raw websocket client per shard (no discord.py, so the figures are the simulator's):

1. start: seconds from spawning ``python -m simulator`` to its first answer, and its RSS then;
2. GUILD_CREATE: every shard IDENTIFYs at once (``max_concurrency`` = shards, tiny window) with
   GUILDS | GUILD_MEMBERS, as a big bot does (no presences, so GUILD_CREATE carries only the bot),
   then again with GUILD_PRESENCES (big guilds send their online members and those with roles);
   seconds until every GUILD_CREATE arrived, and the RSS after;
3. chunking: a whole-member-list request for every huge guild at once; members per second until
   every chunk arrived (the client checks that they add up to ``member_count``), and the peak RSS
   sampled every 50 ms meanwhile.

The client decompresses and parses on the same two cores, so rates are lower bounds. Medians of
``--runs`` runs (a fresh simulator each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp

from bench._procs import cpu_seconds, free_port, rss_bytes, until, wait_http_ok

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
GUILDS, MEMBERS, PRESENCES = 1, 1 << 1, 1 << 8
_SUFFIX = b"\x00\x00\xff\xff"


class _Shard:
    """One raw gateway connection: IDENTIFY, count GUILD_CREATEs, collect member chunks."""

    def __init__(self, session: aiohttp.ClientSession, url: str, shard: tuple[int, int], intents: int,
                 compress: bool) -> None:
        self.session, self.url, self.shard, self.intents, self.compress = session, url, shard, intents, compress
        self.guild_creates = 0
        self.expected: int | None = None
        self.chunk_members: dict[str, int] = {}
        self.chunks_left: dict[str, int] = {}
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def run(self) -> None:
        query = "?v=10&encoding=json" + ("&compress=zlib-stream" if self.compress else "")
        inflate = zlib.decompressobj()
        buffer = bytearray()
        async with self.session.ws_connect(self.url + query, max_msg_size=0) as ws:
            self.ws = ws
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    buffer.extend(msg.data)
                    if not buffer.endswith(_SUFFIX):
                        continue
                    text = inflate.decompress(bytes(buffer))
                    buffer.clear()
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    text = msg.data
                else:
                    break
                await self._on(json.loads(text), ws)

    async def _on(self, payload: dict[str, Any], ws: aiohttp.ClientWebSocketResponse) -> None:
        op, t = payload["op"], payload.get("t")
        d: Any = payload.get("d")
        if op == 10:
            await ws.send_json({"op": 2, "d": {
                "token": TOKEN, "intents": self.intents, "shard": list(self.shard), "large_threshold": 250,
                "properties": {"os": "linux", "browser": "bench", "device": "bench"}}})
        elif t == "READY":
            self.expected = len(d["guilds"])
        elif t == "GUILD_CREATE":
            self.guild_creates += 1
        elif t == "GUILD_MEMBERS_CHUNK":
            gid = d["guild_id"]
            self.chunk_members[gid] = self.chunk_members.get(gid, 0) + len(d["members"])
            self.chunks_left[gid] = self.chunks_left.get(gid, d["chunk_count"]) - 1
        elif op == 9:
            raise RuntimeError("the simulator refused an IDENTIFY")

    @property
    def done(self) -> bool:
        return self.expected is not None and self.guild_creates == self.expected


async def one_run(guilds: int, huge: int, shards: int, compress: bool) -> dict[str, float]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    proc = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed argv; spawned once, before any socket is open
        [sys.executable, "-m", "simulator", "--port", str(port), "--guilds", str(guilds), "--shards", str(shards),
         "--max-concurrency", str(shards), "--identify-window", "0.01", "--token", TOKEN,
         "--guild-sizes", "realistic", "--huge-guilds", str(huge), "--max-member-count", "250000",
         "--heartbeat-interval-ms", "600000", "--log-level", "WARNING"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession() as http:
            await wait_http_ok(http, base + "/_sim/world?limit=1", timeout=60)
            out["start_s"] = time.perf_counter() - started
            out["rss_start_mib"] = rss_bytes(proc.pid) / 2**20
            members = await _world_members(http, base, guilds)
            url = f"ws://127.0.0.1:{port}/gateway"
            for label, intents in (("lean", GUILDS | MEMBERS), ("presences", GUILDS | MEMBERS | PRESENCES)):
                clients = [_Shard(http, url, (i, shards), intents, compress) for i in range(shards)]
                cpu0 = cpu_seconds(proc.pid)
                t0 = time.perf_counter()
                tasks = [asyncio.create_task(c.run()) for c in clients]
                await until(lambda cs=clients: all(c.done for c in cs), 600, f"every GUILD_CREATE ({label})")
                out[f"guild_create_{label}_s"] = time.perf_counter() - t0
                out[f"guild_create_{label}_sim_cpu_s"] = cpu_seconds(proc.pid) - cpu0
                out[f"rss_after_{label}_mib"] = rss_bytes(proc.pid) / 2**20
                print(f"  ... {label}: {out[f'guild_create_{label}_s']:.1f} s", file=sys.stderr, flush=True)
                if label == "presences":
                    cpu0 = cpu_seconds(proc.pid)
                    out["chunk_members_per_s"], out["rss_chunking_peak_mib"], out["chunked_members"] = \
                        await _chunk_huge(clients, members, shards, proc.pid)
                    out["chunk_sim_cpu_us_per_member"] = (cpu_seconds(proc.pid) - cpu0) / out["chunked_members"] * 1e6
                for c in clients:
                    if c.ws is not None:
                        await c.ws.close()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        proc.terminate()
        proc.wait(10)
    return out


async def _world_members(http: aiohttp.ClientSession, base: str, guilds: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for offset in range(0, guilds, 1000):
        async with http.get(f"{base}/_sim/world?limit=1000&offset={offset}") as resp:
            for g in (await resp.json())["guilds"]:
                counts[g["id"]] = g["member_count"]
    return counts


async def _chunk_huge(clients: list[_Shard], members: dict[str, int], shards: int,
                      pid: int) -> tuple[float, float, float]:
    huge = [gid for gid, n in members.items() if n == 250_000]  # --huge, and any the spread drew at the cap
    t0 = time.perf_counter()
    for gid in huge:
        client = clients[(int(gid) >> 22) % shards]
        assert client.ws is not None
        await client.ws.send_json({"op": 8, "d": {"guild_id": gid, "query": "", "limit": 0}})
    peak = 0

    def finished() -> bool:
        nonlocal peak
        peak = max(peak, rss_bytes(pid))
        return all(clients[(int(g) >> 22) % shards].chunks_left.get(g) == 0 for g in huge)

    deadline = time.monotonic() + 900
    while not finished():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting for the member chunks")
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - t0
    got = sum(clients[(int(g) >> 22) % shards].chunk_members[g] for g in huge)
    if got != 250_000 * len(huge):
        raise AssertionError(f"chunks carried {got} members, not {250_000 * len(huge)}")
    return got / elapsed, peak / 2**20, float(got)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sim_large_world", description=__doc__.split("\n")[0])
    parser.add_argument("--guilds", type=int, default=10_000)
    parser.add_argument("--huge", type=int, default=3, help="guilds of 250,000 members")
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compress", choices=("zlib", "none"), default="zlib")
    args = parser.parse_args(argv)
    runs = [asyncio.run(one_run(args.guilds, args.huge, args.shards, args.compress == "zlib"))
            for _ in range(args.runs)]
    print(f"large world: {args.guilds} guilds (realistic sizes, {args.huge} x 250,000 members), {args.shards} shards, "
          f"{args.compress}; medians of {args.runs} runs")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"  {key:28s} {statistics.median(values):>14,.1f}   (runs: {', '.join(f'{v:,.1f}' for v in values)})")
    print(f"host: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}")
    return 0
