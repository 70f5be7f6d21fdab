"""Logging: structured JSON in production, readable text in a terminal.

Call :func:`setup_logging` once per process. Extra fields passed with ``extra={...}`` land in the
JSON object; :class:`~innkeeper.errors.InnkeeperError` context is included with its code. Both
formats pass every line through :func:`~innkeeper.redact.redact_text`, so a database or Redis URL
that reaches a log line (in a message, an extra field or a traceback) never shows its password.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

from .redact import redact_text

__all__ = ("setup_logging", "JSONFormatter", "TextFormatter")

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and any extra fields."""

    def __init__(self, role: str | None = None) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.role:
            payload["role"] = self.role
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            exc = record.exc_info[1]
            code = getattr(exc, "code", None)
            if code is not None and hasattr(code, "value"):
                payload["error_code"] = code.value
            payload["exc"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(payload, default=str))


class TextFormatter(logging.Formatter):
    """The readable terminal format, with passwords in URLs redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def setup_logging(
    fmt: Literal["json", "text"] | None = None, level: str = "INFO", *, role: str | None = None
) -> None:
    """Configure the root logger once for this process.

    Parameters
    ----------
    fmt:
        ``"json"`` or ``"text"``. ``None`` picks text on a terminal and JSON otherwise.
    level:
        The root level name.
    role:
        Added to every JSON line (``"cluster-3"``, ``"simulator"``) so aggregated logs stay readable.
    """
    if fmt is None:
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter(role))
    else:
        prefix = f"{role} " if role else ""
        handler.setFormatter(TextFormatter(f"%(asctime)s %(levelname)-7s {prefix}%(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # discord.py is chatty at INFO about every shard; keep its warnings.
    logging.getLogger("discord.gateway").setLevel(max(logging.getLevelName(level), logging.INFO))
