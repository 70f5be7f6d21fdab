"""The ``innkeeper`` command line.

Subcommands live next to the code they drive. Each provider module named in :data:`PROVIDERS`
exposes ``add_commands(subparsers)``, which adds its subcommands and sets ``handler`` on each: a
callable ``(argparse.Namespace, Settings) -> int`` (sync or async).

Exit codes: 0 ok, 1 failure, 2 bad usage. Errors go to stderr as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import sys
from collections.abc import Sequence

from innkeeper.errors import ConfigError, InnkeeperError, UsageError
from innkeeper.logs import setup_logging
from innkeeper.redact import redact_text
from innkeeper.settings import Settings

from .console import Console, silence

__all__ = ("main", "build_parser", "PROVIDERS")

_log = logging.getLogger(__name__)

#: Modules that contribute subcommands, in the order they appear in ``--help``.
PROVIDERS: tuple[str, ...] = (
    "cluster.ops",
    "simulator.cli",
    "db.cli",
    "cluster.reload",
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """Build the full parser from every provider module."""
    parser = _Parser(prog="innkeeper", description="Run and operate a sharded discord.py bot.")
    parser.add_argument("--log-format", choices=("json", "text"), default=None,
                        help="log format (default: text on a terminal, JSON otherwise)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in PROVIDERS:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``innkeeper`` console script; returns the exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        settings = Settings.from_env()
        setup_logging(args.log_format or ("text" if sys.stderr.isatty() else settings.log_format),
                      settings.log_level, role="cli")
        result = args.handler(args, settings)
        if inspect.isawaitable(result):
            result = asyncio.run(result)  # type: ignore[arg-type]
        return int(result or 0)
    except UsageError as exc:
        _err(f"innkeeper: error: {redact_text(exc.message)}")
        return EXIT_USAGE
    except ConfigError as exc:
        _err(f"innkeeper: error: [{exc.code.value}] {redact_text(exc.message)}")
        return EXIT_USAGE
    except InnkeeperError as exc:
        _err(f"innkeeper: error: [{exc.code.value}] {redact_text(exc.message)}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _err("innkeeper: interrupted")
        return 130
    except BrokenPipeError:  # `innkeeper status | head -1`: the reader left; nothing more to say to it
        silence(sys.stdout)
        return EXIT_FAILURE


def _err(line: str) -> None:
    """One line to stderr, which may be gone too (a closed terminal): then nowhere, never an exception."""
    Console(sys.stderr)(line)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
