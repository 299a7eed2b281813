"""Pure parts of the room page's session panel: manual BP parsing and event descriptions."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.session_panel import BadInput, describe_event, observations_summary, parse_bp


@pytest.mark.parametrize(("sbp", "dbp", "out"), [
    (150, 95, (150, 95)), ("150", "95", (150, 95)), (150.0, 95.0, (150, 95)), (40, 15, (40, 15)),
    (300, 200, (300, 200)),
])
def test_parse_bp_accepts(sbp: Any, dbp: Any, out: tuple[int, int]) -> None:
    assert parse_bp(sbp, dbp) == out


@pytest.mark.parametrize(("sbp", "dbp", "reason"), [
    (None, 95, "enter both"), (150, "", "enter both"), ("abc", 95, "is not a number"),
    (150.5, 95, "whole mmHg"), (301, 95, "sbp 301 outside 40–300 mmHg"), (39, 20, "sbp 39 outside"),
    (150, 14, "dbp 14 outside 15–200 mmHg"), (90, 95, "diastolic (95) must be below systolic (90)"),
    (120, 120, "diastolic (120) must be below systolic (120)"),
])
def test_parse_bp_refuses(sbp: Any, dbp: Any, reason: str) -> None:
    with pytest.raises(BadInput, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_bp(sbp, dbp)


@pytest.mark.parametrize(("event", "text"), [
    ({"type": "bp", "sbp": 150, "dbp": 95}, "150/95 mmHg (manual)"),
    ({"type": "dose", "dose_mg": 56.0}, "56 mg"),
    ({"type": "dose"}, "dose given"),
    ({"type": "observe", "observation": "nausea", "text": "mild"}, "Nausea / dizziness · mild"),
    ({"type": "limit", "metric": "sbp", "limit": {"high": 190.0}}, "sbp: high 190"),
    ({"type": "limit", "metric": "sbp", "limit": {}}, "sbp: override cleared"),
    ({"type": "devices_confirmed", "devices": [{"id": "oxi-1", "state": "online"}]}, "oxi-1 (online)"),
    ({"type": "start", "route": "iv", "protocol": "iv-ketamine", "patient": "MRN-1"}, "iv · iv-ketamine"),
])
def test_describe_event(event: dict[str, Any], text: str) -> None:
    assert describe_event(event) == text


def test_observations_summary_lists_time_and_user() -> None:
    evs = [{"type": "observe", "observation": "ready_to_leave", "ts": 0, "user": "nina"}, {"type": "bp", "ts": 1}]
    assert observations_summary(evs, "UTC") == "Recorded: Ready to leave 00:00:00 (nina)"
    assert observations_summary([], "UTC") == "No observations recorded yet."
