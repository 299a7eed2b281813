"""Pure review computations: tables for limits, baseline, episodes, REMS values, reduction."""

from __future__ import annotations

import pytest

from monitor.sessions import review
from monitor.sessions.review import SessionRecord
from monitor.sessions.review_figure import build_figure, reduce_series

MIN = 60_000
IDX = {m: i for i, m in enumerate(review.READING_METRICS)}


def row(ts: int, dev: str = "d", **values: float) -> tuple:
    vals = [None] * len(review.READING_METRICS)
    for m, v in values.items():
        vals[IDX[m]] = v
    return (ts, dev, None, tuple(vals))


def record(readings, events=(), alerts=(), start=0, end=10 * MIN, dose=None, limits=None) -> SessionRecord:
    header = {"id": "s1", "room": "room-1", "patient": "P", "started_ms": start, "ended_ms": end,
              "first_dose_ms": dose}
    return SessionRecord(header=header, events=list(events), readings=list(readings),
                         alert_events=list(alerts), base_limits=limits or {"sbp": {"low": 90, "high": 180}})


@pytest.mark.parametrize("ts,vs,limits,end,expected", [
    ([0, 1000, 2000, 3000], [100, 190, 190, 100], [(0, 90, 180)], 4000, (0.0, 2.0)),
    ([0, 1000, 2000], [80, 80, 100], [(0, 90, 180)], 3000, (2.0, 0.0)),
    # a 10-min device gap is not counted beyond the hold cap (5 × median interval, ≥ 10 s)
    ([0, 1000, 2000, 602000], [190, 190, 190, 100], [(0, 90, 180)], 603000, (0.0, 12.0)),
    # a session override raises the limit at t=2000: later samples are inside
    ([0, 1000, 2000, 3000], [190, 190, 190, 190], [(0, 90, 180), (2000, 90, 200)], 4000, (0.0, 2.0)),
    ([], [], [(0, 90, 180)], 1000, (0.0, 0.0)),
])
def test_time_outside(ts, vs, limits, end, expected):
    assert review.time_outside(ts, vs, limits, end) == expected


def test_baseline_pre_dose_else_first_minutes():
    rs = [row(t * MIN, sbp=v) for t, v in [(0, 120), (1, 124), (2, 130), (6, 170), (8, 150)]]
    pre = review.vital_stats(record(rs, dose=3 * MIN))["sbp"]
    assert pre["baseline"] == 124 and pre["baseline_method"].startswith("pre-dose")
    first = review.vital_stats(record(rs, dose=None))["sbp"]
    assert first["baseline"] == 124 and first["baseline_method"].startswith("first 5 min")
    assert (pre["min"], pre["max"], pre["max_ts"]) == (120, 170, 6 * MIN)


def test_limit_events_apply_from_their_time():
    rs = [row(t * 1000, sbp=190) for t in range(4)]
    ev = [{"type": "limit", "ts": 2000, "metric": "sbp", "limit": {"high": 200}, "user": "a"}]
    st = review.vital_stats(record(rs, events=ev, end=4000))["sbp"]
    assert st["above_s"] == 2.0


def test_episodes_and_ack_times():
    al = [
        {"ts": 1000, "alert": "a", "event": "raised", "priority": "high", "kind": "physiological", "metric": "sbp"},
        {"ts": 2000, "alert": "b", "event": "raised", "priority": "medium", "kind": "physiological", "metric": "hr"},
        {"ts": 31000, "alert": "a", "event": "acknowledged", "user": "amy", "priority": "high"},
        {"ts": 12000, "alert": "b", "event": "acknowledged", "user": "bob", "priority": "medium"},
        {"ts": 60000, "alert": "a", "event": "cleared", "priority": "high"},
        {"ts": 5000, "alert": "c", "event": "raised", "priority": "low", "kind": "technical"},
    ]
    eps = review.episodes(record([], alerts=al))
    assert [(e["alert"], e["ack_s"], e["acknowledged_by"]) for e in eps] == [
        ("a", 30.0, "amy"), ("b", 10.0, "bob"), ("c", None, None)]
    s = review.alert_summary(eps)
    phys, tech = s["physiological"], s["technical"]
    assert phys["by_priority"] == {"high": 1, "medium": 1, "low": 0}
    assert phys["median_ack_s"] == 20.0 and phys["unacknowledged"] == 0
    assert tech["by_priority"] == {"high": 0, "medium": 0, "low": 1} and tech["unacknowledged"] == 1
    assert eps[0]["cleared_ms"] == 60000


def test_rems_values():
    dose = 10 * MIN
    rs = [row(5 * MIN, dev="nibp", sbp=130, dbp=82), row(35 * MIN, dev="nibp", sbp=160, dbp=95),
          row(49 * MIN, dev="nibp", sbp=170, dbp=99), row(125 * MIN, dev="nibp", sbp=135, dbp=84)]
    ev = [{"type": "bp", "ts": 9 * MIN, "sbp": 128, "dbp": 80, "user": "a"},
          {"type": "observe", "ts": 100 * MIN, "observation": "ready_to_leave", "user": "a"},
          {"type": "observe", "ts": 30 * MIN, "observation": "nausea", "user": "a"}]
    r = review.rems_values(record(rs, events=ev, dose=dose, end=130 * MIN))
    assert (r["bp_pre"]["sbp"], r["bp_pre"]["source"]) == (128, "manual")
    assert (r["bp_40"]["sbp"], r["bp_40"]["min_after_dose"]) == (170, 39.0)  # 49 min is closer to 50
    assert r["bp_end"]["sbp"] == 135
    assert r["total_monitored_min"] == 120 and r["session_min"] == 130 and r["ready_min"] == 90
    assert r["observations"]["nausea"] == {"occurred": True, "first_min": 20.0}
    assert r["observations"]["sedation"]["occurred"] is False
    none = review.rems_values(record(rs[:1], dose=None))
    assert none["bp_pre"] is None and none["bp_40"] is None and none["total_monitored_min"] == 10


def test_reduce_series_keeps_extremes_and_breaks_gaps():
    ts = list(range(0, 20000 * 1000, 1000))
    vs = [100.0] * len(ts)
    vs[12345] = 250.0
    vs[777] = 20.0
    rt, rv = reduce_series(ts, vs, max_points=1000)
    assert len(rt) <= 1100 and 250.0 in rv and 20.0 in rv
    rt, rv = reduce_series([0, 1000, 2000, 900000, 901000], [1, 2, 3, 4, 5])
    assert rt == [0, 1000, 2000, None, 900000, 901000]


def test_figure_has_every_vital_doses_and_episodes():
    rs = [row(t * 1000, dev="oxi", hr=70 + t % 5, spo2=97) for t in range(600)]
    rs += [row(t * 60_000, dev="nibp", sbp=190 if t == 5 else 130, dbp=80, map=97) for t in range(10)]
    rs.sort(key=lambda r: r[0])
    ev = [{"type": "dose", "ts": 60_000, "dose_mg": 56.0, "user": "a"},
          {"type": "note", "ts": 120_000, "text": "calm", "user": "a"}]
    al = [{"ts": 300_000, "alert": "x", "event": "raised", "priority": "high", "metric": "sbp", "value": "190"}]
    rec = record(rs, events=ev, alerts=al, dose=60_000)
    fig = build_figure(rec, review.summarize(rec))
    names = {t.name for t in fig.data}
    assert {"SBP", "DBP", "MAP", "HR", "SpO2"} <= names
    assert any(a.text == "dose 56 mg" for a in fig.layout.annotations)
    assert any(s.type == "rect" for s in fig.layout.shapes)
