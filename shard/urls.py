"""The one place that points discord.py at a Discord-compatible API other than Discord's own.

``DISCORD_API_URL`` (e.g. ``http://127.0.0.1:8765`` for the simulator) sets both hooks discord.py
offers: ``Route.BASE`` for REST (webhooks and interaction callbacks go through it too) and
``DiscordWebSocket.DEFAULT_GATEWAY`` for the gateway. Both must be set, since a re-identify goes
back to ``DEFAULT_GATEWAY`` rather than to the URL ``GET /gateway/bot`` returned.
"""

from __future__ import annotations

import logging

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

__all__ = ("point_discord_at", "gateway_url_for")

_log = logging.getLogger(__name__)

_API_VERSION = 10


def gateway_url_for(api_url: str) -> yarl.URL:
    """The gateway URL that belongs to an API base URL (``http://h:p`` → ``ws://h:p/gateway``)."""
    url = yarl.URL(api_url)
    scheme = "wss" if url.scheme == "https" else "ws"
    return url.with_scheme(scheme).with_path("/gateway")


def point_discord_at(api_url: str | None) -> None:
    """Point discord.py's REST and gateway at ``api_url``; ``None`` keeps real Discord.

    Parameters
    ----------
    api_url:
        Base URL without the ``/api/v10`` suffix, e.g. ``http://127.0.0.1:8765``.
    """
    if not api_url:
        return
    base = api_url.rstrip("/")
    Route.BASE = f"{base}/api/v{_API_VERSION}"
    DiscordWebSocket.DEFAULT_GATEWAY = gateway_url_for(base)
    _log.info("discord.py points at %s (gateway %s)", Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
