"""How the discord.py plug-in names buckets: discord.py's major parameters, minus the secrets."""

from __future__ import annotations

from discord.http import Route

from shard.rest_hook import INTERACTION_CALLBACK_PATH, _RouteInfo, major_parameters


def test_major_parameters_match_discord_py_without_tokens() -> None:
    send = Route("POST", "/channels/{channel_id}/messages", channel_id=123)
    assert major_parameters(send) == send.major_parameters == "123"
    guild = Route("GET", "/guilds/{guild_id}/members", guild_id=9)
    assert major_parameters(guild) == "9"
    follow_up = Route("POST", "/webhooks/{webhook_id}/{webhook_token}", webhook_id=77, webhook_token="s3cr3t-token")
    major = major_parameters(follow_up)
    assert major.startswith("77+t") and "s3cr3t" not in major
    other = Route("POST", "/webhooks/{webhook_id}/{webhook_token}", webhook_id=77, webhook_token="another")
    assert major_parameters(other) != major  # still one bucket per webhook token, as on Discord


def test_interaction_callbacks_are_exempt_and_others_are_not() -> None:
    callback = _RouteInfo(Route("POST", INTERACTION_CALLBACK_PATH, webhook_id=1, webhook_token="t"), None)
    assert callback.global_exempt and callback.bucket_exempt
    follow_up = _RouteInfo(Route("POST", "/webhooks/{webhook_id}/{webhook_token}", webhook_id=1, webhook_token="t"),
                           30.0)
    assert not follow_up.global_exempt and not follow_up.bucket_exempt and follow_up.max_wait == 30.0
    # a user's answer is never held back by an invalid-request guard or an open breaker
    assert callback.guard_exempt and callback.breaker_exempt
    assert follow_up.guard_exempt and follow_up.breaker_exempt
    edit = _RouteInfo(Route("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", webhook_id=1,
                            webhook_token="t"), None)
    assert edit.guard_exempt and edit.breaker_exempt
    send = _RouteInfo(Route("POST", "/channels/{channel_id}/messages", channel_id=5), None)
    assert not send.guard_exempt and not send.breaker_exempt


async def test_a_wait_past_max_wait_becomes_discord_ratelimited() -> None:
    """discord.py's own contract for ``max_ratelimit_timeout``: the limiter's refusal surfaces as ``RateLimited``."""
    from types import SimpleNamespace

    import discord
    import pytest

    from ipc.ratelimit import WaitTooLong
    from shard.rest_hook import _ROUTE, RestHook

    class Limiter:
        shared = True

        async def acquire(self, *args: object, **kwargs: object) -> None:
            raise WaitTooLong(42.5)

    hook = RestHook(SimpleNamespace(), Limiter())  # type: ignore[arg-type]
    token = _ROUTE.set(_RouteInfo(Route("GET", "/users/@me"), 30.0))
    try:
        with pytest.raises(discord.RateLimited) as info:
            await hook.on_request_start(None, SimpleNamespace(), None)  # type: ignore[arg-type]
    finally:
        _ROUTE.reset(token)
    assert info.value.retry_after == 42.5
