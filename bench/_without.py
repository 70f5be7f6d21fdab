"""Run a module or script as if some optional packages were not installed.

``python bench/_without.py orjson,hiredis -m shard --cluster 0 ...`` blocks the named imports
(``sys.modules[name] = None`` makes ``import name`` raise ImportError, which is how discord.py,
redis-py and aiohttp detect a missing speed-up), then runs ``-m module`` or a script path with
the remaining arguments. The dispatch benchmark uses it to measure what each speed-up is worth.
"""

from __future__ import annotations

import runpy
import sys

__all__ = ("main",)


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit("usage: python bench/_without.py MOD[,MOD...] (-m MODULE | SCRIPT) [ARGS...]")
    for name in filter(None, argv[0].split(",")):
        sys.modules[name] = None  # type: ignore[assignment]
    rest = argv[1:]
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
