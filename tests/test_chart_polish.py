"""Room and review charts that read right (issue 14 item 8): limit labels "SBP high 180" placed
apart, "SpO2" never "SPO2", technical alarms a grey strip on both charts, two alert labels never
drawn over each other nor over a line, a 0.1 °C temperature wobble not stretched into a swing, markers off the
axis edges."""

from __future__ import annotations

from dashboard.figures import alert_episodes, trend_figure
from monitor.sessions import review
from monitor.sessions.review import READING_METRICS, SessionRecord
from monitor.sessions.review_figure import ALERT_LABEL, LABEL_FONT_PX, build_figure

T0 = 1_795_813_200_000


def test_room_trend_labels_names_and_technical_strip() -> None:
    limits = {"sbp": {"low": 90, "high": 180}, "dbp": {"low": 50, "high": 110}, "map": {"low": 60, "high": 130},
              "spo2": {"low": 90}}
    events = [{"ts": T0, "alert": "a", "event": "raised", "kind": "technical", "priority": "medium", "dev": "oxi-1"},
              {"ts": T0 + 60_000, "alert": "a", "event": "cleared"},
              {"ts": T0, "alert": "b", "event": "raised", "kind": "physiological", "priority": "high", "metric": "sbp"}]
    eps = alert_episodes(events, T0 + 120_000)
    fig = trend_figure([(T0, "oxi-1", {"spo2": 97.0, "hr": 70.0}, [])], limits, [], eps, T0, T0 + 120_000, "u")
    texts = {a.text: a for a in fig.layout.annotations}
    assert {"SBP high 180", "DBP low 50", "MAP low 60", "SpO2 low 90"} <= set(texts)
    assert not any(t.startswith(("sbp", "map", "dbp")) for t in texts)  # no lowercase keys
    # the BP row's labels sit at three different places: none over another
    spots = {(round(texts[f"{m} low {v}"].x, 3), texts[f"{m} low {v}"].xanchor)
             for m, v in (("SBP", 90), ("DBP", 50), ("MAP", 60))}
    assert len(spots) == 3
    assert [t.name for t in fig.data] == ["HR", "SpO2", "SBP", "DBP", "MAP", "RR"]
    tech = [s for s in fig.layout.shapes if s.name == "episode-a"]
    assert len(tech) == 1 and tech[0].yref == "paper" and tech[0].y1 <= 0.05 and tech[0].fillcolor == "#7f8c8d"
    phys = [s for s in fig.layout.shapes if s.name == "episode-b"]
    assert phys and phys[0].fillcolor == "#d32f2f"


def _row(ts: int, dev: str, **vals: float) -> tuple:
    return (ts, dev, None, tuple(vals.get(m) for m in READING_METRICS))


def test_review_chart_temperature_span_labels_apart_and_edges() -> None:
    readings = [_row(t * 1000, "mon", hr=75, spo2=97, temp=36.6 + (t % 2) * 0.1) for t in range(0, 1800, 10)]
    alerts = [{"ts": 600_000, "alert": "m1", "event": "raised", "kind": "physiological", "priority": "medium",
               "metric": "hr", "value": "125"},
              {"ts": 630_000, "alert": "m2", "event": "raised", "kind": "physiological", "priority": "medium",
               "metric": "hr", "value": "126"}]
    rec = SessionRecord(header={"id": "s", "room": "room-1", "started_ms": 0, "ended_ms": 1_800_000},
                        events=[], readings=readings, alert_events=alerts)
    fig = build_figure(rec, review.summarize(rec))
    temp_axis = next(ax for name, ax in fig.layout.to_plotly_json().items()
                     if name.startswith("yaxis") and "Temp" in str(ax.get("title", {}).get("text", "")))
    lo, hi = temp_axis["range"]
    assert hi - lo >= 2.0  # 36.6 ↔ 36.7 stays a flat line
    labelled = [a for a in fig.layout.annotations if a.name == ALERT_LABEL]
    assert len(labelled) == 1  # the second MEDIUM, 30 s later, is a marker without a second label
    x0, x1 = fig.layout.xaxis.range
    assert str(x0) < "1970-01-01 00:00:00" and str(x1) > "1970-01-01 00:30:00"  # padded at both edges


def test_total_minutes_monitored_is_whole_minutes() -> None:
    rec = SessionRecord(header={"id": "s", "room": "room-1", "started_ms": 0, "ended_ms": 324_000,
                                "first_dose_ms": 0}, events=[], readings=[], alert_events=[])
    assert review.summarize(rec)["rems"]["total_monitored_min"] == 5


def test_alert_priority_label_sits_above_every_line_of_its_panel() -> None:
    """The "MEDIUM" of an alert marker is at its panel's top edge, straight above the marker, in
    the headroom above every line. (Drawn as the marker's own text it lay over the HR line,
    which passes through the marker.)"""
    readings = [_row(t * 1000, "mon", hr=125 if 590 <= t <= 700 else 80, spo2=97) for t in range(0, 1800, 10)]
    alerts = [{"ts": 600_000, "alert": "m1", "event": "raised", "kind": "physiological", "priority": "medium",
               "metric": "hr", "value": "125"}]
    rec = SessionRecord(header={"id": "s", "room": "room-1", "started_ms": 0, "ended_ms": 1_800_000},
                        events=[], readings=readings, alert_events=alerts)
    fig = build_figure(rec, review.summarize(rec))
    (label,) = [a for a in fig.layout.annotations if a.name == ALERT_LABEL]
    (marker,) = [t for t in fig.data if t.name == "alert"]
    assert label.text == "MEDIUM" and marker.mode == "markers" and label.x == marker.x[0]
    assert (label.y, label.yanchor) == (1, "top")
    axis_ref = label.yref.split()[0]  # "y domain" → the HR panel's axis "y"
    axis = fig.layout["yaxis" + axis_ref[1:]]
    lo, hi = axis.range
    plot_px = (fig.layout.height - fig.layout.margin.t - fig.layout.margin.b) * (axis.domain[1] - axis.domain[0])
    label_bottom = hi - (hi - lo) * (LABEL_FONT_PX * 1.5) / plot_px  # one line of text, in data units
    drawn = [y for t in fig.data if (t.yaxis or "y") == axis_ref for y in (t.y or ()) if y is not None]
    assert max(drawn) == 125 and label_bottom > max(drawn)
