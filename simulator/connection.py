"""One gateway websocket: an ordered send queue drained by a writer task, and a server-side close.

Producers never await: :meth:`Connection.send` appends to a deque and wakes the writer, so the
synchronous hub methods (``dispatch_guild`` …) can feed sockets. The writer encodes (zstd-stream,
zlib-stream or text), writes with aiohttp and yields to the loop every few frames; aiohttp applies
backpressure when the peer reads slowly. A close goes through the same queue, so everything sent
before it (an op 9, the last dispatches) reaches the client first.

Delivery is counted where it happens: each dispatch the writer has written moves its session's
``written_seq`` forward, so frames still queued when the socket dies are not taken for delivered.
A silenced connection (the ``silent`` fault) stays open but writes nothing more: no dispatches, no
heartbeat ACKs, until one side closes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from .compression import Encoder
from .frames import Frame, LazyFrame

if TYPE_CHECKING:
    from .sessions import Session

__all__ = ("Connection", "CloseRequest")

_log = logging.getLogger(__name__)

#: Frames written before the writer yields to the event loop.
_YIELD_EVERY = 64


class CloseRequest:
    """A queued server-side close."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Connection:
    """A client's websocket and its session (once identified or resumed).

    Parameters
    ----------
    ws:
        The prepared aiohttp websocket.
    encoder:
        Transport compression for this connection.
    peer:
        For logs.
    """

    __slots__ = ("ws", "encoder", "peer", "session", "owner", "_queue", "_wake", "_writer", "close_code",
                 "keep_session", "received", "last_heartbeat", "opened", "_timers", "closed", "silent", "writable",
                 "done", "__weakref__")

    def __init__(self, ws: web.WebSocketResponse, encoder: Encoder, peer: str) -> None:
        self.ws = ws
        self.encoder = encoder
        self.peer = peer
        self.session: Session | None = None
        #: The session this socket carried (kept after a detach, for the writer's ``written_seq``).
        self.owner: Session | None = None
        self._queue: deque[Frame | CloseRequest] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        #: The code of a server-side close, once one was requested.
        self.close_code: int | None = None
        #: Whether the session stays resumable after the server-side close.
        self.keep_session = True
        #: Arrival times of the client's payloads inside the send-limit window.
        self.received: deque[float] = deque()
        self.opened = self.last_heartbeat = time.monotonic()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.closed = False
        #: The ``silent`` fault: open, but nothing more is written.
        self.silent = False
        #: False once closing, closed or silent: what is sent is dropped.
        self.writable = True
        #: True once the writer has stopped for good.
        self.done = False

    def __repr__(self) -> str:
        return f"<Connection {self.peer} session={self.session!r}>"

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name=f"gateway-writer-{self.peer}")

    @property
    def closing(self) -> bool:
        return self.close_code is not None or self.closed

    def send(self, frame: Frame) -> None:
        """Queue a message (JSON text or a dispatch frame); never blocks. Dropped when not writable."""
        if not self.writable:
            return
        self._queue.append(frame)
        self._wake.set()

    def close(self, code: int, reason: str = "", *, keep_session: bool = True) -> None:
        """Close after everything queued so far; ``keep_session`` says whether the session stays resumable."""
        if self.close_code is not None or self.closed:
            return
        if code != 1001:
            _log.info("closing gateway connection from %s: %d %s", self.peer, code, reason)
        self.close_code = code
        self.keep_session = keep_session
        self.writable = False
        self._queue.append(CloseRequest(code, reason))
        self._wake.set()

    def silence(self) -> None:
        """Write nothing more (frames already queued are dropped too); the socket stays open."""
        if self.silent or self.closing:
            return
        self.silent = True
        self.writable = False
        self._queue.clear()

    def set_timer(self, name: str, delay: float, callback: Callable[[], object]) -> None:
        """(Re)arm the named timer; every timer is cancelled when the connection ends."""
        if self.closed:
            return
        old = self._timers.get(name)
        if old is not None:
            old.cancel()
        self._timers[name] = asyncio.get_running_loop().call_later(delay, callback)

    async def _write_loop(self) -> None:
        ws = self.ws
        queue = self._queue
        encode = self.encoder.encode
        send = ws.send_bytes if self.encoder.binary else None
        written = 0
        try:
            while True:
                if not queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                item = queue.popleft()
                if type(item) is str:
                    text, seq = item, 0
                elif isinstance(item, LazyFrame):
                    text, seq = item.render(), item.seq
                else:
                    assert isinstance(item, CloseRequest)
                    await ws.close(code=item.code, message=item.reason.encode()[:120])
                    return
                if send is not None:
                    await send(encode(text))
                else:
                    await ws.send_str(text)
                if seq:
                    owner = self.owner
                    if owner is not None and seq > owner.written_seq:
                        owner.written_seq = seq
                written += 1
                if written % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away; the reader side notices and cleans up.
            _log.debug("gateway writer for %s stopped: %s", self.peer, exc)
        except Exception:  # noqa: BLE001 - a frame that cannot be built must not leave a dead socket open
            _log.exception("gateway writer for %s failed; closing 4000", self.peer)
            self.close_code = 4000
            try:
                await ws.close(code=4000, message=b"Internal error.")
            except Exception:  # noqa: BLE001
                pass
        finally:
            # Nothing is written any more: later dispatches stay in their session's buffer.
            self.writable = False
            queue.clear()

    async def finish(self, timeout: float = 12.0) -> None:
        """Stop the writer once the reader is done: let a requested close finish, drop unsent frames."""
        self.closed = True
        self.writable = False
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        try:
            await self._stop_writer(timeout)
        finally:
            self.done = True

    async def _stop_writer(self, timeout: float) -> None:
        writer = self._writer
        if writer is None or writer.done():
            return
        if self.close_code is not None:
            # The writer sends what was queued before the close, then the close frame itself.
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout)
                return
            except TimeoutError:
                _log.warning("gateway close to %s did not finish in %.0fs", self.peer, timeout)
        writer.cancel()
        try:
            await writer
        except asyncio.CancelledError:
            pass
