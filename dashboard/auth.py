"""Sign-in sessions and the ASGI middleware that enforces login, roles and token scopes.

Sessions live in Redis so that logout, idle logoff and account changes take effect on every
dashboard worker at once. The cookie holds a random session id; Redis holds only its
sha256 (`keys.web_session(digest)`, a string with a TTL), so reading Redis's files gives no
usable sign-in. A session records the account's `epoch` (monitor/accounts/users.py): a
disable, role change or password change bumps it, which voids the session everywhere (and
deletes it). A personal sign-in (nurse, director, admin) expires after
`dashboard.idle_logoff_min` without *activity*; a `station` sign-in stays (STATION_TTL_S).
Activity is a person's input only: opening a page, a Dash callback a click or key started
(not one fired by a dcc.Interval), an action POSTed to the API, the live socket's
"activity" message (live.js sends it on pointer/key/wheel/touch). The cookie is HttpOnly,
SameSite=Lax, Secure when `dashboard.secure_cookies`.

`AuthMiddleware` wraps the whole ASGI app (Dash's pages and callbacks, the JSON API, the
push WebSocket): public paths are /login, /logout, /health,
the web app manifest and its icons, and /metrics (which checks its own access); everything else needs a
session cookie or `Authorization: Bearer <token>`. Tokens are for machines: only on /api/
and /ws/ paths, and each such request needs a scope of the token (`token_scope`). Anonymous
page requests are redirected to /login; anonymous API, Dash-internal and WebSocket requests
get 401; a WebSocket from another site's page (Origin) gets 403. Page routes and Dash
callbacks are checked against the owning page module's MIN_ROLE.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html import escape as html_escape
from typing import Any
from urllib.parse import quote

import anyio
import redis

from dashboard.context import CURRENT_USER, User
from dashboard.security import origin_ok
from monitor.accounts import tokens, users
from monitor.model.keys import Keys
from monitor.store.retry import REDIS_ERRORS, words

log = logging.getLogger(__name__)

COOKIE = "vw_session"
STATION_TTL_S = 30 * 24 * 3600
CSRF_HEADER = "x-vw-request"  # cookie-authenticated API POSTs must carry it (forces a CORS preflight)
# /metrics decides for itself: loopback, or a `metrics` token (dashboard/metrics.py)
PUBLIC_PATHS = frozenset({"/login", "/logout", "/health", "/manifest.webmanifest", "/metrics"})
PUBLIC_PREFIXES = ("/assets/icons/",)  # the web app's icons: a browser fetches them without the cookie
DASH_CALLBACK = "/_dash-update-component"
DASH_WS = "/_dash-ws-callback"  # not used: live data comes over /ws/live; refused outright
# Requests that never count as a person's activity (they happen on their own).
PASSIVE_PREFIXES = ("/assets/", "/_dash-component-suites/", "/_favicon", "/ws/", "/_dash-layout",
                    "/_dash-dependencies", "/_reload-hash", "/api/")
_ALERT_ACTION = re.compile(r"^/api/v1/alerts/[^/]+/(acknowledge|pause|reset|dismiss|unacknowledge)$")


def session_ttl_s(role: str, idle_logoff_min: float) -> int:
    """How long a sign-in lasts without activity: stations stay, people log off."""
    return STATION_TTL_S if role == "station" else max(1, int(idle_logoff_min * 60))


def session_digest(sid: str) -> str:
    """What Redis stores of a session id: its sha256 (the id is random: no salt needed)."""
    return hashlib.sha256(sid.encode()).hexdigest()


class Sessions:
    """Sign-in sessions stored in Redis (synchronous: call from a worker thread)."""

    def __init__(self, client: redis.Redis, keys: Keys, idle_logoff_min: float) -> None:
        self.client, self.keys, self.idle_logoff_min = client, keys, idle_logoff_min

    def create(self, user: dict[str, Any], now_ms: int) -> str:
        """A new session for `user` (an account record); returns its id (the cookie value)."""
        sid = secrets.token_urlsafe(32)
        digest = session_digest(sid)
        rec = {"user": user["name"], "role": user["role"], "epoch": int(user.get("epoch") or 0),
               "created_ms": now_ms}
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.web_session(digest), json.dumps(rec), ex=session_ttl_s(user["role"], self.idle_logoff_min))
        pipe.sadd(self.keys.user_sessions(user["name"]), digest)
        pipe.expire(self.keys.user_sessions(user["name"]), STATION_TTL_S)
        pipe.execute()
        return sid

    def load(self, sid: str) -> User | None:
        """The session's user (None if expired, ended, disabled, or its account changed)."""
        if not sid or len(sid) > 128:
            return None
        return self.load_digest(session_digest(sid))

    def load_digest(self, digest: str) -> User | None:
        """`load` by the stored digest (re-checking a live socket's sign-in)."""
        raw = self.client.get(self.keys.web_session(digest))
        if not raw:
            return None
        try:
            rec = json.loads(raw)
        except ValueError:
            return None
        account = users.get_user(self.client, self.keys, rec.get("user", ""))
        if account is None or account["disabled"] or account["epoch"] != int(rec.get("epoch", -1)):
            self.end(digest)
            return None
        return User(account["name"], account["role"], "cookie", digest, epoch=account["epoch"])

    def touch(self, user: User) -> None:
        """Activity: restart the idle-logoff clock of this sign-in."""
        if user.session_id:
            self.client.expire(self.keys.web_session(user.session_id),
                               session_ttl_s(user.role, self.idle_logoff_min))

    def alive(self, digest: str) -> bool:
        """True while the session exists (not logged out, not idle-expired)."""
        return bool(self.client.exists(self.keys.web_session(digest)))

    def end(self, digest: str) -> None:
        """Log out: forget the session."""
        self.client.delete(self.keys.web_session(digest))

    def still_valid(self, user: User) -> bool:
        """True while `user`'s sign-in (session or token) holds with the same name, role and
        scopes — checked every few seconds for each open live socket."""
        if user.via == "token":
            rec = tokens.user_for_digest(self.client, self.keys, user.token)
            return rec is not None and rec["role"] == user.role and rec["scopes"] == user.scopes
        now = self.load_digest(user.session_id) if user.session_id else None
        return now is not None and now.role == user.role and now.name == user.name


# GETs that return patient ids and readings: a session, the director's reports and the REMS forms
PATIENT_DATA_PATHS = ("/api/v1/sessions/", "/api/v1/patients/", "/api/v1/report", "/api/v1/research",
                      "/api/v1/rems/")


def token_scope(method: str, path: str, kind: str = "http") -> str | None:
    """The scope a token needs for this request, "" when any valid token may, None when no
    token may (pure). Tokens are for the JSON API and the live socket only."""
    if kind == "websocket":
        return "read" if path == "/ws/live" else None
    if not path.startswith("/api/"):
        return None
    if method == "POST":
        return "acknowledge" if _ALERT_ACTION.match(path) else None
    if method not in ("GET", "HEAD"):
        return None
    if path == "/api/v1/me":
        return ""
    if path.startswith(PATIENT_DATA_PATHS):
        return "sessions"
    return "read"


def passive_callback(body: dict[str, Any]) -> bool:
    """True when a Dash callback request was not started by a person: fired by a timer
    (every changed prop is a dcc.Interval's n_intervals) or by a layout rendering (pure)."""
    changed = body.get("changedPropIds")
    if not isinstance(changed, list) or not changed:
        return True
    return all(isinstance(p, str) and p.endswith(".n_intervals") for p in changed)


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
    allowed_origins: list[str] = field(default_factory=list)


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
        if scope["type"] == "websocket" and not origin_ok(headers, self.guard.allowed_origins):
            await _deny(scope, send, 403, "WebSocket from another site refused")
            return
        if path in PUBLIC_PATHS or (path.startswith(PUBLIC_PREFIXES) and ".." not in path):
            await self.app(scope, receive, send)
            return
        if path.startswith(DASH_WS):
            await _deny(scope, send, 403, "not used")
            return
        method = scope.get("method", "GET")
        try:
            user = await anyio.to_thread.run_sync(self._resolve, headers)
        except REDIS_ERRORS as e:  # unreachable, or an error reply (LOADING, BUSY, …)
            await _deny(scope, send, 503, f"NOT MONITORING: {words(e)}", html=True)
            return
        if user is not None and user.via == "token":
            need_scope = token_scope(method, path, scope["type"])
            if need_scope is None:
                user = None  # a token is not a browser sign-in: pages and callbacks need one
            elif need_scope and not user.allows(need_scope):
                await _deny(scope, send, 403, f"this token lacks the {need_scope!r} scope")
                return
        if user is None:
            if scope["type"] == "http" and method == "GET" and not _machine_path(path):
                target = path + (("?" + scope["query_string"].decode()) if scope.get("query_string") else "")
                await _redirect(send, "/login?next=" + quote(target, safe=""))
            else:
                await _deny(scope, send, 401, "login required")
            return
        need = self.guard.page_role(path) if scope["type"] == "http" else None
        if need is not None and not user.can(need):
            await _deny(scope, send, 403, f"this page needs the {need} role", html=True)
            return
        active = scope["type"] == "http" and not path.startswith(PASSIVE_PREFIXES) and method in ("GET", "POST")
        if scope["type"] == "http" and path == DASH_CALLBACK:
            body, receive = await _buffer(receive)
            try:
                parsed = json.loads(body or b"{}")
                ids = output_ids(parsed)
            except ValueError:
                await _deny(scope, send, 400, "bad callback request")
                return
            need = self.guard.callback_role(ids)
            if not user.can(need):
                await _deny(scope, send, 403, f"needs the {need} role")
                return
            active = isinstance(parsed, dict) and not passive_callback(parsed)
        if (scope["type"] == "http" and method == "POST" and path.startswith("/api/")
                and user.via == "cookie"):
            if CSRF_HEADER not in headers:
                await _deny(scope, send, 403, f"missing {CSRF_HEADER} header")
                return
            active = True  # an action a person took (acknowledge, pause…)
        if active and user.session_id:
            try:
                await anyio.to_thread.run_sync(self.guard.sessions.touch, user)
            except REDIS_ERRORS:
                pass  # unreachable or writes refused: the request itself and the screens say so
        token = CURRENT_USER.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT_USER.reset(token)

    def _resolve(self, headers: dict[str, str]) -> User | None:
        tok = bearer_token(headers)
        if tok:
            rec = tokens.user_for_token(self.guard.client, self.guard.keys, tok)
            if rec is None:
                return None
            return User(rec["name"], rec["role"], "token", token=rec["token"], scopes=rec["scopes"])
        sid = cookie_value(headers)
        return self.guard.sessions.load(sid) if sid else None


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
                f"<h2>{status}</h2><p>{html_escape(text)}</p><p><a href='/'>Overview</a></p>"
                "<form method='post' action='/logout'><button type='submit'>Sign out</button></form>"
                "</body>").encode()
        ctype = b"text/html; charset=utf-8"
    else:
        body, ctype = json.dumps({"error": text}).encode(), b"application/json"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
