"""The lease book's decisions, without Redis: what a cluster spends locally, reports, settles and gives back."""

from __future__ import annotations

import pytest

from ipc import ratelimit_scripts as lua
from ipc.keys import Keys
from ipc.ratelimit_headers import ResponseInfo
from ipc.ratelimit_lease import LeaseBook, Ticket

ROUTE = "POST /channels/{channel_id}/messages"


def book(**options: object) -> LeaseBook:
    settings: dict[str, object] = dict(global_rate=50, global_window=1.05, lease_ttl=0.2, lease_fraction=0.25,
                                       inflight_ttl=10.0, guard_soft=5000, guard_hard=9000, guard_window=600.0,
                                       guard_max_delay=2.0, probe_poll=0.025, keep=60.0)
    settings.update(options)
    return LeaseBook(Keys("unit"), **settings)  # type: ignore[arg-type]


def reply(*, status: int = lua.TAKEN, wait: int = 0, bid: str = "h:1", win: int = 1, estimate: int = 0, served: int,
          need_b: int, need_g: int, lease_b: int = 0, lease_g: int = 0, reset_in: int = 1000, limit: int = 5,
          confirmed: int = 1) -> list[object]:
    """A ``CLAIM`` reply, as Redis sends it."""
    return [status, wait, bid.encode(), win, estimate, served, need_b, need_g, lease_b, lease_g, reset_in, limit,
            confirmed]


def ok(remaining: int, reset_after: float, limit: int = 5, bucket: str = "h", status: int = 200) -> ResponseInfo:
    return ResponseInfo(status, {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
                                 "X-RateLimit-Reset-After": f"{reset_after:.3f}", "X-RateLimit-Bucket": bucket})


def leased(b: LeaseBook, now: float, *, lease_b: int = 2, lease_g: int = 3, **kw: object) -> Ticket:
    """One waiter served by a claim that also leased ``lease_b`` bucket tokens and ``lease_g`` global slots."""
    claim = b.begin_claim(ROUTE, "1", global_exempt=False, bucket_exempt=False, guard_exempt=False,
                          guard_served=False, waiters=1, now=now)
    out = b.finish_claim(claim, reply(served=1, need_b=1, need_g=1, lease_b=lease_b, lease_g=lease_g, **kw),  # type: ignore[arg-type]
                         live=1, now=now + 0.002)
    assert out.status == lua.TAKEN and len(out.tickets) == 1
    return out.tickets[0]


def take(b: LeaseBook, now: float, major: str = "1") -> Ticket | None:
    return b.take(ROUTE, major, global_exempt=False, bucket_exempt=False, guard_exempt=False, now=now)


def test_a_lease_is_spent_locally_until_it_runs_out_or_ends() -> None:
    b = book()
    leased(b, 100.0, lease_b=2, lease_g=3)
    first, second = take(b, 100.01), take(b, 100.02)
    assert first is not None and second is not None and first.token != second.token
    assert take(b, 100.03) is None  # two bucket tokens leased, both spent: ask Redis again
    assert take(b, 100.03, major="2") is None  # a global slot alone is not enough for another bucket
    b2 = book()
    leased(b2, 100.0, lease_b=2, lease_g=3)
    assert take(b2, 100.0 + 0.2) is None  # the lease ended (valid 0.2 s from the claim's sending)


def test_a_bucket_lease_ends_at_the_buckets_reset_when_that_comes_first() -> None:
    b = book()
    leased(b, 100.0, reset_in=50)
    assert take(b, 100.04) is not None
    assert take(b, 100.05) is None


def test_unused_leases_go_back_to_redis_when_they_end() -> None:
    b = book()
    leased(b, 100.0, lease_b=2, lease_g=3)  # bucket tokens 1 and 2 leased (0 went to the waiter)
    used = take(b, 100.01)  # one bucket token and one global slot used
    assert used is not None
    b.expire(100.3)
    ops = b.take_settles()
    unused = 3 - int(used.token.rsplit("b", 1)[1])  # the other of tokens 1 and 2
    assert ("u", "h:1", used.token.split(":")[0], unused, 1, 1) in ops  # refunded in its window
    kinds = {op[0]: op for op in ops if op[0] in "rd"}
    assert kinds["r"][3:5] == (1, 1)  # the used global slot is restamped to the settlement's time ...
    assert kinds["d"][3:5] == (2, 2)  # ... the two unused ones are removed


def test_answers_that_agree_with_the_lease_only_settle_their_token() -> None:
    b = book()
    ticket = leased(b, 100.0, lease_b=0, lease_g=0, reset_in=800)
    b.answered(ticket, ok(remaining=3, reset_after=0.7), now=100.05)  # Discord's reset: 100.75 < 100.8
    assert not b.take_reports(100.1)
    assert b.take_settles() == [("b", "h:1", ticket.token.split(":")[0], 0, 1, 1)]


@pytest.mark.parametrize(("why", "response", "confirmed"), [
    ("the server's reset may be later than Redis's", ok(remaining=3, reset_after=0.9), 1),
    ("the first answer in a window Redis opened itself", ok(remaining=3, reset_after=0.5), 0),
    ("the limit changed", ok(remaining=3, reset_after=0.5, limit=10), 1),
    ("the route's hash changed", ok(remaining=3, reset_after=0.5, bucket="other"), 1),
    ("a 429", ResponseInfo(429, {"X-RateLimit-Scope": "user", "Retry-After": "1"}), 1),
    ("a 403 for the guard", ResponseInfo(403, {}), 1),
])
def test_answers_that_change_shared_state_are_reported(why: str, response: ResponseInfo, confirmed: int) -> None:
    b = book()
    ticket = leased(b, 100.0, lease_b=0, lease_g=0, reset_in=800, confirmed=confirmed)
    b.answered(ticket, response, now=100.05)
    reports = b.take_reports(100.1)
    assert len(reports) == 1, why
    args, token = reports[0]
    assert args[6] == ticket.token and token is not None  # the report frees the token too
    assert b.urgent or not b.pending


def test_fewer_tokens_left_at_discord_than_the_lease_holds_drops_the_difference() -> None:
    b = book()
    ticket = leased(b, 100.0, lease_b=2, lease_g=3)
    b.answered(ticket, ok(remaining=0, reset_after=0.5), now=100.05)  # someone else spent the window
    assert len(b.take_reports(100.1)) == 1
    assert take(b, 100.06) is None  # the two leased tokens are gone
    dropped = [op for op in b.take_settles() if op[0] == "b"]
    assert len(dropped) == 2  # freed in Redis, not refunded: Discord says there are none


def test_a_global_429_voids_the_global_lease_at_once() -> None:
    b = book()
    ticket = leased(b, 100.0, lease_b=2, lease_g=3)
    b.answered(ticket, ResponseInfo(429, {"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global",
                                          "Retry-After": "1"}, body_retry_after=0.5, body_global=True), now=100.05)
    assert take(b, 100.06) is None
    assert any(op[0] == "d" for op in b.take_settles())  # the unused slots go back


def test_no_leases_and_no_fast_path_while_the_guard_is_above_soft() -> None:
    b = book(guard_soft=10, guard_hard=20)
    leased(b, 100.0, lease_b=2, lease_g=3)
    b.estimate = 11
    assert take(b, 100.01) is None  # the guard may delay this request: Redis must decide
    for _ in range(20):
        b.note_demand((ROUTE, "1"), False, 100.02)
    claim = b.begin_claim(ROUTE, "1", global_exempt=False, bucket_exempt=False, guard_exempt=False,
                          guard_served=True, waiters=1, now=100.02)
    assert claim.args[12:14] == ["0", "0"] and not claim.bucket_reserved  # asks for no lease, spends none


def test_an_idle_cluster_asks_for_no_lease_and_a_burst_for_one() -> None:
    b = book()
    claim = b.begin_claim(ROUTE, "1", global_exempt=False, bucket_exempt=False, guard_exempt=False,
                          guard_served=False, waiters=1, now=100.0)
    assert claim.args[12:14] == ["0", "0"]
    b.abort_claim(claim)
    for i in range(30):
        b.note_demand((ROUTE, "1"), False, 100.0 + i * 0.01)  # 30 requests in 0.3 s
    claim = b.begin_claim(ROUTE, "1", global_exempt=False, bucket_exempt=False, guard_exempt=False,
                          guard_served=False, waiters=1, now=100.3)
    assert int(claim.args[12]) >= 3 and int(claim.args[13]) >= 3


def test_interaction_callbacks_need_no_redis_call() -> None:
    b = book()
    ticket = b.take("POST /interactions/{webhook_id}/{webhook_token}/callback", "1+tabc", global_exempt=True,
                    bucket_exempt=True, guard_exempt=True, now=100.0)
    assert ticket is not None and ticket.bucket == ""
    b.estimate = 10_000
    assert b.take("POST /interactions/{webhook_id}/{webhook_token}/callback", "1+tabc", global_exempt=True,
                  bucket_exempt=True, guard_exempt=True, now=100.0) is not None  # never held by the guard


def test_a_wait_on_the_global_window_holds_the_clusters_other_requests() -> None:
    b = book()
    claim = b.begin_claim(ROUTE, "1", global_exempt=False, bucket_exempt=False, guard_exempt=False,
                          guard_served=False, waiters=1, now=100.0)
    out = b.finish_claim(claim, reply(status=lua.WAIT_GLOBAL, wait=300, served=0, need_b=0, need_g=0),
                         live=1, now=100.002)
    assert out.status == lua.WAIT_GLOBAL and not out.tickets
    assert b.global_open_at == pytest.approx(100.302)
