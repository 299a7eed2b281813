"""Overview `/`: a tile per room and the alert list across rooms (station and up)."""

from __future__ import annotations

import dash
from dash import html

from dashboard.components import room_tile
from dashboard.context import AppContext, PageContext
from dashboard.figures import highest_priority

ROUTES = ("/",)
MIN_ROLE = "station"
ID_PREFIX = "ov-"
TITLE = "Overview"
NAV = True


def layout(ctx: PageContext, **_params: str) -> html.Div:
    """Tiles with the values in Redis now; the live script keeps them current."""
    cfg, data, now = ctx.cfg, ctx.data, ctx.now_ms
    alerts = data.active_alerts()
    sessions = data.room_sessions()
    tiles = []
    for r in cfg.rooms:
        devs = [d.id for d in r.devices]
        nibp = next((d.nibp_cycle_s for d in r.devices if d.protocol == "nibp-un300"), None)
        tiles.append(room_tile(
            r.id, r.name or r.id, data.latest(r.id), sessions.get(r.id),
            data.device_status(devs) if devs else {},
            highest_priority(a for a in alerts if a.get("room") == r.id),
            now, cfg.dashboard.stale_s, nibp))
    return html.Div([
        html.Div([html.H3("Alerts", className="vw-h"),
                  # Dash takes data-* attributes via **kwargs; its stubs type only the named ones
                  html.Div(id="ov-alerts", className="vw-alerts", **{"data-vw-alerts": "*"})],  # type: ignore[arg-type]
                 className="vw-alertpane"),
        html.Div(tiles, id="ov-grid", className="vw-grid"),
    ], className="vw-overview")


def register_callbacks(app: dash.Dash, ctx: AppContext) -> None:
    """The overview has no server callbacks: values, alerts and actions go through the push
    socket and the JSON API (see dashboard/live.py and dashboard/assets/live.js)."""
