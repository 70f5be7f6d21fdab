"""The stamping keep-alive handler: latency from the heartbeat's send, whatever order discord.py's thread
and the ACK come in; the install's checks of discord.py's internals; the per-connection check."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import discord.gateway
import pytest
from discord.gateway import DiscordWebSocket, KeepAliveHandler

from shard import true_latency
from shard.true_latency import BEHIND, INSTALLED, UNFIXED, StampedKeepAlive, TrueLatency, problems


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[float], None]]:
    now = [100.0]
    monkeypatch.setattr(StampedKeepAlive, "clock", staticmethod(lambda: now[0]))

    def set_to(value: float) -> None:
        now[0] = value
    yield set_to


@pytest.fixture
def keep_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test installs, discord.py's handler is back afterwards."""
    monkeypatch.setattr(discord.gateway, "KeepAliveHandler", KeepAliveHandler)
    monkeypatch.setattr(StampedKeepAlive, "behind_after_s", StampedKeepAlive.behind_after_s)


def _ws(session_id: str | None = "s1") -> Any:
    return SimpleNamespace(thread_id=0, _max_heartbeat_timeout=60.0, HEARTBEAT=1, sequence=7, session_id=session_id)


def _handler(ws: Any, behind_after_s: float = 10.0) -> StampedKeepAlive:
    handler = StampedKeepAlive(ws=ws, interval=41.25, shard_id=3)
    handler.behind_after_s = behind_after_s
    return handler


def _behind(shard: str = "3") -> float:
    return BEHIND.labels(shard)._value.get()


def test_an_ack_read_before_discord_py_stamps_its_send_is_timed_from_the_send(clock: Callable[[float], None]) -> None:
    """discord.py's race: the thread stamps ``_last_send`` only after the send returned, and on a fast link
    the loop reads the ACK first. The previous heartbeat was 41.25 s earlier."""
    handler = _handler(_ws())
    handler._last_send = 100.0 - 41.25  # the previous heartbeat, as discord.py stamped it
    clock(100.0)
    assert handler.get_payload() == {"op": 1, "d": 7}
    clock(100.05)
    handler.ack()  # before the thread's post-send stamp
    handler._last_send = 100.06  # discord.py's late stamp changes nothing
    assert handler.latency == pytest.approx(0.05)
    assert handler._last_ack == 100.05


def test_an_ack_read_after_the_late_stamp_is_timed_from_the_send_too(clock: Callable[[float], None]) -> None:
    handler = _handler(_ws())
    clock(200.0)
    handler.get_payload()
    handler._last_send = 200.01  # the send took 10 ms
    clock(200.08)
    handler.ack()
    assert handler.latency == pytest.approx(0.08)


def test_each_ack_is_timed_against_its_own_heartbeat_when_two_are_in_flight(
        clock: Callable[[float], None]) -> None:
    handler = _handler(_ws())
    clock(400.0)
    handler.get_payload()  # the heartbeat sent on READY
    clock(400.01)
    handler.get_payload()  # the thread's, 10 ms later
    clock(400.06)
    handler.ack()
    assert handler.latency == pytest.approx(0.06)
    clock(400.07)
    handler.ack()
    assert handler.latency == pytest.approx(0.06)


def test_heartbeats_discord_asks_for_are_timed_from_their_send(clock: Callable[[float], None]) -> None:
    handler = _handler(_ws())
    clock(300.0)
    assert handler.beat() == {"op": 1, "d": 7}  # op 1 from the gateway: discord.py answers with beat()
    clock(300.02)
    handler.ack()
    assert handler.latency == pytest.approx(0.02)


def test_discord_py_alone_reports_the_previous_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug, on discord.py's own handler: the same sequence reads one heartbeat interval."""
    handler = KeepAliveHandler(ws=_ws(), interval=41.25, shard_id=3)
    monkeypatch.setattr(discord.gateway.time, "perf_counter", lambda: 100.05)
    handler._last_send = 100.0 - 41.25
    handler.get_payload()
    handler.ack()
    assert handler.latency == pytest.approx(41.3)


def test_a_late_ack_warns_and_counts_once_the_connection_has_a_session(
        clock: Callable[[float], None], caplog: pytest.LogCaptureFixture) -> None:
    before = _behind()
    handler = _handler(_ws(), behind_after_s=0.5)
    clock(10.0)
    handler.get_payload()
    clock(10.4)
    with caplog.at_level(logging.WARNING, logger=true_latency.__name__):
        handler.ack()
        assert _behind() == before and not caplog.records
        clock(20.0)
        handler.get_payload()
        clock(20.7)
        handler.ack()
    assert _behind() == before + 1
    assert [r.getMessage() for r in caplog.records] == ["Can't keep up, shard ID 3 websocket is 0.7s behind."]


def test_acks_read_while_waiting_to_identify_neither_warn_nor_count(clock: Callable[[float], None],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    before = _behind()
    handler = _handler(_ws(session_id=None), behind_after_s=0.5)
    clock(10.0)
    handler.get_payload()
    clock(30.0)  # the socket was not read while the shard waited in the identify queue
    with caplog.at_level(logging.WARNING, logger=true_latency.__name__):
        handler.ack()
    assert handler.latency == float("inf") and handler._last_ack == 30.0
    assert _behind() == before and not caplog.records


class _Bot:
    def __init__(self) -> None:
        self.listeners: list[tuple[Any, str]] = []

    def add_listener(self, func: Any, name: str) -> None:
        self.listeners.append((func, name))


@pytest.mark.usefixtures("keep_handler")
def test_install_replaces_discord_py_handler_and_watches_the_shards() -> None:
    assert problems() == []
    bot = _Bot()
    latency = TrueLatency(2.5, lambda sid: None)
    assert latency.install(bot) is True  # type: ignore[arg-type]
    assert discord.gateway.KeepAliveHandler is StampedKeepAlive
    assert StampedKeepAlive.behind_after_s == 2.5
    assert INSTALLED._value.get() == 1
    assert [name for _, name in bot.listeners] == ["on_shard_connect", "on_shard_resumed"]
    assert latency.install(_Bot()) is True  # a second install (a test's second cluster) changes nothing
    assert problems() == []


@pytest.mark.usefixtures("keep_handler")
def test_install_says_so_loudly_when_discord_py_moved(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    async def received_message(self: Any, msg: Any) -> None:  # a release that builds its handler elsewhere
        self._keep_alive = None

    monkeypatch.setattr(DiscordWebSocket, "received_message", received_message)
    with caplog.at_level(logging.ERROR, logger=true_latency.__name__):
        assert TrueLatency(10.0, lambda sid: None).install(_Bot()) is False  # type: ignore[arg-type]
    assert discord.gateway.KeepAliveHandler is KeepAliveHandler  # discord.py's handler is left alone
    assert INSTALLED._value.get() == 0
    [record] = caplog.records
    assert "no longer creates KeepAliveHandler by name" in record.getMessage()
    assert "no longer calls the handler's ack()" in record.getMessage()


async def test_on_ready_a_shard_not_measured_yet_sends_a_heartbeat(clock: Callable[[float], None]) -> None:
    sent: list[Any] = []

    async def send_heartbeat(data: Any) -> None:
        sent.append(data)

    ws = _ws()
    ws.send_heartbeat = send_heartbeat
    handler = _handler(ws)
    ws._keep_alive = handler
    latency = TrueLatency(10.0, lambda sid: ws)
    clock(50.0)
    await latency.check(3)
    assert sent == [{"op": 1, "d": 7}] and handler.sent_at == 50.0
    clock(50.004)
    handler.ack()
    assert handler.latency == pytest.approx(0.004)
    await latency.check(3)  # measured: nothing more is sent
    assert len(sent) == 1


async def test_a_connection_without_the_stamping_handler_is_logged_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    sockets = {0: SimpleNamespace(_keep_alive=_handler(_ws())),
               1: SimpleNamespace(_keep_alive=KeepAliveHandler(ws=_ws(), interval=1.0, shard_id=1)),
               2: SimpleNamespace(_keep_alive=None)}
    latency = TrueLatency(10.0, sockets.__getitem__)
    before = UNFIXED._value.get()
    with caplog.at_level(logging.ERROR, logger=true_latency.__name__):
        for sid in sockets:
            await latency.check(sid)
    assert UNFIXED._value.get() == before + 1
    [record] = caplog.records
    assert record.getMessage().startswith("shard 1: its gateway connection times heartbeats with KeepAliveHandler")


def test_behind_after_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TrueLatency(0, lambda sid: None)
