"""Admin view of the outbound queues (HL7 to the EHR, FHIR): `/outbox`.

Per destination: messages waiting, delivered and refused counts, the last error and the
next retry; then every message the receiver refused (AE/AR, a FHIR 4xx) with its answer and
a Resend button. A resend queues the same message again at the end and is written to the
audit log (`outbox.resend`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dash import ALL, Input, Output, html, no_update
from dash import ctx as dash_ctx

from dashboard.context import AppContext, PageContext
from monitor.accounts import audit
from monitor.model.redact import redact_url
from monitor.sessions.outbound import destinations
from monitor.store import redis_types
from monitor.store.outbox import FailedMessage, Outbox
from monitor.store.redis_conn import REDIS_DOWN

ROUTES = ("/outbox",)
MIN_ROLE = "admin"
ID_PREFIX = "outbox-"
TITLE = "Outbound"
NAV = True
ERROR_STYLE = {"color": "#ff8a80"}
OK_STYLE = {"color": "#b9f6ca"}


def _t(ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S") if ms else "—"


def failed_table(dest: str, failed: list[FailedMessage], tz: ZoneInfo) -> html.Table:
    """Refused messages of one destination, newest first, each with a Resend button (pure)."""
    head = html.Tr([html.Th(h) for h in ("Refused", "Session", "Message", "Receiver's answer", "")])
    body = []
    for f in failed:
        m = f.message
        ident = m.meta.get("control_id") or m.id
        body.append(html.Tr([
            html.Td(_t(f.failed_ms, tz)),
            html.Td(m.key or "—"),
            html.Td([html.Div(f"{m.kind} {ident}" + (f" (part {m.meta['part']}/{m.meta['parts']})"
                                                     if m.meta.get("parts") else "")),
                     html.Details([html.Summary("body"), html.Pre(m.body.replace("\r", "\n")[:4000],
                                                                  className="vw-mono")])]),
            html.Td([html.Div(f.reason), html.Details([html.Summary("answer"),
                                                       html.Pre(f.answer.replace("\r", "\n")[:2000],
                                                                className="vw-mono")])] if f.answer else f.reason),
            html.Td(html.Button("Resend", id={"page": "outbox", "resend": f"{dest}|{m.id}"}, n_clicks=0,
                                className="outbox-resend")),
        ], className="outbox-failed-row"))
    if not body:
        body = [html.Tr(html.Td("No refused messages.", colSpan=5))]
    return html.Table([html.Thead(head), html.Tbody(body)], className="vw-table", id=f"outbox-failed-{dest}")


def dest_panel(ctx: AppContext, dest: str, tz: ZoneInfo) -> html.Div:
    """One destination's state and its refused messages."""
    box = Outbox(ctx.data.client, ctx.keys, dest)
    st = box.state()
    lease = redis_types.opt_str(ctx.data.client.get(ctx.keys.outbox_lease(dest)))
    waiting = box.pending_count()
    next_ms = int(st.get("next_ms") or 0)
    facts = [f"{waiting} waiting", f"{st.get('delivered', '0')} delivered", f"{st.get('refused', '0')} refused",
             f"sender: {lease or 'none (is an alerts worker running?)'}"]
    problem = st.get("last_error") or ""
    return html.Div([
        html.H3(f"{dest.upper()} → {_target(ctx, dest)}"),
        html.Div(" · ".join(facts), className="outbox-facts", id=f"outbox-facts-{dest}"),
        html.Div(f"Last attempt failed: {problem} — next try {_t(next_ms, tz)} (attempt {st.get('attempts', '0')})",
                 className="vw-warning") if problem and int(st.get("attempts") or 0) else None,
        failed_table(dest, box.failed(), tz),
    ], className="outbox-dest")


def _target(ctx: AppContext, dest: str) -> str:
    if dest == "hl7" and ctx.cfg.hl7.outbound:
        return f"{redact_url(ctx.cfg.hl7.outbound.url)} ({ctx.cfg.hl7.outbound.on})"
    if dest == "fhir" and ctx.cfg.fhir.url:
        return redact_url(ctx.cfg.fhir.url)
    return "not configured any more"


def _panels(ctx: AppContext) -> list[Any]:
    tz = ZoneInfo(ctx.cfg.clinic.timezone)
    known = set(redis_types.members(list(ctx.data.client.smembers(ctx.keys.outbox_destinations))))
    dests = destinations(ctx.cfg) + sorted(known - set(destinations(ctx.cfg)))
    if not dests:
        return [html.Div("Outbound is off: set [hl7.outbound] url and/or [fhir] url (docs/interoperability.md).")]
    return [dest_panel(ctx, d, tz) for d in dests]


def layout(ctx: PageContext, **_params: str) -> Any:
    """Every destination's queue and refused messages."""
    try:
        panels = _panels(ctx.app)
    except REDIS_DOWN as e:
        return html.Div(f"NOT MONITORING: Redis unreachable ({e})", className="vw-notfound")
    return html.Div([html.H2("Outbound to the EHR"), html.Div(id="outbox-msg"),
                     html.Div(panels, id="outbox-panels")])


def register_callbacks(app: Any, ctx: AppContext) -> None:
    """Resend buttons."""
    @app.callback(Output("outbox-msg", "children"), Output("outbox-msg", "style"),
                  Output("outbox-panels", "children"),
                  Input({"page": "outbox", "resend": ALL}, "n_clicks"), prevent_initial_call=True)
    def _resend(clicks: list[int | None]) -> tuple[Any, Any, Any]:
        trig = dash_ctx.triggered_id
        if not isinstance(trig, dict) or not any(clicks or []):
            return no_update, no_update, no_update
        user = ctx.current_user()
        if user is None or not user.can(MIN_ROLE):
            return "Refused: resending needs the admin role.", ERROR_STYLE, no_update
        dest, _, msg_id = str(trig["resend"]).partition("|")
        try:
            box = Outbox(ctx.data.client, ctx.keys, dest)
            session = next((f.message.key for f in box.failed() if f.message.id == msg_id), "")
            new_id = box.resend(msg_id)
            audit.record(ctx.data.client, ctx.keys, user.name, "outbox.resend", destination=dest, message=msg_id,
                         new_message=new_id, session=session)
        except KeyError:
            return f"Message {msg_id} is not refused any more (already resent?).", ERROR_STYLE, _panels(ctx)
        except REDIS_DOWN as e:
            return f"NOT MONITORING: Redis unreachable ({e}) — nothing resent.", ERROR_STYLE, no_update
        return f"Message {msg_id} queued again as {new_id}.", OK_STYLE, _panels(ctx)
