"""Sign-in sessions and the ASGI middleware that enforces login and roles on every route.

Sessions live in Redis (`keys.web_session(sid)`, a string with a TTL) so that logout,
idle logoff and disabling a user take effect on every dashboard worker at once. A personal
sign-in (nurse, director, admin) expires after `dashboard.idle_logoff_min` without activity;
a `station` sign-in stays (STATION_TTL_S, renewed while in use). The cookie holds only the
random session id: HttpOnly, SameSite=Lax, Secure when `dashboard.secure_cookies`.

`AuthMiddleware` wraps the whole ASGI app (Dash's pages and callbacks, the JSON API, the
push WebSocket): public paths are /login, /logout and /health; everything else needs a
session cookie or `Authorization: Bearer <token>`. Anonymous page requests are redirected
to /login; anonymous API, Dash-internal and WebSocket requests get 401. Page routes and Dash
callbacks are checked against the owning page module's MIN_ROLE.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import redis

from dashboard.context import CURRENT_USER, User
from monitor.accounts import users
from monitor.model.keys import Keys
from monitor.store.redis_conn import REDIS_DOWN

log = logging.getLogger(__name__)

COOKIE = "vw_session"
STATION_TTL_S = 30 * 24 * 3600
CSRF_HEADER = "x-vw-request"  # cookie-authenticated API POSTs must carry it (forces a CORS preflight)
PUBLIC_PATHS = frozenset({"/login", "/logout", "/health"})
DASH_CALLBACK = "/_dash-update-component"
DASH_WS = "/_dash-ws-callback"  # not used: live data comes over /ws/live; refused outright
# Requests that do not count as a person's activity (they happen on their own).
PASSIVE_PREFIXES = ("/assets/", "/_dash-component-suites/", "/_favicon", "/ws/", "/_dash-layout",
                    "/_dash-dependencies", "/_reload-hash")


def session_ttl_s(role: str, idle_logoff_min: float) -> int:
    """How long a sign-in lasts without activity: stations stay, people log off."""
    return STATION_TTL_S if role == "station" else max(1, int(idle_logoff_min * 60))


class Sessions:
    """Sign-in sessions stored in Redis (synchronous: call from a worker thread)."""

    def __init__(self, client: redis.Redis, keys: Keys, idle_logoff_min: float) -> None:
        self.client, self.keys, self.idle_logoff_min = client, keys, idle_logoff_min

    def create(self, user: dict[str, Any], now_ms: int) -> str:
        """A new session for `user`; returns its id (the cookie value)."""
        sid = secrets.token_urlsafe(32)
        rec = {"user": user["name"], "role": user["role"], "created_ms": now_ms}
        self.client.set(self.keys.web_session(sid), json.dumps(rec),
                        ex=session_ttl_s(user["role"], self.idle_logoff_min))
        return sid

    def load(self, sid: str) -> User | None:
        """The session's user, with the role it has *now* (None if expired, disabled, gone)."""
        if not sid or len(sid) > 128:
            return None
        raw = self.client.get(self.keys.web_session(sid))
        if not raw:
            return None
        rec = json.loads(raw)
        account = users.get_user(self.client, self.keys, rec["user"])
        if account is None or account.get("disabled"):
            self.end(sid)
            return None
        return User(account["name"], account["role"], "cookie", sid)

    def touch(self, user: User) -> None:
        """Activity: restart the idle-logoff clock of this sign-in."""
        if user.session_id:
            self.client.expire(self.keys.web_session(user.session_id),
                               session_ttl_s(user.role, self.idle_logoff_min))

    def alive(self, sid: str) -> bool:
        """True while the session exists (not logged out, not idle-expired)."""
        return bool(self.client.exists(self.keys.web_session(sid)))

    def end(self, sid: str) -> None:
        """Log out: forget the session."""
        self.client.delete(self.keys.web_session(sid))


def bearer_token(headers: dict[str, str]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (pure)."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def cookie_value(headers: dict[str, str], name: str = COOKIE) -> str | None:
    """One cookie's value from the Cookie header (pure)."""
    for part in headers.get("cookie", "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


def safe_next(path: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def output_ids(body: dict[str, Any]) -> list[str]:
    """Component ids a Dash callback request writes to (pure), as strings."""
    ids: list[str] = []
    outputs = body.get("outputs")
    items = outputs if isinstance(outputs, list) else [outputs] if isinstance(outputs, dict) else []
    for o in items:
        if isinstance(o, list):
            items.extend(o)
            continue
        if isinstance(o, dict):
            i = o.get("id")
            ids.append(json.dumps(i, sort_keys=True) if isinstance(i, dict) else str(i))
    if not ids and isinstance(body.get("output"), str):
        # "..a.children...b.children.." (multi) or "a.children"
        out = body["output"].strip(".")
        for part in out.split("..."):
            ids.append(part.rsplit(".", 1)[0])
    return ids


@dataclass
class Guard:
    """What the middleware needs from the app: the session store and the role rules."""

    sessions: Sessions
    client: redis.Redis
    keys: Keys
    page_role: Callable[[str], str | None]  # URL path → min role of the page serving it (None: no page)
    callback_role: Callable[[list[str]], str]  # callback output ids → min role
    secure_cookies: bool


Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class AuthMiddleware:
    """Pure ASGI middleware: authenticate every HTTP and WebSocket request, enforce roles."""

    def __init__(self, app: Any, guard: Guard) -> None:
        self.app, self.guard = app, guard

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if path in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if path.startswith(DASH_WS):
            await _deny(scope, send, 403, "not used")
            return
        try:
            user = await anyio.to_thread.run_sync(self._resolve, headers, path)
        except REDIS_DOWN:
            await _deny(scope, send, 503, "NOT MONITORING: Redis unreachable", html=True)
            return
        if user is None:
            if scope["type"] == "http" and scope["method"] == "GET" and not _machine_path(path):
                target = path + (("?" + scope["query_string"].decode()) if scope.get("query_string") else "")
                await _redirect(send, "/login?next=" + quote(target, safe=""))
            else:
                await _deny(scope, send, 401, "login required")
            return
        need = self.guard.page_role(path) if scope["type"] == "http" else None
        if need is not None and not user.can(need):
            await _deny(scope, send, 403, f"this page needs the {need} role", html=True)
            return
        if scope["type"] == "http" and path == DASH_CALLBACK:
            body, receive = await _buffer(receive)
            try:
                ids = output_ids(json.loads(body or b"{}"))
            except ValueError:
                await _deny(scope, send, 400, "bad callback request")
                return
            need = self.guard.callback_role(ids)
            if not user.can(need):
                await _deny(scope, send, 403, f"needs the {need} role")
                return
        if (scope["type"] == "http" and scope["method"] == "POST" and path.startswith("/api/")
                and user.via == "cookie" and CSRF_HEADER not in headers):
            await _deny(scope, send, 403, f"missing {CSRF_HEADER} header")
            return
        token = CURRENT_USER.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT_USER.reset(token)

    def _resolve(self, headers: dict[str, str], path: str) -> User | None:
        tok = bearer_token(headers)
        if tok:
            rec = users.user_for_token(self.guard.client, self.guard.keys, tok)
            return User(rec["name"], rec["role"], "token") if rec else None
        sid = cookie_value(headers)
        if not sid:
            return None
        user = self.guard.sessions.load(sid)
        if user is not None and not path.startswith(PASSIVE_PREFIXES):
            self.guard.sessions.touch(user)
        return user


def _machine_path(path: str) -> bool:
    return path.startswith(("/api/", "/_dash-", "/ws/", "/_reload"))


async def _buffer(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body and return a `receive` that replays it."""
    chunks, more = [], True
    while more:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunks.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    body = b"".join(chunks)
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _redirect(send: Send, location: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode()), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def _deny(scope: dict[str, Any], send: Send, status: int, text: str, html: bool = False) -> None:
    if scope["type"] == "websocket":
        # Closing before accept makes the server answer the handshake with 403.
        await send({"type": "websocket.close", "code": 4000 + status, "reason": text})
        return
    if html:
        body = (f"<!doctype html><title>VitalWatch</title><body style='font-family:sans-serif'>"
                f"<h2>{status}</h2><p>{text}</p><p><a href='/'>Overview</a> · "
                f"<a href='/logout'>Sign out</a></p></body>").encode()
        ctype = b"text/html; charset=utf-8"
    else:
        body, ctype = json.dumps({"error": text}).encode(), b"application/json"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
