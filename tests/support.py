"""Helpers shared by the tests: waiting on conditions, free ports, service checks."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: argv of the ``innkeeper`` command as this interpreter runs it.
INNKEEPER_CLI = (sys.executable, "-m", "cluster.innkeeper_cli")
PG_ADMIN_DSN = os.environ.get("INNKEEPER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("INNKEEPER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def service_missing(name: str, why: object) -> None:
    """Fail under CI, skip elsewhere: a test that needs a service must not pass silently in CI."""
    message = f"{name} is not reachable: {why}"
    if IN_CI:
        pytest.fail(message + " (CI=true: services are required)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(
    predicate: Callable[[], Awaitable[T] | T], *, timeout: float = 10.0, interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
            if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
                result = await result  # type: ignore[misc]
            if result:
                return result  # type: ignore[return-value]
            last = result
        except AssertionError as exc:  # allow predicates that assert
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={last!r}")
        await asyncio.sleep(interval)


def wait_for_sync(predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05,
                  message: str = "condition") -> T:
    """Blocking variant of :func:`wait_for`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
            if result:
                return result
            last = result
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={last!r}")
        time.sleep(interval)
