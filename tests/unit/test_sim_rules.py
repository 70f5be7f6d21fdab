"""The simulator's rules without sockets: the close-code table."""

from __future__ import annotations

import pytest

from simulator.close_codes import ends_session


@pytest.mark.parametrize(("code", "ended"), [
    (4000, False), (4001, False), (4002, False), (4003, False), (4005, False), (4008, False), (1006, False),
    (4004, True), (4007, True), (4009, True), (4010, True), (4011, True), (4012, True), (4013, True), (4014, True),
    (1000, True), (1001, True),
])
def test_the_close_code_table(code: int, ended: bool) -> None:
    assert ends_session(code) is ended
