"""Room page `/room/<room>`: live trends with limits, markers and episodes; devices; session.

Station and up may watch and ask an NIBP device to measure now; session controls (start,
dose, note, end) and the open session's alarm-limit overrides ("Session limits") need the
nurse role and are refused on the server otherwise (the callbacks check the signed-in user's
role themselves: their output ids are this page's, which a station may use).
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, dcc, html, no_update
from dash import ctx as dash_ctx

from dashboard.components import devices_div, phase_span, vitals_block
from dashboard.context import AppContext, PageContext
from dashboard.figures import WINDOWS_MIN, alert_episodes, trend_figure, tz_shift_ms
from monitor import session_limits, sessions
from monitor.config import PRIORITIES
from monitor.readings import METRICS
from monitor.redis_conn import REDIS_DOWN

ROUTES = ("/room/<room>",)
MIN_ROLE = "station"
ID_PREFIX = "room-"
TITLE = "Room"
NAV = False
SESSION_ROLE = "nurse"


def effective_limits(app: AppContext, room: str, sid: str | None) -> dict[str, dict[str, Any]]:
    """Per metric the limits the engine applies now: config defaults ← room ← session overrides.

    The same merge as the alert engine (monitor.session_limits.effective_limits over
    build_rules), so an override the engine ignores is not drawn either.
    """
    raw = session_limits.read_raw(app.data.client, app.keys, sid) if sid else {}
    return session_limits.effective_limits(app.cfg, room, raw)


def build_figure(app: AppContext, room: str, window: str | int, now_ms: int) -> Any:
    """The trend figure for a window in minutes, or "session" (from the session's start)."""
    data = app.data
    sid = data.open_sessions().get(room)
    head = data.session(sid) if sid else None
    if window == "session" and head:
        start = int(head["started_ms"])
    else:
        start = now_ms - int(window if window != "session" else 120) * 60_000
    hist = data.history(room, start)
    events = data.session_events(sid) if sid else []
    eps = alert_episodes(data.alert_events(since_ms=start - 3600_000, count=5000, room=room), now_ms)
    eps = [e for e in eps if e["end_ms"] >= start]
    shift = tz_shift_ms(app.cfg.clinic.timezone, now_ms)
    return trend_figure(hist, effective_limits(app, room, sid), events, eps, start, now_ms + 30_000,
                        uirevision=f"{room}-{window}", shift_ms=shift)


def _session_controls(room: str, session: dict[str, Any] | None, can_act: bool) -> html.Div:
    # Every control is always in the layout (hidden when it does not apply): Dash only runs a
    # callback whose inputs all exist.
    hide, show = {"display": "none"}, {}
    start_style = show if can_act and not session else hide
    open_style = show if can_act and session else hide
    status = (f"Session {session['id']} · {session.get('route', '')} · {session.get('protocol', '')}"
              if session else "No open session.")
    return html.Div([
        html.Div(status if can_act else status + " Session controls need a nurse sign-in.",
                 className="vw-muted", id="room-session-status"),
        html.Div([
            dcc.Input(id="room-patient", placeholder="patient id", type="text"),
            dcc.Dropdown(id="room-route", options=["intranasal", "iv", "im"], value="intranasal",
                         clearable=False, style={"width": "9em", "display": "inline-block"}),
            dcc.Input(id="room-start-dose", placeholder="dose mg", type="number", min=0),
            html.Button("Start session", id="room-start", n_clicks=0),
        ], className="vw-controls", style=start_style),
        html.Div([
            dcc.Input(id="room-dose-mg", placeholder="dose mg", type="number", min=0),
            html.Button("Record dose", id="room-dose", n_clicks=0),
            dcc.Input(id="room-note-text", placeholder="note", type="text"),
            html.Button("Add note", id="room-note", n_clicks=0),
            html.Button("End session", id="room-end", n_clicks=0, className="vw-danger"),
        ], className="vw-controls", style=open_style),
    ])


ERROR_STYLE = {"color": "#c62828", "fontWeight": "bold"}
OK_STYLE = {"color": "#2e7d32"}


def _fmt(v: Any, unit: str = "") -> str:
    return "—" if v is None else f"{v:g}{unit}" if isinstance(v, (int, float)) else str(v)


def _limits_table(eff: dict[str, dict[str, Any]]) -> html.Table:
    """Effective limits per metric; cells that come from the session override are marked."""
    def cell(metric: str, field: str, text: str) -> html.Td:
        over = field in eff[metric]["session"]
        return html.Td([text, html.Span(" session", className="vw-lim-badge",
                                        style={"fontSize": ".75em", "color": "#6a1b9a"})] if over else text,
                       style={"fontWeight": "bold", "color": "#6a1b9a"} if over else {},
                       **{"data-vw-limit-field": field, "data-vw-override": "1" if over else "0"})

    head = html.Tr([html.Th(h) for h in ("metric", "low", "high", "priority", "delay", "")])
    rows = []
    for metric, e in eff.items():
        note = f"session override ignored: {e['ignored']}" if e.get("ignored") else (
            "session override" if e["session"] else "room / clinic")
        rows.append(html.Tr([
            html.Td(f"{METRICS[metric].label} ({metric})"),
            cell(metric, "low", _fmt(e["low"])), cell(metric, "high", _fmt(e["high"])),
            cell(metric, "priority", _fmt(e["priority"])), cell(metric, "delay_s", _fmt(e["delay_s"], " s")),
            html.Td(note, className="vw-muted", style=ERROR_STYLE if e.get("ignored") else {}),
        ], **{"data-vw-limit-metric": metric}))
    return html.Table([html.Thead(head), html.Tbody(rows)], className="vw-limits")


def _limits_state(room: str, session: dict[str, Any] | None, can_act: bool) -> tuple[dict[str, str], str]:
    """(form style, note): the form shows for nurse and up while the room has an open session."""
    if not session:
        return {"display": "none"}, "Limits follow the room's configuration (no open session)."
    if not can_act:
        return {"display": "none"}, "Changing this session's limits needs a nurse sign-in."
    return {}, (f"Overrides for session {session['id']} only; they end with the session. Fields left "
                "empty come from the room's limits.")


def _limits_section(app: AppContext, room: str, session: dict[str, Any] | None, can_act: bool) -> html.Div:
    # Every control is always in the layout (hidden when it does not apply): Dash only runs a
    # callback whose inputs all exist.
    style, note = _limits_state(room, session, can_act)
    return html.Div([
        html.H3("Session limits", className="vw-h"),
        html.Div(note, id="room-lim-note", className="vw-muted"),
        html.Div([
            dcc.Dropdown(id="room-lim-metric", value="sbp", clearable=False,
                         options=[{"label": f"{m.label} ({m.name}, {m.unit})", "value": m.name}
                                  for m in METRICS.values()], style={"width": "16em", "display": "inline-block"}),
            dcc.Input(id="room-lim-low", type="number", placeholder="low", style={"width": "6em"}),
            dcc.Input(id="room-lim-high", type="number", placeholder="high", style={"width": "6em"}),
            dcc.Dropdown(id="room-lim-priority", options=list(PRIORITIES), placeholder="priority",
                         style={"width": "9em", "display": "inline-block"}),
            dcc.Input(id="room-lim-delay", type="number", placeholder="delay s", style={"width": "6em"}),
            html.Button("Apply limit", id="room-lim-apply", n_clicks=0),
            html.Button("Clear override", id="room-lim-clear", n_clicks=0),
        ], id="room-lim-form", className="vw-controls", style=style),
        html.Div(id="room-lim-msg", role="status"),
        html.Div(_limits_table(effective_limits(app, room, session["id"] if session else None)),
                 id="room-lim-table"),
    ], id="room-lim")


def layout(ctx: PageContext, room: str = "", **_params: str) -> html.Div:
    """The room's page (a "not found" note for an unknown room)."""
    try:
        rc = ctx.cfg.room(room)
    except KeyError:
        return html.Div(f"No room {room!r} in this clinic.", className="vw-notfound")
    data, now = ctx.data, ctx.now_ms
    devs = [d.id for d in rc.devices]
    status = data.device_status(devs) if devs else {}
    nibp = [d for d in rc.devices if d.protocol == "nibp-un300"]
    sid = data.open_sessions().get(room)
    head = data.session(sid) if sid else None
    can_act = bool(ctx.user and ctx.user.can(SESSION_ROLE))
    shift = tz_shift_ms(ctx.cfg.clinic.timezone, now)
    return html.Div([
        dcc.Store(id="room-id", data=room),
        dcc.Store(id="room-rev", data=0),
        html.Div([html.H2(rc.name or rc.id, className="vw-h"), phase_span(room, head, now)], className="vw-roomhead"),
        html.Div([
            vitals_block(room, data.latest(room), now, ctx.cfg.dashboard.stale_s,
                         nibp[0].nibp_cycle_s if nibp else None),
            html.Div([devices_div(room, status),
                      *[html.Button(f"Measure BP now ({d.id})", id={"page": "room", "kind": "nibp", "dev": d.id},
                                    n_clicks=0, className="vw-nibp") for d in nibp],
                      html.Span(id="room-nibp-msg", className="vw-muted")], className="vw-roomdevices"),
        ], className="vw-roomtop", **{"data-vw-room": room, "data-vw-part": "tile", "data-alert": "none"}),
        html.Div([html.H3("Alerts", className="vw-h"),
                  html.Div(id="room-alerts", className="vw-alerts", **{"data-vw-alerts": room})]),
        html.Div([
            html.Span("Window: "),
            dcc.RadioItems(id="room-window", value=15, inline=True,
                           options=[{"label": f"{m} min", "value": m} for m in WINDOWS_MIN]
                           + [{"label": "whole session", "value": "session"}]),
        ], className="vw-window"),
        # an explicit height: with `responsive` the graph fills its parent, which has none, so
        # the 640 px figure overflowed a 0 px box and covered the controls below it
        html.Div(dcc.Graph(id="room-trend", figure=build_figure(ctx.app, room, 15, now),
                           config={"displaylogo": False, "responsive": True}, style={"height": "640px"}),
                 id="room-trend-wrap", **{"data-vw-trend": room, "data-vw-shift-ms": str(shift)}),
        html.H3("Session", className="vw-h"),
        html.Div(_session_controls(room, head, can_act), id="room-session"),
        html.Div(id="room-session-msg", className="vw-muted"),
        _limits_section(ctx.app, room, head, can_act),
    ], className="vw-room")


def register_callbacks(app: dash.Dash, actx: AppContext) -> None:
    """Window changes, measure-BP-now, session actions, session limits."""
    _register_limit_callbacks(app, actx)

    @app.callback(Output("room-trend", "figure"), Input("room-window", "value"), Input("room-rev", "data"),
                  State("room-id", "data"), prevent_initial_call=True)
    def _window(window: Any, _rev: Any, room: str) -> Any:
        return build_figure(actx, room, window, actx.clock_ms())

    @app.callback(Output("room-nibp-msg", "children"), Input({"page": "room", "kind": "nibp", "dev": ALL}, "n_clicks"),
                  prevent_initial_call=True)
    def _nibp(clicks: list[int]) -> str:
        trig = dash_ctx.triggered_id
        user = actx.current_user()
        if not trig or not any(clicks) or user is None:
            return no_update
        actx.data.request_nibp(trig["dev"], user.name)
        return f"Measurement requested from {trig['dev']}."

    @app.callback(
        Output("room-session-msg", "children"), Output("room-session", "children"), Output("room-rev", "data"),
        Input("room-start", "n_clicks"), Input("room-dose", "n_clicks"), Input("room-note", "n_clicks"),
        Input("room-end", "n_clicks"),
        State("room-id", "data"), State("room-patient", "value"), State("room-route", "value"),
        State("room-start-dose", "value"), State("room-dose-mg", "value"), State("room-note-text", "value"),
        State("room-rev", "data"), prevent_initial_call=True)
    def _session(_s, _d, _n, _e, room, patient, route, start_dose, dose_mg, note, rev):  # noqa: ANN001, ANN202
        user = actx.current_user()
        trig = dash_ctx.triggered_id
        if user is None or not user.can(SESSION_ROLE):
            return "Refused: session actions need the nurse role.", no_update, no_update
        if not trig or not dash_ctx.triggered[0].get("value"):
            return no_update, no_update, no_update
        c, k, cfg = actx.data.client, actx.keys, actx.cfg
        sid = actx.data.open_sessions().get(room)
        try:
            if trig == "room-start":
                sid = sessions.start_session(c, k, cfg, room, patient or "", route or "intranasal", user.name,
                                             dose_mg=float(start_dose) if start_dose else None)
                msg = f"Session {sid} started."
            elif sid is None:
                return "No open session in this room.", no_update, no_update
            elif trig == "room-dose":
                sessions.record_dose(c, k, sid, user.name, dose_mg=float(dose_mg) if dose_mg else None)
                msg = "Dose recorded."
            elif trig == "room-note":
                if not note:
                    return "Type a note first.", no_update, no_update
                sessions.add_note(c, k, sid, user.name, note)
                msg = "Note added."
            else:
                sessions.end_session(c, k, cfg, sid, user.name)
                msg = f"Session {sid} ended and archived."
        except sessions.SessionError as e:
            return f"Refused: {e}", no_update, no_update
        open_sid = actx.data.open_sessions().get(room)
        head = actx.data.session(open_sid) if open_sid else None
        return msg, _session_controls(room, head, True), (rev or 0) + 1


def _register_limit_callbacks(app: dash.Dash, actx: AppContext) -> None:
    """Session limits: apply/clear (nurse and up, checked here on the server) and refresh."""

    @app.callback(
        Output("room-lim-msg", "children"), Output("room-lim-msg", "style"),
        Output("room-lim-table", "children", allow_duplicate=True),
        Output("room-trend", "figure", allow_duplicate=True),
        Input("room-lim-apply", "n_clicks"), Input("room-lim-clear", "n_clicks"),
        State("room-id", "data"), State("room-lim-metric", "value"), State("room-lim-low", "value"),
        State("room-lim-high", "value"), State("room-lim-priority", "value"), State("room-lim-delay", "value"),
        State("room-window", "value"), prevent_initial_call=True)
    def _limit(_a, _c, room, metric, low, high, priority, delay_s, window):  # noqa: ANN001, ANN202
        user = actx.current_user()
        if user is None or not user.can(SESSION_ROLE):
            return "Refused: changing a session's limits needs the nurse role.", ERROR_STYLE, no_update, no_update
        trig = dash_ctx.triggered_id
        if trig not in ("room-lim-apply", "room-lim-clear") or not dash_ctx.triggered[0].get("value"):
            return no_update, no_update, no_update, no_update
        try:
            sid = actx.data.open_sessions().get(room)
            if sid is None:
                return ("Refused: this room has no open session; limits can only be changed for an open "
                        "session."), ERROR_STYLE, no_update, no_update
            stored = session_limits.apply_limit(
                actx.data.client, actx.keys, actx.cfg, sid, user.name, metric or "", low=low, high=high,
                priority=priority or None, delay_s=delay_s, clear=trig == "room-lim-clear")
            eff = effective_limits(actx, room, sid)
            fig = build_figure(actx, room, window or 15, actx.clock_ms())
        except sessions.SessionError as e:
            return f"Refused: {e}", ERROR_STYLE, no_update, no_update
        except REDIS_DOWN as e:
            return f"Not saved: Redis unreachable ({e.__class__.__name__}).", ERROR_STYLE, no_update, no_update
        if stored is None:
            msg = f"No session override for {metric}: nothing to clear."
        elif not stored:
            msg = f"Session override for {metric} cleared by {user.name}; the room's limits apply again."
        else:
            msg = f"Set by {user.name}: " + session_limits.describe(metric, eff.get(metric))
        return msg, OK_STYLE, _limits_table(eff), fig

    @app.callback(
        Output("room-lim-table", "children", allow_duplicate=True), Output("room-lim-form", "style"),
        Output("room-lim-note", "children"),
        Input("room-rev", "data"), State("room-id", "data"), prevent_initial_call=True)
    def _limits_refresh(_rev, room):  # noqa: ANN001, ANN202
        # after a session starts or ends here: the form's visibility and the limits in force
        user = actx.current_user()
        sid = actx.data.open_sessions().get(room)
        head = actx.data.session(sid) if sid else None
        style, note = _limits_state(room, head, bool(user and user.can(SESSION_ROLE)))
        return _limits_table(effective_limits(actx, room, sid)), style, note
