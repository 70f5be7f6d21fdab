"""Keyed pseudonyms for the people in the audit log whom erasure removes.

Erasing a user does not wipe who did what: their id in the audit log is replaced by a pseudonym,
``psn:<key id>:<24 hex>`` = the first 96 bits of ``HMAC-SHA256(key, "innkeeper audit pseudonym:<user id>")``.
The same user gets the same pseudonym in every row and every guild, so the log still says that the
same person did A and B; without the key nobody can tell who that person is, and with it an
operator can answer "was it user X?" for a legal claim (``innkeeper pseudonym USER_ID``).

The key
-------
``INNKEEPER_PSEUDONYM_KEY=keyid=base64key`` (``innkeeper keygen`` prints one). Keep it in the
secret store with the encryption keys and never change it: a new key gives the same user a new
pseudonym, so rows erased before and after no longer link up (the key id in the pseudonym says
which key made it). Without it, the key is derived from the current encryption key
(:meth:`db.crypto.KeyRing.derive`, key id ``enc-<key id>``), which rotating the encryption keys
changes; set ``INNKEEPER_PSEUDONYM_KEY`` in production. With neither, erasure is refused
(``ConfigError`` naming the variable) rather than done without accountability.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from innkeeper.errors import ConfigError, ErrorCode

from . import validate as v
from .crypto import parse_key_entry

if TYPE_CHECKING:
    from innkeeper.settings import Settings

    from .crypto import KeyRing

__all__ = ("Pseudonyms", "PREFIX")

PREFIX = "psn"
_VAR = "INNKEEPER_PSEUDONYM_KEY"
_LABEL = "innkeeper audit pseudonym key v1"


class Pseudonyms:
    """Turns user ids into keyed pseudonyms (see the module docstring).

    Parameters
    ----------
    key_id:
        Names the key inside every pseudonym it makes.
    key:
        The secret, at least 32 bytes.
    """

    __slots__ = ("key_id", "_key")

    def __init__(self, key_id: str, key: bytes) -> None:
        if len(key) < 32:
            raise ConfigError(f"{_VAR}: the key must be at least 32 bytes", variable=_VAR)
        self.key_id = key_id
        self._key = key

    @classmethod
    def from_settings(cls, settings: Settings, keys: KeyRing | None) -> Pseudonyms:
        """``INNKEEPER_PSEUDONYM_KEY``, else a key derived from the encryption key ring.

        Raises
        ------
        ConfigError
            The key is malformed, or neither it nor ``INNKEEPER_ENCRYPTION_KEYS`` is set.
        """
        if settings.pseudonym_key:
            return cls(*parse_key_entry(settings.pseudonym_key, _VAR))
        if keys is not None:
            return cls(f"enc-{keys.current}", keys.derive(_LABEL))
        raise ConfigError(f"{_VAR} is not set (nor INNKEEPER_ENCRYPTION_KEYS): erasure replaces people in the audit "
                          "log by keyed pseudonyms; generate a key with `innkeeper keygen` and set "
                          f"{_VAR}=<its output>", code=ErrorCode.CONFIG_MISSING, variable=_VAR)

    def of(self, user_id: int) -> str:
        """The pseudonym of ``user_id``."""
        uid = v.snowflake("user id", user_id)
        digest = hmac.new(self._key, f"innkeeper audit pseudonym:{uid}".encode(), hashlib.sha256).hexdigest()
        return f"{PREFIX}:{self.key_id}:{digest[:24]}"
