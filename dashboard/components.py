"""Small layout pieces shared by pages: the room page's vitals block, device chips, the nav bar.

Elements the live script updates carry data attributes instead of ids, so any page can
show a room's values: `data-vw-room`, `data-vw-part` (value|age|phase|devices|spark|tile|
chips|notmon) and `data-vw-metric`. See dashboard/assets/live.js. The overview's tiles are
built by dashboard/assets/tiles.js with the same attributes and classes (not as Dash
components: a few thousand of those took tens of seconds to render at 100 rooms).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dash import dcc, html

from dashboard.context import User
from dashboard.figures import fmt_age, fmt_value, stale_after_s
from monitor.alarms.text import unit
from monitor.model.readings import short_label
from monitor.sessions.phase import session_phase

LABELS = {"hr": "HR", "spo2": "SpO₂", "rr": "RR", "sbp": "BP", "temp": "Temp"}
UNITS = {"hr": "/min", "spo2": "%", "rr": "/min", "sbp": "mmHg", "temp": "°C"}
SOUND_OFF_TEXT = "Sound off — click to enable alarm sound"  # live.js keeps it current

# A dcc.Input(type="number") on a wide screen: two 32-px −/+ steppers and the field's padding
# take 80 px; a 6em field left ~24 px, and "low" read "lov", "delay s" "de".
NUMBER_FIELD_WIDTH = "calc(4.5em + 80px)"


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
               stale_s: float, nibp_cycle_s: float | None, cls: str = "vw-big") -> html.Span:
    """One metric's current value, with its timestamp for the live script (an image of a
    number for screen readers: its label says the value, the unit and any breach)."""
    x = latest.get(metric)
    ts = int(x["ts"]) if x else 0
    stale = not x or (now_ms - ts) / 1000 > stale_after_s(metric, nibp_cycle_s, stale_s)
    text = fmt_value(metric, x["v"] if x else None)
    label = f"{short_label(metric)} {text} {unit(metric)}" if x else f"{short_label(metric)} no data"
    return html.Span(text, className=f"vw-num {cls}", role="img", **dattrs({"aria-label": label}),
                     **_attrs(room, "value", metric, **dattrs({"data-vw-ts": str(ts), "data-vw-stale": "1" if stale else "0"})))


def age_span(room: str, metric: str, latest: Mapping[str, Mapping[str, Any]], now_ms: int) -> html.Span:
    """How old a metric's value is ("4 s")."""
    x = latest.get(metric)
    text = fmt_age((now_ms - int(x["ts"])) / 1000) if x else "no data"
    return html.Span(text, className="vw-age", **_attrs(room, "age", metric))


def vitals_block(room: str, latest: Mapping[str, Mapping[str, Any]], now_ms: int, stale_s: float,
                 nibp_cycle_s: float | None) -> html.Div:
    """BP SBP/DBP (MAP), HR, SpO2, RR — each with its age (the overview tile's layout)."""
    def head(metric: str, age_metric: str) -> html.Div:
        return html.Div([html.Span(LABELS[metric], className="vw-label"), html.Span(UNITS[metric], className="vw-unit"),
                         age_span(room, age_metric, latest, now_ms)], className="vw-cellhead")

    def v(m: str, cls: str = "vw-big") -> html.Span:
        return value_span(room, m, latest, now_ms, stale_s, nibp_cycle_s, cls)

    bp = html.Div([head("sbp", "sbp"), html.Div([
        v("sbp"), html.Span("/", className="vw-sep vw-big", **dattrs({"aria-hidden": "true"})), v("dbp"),
        html.Span([html.Span("(", className="vw-sep", **dattrs({"aria-hidden": "true"})), v("map", "vw-mid"),
                   html.Span(")", className="vw-sep", **dattrs({"aria-hidden": "true"}))], className="vw-map"),
    ], className="vw-cellval")], className="vw-cell vw-cell-bp")
    row = html.Div([html.Div([head(m, m), html.Div(v(m), className="vw-cellval")], className=f"vw-cell vw-cell-{m}")
                    for m in ("hr", "spo2", "rr")], className="vw-row3")
    return html.Div([bp, row], className="vw-vitals")


def phase_span(room: str, session: Mapping[str, Any] | None, now_ms: int) -> html.Span:
    """Session phase and time since dose (the live script keeps the minutes current)."""
    ph = session_phase(session, now_ms)
    return html.Span(ph.label, className="vw-phase",
                     **_attrs(room, "phase", **dattrs({"data-vw-phase": ph.stage, "data-vw-dose-ms": str(ph.dose_ms or "")})))


def devices_div(room: str, status: Mapping[str, Mapping[str, str]]) -> html.Div:
    """Device status chips."""
    chips = [html.Span(f"{d} {s.get('state', 'unknown')}", className="vw-dev", **dattrs({"data-state": s.get("state", "unknown")}))
             for d, s in status.items()]
    return html.Div(chips, className="vw-devices", **_attrs(room, "devices"))


def room_band(room: str, name: str, session: Mapping[str, Any] | None, now_ms: int,
              heading: bool = False) -> list[Any]:
    """A room's band (name, phase) and its "not monitored" strip, as on an overview tile;
    `heading`: the name is the page's heading (the room page names the room once, here)."""
    label = html.H2(name, className="vw-roomname vw-h") if heading else html.Span(name, className="vw-roomname")
    return [html.Div([label, phase_span(room, session, now_ms)], className="vw-band"),
            html.Div(className="vw-notmon", **_attrs(room, "notmon"))]


def nav(user: User | None, pages: list[tuple[str, str]]) -> html.Div:
    """Top bar: links, who is signed in, sound state, sign out."""
    links = [dcc.Link(label, href=href, className="vw-navlink") for label, href in pages]
    who = f"{user.name} ({user.role})" if user else ""
    return html.Div([
        html.Span("VitalWatch", className="vw-brand"), *links,
        html.Span(className="vw-spacer"),
        html.Button(SOUND_OFF_TEXT, id="app-sound", className="vw-sound vw-sound-off", n_clicks=0,
                    **dattrs({"aria-pressed": "false"})),
        html.Span(who, className="vw-who", id="app-who"),
        # a POST (a link would let any page sign the screen out with an <img src=/logout>)
        html.Form(html.Button("Sign out", type="submit", id="app-logout", className="vw-navlink vw-logout"),
                  method="POST", action="/logout", className="vw-logoutform"),
    ], className="vw-nav", role="navigation")
