"""Keep secrets out of text: passwords in URLs, and secret values in reprs.

Database and Redis URLs may carry a password (``postgresql://bot:s3cret@db/innkeeper``). Anything
that echoes such a URL (an error message, a log line, a repr) passes it through :func:`redact_url`
first; :func:`redact_text` does the same for every URL inside a longer text, and the log formatters
(:mod:`innkeeper.logs`) apply it to every line as a last line of defence.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ("redact_url", "redact_text", "MASK")

#: What a secret is replaced with.
MASK = "***"

# scheme://user:password@ (the user part may be empty: redis://:password@host)
_USERINFO_RE = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/@:]*):(?P<password>[^\s/@]*)@")


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo replaced by :data:`MASK` (the user name is kept).

    A URL without a password is returned unchanged; text that does not parse as a URL is passed to
    :func:`redact_text`.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return redact_text(url)
    if password is None:
        return redact_text(url)  # e.g. a second URL hidden in the query
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{hostinfo}"))


def redact_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced by :data:`MASK`."""
    if "://" not in text:
        return text
    return _USERINFO_RE.sub(lambda m: f"{m['head']}{m['user']}:{MASK}@", text)
