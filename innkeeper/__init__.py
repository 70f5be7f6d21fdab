"""Innkeeper's shared core: settings, the error hierarchy and logging.

Every process role (``shard``, ``simulator``, ``cluster``) imports from here and from nowhere else
for these three concerns.
"""

from __future__ import annotations

__all__ = ("__version__",)

__version__ = "0.1.0"
