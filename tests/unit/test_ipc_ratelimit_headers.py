"""Parsing Discord's rate-limit headers into what the shared limiter records."""

from __future__ import annotations

import time

import pytest

from ipc.ratelimit_headers import ResponseInfo


def test_success_headers() -> None:
    info = ResponseInfo(200, {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "3",
                              "X-RateLimit-Reset-After": "1.234", "X-RateLimit-Bucket": "abcd"})
    assert (info.limit, info.remaining, info.reset_after, info.bucket) == (5, 3, 1.234, "abcd")
    assert info.has_limits and not info.counts_as_invalid and not info.is_global


def test_reset_epoch_is_used_when_reset_after_is_missing() -> None:
    sent = time.time()
    info = ResponseInfo(200, {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                              "X-RateLimit-Reset": f"{sent + 2:.3f}"})
    parsed = time.time()
    assert info.reset_after is not None and 2 - (parsed - sent) - 0.001 <= info.reset_after <= 2.001


def test_missing_or_malformed_headers_mean_no_limits() -> None:
    assert not ResponseInfo(200, {}).has_limits
    bad = ResponseInfo(200, {"X-RateLimit-Limit": "five", "X-RateLimit-Remaining": "1",
                             "X-RateLimit-Reset-After": "nan"})
    assert bad.limit is None and bad.reset_after is None and not bad.has_limits


@pytest.mark.parametrize(("headers", "body_retry", "body_global", "scope", "is_global", "invalid", "retry"), [
    ({"X-RateLimit-Scope": "user", "Retry-After": "2"}, 1.5, False, "user", False, True, 1.5),
    ({"X-RateLimit-Scope": "shared", "Retry-After": "3"}, None, None, "shared", False, False, 3.0),
    ({"X-RateLimit-Global": "true", "Retry-After": "1"}, 0.25, True, "", True, True, 0.25),
    ({"X-RateLimit-Scope": "global"}, None, None, "global", True, True, 1.0),
    ({"X-RateLimit-Reset-After": "0.7"}, None, None, "", False, True, 0.7),
])
def test_429s(headers: dict[str, str], body_retry: float | None, body_global: bool | None, scope: str,
              is_global: bool, invalid: bool, retry: float) -> None:
    info = ResponseInfo(429, headers, body_retry_after=body_retry, body_global=body_global)
    assert (info.scope, info.is_global, info.counts_as_invalid, info.retry_after) == (scope, is_global, invalid,
                                                                                      retry)


@pytest.mark.parametrize(("status", "invalid"), [(200, False), (204, False), (400, False), (401, True),
                                                 (403, True), (404, False), (500, False)])
def test_which_statuses_count_toward_the_ban(status: int, invalid: bool) -> None:
    assert ResponseInfo(status, {}).counts_as_invalid is invalid
