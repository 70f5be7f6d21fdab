"""Which extension (cog) names may be reloaded over the bus: the one rule the CLI and the clusters share.

``innkeeper reload NAME`` (``cluster/reload.py``) checks a name before it broadcasts it, so a typo
gets a usage error at once; each cluster (``shard/bus_handlers.py``) checks it again before it
touches anything, since a bus message may come from anywhere. Only dotted module names under the
bot's extension package qualify; a bare name (``settings``) means that package's module.
"""

from __future__ import annotations

import re

from .errors import UsageError

__all__ = ("EXTENSION_PACKAGE", "check_extension_name", "normalise_extension")

#: The package whose modules are the bot's extensions.
EXTENSION_PACKAGE = "shard.cogs"

_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_extension_name(name: object, package: str = EXTENSION_PACKAGE) -> str:
    """Return ``name`` if it is a dotted module name inside ``package``.

    Raises
    ------
    UsageError
        For anything else (not text, not a module name, outside the package, the package itself).
    """
    prefix = package.rstrip(".") + "."
    if not isinstance(name, str) or len(name) > 200 or not _MODULE_RE.match(name):
        raise UsageError(f"not an extension name: {name!r}")
    if not name.startswith(prefix):
        raise UsageError(f"only extensions under {prefix!r} can be reloaded, not {name!r}")
    return name


def normalise_extension(raw: str, package: str = EXTENSION_PACKAGE) -> str:
    """``settings`` → ``shard.cogs.settings``; a dotted name is checked as it is.

    Raises
    ------
    UsageError
        As :func:`check_extension_name`.
    """
    name = raw.strip()
    if name and "." not in name:
        name = f"{package.rstrip('.')}.{name}"
    return check_extension_name(name, package)
