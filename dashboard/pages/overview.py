"""Overview `/`: a tile per room and the alarm list across rooms (station and up).

The page itself is only the frame: the tiles are built in the browser by
dashboard/assets/tiles.js from the push socket's state (the hub's per-room cache: latest
values, alerts, devices, session), so opening the overview costs the server nothing per room
and the browser a few thousand plain elements instead of thousands of React components.
Alarms (with Acknowledge, Pause audio, Reset, Undo) come first in their own list; reminders
are a separate, quieter list and chips on the tiles. At phone width the same page shows the
alarms first and the rooms as compact rows; `/m` (dashboard/pages/phone.py) always does.
"""

from __future__ import annotations

import dash
from dash import html

from dashboard.components import dattrs
from dashboard.context import AppContext, PageContext

ROUTES = ("/",)
MIN_ROLE = "station"
ID_PREFIX = "ov-"
TITLE = "Overview"
NAV = True


def frame(mode: str = "auto") -> html.Div:
    """The overview's frame: alarm pane (alarms, then reminders) and the tile grid."""
    return html.Div([
        html.Section([
            html.H2("Alarms", className="vw-h"),
            html.Div(id="ov-alerts", className="vw-alerts", role="list", **dattrs({"data-vw-alerts": "*"})),
            html.H2("Reminders", className="vw-h vw-remh"),
            html.Div(id="ov-reminders", className="vw-reminderlist", role="list", **dattrs({"data-vw-reminders": "*"})),
        ], className="vw-alertpane", **dattrs({"aria-label": "Alarms and reminders"})),
        html.Main(id="ov-grid", className="vw-grid", **dattrs({"data-vw-grid": "1", "aria-label": "Rooms"})),
    ], className="vw-overview", **dattrs({"data-vw-overview": "1", "data-vw-mode": mode}))


def layout(ctx: PageContext, **_params: str) -> html.Div:
    """The frame; the live script fills it (no Redis read here)."""
    return frame()


def register_callbacks(app: dash.Dash, ctx: AppContext) -> None:
    """The overview has no server callbacks: values, alerts and actions go through the push
    socket and the JSON API (see dashboard/live.py and dashboard/assets/live.js)."""
