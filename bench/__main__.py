"""``python -m bench [NAME [ARGS…]]``: list the benchmarks, or run one."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from cluster.bytecode import compile_packages


def _names() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = _names()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m bench NAME [ARGS...]\n\nbenchmarks:\n  " + "\n  ".join(names))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(f"bench: unknown benchmark {name!r}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    # the bots run our modules from bytecode, as the launcher has them (cluster/bytecode.py), even where
    # PYTHONDONTWRITEBYTECODE is set: compiling them in every bot start would cost each 0.4 MiB
    compile_packages()
    module = importlib.import_module(f"bench.{name}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
