"""A director's findings on a real session's review (pure parts + the archive's list counts).

1. Alert counts mixed workflow reminders ("Minimum observation", "BP check due") and
   self-clearing technical alarms (device offline at start, poor signal) with physiological
   alarms: the summary, "Unacknowledged", the median time to acknowledge and the session
   list's H/M/L columns (and its "had high-priority alerts" filter) all counted them.
2. Cosmetics: "SPO2" labels, one-sided limits printed "90–—", "-0 min" on the REMS line, the
   chart's HIGH label cut off at the top, tty paths wrapping over many lines in the PDF.
3. REMS "BP pre-dose" took the last BP before the dose (an NIBP 30 s later than the nurse's
   manual pre-dose check won); the manual check is preferred within a window.
"""

from __future__ import annotations

import sqlalchemy as sa

from monitor.sessions import archive, review
from monitor.sessions.archive_schema import alert_events, sessions
from monitor.sessions.export import report_rows
from monitor.sessions.review import READING_METRICS, SessionRecord
from monitor.sessions.review_figure import ALERT_LABEL, build_figure
from monitor.sessions.review_list import with_alarm_counts
from tests.archive_fixtures import sqlite_url  # noqa: F401

MIN = 60_000
TTY_MSG = ("oxi-1 offline: could not open port /dev/pts/7: [Errno 2] No such file or directory: "
           "'/dev/pts/7'")


def _row(ts: int, dev: str, **vals: float) -> tuple:
    return (ts, dev, None, tuple(vals.get(m) for m in READING_METRICS))


def _ev(ts, alert, event, kind=None, priority=None, **kw):
    return {"ts": ts, "alert": alert, "event": event, "kind": kind, "priority": priority, **kw}


def _alerts(dose: int, end: int) -> list[dict]:
    """A session's alert stream as the engine writes it: every kind, self-clearing technicals."""
    return [
        # device offline at start: raised by the engine, cleared by itself, nobody acknowledged
        _ev(0, "t1", "raised", "technical", "medium", dev="oxi-1", message=TTY_MSG),
        _ev(20_000, "t1", "cleared", "technical", "medium", dev="oxi-1", message=TTY_MSG + ": resolved"),
        # poor signal, acknowledged after 10 s
        _ev(30 * MIN, "t2", "raised", "technical", "low", dev="oxi-1", message="oxi-1 poor signal"),
        _ev(30 * MIN + 10_000, "t2", "acknowledged", "technical", "low", user="amy"),
        # reminders: BP before dosing (done), 40-min check (done late), observation (open at end)
        _ev(0, "r1", "raised", "reminder", "low", message="BP check due before dosing"),
        _ev(2 * MIN, "r1", "cleared", "reminder", "low", message="BP check due before dosing: resolved"),
        _ev(dose + 30 * MIN, "r2", "raised", "reminder", "low", message="BP check due (40 min after dose)"),
        _ev(dose + 44 * MIN, "r2", "cleared", "reminder", "low",
            message="BP check due (40 min after dose, overdue 4 min): resolved"),
        _ev(dose, "r3", "raised", "reminder", "medium", message="Minimum observation: 120 min remaining"),
        # the physiological alarms: one high acknowledged after 45 s, one medium never acknowledged
        _ev(dose + 38 * MIN, "p1", "raised", "physiological", "high", metric="sbp", value="192",
            message="Systolic BP high 192 > 180"),
        _ev(dose + 38 * MIN + 45_000, "p1", "acknowledged", "physiological", "high", user="amy"),
        _ev(dose + 50 * MIN, "p2", "raised", "physiological", "medium", metric="hr", value="125",
            message="Heart rate high 125 > 120"),
    ]


def _record(events=(), readings=(), dose: int | None = 5 * MIN, end: int = 130 * MIN,
            limits=None) -> SessionRecord:
    return SessionRecord(header={"id": "s1", "room": "room-1", "patient": "P", "started_ms": 0, "ended_ms": end,
                                 "first_dose_ms": dose, "route": "intranasal", "protocol": "esketamine"},
                         events=list(events), readings=list(readings),
                         alert_events=_alerts(dose or 0, end),
                         base_limits=limits or {"sbp": {"low": 90, "high": 180}, "spo2": {"low": 90}})


def test_physiological_technical_and_reminders_counted_apart() -> None:
    s = review.summarize(_record())
    a = s["alerts"]
    phys, tech, rem = a["physiological"], a["technical"], a["reminders"]
    assert phys["by_priority"] == {"high": 1, "medium": 1, "low": 0}
    assert phys["unacknowledged"] == 1 and phys["median_ack_s"] == 45.0
    assert tech["by_priority"] == {"high": 0, "medium": 1, "low": 1}
    assert tech["unacknowledged"] == 1 and tech["median_ack_s"] == 10.0
    assert (rem["total"], rem["completed"], rem["open_at_end"], rem["overdue"]) == (3, 2, 1, 1)
    assert review.fmt_reminders(rem) == "3 (2 completed, 1 open at end; 1 overdue)"
    # the alert log stays complete: every episode of every kind
    assert {e["alert"] for e in s["episodes"]} == {"t1", "t2", "r1", "r2", "r3", "p1", "p2"}
    assert a["total"] == 7


def test_unknown_kind_counts_as_physiological() -> None:
    eps = review.episodes(SessionRecord(header={"started_ms": 0, "ended_ms": 1000}, events=[], readings=[],
                                        alert_events=[_ev(10, "x", "raised", None, "high", metric="spo2")]))
    assert review.alert_summary(eps)["physiological"]["by_priority"]["high"] == 1


def test_report_rows_alert_section_kind_column_and_short_tty_text() -> None:
    rec = _record()
    rows = report_rows(rec, review.summarize(rec), "UTC")
    alerts = dict((r[0].strip(), r[1]) for r in rows["alerts"])
    assert alerts["Physiological alarms"] == "high 1, medium 1, low 0"
    assert alerts["unacknowledged"] == "1" and alerts["median time to acknowledge"] == "45 s"
    assert alerts["Technical alarms"].startswith("high 0, medium 1, low 1")
    assert alerts["Reminders"].startswith("3 (2 completed")
    head, *log = rows["alert_log"]
    assert head[1] == "Kind" and {r[1] for r in log} == {"technical", "reminder", "physiological"}
    tty = next(r for r in log if r[3].startswith("oxi-1 offline"))
    assert "/dev/" not in tty[3] and len(tty[3]) <= 60


def test_vital_labels_and_one_sided_limits() -> None:
    readings = [_row(t * 1000, "oxi", spo2=97, hr=70) for t in range(0, 600, 5)]
    readings += [_row(t * MIN, "nibp", sbp=130, dbp=80) for t in range(10)]
    readings.sort(key=lambda r: r[0])
    rec = _record(readings=readings, end=10 * MIN, limits={"spo2": {"low": 90}, "sbp": {"high": 180}})
    rows = report_rows(rec, review.summarize(rec), "UTC")
    vit = {r[0]: r[-1] for r in rows["vitals"][1:]}
    assert vit == {"HR (beats/min)": "—", "SpO2 (%)": "≥ 90", "SBP (mmHg)": "≤ 180", "DBP (mmHg)": "—"}
    assert review.fmt_limits(90, 180) == "90–180"


def test_short_alert_text_keeps_short_messages() -> None:
    assert review.short_alert_text({"message": "Systolic BP high 192 > 180"}) == "Systolic BP high 192 > 180"
    assert review.short_alert_text({"message": None, "metric": "spo2"}) == "SpO2"
    long = review.short_alert_text({"message": "x " * 80})
    assert len(long) <= 60 and long.endswith("…")


def _bp_rec(manual_min: list[tuple[float, int, int]], nibp_min: list[tuple[float, int, int]],
            dose_min: float = 30, end_min: float = 160) -> SessionRecord:
    ev = [{"type": "bp", "ts": int(t * MIN), "sbp": s, "dbp": d, "user": "amy"} for t, s, d in manual_min]
    rd = [_row(int(t * MIN), "nibp-2", sbp=s, dbp=d) for t, s, d in nibp_min]
    return SessionRecord(header={"id": "s", "started_ms": 0, "ended_ms": int(end_min * MIN),
                                 "first_dose_ms": int(dose_min * MIN)}, events=ev, readings=sorted(rd),
                         alert_events=[])


def test_rems_prefers_the_manual_check_before_dose_and_end() -> None:
    # manual pre-dose check 3 min before dose; the NIBP cycled 30 s later: the manual one counts
    r = review.rems_values(_bp_rec([(27, 126, 78), (150, 132, 84)], [(27.5, 128, 80), (155, 140, 88)]))
    assert (r["bp_pre"]["sbp"], r["bp_pre"]["source"]) == (126, "manual")
    assert review.fmt_bp(r["bp_pre"]) == "126/78 mmHg (manual, -3 min)"
    assert (r["bp_end"]["sbp"], r["bp_end"]["source"]) == (132, "manual")
    # a manual check outside the window (45 min before dose / before end): the latest device BP
    r = review.rems_values(_bp_rec([(0, 126, 78), (60, 150, 90)], [(27.5, 128, 80), (155, 140, 88)],
                                   dose_min=45, end_min=160))
    assert (r["bp_pre"]["sbp"], r["bp_pre"]["source"]) == (128, "nibp-2")
    assert (r["bp_end"]["sbp"], r["bp_end"]["source"]) == (140, "nibp-2")
    # only a manual check long before: still better than nothing
    r = review.rems_values(_bp_rec([(0, 126, 78)], [], dose_min=45))
    assert r["bp_pre"]["source"] == "manual"


def test_rems_bp_within_a_minute_of_dose_is_at_dose_never_minus_zero() -> None:
    r = review.rems_values(_bp_rec([(29.6, 126, 78)], []))
    assert review.fmt_bp(r["bp_pre"]) == "126/78 mmHg (manual, at dose)"
    assert "-0" not in review.fmt_bp(r["bp_pre"])
    assert review.fmt_when(0.0) == "at dose" and review.fmt_when(-1.2) == "-1 min" and review.fmt_when(41) == "+41 min"


def test_chart_high_label_has_headroom_and_is_not_clipped() -> None:
    readings = sorted([_row(t * MIN, "nibp", sbp=192 if t == 5 else 130, dbp=80) for t in range(10)])
    rec = SessionRecord(header={"id": "s", "started_ms": 0, "ended_ms": 10 * MIN}, events=[], readings=readings,
                        alert_events=[_ev(5 * MIN, "p", "raised", "physiological", "high", metric="sbp",
                                          value="192")],
                        base_limits={"sbp": {"low": 90, "high": 180}})
    fig = build_figure(rec, review.summarize(rec))
    marker = next(t for t in fig.data if t.name == "alert")
    label = next(a for a in fig.layout.annotations if a.name == ALERT_LABEL)
    assert label.text == "HIGH" and label.x == marker.x[0] and marker.cliponaxis is False
    lo, hi = fig.layout.yaxis.range
    assert hi >= 192 + 0.2 * (192 - 80)  # room above the top marker for its label


def test_session_list_counts_physiological_alarms_even_for_old_rows(sqlite_url) -> None:  # noqa: F811
    arch = archive.open_archive(sqlite_url)
    rows = []
    with arch.engine.begin() as conn:
        for sid, started, evs in (("old", 1, _alerts(5 * MIN, 130 * MIN)),
                                  ("tech-only", 2, [_ev(0, "t", "raised", "technical", "high")])):
            # as archived before: alerts_* counted every raised episode (3 high incl. technical)
            conn.execute(sessions.insert().values(id=sid, clinic="c", room="room-1", patient="P",
                                                  started_ms=started, state="archived", alerts_high=3,
                                                  alerts_medium=2, alerts_low=2))
            conn.execute(alert_events.insert(), [
                {"session_id": sid, "stream_id": f"{e['ts']}-{i}", "ts_ms": e["ts"], "alert": e["alert"],
                 "event": e["event"], "kind": e["kind"], "priority": e["priority"]} for i, e in enumerate(evs)])
    rows = archive.list_sessions(arch)
    counted = {r["id"]: (r["alerts_high"], r["alerts_medium"], r["alerts_low"]) for r in with_alarm_counts(arch, rows)}
    assert counted == {"old": (1, 1, 0), "tech-only": (0, 0, 0)}
    high = with_alarm_counts(arch, archive.list_sessions(arch, high_only=True), high_only=True)
    assert [r["id"] for r in high] == ["old"]
    with arch.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sessions)).scalar_one() == 2
