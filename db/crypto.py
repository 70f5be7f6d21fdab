"""Encryption at rest for the free text users write (feedback, reminder text).

Scheme: AES-256-GCM with a fresh 96-bit random nonce per value. The associated data binds each
value to its column **and its row**: ``"feedback.body#<row id>/<owner id>"`` (:func:`row_binding`),
so a ciphertext copied into another column, another row, or given another owner fails
authentication instead of being shown to someone else. A stored value reads
``v2:<key_id>:<nonce base64>:<ciphertext+tag base64>``.

Values written before row binding (``v1:``, bound to the column only) are refused by ordinary reads
(``DB_LEGACY_CIPHERTEXT``, E4007): accepting them would keep the copy attack open for every old
value. They are re-encrypted in place, bound to the row they are in, under the key they name
(:func:`db.privacy.upgrade_ciphertexts`, run by the clusters' maintenance and by
``innkeeper rotate-keys``); only that pass reads them (``decrypt(..., legacy=True)``).

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
platform) is the de-facto standard Python crypto library. It is imported when a value is first
encrypted or decrypted, not with this module: its native library costs a cluster about 7 MiB of RSS,
and most clusters spend hours between a feedback, a reminder or an export (``bench memory``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from innkeeper.errors import ConfigError, DatabaseError, ErrorCode

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from innkeeper.settings import Settings

__all__ = ("KeyRing", "VERSION", "LEGACY_VERSION", "DEV_KEY_ID", "generate_key", "row_binding", "parse_key_entry")

_log = logging.getLogger(__name__)

#: Values bound to their column and row.
VERSION = "v2"
#: Values bound to their column only (written before row binding); re-encrypted by the upgrade pass.
LEGACY_VERSION = "v1"
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


def row_binding(row_id: int, owner_id: int | None) -> str:
    """What ties a value to its row: the row's id and its owner's id (``"17/3312..."``)."""
    return f"{int(row_id)}/{'' if owner_id is None else int(owner_id)}"


def parse_key_entry(entry: str, variable: str) -> tuple[str, bytes]:
    """``"keyid=base64key"`` → ``(key id, 32-byte key)``, or a :class:`ConfigError` naming ``variable``."""
    key_id, sep, b64 = entry.strip().partition("=")
    if not sep or not _KEY_ID_RE.match(key_id):
        raise ConfigError(f"{variable} entries look like keyid=base64key (key id: 1-32 letters, digits, _ or -); "
                          f"got an entry starting {entry[:8]!r}", variable=variable)
    try:
        key = _b64decode(b64)
    except ValueError:
        raise ConfigError(f"{variable}: the key {key_id!r} is not valid base64", variable=variable) from None
    if len(key) != 32:
        raise ConfigError(f"{variable}: the key {key_id!r} must be 32 bytes (AES-256), got {len(key)}",
                          variable=variable)
    return key_id, key


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

    __slots__ = ("current", "_keys", "_ciphers", "_current_key")

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ConfigError(f"{_VAR} has no keys", code=ErrorCode.CONFIG_MISSING, variable=_VAR)
        self._keys: dict[str, bytes] = {}
        for key_id, key in keys:
            if key_id in self._keys:
                raise ConfigError(f"{_VAR} lists key id {key_id!r} twice", variable=_VAR)
            if len(key) != 32:
                raise ConfigError(f"{_VAR}: the key {key_id!r} must be 32 bytes (AES-256), got {len(key)}",
                                  variable=_VAR)
            self._keys[key_id] = key
        self._ciphers: dict[str, AESGCM] = {}  # built on first use (see the module docstring)
        self.current = keys[0][0]
        self._current_key = keys[0][1]

    def derive(self, label: str) -> bytes:
        """A 32-byte key for another purpose, derived from the current key (HMAC-SHA256 over ``label``).

        Rotating the encryption keys changes what it derives.
        """
        return hmac.new(self._current_key, label.encode(), hashlib.sha256).digest()

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
            keys.append(parse_key_entry(entry, _VAR))
        return cls(keys)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def encrypt(self, plaintext: str, *, context: str, row: str, key_id: str | None = None) -> str:
        """Encrypt ``plaintext`` bound to its column ``context`` (``"feedback.body"``) and its ``row``.

        ``row`` is :func:`row_binding` of the row the value is stored in.

        Parameters
        ----------
        key_id:
            Encrypt under this configured key instead of the current one (the upgrade pass keeps
            each value under the key it had).
        """
        kid = self.current if key_id is None else key_id
        nonce = os.urandom(12)
        ct = self._cipher(kid, context).encrypt(nonce, plaintext.encode("utf-8"), _aad(context, row))
        return f"{VERSION}:{kid}:{base64.b64encode(nonce).decode()}:{base64.b64encode(ct).decode()}"

    @staticmethod
    def _parts(token: str) -> list[str]:
        parts = token.split(":")
        if len(parts) != 4 or parts[0] not in (VERSION, LEGACY_VERSION):
            raise DatabaseError("a stored encrypted value is malformed", code=ErrorCode.DB_BAD_VALUE)
        return parts

    @classmethod
    def key_id_of(cls, token: str) -> str:
        """The key id a stored value was encrypted with."""
        return cls._parts(token)[1]

    @classmethod
    def is_legacy(cls, token: str) -> bool:
        """True for a value bound to its column only (written before row binding)."""
        return cls._parts(token)[0] == LEGACY_VERSION

    def _cipher(self, key_id: str, context: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            key = self._keys.get(key_id)
            if key is None:
                raise ConfigError(f"a {context} value is encrypted with key {key_id!r}, which is not in {_VAR} "
                                  f"(configured: {', '.join(self._keys)})", code=ErrorCode.CONFIG_MISSING,
                                  variable=_VAR)
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            cipher = self._ciphers[key_id] = AESGCM(key)
        return cipher

    def decrypt(self, token: str, *, context: str, row: str, legacy: bool = False) -> str:
        """Decrypt a stored value with whichever configured key it names, checking its column and row.

        Parameters
        ----------
        legacy:
            Also accept a value bound to its column only (``v1:``); only the upgrade pass does.

        Raises
        ------
        ConfigError
            The key it was encrypted with is not configured (the message names the key id).
        DatabaseError
            ``DB_BAD_VALUE`` when the value is malformed, was tampered with, or belongs to another
            column or row; ``DB_LEGACY_CIPHERTEXT`` for a ``v1:`` value without ``legacy``.
        """
        version, key_id, nonce_b64, ct_b64 = self._parts(token)
        if version == LEGACY_VERSION and not legacy:
            raise DatabaseError(f"a {context} value predates row binding and is waiting to be re-encrypted "
                                "(the clusters' maintenance or `innkeeper rotate-keys` does it)",
                                code=ErrorCode.DB_LEGACY_CIPHERTEXT,
                                user_message="This text is being re-encrypted; try again in a minute.")
        cipher = self._cipher(key_id, context)
        from cryptography.exceptions import InvalidTag  # loaded by _cipher already

        aad = context.encode() if version == LEGACY_VERSION else _aad(context, row)
        try:
            plain = cipher.decrypt(base64.b64decode(nonce_b64, validate=True), base64.b64decode(ct_b64, validate=True),
                                   aad)
        except (InvalidTag, binascii.Error, ValueError):
            raise DatabaseError(f"a {context} value failed authentication (corrupted, tampered with, or moved "
                                "from another row)", code=ErrorCode.DB_BAD_VALUE) from None
        return plain.decode("utf-8")

    def is_current(self, token: str) -> bool:
        """True when ``token`` is bound to its row and encrypted under the current key."""
        return token.startswith(f"{VERSION}:{self.current}:")


def _aad(context: str, row: str) -> bytes:
    return f"{context}#{row}".encode()
