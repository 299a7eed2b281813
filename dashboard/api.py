"""HTTP routes beside the Dash pages: /login, /logout, /health, the JSON API and /ws/live.

The auth middleware (dashboard/auth.py) has already authenticated every request that gets
here except /login, /logout and /health; handlers read the user from `current_user()` and
check the role an action needs. Handlers that touch Redis are plain `def`s, so FastAPI runs
them in its thread pool and the push loop never waits on them.

Signing in (the form, a station's acting-nurse check, the account page) goes through the
limits of monitor/accounts/throttle.py, and the password check itself runs on a bounded
HashPool, never on the request threads: a flood of attempts is refused ("busy") rather than
queued, and the nurses' requests keep their threads. Unknown user, wrong password and
disabled account get one answer; a throttled attempt gets 429 whatever the name.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import anyio
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from dashboard.auth import COOKIE, Sessions, cookie_value, safe_next, session_digest
from dashboard.context import User, current_user
from dashboard.data import Data
from dashboard.live import Hub, monitoring_problems
from dashboard.security import CSRF_COOKIE, CSRF_FIELD, client_source, csrf_ok, new_csrf_token
from monitor.accounts import audit, users
from monitor.accounts.passwords import HashPool
from monitor.accounts.throttle import LoginPolicy
from monitor.alarms.actions import NotLatched, Refused
from monitor.model.clock import now_ms
from monitor.model.config import Config
from monitor.observe.collectors import login_failed
from monitor.store import redis_cluster, redis_types
from monitor.store.retry import REDIS_ERRORS, cause, words

log = logging.getLogger(__name__)

LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="manifest" href="/manifest.webmanifest">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>VitalWatch — sign in</title>
<style>body{{font-family:system-ui,sans-serif;background:#263238;color:#eceff1;display:flex;
justify-content:center;align-items:center;height:100vh;margin:0}}form{{background:#37474f;padding:2em;
border-radius:8px;min-width:18em}}label{{display:block;margin:.6em 0 .2em}}input{{width:100%;padding:.5em;
font-size:1.1em;box-sizing:border-box}}button{{margin-top:1em;width:100%;padding:.6em;font-size:1.1em;
background:#1565c0;color:white;border:0;border-radius:4px}}.msg{{color:#ffab91;margin-top:.8em}}</style>
</head><body><main><form method="post" action="/login" id="login-form"><h1>VitalWatch</h1>
<input type="hidden" name="next" value="{next}"><input type="hidden" name="csrf" value="{csrf}">
<label for="username">User name</label><input id="username" name="username" autocomplete="username" autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password">
<button type="submit" id="login-submit">Sign in</button><div class="msg" id="login-msg" role="status">{msg}</div></form></main></body></html>"""

# Installable phone view (/m): name, colours, icons (dashboard/assets/icons, public).
MANIFEST = {
    "name": "VitalWatch", "short_name": "VitalWatch", "start_url": "/m", "scope": "/", "display": "standalone",
    "background_color": "#263238", "theme_color": "#263238",
    "description": "Alarms first, then every room's latest values — for the nurse between rooms.",
    "icons": [{"src": "/assets/icons/icon-192.png", "sizes": "192x192", "type": "image/png"},
              {"src": "/assets/icons/icon-512.png", "sizes": "512x512", "type": "image/png"},
              {"src": "/assets/icons/icon-512-maskable.png", "sizes": "512x512", "type": "image/png",
               "purpose": "maskable"}],
}

LOGOUT_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>VitalWatch — sign out</title></head>
<body style="font-family:system-ui,sans-serif"><form method="post" action="/logout" id="logout-form">
<p>Sign out of VitalWatch on this screen?</p><button type="submit" id="logout-submit">Sign out</button>
<a href="/">Back</a></form></body></html>"""

# One answer for every refusal that could tell who exists: unknown name, wrong password,
# disabled account (only an admin learns which: the audit log has the reason).
WRONG = "Wrong user name or password."
THROTTLED = "Too many failed attempts from here: wait a little, then try again."
BUSY = "Sign-in is busy right now: try again in a few seconds."
REASON_STATUS = {"unknown": (401, WRONG), "bad_password": (401, WRONG), "disabled": (401, WRONG),
                 "throttled": (429, THROTTLED), "busy": (503, BUSY)}


def login_page(next_path: str = "/", msg: str = "", csrf: str = "") -> str:
    """The sign-in form (plain HTML: no script needed to sign in)."""
    return LOGIN_PAGE.format(next=html.escape(safe_next(next_path)), msg=html.escape(msg), csrf=html.escape(csrf))


def _require(min_role: str) -> User:
    user = current_user()
    if user is None:
        raise HTTPException(401, "login required")
    if not user.can(min_role):
        raise HTTPException(403, f"needs the {min_role} role")
    return user


@dataclass
class SignIn:
    """Password checks off the request threads: limits, the bounded pool, the audit entry."""

    data: Data
    policy: LoginPolicy
    pool: HashPool

    async def check(self, name: str, password: str, source: str) -> users.LoginResult:
        """Check `name`/`password` from `source` under the limits (await: no thread held
        while the password is hashed); a refusal is counted for /metrics by its reason."""
        res = await self._check(name, password, source)
        if not res.ok:
            login_failed(res.reason)
        return res

    async def _check(self, name: str, password: str, source: str) -> users.LoginResult:
        c, k = self.data.client, self.data.keys
        attempt = await anyio.to_thread.run_sync(users.begin_login, c, k, name, source, self.policy)
        if not attempt.allowed:
            return users.LoginResult(False, None, "throttled", attempt.wait_ms)
        fut = self.pool.submit(users.check, attempt, password)
        if fut is None:
            await anyio.to_thread.run_sync(users.give_back, c, k, attempt, self.policy)
            return users.LoginResult(False, None, "busy", 2000)
        ok = await asyncio.wrap_future(fut)
        return await anyio.to_thread.run_sync(users.finish_login, c, k, attempt, ok, password, self.policy)

    async def audit(self, name: str, result: users.LoginResult, via: str, source: str) -> None:
        """The attempt's audit entry (rate-limited for anonymous sources)."""
        await anyio.to_thread.run_sync(lambda: users.audit_login(self.data.client, self.data.keys, name, result,
                                                                 via=via, source=source))


async def acting_user(signin: SignIn, user: User, body: dict[str, Any]) -> str:
    """Who acts: the signed-in person, or — on a station screen — the nurse who typed in.

    A station account may not act by itself: the acting nurse's name and password are
    checked (under the sign-in limits, counted per station: a guesser elsewhere cannot slow
    her down here) and the action is recorded under the nurse's name.
    """
    if user.role != "station":
        if not user.can("nurse"):
            raise HTTPException(403, "needs the nurse role")
        return user.name
    name, password = str(body.get("username") or ""), str(body.get("password") or "")
    if not name or not password:
        raise HTTPException(401, "a station screen needs the acting nurse's name and password")
    source = f"station:{user.name}"
    res = await signin.check(name, password, source)
    await signin.audit(name, res, via=f"station:{user.name}", source=source)
    if not res.ok or res.user is None:
        status, text = REASON_STATUS.get(res.reason, (401, WRONG))
        raise HTTPException(status, text)
    if not users.has_role(res.user["role"], "nurse"):
        raise HTTPException(403, "needs the nurse role")
    return res.user["name"]


def install_routes(server: FastAPI, cfg: Config, data: Data, sessions: Sessions, hub: Hub,
                   pool: HashPool | None = None) -> SignIn:
    """Add the non-Dash routes to the FastAPI server (before Dash adds its catch-all)."""
    dcfg = cfg.dashboard
    signin = SignIn(data, LoginPolicy.from_config(dcfg),
                    pool or HashPool(dcfg.login_check_workers, dcfg.login_check_queue))

    def form_page(nxt: str, msg: str, status: int = 200, token: str | None = None) -> HTMLResponse:
        # one token per browser (kept while its cookie lives): a second GET of the form —
        # another tab, or the favicon's redirect to /login — must not void the first
        token = token if token and len(token) <= 64 else new_csrf_token()
        resp = HTMLResponse(login_page(nxt, msg, token), status)
        resp.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", secure=dcfg.secure_cookies,
                        path="/login")
        return resp

    @server.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, next: str = "/", expired: int = 0) -> HTMLResponse:  # noqa: A002
        return form_page(next, "You were signed out after inactivity." if expired else "",
                         token=request.cookies.get(CSRF_COOKIE))

    @server.post("/login", include_in_schema=False)
    async def login_submit(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        name, password = form.get("username", "").strip(), form.get("password", "")
        nxt = safe_next(form.get("next"))
        if not csrf_ok(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
            return form_page(nxt, "The sign-in form expired: please sign in again.", 403)
        token = request.cookies.get(CSRF_COOKIE)
        source = client_source(request.scope)
        try:
            res = await signin.check(name, password, source)
            await signin.audit(name, res, via="dashboard", source=source)
            sid = await anyio.to_thread.run_sync(sessions.create, res.user, now_ms()) if res.ok and res.user else ""
        except REDIS_ERRORS as e:  # unreachable, or writes refused (OOM, READONLY…)
            return form_page(nxt, f"NOT MONITORING: {words(e)} — cannot sign in.", 503, token)
        if not res.ok:
            status, text = REASON_STATUS.get(res.reason, (401, WRONG))
            refused = form_page(nxt, text, status, token)
            if status in (429, 503):
                refused.headers["Retry-After"] = str(max(1, -(-res.retry_after_ms // 1000)))
            return refused
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="lax", secure=dcfg.secure_cookies, path="/")
        resp.delete_cookie(CSRF_COOKIE, path="/login")
        return resp

    @server.get("/logout", response_class=HTMLResponse, include_in_schema=False)
    def logout_page() -> HTMLResponse:
        # signing out changes state: only a POST does it (a link or image elsewhere cannot)
        return HTMLResponse(LOGOUT_PAGE)

    @server.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        sid = cookie_value({"cookie": request.headers.get("cookie", "")})
        if sid:
            try:
                user = sessions.load(sid)
                sessions.end(session_digest(sid))
                if user:
                    audit.record(data.client, data.keys, user.name, "logout")
            except REDIS_ERRORS:
                pass  # the cookie is cleared below either way; the session expires on its own
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    @server.get("/health")
    def health() -> JSONResponse:
        now = now_ms()
        body: dict[str, Any] = {"ts": now, "redis": False, "devices": {}, "alert_engine_heartbeat_age_s": None,
                                "monitoring": False, "problems": [], "push_loop": hub.loop_health(),
                                "writes": hub.write_health(now)}
        loop = hub.loop_problem()
        try:
            redis_cluster.ping(data.client, data.keys.heartbeats)
            body["redis"] = True
            beats_raw = redis_types.str_hash(data.client.hgetall(data.keys.heartbeats))
            beats = data.heartbeats()
            if "alerts" in beats:
                body["alert_engine_heartbeat_age_s"] = round((now - beats["alerts"]) / 1000, 1)
            body["heartbeat_age_s"] = {r: round((now - ms) / 1000, 1) for r, ms in beats.items()}
            status = data.device_status([d.id for _r, d in cfg.devices()])
            body["devices"] = {d.id: {"room": r.id, "state": status[d.id].get("state", "unknown"),
                                   "last_ts": _opt_ms(status[d.id].get("last_ts")),
                                   "updated_ms": _opt_ms(status[d.id].get("updated_ms"))}
                               for r, d in cfg.devices()}
            storage_raw = redis_types.str_hash(data.client.hgetall(data.keys.storage))
            body["problems"] = ([loop] if loop else []) + monitoring_problems(cfg, beats_raw, now, hub.probe,
                                                                              hub.info_cause, storage_raw, status)
        except REDIS_ERRORS as e:  # unreachable, or an error reply (LOADING, BUSY, NOAUTH…)
            body["problems"] = ([loop] if loop else []) + [cause(e)]
        body["monitoring"] = not body["problems"]
        return JSONResponse(body, status_code=200 if body["monitoring"] else 503)

    @server.get("/api/v1/me")
    def me() -> dict[str, Any]:
        user = _require("station")
        return {"name": user.name, "role": user.role, "via": user.via}

    @server.get("/api/v1/rooms")
    def rooms() -> dict[str, Any]:
        # the push hub's per-room cache (kept current by the push loop): no Redis read here,
        # so asking for 300 rooms costs what asking for one does
        _require("station")
        if not hub.redis_ok:
            raise HTTPException(503, "NOT MONITORING: Redis unreachable")
        return {"ts": now_ms(), "rooms": hub.rooms_view(), "clinic_alerts": hub.clinic}

    @server.get("/api/v1/alerts")
    def alerts(since: int = 0, room: str | None = None, limit: int = 1000) -> dict[str, Any]:
        _require("station")
        events = data.alert_events(since_ms=since, count=max(1, min(limit, 10000)), room=room)
        return {"since": since, "events": events, "active": data.active_alerts()}

    @server.get("/api/v1/sessions/{sid}")
    def session(sid: str) -> dict[str, Any]:
        _require("nurse")
        head = data.session(sid)
        if head is None:
            raise HTTPException(404, f"no session {sid!r} in Redis (see /review for archived sessions)")
        # an open session reads to the stream's end ("+"), not to this host's clock: stream ids
        # are Redis's clock, and a Redis host ahead of this one would hide the newest readings
        end = int(head["ended_ms"]) if head.get("ended_ms") else None
        readings = [{"ts": ts, "dev": dev, **vals, **({"flags": flags} if flags else {})}
                    for ts, dev, vals, flags in data.history(head["room"], int(head["started_ms"]), end)]
        return {"session": head, "events": data.session_events(sid), "readings": readings}

    @server.get("/api/v1/sessions/{sid}/fhir")
    def session_fhir(sid: str) -> Response:
        """An archived session as a FHIR R4 Bundle of vital-signs Observations (director and up)."""
        user = _require("director")
        import sqlalchemy as sa

        from monitor.sessions import archive
        from monitor.sessions.export import fhir_json

        try:
            rec = archive.load_session(archive.open_archive(cfg.archive.url), sid)
        except archive.NotArchived:
            raise HTTPException(404, f"no archived session {sid!r} (is it ended?)") from None
        except sa.exc.SQLAlchemyError as e:
            raise HTTPException(503, f"archive unavailable: {e.__class__.__name__}") from None
        body = fhir_json(rec, cfg.clinic.id, cfg.fhir.patient_system)
        try:
            audit.record(data.client, data.keys, user.name, "session.export", session=sid, format="fhir", via="api")
        except REDIS_ERRORS:  # never lose an audit entry: straight into the archive's table
            archive.record_audit_local(archive.open_archive(cfg.archive.url), cfg.clinic.id, user.name,
                                       "session.export", session=sid, format="fhir", via="api")
        return Response(body, media_type="application/fhir+json")

    @server.post("/api/v1/alerts/{alert_id}/acknowledge")
    async def acknowledge(alert_id: str, request: Request) -> dict[str, Any]:
        return await _act(request, alert_id, "acknowledge")

    @server.post("/api/v1/alerts/{alert_id}/pause")
    async def pause(alert_id: str, request: Request) -> dict[str, Any]:
        return await _act(request, alert_id, "pause")

    @server.post("/api/v1/alerts/{alert_id}/reset")
    async def reset(alert_id: str, request: Request) -> dict[str, Any]:
        return await _act(request, alert_id, "reset")

    @server.post("/api/v1/alerts/{alert_id}/dismiss")
    async def dismiss(alert_id: str, request: Request) -> dict[str, Any]:
        return await _act(request, alert_id, "dismiss")

    @server.post("/api/v1/alerts/{alert_id}/unacknowledge")
    async def unacknowledge(alert_id: str, request: Request) -> dict[str, Any]:
        return await _act(request, alert_id, "unacknowledge")

    @server.get("/manifest.webmanifest", include_in_schema=False)
    def manifest() -> Response:
        # public (no patient data): a browser fetches it without the sign-in cookie
        return Response(json.dumps(MANIFEST), media_type="application/manifest+json")

    async def _act(request: Request, alert_id: str, action: str) -> dict[str, Any]:
        user = _require("station")
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise HTTPException(400, "body must be JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "body must be a JSON object")

        def work(actor: str) -> dict[str, Any]:
            try:
                if action == "acknowledge":
                    return data.acknowledge(alert_id, actor)
                if action == "reset":
                    return data.reset(alert_id, actor)
                if action == "dismiss":
                    return data.dismiss(alert_id, actor)
                if action == "unacknowledge":
                    return data.unacknowledge(alert_id, actor)
                return data.pause_audio(alert_id, actor, seconds=body.get("seconds"))
            except KeyError:
                raise HTTPException(404, f"no active alert {alert_id!r}") from None
            except (NotLatched, Refused) as e:
                # reset while the condition is present, dismiss of an alarm, an undo too late
                raise HTTPException(409, str(e)) from None

        try:
            actor = await acting_user(signin, user, body)
            return await anyio.to_thread.run_sync(work, actor)
        except REDIS_ERRORS as e:  # unreachable, or the change refused (OOM, READONLY…): not applied
            raise HTTPException(503, f"NOT MONITORING: {words(e)}; nothing was changed") from None

    @server.websocket("/ws/live")
    async def live(ws: WebSocket) -> None:
        user = current_user()
        if user is None:  # the middleware refuses anonymous sockets; this is belt and braces
            await ws.close(code=4401)
            return
        principal = user.session_id or user.token
        if not hub.open_socket(principal, dcfg.ws_per_session):
            await ws.close(code=1008, reason="too many open live sockets for this sign-in")
            return
        await ws.accept()
        client = hub.subscribe(user.name, user.role)
        state = SocketState(rate=TokenBucket(dcfg.ws_messages_per_s, 4 * dcfg.ws_messages_per_s))
        sender = asyncio.create_task(_send_loop(ws, client))
        checker = asyncio.create_task(_session_check(ws, user, sessions, state))
        try:
            while True:
                text = await ws.receive_text()
                if not state.rate.take(time.monotonic()):
                    await ws.close(code=1008, reason="too many messages")
                    break
                msg = json.loads(text)
                kind = msg.get("t") if isinstance(msg, dict) else None
                if kind == "activity" and user.session_id and state.valid and state.activity_due(time.monotonic()):
                    try:
                        await anyio.to_thread.run_sync(sessions.touch, user)
                    except REDIS_ERRORS:
                        pass  # writes refused or Redis away: the screens say so; the next activity retries
                elif kind == "screen" and state.valid:
                    screen = str(msg.get("id", ""))[:64] or "unknown"
                    if hub.presence_allowed(principal, screen, dcfg.ws_per_session):
                        await hub.write_screen(f"{principal[:16]}:{screen}", bool(msg.get("sound_on")),
                                               user.name, user.role)
        except (WebSocketDisconnect, ValueError, RuntimeError):
            pass
        finally:
            hub.unsubscribe(client)
            hub.close_socket(principal)
            sender.cancel()
            checker.cancel()

    return signin


def _opt_ms(text: str | None) -> int | None:
    """A ms field of a status hash, or None when absent or unreadable."""
    try:
        return int(text or 0) or None
    except ValueError:
        return None


@dataclass
class TokenBucket:
    """At most `rate_per_s` on average, `burst` at once (pure: time is passed in)."""

    rate_per_s: float
    burst: float
    tokens: float = -1.0
    last_s: float = 0.0

    def take(self, now_s: float) -> bool:
        """True when one more message may pass now."""
        if self.tokens < 0:
            self.tokens, self.last_s = self.burst, now_s
        self.tokens = min(self.burst, self.tokens + (now_s - self.last_s) * self.rate_per_s)
        self.last_s = now_s
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class SocketState:
    """One live socket: its message budget, whether its sign-in still holds, activity pacing."""

    rate: TokenBucket
    valid: bool = True
    last_activity_s: float = field(default=-1e9)

    def activity_due(self, now_s: float, every_s: float = 10.0) -> bool:
        """Touch the session at most every `every_s` (live.js sends one per 20 s at most)."""
        if now_s - self.last_activity_s < every_s:
            return False
        self.last_activity_s = now_s
        return True


SESSION_CHECK_S = 2.0


async def _send_loop(ws: WebSocket, client: Any) -> None:
    try:
        while True:
            first = await client.queue.get()
            # send what has queued up meanwhile as one frame: fewer frames, same latency
            batch = [first]
            while not client.queue.empty() and len(batch) < 200:
                batch.append(client.queue.get_nowait())
            await ws.send_text(batch[0] if len(batch) == 1 else "[" + ",".join(batch) + "]")
            if client.dropped:
                await ws.close(code=4008)
                return
    except (WebSocketDisconnect, RuntimeError):
        return


async def _session_check(ws: WebSocket, user: User, sessions: Sessions, state: SocketState) -> None:
    """Every SESSION_CHECK_S: does the sign-in behind this socket still hold (not logged
    out, idle-expired, disabled, role or password changed, token revoked or expired)? If
    not, tell the tab and close — within seconds, for cookie and token sockets alike."""
    while True:
        await asyncio.sleep(SESSION_CHECK_S)
        try:
            ok = await anyio.to_thread.run_sync(sessions.still_valid, user)
        except REDIS_ERRORS:
            continue  # cannot tell (unreachable, or an error reply); the NOT MONITORING banner shows it
        if not ok:
            state.valid = False
            try:
                await ws.send_text(json.dumps({"t": "logout"}))
                await ws.close(code=4401)
            except (WebSocketDisconnect, RuntimeError):
                pass
            return
