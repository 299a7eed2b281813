"""Pure figure builders for the director's pages: a patient's course (small multiples) and the
quality report's charts. Input: session summaries (monitor/sessions/quality.py) and report
totals; output: plotly figures. No I/O.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from monitor.sessions.quality import PRIORITIES, SURGE_DBP, SURGE_SBP

PRIORITY_COLORS = {"high": "#d32f2f", "medium": "#f9a825", "low": "#00acc1"}
SBP_COLOR, DBP_COLOR, HR_COLOR, SPO2_COLOR, READY_COLOR = "#c62828", "#ef6c00", "#2e7d32", "#1565c0", "#6a1b9a"
GRID_COLS = 5


def _label(s: dict[str, Any], tz: ZoneInfo) -> str:
    day = datetime.fromtimestamp(s["started_ms"] / 1000, tz).strftime("%m-%d")
    dose = f" {s['dose_mg']:g} mg" if s.get("dose_mg") is not None else ""
    return f"#{s['n']} {day}{dose}"


def grid(n: int, cols: int, titles: list[str], hgap: float = 0.04, vgap: float = 0.1,
         shared: bool = False) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A small-multiples layout as a plain dict: axis domains, anchors, panel titles.

    Built by hand rather than with plotly's make_subplots, which takes ~0.5 s for 50 panels;
    this takes microseconds. Returns (layout, [(xref, yref) per panel])."""
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    w = (1 - hgap * (cols - 1)) / cols
    h = (1 - vgap * (rows - 1)) / rows
    layout: dict[str, Any] = {"annotations": []}
    refs = []
    for i in range(n):
        r, c = divmod(i, cols)
        k = "" if i == 0 else str(i + 1)
        x0 = c * (w + hgap)
        y1 = 1 - r * (h + vgap)
        xa: dict[str, Any] = {"domain": [x0, x0 + w], "anchor": f"y{k}"}
        ya: dict[str, Any] = {"domain": [y1 - h, y1], "anchor": f"x{k}"}
        if shared and i:
            xa["matches"], ya["matches"] = "x", "y"
            xa["showticklabels"] = r == rows - 1
            ya["showticklabels"] = c == 0
        layout[f"xaxis{k}"], layout[f"yaxis{k}"] = xa, ya
        layout["annotations"].append({"text": titles[i] if i < len(titles) else "", "x": x0 + w / 2, "y": y1,
                                      "xref": "paper", "yref": "paper", "xanchor": "center", "yanchor": "bottom",
                                      "showarrow": False, "font": {"size": 11}})
        refs.append((f"x{k}", f"y{k}"))
    return layout, refs


def _line(x: list[Any], y: list[Any], ref: tuple[str, str], name: str, color: str, dash: str = "solid",
          size: Any = 6, mode: str = "lines+markers") -> dict[str, Any]:
    return {"type": "scatter", "x": x, "y": y, "xaxis": ref[0], "yaxis": ref[1], "name": name, "mode": mode,
            "showlegend": False, "line": {"color": color, "dash": dash, "width": 1.5},
            "marker": {"size": size, "color": color}, "hovertemplate": f"{name}: %{{y}}<extra>%{{x}}</extra>"}


def course_trends(rows: list[dict[str, Any]], tz_name: str) -> dict[str, Any]:
    """Small multiples across the series: one panel per measure, one point per session.

    Panels: SBP (baseline and peak), DBP (baseline and peak), rise within 90 min of dose
    against the surge thresholds, max HR, min SpO2, minutes until ready to leave. Marker
    size follows the dose, so a response that grows with dose stands out."""
    tz = ZoneInfo(tz_name)
    x = [_label(s, tz) for s in rows]
    doses = [s.get("dose_mg") or 0 for s in rows]
    top = max(doses, default=0) or 1
    size = [8 + 10 * (d / top) for d in doses]
    titles = ["SBP: peak and baseline (mmHg)", "DBP: peak and baseline (mmHg)", "Rise within 90 min of dose (mmHg)",
              "Max HR (/min)", "Min SpO2 (%)", "Minutes until ready to leave"]
    layout, refs = grid(6, 3, titles, hgap=0.06, vgap=0.22)
    data = [
        _line(x, [s["peak_sbp"] for s in rows], refs[0], "peak SBP", SBP_COLOR, size=size),
        _line(x, [s["baseline_sbp"] for s in rows], refs[0], "baseline SBP", SBP_COLOR, "dot"),
        _line(x, [s["peak_dbp"] for s in rows], refs[1], "peak DBP", DBP_COLOR, size=size),
        _line(x, [s["baseline_dbp"] for s in rows], refs[1], "baseline DBP", DBP_COLOR, "dot"),
        _line(x, [s["sbp_rise_90"] for s in rows], refs[2], "SBP rise", SBP_COLOR, size=size),
        _line(x, [s["dbp_rise_90"] for s in rows], refs[2], "DBP rise", DBP_COLOR, size=size),
        _line(x, [s["max_hr"] for s in rows], refs[3], "max HR", HR_COLOR, size=size),
        _line(x, [s["min_spo2"] for s in rows], refs[4], "min SpO2", SPO2_COLOR, size=size),
        _line(x, [s["ready_min"] for s in rows], refs[5], "ready after", READY_COLOR, size=size),
    ]
    xr, yr = refs[2]
    layout["shapes"] = [{"type": "line", "xref": f"{xr} domain", "yref": yr, "x0": 0, "x1": 1, "y0": v, "y1": v,
                         "line": {"color": c, "dash": "dash", "width": 1}}
                        for v, c in ((SURGE_SBP, SBP_COLOR), (SURGE_DBP, DBP_COLOR))]
    for k in list(layout):
        if k.startswith("xaxis"):
            layout[k].update(tickangle=-45, tickfont={"size": 9}, type="category")
    layout.update(height=540, margin={"l": 40, "r": 10, "t": 30, "b": 60}, template=None, uirevision="course",
                  plot_bgcolor="white")
    return {"data": data, "layout": layout}


def course_curves(rows: list[dict[str, Any]], tz_name: str) -> dict[str, Any]:
    """Small multiples, one per session: SBP and DBP against minutes after the dose, shared axes."""
    tz = ZoneInfo(tz_name)
    n = max(len(rows), 1)
    nrows = math.ceil(n / min(GRID_COLS, n))
    layout, refs = grid(n, GRID_COLS, [_label(s, tz) for s in rows], hgap=0.02, vgap=min(0.08, 0.5 / nrows),
                        shared=True)
    data = []
    for s, ref in zip(rows, refs, strict=False):
        curve = s.get("curve") or []
        t = [p[0] for p in curve]
        data.append(_line(t, [p[1] for p in curve], ref, "SBP", SBP_COLOR, mode="lines"))
        data.append(_line(t, [p[2] for p in curve], ref, "DBP", DBP_COLOR, mode="lines"))
    layout.update(height=max(180, 150 * nrows), margin={"l": 40, "r": 10, "t": 30, "b": 30}, uirevision="curves",
                  plot_bgcolor="white")
    return {"data": data, "layout": layout}


def bar(items: list[tuple[str, float]], title: str, color: str = "#1e88e5",
        colors: list[str] | None = None, suffix: str = "") -> dict[str, Any]:
    """A small horizontal bar chart for the report page (a plain figure dict: cheap to build)."""
    labels = [k for k, _ in items][::-1]
    values = [v for _, v in items][::-1]
    return {"data": [{"type": "bar", "orientation": "h", "x": values, "y": labels,
                      "marker": {"color": colors[::-1] if colors else color},
                      "text": [f"{v:g}{suffix}" for v in values], "textposition": "auto",
                      "hovertemplate": "%{y}: %{x}" + suffix + "<extra></extra>"}],
            "layout": {"title": {"text": title, "font": {"size": 13}}, "height": max(160, 40 + 26 * len(items)),
                       "margin": {"l": 10, "r": 10, "t": 36, "b": 20}, "plot_bgcolor": "white",
                       "yaxis": {"automargin": True, "type": "category"}}}


def priority_bar(by_priority: dict[str, int]) -> dict[str, Any]:
    """Physiological alarms by priority, in the alarm colours."""
    return bar([(p, float(by_priority[p])) for p in PRIORITIES], "Physiological alarms by priority",
               colors=[PRIORITY_COLORS[p] for p in PRIORITIES])
