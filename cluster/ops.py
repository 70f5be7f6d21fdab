"""``innkeeper`` subcommands that run and operate the cluster.

``launch``, ``demo``, ``stop``, ``status``, ``restart``, ``reshard`` and ``ctl`` (supervisorctl with
Innkeeper's configuration). Exit codes follow the CLI's: 0 ok, 1 failure, 2 bad usage; ``status``
exits 1 when a shard the plan expects is not READY, so scripts can use it as a check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

from innkeeper.errors import UsageError
from innkeeper.settings import Settings

from .console import stop_signals
from .demo import DemoOptions, run_demo
from .launcher import Launcher, LaunchInterrupted
from .plan import format_shard_ids
from .reshard import Resharder
from .state import StatusDoc, health, read_status
from .supervisor import CONF_PATH, SupervisorError, SupervisorUnavailable

__all__ = ("add_commands", "format_status")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 65535")
    return value


def _window(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.01 <= value <= 60:
        raise argparse.ArgumentTypeError("the identify window must be between 0.01 and 60 seconds")
    return value


def add_commands(sub: Any) -> None:
    p = sub.add_parser("launch", help="start (or update) the clusters under supervisord and wait until READY",
                       description="GET /gateway/bot, plan the clusters, apply the plan through supervisord "
                                   "and wait until every shard is READY.")
    p.add_argument("--shards", type=_positive, help="shard count (default: INNKEEPER_SHARD_COUNT or Discord's)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--clusters", type=_positive, help="cluster count (default: INNKEEPER_CLUSTERS)")
    group.add_argument("--shards-per-cluster", type=_positive, help="cluster size")
    p.add_argument("--no-wait", action="store_true", help="return once supervisord has the plan")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for READY")
    p.set_defaults(handler=_launch)

    d = DemoOptions()
    p = sub.add_parser("demo", help="run the simulator, migrations and the clusters on this machine",
                       description="The whole system against the Discord simulator; Ctrl-C stops everything.")
    p.add_argument("--guilds", type=_positive, default=d.guilds, help=f"guilds in the world (default {d.guilds})")
    p.add_argument("--shards", type=_positive, default=d.shards, help=f"shards (default {d.shards})")
    p.add_argument("--clusters", type=_positive, default=d.clusters, help=f"clusters (default {d.clusters})")
    p.add_argument("--max-concurrency", type=_positive, default=d.max_concurrency,
                   help=f"identify buckets the simulator grants (default {d.max_concurrency})")
    p.add_argument("--identify-window", type=_window, default=d.identify_window,
                   help=f"identify window in seconds, scaled down from Discord's 5 (default {d.identify_window})")
    p.add_argument("--port", type=_port, default=None,
                   help="simulator port (default 8765, or a free one; 0: whatever port the simulator binds)")
    p.add_argument("--detach", action="store_true", help="leave everything running; `innkeeper stop` ends it")
    p.set_defaults(handler=_demo)

    p = sub.add_parser("stop", help="stop every cluster, the status service and supervisord")
    p.set_defaults(handler=_stop)

    p = sub.add_parser("status", help="every cluster and shard: state, latency, guilds, pid, uptime")
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    p.set_defaults(handler=_status)

    p = sub.add_parser("restart", help="restart the clusters (all at once, one, or rolling)")
    p.add_argument("cluster", nargs="?", type=int, default=None, help="only this cluster id")
    p.add_argument("--rolling", action="store_true", help="one cluster at a time, each READY before the next")
    p.set_defaults(handler=_restart)

    p = sub.add_parser("reshard", help="move to a new shard count without downtime",
                       description="Checks the identify budget, brings the new shard count up as a second "
                                   "generation of clusters beside the running one, switches every command over "
                                   "at one instant once it is READY, then stops the old generation. Both run "
                                   "(and use memory) meanwhile. See docs/operations.md, Resharding.")
    p.add_argument("--shards", type=_positive, default=None, help="new shard count (default: Discord's)")
    p.add_argument("--clusters", type=_positive, default=None, help="new cluster count")
    p.set_defaults(handler=_reshard)

    p = sub.add_parser("ctl", help="run supervisorctl against Innkeeper's supervisord",
                       description="For example: innkeeper ctl status; innkeeper ctl tail -f clusters:cluster-0")
    p.add_argument("args", nargs=argparse.REMAINDER, help="supervisorctl arguments")
    p.set_defaults(handler=_ctl)


async def _launch(args: argparse.Namespace, settings: Settings) -> int:
    """``innkeeper launch``: on SIGINT, SIGTERM or SIGHUP it stops waiting and leaves the clusters to supervisord.

    A launch hands the clusters to supervisord, which keeps them running after the command ends
    (that is its purpose: an SSH session that drops must not take the bot down). Interrupted, it
    never leaves a plan half applied, says what keeps running and how to stop it, and exits
    128 + the signal's number.
    """
    launcher = Launcher(settings)
    interrupt = asyncio.Event()
    got: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        got.append(sig)
        interrupt.set()

    with stop_signals(on_signal):
        try:
            await launcher.launch(shards=args.shards, clusters=args.clusters,
                                  shards_per_cluster=args.shards_per_cluster, wait=not args.no_wait,
                                  timeout=args.timeout, interrupt=interrupt)
        except LaunchInterrupted as exc:
            sig = got[0]
            if exc.applied:
                pid = await _supervisord_pid(launcher)
                launcher.out(f"{sig.name}: launch interrupted ({exc.message}); the clusters keep starting under "
                             f"supervisord (pid {pid}): `innkeeper status` shows them, `innkeeper stop` stops them")
            else:
                launcher.out(f"{sig.name}: launch interrupted before the plan reached supervisord: nothing changed")
            return 128 + int(sig)
    if got:  # the signal came once the launch had finished
        launcher.out(f"{got[0].name}: the launch had finished; the clusters run under supervisord")
    return 0


async def _supervisord_pid(launcher: Launcher) -> str:
    try:
        return str(await launcher.supervisor.pid())
    except SupervisorError:
        return "?"


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    if args.clusters > args.shards:
        raise UsageError(f"--clusters ({args.clusters}) cannot exceed --shards ({args.shards})")
    options = DemoOptions(guilds=args.guilds, shards=args.shards, clusters=args.clusters,
                          max_concurrency=args.max_concurrency, identify_window=args.identify_window,
                          port=args.port, detach=args.detach)
    return await run_demo(settings, options)


async def _stop(args: argparse.Namespace, settings: Settings) -> int:
    if await Launcher(settings).stop():
        print("stopped: every program and supervisord")
    else:
        print("supervisord is not running: nothing to stop")
    return 0


async def _restart(args: argparse.Namespace, settings: Settings) -> int:
    await Launcher(settings).restart(cluster=args.cluster, rolling=args.rolling)
    return 0


async def _reshard(args: argparse.Namespace, settings: Settings) -> int:
    await Resharder(Launcher(settings)).run(shards=args.shards, clusters=args.clusters)
    return 0


def _ctl(args: argparse.Namespace, settings: Settings) -> int:
    exe = os.path.join(os.path.dirname(sys.executable), "supervisorctl")
    env = {**os.environ, "INNKEEPER_RUN_DIR": str(settings.run_dir.resolve()), "INNKEEPER_PYTHON": sys.executable}
    os.execve(exe, [exe, "-c", str(CONF_PATH), *args.args], env)  # noqa: S606 - replaces this process
    return 1  # pragma: no cover


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def format_status(doc: StatusDoc, procs: dict[int, str] | None) -> str:
    """The ``innkeeper status`` table: one line per cluster, then one per shard."""
    lines = []
    reshard = doc.get("reshard")
    if reshard:
        at = reshard["switch_at"]
        lines.append(f"resharding {reshard['from_shards'] or '?'} → {reshard['to_shards'] or '?'} shards (generation "
                     f"{reshard['from_generation']} → {reshard['to_generation']}): {reshard['phase']}"
                     + (f", switch at {time.strftime('%H:%M:%S', time.localtime(at))}" if at else ""))
    lines.append(f"{'cluster':<11}{'state':<10}{'process':<10}{'pid':>8} {'uptime':>8} {'rss':>8} {'ev/s':>8}  shards")
    for c in doc["clusters"]:
        proc = (procs or {}).get(c["id"], "?" if procs is None else "-")
        rss = f"{c['rss_bytes'] / 1048576:.0f}M" if c["rss_bytes"] else "-"
        ready = sum(1 for s in c["shards"] if s["state"] == "READY")
        ids = format_shard_ids([s["id"] for s in c["shards"]]) if c["shards"] else "-"
        lines.append(f"cluster-{c['id']:<3}{c['state']:<10}{proc:<10}{c['pid'] or '-':>8} {_dur(c['uptime_s']):>8} "
                     f"{rss:>8} {c['events_per_s'] if c['events_per_s'] is not None else '-':>8}  "
                     f"{ready}/{len(c['shards'])} READY ({ids})"
                     + (f"  generation {c['generation']}" if reshard and c.get("generation") is not None else "")
                     + (f", handles {c['handles']}" if c.get("handles") not in (None, "all") else ""))
        if c["identify_blocked_reason"]:
            lines.append(f"    ! {c['identify_blocked_reason']}")
        guard = c.get("crash_guard")
        if guard:
            lines.append(f"    ! {guard['reason']}" + (f" (restart in {guard['restart_in_s']:g} s)"
                                                      if guard["restart_in_s"] is not None else ""))
        load = c.get("commands")
        if load:
            lines.append(f"    commands: {load['running']}/{load['max_running']} running, {load['queued']}/"
                         f"{load['max_queued']} waiting; since start {load['deferred']} deferred, {load['shed']} shed")
        for s in c["shards"]:
            latency = f"{s['latency_ms']:.0f}ms" if s["latency_ms"] is not None else "-"
            age = f"{s['last_event_age_s']:.1f}s" if s["last_event_age_s"] is not None else "-"
            lines.append(f"    shard {s['id']:<5}{s['state']:<13}latency {latency:>7}  guilds {s['guilds']:>6}"
                         f"  last event {age:>7}")
    lines.append(f"shard count {doc['shard_count'] or '?'}, max_concurrency {doc['max_concurrency'] or '?'}")
    advice = doc.get("auto_reshard")
    if advice:
        checked = time.strftime("%H:%M:%S", time.localtime(advice["checked_at"]))
        line = f"Discord recommends {advice['recommended']} shards (checked {checked})"
        if advice["target"]:
            line += {"advised": f": reshard to {advice['target']} (`innkeeper reshard --shards {advice['target']}`; "
                                "INNKEEPER_AUTO_RESHARD is off)",
                     "resharding": f": resharding to {advice['target']}"}.get(advice["action"], "")
        if advice["action"] == "failed":
            line += f": the last check or reshard failed: {advice['detail']}"
        lines.append(line)
    return "\n".join(lines)


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    launcher = Launcher(settings)
    async with launcher.redis() as client:
        plan, doc = await read_status(client, launcher.keys, stale_after_s=launcher.stale_after_s)
    procs: dict[int, str] | None
    try:
        procs = {cid: info["statename"] for cid, info in (await launcher._program_pids()).items()}
    except SupervisorUnavailable:
        procs = None
    h = health(doc, plan)
    if args.json:
        print(json.dumps({**doc, "supervisor": procs, "healthy": h.ok, "problems": list(h.problems),
                          "checked_at": time.time()}, indent=1))
    else:
        print(format_status(doc, procs))
        if procs is None:
            print("supervisord is not running on this host")
        print(("healthy: " if h.ok else "NOT healthy: ") + f"{h.ready}/{h.expected} shards READY"
              + "".join(f"\n  {p}" for p in h.problems[:20]))
    return 0 if h.ok else 1
