"""Automod: the ``automod`` guild setting put to work on every message (see :mod:`shard.automod.service`).

``rules`` (the thresholds per level, judged on raw payloads), ``check`` (the same verdict in one
pass, run on every message), ``repeats`` (copy counters in bounded memory), ``enforcement``
(exemptions, deletes and notices against Discord), ``incidents`` (one log notice and a few audit
rows per guild per window), ``metrics``, and ``service`` (:class:`Automod`).
"""

from __future__ import annotations

from .service import Automod

__all__ = ("Automod",)
