"""Compile the project's packages to bytecode before the clusters start, so that none compiles them itself.

pip compiles an installed package's modules when it installs them; an editable install (``pip
install -e .``, what ``make`` does) leaves our own to the first process that imports them, and a
process that runs with ``PYTHONDONTWRITEBYTECODE`` set (as many container images do) never writes
them: every cluster start then compiles our 120-odd modules from source. That costs each cluster
0.4 MiB of resident memory for good (the compiler's garbage leaves its heap fragmented:
``docs/benchmarks.md``, "Memory") and about 0.1 s of CPU per start. :func:`compile_packages` writes the
missing or stale ``__pycache__`` files once, for every later start; ``innkeeper launch`` calls it
before supervisord starts the clusters, and ``python -m bench`` before a benchmark starts a bot.

Up-to-date files are left alone (a start-up costs a ``stat`` per module then). Where the project's
directories are read-only the compile fails quietly: the clusters run the same, from source.
"""

from __future__ import annotations

import compileall
import logging
from collections.abc import Iterable
from pathlib import Path

from innkeeper.settings import PROJECT_ROOT

__all__ = ("compile_packages", "CLUSTER_PACKAGES")

_log = logging.getLogger(__name__)

#: The packages a cluster process imports from the project tree.
CLUSTER_PACKAGES = ("innkeeper", "ipc", "db", "shard")


def compile_packages(packages: Iterable[str] = CLUSTER_PACKAGES, root: Path = PROJECT_ROOT) -> bool:
    """Write the missing or stale bytecode of ``packages`` (directories under ``root``).

    Returns True when every module has its bytecode file, False when any could not be written
    (logged at INFO: the clusters compile those themselves).
    """
    ok = True
    for name in packages:
        directory = root / name
        if not directory.is_dir():
            continue
        if not compileall.compile_dir(directory, quiet=2, workers=1):
            ok = False
    if not ok:
        _log.info("could not write the bytecode of every module under %s: clusters compile them at start-up", root)
    return ok
