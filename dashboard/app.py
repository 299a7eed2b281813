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
        "station" < "nurse" < "director" < "admin" (monitor.users.ROLES). The app refuses the
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
        `ctx.data` (dashboard/data.py is the only module that talks to Redis), build figures
        with pure functions, and get the acting user with `ctx.current_user()` (a `User` or
        None; the server already refused anonymous callers). Actions that change state write
        the audit log (monitor.audit.record) with that user's name.

Optional: `TITLE: str` (browser tab / nav label) and `NAV: bool` (listed in the top nav).

`PageContext` and `AppContext` are defined in dashboard/context.py (kept separate so page
modules can import them without importing this app).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from types import ModuleType

from monitor.config import Config

PAGES_PACKAGE = "dashboard.pages"
REQUIRED_PAGE_NAMES = ("ROUTES", "MIN_ROLE", "ID_PREFIX", "layout", "register_callbacks")


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
        found.append(module)
    return found


def run(args: argparse.Namespace, cfg: Config) -> int:
    """`vitalwatch dashboard`: serve the dashboard until SIGINT/SIGTERM."""
    raise NotImplementedError("dashboard server: being written (issue 7)")
