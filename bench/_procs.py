"""What the benchmarks share about the processes they measure: ports, RSS, CPU time, waiting for one to answer."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

__all__ = ("free_port", "rss_bytes", "cpu_seconds", "wait_http_ok", "until", "delete_redis_prefix")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (good enough for a benchmark run alone)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (0 when /proc does not say)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_http_ok(session: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> None:
    """Wait until ``GET url`` answers 200 (a freshly spawned server is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def until(predicate: Callable[..., object], timeout: float, what: str = "the benchmark condition",
                interval: float = 0.005) -> None:
    """Wait until ``predicate()`` is truthy, polling every ``interval`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


async def delete_redis_prefix(prefix: str) -> None:
    """Delete every key under ``prefix`` on ``REDIS_URL`` (what a benchmark's cluster left behind)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
