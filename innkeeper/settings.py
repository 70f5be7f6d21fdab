"""Typed settings, loaded once from the environment.

Every process builds one :class:`Settings` at start-up with :meth:`Settings.from_env`. A value that
is missing or malformed raises :class:`~innkeeper.errors.ConfigError` naming the variable, and the
process stops there. Standard variables keep their usual names (``DISCORD_TOKEN``,
``DATABASE_URL``, ``REDIS_URL``, ``DISCORD_API_URL``); everything else is ``INNKEEPER_*``.

Secrets (the token, the status token, the encryption and IPC keys, passwords in URLs) never show in
the settings' ``repr`` or ``str``, nor in the errors that reject a malformed value.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from .errors import ConfigError, ErrorCode
from .redact import MASK, redact_url

__all__ = ("Settings", "PROJECT_ROOT")

PROJECT_ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")

_DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/innkeeper"
_DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# keyid=base64 of at least 32 bytes (43 characters), or the public development key "dev"
_SIGNING_KEY_RE = re.compile(r"^(dev|[A-Za-z0-9_-]{1,32}=[A-Za-z0-9+/_-]{43,}={0,2})$")


class _Env:
    """Reads typed values from a mapping, raising :class:`ConfigError` that names the variable."""

    __slots__ = ("env",)

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def as_str(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def opt_str(self, name: str) -> str | None:
        return self.raw(name)

    def _parse(self, name: str, default: T, parse: Callable[[str], T], what: str) -> T:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except ValueError:
            raise ConfigError(
                f"{name} must be {what}, got {raw!r}", code=ErrorCode.CONFIG_INVALID, variable=name
            ) from None

    def as_int(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._parse(name, default, int, "an integer")
        self._bounds(name, value, minimum, maximum)
        return value

    def opt_int(self, name: str, *, minimum: int | None = None) -> int | None:
        value: int | None = self._parse(name, None, int, "an integer")
        if value is not None:
            self._bounds(name, value, minimum, None)
        return value

    def as_float(self, name: str, default: float, *, minimum: float | None = None,
                 maximum: float | None = None) -> float:
        value = self._parse(name, default, float, "a number")
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{name} must be a finite number", variable=name)
        self._bounds(name, value, minimum, maximum)
        return value

    def as_bool(self, name: str, default: bool) -> bool:
        raw = self.raw(name)
        if raw is None:
            return default
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}", variable=name)

    def as_id_set(self, name: str) -> frozenset[int]:
        raw = self.raw(name)
        if raw is None:
            return frozenset()
        out: set[int] = set()
        for part in raw.replace(" ", "").split(","):
            if not part:
                continue
            if not part.isdigit():
                raise ConfigError(f"{name} must be a comma-separated list of Discord ids, got {part!r}",
                                  variable=name)
            out.add(int(part))
        return frozenset(out)

    def as_url(self, name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
        raw = self.raw(name) or default
        if raw is None:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.netloc:
            raise ConfigError(
                f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, "
                f"got {redact_url(raw)!r}",
                variable=name,
            )
        return raw

    def as_signing_keys(self, name: str) -> tuple[str, ...]:
        """``keyid=base64key,…`` entries (or ``dev``), checked for shape; the values are never echoed."""
        raw = self.raw(name)
        if raw is None:
            return ()
        entries = tuple(e.strip() for e in raw.split(",") if e.strip())
        for i, entry in enumerate(entries, 1):
            if not _SIGNING_KEY_RE.match(entry):
                raise ConfigError(f"{name} entry {i} is not keyid=base64key (a key id of 1-32 letters, digits, _ "
                                  "or -, and a key of at least 32 bytes: `innkeeper keygen ID` makes one)",
                                  variable=name)
        ids = [e.partition("=")[0] for e in entries]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"{name} names a key id twice", variable=name)
        return entries

    @staticmethod
    def _bounds(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}", variable=name)
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, got {value}", variable=name)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of every Innkeeper process.

    Attributes are documented next to the variable that sets them in ``docs/operations.md``.
    """

    # Standard variables
    discord_token: str | None = None
    api_url: str | None = None  # DISCORD_API_URL: None means real Discord
    database_url: str = _DEFAULT_DATABASE_URL
    redis_url: str = _DEFAULT_REDIS_URL
    # Redis namespacing
    redis_prefix: str = "innkeeper"
    # Logging
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    # The cluster process's event loop: uvloop (the default: about 5 % less CPU per command for 2.3 MiB
    # of RSS per cluster, docs/benchmarks.md, "Memory") or the standard library's asyncio
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    gc_freeze: bool = True  # INNKEEPER_GC_FREEZE: freeze the start-up heap out of the garbage collector's reach
    # Sharding and clusters
    shard_count: int | None = None
    clusters: int | None = None
    shards_per_cluster: int | None = None
    hosts: int = 1
    host_index: int = 0
    identify_window_s: float = 5.0
    identify_reserve: int = 10
    identify_margin_s: float = 0.1
    # Auto-reshard (cluster/auto_reshard.py): GET /gateway/bot every interval, and at once after a 4011
    auto_reshard: bool = True  # INNKEEPER_AUTO_RESHARD=false: only report when Discord recommends more shards
    auto_reshard_interval_s: float = 3600.0  # INNKEEPER_AUTO_RESHARD_INTERVAL
    # Heartbeats
    heartbeat_interval_s: float = 5.0
    heartbeat_ttl_s: float = 20.0
    zombie_after_s: float = 120.0
    #: A heartbeat ACK later than this (seconds) logs "Can't keep up" (discord.py's threshold: 10 s).
    gateway_behind_warn_s: float = 10.0
    # Crash-loop guard (cluster/crash_guard.py): restarts after a late death, with a growing delay, up to a cap
    crash_loop_max: int = 5
    crash_loop_window_s: float = 600.0
    crash_backoff_base_s: float = 1.0
    crash_backoff_max_s: float = 60.0
    # Status service and metrics
    status_host: str = "127.0.0.1"
    status_port: int = 8800
    status_token: str | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port_base: int = 9100
    # REST limits
    global_rate: int = 50
    shared_ratelimit: bool = True  # INNKEEPER_SHARED_RATELIMIT=false: discord.py's per-process limits only
    # Invalid-request guard (401/403/429 per 10 minutes; Discord bans an IP at 10,000)
    guard_soft: int = 5000  # INNKEEPER_GUARD_SOFT: delays start above this
    guard_hard: int = 9000  # INNKEEPER_GUARD_HARD: requests are refused from this
    guard_processes: int = 1  # INNKEEPER_GUARD_PROCESSES: processes sharing this host's IP (the launcher sets it)
    # Circuit breakers (per dependency: postgres, redis, discord_rest, http), see innkeeper/breakers.py
    breaker_threshold: int = 5  # INNKEEPER_BREAKER_THRESHOLD: failures in a row that open a breaker
    breaker_open_s: float = 5.0  # INNKEEPER_BREAKER_OPEN: seconds open before the first probe
    breaker_max_open_s: float = 60.0  # INNKEEPER_BREAKER_MAX_OPEN: the cap as failed probes double it
    # Shared state
    snapshot_interval_s: float = 300.0  # INNKEEPER_SNAPSHOT_INTERVAL: guild snapshots to Redis; 0 turns off
    resume_on_restart: bool = True  # INNKEEPER_RESUME_ON_RESTART: a restarted cluster RESUMEs saved sessions
    session_save_interval_s: float = 0.25  # INNKEEPER_SESSION_SAVE_INTERVAL: how stale a saved sequence may be
    session_ttl_s: float = 120.0  # INNKEEPER_SESSION_TTL: how long a saved session is tried after a stop
    malloc_trim_interval_s: float = 30.0  # INNKEEPER_MALLOC_TRIM_INTERVAL: freed heap back to the OS; 0 turns off
    # Database
    db_pool_min: int = 1
    db_pool_max: int = 10
    slow_query_ms: float = 250.0
    encryption_keys: tuple[str, ...] = ()
    pseudonym_key: str | None = None  # INNKEEPER_PSEUDONYM_KEY: keyid=base64key for the audit log's pseudonyms
    backup_dir: Path = PROJECT_ROOT / "backups"
    backup_keep: int = 7
    log_queries: bool = False  # INNKEEPER_LOG_QUERIES=1 logs every query
    # IPC signing
    ipc_keys: tuple[str, ...] = ()  # INNKEEPER_IPC_KEYS: the first signs, every one verifies
    ipc_max_age_s: float = 30.0  # INNKEEPER_IPC_MAX_AGE: older (or that far ahead) frames are dropped
    # Retention in days per table (0 keeps forever)
    retention_usage_days: int = 90
    retention_errors_days: int = 30
    retention_feedback_days: int = 180
    retention_reminders_days: int = 30
    retention_interval_s: float = 3600.0  # INNKEEPER_RETENTION_INTERVAL: the clusters' maintenance; 0 turns off
    # Reminders (shard/reminder_service.py)
    reminder_lease_s: float = 60.0  # INNKEEPER_REMINDER_LEASE: seconds a cluster's claim on a due reminder lasts
    # Bot behaviour
    default_prefix: str = "!"
    owner_ids: frozenset[int] = field(default_factory=frozenset)
    command_timeout_s: float = 10.0
    # Admission (shard/pipeline/admission.py): commands running at once, waiting, deferred, shed
    commands_max_running: int = 64  # INNKEEPER_COMMANDS_MAX_RUNNING
    commands_max_queued: int = 512  # INNKEEPER_COMMANDS_MAX_QUEUED: more are shed at once
    commands_max_queue_delay_s: float = 1.0  # INNKEEPER_COMMANDS_MAX_QUEUE_DELAY: a longer expected wait is shed
    commands_defer_after_s: float = 1.5  # INNKEEPER_COMMANDS_DEFER_AFTER: a waiting slash command's age at deferral
    commands_max_wait_s: float = 10.0  # INNKEEPER_COMMANDS_MAX_WAIT: a command waiting longer is shed
    reply_timeout_s: float = 5.0  # INNKEEPER_REPLY_TIMEOUT: a deferral or error reply gives up after this
    sync_commands: bool = True
    command_sync_retry_s: float = 5.0  # INNKEEPER_COMMAND_SYNC_RETRY: first retry of a failed sync (doubling to 10 min)
    automod_log_window_s: float = 10.0  # INNKEEPER_AUTOMOD_LOG_WINDOW: a guild's automod incidents per log notice
    # Files
    run_dir: Path = PROJECT_ROOT / "run"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``env`` (``os.environ`` by default).

        Raises
        ------
        ConfigError
            When a variable is malformed; the message names it.
        """
        e = _Env(os.environ if env is None else env)
        prefix = e.as_str("INNKEEPER_REDIS_PREFIX", "innkeeper")
        if not _PREFIX_RE.match(prefix):
            raise ConfigError(
                "INNKEEPER_REDIS_PREFIX must be 1-64 characters of letters, digits and _.:-",
                variable="INNKEEPER_REDIS_PREFIX",
            )
        log_format = e.as_str("INNKEEPER_LOG_FORMAT", "json").lower()
        if log_format not in ("json", "text"):
            raise ConfigError("INNKEEPER_LOG_FORMAT must be json or text", variable="INNKEEPER_LOG_FORMAT")
        log_level = e.as_str("INNKEEPER_LOG_LEVEL", "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError("INNKEEPER_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL",
                              variable="INNKEEPER_LOG_LEVEL")
        event_loop = e.as_str("INNKEEPER_EVENT_LOOP", "uvloop").lower()
        if event_loop not in ("uvloop", "asyncio"):
            raise ConfigError("INNKEEPER_EVENT_LOOP must be uvloop or asyncio", variable="INNKEEPER_EVENT_LOOP")
        hosts = e.as_int("INNKEEPER_HOSTS", 1, minimum=1)
        host_index = e.as_int("INNKEEPER_HOST_INDEX", 0, minimum=0)
        if host_index >= hosts:
            raise ConfigError(f"INNKEEPER_HOST_INDEX must be below INNKEEPER_HOSTS ({hosts})",
                              variable="INNKEEPER_HOST_INDEX")
        keys_raw = e.opt_str("INNKEEPER_ENCRYPTION_KEYS")
        encryption_keys = tuple(k for k in (keys_raw or "").split(",") if k)
        pool_min = e.as_int("INNKEEPER_DB_POOL_MIN", 1, minimum=0)
        pool_max = e.as_int("INNKEEPER_DB_POOL_MAX", 10, minimum=1)
        if pool_max < pool_min:
            raise ConfigError("INNKEEPER_DB_POOL_MAX must be at least INNKEEPER_DB_POOL_MIN",
                              variable="INNKEEPER_DB_POOL_MAX")
        prefix_cmd = e.as_str("INNKEEPER_DEFAULT_PREFIX", "!")
        if len(prefix_cmd) > 16:
            raise ConfigError("INNKEEPER_DEFAULT_PREFIX must be at most 16 characters",
                              variable="INNKEEPER_DEFAULT_PREFIX")
        api_url = e.as_url("DISCORD_API_URL", None, ("http", "https"))
        guard_hard = e.as_int("INNKEEPER_GUARD_HARD", 9000, minimum=2, maximum=9999)
        # by default delays start where they do at the defaults: 5/9 of the way to the hard limit
        guard_soft = e.as_int("INNKEEPER_GUARD_SOFT", 5000 if guard_hard > 5000 else max(1, guard_hard * 5 // 9),
                              minimum=1)
        if guard_soft >= guard_hard:
            raise ConfigError("INNKEEPER_GUARD_SOFT must be below INNKEEPER_GUARD_HARD",
                              variable="INNKEEPER_GUARD_SOFT")
        return cls(
            discord_token=e.opt_str("DISCORD_TOKEN"),
            api_url=api_url.rstrip("/") if api_url else None,
            database_url=e.as_url("DATABASE_URL", _DEFAULT_DATABASE_URL, ("postgresql", "postgres")) or "",
            redis_url=e.as_url("REDIS_URL", _DEFAULT_REDIS_URL, ("redis", "rediss", "unix")) or "",
            redis_prefix=prefix,
            log_format=log_format,  # type: ignore[arg-type]
            log_level=log_level,
            event_loop=event_loop,  # type: ignore[arg-type]
            gc_freeze=e.as_bool("INNKEEPER_GC_FREEZE", True),
            shard_count=e.opt_int("INNKEEPER_SHARD_COUNT", minimum=1),
            clusters=e.opt_int("INNKEEPER_CLUSTERS", minimum=1),
            shards_per_cluster=e.opt_int("INNKEEPER_SHARDS_PER_CLUSTER", minimum=1),
            hosts=hosts,
            host_index=host_index,
            identify_window_s=e.as_float("INNKEEPER_IDENTIFY_WINDOW", 5.0, minimum=0.01),
            identify_reserve=e.as_int("INNKEEPER_IDENTIFY_RESERVE", 10, minimum=0),
            identify_margin_s=e.as_float("INNKEEPER_IDENTIFY_MARGIN", 0.1, minimum=0.0),
            auto_reshard=e.as_bool("INNKEEPER_AUTO_RESHARD", True),
            auto_reshard_interval_s=e.as_float("INNKEEPER_AUTO_RESHARD_INTERVAL", 3600.0, minimum=1.0,
                                               maximum=7 * 86400.0),
            heartbeat_interval_s=e.as_float("INNKEEPER_HEARTBEAT_INTERVAL", 5.0, minimum=0.1),
            heartbeat_ttl_s=e.as_float("INNKEEPER_HEARTBEAT_TTL", 20.0, minimum=0.5),
            zombie_after_s=e.as_float("INNKEEPER_ZOMBIE_AFTER", 120.0, minimum=1.0),
            gateway_behind_warn_s=e.as_float("INNKEEPER_GATEWAY_BEHIND_WARN", 10.0, minimum=0.001, maximum=3600.0),
            crash_loop_max=e.as_int("INNKEEPER_CRASH_LOOP_MAX", 5, minimum=1, maximum=1000),
            crash_loop_window_s=e.as_float("INNKEEPER_CRASH_LOOP_WINDOW", 600.0, minimum=1.0, maximum=86400.0),
            crash_backoff_base_s=e.as_float("INNKEEPER_CRASH_BACKOFF_BASE", 1.0, minimum=0.0, maximum=3600.0),
            crash_backoff_max_s=e.as_float("INNKEEPER_CRASH_BACKOFF_MAX", 60.0, minimum=0.0, maximum=86400.0),
            status_host=e.as_str("INNKEEPER_STATUS_HOST", "127.0.0.1"),
            status_port=e.as_int("INNKEEPER_STATUS_PORT", 8800, minimum=0, maximum=65535),
            status_token=e.opt_str("INNKEEPER_STATUS_TOKEN"),
            metrics_host=e.as_str("INNKEEPER_METRICS_HOST", "127.0.0.1"),
            metrics_port_base=e.as_int("INNKEEPER_METRICS_PORT_BASE", 9100, minimum=0, maximum=65535),
            global_rate=e.as_int("INNKEEPER_GLOBAL_RATE", 50, minimum=1),
            shared_ratelimit=e.as_bool("INNKEEPER_SHARED_RATELIMIT", True),
            guard_soft=guard_soft,
            guard_hard=guard_hard,
            guard_processes=e.as_int("INNKEEPER_GUARD_PROCESSES", 1, minimum=1, maximum=1000),
            breaker_threshold=e.as_int("INNKEEPER_BREAKER_THRESHOLD", 5, minimum=1, maximum=1000),
            breaker_open_s=e.as_float("INNKEEPER_BREAKER_OPEN", 5.0, minimum=0.05, maximum=3600.0),
            breaker_max_open_s=e.as_float("INNKEEPER_BREAKER_MAX_OPEN", 60.0, minimum=0.05, maximum=3600.0),
            snapshot_interval_s=e.as_float("INNKEEPER_SNAPSHOT_INTERVAL", 300.0, minimum=0.0),
            resume_on_restart=e.as_bool("INNKEEPER_RESUME_ON_RESTART", True),
            session_save_interval_s=e.as_float("INNKEEPER_SESSION_SAVE_INTERVAL", 0.25, minimum=0.05,
                                               maximum=10.0),
            session_ttl_s=e.as_float("INNKEEPER_SESSION_TTL", 120.0, minimum=1.0, maximum=3600.0),
            malloc_trim_interval_s=e.as_float("INNKEEPER_MALLOC_TRIM_INTERVAL", 30.0, minimum=0.0),
            db_pool_min=pool_min,
            db_pool_max=pool_max,
            slow_query_ms=e.as_float("INNKEEPER_SLOW_QUERY_MS", 250.0, minimum=0.0),
            encryption_keys=encryption_keys,
            pseudonym_key=e.opt_str("INNKEEPER_PSEUDONYM_KEY"),
            backup_dir=Path(e.as_str("INNKEEPER_BACKUP_DIR", str(PROJECT_ROOT / "backups"))),
            backup_keep=e.as_int("INNKEEPER_BACKUP_KEEP", 7, minimum=1),
            log_queries=e.as_bool("INNKEEPER_LOG_QUERIES", False),
            ipc_keys=e.as_signing_keys("INNKEEPER_IPC_KEYS"),
            ipc_max_age_s=e.as_float("INNKEEPER_IPC_MAX_AGE", 30.0, minimum=1.0, maximum=3600.0),
            retention_usage_days=e.as_int("INNKEEPER_RETENTION_USAGE_DAYS", 90, minimum=0),
            retention_errors_days=e.as_int("INNKEEPER_RETENTION_ERRORS_DAYS", 30, minimum=0),
            retention_feedback_days=e.as_int("INNKEEPER_RETENTION_FEEDBACK_DAYS", 180, minimum=0),
            retention_reminders_days=e.as_int("INNKEEPER_RETENTION_REMINDERS_DAYS", 30, minimum=0),
            retention_interval_s=e.as_float("INNKEEPER_RETENTION_INTERVAL", 3600.0, minimum=0.0),
            reminder_lease_s=e.as_float("INNKEEPER_REMINDER_LEASE", 60.0, minimum=1.0, maximum=3600.0),
            default_prefix=prefix_cmd,
            owner_ids=e.as_id_set("INNKEEPER_OWNER_IDS"),
            command_timeout_s=e.as_float("INNKEEPER_COMMAND_TIMEOUT", 10.0, minimum=0.1),
            commands_max_running=e.as_int("INNKEEPER_COMMANDS_MAX_RUNNING", 64, minimum=1, maximum=100_000),
            commands_max_queued=e.as_int("INNKEEPER_COMMANDS_MAX_QUEUED", 512, minimum=0, maximum=1_000_000),
            commands_max_queue_delay_s=e.as_float("INNKEEPER_COMMANDS_MAX_QUEUE_DELAY", 1.0, minimum=0.01,
                                                  maximum=900.0),
            commands_defer_after_s=e.as_float("INNKEEPER_COMMANDS_DEFER_AFTER", 1.5, minimum=0.05, maximum=2.5),
            commands_max_wait_s=e.as_float("INNKEEPER_COMMANDS_MAX_WAIT", 10.0, minimum=0.1, maximum=900.0),
            reply_timeout_s=e.as_float("INNKEEPER_REPLY_TIMEOUT", 5.0, minimum=0.1, maximum=60.0),
            sync_commands=e.as_bool("INNKEEPER_SYNC_COMMANDS", True),
            command_sync_retry_s=e.as_float("INNKEEPER_COMMAND_SYNC_RETRY", 5.0, minimum=0.05, maximum=600.0),
            automod_log_window_s=e.as_float("INNKEEPER_AUTOMOD_LOG_WINDOW", 10.0, minimum=0.1, maximum=3600.0),
            run_dir=Path(e.as_str("INNKEEPER_RUN_DIR", str(PROJECT_ROOT / "run"))),
        )

    @property
    def uses_local_simulator(self) -> bool:
        """True when ``DISCORD_API_URL`` points at this machine (the simulator), never at Discord.

        Loopback hosts only (``localhost``, ``127.0.0.0/8``, ``::1``): what the development-only
        settings (the public ``dev`` encryption key) are allowed with.
        """
        if not self.api_url:
            return False
        host = urlsplit(self.api_url).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def require_token(self) -> str:
        """Return ``DISCORD_TOKEN`` or raise a :class:`ConfigError` that names it."""
        if not self.discord_token:
            raise ConfigError("DISCORD_TOKEN is not set", code=ErrorCode.CONFIG_MISSING,
                              variable="DISCORD_TOKEN")
        return self.discord_token

    def require_ipc_keys(self) -> tuple[str, ...]:
        """Return ``INNKEEPER_IPC_KEYS`` or raise a :class:`ConfigError` that names it."""
        if not self.ipc_keys:
            raise ConfigError("INNKEEPER_IPC_KEYS is not set: every process on the IPC bus signs its frames with "
                              "it; generate one with `innkeeper keygen ipc1` and give every process the same value "
                              "(INNKEEPER_IPC_KEYS=dev selects a public key, for local development only)",
                              code=ErrorCode.CONFIG_MISSING, variable="INNKEEPER_IPC_KEYS")
        return self.ipc_keys

    @staticmethod
    def variable(name: str) -> str:
        """The environment variable that sets the field ``name`` (``redis_url`` → ``REDIS_URL``)."""
        return _STANDARD_NAMES.get(name) or "INNKEEPER_" + _ENV_NAME.get(name, name).upper()

    @classmethod
    def variables(cls) -> frozenset[str]:
        """Every environment variable the settings read."""
        return frozenset(cls.variable(f.name) for f in fields(cls))

    def as_env(self, only: Collection[str] | None = None) -> dict[str, str]:
        """Render the settings back into environment variables (for child processes).

        Parameters
        ----------
        only:
            Field names to render (a process gets what it uses and nothing more); all when None.
        """
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (only is not None and f.name not in only):
                continue
            var = self.variable(f.name)
            if isinstance(value, frozenset):
                out[var] = ",".join(str(v) for v in sorted(value))
            elif isinstance(value, tuple):
                out[var] = ",".join(value)
            else:
                out[var] = str(value)
        return out

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRETS and value:
                value = MASK
            elif f.name in _URLS and isinstance(value, str):
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__


#: Fields whose values are secrets: shown as ``***`` when set.
_SECRETS = frozenset({"discord_token", "status_token", "encryption_keys", "ipc_keys", "pseudonym_key"})
#: Fields holding URLs that may carry a password.
_URLS = frozenset({"database_url", "redis_url", "api_url"})
_STANDARD_NAMES = {
    "discord_token": "DISCORD_TOKEN", "api_url": "DISCORD_API_URL", "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
}


_ENV_NAME = {
    "identify_window_s": "identify_window",
    "identify_margin_s": "identify_margin",
    "auto_reshard_interval_s": "auto_reshard_interval",
    "heartbeat_interval_s": "heartbeat_interval",
    "heartbeat_ttl_s": "heartbeat_ttl",
    "zombie_after_s": "zombie_after",
    "gateway_behind_warn_s": "gateway_behind_warn",
    "crash_loop_window_s": "crash_loop_window",
    "crash_backoff_base_s": "crash_backoff_base",
    "crash_backoff_max_s": "crash_backoff_max",
    "command_timeout_s": "command_timeout",
    "commands_defer_after_s": "commands_defer_after",
    "commands_max_queue_delay_s": "commands_max_queue_delay",
    "commands_max_wait_s": "commands_max_wait",
    "reply_timeout_s": "reply_timeout",
    "breaker_open_s": "breaker_open",
    "breaker_max_open_s": "breaker_max_open",
    "snapshot_interval_s": "snapshot_interval",
    "session_save_interval_s": "session_save_interval",
    "session_ttl_s": "session_ttl",
    "malloc_trim_interval_s": "malloc_trim_interval",
    "retention_interval_s": "retention_interval",
    "reminder_lease_s": "reminder_lease",
    "ipc_max_age_s": "ipc_max_age",
    "automod_log_window_s": "automod_log_window",
    "command_sync_retry_s": "command_sync_retry",
}
