"""supervisord, driven over its XML-RPC interface on the unix socket under the run directory.

Blocking XML-RPC calls run in a thread (one fresh connection per call, so calls from several
threads never share one), which keeps the launcher's event loop responsive. Faults become
:class:`SupervisorError` with the fault's name; a socket that does not answer becomes
:class:`SupervisorUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import Faults, SupervisorTransport

from innkeeper.errors import ErrorCode, InnkeeperError
from innkeeper.settings import PROJECT_ROOT, Settings

__all__ = ("Supervisor", "SupervisorError", "SupervisorUnavailable", "RUNNING_STATES", "Faults", "CONF_PATH",
           "CRASH_GUARD", "daemon_environment")

_log = logging.getLogger(__name__)

#: The root supervisord configuration.
CONF_PATH = PROJECT_ROOT / "supervisord.conf"
#: The crash-loop guard's event listener (``[eventlistener:crashguard]`` in ``supervisord.conf``).
CRASH_GUARD = "crashguard"
#: Process states in which the program runs or is about to.
RUNNING_STATES = frozenset({"STARTING", "RUNNING", "BACKOFF"})
_MAX_SOCKET_PATH = 100


class SupervisorError(InnkeeperError):
    """supervisord answered with a fault."""

    default_code = ErrorCode.SUPERVISOR

    def __init__(self, message: str, *, fault: int | None = None, **context: Any) -> None:
        super().__init__(message, fault=fault, **context)
        self.fault = fault


class SupervisorUnavailable(SupervisorError):
    """Nothing answers on supervisord's socket."""


def daemon_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without any variable :class:`~innkeeper.settings.Settings` reads.

    What supervisord runs with: every program inherits it, so the token, the keys and the URLs
    must not be in it. The clusters get their settings in their program files, the status
    service in ``status-settings.json``.
    """
    drop = Settings.variables()
    return {k: v for k, v in environ.items() if k not in drop}


def _fault_name(code: int) -> str:
    for name, value in vars(Faults).items():
        if value == code and name.isupper():
            return str(name)
    return str(code)


class Supervisor:
    """A client of one supervisord.

    Parameters
    ----------
    run_dir:
        The run directory (``INNKEEPER_RUN_DIR``): the socket is ``run_dir/supervisor.sock``.
    conf:
        The root configuration file (``supervisord.conf`` at the project root).
    """

    __slots__ = ("run_dir", "conf", "socket_path")

    def __init__(self, run_dir: Path, conf: Path = CONF_PATH) -> None:
        self.run_dir = run_dir.resolve()
        self.conf = conf
        self.socket_path = self.run_dir / "supervisor.sock"
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            raise SupervisorError(
                f"the run directory path is too long for a unix socket ({self.socket_path}); "
                "set INNKEEPER_RUN_DIR to a shorter path", code=ErrorCode.CONFIG_INVALID)

    # --- raw calls ------------------------------------------------------------------------------
    def call_sync(self, method: str, *args: Any) -> Any:
        """Call ``supervisor.<method>`` (or ``system.<method>`` when the name has a dot), blocking."""
        if not self.socket_path.exists():
            raise SupervisorUnavailable(f"supervisord is not running (no socket at {self.socket_path})")
        transport = SupervisorTransport(None, None, f"unix://{self.socket_path}")
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport, allow_none=True)
        name = method if "." in method else f"supervisor.{method}"
        try:
            func = proxy
            for part in name.split("."):
                func = getattr(func, part)
            return func(*args)
        except xmlrpc.client.Fault as exc:
            raise SupervisorError(f"supervisord {method}{args!r}: {_fault_name(exc.faultCode)} {exc.faultString}",
                                  fault=exc.faultCode) from None
        except (OSError, xmlrpc.client.ProtocolError) as exc:
            raise SupervisorUnavailable(f"supervisord does not answer on {self.socket_path}: {exc}") from None
        finally:
            transport.close()

    async def call(self, method: str, *args: Any) -> Any:
        """:meth:`call_sync` in a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(None, lambda: self.call_sync(method, *args))

    # --- state ----------------------------------------------------------------------------------
    async def is_running(self) -> bool:
        try:
            state = await self.call("getState")
        except SupervisorUnavailable:
            return False
        return bool(state.get("statename") == "RUNNING")

    async def pid(self) -> int:
        return int(await self.call("getPID"))

    async def processes(self) -> dict[str, dict[str, Any]]:
        """Every process by ``group:name`` (or ``name`` when they are equal)."""
        out: dict[str, dict[str, Any]] = {}
        for info in await self.call("getAllProcessInfo"):
            full = info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}"
            out[full] = info
        return out

    async def process(self, name: str) -> dict[str, Any]:
        info: dict[str, Any] = await self.call("getProcessInfo", name)
        return info

    # --- configuration and groups ---------------------------------------------------------------
    async def reload(self) -> tuple[list[str], list[str], list[str]]:
        """Re-read the configuration; returns the groups ``(added, changed, removed)``."""
        result = await self.call("reloadConfig")
        added, changed, removed = result[0]
        return list(added), list(changed), list(removed)

    async def apply(self) -> tuple[list[str], list[str], list[str]]:
        """Re-read the configuration and make the running groups match it.

        Removed groups are stopped and removed; changed groups are stopped, removed and added again
        (supervisord has no in-place update); added groups are added, and start when they autostart.
        """
        added, changed, removed = await self.reload()
        for group in [*removed, *changed]:
            await self.stop_group(group)
            await self.call("removeProcessGroup", group)
        for group in [*changed, *added]:
            try:
                await self.call("addProcessGroup", group)
            except SupervisorError as exc:
                if exc.fault != Faults.ALREADY_ADDED:
                    raise
        return added, changed, removed

    async def stop_group(self, group: str) -> None:
        try:
            await self.call("stopProcessGroup", group, True)
        except SupervisorError as exc:
            if exc.fault not in (Faults.BAD_NAME, Faults.NOT_RUNNING):
                raise

    async def start_process(self, name: str, wait: bool = True) -> None:
        try:
            await self.call("startProcess", name, wait)
        except SupervisorError as exc:
            if exc.fault != Faults.ALREADY_STARTED:
                raise

    async def stop_process(self, name: str, wait: bool = True) -> None:
        try:
            await self.call("stopProcess", name, wait)
        except SupervisorError as exc:
            if exc.fault != Faults.NOT_RUNNING:
                raise

    async def tail(self, name: str, length: int = 2000) -> str:
        """The last ``length`` bytes of a process's log."""
        try:
            text, _, _ = await self.call("tailProcessStdoutLog", name, 0, length)
        except SupervisorError:
            return ""
        return str(text)

    # --- the daemon -----------------------------------------------------------------------------
    def start_daemon(self, env: Mapping[str, str], *, timeout: float = 20.0) -> None:
        """Start supervisord (it daemonizes) and wait until its socket answers.

        supervisord runs with this process's environment **without** any Innkeeper setting
        (:func:`daemon_environment`), plus ``env``: its children inherit that environment, and the
        status service must not receive the token or the keys. Each cluster gets its settings in
        its program's ``environment=``.

        Raises
        ------
        SupervisorError
            When supervisord exits with an error or its socket does not answer in time.
        """
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        exe = Path(sys.executable).with_name("supervisord")
        cmd = [str(exe) if exe.exists() else "supervisord", "-c", str(self.conf)]
        full_env = {**daemon_environment(os.environ), **env, "INNKEEPER_RUN_DIR": str(self.run_dir),
                    "INNKEEPER_PYTHON": sys.executable}
        _log.info("starting supervisord: %s", " ".join(cmd))
        result = subprocess.run(cmd, env=full_env, cwd=PROJECT_ROOT, capture_output=True, text=True,  # noqa: S603
                                timeout=timeout, check=False)
        if result.returncode != 0:
            raise SupervisorError(f"supervisord did not start: {(result.stderr or result.stdout).strip()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.call_sync("getState").get("statename") == "RUNNING":
                    return
            except SupervisorUnavailable:
                pass
            time.sleep(0.1)
        raise SupervisorError(
            f"supervisord started but its socket {self.socket_path} did not answer in {timeout:.0f} s")

    def wait_gone(self, pid: int, timeout: float = 60.0) -> bool:
        """Wait until process ``pid`` has exited; True when it has."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
            time.sleep(0.05)
        return False
