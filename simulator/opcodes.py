"""What the gateway does with each payload a client sends (op 1, 2, 3, 4, 6, 8, 31).

Discord's rules, as the simulator enforces them:

- a payload over 4096 bytes or that is not a JSON object → close 4002; an unknown opcode → 4001;
- more than ``gateway_send_limit`` payloads per ``gateway_send_window`` seconds → close 4008;
- anything but HEARTBEAT, IDENTIFY and RESUME before a session exists → close 4003; a second
  IDENTIFY or RESUME on a connection with a session → 4005;
- op 2 IDENTIFY and op 6 RESUME: :mod:`simulator.session_start`;
- op 1 HEARTBEAT → op 11 ACK (none on a silenced socket); its ``d`` is the client's last sequence
  number, kept as the session's ``acked_seq``;
- no heartbeat for 1.5 heartbeat intervals → the connection is closed with 4000 and the session
  stays resumable: "If your app fails to send a heartbeat event in time, your connection will be
  closed and you will be forced to Resume" (``gateway.mdx``, "Sending Heartbeats"). Not 4009:
  that code says "start a new one", which would contradict being forced to resume.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from .fields import is_int, snowflake_of
from .member_requests import MemberRequests
from .session_start import VALID_INTENTS, GatewayCore, identify, resume
from .sessions import dumps

if TYPE_CHECKING:
    from .connection import Connection
    from .sessions import Session

__all__ = ("OpcodeHandler", "GatewayCore", "VALID_INTENTS", "MAX_PAYLOAD_BYTES")

_log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 4096
#: Heartbeat timeout as a multiple of the interval.
HEARTBEAT_GRACE = 1.5

_ACK = '{"t":null,"s":null,"op":11,"d":null}'




class OpcodeHandler:
    """The per-payload logic of a :class:`~simulator.gateway.Gateway`."""

    __slots__ = ("gw", "config", "world", "stats", "members")

    def __init__(self, gateway: GatewayCore) -> None:
        self.gw = gateway
        self.config = gateway.config
        self.world = gateway.world
        self.stats = gateway.stats
        #: Op 8 REQUEST_GUILD_MEMBERS, with the bot-wide whole-list rate limit.
        self.members = MemberRequests(gateway.world, gateway.stats, gateway.config.member_request_interval,
                                      gateway.clock)

    # -- entry -----------------------------------------------------------------------------------

    def on_message(self, conn: Connection, raw: str, resume_url: str, via_resume: bool = False) -> None:
        """Handle one text payload from the client.

        ``resume_url`` is READY's ``resume_gateway_url``; ``via_resume`` whether the client connected to it.
        """
        if len(raw) > MAX_PAYLOAD_BYTES // 4 and len(raw.encode()) > MAX_PAYLOAD_BYTES:
            conn.close(4002, "Payload too large (4096 bytes at most).")
            return
        now = self.gw.clock()
        received = conn.received
        received.append(now)
        window = self.config.gateway_send_window
        while received and now - received[0] >= window:
            received.popleft()
        if len(received) > self.config.gateway_send_limit:
            self.stats.send_limit_closes += 1
            _log.info("gateway client %s sent more than %d payloads in %.0fs: close 4008", conn.peer,
                      self.config.gateway_send_limit, window)
            conn.close(4008, "Rate limited.")
            return
        try:
            payload = json.loads(raw)
        except ValueError:
            conn.close(4002, "Error while decoding payload.")
            return
        if not isinstance(payload, dict):
            conn.close(4002, "Error while decoding payload.")
            return
        op = payload.get("op")
        data = payload.get("d")
        if op == 1:
            self._heartbeat(conn, data)
        elif op == 2:
            identify(self.gw, conn, data, resume_url)
        elif op == 6:
            if not via_resume:
                self.stats.resumes_off_resume_url += 1
            resume(self.gw, conn, data)
        elif op in (3, 4, 8, 31):
            if conn.session is None:
                conn.close(4003, "Not authenticated.")
            elif op == 8:
                self.members.handle(conn, conn.session, data)
            elif op == 31:
                self._request_soundboard(conn, conn.session, data)
            elif not isinstance(data, dict):
                conn.close(4002, "Error while decoding payload.")
            # op 3 PRESENCE_UPDATE and op 4 VOICE_STATE_UPDATE are accepted without effect.
        else:
            conn.close(4001, "Unknown opcode." if is_int(op) else "Invalid opcode.")

    # -- heartbeat -------------------------------------------------------------------------------

    def arm_heartbeat(self, conn: Connection) -> None:
        """Close the connection with 4000 when heartbeats stop; its session stays resumable (see the module)."""
        timeout = self.config.heartbeat_interval_ms / 1000 * HEARTBEAT_GRACE

        def check() -> None:
            idle = self.gw.clock() - conn.last_heartbeat
            if idle >= timeout:
                _log.info("gateway client %s sent no heartbeat for %.1fs: close 4000, resumable", conn.peer, idle)
                self.stats.heartbeat_timeouts += 1
                conn.close(4000, "Heartbeat timed out; resume.", keep_session=True)
            else:
                conn.set_timer("heartbeat", timeout - idle, check)

        conn.last_heartbeat = self.gw.clock()
        conn.set_timer("heartbeat", timeout, check)

    def _heartbeat(self, conn: Connection, data: object) -> None:
        if data is not None and not is_int(data):
            conn.close(4002, "Error while decoding payload.")
            return
        conn.last_heartbeat = self.gw.clock()
        self.stats.heartbeats += 1
        if conn.session is not None:
            conn.session.acknowledge(data)
        delay_ms = self.config.heartbeat_ack_delay_ms
        if delay_ms:
            # a link of known latency; Connection.send drops it if the socket closed or went silent meanwhile
            asyncio.get_running_loop().call_later(delay_ms / 1000, conn.send, _ACK)
        else:
            conn.send(_ACK)  # dropped by a silenced socket

    # -- member chunking and soundboard ----------------------------------------------------------

    def _guild_ids(self, conn: Connection, session: Session, raw: object) -> list[int] | None:
        values = raw if isinstance(raw, list) else [raw]
        ids = [snowflake_of(v) for v in values]
        if not ids or any(i is None for i in ids):
            conn.close(4002, "Error while decoding payload (guild_id).")
            return None
        out = []
        for gid in ids:
            assert gid is not None
            if self.world.guild(gid) is None or (gid >> 22) % session.shard_count != session.shard_id:
                _log.debug("shard %d asked about guild %s it does not carry; ignored", session.shard_id, gid)
                continue
            out.append(gid)
        return out

    def _request_soundboard(self, conn: Connection, session: Session, d: object) -> None:
        if not isinstance(d, dict):
            conn.close(4002, "Error while decoding payload.")
            return
        guild_ids = self._guild_ids(conn, session, d.get("guild_ids"))
        for gid in guild_ids or ():
            session.push("SOUNDBOARD_SOUNDS", dumps({"guild_id": str(gid), "soundboard_sounds": []}))
