"""The nurse-station dashboard: a Dash 4 app on the FastAPI backend, plus login, API and push.

`vitalwatch dashboard [--host H] [--port P]` → `run(args, cfg)`.

Page-module convention (dashboard/pages/*.py)
=============================================
Every page is one module in `dashboard/pages/`. The app discovers them at start
(`discover_pages()`), routes URLs to them and enforces their role on the server. A page
module exposes exactly these names:

    ROUTES: tuple[str, ...]
        URL path patterns the page serves. A segment `<name>` captures one path segment and
        is passed to `layout()` as the keyword argument `name`. Example:
        `ROUTES = ("/review", "/review/<session>")`.

    MIN_ROLE: str
        The lowest role allowed to open the page and run its callbacks: one of
        "station" < "nurse" < "director" < "admin" (monitor.accounts.users.ROLES). The app refuses the
        page (and every callback whose output ids belong to the page, see ID_PREFIX) to
        anyone below it, on the server.

    ID_PREFIX: str
        Prefix of every component id the page creates, e.g. "review-". Dict (pattern-matching)
        ids carry `{"page": "<ID_PREFIX without the dash>", ...}`. The server maps a Dash
        callback request to its page by its output ids and checks MIN_ROLE before running it.

    def layout(ctx: PageContext, **params: str) -> dash.development.base_component.Component
        Builds the page for one request. `ctx` (below) carries the config, the Redis reader,
        the signed-in user and the clock; `params` are the captured route segments. Must not
        raise for an unknown id: return a "not found" component instead.

    def register_callbacks(app: dash.Dash, ctx: AppContext) -> None
        Registers the page's callbacks once at start. Callbacks stay a few lines: read through
        `ctx.data` (dashboard/data.py: readings, alerts, device status, heartbeats, sessions),
        change state through the core's own functions given `ctx.data.client` (sessions,
        session limits, accounts, the archive: the same code the CLI runs), build figures with
        pure functions, and get the acting user with `ctx.current_user()` (a `User` or None;
        the server already refused anonymous callers). Actions that change state write the
        audit log (monitor.accounts.audit.record) with that user's name.

Redis is reached from four places here: dashboard/data.py (`Data`, the pages' reader and
alert actions), page callbacks passing `ctx.data.client` to monitor.* functions,
dashboard/auth.py and dashboard/api.py (sign-in sessions, accounts and tokens) and
dashboard/live.py (the push hub's own clients: `redis.asyncio` for its reads, and a `Data` of
its own for the reads it does in its threads — never the pages' connections). Every Dash
callback runs on a thread pool, never on the event loop (`_callbacks_off_loop`).
dashboard/security.py wraps it all: security headers and CSP on every answer, request body
limits.

Optional: `TITLE: str` (browser tab / nav label) and `NAV: bool` (listed in the top nav).

`PageContext` and `AppContext` are defined in dashboard/context.py (kept separate so page
modules can import them without importing this app).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import importlib
import inspect
import logging
import pkgutil
import re
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import dash
import uvicorn
from dash import Input, Output, dcc, html
from fastapi import FastAPI, Request, Response

from dashboard.api import install_routes
from dashboard.auth import AuthMiddleware, Guard, Sessions
from dashboard.components import nav
from dashboard.context import AppContext, PageContext, current_user
from dashboard.data import Data
from dashboard.director_api import install_director_routes
from dashboard.live import Hub
from dashboard.metrics import install_metrics
from dashboard.security import LOGIN_BODY_MAX, BodyLimit, SecurityHeaders, csp
from monitor.accounts.users import ROLES
from monitor.model.clock import now_ms
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.model.redact import redact_url
from monitor.store.redis_conn import connect
from monitor.store.retry import REDIS_ERRORS, words
from monitor.store.runtime import redis_url_for

log = logging.getLogger(__name__)

PAGES_PACKAGE = "dashboard.pages"
REQUIRED_PAGE_NAMES = ("ROUTES", "MIN_ROLE", "ID_PREFIX", "layout", "register_callbacks")
ASSETS = Path(__file__).parent / "assets"
APP_ID_PREFIX = "app-"  # the shell's own ids (router, nav): any signed-in user
WS_MAX_BYTES = 4096  # a live-socket message from a tab is a few dozen bytes
CALLBACK_WORKERS = 8  # Dash page/data callbacks run at most this many at once; more wait their turn
# Dash's index page with a language (screen readers, axe), the web app manifest (the phone
# view installs) and no inline script (Dash's default carries an IE-only one in a comment).
INDEX = """<!DOCTYPE html>
<html lang="en">
    <head>
        {%metas%}
        <title>{%title%}</title>
        <meta name="theme-color" content="#263238">
        <link rel="manifest" href="/manifest.webmanifest">
        <link rel="apple-touch-icon" href="/assets/icons/icon-192.png">
        {%favicon%}
        {%css%}
    </head>
    <body>
        {%app_entry%}
        <footer>
            {%config%}
            {%scripts%}
            {%renderer%}
        </footer>
    </body>
</html>"""


def discover_pages() -> list[ModuleType]:
    """Import every module in dashboard/pages that follows the page-module convention."""
    pkg = importlib.import_module(PAGES_PACKAGE)
    found: list[ModuleType] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{PAGES_PACKAGE}.{info.name}")
        missing = [n for n in REQUIRED_PAGE_NAMES if not hasattr(module, n)]
        if missing:
            raise TypeError(f"{module.__name__} does not follow the page convention: missing {missing}")
        if module.MIN_ROLE not in ROLES:
            raise TypeError(f"{module.__name__}: MIN_ROLE {module.MIN_ROLE!r} is not one of {ROLES}")
        found.append(module)
    return found


def compile_route(pattern: str) -> re.Pattern[str]:
    """`/review/<session>` → a regex capturing `session` (one path segment)."""
    parts = []
    for seg in pattern.strip("/").split("/"):
        m = re.fullmatch(r"<([A-Za-z_][A-Za-z0-9_]*)>", seg)
        parts.append(f"(?P<{m.group(1)}>[^/]+)" if m else re.escape(seg))
    return re.compile("^/" + "/".join(p for p in parts if p) + "/?$")


@dataclass
class Router:
    """URL path → (page module, params); output ids → minimum role."""

    pages: list[ModuleType]

    def __post_init__(self) -> None:
        self.routes = [(compile_route(p), m) for m in self.pages for p in m.ROUTES]

    def match(self, path: str) -> tuple[ModuleType, dict[str, str]] | None:
        """The page serving `path` and its captured segments."""
        for rx, module in self.routes:
            m = rx.match(path or "/")
            if m:
                return module, m.groupdict()
        return None

    def page_role(self, path: str) -> str | None:
        """Min role of the page at `path` (None when no page serves it)."""
        hit = self.match(path)
        return hit[0].MIN_ROLE if hit else None

    def callback_role(self, ids: list[str]) -> str:
        """The strictest MIN_ROLE over the pages owning these output ids.

        An id no page claims needs "admin": a page that forgets its ID_PREFIX fails closed.
        """
        need = "station"
        for cid in ids:
            role = "admin"
            if cid.startswith(APP_ID_PREFIX):
                role = "station"
            for m in self.pages:
                tag = m.ID_PREFIX.rstrip("-")
                if cid.startswith(m.ID_PREFIX) or f'"page": "{tag}"' in cid:
                    role = m.MIN_ROLE
                    break
            if ROLES.index(role) > ROLES.index(need):
                need = role
        return need


def build(cfg: Config, redis_url: str) -> tuple[Any, Hub, dash.Dash]:
    """The ASGI app (auth middleware around FastAPI + Dash), its push hub and the Dash app."""
    keys = Keys(cfg.clinic.id)
    client = connect(redis_url, timeout_s=2.0)
    data = Data(client, keys, cfg)
    sessions = Sessions(client, keys, cfg.dashboard.idle_logoff_min)
    # the push hub reads through clients of its own (its redis.asyncio one, and this one for
    # the reads it does in its own threads): pages and exports never hold its connections
    hub = Hub(cfg, keys, redis_url, Data(connect(redis_url, timeout_s=2.0), keys, cfg))
    callback_pool = ThreadPoolExecutor(CALLBACK_WORKERS, thread_name_prefix="dash-callback")
    actx = AppContext(cfg=cfg, keys=keys, data=data)
    pages = discover_pages()
    router = Router(pages)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(hub.run(stop))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=5)
            signin.pool.shutdown()
            hub.close()
            callback_pool.shutdown(wait=False, cancel_futures=True)

    server = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    signin = install_routes(server, cfg, data, sessions, hub)
    install_director_routes(server, cfg, data)
    install_metrics(server, hub, data)
    # Dash 4's own docs allow a FastAPI server instance and update_title=None; its stubs do not
    app = dash.Dash(__name__, server=server,  # type: ignore[arg-type]
                    assets_folder=str(ASSETS), serve_locally=True,
                    suppress_callback_exceptions=True, title="VitalWatch",
                    update_title=None,  # type: ignore[arg-type]
                    compress=False,
                    meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}])
    app.index_string = INDEX
    app.layout = html.Div([dcc.Location(id="app-url"), html.Div(id="app-nav"),
                           html.Div(id="app-page", className="vw-page")])
    nav_pages = [(getattr(m, "TITLE", m.__name__), m.ROUTES[0], m.MIN_ROLE)
                 for m in pages if getattr(m, "NAV", False) and "<" not in m.ROUTES[0]]

    @app.callback(Output("app-page", "children"), Output("app-nav", "children"), Input("app-url", "pathname"))
    def _route(path: str | None) -> tuple[Any, Any]:
        user = current_user()
        links = [(t, href) for t, href, role in nav_pages if user and user.can(role)]
        hit = router.match(path or "/")
        if hit is None:
            return html.Div(f"No page at {path}.", className="vw-notfound"), nav(user, links)
        module, params = hit
        if user is None or not user.can(module.MIN_ROLE):
            return html.Div(f"This page needs the {module.MIN_ROLE} role.", className="vw-notfound"), nav(user, links)
        pctx = PageContext(app=actx, user=user, now_ms=now_ms())
        try:
            return module.layout(pctx, **params), nav(user, links)
        except REDIS_ERRORS as e:  # unreachable, or an error reply (LOADING, BUSY…)
            return html.Div(f"NOT MONITORING: {words(e)}.", className="vw-notfound"), nav(user, links)

    for m in pages:
        m.register_callbacks(app, actx)
    _callbacks_off_loop(server, app, callback_pool)
    _page_catchall(server, app)
    guard = Guard(sessions=sessions, client=client, keys=keys, page_role=router.page_role,
                  callback_role=router.callback_role, secure_cookies=cfg.dashboard.secure_cookies,
                  allowed_origins=list(cfg.dashboard.allowed_origins))
    # outermost first: headers on every answer (413s and 401s too), then the body limit,
    # then sign-in and roles
    limited = BodyLimit(AuthMiddleware(server, guard), cfg.dashboard.max_body_kb * 1024,
                        {"/login": LOGIN_BODY_MAX, "/logout": LOGIN_BODY_MAX})
    asgi = SecurityHeaders(limited, lambda: csp(app.csp_hashes()), hsts=cfg.dashboard.secure_cookies)
    asgi.signin = signin  # type: ignore[attr-defined]  # tests and benchmarks read the pool's counters
    return asgi, hub, app


def _callbacks_off_loop(server: FastAPI, app: dash.Dash, pool: ThreadPoolExecutor) -> None:
    """Run every Dash callback (page routing, figures, exports, actions) in `pool`, never on
    the event loop.

    Dash 4's FastAPI backend calls a sync callback inline in its `async` route, so one slow
    page (the review of a long session, a room's hours of trend, an export) would hold the
    event loop — and with it the push hub's Redis reads and every tab's WebSocket sends — for
    as long as it runs. Why this rather than running the push hub on a loop of its own in
    another thread: the tabs' WebSockets are served by uvicorn on this loop whatever thread
    the hub reads in, so a blocked loop would still freeze every screen; the guarantee must
    be that nothing blocks this loop. The other routes already keep to it (FastAPI runs the
    plain `def` routes of dashboard/api.py and director_api.py in its thread pool; the auth
    middleware and the socket handler use anyio threads), and the hub has its own Redis
    clients and threads (dashboard/live.py). A bounded pool of its own: a burst of heavy
    pages waits here and cannot take the threads the sign-in checks and the API need.

    Dash's own `_dash-update-component` route is replaced by one doing the same steps (see
    dash/backends/_fastapi.py `serve_callback`) with everything after reading the body in
    the pool; the request context (Dash's request, the signed-in user) travels with
    `contextvars.copy_context()`.
    """
    from fastapi.routing import APIRoute

    path = app.config.routes_pathname_prefix + "_dash-update-component"

    async def dispatch(_request: Request) -> Any:
        body = app.backend.request_adapter().get_json()

        def work() -> tuple[Any, Any]:
            g = app._initialize_context(body)
            func = app._prepare_callback(g, body)
            args = app._inputs_to_vals(g.inputs_list + g.states_list)
            return g, app._execute_callback(func, args, g.outputs_list, g)()

        ctx = contextvars.copy_context()
        g, result = await asyncio.get_running_loop().run_in_executor(pool, ctx.run, work)
        if inspect.iscoroutine(result):
            result = await result
        return g.dash_response.set_response(data=result)

    routes = server.router.routes
    at = next(i for i, r in enumerate(routes) if isinstance(r, APIRoute) and r.path == path)
    routes[at] = APIRoute(path, dispatch, methods=["POST"], include_in_schema=False)


def _page_catchall(server: FastAPI, app: dash.Dash) -> None:
    """Serve the Dash index for page paths (/room/x, /review/y) of *this* app.

    Dash registers its own catch-all at server start for whichever app it saw last; ours is
    registered now, for this app, so several dashboards in one process (tests) stay apart.
    """
    from dash.backends._fastapi import reset_current_request, set_current_request
    async def index(request: Request) -> Response:
        token = set_current_request(request)
        try:
            # Dash's first-request setup (assets: style.css, live.js) only runs for its own
            # routes; a deep link (/review/x, /room/x) as the first page after a start would
            # otherwise be served without them — no live socket, no alarm sound. Idempotent.
            app._setup_server()
            return Response(content=app.index(), media_type="text/html")
        finally:
            reset_current_request(token)

    server.add_api_route("/{path:path}", index, methods=["GET"], include_in_schema=False)


class Served:
    """A dashboard served by uvicorn in a background thread (tests and benchmarks)."""

    def __init__(self, cfg: Config, redis_url: str, host: str = "127.0.0.1", port: int = 0) -> None:
        from monitor.store.embedded import free_port

        self.port = port or free_port()
        self.host = host
        asgi, self.hub, self.dash_app = build(cfg, redis_url)
        self.asgi = asgi
        self.server = uvicorn.Server(uvicorn.Config(asgi, host=host, port=self.port, log_level="warning",
                                                    ws="websockets-sansio", lifespan="on",
                                                    ws_max_size=WS_MAX_BYTES))
        self.thread = threading.Thread(target=self.server.run, name="dashboard", daemon=True)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Served:
        """Start and wait until it accepts connections."""
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("dashboard did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=10)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """`vitalwatch dashboard`: serve the dashboard until SIGINT/SIGTERM."""
    redis_url = redis_url_for(cfg)
    host = args.host or cfg.dashboard.host
    port = args.port if args.port is not None else cfg.dashboard.port
    asgi, _hub, _app = build(cfg, redis_url)
    log.info("dashboard on http://%s:%d (Redis %s)", host, port, redact_url(redis_url))
    config = uvicorn.Config(asgi, host=host, port=port, log_level="warning", ws="websockets-sansio",
                            lifespan="on", proxy_headers=True,
                            forwarded_allow_ips=cfg.dashboard.forwarded_allow_ips, ws_max_size=WS_MAX_BYTES)
    # uvicorn handles SIGINT/SIGTERM itself: stops accepting, closes sockets, runs the lifespan
    # shutdown (which stops the push loop and removes this process's heartbeat).
    uvicorn.Server(config).run()
    return 0
