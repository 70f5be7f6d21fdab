"""Simulator throughput to one connection, and its memory for a large world.

``python -m bench sim_dispatch [--events 100000] [--runs 5] [--guilds 10000] [--compress {zlib,zstd,none}]``

1. Throughput: a simulator process (``python -m simulator``) and one raw gateway client in this
   process (aiohttp websocket; ``--compress zlib`` (the default) asks for zlib-stream and inflates
   with ``zlib``, ``zstd`` asks for zstd-stream, as discord.py does with ``zstandard`` installed, and
   decompresses with a ``zstandard`` ``decompressobj``, ``none`` gets text frames; ``json.loads`` of
   every frame). After READY the client asks ``POST /_sim/load`` for ``--events``
   MESSAGE_CREATEs at full speed aimed at its shard and times their arrival. The figure is a lower
   bound of what the simulator delivers: the client's own decompress-and-parse runs on the same
   2 cores. The goal is ≥ 20,000 dispatches/s, so that the simulator never limits what we measure
   of the bot (bare discord.py parses ~25k/s on this machine).
2. Memory: a simulator with ``--guilds`` guilds over 10 shards; its RSS after start, and again
   after 10 raw clients (with the same ``--compress``) identified and received every GUILD_CREATE.

``--no-compress`` is an alias of ``--compress none``.
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
from typing import Any, cast

import aiohttp
import zstandard

from bench._procs import free_port, rss_bytes, until, wait_http_ok

__all__ = ("main",)

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
_ZLIB_SUFFIX = b"\x00\x00\xff\xff"
#: GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT
_INTENTS = (1 << 0) | (1 << 9) | (1 << 15)
#: ``--compress`` choice → the gateway's ``compress`` query value (None: plain text frames).
CODECS: dict[str, str | None] = {"zlib": "zlib-stream", "zstd": "zstd-stream", "none": None}


class _Client:
    """A minimal gateway client: HELLO, IDENTIFY, then count dispatches by type."""

    def __init__(self, session: aiohttp.ClientSession, url: str, shard: tuple[int, int],
                 compress: str | None) -> None:
        self.session, self.url, self.shard, self.compress = session, url, shard, compress
        self.counts: dict[str, int] = {}
        self.ready = asyncio.Event()
        self._inflator = zlib.decompressobj()
        self._zstd = zstandard.ZstdDecompressor().decompressobj() if compress == "zstd-stream" else None
        self._buffer = bytearray()
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    def _decode(self, msg: aiohttp.WSMessage) -> dict[str, Any] | None:
        if msg.type is aiohttp.WSMsgType.TEXT:
            return cast(dict[str, Any], json.loads(msg.data))
        if msg.type is aiohttp.WSMsgType.BINARY and self._zstd is not None:
            # zstd-stream: each frame is one whole message of the connection's single zstd frame.
            return cast(dict[str, Any], json.loads(self._zstd.decompress(msg.data)))
        if msg.type is aiohttp.WSMsgType.BINARY:
            self._buffer.extend(msg.data)
            if len(msg.data) < 4 or msg.data[-4:] != _ZLIB_SUFFIX:
                return None
            text = self._inflator.decompress(self._buffer)
            self._buffer.clear()
            return cast(dict[str, Any], json.loads(text))
        raise ConnectionError(f"gateway closed: {msg.type} {msg.data!r}")

    async def run(self) -> None:
        query = "?v=10&encoding=json" + (f"&compress={self.compress}" if self.compress else "")
        async with self.session.ws_connect(self.url + query, max_msg_size=0) as ws:
            self.ws = ws
            async for msg in ws:
                payload = self._decode(msg)
                if payload is None:
                    continue
                op = payload["op"]
                if op == 10:
                    await ws.send_json({"op": 2, "d": {
                        "token": TOKEN, "intents": _INTENTS, "shard": list(self.shard),
                        "properties": {"os": "linux", "browser": "bench", "device": "bench"}}})
                elif op == 0:
                    t = payload["t"]
                    self.counts[t] = self.counts.get(t, 0) + 1
                    if t == "READY":
                        self.ready.set()
                elif op == 9:
                    raise RuntimeError("the simulator refused the IDENTIFY")


def _start_simulator(port: int, guilds: int, shards: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "simulator", "--port", str(port), "--guilds", str(guilds), "--shards", str(shards),
         "--max-concurrency", str(shards), "--identify-window", "0.01", "--token", TOKEN,
         "--members-per-guild", "5", "--resume-buffer", "100", "--log-level", "WARNING"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def throughput(events: int, runs: int, compress: str | None) -> list[float]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start_simulator(port, guilds=100, shards=1)
    rates: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            await wait_http_ok(session, base + "/_sim/stats")
            client = _Client(session, f"ws://127.0.0.1:{port}/gateway", (0, 1), compress)
            task = asyncio.create_task(client.run())
            await asyncio.wait_for(client.ready.wait(), 30)
            await until(lambda: client.counts.get("GUILD_CREATE", 0) == 100, 30)
            for _ in range(runs):
                before = client.counts.get("MESSAGE_CREATE", 0)
                started = time.perf_counter()
                async with session.post(base + "/_sim/load", json={
                        "kind": "message_create", "rate": 0, "count": events, "target": "shard", "shard_id": 0}) as r:
                    assert r.status == 202, await r.text()
                await until(lambda b=before: client.counts.get("MESSAGE_CREATE", 0) - b >= events, 120)
                rates.append(events / (time.perf_counter() - started))
            task.cancel()
    finally:
        proc.terminate()
        proc.wait(10)
    return rates


async def memory(guilds: int, compress: str | None, shards: int = 10) -> tuple[int, int, float]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start_simulator(port, guilds=guilds, shards=shards)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_http_ok(session, base + "/_sim/stats")
            idle = rss_bytes(proc.pid)
            started = time.perf_counter()
            clients = [_Client(session, f"ws://127.0.0.1:{port}/gateway", (i, shards), compress)
                       for i in range(shards)]
            tasks = [asyncio.create_task(c.run()) for c in clients]
            await until(lambda: sum(c.counts.get("GUILD_CREATE", 0) for c in clients) == guilds, 120)
            elapsed = time.perf_counter() - started
            loaded = rss_bytes(proc.pid)
            for t in tasks:
                t.cancel()
    finally:
        proc.terminate()
        proc.wait(10)
    return idle, loaded, elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sim_dispatch", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--guilds", type=int, default=10_000)
    parser.add_argument("--compress", choices=tuple(CODECS), default="zlib",
                        help="the gateway transport compression the client asks for (default: zlib)")
    parser.add_argument("--no-compress", dest="compress", action="store_const", const="none",
                        help="alias of --compress none")
    args = parser.parse_args(argv)
    compress = CODECS[args.compress]
    rates = asyncio.run(throughput(args.events, args.runs, compress))
    print(f"dispatch to one connection ({compress or 'plain'}), "
          f"{args.events} MESSAGE_CREATE x {args.runs}: median {statistics.median(rates):,.0f}/s "
          f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}); goal >= 20,000/s")
    idle, loaded, elapsed = asyncio.run(memory(args.guilds, compress))
    print(f"memory, {args.guilds} guilds: RSS {idle / 2**20:.1f} MiB at start, {loaded / 2**20:.1f} MiB after "
          f"10 shards received every GUILD_CREATE over {compress or 'plain'} ({elapsed:.1f} s)")
    print(f"host: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}")
    return 0
