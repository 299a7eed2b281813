"""Admin view of the durable audit log: `/audit` (from the archive, filterable).

Opening the page first copies any new entries from Redis into the archive (incremental),
so what is shown is the durable log, including entries Redis no longer holds. Viewing it
is itself audited.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from dash import Input, Output, dcc, html

from dashboard.context import AppContext, PageContext
from monitor.accounts import audit
from monitor.model.redact import redact_url
from monitor.sessions import archive
from monitor.store.redis_conn import REDIS_DOWN

ROUTES = ("/audit",)
MIN_ROLE = "admin"
ID_PREFIX = "audit-"
TITLE = "Audit log"
NAV = True
PAGE_ROWS = 500


def audit_table(rows: list[dict[str, Any]], tz: ZoneInfo) -> html.Table:
    """Audit entries, newest first (pure)."""
    head = html.Tr([html.Th(h) for h in ("Time", "User", "Action", "Session", "Details")])
    body = [html.Tr([
        html.Td(datetime.fromtimestamp(r["ts"] / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")),
        html.Td(r["user"]), html.Td(r["action"]),
        html.Td(dcc.Link(r["session"], href=f"/review/{r['session']}") if r["session"] else ""),
        html.Td(json.dumps({k: v for k, v in r["details"].items() if k != "session"}, sort_keys=True),
                className="vw-mono"),
    ], className="audit-row") for r in rows]
    if not body:
        body = [html.Tr(html.Td("No audit entries match.", colSpan=5))]
    return html.Table([html.Thead(head), html.Tbody(body)], className="vw-table", id="audit-table")


def _sync(app: AppContext) -> str:
    try:
        archive.archive_audit(app.data.client, app.keys, archive.open_archive(app.cfg.archive.url))
        return ""
    except REDIS_DOWN:
        return "Redis unreachable: showing the archived log only (newest entries may be missing)."


def _rows(app: AppContext, user: str | None = None, action: str | None = None) -> list[dict[str, Any]]:
    return archive.audit_entries(archive.open_archive(app.cfg.archive.url), clinic=app.cfg.clinic.id,
                                 user=(user or "").strip() or None, action=(action or "").strip() or None,
                                 limit=PAGE_ROWS)


def layout(ctx: PageContext, **_params: str) -> Any:
    """Filters and the newest PAGE_ROWS entries."""
    tz = ZoneInfo(ctx.cfg.clinic.timezone)
    try:
        note = _sync(ctx.app)
        rows = _rows(ctx.app)
    except sa.exc.SQLAlchemyError as e:
        return html.Div(f"ARCHIVE UNAVAILABLE ({redact_url(ctx.cfg.archive.url)}): {e.__class__.__name__}", className="vw-notfound")
    who = ctx.user.name if ctx.user else "unknown"
    try:
        audit.record(ctx.data.client, ctx.keys, who, "audit.view")
    except REDIS_DOWN:  # still recorded: straight into the archive's audit table
        archive.record_audit_local(archive.open_archive(ctx.cfg.archive.url), ctx.cfg.clinic.id, who, "audit.view")
    return html.Div([
        html.H2("Audit log"), html.Div(note, className="vw-warning") if note else None,
        html.Div([dcc.Input(id="audit-user", placeholder="user", debounce=True),
                  dcc.Input(id="audit-action", placeholder="action prefix, e.g. session.", debounce=True)],
                 className="vw-row"),
        html.Div(audit_table(rows, tz), id="audit-list"),
    ])


def register_callbacks(app: Any, ctx: AppContext) -> None:
    """Filter by user and action prefix."""
    tz = ZoneInfo(ctx.cfg.clinic.timezone)

    @app.callback(Output("audit-list", "children"), Input("audit-user", "value"), Input("audit-action", "value"),
                  prevent_initial_call=True)
    def _filter(user: str | None, action: str | None) -> Any:
        return audit_table(_rows(ctx, user, action), tz)
