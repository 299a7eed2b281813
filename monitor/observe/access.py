"""Who may read `/metrics`: a client on the loopback interface freely (unless the request came
through a proxy: X-Forwarded-For or Forwarded present); any other client with
`Authorization: Bearer <token>` that the role's check accepts (an API token with the
`metrics` scope: monitor/accounts/tokens.py). The same rule on every role (docs/security.md).

A token accepted once is believed for `remember_s` more (default 60 s) without asking Redis
again: scrapes go on through a short Redis outage — when they matter most — and a revoked
token stops working within that time.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

REMEMBER_S = 60.0
REMEMBER_MAX = 64


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to a scrape request: 200, or the status and text of a refusal."""

    status: int
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this host's loopback (127/8, ::1, ::ffff:127.x) (pure)."""
    if not host:
        return False
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def proxied(headers: object) -> bool:
    """Whether request headers (a case-insensitive mapping) show a proxy forwarded it (pure)."""
    get = getattr(headers, "get", None)
    return get is not None and bool(get("x-forwarded-for") or get("forwarded"))


def bearer(value: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value (pure)."""
    scheme, _, token = (value or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Access:
    """Decides scrape requests. `token_ok(token)` says whether a token may read metrics; it
    may raise (Redis unreachable): then the request gets 503, unless the token was accepted
    within `remember_s`."""

    def __init__(self, token_ok: Callable[[str], bool] | None, remember_s: float = REMEMBER_S,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.token_ok, self.remember_s, self.mono = token_ok, remember_s, mono
        self._good: dict[str, float] = {}  # sha256 of an accepted token → believed until
        self._lock = threading.Lock()

    def decide(self, client_host: str | None, authorization: str | None, proxied: bool = False) -> Verdict:
        """The verdict for a request from `client_host` with this Authorization header.
        `proxied`: the request carries X-Forwarded-For/Forwarded — it came through a proxy,
        so it is not this host's own, whatever address the proxy headers resolved to."""
        if is_loopback(client_host) and not proxied:
            return Verdict(200)
        token = bearer(authorization)
        if token is None:
            return Verdict(401, "metrics from another host need Authorization: Bearer <token>")
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self.mono()
        with self._lock:
            if self._good.get(digest, 0.0) > now:
                return Verdict(200)
        if self.token_ok is None:
            return Verdict(403, "no token can read metrics here")
        try:
            ok = self.token_ok(token)
        except Exception as e:  # noqa: BLE001 - Redis unreachable or refusing: cannot check now
            log.warning("cannot check a metrics token: %s", e)
            return Verdict(503, "cannot check the token now")
        if not ok:
            return Verdict(403, "this token may not read metrics (needs the 'metrics' scope)")
        with self._lock:
            if len(self._good) >= REMEMBER_MAX:
                self._good = {d: t for d, t in self._good.items() if t > now}
            self._good[digest] = now + self.remember_s
        return Verdict(200)


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in the Prometheus text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
