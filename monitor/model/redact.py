"""Secrets out of everything people read: URLs with their passwords masked (pure).

Every place that prints a Redis, MQTT, archive or webhook URL (logs, CLI messages, pages)
passes it through `redact_url`; the log formatters also run `redact_text` over every line,
so a URL inside an exception message cannot carry a password into the logs either.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:password@host  — password is anything up to the last "@" before the host
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s'\"]*):(?P<pw>[^@\s'\"]+)@")
# scheme://:password@host or scheme://token@host (Redis allows a bare password as user info)
_BARE = re.compile(r"(?P<scheme>\b(?:redis|rediss|redis\+sentinel|redis\+cluster|unix)://)(?P<pw>[^:/@\s'\"]+)@")
_QUERY_SECRET = re.compile(r"(?i)(?P<k>[?&](?:password|passwd|pwd|secret|token|api_key|apikey|access_token)=)"
                           r"(?P<v>[^&#\s'\"]+)")
_URL = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<netloc>[^/?#]*)(?P<rest>.*)$", re.S)


def redact_url(url: str | None) -> str:
    """`url` with any password (user info or a secret query parameter) replaced by ***."""
    if not url:
        return url or ""
    m = _URL.match(url)
    if m is None:
        return redact_text(url)
    scheme, netloc, rest = m["scheme"], m["netloc"], m["rest"]
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, sep, _pw = userinfo.partition(":")
        if sep:
            netloc = f"{user}:{MASK}@{host}"
        elif scheme.lower().startswith(("redis", "unix")):
            netloc = f"{MASK}@{host}"  # redis://secret@host: the bare user info is a password
    return scheme + netloc + _QUERY_SECRET.sub(lambda q: f"{q['k']}{MASK}", rest)


def redact_text(text: str) -> str:
    """Any URL with a password inside free text (an exception message, a log line), masked."""
    if "://" not in text and "=" not in text:
        return text
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    out = _BARE.sub(lambda m: f"{m['scheme']}{MASK}@" if m["pw"] != MASK else m[0], out)
    return _QUERY_SECRET.sub(lambda m: f"{m['k']}{MASK}", out)
