"""``POST /_sim/token/reset``: the owner resets the bot token in the developer portal.

On Discord, an exhausted session-start budget ends every session and resets the token
(``developers/events/gateway.mdx``, "Identifying": "all active sessions for the app will be
terminated, the bot token will be reset, and the owner will receive an email notification. It's up
to the owner to update their application with the new token"). The simulator does the same, and
this route is the way back: it issues a new token, as resetting it in the portal does (every
session still open ends with 4004, since its token is no longer valid), and refills the IDENTIFY
budget or sets what is left of it.

Body (all optional): ``{"token": "the new token", "identify_remaining": N}``. Without ``token`` a
random one is issued; without ``identify_remaining`` the budget is full again (a fresh 24 h
period). Answers ``{"token", "sessions_ended", "session_start_limit": {"total", "remaining",
"reset_after", "max_concurrency"}}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .control_input import ControlError, control_handler, integer, json_body, string
from .rest_common import json_response

if TYPE_CHECKING:
    from .state import SimState

__all__ = ("setup", "reset_token")


async def reset_token(request: web.Request, state: SimState) -> web.Response:
    body = await json_body(request)
    token = string(body, "token", required=False, max_len=200)
    if token is not None and (not token or any(c.isspace() for c in token)):
        raise ControlError(400, "token must be a non-empty string without whitespace")
    config = state.config
    remaining = integer(body, "identify_remaining", config.session_start_total, lo=0, hi=config.session_start_total)
    hub = state.gateway
    state.application.reset_token(token)
    state.stats.token_resets += 1
    ended = hub.terminate_sessions(4004, "Authentication failed.")
    hub.set_identify_remaining(None if remaining == config.session_start_total else remaining)
    return json_response({
        "token": state.application.token, "sessions_ended": ended,
        "session_start_limit": {"total": config.session_start_total, "remaining": hub.identify_remaining(),
                                "reset_after": hub.identify_reset_after_ms(),
                                "max_concurrency": config.max_concurrency},
    })


def setup(app: web.Application) -> None:
    """Add ``POST /_sim/token/reset`` to ``app``."""
    app.router.add_post("/_sim/token/reset", control_handler(reset_token))
