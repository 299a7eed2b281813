"""Phone view `/m`: for the nurse walking between rooms — active alarms first (acknowledge,
pause, reset), then every room's latest values and ages as compact rows, NOT MONITORING on
top. The same frame and live script as the overview, held in its phone layout whatever the
width; the web app manifest (`/manifest.webmanifest`) starts here when installed."""

from __future__ import annotations

import dash
from dash import html

from dashboard.context import AppContext, PageContext
from dashboard.pages.overview import frame

ROUTES = ("/m",)
MIN_ROLE = "station"
ID_PREFIX = "m-"
TITLE = "Phone view"
NAV = False


def layout(ctx: PageContext, **_params: str) -> html.Div:
    """The overview frame in phone mode."""
    return frame(mode="phone")


def register_callbacks(app: dash.Dash, ctx: AppContext) -> None:
    """No server callbacks (as the overview)."""
