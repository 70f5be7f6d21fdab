"""The registry of actions a cluster answers over the bus.

A request names an action; the bus looks the name up here and nowhere else: there is no
``getattr`` on payload strings and no eval. An action that is not registered gets an
``IPC_UNKNOWN_ACTION`` error response.

Examples
--------
>>> registry = HandlerRegistry()
>>> @registry.handler("guild_count")
... async def guild_count(args):
...     return 42
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from innkeeper.errors import UsageError

__all__ = ("HandlerRegistry", "Handler", "HandlerFunc")

HandlerFunc = Callable[[dict[str, Any]], Awaitable[Any]]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered action: its name, coroutine function and time limit in seconds."""

    name: str
    func: HandlerFunc
    timeout: float


class HandlerRegistry:
    """Allowed bus actions, by name.

    Parameters
    ----------
    default_timeout:
        Seconds a handler may run when it was registered without its own ``timeout``.
    """

    __slots__ = ("_handlers", "default_timeout")

    def __init__(self, default_timeout: float = 10.0) -> None:
        if default_timeout <= 0:
            raise UsageError("default_timeout must be positive")
        self._handlers: dict[str, Handler] = {}
        self.default_timeout = default_timeout

    def add(self, name: str, func: HandlerFunc, *, timeout: float | None = None, replace: bool = False) -> None:
        """Register ``func`` (an ``async def f(args: dict) -> result``) under ``name``.

        Raises
        ------
        UsageError
            The name is malformed, already taken (unless ``replace``), or ``func`` is not a
            coroutine function.
        """
        if not _NAME_RE.match(name):
            raise UsageError(f"bad action name {name!r}: use lowercase letters, digits, '_' and '.'")
        if name in self._handlers and not replace:
            raise UsageError(f"action {name!r} is already registered")
        if not inspect.iscoroutinefunction(func):
            raise UsageError(f"the handler for {name!r} must be an async function")
        limit = self.default_timeout if timeout is None else timeout
        if limit <= 0:
            raise UsageError("a handler timeout must be positive")
        self._handlers[name] = Handler(name, func, limit)

    def handler(self, name: str, *, timeout: float | None = None,
                replace: bool = False) -> Callable[[HandlerFunc], HandlerFunc]:
        """Decorator form of :meth:`add`."""

        def decorate(func: HandlerFunc) -> HandlerFunc:
            self.add(name, func, timeout=timeout, replace=replace)
            return func

        return decorate

    def remove(self, name: str) -> None:
        self._handlers.pop(name, None)

    def get(self, name: str) -> Handler | None:
        """The handler registered as ``name``, or None. Plain dict lookup: nothing else is reachable."""
        return self._handlers.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._handlers))

    def __len__(self) -> int:
        return len(self._handlers)
