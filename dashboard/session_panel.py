"""The room page's session panel: start form with device confirmation, dose, manual BP,
observations, notes, end; the session's event list.

Pure builders only (session header, events, device status in → components out); the room
page's callbacks (dashboard/pages/room.py) do the Redis work through monitor.sessions.lifecycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dash import dcc, html

from dashboard.components import NUMBER_FIELD_WIDTH, dattrs, devices_div
from monitor.model.config import RoomConfig
from monitor.model.readings import METRICS, check_value
from monitor.sessions.lifecycle import OBSERVATIONS

OBSERVATION_LABELS = {
    "sedation": "Sedation",
    "dissociation": "Dissociation",
    "respiratory_depression": "Respiratory depression",
    "nausea": "Nausea / dizziness",
    "ready_to_leave": "Ready to leave",
}
EVENT_LABELS = {
    "start": "Session started", "devices_confirmed": "Devices confirmed", "dose": "Dose",
    "bp": "BP check", "note": "Note", "observe": "Observation", "limit": "Limit change",
    "end": "Session ended", "addendum": "Addendum", "signoff": "Sign-off",
}
DEVICES_OK = "ok"  # the value of the "devices confirmed" tick
ERROR_STYLE = {"color": "#c62828", "fontWeight": "bold"}
OK_STYLE = {"color": "#2e7d32"}
HIDE: dict[str, str] = {"display": "none"}


class BadInput(ValueError):
    """A value typed into the panel that cannot be recorded (message shown as is)."""


def parse_bp(sbp: Any, dbp: Any) -> tuple[int, int]:
    """Typed SBP/DBP → whole mmHg, checked like monitor.sessions.lifecycle.record_bp (pure).

    Raises BadInput with the reason: missing, not a whole number, outside the metric's
    accepted range (monitor/model/readings.py METRICS), or diastolic not below systolic.
    """
    out: list[int] = []
    for metric, raw in (("sbp", sbp), ("dbp", dbp)):
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            raise BadInput("enter both systolic (SBP) and diastolic (DBP) in mmHg")
        try:
            v = float(raw)
        except (TypeError, ValueError):
            raise BadInput(f"{metric} {raw!r} is not a number") from None
        if not v.is_integer():
            raise BadInput(f"{metric} {v:g}: enter whole mmHg")
        if check_value(metric, v) is not None:
            m = METRICS[metric]
            raise BadInput(f"{metric} {v:g} outside {m.low:g}–{m.high:g} {m.unit}")
        out.append(int(v))
    if out[1] >= out[0]:
        raise BadInput(f"diastolic ({out[1]}) must be below systolic ({out[0]})")
    return out[0], out[1]


def clock(ts_ms: int, tz: str) -> str:
    """HH:MM:SS in the clinic's time zone."""
    return datetime.fromtimestamp(ts_ms / 1000, ZoneInfo(tz)).strftime("%H:%M:%S")


def _devices_text(devices: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{d.get('id')} ({d.get('state', 'unknown')})" for d in devices) or "none configured"


def describe_event(e: Mapping[str, Any]) -> str:
    """What an event says, without patient identifiers (pure)."""
    t = e.get("type")
    if t == "start":
        parts = [str(e.get("route", "")), str(e.get("protocol", ""))]
        if e.get("dose_mg"):
            parts.append(f"planned dose {float(e['dose_mg']):g} mg")
        return " · ".join(p for p in parts if p)
    if t == "devices_confirmed":
        return _devices_text(e.get("devices") or [])
    if t == "dose":
        text = f"{float(e['dose_mg']):g} mg" if e.get("dose_mg") else "dose given"
        return text + (f" · {e['note']}" if e.get("note") else "")
    if t == "bp":
        return f"{e.get('sbp', '?')}/{e.get('dbp', '?')} mmHg (manual)"
    if t == "note":
        return str(e.get("text", ""))
    if t == "observe":
        obs = str(e.get("observation", ""))
        return OBSERVATION_LABELS.get(obs, obs) + (f" · {e['text']}" if e.get("text") else "")
    if t == "limit":
        lim = e.get("limit") or {}
        if not lim:
            return f"{e.get('metric', '')}: override cleared"
        return f"{e.get('metric', '')}: " + ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                                                       for k, v in sorted(lim.items()))
    return str(e.get("text", ""))


def events_table(events: Sequence[Mapping[str, Any]], tz: str) -> html.Div | html.Table:
    """The session's events, newest first: time, what, details, who."""
    if not events:
        return html.Div("No session events.", className="vw-muted")
    rows = [html.Tr([html.Td(clock(int(e["ts"]), tz)), html.Td(EVENT_LABELS.get(str(e.get("type")), str(e.get("type")))),
                     html.Td(describe_event(e)), html.Td(str(e.get("user", "")))],
                    **dattrs({"data-vw-event": str(e.get("type")), "data-vw-event-id": str(e.get("id", ""))}))
            for e in sorted(events, key=lambda e: (int(e["ts"]), str(e.get("id", ""))), reverse=True)]
    head = html.Tr([html.Th(h) for h in ("time", "event", "details", "user")])
    return html.Table([html.Thead(head), html.Tbody(rows)], className="vw-limits vw-events")


def observations_summary(events: Sequence[Mapping[str, Any]], tz: str) -> str:
    """"Recorded: Sedation 10:32:01 (nina) · …" — the observations made so far (pure)."""
    done = [f"{OBSERVATION_LABELS.get(str(e.get('observation')), e.get('observation'))} "
            f"{clock(int(e['ts']), tz)} ({e.get('user', '')})" for e in events if e.get("type") == "observe"]
    return "Recorded: " + " · ".join(done) if done else "No observations recorded yet."


def _start_form(rc: RoomConfig, status: Mapping[str, Mapping[str, str]], style: dict[str, str]) -> html.Div:
    devs = [html.Li(f"{d.id} — {d.protocol} over {d.transport}", **dattrs({"data-vw-confirm-dev": d.id}))
            for d in rc.devices]
    return html.Div([
        html.Div([
            dcc.Input(id="room-patient", placeholder="patient id (MRN or pseudonym)", type="text"),
            html.Span(dcc.Dropdown(id="room-route", options=["intranasal", "iv", "im"], value="intranasal",
                                   clearable=False, style={"width": "9em", "display": "inline-block"}),
                      **dattrs({"data-vw-label": "Route"})),
            dcc.Input(id="room-start-dose", placeholder="dose mg", type="number", min=0),
        ], className="vw-controls"),
        html.Div([
            html.Div("Devices in this room (status now; recorded at start):", className="vw-muted"),
            html.Ul(devs or [html.Li("No devices configured for this room.")], id="room-confirm-devs"),
            devices_div(rc.id, status),
            html.Div(dcc.Checklist(id="room-devices-ok", value=[], options=[{
                "label": " Devices confirmed: these monitors are on this patient", "value": DEVICES_OK}]),
                **dattrs({"data-vw-label": "Devices confirmed"})),
        ], className="vw-confirm"),
        # disabled until the tick (a clientside callback); the server checks the tick again
        html.Button("Start session", id="room-start", n_clicks=0, disabled=True),
    ], id="room-start-form", style=style)


def session_controls(rc: RoomConfig, session: Mapping[str, Any] | None, can_act: bool,
                     status: Mapping[str, Mapping[str, str]], events: Sequence[Mapping[str, Any]],
                     tz: str) -> html.Div:
    """Start form (no open session) or dose/BP/observation/note/end (open session).

    Every control is always in the layout (hidden when it does not apply): Dash only runs a
    callback whose inputs all exist.
    """
    start_style = {} if can_act and not session else HIDE
    open_style = {} if can_act and session else HIDE
    status_text = (f"Session {session['id']} · {session.get('route', '')} · {session.get('protocol', '')}"
                   if session else "No open session.")
    if not can_act:
        status_text += " Session controls need a nurse sign-in."
    obs_buttons = [html.Button(OBSERVATION_LABELS[o], id={"page": "room", "kind": "obs", "obs": o}, n_clicks=0,
                               className="vw-obs", **dattrs({"data-vw-obs": o}))
                   for o in OBSERVATIONS]
    return html.Div([
        html.Div(status_text, className="vw-muted", id="room-session-status"),
        _start_form(rc, status, start_style),
        html.Div([
            html.Div([
                dcc.Input(id="room-dose-mg", placeholder="dose mg", type="number", min=0),
                html.Button("Record dose", id="room-dose", n_clicks=0),
            ], className="vw-controls"),
            html.Div([
                html.Span("Manual BP"),
                dcc.Input(id="room-bp-sbp", placeholder="SBP", type="number", style={"width": NUMBER_FIELD_WIDTH}),
                html.Span("/"),
                dcc.Input(id="room-bp-dbp", placeholder="DBP", type="number", style={"width": NUMBER_FIELD_WIDTH}),
                html.Span("mmHg"),
                html.Button("Record BP", id="room-bp", n_clicks=0),
            ], className="vw-controls"),
            html.Div([html.Span("Observed:"), *obs_buttons,
                      dcc.Input(id="room-obs-text", placeholder="details (optional)", type="text")],
                     className="vw-controls"),
            html.Div(observations_summary(events, tz), id="room-obs-summary", className="vw-muted"),
            html.Div([
                dcc.Input(id="room-note-text", placeholder="note", type="text"),
                html.Button("Add note", id="room-note", n_clicks=0),
                html.Button("End session", id="room-end", n_clicks=0, className="vw-danger"),
            ], className="vw-controls"),
        ], id="room-open-form", style=open_style),
    ])
