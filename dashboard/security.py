"""Browser and transport hardening around the whole ASGI app: response headers, request body
limits, WebSocket Origin check, the sign-in form's CSRF token, the client's address.

- `SecurityHeaders` puts on every HTTP response (pages, API, errors, assets): a
  Content-Security-Policy without inline scripts — Dash's own inline scripts (the renderer
  and clientside callbacks) are allowed by their sha256 hashes, which Dash computes
  (`Dash.csp_hashes()`) — `frame-ancestors 'none'` and X-Frame-Options, nosniff, no
  referrer, and `Cache-Control: no-store` on everything that is not a static asset (pages,
  API answers and callback responses carry patient data). HSTS when behind TLS.
- `BodyLimit` refuses a request body over its limit with 413 before reading it (by
  Content-Length) or as soon as a chunked body passes it, and closes the connection: a
  50 MB sign-in body costs nothing.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from monitor.accounts.throttle import ip_source

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

STATIC_PREFIXES = ("/assets/", "/_dash-component-suites/", "/_favicon")
LOGIN_BODY_MAX = 16 * 1024
CSRF_COOKIE = "vw_csrf"
CSRF_FIELD = "csrf"


def csp(script_hashes: Iterable[str]) -> str:
    """The Content-Security-Policy (pure). Styles stay 'unsafe-inline': Plotly and Dash set
    element styles at run time; scripts never are."""
    scripts = " ".join(["'self'", *sorted(set(script_hashes))])
    return ("default-src 'self'; "
            f"script-src {scripts}; "
            "style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; font-src 'self' data:; "
            "connect-src 'self'; worker-src 'self' blob:; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def header_list(path: str, policy: str, hsts: bool) -> list[tuple[bytes, bytes]]:
    """The security headers for a response to `path` (pure)."""
    out = [(b"content-security-policy", policy.encode()), (b"x-frame-options", b"DENY"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"cross-origin-opener-policy", b"same-origin"),
           (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()")]
    if not path.startswith(STATIC_PREFIXES):
        out.append((b"cache-control", b"no-store"))
        out.append((b"pragma", b"no-cache"))
    if hsts:
        out.append((b"strict-transport-security", b"max-age=31536000"))
    return out


class SecurityHeaders:
    """ASGI middleware adding `header_list` to every HTTP response (replacing the app's own
    values of the same headers). `policy` is called once, at the first response, when every
    callback (and so every inline script) is registered."""

    def __init__(self, app: Any, policy: Callable[[], str], hsts: bool = False) -> None:
        self.app, self._policy_fn, self.hsts = app, policy, hsts
        self._policy: str | None = None

    def policy(self) -> str:
        """The CSP header value (computed once)."""
        if self._policy is None:
            self._policy = self._policy_fn()
        return self._policy

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = header_list(scope["path"], self.policy(), self.hsts)
        names = {k for k, _v in extra}

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """ASGI middleware: request bodies over `limit_for(path)` bytes get 413 and a closed
    connection, read no further. A declared Content-Length is judged before anything is
    read (the server's framing keeps the body to it); a body without one (chunked) is read
    here up to the limit first and handed on only if it fits."""

    def __init__(self, app: Any, default_max: int, per_path: dict[str, int] | None = None) -> None:
        self.app, self.default_max, self.per_path = app, default_max, per_path or {}

    def limit_for(self, path: str) -> int:
        """The body limit of `path`."""
        return self.per_path.get(path, self.default_max)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                await _too_large(send, limit)
                return
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        last: dict[str, Any] = {"type": "http.request", "body": b"", "more_body": False}
        while more:
            message = await receive()
            if message["type"] != "http.request":
                last = message  # the client went away: the app learns it as usual
                break
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _too_large(send, limit)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                if last["type"] != "http.request":
                    return last
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"error": f"request body too large (limit {limit} bytes)"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def origin_ok(headers: dict[str, str], allowed: Iterable[str] = ()) -> bool:
    """A WebSocket handshake's Origin is the dashboard's own (same host:port as the request)
    or one of `allowed`; no Origin at all (not a browser: a pager script) passes (pure)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    if origin.rstrip("/") in {a.rstrip("/") for a in allowed}:
        return True
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == headers.get("host", "").lower()


def client_source(scope: Mapping[str, Any]) -> str:
    """What sign-in limits count by: the client's address (as uvicorn resolved it, through
    trusted proxies only)."""
    client = scope.get("client")
    return ip_source(client[0] if client else None)


def new_csrf_token() -> str:
    """A random value for the sign-in form's hidden field and its cookie."""
    return secrets.token_urlsafe(24)


def csrf_ok(cookie: str | None, field: str | None) -> bool:
    """The form's token matches its cookie (double submit; constant-time)."""
    return bool(cookie) and bool(field) and hmac.compare_digest(str(cookie), str(field))
