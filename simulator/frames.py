"""Dispatch frames: what a session numbers, buffers for RESUME and hands to its socket.

Every dispatch is a :class:`LazyFrame` that knows its sequence number, so the socket's writer can
say how far a session's events really went out (``Session.written_seq``): an event counts as
delivered once written to a websocket, not when it was queued. :class:`DispatchFrame` holds text
already rendered; :class:`LazyGuildCreate` (and the member chunks of
:mod:`simulator.member_requests`) render when written, so queues and RESUME buffers of big guilds
stay small. Control messages (HELLO, heartbeat ACK, op 7, op 9) are plain strings without a
sequence number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .jsontext import dumps

if TYPE_CHECKING:
    from .world import World
    from .world_model import Guild

__all__ = ("dispatch_frame", "LazyFrame", "DispatchFrame", "LazyGuildCreate", "Frame")

_QUOTED: dict[str, str] = {}


def _quote(event: str) -> str:
    quoted = _QUOTED.get(event)
    if quoted is None:
        quoted = _QUOTED[event] = dumps(event)
    return quoted


def dispatch_frame(seq: int, event: str, d_json: str) -> str:
    """An op 0 DISPATCH message around an already serialised ``d``."""
    return f'{{"t":{_quote(event)},"s":{seq},"op":0,"d":{d_json}}}'


class LazyFrame:
    """A dispatch with its sequence number; :meth:`render` gives the op 0 message when a socket writes it."""

    __slots__ = ("seq",)

    seq: int
    #: True when the same event also went to a session with a live socket (resharding overlaps): if this
    #: copy is never written, the bot still got the event, so it does not count as lost.
    elsewhere = False

    def render(self) -> str:
        """The whole op 0 message as JSON text."""
        raise NotImplementedError


class DispatchFrame(LazyFrame):
    """A dispatch whose text is already rendered."""

    __slots__ = ("text", "elsewhere")

    def __init__(self, seq: int, text: str, elsewhere: bool = False) -> None:
        self.seq = seq
        self.text = text
        self.elsewhere = elsewhere

    def render(self) -> str:
        return self.text


class LazyGuildCreate(LazyFrame):
    """A GUILD_CREATE for a session with these intents and ``large_threshold``."""

    __slots__ = ("guild", "world", "intents", "large_threshold")

    def __init__(self, seq: int, guild: Guild, world: World, intents: int = (1 << 26) - 1,
                 large_threshold: int = 250) -> None:
        self.seq = seq
        self.guild = guild
        self.world = world
        self.intents = intents
        self.large_threshold = large_threshold

    def render(self) -> str:
        return dispatch_frame(self.seq, "GUILD_CREATE",
                              self.world.guild_create_json(self.guild, self.intents, self.large_threshold))


#: What a connection's queue holds: a control message (text) or a dispatch frame.
Frame = str | LazyFrame
