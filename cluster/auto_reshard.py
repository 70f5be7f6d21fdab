"""The auto-reshard helper: ``GET /gateway/bot`` every ``INNKEEPER_AUTO_RESHARD_INTERVAL``, and at once on a 4011.

``innkeeper launch`` returns once the clusters are READY, so the periodic check cannot live in the
launcher: like the crash-loop guard it is a supervised program (``[program:autoreshard]``,
``run/auto-reshard.conf``, rendered by the launcher with the clusters' settings, since a reshard
renders cluster programs). Each check compares Discord's recommended shard count with the plan in
Redis (:func:`decide`) and writes what it found (:mod:`ipc.gateway_advice`) for the status service,
``innkeeper status`` and the metrics. When Discord recommends more shards than run, it reshards
without downtime (:mod:`cluster.reshard`: the identify budget check, the new generation beside the
old one, the switch); with ``INNKEEPER_AUTO_RESHARD=false`` it only reports.

A cluster whose gateway closes with 4011 (sharding required: a shard holds too many guilds) exits
for good (78) and records the close in Redis before it does; the helper reads that record every
second and checks at once. If Discord then still recommends no more shards than run, the helper
doubles the shard count: the running one is refused by Discord.

It never reshards down: fewer shards than run is never urgent, and an operator decides that with
``innkeeper reshard``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from innkeeper.errors import ConfigError, InnkeeperError
from innkeeper.logs import setup_logging
from innkeeper.settings import Settings
from ipc.gateway_advice import GatewayAdvice, read_advice, read_sharding_required, write_advice

from .launcher import Launcher, fetch_gateway
from .reshard import Resharder
from .state import load_plan

__all__ = ("decide", "AutoReshard", "main")

_log = logging.getLogger(__name__)

#: How often the 4011 record is read between periodic checks.
WATCH_S = 1.0


def decide(recommended: int, running: int | None, *, sharding_required: bool = False) -> int | None:
    """The shard count to reshard to, or None to keep the plan.

    More shards when Discord recommends more than run; after a 4011 (Discord refused a shard for
    holding too many guilds) at least twice as many as run, whatever the recommendation says.
    Never fewer.
    """
    if running is None:
        return None
    if recommended > running:
        return recommended
    if sharding_required:
        return running * 2
    return None


class AutoReshard:
    """One helper process's checks (see the module docstring).

    Parameters
    ----------
    launcher:
        Reads the plan, and reshards through :class:`~cluster.reshard.Resharder`.
    clock:
        Unix seconds.
    """

    def __init__(self, launcher: Launcher, *, clock: Callable[[], float] = time.time) -> None:
        self.launcher = launcher
        self.settings = launcher.settings
        self.clock = clock
        #: Time of the last 4011 report acted on.
        self.handled_4011 = 0.0

    async def check(self, required: dict[str, Any] | None = None) -> GatewayAdvice:
        """Ask Discord, compare, reshard (or only report), and record the advice."""
        s = self.settings
        launcher = self.launcher
        detail = (f"cluster-{required.get('cluster')} closed with 4011 (sharding required)"
                  if required is not None else "")
        try:
            gateway = await fetch_gateway(s)
        except InnkeeperError as exc:
            _log.warning("cannot ask GET /gateway/bot: %s", exc.message)
            async with launcher.redis() as client:
                last = await read_advice(client, launcher.keys)
                advice = GatewayAdvice(last.recommended if last else 0, last.running if last else None, None,
                                       "failed", s.auto_reshard, self.clock(), f"GET /gateway/bot: {exc.message}")
                await write_advice(client, launcher.keys, advice)
            return advice
        async with launcher.redis() as client:
            current = await load_plan(client, launcher.keys)
            running = current.shard_count if current is not None else None
            target = decide(gateway.shards, running, sharding_required=required is not None)
            action = "none" if target is None else "advised" if not s.auto_reshard else "resharding"
            if target is not None:
                why = detail or f"Discord recommends {gateway.shards} shards, {running} run"
                _log.warning("%s: %s", why, f"resharding to {target}" if s.auto_reshard else
                             f"INNKEEPER_AUTO_RESHARD is off: run `innkeeper reshard --shards {target}`")
                detail = why
            advice = GatewayAdvice(gateway.shards, running, target, action, s.auto_reshard, self.clock(), detail)
            await write_advice(client, launcher.keys, advice)
        if action != "resharding" or target is None:
            return advice
        try:
            done = await Resharder(launcher).run(shards=target)
        except InnkeeperError as exc:
            _log.error("the auto-reshard to %d shards failed: %s", target, exc.message,
                       extra={"error_code": exc.code.value})
            advice = GatewayAdvice(gateway.shards, running, target, "failed", True, self.clock(),
                                   f"[{exc.code.value}] {exc.message}")
        else:
            advice = GatewayAdvice(gateway.shards, done.shard_count, None, "resharded", True, self.clock(),
                                   f"{detail}: resharded {running} → {done.shard_count} shards")
        async with launcher.redis() as client:
            await write_advice(client, launcher.keys, advice)
        return advice

    async def pending_4011(self) -> dict[str, Any] | None:
        """A 4011 reported since the last one acted on, if any."""
        async with self.launcher.redis() as client:
            required = await read_sharding_required(client, self.launcher.keys)
        if required is None or float(required["at"]) <= self.handled_4011:
            return None
        return required

    async def run(self, stop: asyncio.Event) -> None:
        """Check now, then every interval, and at once after a 4011, until ``stop`` is set."""
        next_check = 0.0
        async with self.launcher.redis() as client:  # a 4011 before the last check was seen by it
            last = await read_advice(client, self.launcher.keys)
        self.handled_4011 = last.checked_at if last is not None else 0.0
        while not stop.is_set():
            required = None
            try:
                required = await self.pending_4011()
                if required is not None or self.clock() >= next_check:
                    if required is not None:
                        self.handled_4011 = float(required["at"])
                    await self.check(required)
                    next_check = self.clock() + self.settings.auto_reshard_interval_s
            except InnkeeperError as exc:  # Redis down, a reshard already running…: the next round retries
                _log.warning("auto-reshard check failed: %s", exc.message)
            except Exception:
                _log.exception("auto-reshard check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=WATCH_S)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cluster.auto_reshard``: run until SIGTERM (supervisord's stop)."""
    argparse.ArgumentParser(prog="python -m cluster.auto_reshard",
                            description="Check Discord's recommended shard count and reshard when it grows."
                            ).parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"auto-reshard: error: [{exc.code.value}] {exc.message}", file=sys.stderr)
        return 78
    setup_logging(settings.log_format, settings.log_level, role="auto-reshard")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        _log.info("auto-reshard: checking GET /gateway/bot every %g s (%s)", settings.auto_reshard_interval_s,
                  "resharding when Discord recommends more shards" if settings.auto_reshard else "reporting only")
        await AutoReshard(Launcher(settings, manage_services=False)).run(stop)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
