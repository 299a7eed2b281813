"""A patient's course across sessions: `/review/patient/<patient-id>` (director and admin).

Every archived session of that patient, oldest first: dose and route, baseline BP, peak SBP
and DBP with the minutes after the dose at which they occurred, the rise within 90 min,
max HR, min SpO2, physiological alarms, adverse observations and minutes until ready to
leave — as a table and as small multiples (one panel per measure across the series; one
BP curve per session), so a director sees whether the BP response grows with dose or over
an induction / maintenance series. Numbers come from the stored session summaries
(monitor/sessions/summaries.py), the same as each session's review. Opening it is audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from dash import dcc, html

from dashboard.context import AppContext, PageContext
from dashboard.director_figures import course_curves, course_trends
from monitor.accounts import audit
from monitor.sessions import archive, quality, summaries
from monitor.store.redis_conn import REDIS_DOWN

ROUTES = ("/review/patient/<patient>",)
MIN_ROLE = "director"
ID_PREFIX = "patient-"
TITLE = "Patient course"
NAV = False


def patient_href(patient: str) -> str:
    """The course page of a patient id (URL-quoted: ids may hold any character)."""
    return "/review/patient/" + quote(patient, safe="")


def _n(v: float | None, suffix: str = "") -> str:
    if v is None:
        return "—"
    return (str(int(v)) if float(v).is_integer() else f"{v:.1f}") + suffix


def _signed(v: float | None) -> str:
    return "—" if v is None else f"{v:+.0f}"


def course_table(rows: list[dict[str, Any]], tz: ZoneInfo) -> html.Table:
    """One row per session, oldest first; cells carry stable ids for tests and scripts."""
    head = ["#", "Started", "Route / dose", "Baseline BP", "Peak SBP (min after dose)",
            "Peak DBP (min after dose)", "Rise within 90 min", "Max HR", "Min SpO2", "Alarms H/M/L",
            "Adverse observations", "Ready to leave (min)"]
    body = []
    for s in rows:
        sid = s["session"]
        body.append(html.Tr([
            html.Td(str(s["n"])),
            html.Td(dcc.Link(datetime.fromtimestamp(s["started_ms"] / 1000, tz).strftime("%Y-%m-%d %H:%M"),
                             href=f"/review/{sid}")),
            html.Td(f"{s['route'] or ''} {quality.dose_label(s)}"),
            html.Td(f"{_n(s['baseline_sbp'])}/{_n(s['baseline_dbp'])}", id=f"patient-{sid}-baseline"),
            html.Td(f"{_n(s['peak_sbp'])} ({_signed(s['peak_sbp_min'])})", id=f"patient-{sid}-peak-sbp"),
            html.Td(f"{_n(s['peak_dbp'])} ({_signed(s['peak_dbp_min'])})", id=f"patient-{sid}-peak-dbp"),
            html.Td(f"{_signed(s['sbp_rise_90'])}/{_signed(s['dbp_rise_90'])}" + (" surge" if s["surge"] else ""),
                    id=f"patient-{sid}-rise", className="vw-alert-high" if s["surge"] else ""),
            html.Td(_n(s["max_hr"]), id=f"patient-{sid}-max-hr"),
            html.Td(_n(s["min_spo2"]), id=f"patient-{sid}-min-spo2"),
            html.Td(s["alarms_text"], id=f"patient-{sid}-alarms"),
            html.Td(", ".join(o.replace("_", " ") for o in s["adverse"]) or "none", id=f"patient-{sid}-adverse"),
            html.Td(_n(s["ready_min"]), id=f"patient-{sid}-ready"),
        ], id=f"patient-row-{sid}", className="patient-row"))
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(body)],
                      className="vw-table", id="patient-table")


def course_page(patient: str, summaries_: list[dict[str, Any]], tz_name: str) -> html.Div:
    """The whole page (pure)."""
    tz = ZoneInfo(tz_name)
    rows = quality.course_rows(summaries_)
    return html.Div([
        html.H2(["Patient course — ", html.Span(patient, id="patient-id")]),
        html.P(f"{len(rows)} archived session(s), oldest first. Peak = the session's highest value; rise = the "
               "highest value within 90 min of the first dose minus the pre-dose baseline (surge: SBP ≥ +40 or "
               "DBP ≥ +25 mmHg). Marker size follows the dose.", className="vw-muted"),
        course_table(rows, tz),
        html.H3("Across the series"),
        dcc.Graph(id="patient-trends", figure=course_trends(rows, tz_name), config={"displaylogo": False}),
        html.H3("Blood pressure after each dose"),
        dcc.Graph(id="patient-curves", figure=course_curves(rows, tz_name), config={"displaylogo": False}),
    ], className="patient-course")


def _audit(app: AppContext, user: str, action: str, **details: Any) -> None:
    try:
        audit.record(app.data.client, app.keys, user, action, **details)
    except REDIS_DOWN:
        archive.record_audit_local(archive.open_archive(app.cfg.archive.url), app.cfg.clinic.id, user, action,
                                   **details)


def layout(ctx: PageContext, patient: str = "") -> Any:
    """The course of one patient (the id arrives URL-quoted)."""
    pid = unquote(patient)
    try:
        rows = summaries.for_patient(archive.open_archive(ctx.cfg.archive.url), ctx.cfg.clinic.id, pid)
    except sa.exc.SQLAlchemyError as e:
        return html.Div(f"ARCHIVE UNAVAILABLE ({ctx.cfg.archive.url}): {e.__class__.__name__}", className="vw-notfound")
    if not rows:
        return html.Div([f"No archived sessions for patient {pid!r}. ", dcc.Link("All sessions", href="/review")],
                        className="vw-notfound")
    _audit(ctx.app, ctx.user.name if ctx.user else "unknown", "patient.view", patient=pid, sessions=len(rows))
    return course_page(pid, rows, ctx.cfg.clinic.timezone)


def register_callbacks(app: Any, ctx: AppContext) -> None:
    """None: the page is drawn once per visit."""
