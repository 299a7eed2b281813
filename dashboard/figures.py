"""Pure builders: readings, alerts and sessions in → figures, tile states and labels out.

Nothing here touches Redis or the clock: callers pass `now_ms`. Tests are tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from monitor.model.readings import short_label

# Trend traces, in the fixed order the browser's extendData batches rely on.
TREND_TRACES: tuple[tuple[str, int], ...] = (
    ("hr", 1), ("spo2", 2), ("sbp", 3), ("dbp", 3), ("map", 3), ("rr", 4),
)
TREND_ROWS = ("HR /min", "SpO2 %", "BP mmHg", "RR /min")
LIMIT_LABEL_AT = {"sbp": "left", "dbp": "center", "map": "right"}  # where a limit line's label sits
TECH_COLOR = "#7f8c8d"  # technical alarm episodes: a grey strip (as the review chart), not a band
TECH_STRIP = 0.02
NIBP_METRICS = frozenset({"sbp", "dbp", "map"})
DEFAULT_NIBP_CYCLE_S = 300.0
NIBP_GRACE_S = 60.0  # a BP is "fresh" for one cycle plus a measurement's duration
PRIORITY_COLORS = {"high": "#d32f2f", "medium": "#f9a825", "low": "#00acc1"}
TRACE_COLORS = {"hr": "#2e7d32", "spo2": "#1565c0", "sbp": "#c62828", "dbp": "#ef6c00",
                "map": "#6a1b9a", "rr": "#00838f"}
WINDOWS_MIN = (15, 30, 60, 120)  # plus "session" (whole session)
MAX_TREND_POINTS = 1500  # per trace: older history is thinned to keep redraws cheap


def stale_after_s(metric: str, nibp_cycle_s: float | None, stale_s: float) -> float:
    """How old a metric's value may be before it looks stale: BP by its NIBP cycle."""
    if metric in NIBP_METRICS:
        return (nibp_cycle_s or DEFAULT_NIBP_CYCLE_S) + NIBP_GRACE_S
    return stale_s


def fmt_age(age_s: float) -> str:
    """"4 s", "3 min", "2 h" — a value's age for a tile."""
    if age_s < 0:
        age_s = 0
    if age_s < 90:
        return f"{int(age_s)} s"
    if age_s < 90 * 60:
        return f"{int(age_s // 60)} min"
    return f"{int(age_s // 3600)} h"


def fmt_value(metric: str, v: float | None) -> str:
    """A value as the tile shows it ("--" when absent)."""
    if v is None:
        return "--"
    return f"{v:.1f}" if metric == "temp" else f"{v:.0f}"


def highest_priority(alerts: Iterable[Mapping[str, Any]]) -> str | None:
    """The highest priority among active alerts (high > medium > low), or None."""
    best = None
    for a in alerts:
        p = a.get("priority")
        if p == "high":
            return "high"
        if p == "medium" or (p == "low" and best is None):
            best = p
    return best


def sparkline_points(history: Sequence[tuple[int, str, Mapping[str, float], Sequence[str]]],
                     metric: str, bucket_s: float = 10) -> list[list[float]]:
    """[[ts_ms, value], …] of one metric, one mean per bucket (for a 15-min sparkline)."""
    buckets: dict[int, list[float]] = {}
    bucket_ms = int(bucket_s * 1000)
    for ts, _dev, values, _flags in history:
        if metric in values:
            buckets.setdefault(ts // bucket_ms, []).append(values[metric])
    return [[b * bucket_ms + bucket_ms // 2, round(sum(v) / len(v), 1)] for b, v in sorted(buckets.items())]


def thin(points: list[tuple[int, float]], max_points: int) -> list[tuple[int, float]]:
    """Keep at most `max_points` by taking every n-th point (the newest is always kept)."""
    if len(points) <= max_points:
        return points
    step = -(-len(points) // max_points)
    out = points[::-1][::step][::-1]
    return out


def alert_episodes(events: Iterable[Mapping[str, Any]], now_ms: int) -> list[dict[str, Any]]:
    """Alert episodes from alert events: {alert, metric, priority, start_ms, end_ms}.

    An episode runs from `raised` to `cleared` or `reset`; one still open ends at `now_ms`.
    Reminders are not episodes of a vital and are left out; `kind` says physiological or
    technical (drawn differently: a technical one is a grey strip, not a shaded band).
    """
    open_: dict[str, dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    for e in events:
        aid = e.get("alert")
        if not aid or e.get("kind") == "reminder":
            continue
        ev = e.get("event")
        ts = int(e.get("ts") or 0)
        if ev == "raised":
            open_[aid] = {"alert": aid, "metric": e.get("metric") or "", "priority": e.get("priority") or "low",
                          "start_ms": ts, "end_ms": None, "message": e.get("message", ""),
                          "kind": e.get("kind") or "physiological"}
        elif ev in ("cleared", "reset") and aid in open_:
            ep = open_.pop(aid)
            ep["end_ms"] = ts
            done.append(ep)
    for ep in open_.values():
        ep["end_ms"] = now_ms
        done.append(ep)
    return sorted(done, key=lambda e: e["start_ms"])


def tz_shift_ms(timezone: str, at_ms: int) -> int:
    """Offset of the clinic's zone from UTC at `at_ms`: added to ms so date axes read local time."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    off = datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(ZoneInfo(timezone)).utcoffset()
    return int(off.total_seconds() * 1000) if off else 0


def _metric_row(metric: str) -> int:
    for m, row in TREND_TRACES:
        if m == metric:
            return row
    return 0


def trend_figure(
    history: Sequence[tuple[int, str, Mapping[str, float], Sequence[str]]],
    limits: Mapping[str, Mapping[str, Any]],
    session_events: Sequence[Mapping[str, Any]],
    episodes: Sequence[Mapping[str, Any]],
    start_ms: int,
    end_ms: int,
    uirevision: str,
    shift_ms: int = 0,
) -> go.Figure:
    """The room's trend: one row per vital, limit lines, dose/BP markers, shaded episodes.

    Traces are in TREND_TRACES order (always all of them, empty when absent) so live batches
    can extend them by index. Times are ms since epoch plus `shift_ms` (the clinic's UTC
    offset, see tz_shift_ms) on a date axis, so the axis reads clinic-local time.
    """
    fig = make_subplots(rows=len(TREND_ROWS), cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        subplot_titles=None)
    for metric, row in TREND_TRACES:
        pts = [(ts, v[metric]) for ts, _d, v, _f in history if metric in v]
        pts = thin(pts, MAX_TREND_POINTS)
        mode = "lines+markers" if metric in NIBP_METRICS else "lines"
        fig.add_trace(go.Scatter(x=[p[0] + shift_ms for p in pts], y=[p[1] for p in pts], name=short_label(metric),
                                 mode=mode, line={"color": TRACE_COLORS[metric], "width": 1.5},
                                 marker={"size": 5}, hoverinfo="x+y+name"), row=row, col=1)
    # threshold lines: labels "SBP high 180", placed apart where a row has several metrics
    # (BP: SBP left, DBP middle, MAP right; high above its line, low below) so none overlaps
    for metric, spec in limits.items():
        row = _metric_row(metric)
        if not row:
            continue
        where = LIMIT_LABEL_AT.get(metric, "left")
        for side in ("low", "high"):
            y = spec.get(side)
            if y is None:
                continue
            vert = "top" if side == "high" else "bottom"
            fig.add_hline(y=y, row=row, col=1, line={"color": TRACE_COLORS.get(metric, "#555"),
                                                       "dash": "dash", "width": 1},
                          annotation_text=f"{short_label(metric)} {side} {y:g}",
                          annotation_position=vert if where == "center" else f"{vert} {where}",
                          annotation_font_size=10, annotation_font_color=TRACE_COLORS.get(metric, "#555"),
                          name=f"limit-{metric}-{side}")
    # alert episodes: physiological ones shaded in the metric's row; technical ones (device
    # offline, sensor off: the monitoring, not the patient) a grey strip along the bottom, as
    # on the review chart
    for ep in episodes:
        x0, x1 = ep["start_ms"] + shift_ms, max(ep["end_ms"], ep["start_ms"] + 1000) + shift_ms
        if ep.get("kind") == "technical":
            fig.add_shape(type="rect", xref="x", yref="paper", x0=x0, x1=x1, y0=0, y1=TECH_STRIP,
                          fillcolor=TECH_COLOR, opacity=0.55, line_width=0, layer="below",
                          name=f"episode-{ep.get('alert')}")
            continue
        row = _metric_row(ep.get("metric", ""))
        kw: dict[str, Any] = {"row": row, "col": 1} if row else {"row": "all", "col": 1}
        fig.add_vrect(x0=x0, x1=x1, fillcolor=PRIORITY_COLORS.get(ep.get("priority", "low"), "#999"), opacity=0.18,
                      line_width=0, layer="below", name=f"episode-{ep.get('alert')}", **kw)
    # dose and BP-check markers across all rows
    for e in session_events:
        t = e.get("type")
        if t not in ("dose", "bp"):
            continue
        ts = int(e["ts"]) + shift_ms
        fig.add_vline(x=ts, line={"color": "#37474f" if t == "dose" else "#8d6e63",
                                  "dash": "solid" if t == "dose" else "dot", "width": 1.5},
                      name=f"marker-{t}")
        label = "dose" + (f" {e['dose_mg']:g} mg" if e.get("dose_mg") else "") if t == "dose" \
            else f"BP {e.get('sbp', '?')}/{e.get('dbp', '?')}"
        fig.add_annotation(x=ts, y=1.0, yref="paper", text=label, showarrow=False, yanchor="bottom",
                           font={"size": 10}, name=f"marker-{t}")
    for i, title in enumerate(TREND_ROWS, start=1):
        fig.update_yaxes(title_text=title, row=i, col=1, title_font_size=11)
    fig.update_xaxes(type="date", range=[start_ms + shift_ms, end_ms + shift_ms])
    fig.update_layout(uirevision=uirevision, height=640, margin={"l": 60, "r": 20, "t": 30, "b": 30},
                      showlegend=True, legend={"orientation": "h", "y": 1.06, "x": 0},
                      plot_bgcolor="#fafafa", paper_bgcolor="white", hovermode="x unified")
    return fig
