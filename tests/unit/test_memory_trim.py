"""The periodic malloc_trim: counts what it hands back, and stays off where it cannot run."""

from __future__ import annotations

import pytest

from shard.memory_trim import MemoryTrim, glibc_malloc_trim


async def test_a_trim_counts_the_resident_bytes_it_handed_back() -> None:
    rss = iter([100 << 20, 96 << 20, 96 << 20, 97 << 20])
    calls: list[int] = []
    trim = MemoryTrim(30, trim=lambda: calls.append(1) or 1, rss=lambda: next(rss))
    assert await trim.run_once() == 4 << 20
    assert await trim.run_once() == 0  # the RSS grew meanwhile: nothing is counted as freed
    assert trim.freed == 4 << 20 and len(calls) == 2


async def test_without_malloc_trim_or_with_interval_0_it_does_nothing() -> None:
    off = MemoryTrim(30, trim=None)
    await off.start()
    assert await off.run_once() == 0
    await off.stop()
    never = MemoryTrim(0, trim=lambda: 1)
    await never.start()
    assert not len(never._tasks)
    await never.stop()


def test_this_machine_has_glibc_malloc_trim() -> None:
    trim = glibc_malloc_trim()
    assert trim is not None and trim() in (0, 1)


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        MemoryTrim(-1)


async def test_the_first_trim_comes_once_ready_then_every_interval() -> None:
    import asyncio

    ready = asyncio.Event()
    trimmed = asyncio.Event()

    def trim() -> int:
        trimmed.set()
        return 1

    service = MemoryTrim(3600, trim=trim, rss=lambda: 0, ready=ready.wait)
    await service.start()
    await asyncio.sleep(0)
    assert not trimmed.is_set()  # not before READY
    ready.set()
    await asyncio.wait_for(trimmed.wait(), timeout=5)  # at READY, not an hour later
    await service.stop()
