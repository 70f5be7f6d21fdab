"""Gateway close codes, and what a server-side close does to the session it ends.

Discord's table (``developers/topics/opcodes-and-status-codes.mdx``, "Gateway Close Event Codes",
column "Reconnect") sorts the codes in three groups, and the simulator treats a session the way
each group tells the client to:

- **fatal** (Reconnect ``false``): 4004 Authentication failed, 4010 Invalid shard, 4011 Sharding
  required, 4012 Invalid API version, 4013 Invalid intent(s), 4014 Disallowed intent(s). The
  client must not reconnect; the session is gone. discord.py raises on them
  (``DiscordWebSocket._can_handle_close``).
- **new session** (Reconnect ``true``, "Reconnect and start a new session"): 4007 Invalid ``seq``
  and 4009 Session timed out. The session is ended, so the RESUME discord.py tries first (it
  resumes after every close it can handle) is answered with op 9 ``d: false``, and it
  re-identifies (``gateway.mdx``, "Resuming": "If the ``d`` field is set to ``false`` … send an
  Identify"). The simulator sends 4007 for a RESUME with a bad ``seq``, and 4009 only when asked to
  (``disconnect`` fault): missed heartbeats are not a session timeout (see below).
- **resumable**: every other code (4000 Unknown error, 4001, 4002, 4003, 4005, 4008, and the
  simulator's faults): the session stays resumable for ``--resume-ttl`` seconds (``gateway.mdx``,
  "Resuming": "It's disconnected with a close code that indicates it can reconnect").

A close with 1000 or 1001 also ends the session (``gateway.mdx``, "Initiating a Disconnect": "your
session will be invalidated"), whoever sends it.

Missed heartbeats close the connection with 4000 and keep the session: "If your app fails to send a
heartbeat event in time, your connection will be closed and you will be forced to Resume"
(``gateway.mdx``, "Sending Heartbeats"). Discord documents no code for it; a code of the "new
session" group would make the resume it promises impossible.
"""

from __future__ import annotations

__all__ = ("FATAL_CLOSE_CODES", "NEW_SESSION_CLOSE_CODES", "CLEAN_CLOSE_CODES", "ends_session", "CLOSE_REASONS")

#: Reconnect ``false``: the client must stop, and the session is gone.
FATAL_CLOSE_CODES = frozenset({4004, 4010, 4011, 4012, 4013, 4014})
#: Reconnect ``true``, but "start a new session": the session cannot be resumed.
NEW_SESSION_CLOSE_CODES = frozenset({4007, 4009})
#: A normal close: the session is invalidated.
CLEAN_CLOSE_CODES = frozenset({1000, 1001})

#: The table's descriptions, used as close reasons.
CLOSE_REASONS: dict[int, str] = {
    4000: "Unknown error.", 4001: "Unknown opcode.", 4002: "Decode error.", 4003: "Not authenticated.",
    4004: "Authentication failed.", 4005: "Already authenticated.", 4007: "Invalid seq.", 4008: "Rate limited.",
    4009: "Session timed out.", 4010: "Invalid shard.", 4011: "Sharding required.", 4012: "Invalid API version.",
    4013: "Invalid intent(s).", 4014: "Disallowed intent(s).",
}


def ends_session(code: int) -> bool:
    """Whether a server-side close with ``code`` leaves the session unresumable (see the module)."""
    return code in FATAL_CLOSE_CODES or code in NEW_SESSION_CLOSE_CODES or code in CLEAN_CLOSE_CODES
