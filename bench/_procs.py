"""What the benchmarks share about the processes they measure: ports, RSS, CPU time, waiting for one to answer."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

__all__ = ("free_port", "rss_bytes", "memory_detail", "cpu_seconds", "wait_http_ok", "until", "delete_redis_prefix")


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


def memory_detail(pid: int) -> dict[str, float]:
    """What process ``pid``'s memory is made of, in MiB, and its thread count.

    ``rss`` splits into ``rss_anon`` (heap, Python's arenas, thread stacks) and ``rss_file`` (the pages
    of mapped files: the interpreter, shared libraries and extension modules). ``uss`` is the memory
    only this process holds (private pages); the clean pages of a library it shares with other
    processes (the other clusters of a host) count in its RSS but not in its USS. ``pss`` divides each
    shared page among its sharers.
    """
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
        elif key == "Threads":
            fields[key] = int(value)
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        if key in ("Pss", "Private_Clean", "Private_Dirty"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss": fields["VmRSS"], "rss_anon": fields["RssAnon"], "rss_file": fields["RssFile"],
            "uss": fields["Private_Clean"] + fields["Private_Dirty"], "pss": fields["Pss"],
            "threads": fields["Threads"]}


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
