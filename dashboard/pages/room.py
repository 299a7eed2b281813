"""Room page `/room/<room>`: live trends with limits, markers and episodes; devices; session.

Station and up may watch; asking an NIBP device to measure now (it inflates a patient's
cuff), session controls (start, dose, note, end) and the open session's alarm-limit
overrides ("Session limits") need the nurse role and are refused on the server otherwise
(the callbacks check the signed-in user's role themselves: their output ids are this
page's, which a station may use). Only a configured NIBP device of this room can be asked,
and the trend window is one of the offered choices whatever a request says.
"""

from __future__ import annotations

import json
from typing import Any

import dash
import redis
from dash import ALL, Input, Output, Patch, State, dcc, html, no_update
from dash import ctx as dash_ctx

from dashboard.components import NUMBER_FIELD_WIDTH, dattrs, devices_div, room_band, vitals_block
from dashboard.context import AppContext, PageContext
from dashboard.figures import TREND_TRACES, WINDOWS_MIN, alert_episodes, trend_figure, tz_shift_ms
from dashboard.session_panel import (
    DEVICES_OK,
    OBSERVATION_LABELS,
    BadInput,
    events_table,
    parse_bp,
    session_controls,
)
from monitor.alarms.actions import NotLatched
from monitor.alarms.text import alarm_line
from monitor.model.config import PRIORITIES
from monitor.model.readings import METRICS
from monitor.sessions import lifecycle as sessions
from monitor.sessions import limits as session_limits
from monitor.store import replicas
from monitor.store.redis_conn import REDIS_DOWN

ROUTES = ("/room/<room>",)
MIN_ROLE = "station"
ID_PREFIX = "room-"
TITLE = "Room"
NAV = False
SESSION_ROLE = "nurse"
EVENTS_POLL_MS = 5000


def effective_limits(app: AppContext, room: str, sid: str | None) -> dict[str, dict[str, Any]]:
    """Per metric the limits the engine applies now: config defaults ← room ← session overrides.

    The same merge as the alert engine (monitor.sessions.limits.effective_limits over
    build_rules), so an override the engine ignores is not drawn either.
    """
    raw = session_limits.read_raw(app.data.client, app.keys, sid) if sid else {}
    return session_limits.effective_limits(app.cfg, room, raw)


def build_figure(app: AppContext, room: str, window: str | int, now_ms: int) -> Any:
    """The trend figure for a window in minutes, or "session" (from the session's start)."""
    data = app.data
    sid = data.open_sessions().get(room)
    head = data.session(sid) if sid else None
    if window not in WINDOWS_MIN and window != "session":
        window = WINDOWS_MIN[0]  # a forged request cannot ask for a year of readings
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
                       **dattrs({"data-vw-limit-field": field, "data-vw-override": "1" if over else "0"}))

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
        ], **dattrs({"data-vw-limit-metric": metric})))
    return html.Table([html.Thead(head), html.Tbody(rows)], className="vw-limits")


UNSET_FIELDS = (("low", "low"), ("high", "high"), ("priority", "priority"), ("delay_s", "delay"))


def form_limit_fields(low: Any, high: Any, priority: Any, delay_s: Any, unset: Any) -> dict[str, Any]:
    """The "Session limits" form as `apply_limit` keywords (pure): empty fields stay None (kept
    as they are in the session's override), ticked "back to room" ones are `UNSET`."""
    out: dict[str, Any] = {"low": low, "high": high, "priority": priority or None, "delay_s": delay_s}
    for name in unset or []:
        if name in out:
            out[name] = session_limits.UNSET
    return out


def _limits_state(room: str, session: dict[str, Any] | None, can_act: bool) -> tuple[dict[str, str], str]:
    """(form style, note): the form shows for nurse and up while the room has an open session."""
    if not session:
        return {"display": "none"}, "Limits follow the room's configuration (no open session)."
    if not can_act:
        return {"display": "none"}, "Changing this session's limits needs a nurse sign-in."
    return {}, (f"Overrides for session {session['id']} only; they end with the session. A change is "
                "merged into the session's override: fields left empty keep their value (the room's "
                "limits where the session sets none); tick 'back to room' to remove one field.")


def _limits_section(app: AppContext, room: str, session: dict[str, Any] | None, can_act: bool) -> html.Div:
    # Every control is always in the layout (hidden when it does not apply): Dash only runs a
    # callback whose inputs all exist.
    style, note = _limits_state(room, session, can_act)
    return html.Div([
        html.H3("Session limits", className="vw-h"),
        html.Div(note, id="room-lim-note", className="vw-muted"),
        html.Div([
            html.Span(dcc.Dropdown(id="room-lim-metric", value="sbp", clearable=False,
                                   options=[{"label": f"{m.label} ({m.name}, {m.unit})", "value": m.name}
                                            for m in METRICS.values()], style={"width": "16em", "display": "inline-block"}),
                      **dattrs({"data-vw-label": "Metric"})),
            dcc.Input(id="room-lim-low", type="number", placeholder="low", style={"width": NUMBER_FIELD_WIDTH}),
            dcc.Input(id="room-lim-high", type="number", placeholder="high", style={"width": NUMBER_FIELD_WIDTH}),
            html.Span(dcc.Dropdown(id="room-lim-priority", options=list(PRIORITIES), placeholder="priority",
                                   style={"width": "9em", "display": "inline-block"}), **dattrs({"data-vw-label": "Priority"})),
            dcc.Input(id="room-lim-delay", type="number", placeholder="delay s", style={"width": NUMBER_FIELD_WIDTH}),
            html.Span(dcc.Checklist(id="room-lim-unset", inline=True, value=[],
                                    options=[{"label": f"{label} back to room", "value": f}
                                             for f, label in UNSET_FIELDS]),
                      **dattrs({"data-vw-label": "Remove from override"})),
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
    tz = ctx.cfg.clinic.timezone
    shift = tz_shift_ms(tz, now)
    events = data.session_events(sid) if sid else []
    latched = _latched(data, room)
    return html.Div([
        dcc.Store(id="room-id", data=room),
        dcc.Store(id="room-rev", data=0),
        html.Div([
            *room_band(room, rc.name or rc.id, head, now, heading=True),
            vitals_block(room, data.latest(room), now, ctx.cfg.dashboard.stale_s,
                         nibp[0].nibp_cycle_s if nibp else None),
            html.Div([devices_div(room, status),
                      *[html.Button(f"Measure BP now ({d.id})", id={"page": "room", "kind": "nibp", "dev": d.id},
                                    n_clicks=0, className="vw-btn vw-nibp", disabled=not can_act,
                                    title="" if can_act else "needs a nurse sign-in") for d in nibp],
                      html.Span(id="room-nibp-msg", className="vw-muted", role="status")], className="vw-roomdevices"),
        ], className="vw-roomtop", **dattrs({"data-vw-room": room, "data-vw-part": "tile", "data-alert": "none"})),
        html.Div([html.H3("Alarms", className="vw-h"),
                  html.Div(id="room-alerts", className="vw-alerts", role="list", **dattrs({"data-vw-alerts": room}))]),
        html.Div([
            html.Span("Window: "),
            dcc.RadioItems(id="room-window", value=15, inline=True,
                           options=[{"label": f"{m} min", "value": m} for m in WINDOWS_MIN]
                           + [{"label": "whole session", "value": "session"}]),
        ], className="vw-window", **dattrs({"data-vw-label": "Trend window"})),
        # an explicit height: with `responsive` the graph fills its parent, which has none, so
        # the 640 px figure overflowed a 0 px box and covered the controls below it
        html.Div(dcc.Graph(id="room-trend", figure=build_figure(ctx.app, room, 15, now),
                           config={"displaylogo": False, "responsive": True}, style={"height": "640px"}),
                 id="room-trend-wrap", **dattrs({"data-vw-trend": room, "data-vw-shift-ms": str(shift)})),
        html.H3("Session", className="vw-h"),
        # the room's reminders (not alarms: no colour, no sound; done by doing the task, or
        # dismissed); live.js keeps this list current from the push socket
        html.Div([html.Span("Reminders", className="vw-label"),
                  html.Div(id="room-reminders", className="vw-reminderlist", role="list",
                           **dattrs({"data-vw-reminders": room}))], className="vw-reminders"),
        html.Div(session_controls(rc, head, can_act, status, events, tz), id="room-session"),
        end_dialog(latched, rc.name or rc.id, head),
        html.Div(id="room-session-msg", role="status"),
        html.H3("Session events", className="vw-h"),
        html.Div(events_table(events, tz), id="room-events"),
        # the events list follows changes made elsewhere (CLI, another screen) every few seconds
        dcc.Store(id="room-ev-key", data=events_key(sid, events)),
        dcc.Interval(id="room-ev-tick", interval=EVENTS_POLL_MS),
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
    def _nibp(clicks: list[int]) -> Any:  # str, or no_update
        trig = dash_ctx.triggered_id
        user = actx.current_user()
        if not isinstance(trig, dict) or not any(clicks) or user is None:
            return no_update
        if not user.can(SESSION_ROLE):
            return "Refused: measuring now needs a nurse sign-in."
        dev = str(trig.get("dev"))
        if dev not in {d.id for _r, d in actx.cfg.devices() if d.protocol == "nibp-un300"}:
            return f"Refused: {dev!r} is not an NIBP device of this clinic."
        actx.data.request_nibp(dev, user.name)
        return f"Measurement requested from {dev}."

    _register_session_callbacks(app, actx)
    _register_end_dialog(app, actx)


def events_key(sid: str | None, events: list[dict[str, Any]]) -> str:
    """Identifies what the events list shows: the open session and its newest event id."""
    return f"{sid or ''}|{events[-1]['id'] if events else ''}"


def _panel(actx: AppContext, room: str, can_act: bool) -> tuple[Any, Any, str, str | None]:
    """(controls, events table, events key, open sid) as they are now."""
    data, tz = actx.data, actx.cfg.clinic.timezone
    rc = actx.cfg.room(room)
    sid = data.open_sessions().get(room)
    head = data.session(sid) if sid else None
    events = data.session_events(sid) if sid else []
    status = data.device_status([d.id for d in rc.devices]) if rc.devices else {}
    return (session_controls(rc, head, can_act, status, events, tz), events_table(events, tz),
            events_key(sid, events), sid)


def _marker_patch(actx: AppContext, room: str, event: dict[str, Any]) -> Any:
    """A Patch adding one dose/BP-check marker to the trend (drawn as trend_figure draws it).

    None when the drawn figure may have no shapes/annotations list to append to (no limit
    lines): the caller then redraws the figure instead.
    """
    sid = actx.data.open_sessions().get(room)
    lims = effective_limits(actx, room, sid)
    if not any(lims.get(m, {}).get(side) is not None for m, _row in TREND_TRACES for side in ("low", "high")):
        return None
    now = actx.clock_ms()
    shift = tz_shift_ms(actx.cfg.clinic.timezone, now)
    fig = trend_figure([], {}, [event], [], now, now + 1, uirevision="", shift_ms=shift)
    patch = Patch()
    for shape in fig.layout.shapes:
        patch["layout"]["shapes"].append(shape.to_plotly_json())
    for ann in fig.layout.annotations:
        patch["layout"]["annotations"].append(ann.to_plotly_json())
    return patch


def _register_session_callbacks(app: dash.Dash, actx: AppContext) -> None:
    """Session actions (nurse and up, checked here on the server) and the events list refresh."""
    # Start stays disabled until the devices are confirmed (the server checks the tick again).
    app.clientside_callback(
        "function(v) { return !(v && v.indexOf(" + json.dumps(DEVICES_OK) + ") >= 0); }",
        Output("room-start", "disabled"), Input("room-devices-ok", "value"))

    @app.callback(
        Output("room-session-msg", "children"), Output("room-session-msg", "style"),
        Output("room-session", "children"), Output("room-rev", "data"),
        Output("room-trend", "figure", allow_duplicate=True),
        Output("room-events", "children", allow_duplicate=True), Output("room-ev-key", "data", allow_duplicate=True),
        Input("room-start", "n_clicks"), Input("room-dose", "n_clicks"), Input("room-bp", "n_clicks"),
        Input({"page": "room", "kind": "obs", "obs": ALL}, "n_clicks"),
        Input("room-note", "n_clicks"), Input("room-end-confirm", "n_clicks"),
        State("room-id", "data"), State("room-patient", "value"), State("room-route", "value"),
        State("room-start-dose", "value"), State("room-devices-ok", "value"), State("room-dose-mg", "value"),
        State("room-bp-sbp", "value"), State("room-bp-dbp", "value"), State("room-obs-text", "value"),
        State("room-note-text", "value"), State("room-rev", "data"), State("room-end-reset", "value"),
        prevent_initial_call=True)
    def _session(_s, _d, _b, _o, _n, _e, room, patient, route, start_dose, devices_ok, dose_mg,  # noqa: ANN001, ANN202
                 sbp, dbp, obs_text, note, rev, reset_ids):
        nothing = (no_update,) * 7
        trig = dash_ctx.triggered_id
        # a click, not a re-render (new buttons come with n_clicks 0)
        if not trig or not dash_ctx.triggered[0].get("value"):
            return nothing
        user = actx.current_user()

        def refuse(text: str) -> tuple[Any, ...]:
            return (text, ERROR_STYLE, *nothing[2:])

        if user is None or not user.can(SESSION_ROLE):
            return refuse("Refused: session actions need the nurse role.")
        c, k, cfg = actx.data.client, actx.keys, actx.cfg
        fig: Any = no_update
        bump = False
        try:
            # which master takes the write: a confirmation from another one would mean nothing
            before = replicas.server_id(c) if cfg.redis.min_replicas else ""
            sid = actx.data.open_sessions().get(room)
            if trig == "room-start":
                if DEVICES_OK not in (devices_ok or []):
                    return refuse("Refused: confirm the room's devices (tick \"Devices confirmed\") before starting.")
                sid = sessions.start_session(c, k, cfg, room, patient or "", route or "intranasal", user.name,
                                             dose_mg=float(start_dose) if start_dose else None)
                confirmed = next((e for e in actx.data.session_events(sid) if e["type"] == "devices_confirmed"), {})
                msg = f"Session {sid} started by {user.name}; devices confirmed: " + ", ".join(
                    f"{d['id']} ({d['state']})" for d in confirmed.get("devices", [])) if confirmed.get("devices") \
                    else f"Session {sid} started by {user.name} (no devices configured)."
                bump = True
            elif sid is None:
                return refuse("Refused: this room has no open session.")
            elif trig == "room-dose":
                sessions.record_dose(c, k, sid, user.name, dose_mg=float(dose_mg) if dose_mg else None)
                fig = _marker_patch(actx, room, actx.data.session_events(sid)[-1])
                msg = f"Dose recorded by {user.name}."
                bump = fig is None
            elif trig == "room-bp":
                s_mm, d_mm = parse_bp(sbp, dbp)
                sessions.record_bp(c, k, sid, user.name, s_mm, d_mm)
                fig = _marker_patch(actx, room, actx.data.session_events(sid)[-1])
                msg = f"BP {s_mm}/{d_mm} mmHg recorded by {user.name}."
                bump = fig is None
            elif isinstance(trig, dict) and trig.get("kind") == "obs":
                obs = str(trig.get("obs"))
                sessions.observe(c, k, sid, user.name, obs, text=(obs_text or "").strip() or None)
                msg = f"{OBSERVATION_LABELS.get(obs, obs)} recorded by {user.name}."
            elif trig == "room-note":
                if not (note or "").strip():
                    return refuse("Refused: type a note first.")
                sessions.add_note(c, k, sid, user.name, note)
                msg = f"Note added by {user.name}."
            elif trig == "room-end-confirm":
                sessions.end_session(c, k, cfg, sid, user.name)
                msg = f"Session {sid} ended by {user.name} and archived." + _reset_latched(actx, reset_ids, user.name)
                bump = True
            else:
                return nothing
            controls, table, key, _sid = _panel(actx, room, True)
            # redis.min_replicas: say so when a replica has not confirmed it (docs/deployment.md)
            try:
                warn = replicas.confirm(c, k, cfg.redis.min_replicas, since=before)
            except redis.RedisError as e:  # saved already: do not say "not saved"
                warn = f"saved, but whether a replica holds it is unknown ({e.__class__.__name__})"
        except (sessions.SessionError, BadInput) as e:
            return refuse(f"Refused: {e}")
        except REDIS_DOWN as e:
            return refuse(f"Not saved: Redis unreachable ({e.__class__.__name__}).")
        if warn:
            return (f"{msg} Warning: {warn}.", ERROR_STYLE, controls,
                    (rev or 0) + 1 if bump else no_update, no_update if fig is None else fig, table, key)
        return (msg, OK_STYLE, controls, (rev or 0) + 1 if bump else no_update,
                no_update if fig is None else fig, table, key)

    @app.callback(
        Output("room-events", "children", allow_duplicate=True), Output("room-ev-key", "data", allow_duplicate=True),
        Output("room-session", "children", allow_duplicate=True), Output("room-rev", "data", allow_duplicate=True),
        Input("room-ev-tick", "n_intervals"), State("room-id", "data"), State("room-ev-key", "data"),
        State("room-rev", "data"), prevent_initial_call=True)
    def _events_refresh(_n, room, shown, rev):  # noqa: ANN001, ANN202
        # cheap when nothing changed: one HGET and one XREVRANGE COUNT 1
        try:
            sid = actx.data.open_sessions().get(room)
            tip = actx.data.client.xrevrange(actx.keys.session_events(sid), count=1) if sid else []
        except REDIS_DOWN:
            return no_update, no_update, no_update, no_update  # the NOT MONITORING bar says so
        key = f"{sid or ''}|{tip[0][0] if tip else ''}"
        if key == shown:
            return no_update, no_update, no_update, no_update
        user = actx.current_user()
        controls, table, key, _sid = _panel(actx, room, bool(user and user.can(SESSION_ROLE)))
        if (shown or "|").split("|")[0] != (sid or ""):
            # a session started or ended elsewhere: new controls, limits and trend
            return table, key, controls, (rev or 0) + 1
        return table, key, no_update, no_update


def _latched(data: Any, room: str) -> list[dict[str, Any]]:
    """The room's latched alarms (condition over, not yet reset)."""
    return [a for a in data.active_alerts([room]) if a.get("room") == room and a.get("state") == "latched"]


def end_dialog(latched: list[dict[str, Any]], room_name: str, session: dict[str, Any] | None) -> html.Div:
    """"End session?" — says what will happen and offers to reset the room's latched alarms
    (hidden until End session is clicked; always in the layout, as Dash needs its inputs)."""
    return html.Div([
        html.H3("End this session?"),
        html.P(_end_text(session), id="room-end-text"),
        html.Div(dcc.Checklist(id="room-end-reset", options=_latched_options(latched, room_name),
                               value=[a["alert"] for a in latched], className="vw-controls"),
                 **dattrs({"data-vw-label": "Latched alarms to reset"})),
        html.Button("End session and archive", id="room-end-confirm", n_clicks=0, className="vw-danger"),
        html.Button("Cancel", id="room-end-cancel", n_clicks=0, className="vw-btn"),
    ], id="room-end-dialog", className="vw-dialog", role="dialog", style=HIDDEN,
        **dattrs({"aria-labelledby": "room-end-text"}))


HIDDEN: dict[str, str] = {"display": "none"}


def _end_text(session: dict[str, Any] | None) -> str:
    sid = session["id"] if session else "—"
    return (f"Session {sid} will end now and be archived for review. Its alarm-limit overrides end with it, "
            "its reminders stop, and new readings in this room belong to no session until the next one starts.")


def _latched_options(latched: list[dict[str, Any]], room_name: str) -> list[dict[str, str]]:
    return [{"label": f" Also reset: {alarm_line(a, room_name)}", "value": a["alert"]} for a in latched]


def _reset_latched(actx: AppContext, ids: list[str] | None, user: str) -> str:
    """Reset the latched alarms ticked in the End-session dialog; a note on what was done."""
    done, kept = 0, 0
    for aid in ids or []:
        try:
            actx.data.reset(aid, user)
            done += 1
        except (KeyError, NotLatched):
            kept += 1  # reset elsewhere meanwhile, or its condition came back: left as it is
    note = f" {done} latched alarm{'s' if done != 1 else ''} reset." if done else ""
    return note + (f" {kept} not reset (already gone or active again)." if kept else "")


def _register_end_dialog(app: dash.Dash, actx: AppContext) -> None:
    @app.callback(Output("room-end-dialog", "style"), Output("room-end-text", "children"),
                  Output("room-end-reset", "options"), Output("room-end-reset", "value"),
                  Input("room-end", "n_clicks"), Input("room-end-cancel", "n_clicks"),
                  Input("room-end-confirm", "n_clicks"), State("room-id", "data"), prevent_initial_call=True)
    def _dialog(_end, _cancel, _confirm, room):  # noqa: ANN001, ANN202
        if dash_ctx.triggered_id != "room-end" or not dash_ctx.triggered[0].get("value"):
            return HIDDEN, no_update, no_update, no_update
        sid = actx.data.open_sessions().get(room)
        head = actx.data.session(sid) if sid else None
        latched = _latched(actx.data, room)
        name = actx.cfg.room(room).name or room
        return {}, _end_text(head), _latched_options(latched, name), [a["alert"] for a in latched]


def _register_limit_callbacks(app: dash.Dash, actx: AppContext) -> None:
    """Session limits: apply/clear (nurse and up, checked here on the server) and refresh."""

    @app.callback(
        Output("room-lim-msg", "children"), Output("room-lim-msg", "style"),
        Output("room-lim-table", "children", allow_duplicate=True),
        Output("room-trend", "figure", allow_duplicate=True),
        Input("room-lim-apply", "n_clicks"), Input("room-lim-clear", "n_clicks"),
        State("room-id", "data"), State("room-lim-metric", "value"), State("room-lim-low", "value"),
        State("room-lim-high", "value"), State("room-lim-priority", "value"), State("room-lim-delay", "value"),
        State("room-lim-unset", "value"), State("room-window", "value"), prevent_initial_call=True)
    def _limit(_a, _c, room, metric, low, high, priority, delay_s, unset, window):  # noqa: ANN001, ANN202
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
            clear = trig == "room-lim-clear"
            given = form_limit_fields(low, high, priority, delay_s, [] if clear else unset)
            stored = session_limits.apply_limit(
                actx.data.client, actx.keys, actx.cfg, sid, user.name, metric or "",
                **({} if clear else given), clear=clear)
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
