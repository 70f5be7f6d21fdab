"""``python -m shard``: run one cluster's bot.

Examples
--------
``python -m shard --cluster 2 --shard-ids 8-11 --shard-count 16 --max-concurrency 4 --generation 0``
``python -m shard --shard-ids 0,1 --shard-count 2``

The launcher passes all five (``deploy/cluster.conf.tmpl``); ``--generation`` tells a cluster which
generation it belongs to while a zero-downtime reshard runs two side by side (:mod:`shard.handover`).
Run by hand without ``--shard-count``, the process asks ``GET /gateway/bot`` once for the shard
count and Discord's ``max_concurrency``; without ``--max-concurrency`` it reads the identify budget
the launcher stored in Redis (or assumes 1, the slowest safe rate).

On a cold start a cluster whose first identify round is far off waits before it imports anything
heavy (:mod:`shard.cold_start`), so that the first round starts sooner.

Exit codes: 0 after a clean shutdown, 1 on an unexpected failure, 2 on bad usage, and 78
(``EX_CONFIG``) when retrying cannot help: a bad token, a fatal gateway close (4004, 4010-4014) or
bad configuration. supervisord treats 78 as final instead of restarting in a loop. A 4011 close
(sharding required) is recorded in Redis first, for the auto-reshard helper to act on at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from innkeeper.errors import ConfigError, InnkeeperError
from innkeeper.logs import setup_logging
from innkeeper.settings import Settings

__all__ = ("main", "parse_shard_ids", "loop_factory", "EXIT_FATAL")

_log = logging.getLogger("shard")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_FATAL = 0, 1, 2, 78
_FATAL_CLOSE_CODES = frozenset({4004, 4010, 4011, 4012, 4013, 4014})
#: "Sharding required": a shard of this count holds too many guilds.
SHARDING_REQUIRED = 4011


def parse_shard_ids(text: str) -> list[int]:
    """Parse ``"0,1,5-7"`` into ``[0, 1, 5, 6, 7]``; raise ``ValueError`` on anything else."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo_s, hi_s = part.split("-", 1)
            lo, hi = int(lo_s), int(hi_s)
            if lo < 0 or hi < lo:
                raise ValueError(f"bad shard range {part!r}")
            ids.extend(range(lo, hi + 1))
        else:
            value = int(part)
            if value < 0:
                raise ValueError(f"bad shard id {part!r}")
            ids.append(value)
    if not ids:
        raise ValueError("no shard ids given")
    if len(set(ids)) != len(ids):
        raise ValueError("shard ids repeat")
    return sorted(ids)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop constructor ``INNKEEPER_EVENT_LOOP`` names (``uvloop``, the default, or ``asyncio``).

    uvloop's loop runs the same asyncio code with its I/O, callbacks and timers in C. It is imported
    only when chosen: it costs a cluster 2.3 MiB of RSS (its library, its loop, four libuv worker
    threads) for about 5 % less CPU per command and nothing measurable on plain messages
    (docs/benchmarks.md, "Memory").
    """
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shard", description="Run one cluster of the bot.")
    parser.add_argument("--cluster", type=int, default=0, help="this cluster's id (default 0)")
    parser.add_argument("--shard-ids", default=None, help="shards to run, e.g. 0,1 or 8-15 (default: all)")
    parser.add_argument("--shard-count", type=int, default=None,
                        help="total shard count (default: ask GET /gateway/bot)")
    parser.add_argument("--max-concurrency", type=int, default=None,
                        help="Discord's max_concurrency (default: the stored identify budget's, or /gateway/bot's)")
    parser.add_argument("--generation", type=int, default=0,
                        help="this cluster's generation (a zero-downtime reshard runs two side by side; default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        shard_ids = parse_shard_ids(args.shard_ids) if args.shard_ids else None
    except ValueError as exc:
        parser.error(f"--shard-ids: {exc}")
    if args.cluster < 0:
        parser.error("--cluster must be 0 or more")
    if args.shard_count is not None:
        if args.shard_count < 1:
            parser.error("--shard-count must be at least 1")
        if shard_ids and max(shard_ids) >= args.shard_count:
            parser.error(f"--shard-ids must be below --shard-count ({args.shard_count})")
    elif shard_ids is not None:
        parser.error("--shard-ids needs --shard-count")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        parser.error("--max-concurrency must be at least 1")
    if args.generation < 0:
        parser.error("--generation must be 0 or more")

    try:
        settings = Settings.from_env()
        setup_logging(settings.log_format, settings.log_level, role=f"cluster-{args.cluster}")
        token = settings.require_token()
    except ConfigError as exc:
        print(f"shard: error: [{exc.code.value}] {exc.message}", file=sys.stderr)
        return EXIT_FATAL

    if shard_ids is not None and args.max_concurrency is not None:
        from ipc.keys import Keys

        from .cold_start import wait_for_round

        wait_for_round(settings.redis_url, Keys(settings.redis_prefix), shard_ids, args.max_concurrency,
                       window_s=settings.identify_window_s, resume=settings.resume_on_restart)

    import discord  # after the wait: the imports are most of a cluster's start-up

    from .assembly import run_cluster
    from .context import ClusterContext

    async def run() -> BaseException | None:
        ctx = ClusterContext.create(settings, cluster_id=args.cluster, shard_ids=shard_ids,
                                    shard_count=args.shard_count, max_concurrency=args.max_concurrency,
                                    generation=args.generation)
        bot = await run_cluster(ctx, token)
        return bot.fatal_error

    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            fatal = runner.run(run())
    except discord.LoginFailure as exc:
        _log.critical("login failed: the token was rejected (%s); not retrying", exc)
        return EXIT_FATAL
    except discord.ConnectionClosed as exc:
        if exc.code == SHARDING_REQUIRED:  # the auto-reshard helper checks at once (cluster/auto_reshard.py)
            from ipc.gateway_advice import report_sharding_required
            from ipc.keys import Keys

            report_sharding_required(settings.redis_url, Keys(settings.redis_prefix), args.cluster, exc.shard_id)
        if exc.code in _FATAL_CLOSE_CODES:
            _log.critical("gateway closed with fatal code %s (%s); not retrying", exc.code, exc.reason)
            return EXIT_FATAL
        _log.exception("gateway connection closed")
        return EXIT_FAILURE
    except discord.PrivilegedIntentsRequired as exc:
        _log.critical("privileged intents are not enabled for this bot: %s", exc)
        return EXIT_FATAL
    except InnkeeperError as exc:
        _log.critical("cluster stopped: %s", exc, extra={"error_code": exc.code.value, **exc.context})
        return EXIT_FATAL if isinstance(exc, ConfigError) else EXIT_FAILURE
    except Exception:
        _log.exception("cluster crashed")
        return EXIT_FAILURE
    return EXIT_FAILURE if fatal is not None else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
