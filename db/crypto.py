"""Encryption at rest for the free text users write (feedback, reminder text).

Scheme: AES-256-GCM with a fresh 96-bit random nonce per value, and the column name
(``"feedback.body"``) as associated data, so a ciphertext cannot be moved to another column
unnoticed. A stored value reads ``v1:<key_id>:<nonce base64>:<ciphertext+tag base64>``.

Keys come from ``INNKEEPER_ENCRYPTION_KEYS=keyid=base64key,keyid2=base64key``: 32-byte keys in
(standard or URL-safe) base64, key ids of letters, digits, ``_`` and ``-``. The **first** key is the
current one and encrypts every new value; the others only decrypt. Rotation: put a new key first,
keep the old ones, run ``innkeeper rotate-keys`` (:func:`db.privacy.rotate_keys` re-encrypts every
value not under the current key), then drop the old key. ``innkeeper keygen`` prints a new key.

Without a key, :meth:`KeyRing.parse` raises :class:`~innkeeper.errors.ConfigError` naming the
variable: silently storing plaintext, or inventing a key that is lost on the next restart, would
both be worse. (The clusters then run with the features that store user text turned off; the CLI
commands that need keys stop.) For local development and the demo, ``INNKEEPER_ENCRYPTION_KEYS=dev``
selects a fixed, publicly known development key, and a warning says so. It is **refused** unless
``DISCORD_API_URL`` points at a local simulator (:attr:`~innkeeper.settings.Settings.uses_local_simulator`,
see :meth:`KeyRing.from_settings`): a bot talking to Discord never encrypts real users' text under
a key anyone can read.

Why the ``cryptography`` dependency: AES-GCM must not be home-made, the standard library has no
AEAD cipher, and ``cryptography`` (the PyCA project, OpenSSL underneath, wheels for every
platform) is the de-facto standard Python crypto library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from innkeeper.errors import ConfigError, DatabaseError, ErrorCode

if TYPE_CHECKING:
    from innkeeper.settings import Settings

__all__ = ("KeyRing", "VERSION", "DEV_KEY_ID", "generate_key")

_log = logging.getLogger(__name__)

VERSION = "v1"
DEV_KEY_ID = "dev"
_VAR = "INNKEEPER_ENCRYPTION_KEYS"
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_DEV_KEY = hashlib.sha256(b"innkeeper development key - not secret").digest()


def _b64decode(data: str) -> bytes:
    data = data.strip()
    padded = data + "=" * (-len(data) % 4)
    try:
        if "-" in data or "_" in data:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from None


def generate_key(key_id: str) -> str:
    """A new ``keyid=base64key`` entry for ``INNKEEPER_ENCRYPTION_KEYS``."""
    if not _KEY_ID_RE.match(key_id):
        raise ConfigError("a key id is 1-32 letters, digits, _ or -", variable=_VAR)
    return f"{key_id}={base64.b64encode(os.urandom(32)).decode()}"


class KeyRing:
    """The configured keys; encrypts with the current one and decrypts with any.

    Parameters
    ----------
    keys:
        ``(key_id, 32-byte key)`` pairs, the current key first.
    """

    __slots__ = ("current", "_ciphers")

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ConfigError(f"{_VAR} has no keys", code=ErrorCode.CONFIG_MISSING, variable=_VAR)
        self._ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if key_id in self._ciphers:
                raise ConfigError(f"{_VAR} lists key id {key_id!r} twice", variable=_VAR)
            self._ciphers[key_id] = AESGCM(key)
        self.current = keys[0][0]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """The key ring of ``INNKEEPER_ENCRYPTION_KEYS``; ``dev`` only while Discord is a local simulator.

        Raises
        ------
        ConfigError
            As :meth:`parse`, and when ``dev`` is configured for a bot pointed at Discord.
        """
        return cls.parse(settings.encryption_keys, allow_dev=settings.uses_local_simulator)

    @classmethod
    def parse(cls, entries: Sequence[str], *, allow_dev: bool = False) -> KeyRing:
        """Build from ``("keyid=base64key", ...)`` as found in ``Settings.encryption_keys``.

        Parameters
        ----------
        entries:
            The entries, the current key first.
        allow_dev:
            Accept ``dev``, the public development key (only with a local simulator).

        Raises
        ------
        ConfigError
            Naming ``INNKEEPER_ENCRYPTION_KEYS`` when it is empty, an entry is malformed, or it
            names ``dev`` without ``allow_dev``.
        """
        entries = [e.strip() for e in entries if e.strip()]
        if not entries:
            raise ConfigError(
                f"{_VAR} is not set: generate a key with `innkeeper keygen` and set {_VAR}=<its output> "
                f"(or {_VAR}=dev for local development only)",
                code=ErrorCode.CONFIG_MISSING, variable=_VAR,
            )
        keys: list[tuple[str, bytes]] = []
        for entry in entries:
            if entry == DEV_KEY_ID:
                if not allow_dev:
                    raise ConfigError(
                        f"{_VAR}=dev is the public development key: it is only accepted while DISCORD_API_URL "
                        "points at a local simulator (http://127.0.0.1:<port>); generate a real key with "
                        "`innkeeper keygen`", code=ErrorCode.CONFIG_INVALID, variable=_VAR)
                _log.warning("%s=dev: user text is encrypted with the public development key (allowed because "
                             "Discord is a local simulator)", _VAR)
                keys.append((DEV_KEY_ID, _DEV_KEY))
                continue
            key_id, sep, b64 = entry.partition("=")
            if not sep or not _KEY_ID_RE.match(key_id):
                raise ConfigError(f"{_VAR} entries look like keyid=base64key (key id: 1-32 letters, digits, _ or -); "
                                  f"got an entry starting {entry[:8]!r}", variable=_VAR)
            try:
                key = _b64decode(b64)
            except ValueError:
                raise ConfigError(f"{_VAR}: the key {key_id!r} is not valid base64", variable=_VAR) from None
            if len(key) != 32:
                raise ConfigError(f"{_VAR}: the key {key_id!r} must be 32 bytes (AES-256), got {len(key)}",
                                  variable=_VAR)
            keys.append((key_id, key))
        return cls(keys)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """Encrypt ``plaintext`` under the current key, bound to ``context`` (e.g. ``"feedback.body"``)."""
        nonce = os.urandom(12)
        ct = self._ciphers[self.current].encrypt(nonce, plaintext.encode("utf-8"), context.encode())
        return f"{VERSION}:{self.current}:{base64.b64encode(nonce).decode()}:{base64.b64encode(ct).decode()}"

    @staticmethod
    def key_id_of(token: str) -> str:
        """The key id a stored value was encrypted with."""
        parts = token.split(":")
        if len(parts) != 4 or parts[0] != VERSION:
            raise DatabaseError("a stored encrypted value is malformed", code=ErrorCode.DB_BAD_VALUE)
        return parts[1]

    def decrypt(self, token: str, *, context: str) -> str:
        """Decrypt a stored value with whichever configured key it names.

        Raises
        ------
        ConfigError
            The key it was encrypted with is not configured (the message names the key id).
        DatabaseError
            ``DB_BAD_VALUE`` when the value is malformed or was tampered with.
        """
        key_id = self.key_id_of(token)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise ConfigError(f"a {context} value is encrypted with key {key_id!r}, which is not in {_VAR} "
                              f"(configured: {', '.join(self._ciphers)})", code=ErrorCode.CONFIG_MISSING,
                              variable=_VAR)
        _, _, nonce_b64, ct_b64 = token.split(":")
        try:
            plain = cipher.decrypt(base64.b64decode(nonce_b64, validate=True), base64.b64decode(ct_b64, validate=True),
                                   context.encode())
        except (InvalidTag, binascii.Error, ValueError):
            raise DatabaseError(f"a {context} value failed authentication (corrupted or tampered with)",
                                code=ErrorCode.DB_BAD_VALUE) from None
        return plain.decode("utf-8")

    def is_current(self, token: str) -> bool:
        """True when ``token`` is already encrypted under the current key."""
        return token.startswith(f"{VERSION}:{self.current}:")
