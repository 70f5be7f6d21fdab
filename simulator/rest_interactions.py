"""Interaction callbacks and the interaction webhook (follow-ups, ``@original``).

``POST /interactions/{id}/{token}/callback`` is sent by discord.py without an Authorization header
and with ``?with_response=1``; it resolves the waiter ``POST /_sim/interactions`` registered and
answers an ``InteractionCallbackResponse`` (``{"interaction":{…},"resource":{…}}``). Follow-ups and
edits of the original response go to ``/webhooks/{application_id}/{token}…``, also without auth;
they are recorded on the pending interaction so the control API can report them.

Responses that create or change a visible (non-ephemeral) message store it in the channel and
dispatch MESSAGE_CREATE/UPDATE/DELETE, as Discord does.

Deadlines (``developers/interactions/receiving-and-responding.mdx``, "Responding to an
Interaction": "Interaction tokens are valid for 15 minutes … but you must send an initial response
within 3 seconds of receiving the event. If the 3 second deadline is exceeded, the token will be
invalidated"), both counted from the INTERACTION_CREATE dispatch on the simulator's clock:

- an initial response after ``--interaction-deadline`` (3 s) is 404 10062 Unknown interaction
  (``late_interaction_callbacks``); a second one is 400 40060 "Interaction has already been
  acknowledged" (``opcodes-and-status-codes.mdx``, "JSON Error Codes"), counted in
  ``duplicate_interaction_callbacks`` (an interaction the bot answered twice);
- follow-ups and ``@original``/follow-up reads, edits and deletes after ``--interaction-token-ttl``
  (15 min) are 401 50027 Invalid Webhook Token (``expired_interaction_tokens``). The docs name no
  status for an expired token; 50027 is the code of the table ("Invalid webhook token provided")
  and the answer Discord gives (discord/discord-api-docs#6851: "After the 15 mins window, any API
  request made to it returns 401"; Rapptz/discord.py#9856). Before that, a follow-up for an
  interaction that was never acknowledged is 404 10015 Unknown Webhook (the same thread: "While the
  token is still active in the 15 minutes window, any API requests send to it return with 404").

"Create Followup Message … functions the same as Execute Webhook, but ``wait`` is always true"
(``receiving-and-responding.mdx``): a follow-up always answers 200 with the message, and discord.py
always sends ``wait=1`` for application webhooks (``Webhook.send``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .rest_channels import deliver
from .rest_common import RestError, RestRoute, empty_response, form_error, int_param, json_response, read_body, route
from .rest_objects import EPHEMERAL, LOADING, apply_edit, attachments_from_files, build_message, validate_message_body

if TYPE_CHECKING:
    from .state import PendingInteraction, SimState
    from .world_model import Guild

__all__ = ("INTERACTION_ROUTES", "interaction_message")

#: Callback types Discord accepts from a gateway bot (1 PONG is for HTTP interactions only).
_CALLBACK_TYPES = {4, 5, 6, 7, 8, 9, 10, 12}
#: Interaction types: 2 application command, 3 message component, 4 autocomplete, 5 modal submit.
_ON_MESSAGE = {3, 5}


def _files_record(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": f["name"], "filename": f["filename"], "size": f["size"]} for f in files]


def _guild_of(state: SimState, pending: PendingInteraction) -> Guild | None:
    return state.world.guild(pending.guild_id) if pending.guild_id is not None else None


def _invoker(pending: PendingInteraction) -> dict[str, Any] | None:
    payload = pending.payload
    member = payload.get("member")
    if isinstance(member, dict) and isinstance(member.get("user"), dict):
        return member["user"]
    user = payload.get("user")
    return user if isinstance(user, dict) else None


def interaction_message(state: SimState, pending: PendingInteraction, body: dict[str, Any],
                        files: list[dict[str, Any]], *, loading: bool = False,
                        followup: bool = False) -> dict[str, Any]:
    """A message the bot posts in answer to an interaction (response or follow-up)."""
    world = state.world
    itype = int(pending.payload.get("type", 2))
    invoker = _invoker(pending)
    metadata: dict[str, Any] = {"id": str(pending.interaction_id), "type": itype,
                                "user": invoker or world.bot_user(),
                                "authorizing_integration_owners": pending.payload.get(
                                    "authorizing_integration_owners", {})}
    data = pending.payload.get("data") or {}
    if itype == 2:
        metadata.update(name=data.get("name"), command_type=data.get("type", 1))
    elif itype == 3 and pending.original is not None:
        metadata["interacted_message_id"] = pending.original["id"]
    app_id = str(world.application_id)
    message_id = state.ids.next()
    guild = _guild_of(state, pending)
    msg = build_message(state, message_id=message_id, channel_id=pending.channel_id, guild=guild,
                        author=world.bot_user(), body=body,
                        attachments=attachments_from_files(state, pending.channel_id, files),
                        msg_type=20 if itype == 2 and not followup else 0,
                        extra={"webhook_id": app_id, "application_id": app_id, "interaction_metadata": metadata})
    if loading:
        msg["flags"] |= LOADING
    return msg


def _publish(state: SimState, pending: PendingInteraction, msg: dict[str, Any], event: str) -> None:
    """Store and dispatch a visible message; ephemeral messages stay between the bot and the user."""
    if msg.get("flags", 0) & EPHEMERAL:
        return
    guild = _guild_of(state, pending)
    if event == "MESSAGE_CREATE":
        state.messages.add(pending.channel_id, msg)
        state.stats.messages_created += 1
    data = dict(msg)
    if guild is not None:
        member = state.world.member(guild.id, state.world.application_id)
        if member is not None:
            data["member"] = {k: v for k, v in member.items() if k != "user"}
    deliver(state, guild, event, data)


def _callback_type_error(message: str) -> RestError:
    return form_error("type", "INTERACTION_CALLBACK_TYPE_INVALID", message)


async def interaction_callback(request: web.Request, state: SimState) -> web.Response:
    interaction_id = int_param(request.match_info["webhook_id"], "interaction_id") or 0
    pending = state.interactions.get(interaction_id, request.match_info["webhook_token"])
    if pending is None:
        raise RestError(404, 10062, "Unknown interaction")
    if pending.callback.done():
        state.stats.duplicate_interaction_callbacks += 1
        raise RestError(400, 40060, "Interaction has already been acknowledged.")
    if state.clock() - pending.created > state.config.interaction_deadline:
        pending.late_callbacks += 1
        state.stats.late_interaction_callbacks += 1
        raise RestError(404, 10062, "Unknown interaction")
    body = await read_body(request)
    payload = body.payload
    if not isinstance(payload, dict):
        raise form_error("_body", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    rtype = payload.get("type")
    if isinstance(rtype, bool) or rtype not in _CALLBACK_TYPES:
        raise _callback_type_error("Value must be one of {4, 5, 6, 7, 8, 9, 10, 12}.")
    data = payload.get("data")
    if data is not None and not isinstance(data, dict):
        raise form_error("data", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    data = data or {}
    itype = int(pending.payload.get("type", 2))
    if rtype in (6, 7) and itype not in _ON_MESSAGE:
        raise _callback_type_error("This callback type is only valid for component and modal interactions.")
    if rtype == 9 and itype == 5:
        raise _callback_type_error("A modal submit cannot be answered with a modal.")
    if rtype == 9 and not (isinstance(data.get("custom_id"), str) and isinstance(data.get("title"), str)
                           and isinstance(data.get("components"), list)):
        raise form_error("data", "MODAL_INVALID", "A modal needs custom_id, title and components.")

    message: dict[str, Any] | None = None
    if rtype == 4:
        fields = validate_message_body(data, files=len(body.files))
        message = interaction_message(state, pending, fields, body.files)
        pending.original = message
        _publish(state, pending, message, "MESSAGE_CREATE")
    elif rtype == 5:
        message = interaction_message(state, pending, {"flags": int(data.get("flags") or 0) & EPHEMERAL}, [],
                                      loading=True)
        pending.original = message
        _publish(state, pending, message, "MESSAGE_CREATE")
    elif rtype == 7 and pending.original is not None:
        fields = validate_message_body(data, files=len(body.files), edit=True)
        message = apply_edit(state, pending.original, fields, _guild_of(state, pending),
                             attachments_from_files(state, pending.channel_id, body.files))
        _publish(state, pending, message, "MESSAGE_UPDATE")

    record = dict(payload)
    if body.files:
        record["files"] = _files_record(body.files)
    pending.acknowledged_at = state.clock()
    state.stats.acknowledged += 1
    pending.callback.set_result(record)
    if request.query.get("with_response", "").lower() not in ("1", "true"):
        return empty_response()
    flags = int(message.get("flags", 0)) if message is not None else int(data.get("flags") or 0)
    resource: dict[str, Any] = {"type": rtype}
    if message is not None:
        resource["message"] = message
    return json_response({
        "interaction": {"id": str(interaction_id), "type": itype, "activity_instance_id": None,
                        "response_message_id": message["id"] if message is not None else None,
                        "response_message_loading": rtype == 5, "response_message_ephemeral": bool(flags & EPHEMERAL)},
        "resource": resource,
    })


def _pending_for_webhook(request: web.Request, state: SimState) -> PendingInteraction:
    """The interaction of ``/webhooks/{application_id}/{token}``: 404 10015 when unknown, 401 50027 once expired."""
    webhook_id = int_param(request.match_info["webhook_id"], "webhook_id") or 0
    pending = state.interactions.by_token(request.match_info["webhook_token"])
    if pending is None or webhook_id != state.world.application_id:
        raise RestError(404, 10015, "Unknown Webhook")
    if state.clock() - pending.created > state.config.interaction_token_ttl:
        state.stats.expired_interaction_tokens += 1
        raise RestError(401, 50027, "Invalid Webhook Token")
    return pending


async def execute_webhook(request: web.Request, state: SimState) -> web.Response:
    """A follow-up message; after a deferred response the first one fills the "thinking" message."""
    pending = _pending_for_webhook(request, state)
    if not pending.callback.done():
        raise RestError(404, 10015, "Unknown Webhook")
    body = await read_body(request)
    fields = validate_message_body(body.payload, files=len(body.files))
    record = dict(fields)
    if body.files:
        record["files"] = _files_record(body.files)
    original = pending.original
    if original is not None and original.get("flags", 0) & LOADING:
        message = apply_edit(state, original, fields, _guild_of(state, pending),
                             attachments_from_files(state, pending.channel_id, body.files))
        record.update(message_id=message["id"], replaced_original=True)
        _publish(state, pending, message, "MESSAGE_UPDATE")
    else:
        message = interaction_message(state, pending, fields, body.files, followup=True)
        pending.followup_messages[message["id"]] = message
        record["message_id"] = message["id"]
        _publish(state, pending, message, "MESSAGE_CREATE")
    pending.followups.append(record)
    return json_response(message)  # "wait is always true" for interaction follow-ups


def _webhook_message(request: web.Request, state: SimState) -> tuple[PendingInteraction, dict[str, Any], bool]:
    """``(pending, message, is_original)`` for ``…/messages/{message_id}`` (``@original`` too)."""
    pending = _pending_for_webhook(request, state)
    raw = request.match_info["message_id"]
    original = pending.original
    if raw == "@original" or (original is not None and raw == original["id"]):
        if original is None:
            raise RestError(404, 10008, "Unknown Message")
        return pending, original, True
    int_param(raw, "message_id")
    msg = pending.followup_messages.get(raw)
    if msg is None:
        raise RestError(404, 10008, "Unknown Message")
    return pending, msg, False


async def get_webhook_message(request: web.Request, state: SimState) -> web.Response:
    _, msg, _ = _webhook_message(request, state)
    return json_response(msg)


async def edit_webhook_message(request: web.Request, state: SimState) -> web.Response:
    pending, msg, is_original = _webhook_message(request, state)
    body = await read_body(request)
    fields = validate_message_body(body.payload, files=len(body.files), edit=True)
    record = dict(fields)
    if body.files:
        record["files"] = _files_record(body.files)
    apply_edit(state, msg, fields, _guild_of(state, pending),
               attachments_from_files(state, pending.channel_id, body.files))
    if is_original:
        pending.original_edits.append(record)
    else:
        record["edit_of"] = msg["id"]
        pending.followups.append(record)
    _publish(state, pending, msg, "MESSAGE_UPDATE")
    return json_response(msg)


async def delete_webhook_message(request: web.Request, state: SimState) -> web.Response:
    pending, msg, is_original = _webhook_message(request, state)
    if is_original:
        pending.original = None
    else:
        pending.followup_messages.pop(msg["id"], None)
    if not msg.get("flags", 0) & EPHEMERAL:
        state.messages.remove(pending.channel_id, int(msg["id"]))
        guild = _guild_of(state, pending)
        event: dict[str, Any] = {"id": msg["id"], "channel_id": str(pending.channel_id)}
        if guild is not None:
            event["guild_id"] = str(guild.id)
        deliver(state, guild, "MESSAGE_DELETE", event)
    return empty_response()


_WEBHOOK = "/webhooks/{webhook_id}/{webhook_token}"
INTERACTION_ROUTES: list[RestRoute] = [
    route("POST", "/interactions/{webhook_id}/{webhook_token}/callback", interaction_callback,
          "interaction-callback", auth=False, exempt_global=True),
    route("POST", _WEBHOOK, execute_webhook, "webhook-execute", auth=False, exempt_global=True),
    route("GET", _WEBHOOK + "/messages/{message_id}", get_webhook_message, "webhook-message", auth=False,
          exempt_global=True),
    route("PATCH", _WEBHOOK + "/messages/{message_id}", edit_webhook_message, "webhook-message", auth=False,
          exempt_global=True),
    route("DELETE", _WEBHOOK + "/messages/{message_id}", delete_webhook_message, "webhook-message", auth=False,
          exempt_global=True),
]
