"""Small layout pieces shared by pages: the vitals block, a room tile, the nav bar.

Elements the live script updates carry data attributes instead of ids, so any page can
show a room's values: `data-vw-room`, `data-vw-part` (value|age|phase|devices|spark|tile)
and `data-vw-metric`. See dashboard/assets/live.js.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dash import dcc, html

from dashboard.context import User
from dashboard.figures import fmt_age, fmt_value, stale_after_s
from monitor.sessions.phase import session_phase

LABELS = {"hr": "HR", "spo2": "SpO₂", "rr": "RR", "sbp": "BP", "temp": "Temp"}
UNITS = {"hr": "/min", "spo2": "%", "rr": "/min", "sbp": "mmHg", "temp": "°C"}


def dattrs(attrs: dict[str, str]) -> dict[str, Any]:
    """`data-*` attributes for a Dash component's **kwargs (Dash accepts them; its type
    stubs list only named props, so the dict is typed as Any-valued here, once)."""
    return attrs


def _attrs(room: str, part: str, metric: str | None = None, **extra: Any) -> dict[str, Any]:
    d = {"data-vw-room": room, "data-vw-part": part}
    if metric:
        d["data-vw-metric"] = metric
    d.update(extra)
    return d


def value_span(room: str, metric: str, latest: Mapping[str, Mapping[str, Any]], now_ms: int,
               stale_s: float, nibp_cycle_s: float | None, big: bool = True) -> html.Span:
    """One metric's current value, with its timestamp for the live script."""
    x = latest.get(metric)
    ts = int(x["ts"]) if x else 0
    stale = not x or (now_ms - ts) / 1000 > stale_after_s(metric, nibp_cycle_s, stale_s)
    return html.Span(fmt_value(metric, x["v"] if x else None),
                     className="vw-num" + (" vw-big" if big else ""),
                     **_attrs(room, "value", metric, **{"data-vw-ts": str(ts), "data-vw-stale": "1" if stale else "0"}))


def age_span(room: str, metric: str, latest: Mapping[str, Mapping[str, Any]], now_ms: int) -> html.Span:
    """How old a metric's value is ("4 s")."""
    x = latest.get(metric)
    text = fmt_age((now_ms - int(x["ts"])) / 1000) if x else "no data"
    return html.Span(text, className="vw-age", **_attrs(room, "age", metric))


def vitals_block(room: str, latest: Mapping[str, Mapping[str, Any]], now_ms: int, stale_s: float,
                 nibp_cycle_s: float | None) -> html.Div:
    """HR, BP SBP/DBP (MAP), SpO2, RR — each with its age."""
    def cell(metric: str, body: list[Any], age_metric: str) -> html.Div:
        return html.Div([html.Div([html.Span(LABELS[metric], className="vw-label"),
                                   html.Span(UNITS[metric], className="vw-unit")], className="vw-cellhead"),
                         html.Div(body, className="vw-cellval"), age_span(room, age_metric, latest, now_ms)],
                        className=f"vw-cell vw-cell-{metric}")

    def v(m: str, big: bool = True) -> html.Span:
        return value_span(room, m, latest, now_ms, stale_s, nibp_cycle_s, big)

    return html.Div([
        cell("hr", [v("hr")], "hr"),
        cell("sbp", [v("sbp"), html.Span("/", className="vw-sep"), v("dbp"),
                     html.Span(" (", className="vw-sep"), v("map", big=False), html.Span(")", className="vw-sep")], "sbp"),
        cell("spo2", [v("spo2")], "spo2"),
        cell("rr", [v("rr")], "rr"),
    ], className="vw-vitals")


def phase_span(room: str, session: Mapping[str, Any] | None, now_ms: int) -> html.Span:
    """Session phase and time since dose (the live script keeps the minutes current)."""
    ph = session_phase(session, now_ms)
    return html.Span(ph.label, className=f"vw-phase vw-phase-{ph.stage}",
                     **_attrs(room, "phase", **{"data-vw-dose-ms": str(ph.dose_ms or "")}))


def devices_div(room: str, status: Mapping[str, Mapping[str, str]]) -> html.Div:
    """Device status chips."""
    chips = [html.Span(f"{d} {s.get('state', 'unknown')}", className=f"vw-dev vw-dev-{s.get('state', 'unknown')}")
             for d, s in status.items()]
    return html.Div(chips, className="vw-devices", **_attrs(room, "devices"))


def room_tile(room_id: str, name: str, latest: Mapping[str, Mapping[str, Any]],
              session: Mapping[str, Any] | None, status: Mapping[str, Mapping[str, str]],
              alert_level: str | None, now_ms: int, stale_s: float, nibp_cycle_s: float | None) -> html.Div:
    """One room on the overview: phase, vitals with ages, devices, sparkline; alert-colored."""
    return html.Div([
        html.Div([dcc.Link(name, href=f"/room/{room_id}", className="vw-roomname"),
                  phase_span(room_id, session, now_ms)], className="vw-tilehead"),
        vitals_block(room_id, latest, now_ms, stale_s, nibp_cycle_s),
        html.Div(className="vw-spark", **_attrs(room_id, "spark")),
        devices_div(room_id, status),
    ], id=f"ov-tile-{room_id}", className="vw-tile",
        **_attrs(room_id, "tile", **{"data-alert": alert_level or "none"}))


def nav(user: User | None, pages: list[tuple[str, str]]) -> html.Div:
    """Top bar: links, who is signed in, sound state, sign out."""
    links = [dcc.Link(label, href=href, className="vw-navlink") for label, href in pages]
    who = f"{user.name} ({user.role})" if user else ""
    return html.Div([
        html.Span("VitalWatch", className="vw-brand"), *links,
        html.Span(className="vw-spacer"),
        html.Button("Start monitoring (sound off)", id="app-sound", className="vw-sound vw-sound-off", n_clicks=0),
        html.Span(who, className="vw-who", id="app-who"),
        # a POST (a link would let any page sign the screen out with an <img src=/logout>)
        html.Form(html.Button("Sign out", type="submit", id="app-logout", className="vw-navlink vw-logout"),
                  method="POST", action="/logout", className="vw-logoutform"),
    ], className="vw-nav")
