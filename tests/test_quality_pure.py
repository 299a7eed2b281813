"""Pure pieces of the cross-session numbers (monitor/sessions/quality.py): percentiles, alert
causes, nuisance with session limit overrides, BP from manual checks, sessions without data."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.sessions import quality
from monitor.sessions.review import READING_METRICS, SessionRecord

MIN = 60_000
T0 = 1_795_000_000_000


@pytest.mark.parametrize("values,q,want", [
    ([], 0.5, None),
    ([7.0], 0.9, 7.0),
    ([1.0, 2.0], 0.5, 1.5),
    ([10.0, 20.0, 30.0, 40.0], 0.9, 37.0),  # rank 2.7: 30 + 0.7 × 10
    ([40.0, 10.0, 30.0, 20.0], 0.5, 25.0),  # order does not matter
])
def test_percentile(values: list[float], q: float, want: float | None) -> None:
    assert quality.percentile(values, q) == (pytest.approx(want) if want is not None else None)


@pytest.mark.parametrize("alert,fallback,cause", [
    ("room-1.nibp-1.offline.1795000000000", None, "offline"),
    ("room-1.-.degraded.1795000000000", None, "degraded"),
    ("room-1.oxi-1.spo2_low.1795000000000", None, "spo2_low"),
    ("weird", "sbp", "sbp"),
    ("weird", None, "unknown"),
])
def test_alert_id_cause(alert: str, fallback: str | None, cause: str) -> None:
    assert quality.alert_id_cause(alert, fallback) == cause


def _row(ts: int, **values: float) -> tuple[int, str, None, list[float | None]]:
    return (ts, "oxi-1", None, [values.get(m) for m in READING_METRICS])


def _alarm(aid: str, metric: str, raised: int, cleared: int | None) -> list[dict[str, Any]]:
    common = {"alert": aid, "kind": "physiological", "priority": "medium", "metric": metric, "dev": "oxi-1",
              "room": "room-1", "message": "", "value": "", "limit": "", "user": ""}
    out = [{**common, "event": "raised", "ts": raised, "stream_id": f"{raised}-0"}]
    if cleared is not None:
        out.append({**common, "event": "cleared", "ts": cleared, "stream_id": f"{cleared}-0"})
    return out


def _rec(readings: list[Any], events: list[dict[str, Any]] | None = None, alerts: list[dict[str, Any]] | None = None,
         limits: dict[str, Any] | None = None, dose: bool = True) -> SessionRecord:
    evs = events or []
    if dose:
        evs = [{"type": "dose", "ts": T0 + 5 * MIN, "user": "a", "dose_mg": 56.0}, *evs]
    return SessionRecord(header={"id": "s", "patient": "P", "room": "room-1", "route": "intranasal",
                                 "protocol": "esketamine", "dose_mg": 56.0, "started_ms": T0,
                                 "first_dose_ms": T0 + 5 * MIN if dose else None, "ended_ms": T0 + 130 * MIN},
                         events=evs, readings=readings, alert_events=alerts or [],
                         base_limits=limits if limits is not None else {"hr": {"delay_s": 6}, "spo2": {"delay_s": 15}})


def test_nuisance_uses_the_delay_in_force_when_raised() -> None:
    a = T0 + 20 * MIN
    b = T0 + 60 * MIN
    alerts = (_alarm("room-1.oxi-1.hr_high.1", "hr", a, a + 5_000)  # 5 s ≤ 6 s: nuisance
              + _alarm("room-1.oxi-1.hr_high.2", "hr", b, b + 5_000)  # after the override to 2 s: not
              + _alarm("room-1.oxi-1.spo2_low.3", "spo2", a + 1, None))  # never cleared: not
    limit = {"type": "limit", "ts": T0 + 30 * MIN, "user": "a", "metric": "hr", "limit": {"delay_s": 2}}
    s = quality.session_summary(_rec([_row(T0, hr=70, spo2=98)], [limit], alerts))
    assert s["nuisance"] == 1 and s["alarms"]["medium"] == 3 and s["unacknowledged"] == 3
    # the override removed again ({}): back to the room's 6 s
    clear = {"type": "limit", "ts": T0 + 50 * MIN, "user": "a", "metric": "hr", "limit": {}}
    assert quality.session_summary(_rec([_row(T0, hr=70)], [limit, clear], alerts))["nuisance"] == 2


def test_bp_from_manual_checks_when_no_device_measured_it() -> None:
    bps = [{"type": "bp", "ts": T0 + 2 * MIN, "user": "a", "sbp": 120, "dbp": 80},
           {"type": "bp", "ts": T0 + 4 * MIN, "user": "a", "sbp": 124, "dbp": 82},
           {"type": "bp", "ts": T0 + 45 * MIN, "user": "a", "sbp": 170, "dbp": 104},
           {"type": "bp", "ts": T0 + 120 * MIN, "user": "a", "sbp": 130, "dbp": 84}]
    s = quality.session_summary(_rec([_row(T0 + i * MIN, hr=70, spo2=97) for i in range(130)], bps))
    assert s["bp_source"] == "manual"
    assert (s["baseline_sbp"], s["peak_sbp"], s["peak_sbp_min"], s["sbp_rise_90"]) == (122, 170, 40, 48)
    assert (s["baseline_dbp"], s["dbp_rise_90"], s["surge"]) == (81, 23, True)
    assert [p[1] for p in s["curve"]] == [120, 124, 170, 130]


def test_session_without_readings_or_dose() -> None:
    s = quality.session_summary(_rec([], dose=False))
    assert s["bp_source"] is None and s["peak_sbp"] is None and s["surge"] is None
    assert s["max_hr"] is None and s["min_spo2"] is None and s["curve"] == [] and s["n_readings"] == 0
    assert s["rems"]["dose_ms"] is None and s["rems"]["total_min"] is None
    rows = [{**s, "form": None}]
    t = quality.aggregate(rows)
    assert t["bp_surge"]["sessions_with_bp"] == 0 and t["bp_surge"]["surge_pct"] is None
    assert t["alarms"]["median_ack_s"] is None
    assert quality.csv_text(rows, "UTC").count("\n") == 2


def test_curve_is_capped_and_keeps_the_peak() -> None:
    readings = [_row(T0 + i * 30_000, sbp=120 + (60 if i == 77 else 0), dbp=80) for i in range(250)]
    s = quality.session_summary(_rec(readings))
    assert len(s["curve"]) <= quality.CURVE_MAX_POINTS + 1
    assert max(p[1] for p in s["curve"]) == 180
