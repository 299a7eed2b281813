"""Director review: `/review` (archived sessions, filtered) and `/review/<session>`.

Everything here comes from the durable archive (monitor.sessions.archive), so a session stays
reviewable after Redis retention has trimmed its streams. The session page shows the chart
(every vital on one time axis, limits, doses, alert episodes, notes), the summary, the alert
log with who acknowledged and how fast, the REMS form values, the sign-off (which locks the
session; later changes are addenda) and PDF/PNG/CSV export. Opening a session, signing,
adding an addendum and exporting are written to the audit log.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from dash import Input, Output, State, dcc, html, no_update

from dashboard import rems_view
from dashboard.components import dattrs
from dashboard.context import AppContext, PageContext
from dashboard.pages.patient import patient_href
from dashboard.session_panel import EVENT_LABELS  # the room page's event names, here too
from monitor.accounts import audit
from monitor.model.redact import redact_url
from monitor.sessions import archive, export, rems_form, rems_pdf, rems_store, review, review_list
from monitor.sessions import lifecycle as sessions
from monitor.sessions.review_figure import build_figure
from monitor.store.redis_conn import REDIS_DOWN

ROUTES = ("/review", "/review/<session>")
MIN_ROLE = "director"
ID_PREFIX = "review-"
TITLE = "Review"
NAV = True
EXPORT_MIME = {"pdf": "application/pdf", "png": "image/png", "csv": "text/csv", "rems": "application/pdf"}


# --- pure layout builders ------------------------------------------------------------------
def _t(ms: int | None, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return "—" if ms is None else datetime.fromtimestamp(ms / 1000, tz).strftime(fmt)


def session_table(rows: list[dict[str, Any]], tz: ZoneInfo) -> html.Table:
    """The list of archived sessions, each linking to its review."""
    head = html.Tr([html.Th(h) for h in ("Started", "Room", "Patient", "Route", "Dose", "Duration")]
                   + [html.Th("Alarms H/M/L", title="physiological alarm episodes by priority "
                                                    "(technical alarms and reminders are not counted)"),
                      html.Th("Signed off")])
    body = []
    for s in rows:
        dur = review.fmt_duration(((s["ended_ms"] or s["started_ms"]) - s["started_ms"]) / 1000)
        body.append(html.Tr([
            html.Td(dcc.Link(_t(s["started_ms"], tz), href=f"/review/{s['id']}")),
            html.Td(s["room"]), html.Td(s["patient"]), html.Td(s["route"] or ""),
            html.Td(f"{review.fmt_value(s['dose_mg'])} mg" if s["dose_mg"] else "—"), html.Td(dur),
            html.Td(f"{s['alerts_high']}/{s['alerts_medium']}/{s['alerts_low']}",
                    className="vw-alert-high" if s["alerts_high"] else ""),
            html.Td(s["signed_by"] or ("archiving…" if s["state"] != "archived" else "")),
        ], id=f"review-row-{s['id']}", className="review-row"))
    if not body:
        body = [html.Tr(html.Td("No archived sessions match.", colSpan=8))]
    return html.Table([html.Thead(head), html.Tbody(body)], className="vw-table", id="review-table")


def _kv(rows: list[tuple[str, Any, str]]) -> html.Table:
    return html.Table([html.Tr([html.Th(k), html.Td(v, id=i)]) for k, v, i in rows], className="vw-table vw-kv")


def vitals_table(s: dict[str, Any]) -> html.Table:
    """Summary per vital: baseline, min/max, time outside limits; cells have stable ids."""
    head = html.Tr([html.Th(h) for h in ("Vital", "Baseline", "Min", "Max", "Below low", "Above high", "Limits")])
    body = []
    for m, v in s["vitals"].items():
        body.append(html.Tr([
            html.Td(f"{v['short']} ({v['unit']})", title=v["label"]),
            html.Td(review.fmt_value(round(v["baseline"], 1)), id=f"review-v-{m}-baseline", title=v["baseline_method"]),
            html.Td(review.fmt_value(v["min"]), id=f"review-v-{m}-min"),
            html.Td(review.fmt_value(v["max"]), id=f"review-v-{m}-max"),
            html.Td(review.fmt_duration(v["below_s"]), id=f"review-v-{m}-below"),
            html.Td(review.fmt_duration(v["above_s"]), id=f"review-v-{m}-above"),
            html.Td(review.fmt_limits(v["low"], v["high"]), id=f"review-v-{m}-limits"),
        ]))
    return html.Table([html.Thead(head), html.Tbody(body)], className="vw-table")


def alert_log(s: dict[str, Any], tz: ZoneInfo) -> html.Table:
    """Every alert episode (all kinds), with who acknowledged and how fast; full texts here."""
    # "Kind" is the last column so existing readers of the first six columns keep working
    head = html.Tr([html.Th(h) for h in ("Raised", "Priority", "Alert", "Acknowledged by", "After", "Cleared",
                                         "Kind")])
    body = [html.Tr([
        html.Td(_t(e["raised_ms"], tz, "%H:%M:%S")),
        html.Td(e["priority"] or "", className=f"vw-alert-{e['priority']}"),
        html.Td(e["message"] or e["metric"] or ""),
        html.Td(e["acknowledged_by"] or "not acknowledged", id=f"review-ep-{i}-by"),
        html.Td(review.fmt_duration(e["ack_s"]), id=f"review-ep-{i}-after"),
        html.Td(_t(e["cleared_ms"], tz, "%H:%M:%S")),
        html.Td(review.kind_of(e), id=f"review-ep-{i}-kind"),
    ], className=f"review-ep review-ep-{review.kind_of(e)}") for i, e in enumerate(s["episodes"])]
    if not body:
        body = [html.Tr(html.Td("No alerts during this session.", colSpan=7))]
    return html.Table([html.Thead(head), html.Tbody(body)], className="vw-table")


def alert_counts(a: dict[str, Any]) -> html.Table:
    """Physiological alarms, technical alarms and reminders counted apart (never mixed)."""
    phys, tech = a["physiological"], a["technical"]
    return _kv([
        ("Physiological alarms by priority", review.fmt_by_priority(phys), "review-alert-counts"),
        ("Physiological: median time to acknowledge", review.fmt_duration(phys["median_ack_s"]), "review-median-ack"),
        ("Physiological: unacknowledged", str(phys["unacknowledged"]), "review-unacked"),
        ("Technical alarms by priority", review.fmt_by_priority(tech), "review-tech-counts"),
        ("Technical: median time to acknowledge / unacknowledged",
         f"{review.fmt_duration(tech['median_ack_s'])} / {tech['unacknowledged']}", "review-tech-ack"),
        ("Reminders (not alarms)", review.fmt_reminders(a["reminders"]), "review-reminders"),
    ])


def rems_block(s: dict[str, Any]) -> html.Table:
    """The REMS monitoring-form values, prefilled."""
    r = s["rems"]
    bp = review.fmt_bp
    obs = ", ".join(f"{k.replace('_', ' ')}: {'yes' if o['occurred'] else 'no'}"
                    for k, o in r["observations"].items())
    return _kv([
        ("BP pre-dose", bp(r["bp_pre"]), "review-rems-bp-pre"),
        ("BP at ~40 min", bp(r["bp_40"]), "review-rems-bp-40"),
        ("BP before end", bp(r["bp_end"]), "review-rems-bp-end"),
        ("Total minutes monitored", f"{r['total_monitored_min']:g}", "review-rems-total"),
        ("Minutes until ready to leave", "—" if r["ready_min"] is None else f"{r['ready_min']:g}", "review-rems-ready"),
        ("Observed", obs, "review-rems-observed"),
    ])


def events_list(rec: review.SessionRecord, tz: ZoneInfo) -> html.Ul:
    """Doses, BP checks, notes, observations, limit changes, sign-off and addenda."""
    items = []
    for e in rec.events:
        if e["type"] in ("start", "end"):
            continue
        if e["type"] == "devices_confirmed":
            text = ", ".join(f"{d['id']} ({d['state']})" for d in e.get("devices") or [])
        else:
            text = export._event_text(e)
        items.append(html.Li([html.Span(_t(e["ts"], tz, "%H:%M:%S"), className="vw-age"), " ",
                              html.B(EVENT_LABELS.get(e["type"], e["type"])), f" {text} — {e.get('user', '')}"],
                             className=f"review-event review-event-{e['type']}"))
    return html.Ul(items, id="review-events")


def director_links(h: dict[str, Any], rems: rems_form.FormState | None, tz: ZoneInfo) -> list[Any]:
    """Links to the patient's course and, for esketamine sessions, the REMS form and its state."""
    links: list[Any] = [dcc.Link(f"Patient {h['patient']}: course across sessions", href=patient_href(h["patient"]),
                                 id="review-patient-course")]
    if rems is not None:
        links += [" · ", dcc.Link("REMS Patient Monitoring Form", href=f"/rems/{h['id']}", id="review-rems-link"),
                  ": ", html.Span(rems_view.status_text(rems, tz), id="review-rems-status",
                                  className=rems_view.status_class(rems))]
    return links


def session_page(rec: review.SessionRecord, s: dict[str, Any], tz_name: str, user_name: str,
                 rems: rems_form.FormState | None = None) -> html.Div:
    """The whole `/review/<session>` page for one archived session (`rems`: its REMS form, if any)."""
    tz = ZoneInfo(tz_name)
    h = rec.header
    signed = h.get("signed_by")
    a = s["alerts"]
    fig = build_figure(rec, s, tz_name)
    return html.Div([
        dcc.Store(id="review-sid", data=h["id"]),
        html.H2(["Session ", html.Span(h["id"], id="review-session-id")]),
        _kv([
            ("Patient id", h["patient"], "review-patient-id"), ("Room", h["room"], "review-room-id"),
            ("Route / protocol", f"{h['route']} / {h['protocol']}", "review-route"),
            ("Dose / weight", f"{review.fmt_value(h['dose_mg'])} mg / {review.fmt_value(h['weight_kg'])} kg", "review-dose"),
            ("Started", f"{_t(h['started_ms'], tz)} by {h.get('started_by') or '—'}", "review-started"),
            ("Ended", f"{_t(h['ended_ms'], tz)} by {h.get('ended_by') or '—'}", "review-ended"),
        ]),
        html.Div([
            html.Span(f"Signed off by {signed} at {_t(h.get('signed_ms'), tz)} — locked; later changes are addenda"
                      if signed else "Not signed off", id="review-signoff-status"),
            html.Button(f"Sign off as {user_name}", id="review-signoff", n_clicks=0, disabled=bool(signed),
                        className="vw-btn"),
        ], className="vw-row"),
        # Sign off asks first: it locks the session (later changes are addenda)
        html.Div([
            html.P(f"Sign off session {h['id']} as {user_name}? The session is locked once signed: its record "
                   "and exports stay as they are, and later changes can only be added as addenda.",
                   id="review-signoff-text"),
            html.Button("Sign off and lock", id="review-signoff-confirm", n_clicks=0, className="vw-danger"),
            html.Button("Cancel", id="review-signoff-cancel", n_clicks=0, className="vw-btn"),
        ], id="review-signoff-dialog", className="vw-dialog", role="dialog", style={"display": "none"},
            **dattrs({"aria-labelledby": "review-signoff-text"})),
        html.Div([
            html.Button("Export PDF", id="review-export-pdf", n_clicks=0, className="vw-btn"),
            html.Button("Export PNG", id="review-export-png", n_clicks=0, className="vw-btn"),
            html.Button("Export CSV", id="review-export-csv", n_clicks=0, className="vw-btn"),
            # always present (the export callback listens to it), shown for esketamine sessions only
            html.Button("Export REMS form", id="review-export-rems", n_clicks=0, className="vw-btn",
                        style={} if rems is not None else {"display": "none"}),
            dcc.Download(id="review-download"), html.Span(id="review-export-status"),
        ], className="vw-row"),
        html.Div(director_links(h, rems, tz), className="vw-row"),
        dcc.Graph(id="review-chart", figure=fig, config={"displaylogo": False}),
        html.H3("Summary"), vitals_table(s),
        html.H3("Alerts"),
        alert_counts(a),
        alert_log(s, tz),
        html.H3("REMS patient monitoring form"), rems_block(s),
        html.H3("Events and notes"), events_list(rec, tz),
        html.Div([dcc.Textarea(id="review-addendum-text", placeholder="Addendum (after end or sign-off)",
                               style={"width": "60%"}),
                  html.Button("Add addendum", id="review-addendum", n_clicks=0, className="vw-btn"),
                  html.Span(id="review-addendum-status")], className="vw-row"),
    ], className="review-session")


def list_page(rows: list[dict[str, Any]], rooms: list[str], tz: ZoneInfo,
              due: tuple[list[rems_form.FormState], int] | None = None) -> html.Div:
    """`/review`: REMS forms due / overdue, filters and the session list."""
    return html.Div([
        html.H2("Session review"),
        *([html.H3("REMS forms due / overdue"), rems_view.due_table(due[0], due[1], tz, "review-rems-due")]
          if due is not None else []),
        html.H3("Sessions"),
        html.Div([
            dcc.DatePickerRange(id="review-dates", display_format="YYYY-MM-DD", clearable=True),
            html.Span(dcc.Dropdown(id="review-room", options=[{"label": r, "value": r} for r in rooms],
                                   placeholder="any room", clearable=True, style={"minWidth": "10em"}),
                      **dattrs({"data-vw-label": "Room"})),
            dcc.Input(id="review-patient", type="text", placeholder="patient id", debounce=True),
            html.Span(dcc.Checklist(id="review-high", options=[{"label": " had high-priority physiological alarms",
                                                                   "value": "high"}],
                                    value=[]), **dattrs({"data-vw-label": "Only sessions with high-priority alarms"})),
        ], className="vw-row review-filters"),
        html.Div(session_table(rows, tz), id="review-list"),
    ])


# --- I/O around them ------------------------------------------------------------------------
def _arch(app: AppContext) -> archive.Archive:
    return archive.open_archive(app.cfg.archive.url)


def _audit(app: AppContext, user: str, action: str, **details: Any) -> None:
    try:
        audit.record(app.data.client, app.keys, user, action, **details)
    except REDIS_DOWN:
        # never lose an audit entry: fall back to the archive's own audit table
        archive.record_audit_local(_arch(app), app.cfg.clinic.id, user, action, **details)


def _day_ms(d: str | None, tz: ZoneInfo, end: bool = False) -> int | None:
    if not d:
        return None
    day = date.fromisoformat(d[:10]) + (timedelta(days=1) if end else timedelta())
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000) - (1 if end else 0)


def layout(ctx: PageContext, session: str | None = None) -> Any:
    """The list, or one session's review."""
    tz = ZoneInfo(ctx.cfg.clinic.timezone)
    try:
        arch = _arch(ctx.app)
        if session is None:
            rows = review_list.with_alarm_counts(arch, archive.list_sessions(arch, clinic=ctx.cfg.clinic.id))
            due = rems_store.forms_due(arch, ctx.cfg, ctx.now_ms, limit=100)
            return list_page(rows, [r.id for r in ctx.cfg.rooms], tz, due)
        rec = archive.load_session(arch, session)
    except archive.NotArchived:
        return html.Div([f"No archived session {session!r}. ", dcc.Link("All sessions", href="/review")],
                        className="vw-notfound")
    except sa.exc.SQLAlchemyError as e:
        return html.Div(f"ARCHIVE UNAVAILABLE ({redact_url(ctx.cfg.archive.url)}): {e.__class__.__name__}",
                        className="vw-notfound")
    user = ctx.user.name if ctx.user else "unknown"
    _audit(ctx.app, user, "session.view", session=session)
    rems = rems_pdf.form_for_record(rec, ctx.cfg, ctx.now_ms) if rems_form.is_rems_session(rec.header) else None
    return session_page(rec, review.summarize(rec), ctx.cfg.clinic.timezone, user, rems)


def register_callbacks(app: Any, ctx: AppContext) -> None:
    """Filters, sign-off, addenda and exports."""
    tz = ZoneInfo(ctx.cfg.clinic.timezone)

    @app.callback(Output("review-list", "children"),
                  Input("review-dates", "start_date"), Input("review-dates", "end_date"),
                  Input("review-room", "value"), Input("review-patient", "value"), Input("review-high", "value"),
                  prevent_initial_call=True)
    def _filter(start: str | None, end: str | None, room: str | None, patient: str | None,
                high: list[str] | None) -> Any:
        arch = _arch(ctx)
        rows = archive.list_sessions(arch, clinic=ctx.cfg.clinic.id, since_ms=_day_ms(start, tz),
                                     until_ms=_day_ms(end, tz, end=True), room=room or None,
                                     patient=(patient or "").strip() or None, high_only=bool(high))
        # physiological alarms only, recounted from the archived events (older rows counted all kinds)
        return session_table(review_list.with_alarm_counts(arch, rows, high_only=bool(high)), tz)

    @app.callback(Output("review-signoff-dialog", "style"), Input("review-signoff", "n_clicks"),
                  Input("review-signoff-cancel", "n_clicks"), Input("review-signoff-confirm", "n_clicks"),
                  prevent_initial_call=True)
    def _sign_dialog(_open: int, _cancel: int, _confirm: int) -> dict[str, str]:
        from dash import ctx as dash_ctx

        show = dash_ctx.triggered_id == "review-signoff" and bool(dash_ctx.triggered[0].get("value"))
        return {} if show else {"display": "none"}

    @app.callback(Output("review-signoff-status", "children"), Output("review-signoff", "disabled"),
                  Input("review-signoff-confirm", "n_clicks"), State("review-sid", "data"), prevent_initial_call=True)
    def _sign(n: int, sid: str) -> tuple[Any, Any]:
        user = ctx.current_user()
        if not n or user is None:
            return no_update, no_update
        try:
            out = sessions.sign_off(ctx.data.client, ctx.keys, ctx.cfg, sid, user.name)
        except (archive.Locked, archive.ArchiveError) as e:
            return str(e), True
        return (f"Signed off by {out['signed_by']} at {_t(out['signed_ms'], tz)} — locked; "
                "later changes are addenda"), True

    @app.callback(Output("review-addendum-status", "children"), Output("review-events", "children"),
                  Input("review-addendum", "n_clicks"), State("review-addendum-text", "value"),
                  State("review-sid", "data"), prevent_initial_call=True)
    def _addendum(n: int, text: str | None, sid: str) -> tuple[Any, Any]:
        user = ctx.current_user()
        if not n or user is None:
            return no_update, no_update
        try:
            sessions.add_addendum(ctx.data.client, ctx.keys, ctx.cfg, sid, user.name, text or "")
        except sessions.InvalidEvent as e:
            return str(e), no_update
        rec = archive.load_session(_arch(ctx), sid)
        return "Addendum added.", events_list(rec, tz).children

    @app.callback(Output("review-download", "data"), Output("review-export-status", "children"),
                  Input("review-export-pdf", "n_clicks"), Input("review-export-png", "n_clicks"),
                  Input("review-export-csv", "n_clicks"), Input("review-export-rems", "n_clicks"),
                  State("review-sid", "data"), prevent_initial_call=True)
    def _export(_pdf: int, _png: int, _csv: int, _rems: int, sid: str) -> tuple[Any, Any]:
        from dash import ctx as dash_ctx

        user = ctx.current_user()
        fmt = str(dash_ctx.triggered_id or "").rsplit("-", 1)[-1]
        if user is None or fmt not in EXPORT_MIME:
            return no_update, no_update
        rec = archive.load_session(_arch(ctx), sid)
        try:
            if fmt == "rems":
                data = rems_pdf.export_rems(rec, ctx.cfg, user=user.name, now_ms=ctx.clock_ms())
            else:
                data = export.export_bytes(rec, fmt, ctx.cfg.clinic.timezone, user=user.name)
        except (export.ExportError, rems_pdf.NotRemsExport) as e:
            return no_update, f"Export failed: {e}"
        _audit(ctx, user.name, "session.export", session=sid, format=fmt, via="dashboard")
        name = f"{sid}-rems.pdf" if fmt == "rems" else f"{sid}.{fmt}"
        return dcc.send_bytes(data, name, type=EXPORT_MIME[fmt]), f"{fmt.upper()} exported."
