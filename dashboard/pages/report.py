"""The clinic quality report: `/report` (director and admin).

Over a date range (clinic time zone; default the last 30 days) and optionally one room:
sessions by route and dose, physiological alarms per session by priority, median and 90th
percentile time to acknowledge, never acknowledged, nuisance alarms, technical alarms by
cause and device, adverse observation rates, REMS form completeness and BP surges — the
numbers of monitor/sessions/quality.py over the stored session summaries — with charts, one
row per session, and downloads: CSV (one row per session), PDF (with charts) and the
research CSV (one row per reading; patient ids pseudonymised on request). Every report and
research download is audited.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from dash import Input, Output, State, dcc, html, no_update

from dashboard.context import AppContext, PageContext
from dashboard.director_figures import bar, priority_bar
from dashboard.pages.patient import patient_href
from monitor.accounts import audit
from monitor.sessions import archive, quality, report, report_pdf, research
from monitor.sessions.review import fmt_duration
from monitor.store.redis_conn import REDIS_DOWN

ROUTES = ("/report",)
MIN_ROLE = "director"
ID_PREFIX = "report-"
TITLE = "Quality report"
NAV = True
DEFAULT_DAYS = 30
PAGE_SESSION_ROWS = 300
RESEARCH_MAX_SESSIONS = 500  # larger research exports: `vitalwatch report --format research`


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:g} %"


def _n(v: float | None) -> str:
    return "—" if v is None else (str(int(v)) if float(v).is_integer() else f"{v:.1f}")


def key_figures(t: dict[str, Any]) -> html.Table:
    """The headline numbers; each value cell has a stable id."""
    a, s, o, r, tech = t["alarms"], t["bp_surge"], t["observations"], t["rems"], t["technical"]
    rows = [
        ("Sessions", str(t["sessions"]), "report-sessions"),
        ("Sessions by route and dose", "; ".join(f"{route} {dose}: {n}" for (route, dose), n in t["by_route_dose"])
         or "—", "report-route-dose"),
        ("Physiological alarms high / medium / low", " / ".join(str(a["by_priority"][p])
                                                             for p in ("high", "medium", "low")), "report-alarms"),
        ("… per session", " / ".join(_n(a["per_session"][p]) for p in ("high", "medium", "low")),
         "report-alarms-per-session"),
        ("Time to acknowledge: median", fmt_duration(a["median_ack_s"]), "report-ack-median"),
        ("Time to acknowledge: 90th percentile", fmt_duration(a["p90_ack_s"]), "report-ack-p90"),
        ("Never acknowledged", str(a["never_acknowledged"]), "report-unacked"),
        ("Nuisance (cleared within their delay)", f"{a['nuisance']} ({_pct(a['nuisance_pct'])})", "report-nuisance"),
        ("Technical alarms", f"{tech['total']}: " + ", ".join(f"{c} {n}" for c, n in tech["by_cause"]),
         "report-technical"),
        ("Technical alarms by device", ", ".join(f"{d} {n}" for d, n in tech["by_device"]) or "—",
         "report-technical-devices"),
        ("Sedation / dissociation / respiratory depression / nausea",
         " / ".join(f"{o[k]['sessions']} ({_pct(o[k]['pct'])})"
                    for k in ("sedation", "dissociation", "respiratory_depression", "nausea")), "report-adverse"),
        ("BP surge (SBP ≥ +40 or DBP ≥ +25 within 90 min)",
         f"{s['surge']} of {s['sessions_with_bp']} ({_pct(s['surge_pct'])}; label 8–19 %)", "report-surge"),
        ("REMS forms: submitted / ready / incomplete (overdue)",
         f"{r['submitted']} / {r['ready']} / {r['incomplete']} ({r['overdue']} overdue) of {r['required']}",
         "report-rems"),
    ]
    return html.Table([html.Tr([html.Th(k), html.Td(v, id=i)]) for k, v, i in rows], className="vw-table vw-kv")


def session_rows(rep: report.Report, tz: ZoneInfo) -> html.Div:
    """One row per session (capped on the page; the CSV has all)."""
    head = ["Started", "Room", "Patient", "Route / dose", "Peak SBP", "Rise 90 min", "Alarms H/M/L",
            "Ack median", "REMS form"]
    body = []
    for s in rep.rows[:PAGE_SESSION_ROWS]:
        form = s.get("form")
        body.append(html.Tr([
            html.Td(dcc.Link(datetime.fromtimestamp(s["started_ms"] / 1000, tz).strftime("%Y-%m-%d %H:%M"),
                             href=f"/review/{s['session']}")),
            html.Td(s["room"]), html.Td(dcc.Link(s["patient"], href=patient_href(s["patient"]))),
            html.Td(f"{s['route']} {_n(s['dose_mg'])} mg" if s["dose_mg"] is not None else s["route"]),
            html.Td(_n(s["peak_sbp"])),
            html.Td(f"{_n(s['sbp_rise_90'])}/{_n(s['dbp_rise_90'])}", className="vw-alert-high" if s["surge"] else ""),
            html.Td("/".join(str(s["alarms"][p]) for p in ("high", "medium", "low"))),
            html.Td(fmt_duration(quality.percentile(s["ack_s"], 0.5))),
            html.Td(form.status_text if form else "n/a"),
        ], id=f"report-row-{s['session']}", className="report-row"))
    note = (f"{len(rep.rows)} sessions" + (f"; the first {PAGE_SESSION_ROWS} are listed, the CSV has all"
                                           if len(rep.rows) > PAGE_SESSION_ROWS else ""))
    return html.Div([html.P(note, className="vw-muted"),
                     html.Table([html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(body)],
                                className="vw-table", id="report-table")])


def charts(rep: report.Report) -> html.Div:
    """The report's charts (the PDF draws the same ones)."""
    t = rep.totals
    a, o, r, s = t["alarms"], t["observations"], t["rems"], t["bp_surge"]
    acks = [x for row in rep.rows for x in row["ack_s"]]
    figs = [
        bar([(f"{route} {dose}", float(n)) for (route, dose), n in t["by_route_dose"]], "Sessions by route and dose"),
        priority_bar(a["by_priority"]),
        bar(report_pdf.ack_bands(acks), "Time to acknowledge"),
        bar([(d, float(n)) for d, n in t["technical"]["by_device"][:12]], "Technical alarms by device", "#78909c"),
        bar([(c, float(n)) for c, n in t["technical"]["by_cause"][:12]], "Technical alarms by cause", "#78909c"),
        bar([(k.replace("_", " "), float(o[k]["pct"] or 0)) for k in ("sedation", "dissociation",
                                                                       "respiratory_depression", "nausea")],
            "Adverse observations (% of sessions)", suffix=" %"),
        bar([("SBP ≥ +40", float(s["sbp_40"])), ("DBP ≥ +25", float(s["dbp_25"])), ("surge", float(s["surge"]))],
            "BP rises within 90 min (sessions)", "#c62828"),
        bar([("submitted", float(r["submitted"])), ("ready", float(r["ready"])),
             ("incomplete", float(r["incomplete"])), ("overdue", float(r["overdue"]))], "REMS forms",
            colors=["#43a047", "#1e88e5", "#f9a825", "#d32f2f"]),
    ]
    return html.Div([dcc.Graph(figure=f, config={"displaylogo": False, "displayModeBar": False},
                               className="report-chart") for f in figs], className="report-charts",
                    style={"display": "grid", "gridTemplateColumns": "repeat(auto-fill, minmax(28em, 1fr))"})


def body(rep: report.Report) -> list[Any]:
    """Everything below the controls."""
    tz = ZoneInfo(rep.tz_name)
    return [html.H3(["Sessions started ", html.Span(rep.scope_text(), id="report-scope")]),
            key_figures(rep.totals), charts(rep), html.H3("Sessions"), session_rows(rep, tz)]


def default_dates(now_ms: int, tz_name: str) -> tuple[str, str]:
    """The last DEFAULT_DAYS days up to today (clinic time zone)."""
    today = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz_name)).date()
    return str(today - timedelta(days=DEFAULT_DAYS - 1)), str(today)


def _arch(app: AppContext) -> archive.Archive:
    return archive.open_archive(app.cfg.archive.url)


def _audit(app: AppContext, user: str, action: str, **details: Any) -> None:
    try:
        audit.record(app.data.client, app.keys, user, action, **details)
    except REDIS_DOWN:
        archive.record_audit_local(_arch(app), app.cfg.clinic.id, user, action, **details)


def layout(ctx: PageContext) -> Any:
    """Controls and the report over the default range."""
    start, end = default_dates(ctx.now_ms, ctx.cfg.clinic.timezone)
    since, until = report.day_range(start, end, ctx.cfg.clinic.timezone)
    try:
        rep = report.build(_arch(ctx.app), ctx.cfg, since, until, None, ctx.now_ms)
    except sa.exc.SQLAlchemyError as e:
        return html.Div(f"ARCHIVE UNAVAILABLE ({ctx.cfg.archive.url}): {e.__class__.__name__}", className="vw-notfound")
    return html.Div([
        html.H2("Clinic quality report"),
        html.Div([
            dcc.DatePickerRange(id="report-dates", display_format="YYYY-MM-DD", start_date=start, end_date=end),
            dcc.Dropdown(id="report-room", options=[{"label": r.id, "value": r.id} for r in ctx.cfg.rooms],
                         placeholder="all rooms", clearable=True, style={"minWidth": "10em"}),
            html.Button("Show", id="report-run", n_clicks=0, className="vw-btn"),
            html.Button("Download CSV", id="report-csv", n_clicks=0, className="vw-btn"),
            html.Button("Download PDF", id="report-pdf", n_clicks=0, className="vw-btn"),
            html.Button("Research CSV (one row per reading)", id="report-research", n_clicks=0, className="vw-btn"),
            dcc.Checklist(id="report-pseudo", options=[{"label": " pseudonymise patient ids", "value": "yes"}],
                          value=["yes"]),
            dcc.Download(id="report-download"), html.Span(id="report-message"),
        ], className="vw-row report-controls"),
        html.Div(body(rep), id="report-body"),
    ])


def register_callbacks(app: Any, ctx: AppContext) -> None:
    """Show, and the three downloads."""
    def build(start: str | None, end: str | None, room: str | None) -> report.Report:
        now = ctx.clock_ms()
        d0, d1 = default_dates(now, ctx.cfg.clinic.timezone)
        since, until = report.day_range((start or d0)[:10], (end or d1)[:10], ctx.cfg.clinic.timezone)
        return report.build(_arch(ctx), ctx.cfg, since, until, room or None, now)

    @app.callback(Output("report-body", "children"), Output("report-message", "children"),
                  Input("report-run", "n_clicks"), State("report-dates", "start_date"),
                  State("report-dates", "end_date"), State("report-room", "value"), prevent_initial_call=True)
    def _show(n: int, start: str | None, end: str | None, room: str | None) -> tuple[Any, Any]:
        if not n or ctx.current_user() is None:
            return no_update, no_update
        try:
            return body(build(start, end, room)), ""
        except report.BadRange as e:
            return no_update, str(e)

    @app.callback(Output("report-download", "data"), Output("report-message", "children", allow_duplicate=True),
                  Input("report-csv", "n_clicks"), Input("report-pdf", "n_clicks"),
                  Input("report-research", "n_clicks"), State("report-dates", "start_date"),
                  State("report-dates", "end_date"), State("report-room", "value"), State("report-pseudo", "value"),
                  prevent_initial_call=True)
    def _download(_c: int, _p: int, _r: int, start: str | None, end: str | None, room: str | None,
                  pseudo: list[str] | None) -> tuple[Any, Any]:
        from dash import ctx as dash_ctx

        user = ctx.current_user()
        which = str(dash_ctx.triggered_id or "")
        if user is None or which not in ("report-csv", "report-pdf", "report-research"):
            return no_update, no_update
        try:
            rep = build(start, end, room)
        except report.BadRange as e:
            return no_update, str(e)
        stem = f"vitalwatch-{'research' if which == 'report-research' else 'report'}-" \
               f"{rep.scope_text().split(',')[0].replace(' – ', '_to_')}"
        if which == "report-research":
            return _research(user.name, rep, room, bool(pseudo), stem)
        fmt = which.rsplit("-", 1)[-1]
        data = rep.csv().encode() if fmt == "csv" else report_pdf.pdf_bytes(rep, generated_by=user.name)
        _audit(ctx, user.name, "report.generate", format=fmt, room=room or "", sessions=len(rep.rows), via="dashboard")
        return (dcc.send_bytes(data, f"{stem}.{fmt}", type="text/csv" if fmt == "csv" else "application/pdf"),
                f"{fmt.upper()} of {len(rep.rows)} sessions downloaded.")

    def _research(user: str, rep: report.Report, room: str | None, pseudo: bool, stem: str) -> tuple[Any, Any]:
        arch = _arch(ctx)
        selected = research.select_sessions(arch, ctx.cfg.clinic.id, rep.since_ms, rep.until_ms, room or None)
        if len(selected) > RESEARCH_MAX_SESSIONS:
            return no_update, (f"{len(selected)} sessions: too many for a download here (at most "
                               f"{RESEARCH_MAX_SESSIONS}); use `vitalwatch report --format research`.")
        try:
            key = research.load_key(ctx.cfg) if pseudo else None
        except OSError as e:
            return no_update, f"Pseudonym key unavailable ({research.key_path(ctx.cfg)}): {e}"
        text, n = research.csv_text(arch, selected, ctx.cfg.clinic.timezone, key)
        _audit(ctx, user, "research.export", room=room or "", pseudonymized=pseudo, sessions=len(selected),
               readings=n, via="dashboard")
        return (dcc.send_bytes(text.encode(), f"{stem}.csv", type="text/csv"),
                f"Research CSV: {len(selected)} sessions, {n} readings{' (pseudonymised)' if pseudo else ''}.")
