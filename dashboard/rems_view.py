"""Pure layout pieces for the REMS Patient Monitoring Form: the form itself (values, sources,
inputs for what staff complete) and the "forms due / overdue" list shared by `/rems` and
the director's `/review` list. No I/O here: pages pass in FormState objects
(monitor/sessions/rems_form.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dash import dcc, html

from monitor.sessions.rems_form import FieldValue, FormState

PAGE = "rems"  # pattern-matching ids: {"page": "rems", "field": <key>}


def _t(ms: int | None, tz: ZoneInfo, fmt: str = "%Y-%m-%d") -> str:
    return "—" if ms is None else datetime.fromtimestamp(ms / 1000, tz).strftime(fmt)


def status_class(state: FormState) -> str:
    """CSS class of a form's status: submitted / ready / incomplete / overdue."""
    if state.submitted:
        return "vw-rems-submitted"
    if state.overdue:
        return "vw-rems-overdue"
    return "vw-rems-ready" if not state.missing else "vw-rems-incomplete"


def status_text(state: FormState, tz: ZoneInfo) -> str:
    """"Ready to submit — due 2026-12-06" / "Form incomplete — missing: … — OVERDUE since …"."""
    if state.submitted:
        s = state.submitted
        return (f"Submitted via {s.get('method')} by {s.get('by')} on {_t(s.get('ts'), tz, '%Y-%m-%d %H:%M')}"
                + (f" (reference {s['reference']})" if s.get("reference") else ""))
    head = "Ready to submit" if not state.missing else "Form incomplete — missing: " + ", ".join(state.missing)
    when = f"OVERDUE since {_t(state.due_ms, tz)}" if state.overdue else f"due {_t(state.due_ms, tz)}"
    return f"{head} — {when}"


def due_table(states: list[FormState], total: int, tz: ZoneInfo, table_id: str, href_prefix: str = "/rems/"
              ) -> html.Div:
    """Forms not yet submitted, overdue first: session, patient, treatment, due, status."""
    head = html.Tr([html.Th(h) for h in ("Treatment", "Patient", "Session", "Due", "Form")])
    body = []
    for s in states:
        body.append(html.Tr([
            # dates never wrap at their hyphens (vw-date: white-space nowrap); " OVERDUE" may
            html.Td(html.Span(_t(s.treatment_ms, tz, "%Y-%m-%d %H:%M"), className="vw-date")), html.Td(s.patient),
            html.Td(dcc.Link(s.session, href=f"{href_prefix}{s.session}")),
            html.Td([html.Span(_t(s.due_ms, tz), className="vw-date"), " OVERDUE" if s.overdue else ""],
                    className="vw-alert-high" if s.overdue else ""),
            html.Td("ready to submit" if not s.missing else "form incomplete: missing " + ", ".join(s.missing),
                    className=status_class(s)),
        ], id=f"{table_id}-row-{s.session}", className="rems-due-row"))
    if not body:
        body = [html.Tr(html.Td("No REMS forms waiting: every esketamine session's form is marked submitted.",
                                colSpan=5))]
    overdue = sum(1 for s in states if s.overdue)
    note = f"{total} form(s) not yet submitted, {overdue} overdue"
    if total > len(states):
        note += f" (showing {len(states)})"
    return html.Div([html.P(note, id=f"{table_id}-count", className="vw-muted"),
                     html.Table([html.Thead(head), html.Tbody(body)], className="vw-table", id=table_id)])


def _input(fv: FieldValue, value: Any) -> Any:
    """The control for an editable field, showing `value` (initial_values: what staff last
    entered, or the configured setting)."""
    f = fv.field
    cid = {"page": PAGE, "field": f.key}
    if f.kind == "attest":
        return dcc.Checklist(id=cid, options=[{"label": " I attest that I monitored this patient and the form "
                                               "is complete and accurate", "value": "yes"}], value=value or [])
    if f.kind == "yesno":
        return dcc.RadioItems(id=cid, options=[{"label": " yes", "value": "yes"}, {"label": " no", "value": "no"}],
                              value=value, inline=True, className="vw-yesno")
    placeholder = {"bp": "SBP/DBP, e.g. 132/84", "minutes": "minutes"}.get(f.kind, "")
    if f.source == "session":
        placeholder = "correct it here" + (f" ({placeholder})" if placeholder else "")
    return dcc.Input(id=cid, type="text", value=value or "", placeholder=placeholder, debounce=False,
                     style={"width": "100%"})


def initial_values(state: FormState, setting: dict[str, str]) -> dict[str, Any]:
    """What each editable control shows when the form is drawn (the save sends only changes)."""
    out: dict[str, Any] = {}
    for fv in state.fields:
        f = fv.field
        if not f.editable:
            continue
        staff = state.staff.get(f.key, {}).get("value")
        if f.source == "config" and staff is None:
            staff = setting.get(f.key) or None
        if f.kind == "attest":
            out[f.key] = ["yes"] if staff else []
        elif f.kind == "yesno":
            out[f.key] = staff
        else:
            out[f.key] = staff or ""
    return out


def form_body(state: FormState, setting: dict[str, str]) -> list[Any]:
    """The form, section by section: label, value (or input), where the value came from."""
    init = initial_values(state, setting)
    out: list[Any] = []
    section = None
    rows: list[Any] = []

    def flush() -> None:
        if section is not None:
            out.append(html.H3(section))
            out.append(html.Table(html.Tbody(rows), className="vw-table vw-rems-form"))

    for fv in state.fields:
        f = fv.field
        if f.section != section:
            flush()
            section, rows = f.section, []
        shown = html.Span(fv.value or ("(blank — " + ("completed outside VitalWatch)" if f.source == "outside"
                                                      else "to be completed)")),
                          id=f"rems-value-{f.key}", className="vw-rems-missing" if fv.missing else "")
        cell: list[Any] = [shown]
        if f.editable:
            cell.append(html.Div(_input(fv, init[f.key]), className="vw-rems-input"))
        rows.append(html.Tr([html.Th(f.label + ("" if f.required else " (optional)")), html.Td(cell),
                             html.Td(fv.source, className="vw-muted")],
                            id=f"rems-row-{f.key}", className="rems-row"))
    flush()
    return out
