"""``python -m simulator``: run the Discord simulator (see ``python -m simulator --help``)."""

from __future__ import annotations

import sys

from .cli import main

__all__ = ()

if __name__ == "__main__":
    sys.exit(main())
