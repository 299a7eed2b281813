"""The review chart shades alarm episodes, not workflow reminders.

Found looking at the whole-system test's review page (tests/test_e2e_director.py): the
"Minimum observation" reminder lasts the whole observation period, so the chart was tinted
low-priority cyan from dose to end, as if the session had been in alarm throughout, and a
real low-priority episode could not be told apart. Reminders stay in the alert log.
"""

from __future__ import annotations

from monitor.sessions import review
from monitor.sessions.review import READING_METRICS, SessionRecord
from monitor.sessions.review_figure import build_figure


def _row(ts: int, dev: str, **vals: float) -> tuple:
    return (ts, dev, None, tuple(vals.get(m) for m in READING_METRICS))


def test_reminders_are_not_shaded_alarms_are() -> None:
    readings = [_row(t * 1000, "oxi", hr=75, spo2=97) for t in range(0, 600, 5)]
    readings += [_row(t * 60_000, "nibp", sbp=185 if t == 5 else 130, dbp=80, map=97) for t in range(10)]
    readings.sort(key=lambda r: r[0])
    alerts = [
        {"ts": 60_000, "alert": "rem", "event": "raised", "kind": "reminder", "priority": "low",
         "message": "Minimum observation: 120 min remaining"},
        {"ts": 300_000, "alert": "hi", "event": "raised", "kind": "physiological", "priority": "high",
         "metric": "sbp", "value": "185"},
        {"ts": 330_000, "alert": "hi", "event": "acknowledged", "user": "nurse1"},
        {"ts": 100_000, "alert": "tech", "event": "raised", "kind": "technical", "priority": "medium",
         "dev": "oxi", "message": "oxi offline"},
    ]
    rec = SessionRecord(header={"id": "s", "room": "room-1", "started_ms": 0, "ended_ms": 600_000,
                                "first_dose_ms": 60_000},
                        events=[{"type": "dose", "ts": 60_000, "dose_mg": 56.0, "user": "n"}],
                        readings=readings, alert_events=alerts)
    s = review.summarize(rec)
    assert {e["alert"] for e in s["episodes"]} == {"rem", "hi", "tech"}  # all in the alert log
    rects = [sh for sh in build_figure(rec, s).layout.shapes if sh.type == "rect"]
    full = [r for r in rects if r.y1 == 1]
    assert len(full) == 1 and full[0].fillcolor == "#e74c3c"  # the SBP episode only, shaded full height
    # the technical episode (never cleared) is a thin strip to the end, not an alarm tint
    (strip,) = [r for r in rects if r.y1 < 1]
    assert strip.y0 == 0 and strip.y1 <= 0.05
