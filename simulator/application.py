"""The simulated application: its flags (the privileged intents it is granted) and its bot token.

Discord grants a privileged intent through the application's flags
(``developers/resources/application.mdx``, "Application Flags"): GATEWAY_PRESENCE (``1 << 12``) or
GATEWAY_PRESENCE_LIMITED (``1 << 13``) for GUILD_PRESENCES, GATEWAY_GUILD_MEMBERS (``1 << 14``) or
GATEWAY_GUILD_MEMBERS_LIMITED (``1 << 15``) for GUILD_MEMBERS, GATEWAY_MESSAGE_CONTENT (``1 << 18``)
or GATEWAY_MESSAGE_CONTENT_LIMITED (``1 << 19``) for MESSAGE_CONTENT. An IDENTIFY that asks for a
privileged intent the flags do not grant is closed with 4014 Disallowed intent(s)
(``developers/events/gateway.mdx``, "Privileged Intents" → "Gateway Restrictions"; MESSAGE_CONTENT
is one of the three privileged intents listed there).

The simulated application is an app whose intents are toggled on the Bot page, so ``--privileged-
intents`` grants them through the ``_LIMITED`` flags: the only flags ``PATCH /applications/@me``
may change ("Edit Current Application": "Only limited intent flags … can be updated via the API").

The token is state too: exhausting the daily IDENTIFY budget resets it (``gateway.mdx``,
"Identifying": "all active sessions for the app will be terminated, the bot token will be reset"),
and ``POST /_sim/token/reset`` issues a new one, as the owner does in the developer portal.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from .intents import Intent

if TYPE_CHECKING:
    from .config import SimConfig

__all__ = ("AppFlag", "Application", "PRIVILEGED_INTENTS", "EDITABLE_FLAGS", "INTENT_NAMES",
           "parse_privileged_intents")


class AppFlag:
    """The application flags that grant privileged intents."""

    GATEWAY_PRESENCE = 1 << 12
    GATEWAY_PRESENCE_LIMITED = 1 << 13
    GATEWAY_GUILD_MEMBERS = 1 << 14
    GATEWAY_GUILD_MEMBERS_LIMITED = 1 << 15
    GATEWAY_MESSAGE_CONTENT = 1 << 18
    GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19


#: Privileged intent bit → the application flags that grant it (either one does).
PRIVILEGED_INTENTS: dict[int, int] = {
    Intent.GUILD_PRESENCES: AppFlag.GATEWAY_PRESENCE | AppFlag.GATEWAY_PRESENCE_LIMITED,
    Intent.GUILD_MEMBERS: AppFlag.GATEWAY_GUILD_MEMBERS | AppFlag.GATEWAY_GUILD_MEMBERS_LIMITED,
    Intent.MESSAGE_CONTENT: AppFlag.GATEWAY_MESSAGE_CONTENT | AppFlag.GATEWAY_MESSAGE_CONTENT_LIMITED,
}
#: The flags ``PATCH /applications/@me`` may change: the three ``_LIMITED`` ones.
EDITABLE_FLAGS = (AppFlag.GATEWAY_PRESENCE_LIMITED | AppFlag.GATEWAY_GUILD_MEMBERS_LIMITED
                  | AppFlag.GATEWAY_MESSAGE_CONTENT_LIMITED)
#: ``--privileged-intents`` names → the ``_LIMITED`` flag that grants each.
INTENT_NAMES: dict[str, int] = {
    "presences": AppFlag.GATEWAY_PRESENCE_LIMITED,
    "members": AppFlag.GATEWAY_GUILD_MEMBERS_LIMITED,
    "message_content": AppFlag.GATEWAY_MESSAGE_CONTENT_LIMITED,
}


def parse_privileged_intents(text: str) -> int:
    """Application flags for ``--privileged-intents`` (``"presences,members"``, ``"none"``).

    Raises
    ------
    ValueError
        For a name that is not ``presences``, ``members``, ``message_content`` or ``none``.
    """
    names = [n.strip().lower().replace("-", "_") for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return 0
    flags = 0
    for name in names:
        if name not in INTENT_NAMES:
            raise ValueError(f"unknown privileged intent {name!r}")
        flags |= INTENT_NAMES[name]
    return flags


class Application:
    """The application's mutable state, shared by the gateway and REST.

    Parameters
    ----------
    flags:
        The application flags (``flags`` of ``GET /applications/@me`` and READY's ``application``).
    token:
        The only bot token accepted, for REST (``Authorization: Bot …``), IDENTIFY and RESUME.
    """

    __slots__ = ("flags", "token", "fields")

    def __init__(self, flags: int, token: str) -> None:
        self.flags = flags
        self.token = token
        #: Fields ``PATCH /applications/@me`` changed (description, tags, …), as sent.
        self.fields: dict[str, object] = {}

    @classmethod
    def from_config(cls, config: SimConfig) -> Application:
        """The application as ``--privileged-intents`` and ``--token`` describe it."""
        return cls(parse_privileged_intents(config.privileged_intents), config.token)

    def disallowed(self, intents: int) -> int:
        """The privileged intents in ``intents`` that the flags do not grant (0 when none)."""
        denied = 0
        for intent, granting in PRIVILEGED_INTENTS.items():
            if intents & intent and not self.flags & granting:
                denied |= intent
        return denied

    def reset_token(self, token: str | None = None) -> str:
        """Replace the bot token (a new random one unless ``token`` is given); the old one stops working."""
        self.token = token if token is not None else f"sim.{secrets.token_urlsafe(24)}"
        return self.token
