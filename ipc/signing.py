"""Signed IPC frames: HMAC-SHA256 under a key every Innkeeper process shares.

Anyone who can publish on Redis could otherwise speak on the bus. Every frame therefore carries a
signature over its channel, its send time and its body, and receivers drop any frame that is not
signed by a key they hold, or that is older (or further ahead) than ``max_age_s``.

Frame layout (all integers big-endian)::

    b"IK" 0x01 | key id length (1 byte, 1-32) | key id (ASCII) | sent at (8 bytes, ms since the
    epoch) | HMAC-SHA256 (32 bytes) | body (one msgpack message, :mod:`ipc.messages`)

The MAC covers a domain string, the channel name and every byte of the frame but the MAC itself,
so a frame cannot be replayed on another channel (a request as a cache invalidation, a reply to
one client at another) nor with a changed send time. Replays on the same channel within
``max_age_s`` are the bus's concern (it remembers request ids: :mod:`ipc.bus`).

Keys come from ``INNKEEPER_IPC_KEYS=keyid=base64key[,keyid2=base64key]``: the first signs, every
one verifies, which allows rotation without a moment where two processes disagree (add the new key
second, then first, then drop the old one; see ``docs/operations.md``). ``dev`` selects a fixed,
public development key (the demo and the tests), and a warning says so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from innkeeper.errors import ConfigError, ErrorCode, IPCError

if TYPE_CHECKING:
    from innkeeper.settings import Settings

__all__ = ("FrameSigner", "OpenedFrame", "DEV_KEY_ID", "MAX_HEADER_BYTES", "MAGIC")

_log = logging.getLogger(__name__)

_VAR = "INNKEEPER_IPC_KEYS"
MAGIC = b"IK\x01"
_DOMAIN = b"innkeeper-ipc-frame-v1\x00"
_MAC_BYTES = 32
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
#: The public development key's id; its key is derived from a published string.
DEV_KEY_ID = "dev"
_DEV_KEY = hashlib.sha256(b"innkeeper IPC development key - not secret").digest()
#: Largest header: magic, key id length and id, send time, MAC.
MAX_HEADER_BYTES = len(MAGIC) + 1 + 32 + 8 + _MAC_BYTES
_MIN_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class OpenedFrame:
    """A frame whose signature and age checked out."""

    body: bytes
    key_id: str
    sent_at: float


def _reject(reason: str, message: str) -> IPCError:
    return IPCError(f"IPC frame refused: {message}", code=ErrorCode.IPC_UNAUTHENTICATED, reason=reason)


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    if "-" in text or "_" in text:
        return base64.urlsafe_b64decode(padded)
    return base64.b64decode(padded, validate=True)


class FrameSigner:
    """Seals message bodies into signed frames and opens (verifies) received ones.

    Parameters
    ----------
    keys:
        ``(key id, key)`` pairs; the first signs, every one verifies. Keys are at least 32 bytes.
    max_age_s:
        Frames sent longer ago than this, or stamped further ahead than this (a clock that runs
        fast), are refused. Clocks of every host must agree to well within it (NTP).
    clock:
        Seconds since the epoch (``time.time``); tests pass their own.
    """

    __slots__ = ("_keys", "_current", "_header_id", "max_age_s", "_clock")

    def __init__(self, keys: Sequence[tuple[str, bytes]], *, max_age_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ConfigError(f"{_VAR} holds no key", code=ErrorCode.CONFIG_MISSING, variable=_VAR)
        if max_age_s <= 0:
            raise ConfigError("the IPC frame age limit must be positive", variable="INNKEEPER_IPC_MAX_AGE")
        self._keys: dict[str, bytes] = {}
        for key_id, key in keys:
            if not _KEY_ID_RE.match(key_id) or len(key) < _MIN_KEY_BYTES or key_id in self._keys:
                raise ConfigError(f"{_VAR}: key ids are 1-32 letters, digits, _ or -, each once, and keys at least "
                                  f"{_MIN_KEY_BYTES} bytes", variable=_VAR)
            self._keys[key_id] = key
        self._current = keys[0][0]
        encoded = self._current.encode("ascii")
        self._header_id = bytes([len(encoded)]) + encoded
        self.max_age_s = max_age_s
        self._clock = clock

    @classmethod
    def parse(cls, entries: Sequence[str], *, max_age_s: float = 30.0, clock: Callable[[], float] = time.time,
              allow_dev: bool = False) -> FrameSigner:
        """Build from ``("keyid=base64key", …)`` as in ``Settings.ipc_keys`` (``"dev"``: the public key).

        Parameters
        ----------
        allow_dev:
            Accept ``dev``, the public development key (only against a local simulator: the demo
            and the tests).

        Raises
        ------
        ConfigError
            Naming ``INNKEEPER_IPC_KEYS`` when it is empty or an entry is malformed, or names ``dev``
            without ``allow_dev``; key values are never echoed.
        """
        entries = [e.strip() for e in entries if e.strip()]
        if not entries:
            raise ConfigError(f"{_VAR} is not set", code=ErrorCode.CONFIG_MISSING, variable=_VAR)
        keys: list[tuple[str, bytes]] = []
        for i, entry in enumerate(entries, 1):
            if entry == DEV_KEY_ID:
                if not allow_dev:
                    raise ConfigError(
                        f"{_VAR}=dev is the public development key: anyone who can publish on the Redis could "
                        "command every cluster with it, so it is only accepted while DISCORD_API_URL points at a "
                        "local simulator; generate a real key with `innkeeper keygen ipc1`",
                        code=ErrorCode.CONFIG_INVALID, variable=_VAR)
                _log.warning("%s=dev: IPC frames are signed with the public development key (allowed because "
                             "Discord is a local simulator)", _VAR)
                keys.append((DEV_KEY_ID, _DEV_KEY))
                continue
            key_id, sep, b64 = entry.partition("=")
            try:
                key = _b64decode(b64.strip()) if sep else b""
            except (binascii.Error, ValueError):
                key = b""
            if not key:
                raise ConfigError(f"{_VAR} entry {i} is not keyid=base64key", variable=_VAR)
            keys.append((key_id.strip(), key))
        return cls(keys, max_age_s=max_age_s, clock=clock)

    @classmethod
    def from_settings(cls, settings: Settings) -> FrameSigner:
        """The signer for ``INNKEEPER_IPC_KEYS`` and ``INNKEEPER_IPC_MAX_AGE``.

        Raises
        ------
        ConfigError
            When ``INNKEEPER_IPC_KEYS`` is not set or malformed.
        """
        return cls.parse(settings.require_ipc_keys(), max_age_s=settings.ipc_max_age_s,
                         allow_dev=settings.uses_local_simulator)

    @property
    def key_id(self) -> str:
        """The id of the key that signs."""
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id that verifies."""
        return tuple(self._keys)

    def seal(self, channel: str, body: bytes, *, sent_at: float | None = None) -> bytes:
        """The signed frame carrying ``body`` on ``channel``, stamped now (or ``sent_at``)."""
        stamp = int((self._clock() if sent_at is None else sent_at) * 1000)
        head = MAGIC + self._header_id + stamp.to_bytes(8, "big")
        mac = self._mac(self._keys[self._current], channel, head, body)
        return head + mac + body

    def open(self, channel: str, frame: bytes) -> OpenedFrame:
        """Verify ``frame`` as received on ``channel`` and return its body.

        The checks run cheapest first and nothing of the body is parsed: the header's shape, the
        key id, the signature (constant-time comparison), then the age.

        Raises
        ------
        IPCError
            Code ``IPC_UNAUTHENTICATED``; ``context["reason"]`` is ``unsigned`` (no frame header),
            ``unknown_key``, ``bad_signature`` or ``stale`` (too old, or from a clock too far ahead).
        """
        view = memoryview(frame)
        if len(frame) < len(MAGIC) + 1 or view[:len(MAGIC)] != MAGIC:
            raise _reject("unsigned", "no signed frame header")
        id_len = frame[len(MAGIC)]
        id_end = len(MAGIC) + 1 + id_len
        body_start = id_end + 8 + _MAC_BYTES
        if not 1 <= id_len <= 32 or len(frame) < body_start:
            raise _reject("unsigned", "a truncated frame header")
        key_id = bytes(view[len(MAGIC) + 1:id_end]).decode("ascii", "replace")
        key = self._keys.get(key_id)
        if key is None:
            raise _reject("unknown_key", f"signed with key {key_id[:32]!r}, which this process does not hold")
        head, mac, body = view[:id_end + 8], view[id_end + 8:body_start], view[body_start:]
        if not hmac.compare_digest(self._mac(key, channel, head, body), mac):
            raise _reject("bad_signature", f"the signature does not match (key {key_id!r}, channel {channel!r})")
        sent_at = int.from_bytes(view[id_end:id_end + 8], "big") / 1000
        age = self._clock() - sent_at
        if not -self.max_age_s <= age <= self.max_age_s:
            raise _reject("stale", f"sent {age:+.1f} s from now; frames are accepted within ±{self.max_age_s:g} s "
                                   "(a replay, or clocks that disagree)")
        return OpenedFrame(bytes(body), key_id, sent_at)

    @staticmethod
    def _mac(key: bytes, channel: str, head: bytes | memoryview, body: bytes | memoryview) -> bytes:
        encoded = channel.encode("utf-8", "surrogateescape")
        h = hmac.new(key, _DOMAIN, hashlib.sha256)
        h.update(len(encoded).to_bytes(4, "big"))
        h.update(encoded)
        h.update(head)
        h.update(body)
        return h.digest()
