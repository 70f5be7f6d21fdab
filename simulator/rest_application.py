"""``GET /applications/@me``, ``GET /oauth2/applications/@me`` and ``PATCH /applications/@me``.

The application object carries everything discord.py's ``AppInfo`` reads, with the simulator's
live ``flags`` (and ``flags_new``, their string form: ``developers/resources/application.mdx``,
"Application Flags"). ``PATCH /applications/@me`` ("Edit Current Application") takes the fields
Discord lets a bot edit: ``custom_install_url``, ``description``,
``role_connections_verification_url``, ``install_params``, ``integration_types_config``,
``flags``, ``icon``, ``cover_image``, ``interactions_endpoint_url``, ``tags``,
``event_webhooks_url``, ``event_webhooks_status`` and ``event_webhooks_types``; other keys are
ignored. "Only limited intent flags (``GATEWAY_PRESENCE_LIMITED``, ``GATEWAY_GUILD_MEMBERS_LIMITED``,
and ``GATEWAY_MESSAGE_CONTENT_LIMITED``) can be updated via the API": a ``flags`` that changes any
other bit is a 400 50035 (the docs name no field error code; the simulator says
``APPLICATION_FLAGS_NOT_EDITABLE``). ``flags: null`` clears the editable ones, as discord.py's
``AppInfo.edit(flags=None)`` asks.

Taking a privileged intent away closes (4014) every session that identified with it: discord.py
warns that "editing the limited intent flags leads to the termination of the bot"
(``AppInfo.edit``). Later IDENTIFYs asking for it are closed 4014 too (``simulator.session_start``).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .application import EDITABLE_FLAGS
from .rest_common import RestRoute, form_error, json_response, read_body, route

if TYPE_CHECKING:
    from .state import SimState

__all__ = ("APPLICATION_ROUTES", "application_object")

_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]+$")
_URL_FIELDS = ("custom_install_url", "role_connections_verification_url", "interactions_endpoint_url",
               "event_webhooks_url")
_DEFAULTS: dict[str, Any] = {
    "description": "A simulated Innkeeper application.", "icon": None, "cover_image": None, "tags": [],
    "install_params": None, "integration_types_config": {"0": {}}, "interactions_endpoint_url": None,
    "role_connections_verification_url": None, "custom_install_url": None, "event_webhooks_url": None,
    "event_webhooks_status": 1, "event_webhooks_types": [],
}


def application_object(state: SimState) -> dict[str, Any]:
    """The application object as ``GET /applications/@me`` returns it (edits and flags included)."""
    world = state.world
    app_id = world.application_id
    verify_key = hashlib.sha256(f"{world.seed}:{app_id}".encode()).hexdigest()
    flags = state.application.flags
    return {
        "id": str(app_id), "name": "Innkeeper", "summary": "", "type": None, "hook": True, "bot_public": True,
        "bot_require_code_grant": False, "verify_key": verify_key, "flags": flags, "flags_new": str(flags),
        "owner": world.user(world.application_owner_id), "team": None, "rpc_origins": [], "redirect_uris": [],
        "approximate_guild_count": len(world.guilds), "approximate_user_install_count": 0, "bot": world.bot_user(),
        "terms_of_service_url": None, "privacy_policy_url": None, **_DEFAULTS, **state.application.fields,
    }


async def get_application(request: web.Request, state: SimState) -> web.Response:
    return json_response(application_object(state))


def _string(value: Any, name: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise form_error(name, "BASE_TYPE_BAD_TYPE", "Must be a valid string.")
    if len(value) > max_len:
        raise form_error(name, "BASE_TYPE_MAX_LENGTH", f"Must be {max_len} or fewer in length.")
    return value


def _url(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not _URL.match(_string(value, name, 2048)):
        raise form_error(name, "URL_TYPE_INVALID_URL", "Not a well formed URL.")
    return str(value)


def _strings(value: Any, name: str, *, max_items: int, max_len: int) -> list[str]:
    if not isinstance(value, list):
        raise form_error(name, "BASE_TYPE_BAD_TYPE", "Must be a list.")
    if len(value) > max_items:
        raise form_error(name, "BASE_TYPE_MAX_LENGTH", f"Must be {max_items} or fewer in length.")
    return [_string(v, f"{name}.{i}", max_len) for i, v in enumerate(value)]


def _image(value: Any, name: str) -> str | None:
    """Image data (``data:image/png;base64,…``) becomes a hash, as Discord stores it; null removes it."""
    if value is None:
        return None
    if not isinstance(value, str) or not _IMAGE.match(value):
        raise form_error(name, "IMAGE_INVALID", "Invalid image data")
    return hashlib.md5(value.encode(), usedforsecurity=False).hexdigest()


def _install_params(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise form_error("install_params", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    scopes = _strings(value.get("scopes", []), "install_params.scopes", max_items=10, max_len=64)
    permissions = value.get("permissions", "0")
    if isinstance(permissions, int) and not isinstance(permissions, bool):
        permissions = str(permissions)
    if not isinstance(permissions, str) or not permissions.isdigit():
        raise form_error("install_params.permissions", "NUMBER_TYPE_COERCE", "Value is not a valid permission set.")
    return {"scopes": scopes, "permissions": permissions}


def _integration_types(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(k in ("0", "1") and isinstance(v, dict) for k, v in value.items()):
        raise form_error("integration_types_config", "DICT_TYPE_CONVERT",
                         "Keys must be application integration types (\"0\", \"1\") with object values.")
    return value


def _flags(value: Any, current: int) -> int:
    if value is None:
        return current & ~EDITABLE_FLAGS
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 31:
        raise form_error("flags", "NUMBER_TYPE_COERCE", "Value is not int.")
    if (value ^ current) & ~EDITABLE_FLAGS:
        raise form_error("flags", "APPLICATION_FLAGS_NOT_EDITABLE",
                         "Only limited intent flags (GATEWAY_PRESENCE_LIMITED, GATEWAY_GUILD_MEMBERS_LIMITED and "
                         "GATEWAY_MESSAGE_CONTENT_LIMITED) can be updated via the API.")
    return value


def _edits(body: Any, current_flags: int) -> tuple[dict[str, Any], int | None]:
    """Validated ``(field edits, new flags or None)`` of a PATCH body; 400 50035 on the first bad field."""
    if not isinstance(body, dict):
        raise form_error("_body", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    edits: dict[str, Any] = {}
    if "description" in body:
        edits["description"] = _string(body["description"], "description", 400)
    for name in _URL_FIELDS:
        if name in body:
            edits[name] = _url(body[name], name)
    if "tags" in body:
        edits["tags"] = _strings(body["tags"], "tags", max_items=5, max_len=20)
    for name in ("icon", "cover_image"):
        if name in body:
            edits[name] = _image(body[name], name)
    if "install_params" in body:
        edits["install_params"] = _install_params(body["install_params"])
    if "integration_types_config" in body:
        edits["integration_types_config"] = _integration_types(body["integration_types_config"])
    if "event_webhooks_status" in body:
        if body["event_webhooks_status"] not in (1, 2) or isinstance(body["event_webhooks_status"], bool):
            raise form_error("event_webhooks_status", "BASE_TYPE_CHOICES", "Value must be one of {1, 2}.")
        edits["event_webhooks_status"] = body["event_webhooks_status"]
    if "event_webhooks_types" in body:
        edits["event_webhooks_types"] = _strings(body["event_webhooks_types"], "event_webhooks_types",
                                                 max_items=100, max_len=100)
    flags = _flags(body["flags"], current_flags) if "flags" in body else None
    return edits, flags


async def edit_application(request: web.Request, state: SimState) -> web.Response:
    """``PATCH /applications/@me``: only the fields passed change; answers the updated application."""
    body = await read_body(request)
    app = state.application
    edits, flags = _edits(body.payload, app.flags)
    app.fields.update(edits)
    if flags is not None and flags != app.flags:
        app.flags = flags
        state.gateway.close_disallowed_sessions()
    return json_response(application_object(state))


APPLICATION_ROUTES: list[RestRoute] = [
    route("GET", "/oauth2/applications/@me", get_application, "application-get"),
    route("GET", "/applications/@me", get_application, "application-get"),
    route("PATCH", "/applications/@me", edit_application, "application-edit"),
]
