"""The review chart (pure: SessionRecord + summary → plotly Figure), for page, PNG and PDF.

Every vital on one shared time axis (one panel per kind of vital), the alarm limits in
force as dashed steps, dose markers, alert episodes as shaded spans (technical ones as a grey
strip; a clinic-wide outage — ingest down, readings not stored — as a full-height "not
monitoring" band) with who acknowledged
and how fast, manual BP checks and notes. Long series are reduced to at most `max_points`
per trace by keeping each bucket's min and max (extremes survive), and lines break where
a device was silent so a gap never looks like data.
"""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from monitor.model.readings import short_label
from monitor.sessions.review import (
    READING_METRICS,
    SessionRecord,
    fmt_duration,
    limit_timeline,
    series,
)

PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("BP mmHg", ("sbp", "dbp", "map")),
    (f"{short_label('hr')} /min", ("hr",)),
    (f"{short_label('spo2')} %", ("spo2",)),
    (f"{short_label('rr')} /min", ("rr",)),
    (f"{short_label('temp')} °C", ("temp",)),
    (f"{short_label('pi')} %", ("pi",)),
)
HEADROOM = 0.25  # fraction of a panel's span added above its top marker: the alert labels' band
ALERT_LABEL = "alert label"  # name of the annotations that say an alert marker's priority
LABEL_FONT_PX = 10
COLORS = {"sbp": "#c0392b", "dbp": "#e67e22", "map": "#8e44ad", "hr": "#27ae60", "spo2": "#2980b9",
          "rr": "#16a085", "temp": "#7f8c8d", "pi": "#34495e"}
PRIORITY_COLORS = {"high": "#e74c3c", "medium": "#f1c40f", "low": "#1abc9c"}
NOT_MONITORING = "not monitoring"  # label of a clinic-wide outage's band
TECH_COLOR = "#7f8c8d"  # technical alarm episodes: a grey strip, not a full-height shade
TECH_STRIP = 0.025  # its height, as a fraction of the chart
MAX_POINTS = 3000
MIN_SPAN = {"temp": 2.0}  # a panel's least y span: 0.1 °C must not look like a swing
LABEL_GAP = 0.04  # alert markers closer than this share of the session carry no second label
EDGE_PAD = 0.015  # x-axis padding, so a marker at the very start or end does not sit on a tick label


def to_local(ts_ms: int, tz: ZoneInfo) -> datetime:
    """ms since epoch → naive local datetime in the clinic's zone (what the axis shows)."""
    return datetime.fromtimestamp(ts_ms / 1000, tz).replace(tzinfo=None)


def reduce_series(ts: list[int], vs: list[float], max_points: int = MAX_POINTS) -> tuple[list[int | None], list[float | None]]:
    """Min/max-per-bucket reduction with None breaks at gaps (> 5 × median interval)."""
    if len(ts) < 2:
        return list(ts), list(vs)
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False) if b > a]
    gap_ms = max(5 * statistics.median(gaps), 10_000) if gaps else 10_000
    idx: list[int]
    if len(ts) > max_points:
        size = (2 * len(ts)) // max_points + 1
        idx = []
        for start in range(0, len(ts), size):
            chunk = range(start, min(start + size, len(ts)))
            lo = min(chunk, key=vs.__getitem__)
            hi = max(chunk, key=vs.__getitem__)
            idx.extend(sorted({lo, hi}))
    else:
        idx = list(range(len(ts)))
    out_t: list[int | None] = []
    out_v: list[float | None] = []
    prev = None
    for i in idx:
        if prev is not None and ts[i] - prev > gap_ms:
            out_t.append(None)
            out_v.append(None)
        out_t.append(ts[i])
        out_v.append(vs[i])
        prev = ts[i]
    return out_t, out_v


def build_figure(rec: SessionRecord, summary: dict[str, Any], tz_name: str = "UTC",
                 max_points: int = MAX_POINTS, height_px: int | None = None) -> go.Figure:
    """The session chart on one time axis (see module docstring)."""
    tz = ZoneInfo(tz_name)
    present = {m for m in READING_METRICS if m in summary["vitals"]}
    panels = [(title, [m for m in ms if m in present]) for title, ms in PANELS]
    panels = [(t, ms) for t, ms in panels if ms] or [("BP mmHg", ["sbp"])]
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        subplot_titles=None)
    loc = lambda t: to_local(t, tz) if t is not None else None  # noqa: E731
    limits = limit_timeline(rec)
    end_ms = rec.end_ms
    row_of: dict[str, int] = {}
    span: dict[int, list[float]] = {}  # row → every y drawn there (data, limits, markers)
    for row, (title, metrics) in enumerate(panels, start=1):
        for m in metrics:
            row_of[m] = row
            ts, vs = series(rec, m)
            rt, rv = reduce_series(ts, vs, max_points)
            span.setdefault(row, []).extend(vs)
            fig.add_trace(go.Scatter(x=[loc(t) for t in rt], y=rv, name=short_label(m), mode="lines+markers"
                                     if len(ts) < 200 else "lines", line={"color": COLORS[m], "width": 1.5},
                                     marker={"size": 5}, connectgaps=False), row=row, col=1)
            for bound, idx in (("low", 1), ("high", 2)):
                xs: list[datetime | None] = []
                ys: list[float | None] = []
                segs = limits[m]
                for k, seg in enumerate(segs):
                    seg_end = segs[k + 1][0] if k + 1 < len(segs) else end_ms
                    value = seg[idx]
                    xs += [loc(seg[0]), loc(seg_end)]
                    ys += [value, value]
                if any(v is not None for v in ys):
                    span.setdefault(row, []).extend(v for v in ys if v is not None)
                    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{m} {bound} limit",
                                             line={"color": COLORS[m], "dash": "dash", "width": 1},
                                             opacity=0.6, showlegend=False, hoverinfo="skip"),
                                  row=row, col=1)
        fig.update_yaxes(title_text=title, row=row, col=1)
    if "sbp" in row_of:
        manual = [e for e in rec.events if e["type"] == "bp"]
        if manual:
            fig.add_trace(go.Scatter(
                x=[loc(e["ts"]) for e in manual] * 2, y=[e["sbp"] for e in manual] + [e["dbp"] for e in manual],
                mode="markers", name="manual BP", marker={"symbol": "diamond", "size": 9, "color": "black"},
                text=[f"manual BP {e['sbp']}/{e['dbp']} by {e['user']}" for e in manual] * 2,
                hoverinfo="text+x"), row=row_of["sbp"], col=1)
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    marked: dict[int, list[float]] = {}  # row → y of the alert markers (label drawn above them)
    labelled: dict[int, int] = {}  # row → x (ms) of the last marker that got a text label
    gap_ms = max(1, end_ms - rec.start_ms) * LABEL_GAP
    for ep in sorted(summary["episodes"], key=lambda e: e["raised_ms"]):
        if ep["kind"] == "reminder":
            # workflow reminders (e.g. "minimum observation", which spans the whole session)
            # are not alarm conditions: shading them would tint the chart as if in alarm.
            # They stay in the alert log and counts.
            continue
        x0 = ep["raised_ms"]
        x1 = ep["cleared_ms"] or end_ms
        color = PRIORITY_COLORS.get(ep["priority"] or "", "#95a5a6")
        if ep.get("clinic_wide"):
            # a clinic-wide outage (ingest down, readings not stored, engine not evaluating):
            # nothing was monitored, so the band spans the whole chart, hatched, and says so
            b0 = max(x0, rec.start_ms)  # it may have begun before the session: clip to the chart
            shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": loc(b0),
                           "x1": loc(max(x1, b0 + 1000)), "y0": 0, "y1": 1, "fillcolor": TECH_COLOR,
                           "opacity": 0.3, "line": {"width": 0}, "layer": "below", "name": NOT_MONITORING})
            annotations.append({"x": loc(b0), "y": 1, "xref": "x", "yref": "paper", "xanchor": "left",
                                "yanchor": "bottom", "showarrow": False, "text": NOT_MONITORING,
                                "font": {"size": 10, "color": "#555"}})
        elif ep["kind"] == "technical":
            # monitoring trouble (device offline, sensor off), not the patient: a grey strip
            # along the bottom, so a long technical episode never tints the vitals as alarm
            shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": loc(x0),
                           "x1": loc(max(x1, x0 + 1000)), "y0": 0, "y1": TECH_STRIP, "fillcolor": TECH_COLOR,
                           "opacity": 0.55, "line": {"width": 0}, "layer": "below"})
        else:
            shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": loc(x0),
                           "x1": loc(max(x1, x0 + 1000)), "y0": 0, "y1": 1, "fillcolor": color, "opacity": 0.18,
                           "line": {"width": 0}, "layer": "below"})
        ack = (f"ack {ep['acknowledged_by']} after {fmt_duration(ep['ack_s'])}" if ep["ack_s"] is not None
               else "not acknowledged")
        row = row_of.get(ep["metric"] or "", 1)
        yval = _num(ep.get("value"))
        if yval is not None:
            marked.setdefault(row, []).append(yval)
        # one label per neighbourhood: two "MEDIUM" a minute apart were drawn over each other
        crowded = row in labelled and x0 - labelled[row] < gap_ms
        if not crowded:
            labelled[row] = x0
        fig.add_trace(go.Scatter(
            x=[loc(x0)], y=[yval], mode="markers", cliponaxis=False,
            marker={"symbol": "triangle-up", "size": 12, "color": color, "line": {"color": "black", "width": 1}},
            hovertext=[f"{ep['message'] or ep['metric']} — {ack}"], hoverinfo="text", showlegend=False,
            name="alert"), row=row, col=1)
        if not crowded and yval is not None:
            # the priority word at the panel's top edge, straight above its marker: in the
            # headroom kept clear of every line (HEADROOM). Drawn as the marker's text it lay
            # over the vital's own line, which passes through the marker.
            annotations.append({"x": loc(x0), "y": 1, "xref": "x", "yref": f"{_yaxis(row)} domain",
                                "xanchor": "center", "yanchor": "top", "showarrow": False,
                                "text": (ep["priority"] or "").upper(), "name": ALERT_LABEL,
                                "font": {"size": LABEL_FONT_PX, "color": "#263238"}})
    for e in summary["doses"]:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": loc(e["ts"]), "x1": loc(e["ts"]),
                       "y0": 0, "y1": 1, "line": {"color": "#2c3e50", "width": 2, "dash": "dot"}})
        annotations.append({"x": loc(e["ts"]), "y": 1.0, "xref": "x", "yref": "paper", "yanchor": "bottom",
                            "showarrow": False, "text": f"dose{' ' + _fmt_mg(e.get('dose_mg')) if e.get('dose_mg') else ''}",
                            "font": {"size": 11}})
    for e in rec.events:
        if e["type"] in ("note", "observe", "addendum"):
            label = e.get("text") or (e.get("observation") or "").replace("_", " ")
            annotations.append({"x": loc(e["ts"]), "y": 0, "xref": "x", "yref": "paper", "yanchor": "top",
                                "showarrow": False, "text": "✎" if e["type"] != "observe" else "●",
                                "hovertext": f"{e['type']}: {label} ({e['user']})", "font": {"size": 12}})
    fig.update_layout(
        shapes=shapes, annotations=annotations, template="plotly_white",
        height=height_px or 160 + 170 * len(panels), margin={"l": 60, "r": 20, "t": 40, "b": 40},
        legend={"orientation": "h", "y": 1.08, "x": 0}, hovermode="closest", uirevision=rec.header.get("id"),
    )
    edge = int((end_ms - rec.start_ms) * EDGE_PAD)
    fig.update_xaxes(range=[loc(rec.start_ms - edge), loc(end_ms + edge)])
    for row, (_title, metrics) in enumerate(panels, start=1):
        least = max((MIN_SPAN.get(m, 0.0) for m in metrics), default=0.0)
        values = span.get(row, [])
        if least and values and max(values) - min(values) < least and row not in marked:
            mid = (max(values) + min(values)) / 2
            fig.update_yaxes(range=[mid - least / 2, mid + least / 2], row=row, col=1)
    for row, tops in marked.items():
        # headroom above the panel's highest line or marker: the alert labels sit in it, at
        # the panel's top edge, never over a line
        values = span.get(row, []) + tops
        lo, hi = min(values), max(values)
        pad = (hi - lo) * HEADROOM or max(abs(hi) * HEADROOM, 1.0)
        fig.update_yaxes(range=[lo - pad / 3, hi + pad], row=row, col=1)
    return fig


def _yaxis(row: int) -> str:
    """The y axis of subplot `row` as a reference: "y", "y2", …"""
    return "y" if row == 1 else f"y{row}"


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _fmt_mg(v: Any) -> str:
    f = _num(v)
    return "" if f is None else (f"{int(f)} mg" if f.is_integer() else f"{f:g} mg")
