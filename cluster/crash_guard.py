"""The crash-loop guard: a supervisord event listener that restarts late deaths with back-off, up to a cap.

supervisord restarts a program that dies while it starts (``startsecs``) ``startretries`` times
and then marks it FATAL; a cluster that dies *later* (after READY) would be restarted at once,
forever, re-identifying each time. So the cluster programs run with ``autorestart=false``, and this
``[eventlistener:crashguard]`` (``supervisord.conf``) receives supervisord's
``PROCESS_STATE_EXITED`` events and, following :mod:`cluster.crash_policy`, starts the cluster
again over XML-RPC at once, then after 1, 2, 4 … s, or leaves it down past the cap, with the reason.

Why an event listener: supervisord stays the only supervisor (it spawns, stops, logs and keeps
``startsecs``/``startretries`` for early deaths); the guard only decides *when* to call
``startProcess``. It is itself a supervisord program (restarted if it dies), it needs no
long-running launcher (``innkeeper launch`` returns once the clusters are READY), and supervisord
buffers the events while it restarts. On start it looks at every cluster once, so a death it
missed is handled too.

The guard's records (:class:`~cluster.crash_policy.CrashRecord`) go to Redis (``Keys.crash_guard``)
for the status service, ``innkeeper status`` and the metrics; its log is ``run/logs/crash-guard.log``.
A restart goes through the cluster's identify queue like any start: it never spends the identify
budget's reserve (below it the shards wait, ``BLOCKED``, and a waiting cluster has not crashed).
"""

from __future__ import annotations

import argparse
import json
import logging
import select
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from innkeeper.logs import setup_logging
from innkeeper.settings import Settings
from ipc.keys import Keys

from .crash_policy import (
    GUARD_SETTINGS,
    RESTARTING,
    RUNNING,
    STOPPED,
    CrashPolicy,
    CrashRecord,
    on_crash,
    on_restarted,
    record_from_json,
)
from .plan import CLUSTERS_GROUP, is_clusters_group
from .render import EXPECTED_EXIT_CODES
from .supervisor import Faults, Supervisor, SupervisorError

__all__ = ("CrashGuard", "Control", "RecordStore", "SupervisorControl", "RedisRecordStore", "SETTINGS_USED",
           "serve", "main")

_log = logging.getLogger(__name__)

#: The settings the guard reads (``run/crash-guard-settings.json``): no token, no keys, no database.
SETTINGS_USED = GUARD_SETTINGS


class Control(Protocol):
    """The part of supervisord the guard drives."""

    def process(self, name: str) -> dict[str, Any] | None: ...

    def processes(self) -> list[dict[str, Any]]: ...

    def start(self, name: str) -> None: ...


class RecordStore(Protocol):
    def load(self) -> list[CrashRecord]: ...

    def save(self, record: CrashRecord) -> None: ...

    def delete(self, cluster: int) -> None: ...


def _cluster_id(group: str, name: str) -> int | None:
    """The cluster id of a program of any generation's group (ids never repeat across running generations)."""
    if not is_clusters_group(group) or not name.startswith("cluster-"):
        return None
    try:
        return int(name.split("-", 1)[1])
    except ValueError:
        return None


class CrashGuard:
    """Decides and schedules restarts; driven by supervisord's events and the clock.

    Parameters
    ----------
    policy:
        The cap and back-off.
    control:
        supervisord (:class:`SupervisorControl`), or a fake in tests.
    store:
        Where records go for status (:class:`RedisRecordStore`); failures are logged, never fatal.
    clock:
        Epoch seconds.
    """

    def __init__(self, policy: CrashPolicy, control: Control, store: RecordStore, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.control = control
        self.store = store
        self.clock = clock
        self.records: dict[int, CrashRecord] = {}
        #: The supervisord group of each cluster seen (``clusters``, or ``clusters-gN`` after a reshard).
        self.groups: dict[int, str] = {}
        #: Clusters this guard has just started: their RUNNING event is the guard's, not an operator's.
        self._starting: set[int] = set()
        self.shutting_down = False

    # --- events ---------------------------------------------------------------------------------
    def handle(self, event: str, payload: dict[str, str]) -> None:
        """One supervisord event (``PROCESS_STATE_*``, ``SUPERVISOR_STATE_CHANGE_STOPPING``)."""
        if event == "SUPERVISOR_STATE_CHANGE_STOPPING":
            self.shutting_down = True
            return
        cluster = _cluster_id(payload.get("groupname", ""), payload.get("processname", ""))
        if cluster is None:
            return
        self.groups[cluster] = payload["groupname"]
        if event == "PROCESS_STATE_EXITED" and payload.get("expected") == "0":
            self.on_crash(cluster)
        elif event == "PROCESS_STATE_RUNNING":
            self.on_running(cluster)
        elif event == "PROCESS_STATE_FATAL":
            self.on_fatal(cluster)

    def on_crash(self, cluster: int) -> None:
        """A late, unexpected death (RUNNING → EXITED with an exit code outside ``exitcodes``)."""
        info = self._info(cluster)
        exit_code = int(info["exitstatus"]) if info and info.get("exitstatus") is not None else None
        record = on_crash(self.policy, self.records.get(cluster), cluster, self.clock(), exit_code)
        self._set(record)
        level = logging.ERROR if record["state"] == STOPPED else logging.WARNING
        _log.log(level, "cluster-%d: %s", cluster, record["reason"],
                 extra={"cluster_id": cluster, "crashes": len(record["crashes"]), "exit_code": exit_code,
                        "guard_state": record["state"]})

    def on_running(self, cluster: int) -> None:
        if cluster in self._starting:
            self._starting.discard(cluster)
            return
        record = self.records.get(cluster)
        if record is not None and record["state"] in (STOPPED, RESTARTING):
            # an operator started it (`innkeeper restart N`, `ctl start`): a fresh history
            _log.info("cluster-%d was started by hand: its crash history starts again", cluster,
                      extra={"cluster_id": cluster})
            self.records.pop(cluster, None)
            self._call(self.store.delete, cluster)

    def on_fatal(self, cluster: int) -> None:
        """supervisord gave up starting it (it died within ``startsecs`` every time): say so, restart no more."""
        self._starting.discard(cluster)
        record = self.records.get(cluster)
        if record is None:
            return  # supervisord's own cap on early deaths, shown as FATAL: not a late death
        stopped: CrashRecord = {**record, "state": STOPPED, "restart_at": None,
                                "reason": f"{record['reason']}; then it died while starting every time "
                                          "(supervisord: FATAL); stopped"}
        self._set(stopped)
        _log.error("cluster-%d: %s", cluster, stopped["reason"], extra={"cluster_id": cluster})

    # --- the clock ------------------------------------------------------------------------------
    def next_due(self) -> float | None:
        due = [r["restart_at"] for r in self.records.values() if r["state"] == RESTARTING and r["restart_at"]]
        return min(due) if due else None

    def run_due(self) -> None:
        """Start every cluster whose delay has passed (and that is still down as the guard left it)."""
        if self.shutting_down:
            return
        now = self.clock()
        for cluster, record in list(self.records.items()):
            if record["state"] != RESTARTING or record["restart_at"] is None or record["restart_at"] > now:
                continue
            info = self._info(cluster)
            if info is None or info.get("statename") != "EXITED":
                # removed (a reshard), or started meanwhile by someone else: nothing to restart
                _log.info("cluster-%d is %s: no restart needed", cluster,
                          info.get("statename") if info else "gone", extra={"cluster_id": cluster})
                self.records.pop(cluster, None)
                self._call(self.store.delete, cluster)
                continue
            self._starting.add(cluster)
            try:
                self.control.start(self._program(cluster))
            except SupervisorError as exc:
                self._starting.discard(cluster)
                if exc.fault == Faults.SHUTDOWN_STATE:
                    self.shutting_down = True
                    return
                _log.error("cluster-%d: the restart failed: %s", cluster, exc, extra={"cluster_id": cluster})
                self.records.pop(cluster, None)
                self._call(self.store.delete, cluster)
                continue
            restarted = on_restarted(record)
            self._set(restarted)
            _log.warning("cluster-%d: %s", cluster, restarted["reason"],
                         extra={"cluster_id": cluster, "restarts": restarted["restarts"]})

    # --- start-up -------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Take the stored records back and handle a cluster that crashed while the guard was not listening."""
        for record in self._call(self.store.load) or ():
            self.records[record["cluster"]] = record
        for info in self.control.processes():
            cluster = _cluster_id(info.get("group", ""), info.get("name", ""))
            if cluster is None:
                continue
            self.groups[cluster] = info["group"]
            record = self.records.get(cluster)
            if info.get("statename") == "EXITED" and info.get("exitstatus") not in EXPECTED_EXIT_CODES:
                if record is None or record["state"] == RUNNING:
                    self.on_crash(cluster)  # it died while no guard listened
            elif info.get("statename") in ("STARTING", "RUNNING", "BACKOFF") and record is not None \
                    and record["state"] != RUNNING:
                self.records.pop(cluster, None)  # started by someone else meanwhile
                self._call(self.store.delete, cluster)

    # --- helpers --------------------------------------------------------------------------------
    def _program(self, cluster: int) -> str:
        return f"{self.groups.get(cluster, CLUSTERS_GROUP)}:cluster-{cluster}"

    def _info(self, cluster: int) -> dict[str, Any] | None:
        try:
            return self.control.process(self._program(cluster))
        except SupervisorError as exc:
            _log.warning("cannot read cluster-%d from supervisord: %s", cluster, exc)
            return None

    def _set(self, record: CrashRecord) -> None:
        self.records[record["cluster"]] = record
        self._call(self.store.save, record)

    @staticmethod
    def _call(func: Callable[..., Any], *args: Any) -> Any:
        try:
            return func(*args)
        except Exception as exc:  # noqa: BLE001 - Redis down: the guard still guards, status shows less
            _log.warning("crash-guard record store: %s", exc)
            return None


class SupervisorControl:
    """:class:`Control` over supervisord's XML-RPC socket."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def process(self, name: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = self.supervisor.call_sync("getProcessInfo", name)
        except SupervisorError as exc:
            if exc.fault == Faults.BAD_NAME:
                return None
            raise
        return info

    def processes(self) -> list[dict[str, Any]]:
        return list(self.supervisor.call_sync("getAllProcessInfo"))

    def start(self, name: str) -> None:
        self.supervisor.call_sync("startProcess", name, False)


class RedisRecordStore:
    """Records as JSON under ``Keys.crash_guard``; a stopped one stays until the cluster starts again."""

    def __init__(self, redis_url: str, keys: Keys, policy: CrashPolicy) -> None:
        import redis

        self.redis = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.keys = keys
        self.ttl_s = int(policy.window_s + policy.backoff_max_s) + 60

    def load(self) -> list[CrashRecord]:
        out: list[CrashRecord] = []
        for key in self.redis.scan_iter(match=self.keys.crash_guard_pattern(), count=100):
            raw = self.redis.get(key)
            record = record_from_json(_loads(raw)) if raw else None
            if record is not None:
                out.append(record)
        return out

    def save(self, record: CrashRecord) -> None:
        ttl = None if record["state"] == STOPPED else self.ttl_s
        self.redis.set(self.keys.crash_guard(record["cluster"]), json.dumps(record), ex=ttl)

    def delete(self, cluster: int) -> None:
        self.redis.delete(self.keys.crash_guard(cluster))


def _loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


# --- the event listener protocol ---------------------------------------------------------------------
def _parse(line: bytes) -> dict[str, str]:
    return dict(part.split(":", 1) for part in line.decode().split() if ":" in part)


def serve(guard: CrashGuard, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """supervisord's event listener protocol until stdin closes, with the guard's restarts in between.

    ``READY`` → one event (a header line, then ``len`` bytes) → ``RESULT 2\\nOK`` → ``READY`` … While
    waiting for an event, ``select`` wakes up when the next restart is due.
    """
    guard.reconcile()
    stdout.write(b"READY\n")
    stdout.flush()
    while True:
        due = guard.next_due()
        timeout = None if due is None else max(0.0, due - guard.clock())
        readable, _, _ = select.select([stdin], [], [], timeout)
        if readable:
            line = stdin.readline()
            if not line:
                return  # supervisord is gone
            header = _parse(line)
            payload = stdin.read(int(header.get("len", "0")))
            body = payload.split(b"\n", 1)[0]  # process events: one line of key:value
            try:
                guard.handle(header.get("eventname", ""), _parse(body))
            except Exception:  # noqa: BLE001 - one bad event must not end the guard
                _log.exception("crash guard: could not handle %s", header.get("eventname"))
            stdout.write(b"RESULT 2\nOK")
            stdout.write(b"READY\n")
            stdout.flush()
        guard.run_due()


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.crash_guard",
                                     description="supervisord event listener: restart late deaths with back-off")
    parser.add_argument("--settings-file", type=Path, required=True,
                        help="JSON object of environment variables (run/crash-guard-settings.json)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    settings = Settings.from_env(json.loads(args.settings_file.read_text()))
    setup_logging(settings.log_format, settings.log_level, role="crash-guard")  # stderr: stdout is the protocol
    policy = CrashPolicy.from_settings(settings)
    keys = Keys(settings.redis_prefix)
    guard = CrashGuard(policy, SupervisorControl(Supervisor(settings.run_dir)),
                       RedisRecordStore(settings.redis_url, keys, policy))
    _log.info("crash guard: restart after a late death with a delay from %g s to %g s; %d crashes in %g s "
              "leave a cluster down", policy.backoff_base_s, policy.backoff_max_s, policy.max_crashes,
              policy.window_s)
    serve(guard, sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
