"""What each import adds to a cluster's fixed base: RSS above what bare discord.py imports, package by package.

``python -m bench import_cost [--repeat 3] [--json PATH]``

Each figure is a fresh interpreter that imports a list of modules, collects garbage, hands the freed
heap back to the OS (``malloc_trim``) and reads its RSS; the median of ``--repeat`` interpreters.
Nothing runs: no loop, no connection, no thread. The rows:

- **bare**: what ``bench/_bare_bot.py`` imports (discord.py, its command extension, aiohttp's web
  server) and the speed-ups discord.py uses when importable (orjson, zstandard), the baseline;
- one row per third-party package the cluster adds, each on the baseline alone (what it imports
  and the baseline does not counts; ``importlib.metadata`` is one of redis-py's imports, shown
  apart), then all of them together; uvloop, which a cluster imports only when
  ``INNKEEPER_EVENT_LOOP=uvloop`` chooses it, is shown apart;
- our own modules, layer by layer (``innkeeper``, ``ipc``, ``db``, ``shard`` with the cogs), each
  on top of every third-party package and the layers before it: the modules a built cluster
  imports (listed by a first interpreter that builds one, ``shard.assembly`` and the extensions).

``bench memory --base-only`` measures the running process; what it adds to these imports is the
running part (connections, the loop, threads: ``--stack-env INNKEEPER_EVENT_LOOP=asyncio`` shows
uvloop's share).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from bench._bots import ROOT

__all__ = ("main", "BARE", "THIRD_PARTY", "OPTIONAL")

#: What bare discord.py imports in ``bench/_bare_bot.py``, and the speed-ups discord.py picks up.
BARE = ("discord", "discord.ext.commands", "aiohttp.web", "yarl", "orjson", "zstandard")
#: The third-party packages a cluster adds, as it imports them (label → modules).
THIRD_PARTY = {
    "redis-py (redis.asyncio)": ("redis.asyncio",),
    "  of which importlib.metadata": ("importlib.metadata",),
    "asyncpg": ("asyncpg",),
    "pypika": ("pypika", "pypika.functions"),
    "prometheus-client": ("prometheus_client", "prometheus_client.core"),
    "msgpack + hiredis": ("msgpack", "hiredis"),
}
#: Imported only when chosen (``INNKEEPER_EVENT_LOOP=uvloop``): shown, not counted in a cluster's imports.
OPTIONAL = {"uvloop (INNKEEPER_EVENT_LOOP=uvloop only)": ("uvloop",)}
_LAYERS = ("innkeeper", "ipc", "db", "shard")

_MEASURE = """
import ctypes, gc, importlib, os, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
gc.collect()
try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
except (OSError, AttributeError):
    pass
print(int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
"""



def _rss_mib(modules: list[str], repeat: int) -> float:
    """The median RSS (MiB) of ``repeat`` fresh interpreters that imported ``modules``."""
    samples = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _MEASURE, *modules], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=120)
        samples.append(int(out.stdout.split()[-1]) / 2**20)
    return statistics.median(samples)


def _cluster_modules() -> list[str]:
    """Our modules a built cluster imports (with its extensions), in import order of their layers."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "_built_cluster.py")], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=120, env={**os.environ, "INNKEEPER_LOG_LEVEL": "ERROR"})
    return [m for m in out.stdout.split() if m.split(".")[0] in _LAYERS]


def measure(repeat: int = 3) -> dict[str, Any]:
    """Every row of the module docstring: ``{"rows": [(label, rss_mib, added_mib)], ...}``."""
    rows: list[tuple[str, float, float]] = []
    python = _rss_mib([], repeat)
    bare = _rss_mib(list(BARE), repeat)
    rows.append(("python alone", python, 0.0))
    rows.append(("bare discord.py's imports (the baseline)", bare, bare - python))
    everything = list(BARE)
    for label, modules in THIRD_PARTY.items():
        rss = _rss_mib([*BARE, *modules], repeat)
        rows.append((label, rss, rss - bare))
        if not label.startswith(" "):
            everything += modules
    third = _rss_mib(everything, repeat)
    rows.append(("every third-party package", third, third - bare))
    for label, modules in OPTIONAL.items():
        rss = _rss_mib([*BARE, *modules], repeat)
        rows.append((label, rss, rss - bare))
    ours = _cluster_modules()
    previous = third
    for layer in _LAYERS:
        everything += [m for m in ours if m.split(".")[0] == layer]
        rss = _rss_mib(everything, repeat)
        rows.append((f"our {layer}/", rss, rss - previous))
        previous = rss
    return {"rows": rows, "bare_mib": bare, "all_mib": previous, "above_bare_mib": previous - bare,
            "our_modules": len(ours), "repeat": repeat, "load_average": os.getloadavg()[0]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench import_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="interpreters per figure (the median is kept)")
    parser.add_argument("--json", default=None, help="write every figure here")
    args = parser.parse_args(argv)
    out = measure(max(1, args.repeat))
    print(f"import_cost: RSS after the imports (MiB, median of {out['repeat']} interpreters), and what each row adds")
    for label, rss, added in out["rows"]:
        print(f"  {label:42s} {rss:7.2f}  {added:+6.2f}")
    print(f"  a cluster's imports above bare discord.py's: {out['above_bare_mib']:+.2f} MiB "
          f"({out['our_modules']} of our modules); load average {out['load_average']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0
