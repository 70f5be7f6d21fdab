"""Who may read the status service: the ``INNKEEPER_STATUS_TOKEN``, sent in a header and only there.

A token in a URL (``?token=``) ends up in access logs, proxy logs, browser history and
``Referer`` headers, so it is refused. Two header forms are accepted:

- ``Authorization: Bearer <token>``: scripts, ``curl -H``, Prometheus (``authorization``);
- ``Authorization: Basic base64(<any user>:<token>)``: a person in a browser. An unauthorised
  request is answered ``401`` with a ``Basic`` challenge, so the browser asks for a user name
  (anything) and a password (the token) and then sends them with every request to the service,
  including the page's own ``status.json`` polls; nothing is stored by the service. ``curl -u
  :TOKEN`` works too.

Comparisons are constant-time. ``/healthz`` stays open for load balancers and says nothing but
READY counts and problems.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web
from multidict import CIMultiDict

__all__ = ("token_from_headers", "authorized", "unauthorized")

#: The realm the browser shows in its login prompt.
REALM = "Innkeeper status"


def token_from_headers(request: web.Request) -> str | None:
    """The token a request carries in its ``Authorization`` header (Bearer, or Basic's password)."""
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


def authorized(request: web.Request, token: str) -> bool:
    """True when the request's header carries ``token`` (compared in constant time)."""
    given = token_from_headers(request)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def unauthorized(request: web.Request) -> web.Response:
    """The ``401`` answer: a ``Basic`` challenge (browsers prompt) and a ``Bearer`` one (scripts)."""
    if "token" in request.query:
        error = ("the token is not accepted in the URL (it would end up in logs and history): send it as "
                 "Authorization: Bearer <token>, or as the password of HTTP basic auth; consider rotating it")
    else:
        error = ("a valid token is required: Authorization: Bearer <token>, or HTTP basic auth with the token "
                 "as password")
    headers = CIMultiDict([("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),
                           ("WWW-Authenticate", f'Bearer realm="{REALM}"'), ("Cache-Control", "no-store")])
    return web.json_response({"error": error}, status=401, headers=headers)
