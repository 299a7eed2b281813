"""Table tests of the pure alarm evaluator: readings + state → transitions → alert changes."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from monitor.alarms.evaluate import (
    Book,
    apply_timers,
    apply_transitions,
    evaluate,
    phys_key,
    reconcile,
    timers_due_ms,
)
from monitor.alarms.model import Cond, Desired, Rule, TechRule, alert_id, room_of
from monitor.alarms.rules import build_rules, technical_rules
from monitor.model.config import parse_config
from monitor.model.readings import Reading
from tests.configs import config_mapping

T0 = 1_795_813_200_000
HR = Rule("hr", low=50, high=120, priority="medium", delay_ms=6000, hysteresis=3, latching=False)
SPO2 = Rule("spo2", low=90, high=None, priority="high", delay_ms=15000, hysteresis=1, latching=True)
SBP0 = Rule("sbp", low=90, high=180, priority="high", delay_ms=0, hysteresis=5, latching=False)
TECH = {n: TechRule(n, p, d) for n, p, d in [
    ("sensor_off", "medium", 5000), ("no_sensor", "medium", 5000), ("poor_signal", "low", 10000),
    ("measurement_failed", "low", 0), ("device_alarm", "low", 0), ("low_battery", "low", 0),
    ("silent", "medium", 0), ("offline", "medium", 0), ("degraded", "high", 0)]}


def reading(t_s: float, dev: str = "oxi-1", flags: tuple[str, ...] = (), **values: float) -> Reading:
    return Reading("room-1", dev, T0 + int(t_s * 1000), MappingProxyType(values), frozenset(flags))


def series(metric: str, values: list[float | None], step_s: float = 1.0, dev: str = "oxi-1",
           flags_at: dict[int, tuple[str, ...]] | None = None) -> list[Reading]:
    """One reading per step; None = a flags-only reading (e.g. sensor off) at that step."""
    out = []
    for i, v in enumerate(values):
        flags = (flags_at or {}).get(i, ())
        out.append(reading(i * step_s, dev, flags, **({metric: v} if v is not None else {})))
    return out


def run(rules: dict[str, Rule], readings: list[Reading], conds: dict[str, Cond] | None = None):
    out = evaluate("room-1", rules, TECH, conds or {}, readings)
    return [(t.what, t.kind, t.cond, t.ts_ms - T0) for t in out.transitions], out


# name, rule, values (1 Hz), expected transitions (what, kind, cond, ms after T0)
PHYS_TABLE = [
    ("blip shorter than delay raises nothing", HR, [80, 130, 130, 130, 80, 80], []),
    ("sustained breach raises once after the delay, then clears",
     HR, [80] + [130] * 10 + [110, 80],
     [("raise", "physiological", "hr", 7000), ("clear", "physiological", "hr", 11000)]),
    ("oscillation around the limit with delay: no alarm at all",
     HR, [119, 121, 119, 121, 119, 121, 119, 121, 119, 121, 119, 121], []),
    ("oscillation after raising stays one alarm (hysteresis band)",
     SBP0, [170, 181, 179, 182, 178, 181, 179, 170],
     [("raise", "physiological", "sbp", 1000), ("clear", "physiological", "sbp", 7000)]),
    ("delay 0: the first breaching reading raises", SBP0, [120, 185, 120],
     [("raise", "physiological", "sbp", 1000), ("clear", "physiological", "sbp", 2000)]),
    ("back inside but within hysteresis does not clear", HR, [130] * 8 + [119, 118],
     [("raise", "physiological", "hr", 6000)]),
    ("exactly at the limit is not beyond it", HR, [120] * 10, []),
    ("low side", SPO2, [97] + [88] * 16 + [90, 91],
     [("raise", "physiological", "spo2", 16000), ("clear", "physiological", "spo2", 18000)]),
    ("jump from high to low clears and starts a new episode", SBP0, [200, 80],
     [("raise", "physiological", "sbp", 0), ("clear", "physiological", "sbp", 1000),
      ("raise", "physiological", "sbp", 1000)]),
]


@pytest.mark.parametrize("name,rule,values,expected", PHYS_TABLE, ids=[r[0] for r in PHYS_TABLE])
def test_physiological_table(name, rule, values, expected):
    got, _ = run({rule.metric: rule}, series(rule.metric, values))
    assert got == expected


def test_delay_counts_measurement_time_not_reading_count():
    # NIBP every 5 min: two breaching readings 300 s apart satisfy a 6 s delay on the second
    readings = [reading(0, "nibp-1", hr=130), reading(300, "nibp-1", hr=130)]
    got, _ = run({"hr": HR}, readings)
    assert got == [("raise", "physiological", "hr", 300_000)]


def test_flagged_values_never_raise_physiological_but_raise_technical():
    flags = {i: ("artifact",) for i in range(15)}
    got, _ = run({"hr": HR}, series("hr", [150] * 15, flags_at=flags))
    assert got == [("raise", "technical", "poor_signal", 10000)]


def test_sensor_off_is_technical_and_clears_when_values_return():
    values = [None] * 8 + [80, 80]
    flags = {i: ("sensor_off",) for i in range(8)}
    got, _ = run({"spo2": SPO2}, series("spo2", values, flags_at=flags))
    assert got == [("raise", "technical", "sensor_off", 5000), ("clear", "technical", "sensor_off", 8000)]


def test_no_sensor_and_poor_signal_blip_shorter_than_delay():
    got, _ = run({"hr": HR}, series("hr", [None, None, 80], flags_at={0: ("no_sensor",), 1: ("no_sensor",)}))
    assert got == []


def test_measurement_error_is_technical_and_only_a_good_bp_clears_it():
    rs = [reading(0, "nibp-1", ("measurement_error",)),
          reading(1, "nibp-1", hr=80),  # a reading without BP does not end a failed BP
          reading(300, "nibp-1", sbp=120, dbp=80)]
    got, _ = run({"sbp": SBP0}, rs)
    assert got == [("raise", "technical", "measurement_failed", 0), ("clear", "technical", "measurement_failed", 300000)]


def test_measurement_error_ignores_bp_values_on_that_reading():
    got, _ = run({"sbp": SBP0}, [reading(0, "nibp-1", ("measurement_error",), sbp=250)])
    assert ("raise", "physiological", "sbp", 0) not in got


def test_state_per_device_and_metric():
    rs = [reading(0, "oxi-1", hr=130), reading(0, "mon-1", hr=80), reading(7, "oxi-1", hr=130),
          reading(7, "mon-1", hr=130)]
    got, out = run({"hr": HR}, rs)
    assert got == [("raise", "physiological", "hr", 7000)]
    assert set(out.changed) == {phys_key("oxi-1", "hr"), phys_key("mon-1", "hr")}


def test_stable_alert_id_and_replay_from_state_is_idempotent():
    readings = series("hr", [130] * 10)
    _, first = run({"hr": HR}, readings[:8])
    aid = first.transitions[0].alert
    assert aid == alert_id("room-1", "oxi-1", "hr", T0) == "room-1.oxi-1.hr.1795813200000"
    assert room_of(aid) == "room-1"
    conds = {k: v for k, v in first.changed.items() if v is not None}
    # a new owner resuming from the committed state: replaying the same readings raises nothing
    again, _ = run({"hr": HR}, readings[:8], conds)
    assert again == []
    # and even re-applying a raise for the same episode to the records is a no-op
    book = Book({})
    apply_transitions(book, first.transitions, T0 + 8000)
    book2 = Book(book.records)
    apply_transitions(book2, first.transitions, T0 + 9000)
    assert book2.events == [] and not book2.changed


def test_evaluate_does_not_touch_the_input_state():
    conds = {phys_key("oxi-1", "hr"): Cond(T0, "high")}
    snapshot = dict(conds)
    run({"hr": HR}, series("hr", [130] * 10), conds)
    assert conds == snapshot


def _raise_and_clear(rule: Rule, values: list[float]):
    _, out = run({rule.metric: rule}, series(rule.metric, values))
    book = Book({})
    apply_transitions(book, out.transitions, T0 + 60_000)
    return book


LATCH_TABLE = [
    ("non-latched alert is removed when cleared", SBP0, False, [("raised",), ("cleared",)], 0),
    ("latched alert stays latched after the condition clears", SBP0, True, [("raised",), ("cleared",)], 1),
]


@pytest.mark.parametrize("name,rule,latching,events,left", LATCH_TABLE, ids=[r[0] for r in LATCH_TABLE])
def test_latched_vs_non_latched(name, rule, latching, events, left):
    r = Rule(rule.metric, rule.low, rule.high, rule.priority, rule.delay_ms, rule.hysteresis, latching)
    book = _raise_and_clear(r, [190, 190, 150])
    assert [(e.event,) for e in book.events] == events
    assert len(book.records) == left
    if left:
        (rec,) = book.records.values()
        assert rec["state"] == "latched" and rec["cleared_ms"] is not None


def _one_record(priority: str = "high", **over):
    rec = {"alert": "room-1.oxi-1.spo2.1", "room": "room-1", "dev": "oxi-1", "metric": "spo2",
           "kind": "physiological", "priority": priority, "state": "active", "value": 85, "limit": 90,
           "message": "SpO2 85", "raised_ms": T0, "onset_ms": T0, "acknowledged_by": None,
           "acknowledged_ms": None, "paused_until_ms": None, "escalated": False, "cond": "p:oxi-1:spo2",
           "latching": True, "cleared_ms": None}
    rec.update(over)
    return {rec["alert"]: rec}


TIMER_TABLE = [
    # name, record overrides, now (ms after T0), expected events
    ("pause not yet over", {"paused_until_ms": T0 + 120_000}, 60_000, []),
    ("pause expiry makes it audible again", {"paused_until_ms": T0 + 60_000}, 60_000, ["pause_ended"]),
    ("pause expiry after acknowledge: silent, no event",
     {"paused_until_ms": T0 + 30_000, "acknowledged_ms": T0 + 10_000, "acknowledged_by": "nurse"}, 60_000, []),
    ("escalation of unacknowledged high priority", {}, 120_000, ["escalated"]),
    ("no escalation before the time", {}, 119_999, []),
    ("no escalation when acknowledged", {"acknowledged_ms": T0 + 1000, "acknowledged_by": "n"}, 500_000, []),
    ("no escalation twice", {"escalated": True}, 500_000, []),
    ("pause does not stop escalation", {"paused_until_ms": T0 + 200_000}, 130_000, ["escalated"]),
]


@pytest.mark.parametrize("name,over,now,expected", TIMER_TABLE, ids=[r[0] for r in TIMER_TABLE])
def test_timers(name, over, now, expected):
    book = Book(_one_record(**over))
    apply_timers(book, T0 + now, escalate_after_ms=120_000)
    assert [e.event for e in book.events] == expected
    if "escalated" in expected:
        (rec,) = book.records.values()
        assert rec["escalated"] is True


DUE_CASES = [(name, over) for name, over, _now, _ev in TIMER_TABLE] + [
    ("medium priority", {"priority": "medium"}),
    ("reminder", {"kind": "reminder"}),
    ("dismissed", {"state": "dismissed"}),
    ("paused medium", {"priority": "medium", "paused_until_ms": T0 + 5_000}),
]


@pytest.mark.parametrize("name,over", DUE_CASES, ids=[c[0] for c in DUE_CASES])
def test_timers_due_is_the_first_time_apply_timers_changes_anything(name, over):
    """The engine skips a room's tick while nothing it reads changed and no timer is due
    (engine._tick_rooms): before `timers_due_ms` apply_timers must change nothing, at it something."""
    records = {**_one_record(**over), **_one_record(alert="room-1.oxi-1.hr.1", priority="low")}
    due = timers_due_ms(records, 120_000)
    for now in [T0 - 1, T0 + 60_000, T0 + 10**7] if due is None else [due - 1, due - 60_000]:
        book = Book(records)
        apply_timers(book, now, 120_000)
        assert not book.changed, (name, now - T0)
    if due is not None:
        book = Book(records)
        apply_timers(book, due, 120_000)
        assert book.changed, name


def test_medium_priority_never_escalates():
    book = Book(_one_record(priority="medium"))
    apply_timers(book, T0 + 10**7, 120_000)
    assert book.events == []


def test_reconcile_raises_updates_quietly_and_clears():
    d = Desired(key="d:oxi-1", cond="silent", kind="technical", priority="medium", message="oxi-1 silent",
                start_ms=T0, dev="oxi-1")
    book = Book({})
    reconcile(book, "room-1", {"d:oxi-1": d}, "d:", T0)
    assert [e.event for e in book.events] == ["raised"]
    (aid,) = book.records
    # same condition again (another tick, another worker): no new alert, no event
    book2 = Book(book.records)
    reconcile(book2, "room-1", {"d:oxi-1": d}, "d:", T0 + 500)
    assert book2.events == [] and not book2.changed
    # offline replaces silent on the same key: message updated in place, same alert
    d2 = Desired(key="d:oxi-1", cond="offline", kind="technical", priority="medium", message="oxi-1 offline",
                 start_ms=T0, dev="oxi-1")
    book3 = Book(book.records)
    reconcile(book3, "room-1", {"d:oxi-1": d2}, "d:", T0 + 1000)
    assert book3.events == [] and book3.records[aid]["message"] == "oxi-1 offline"
    book4 = Book(book3.records)
    reconcile(book4, "room-1", {}, "d:", T0 + 2000)
    assert [e.event for e in book4.events] == ["cleared"] and book4.records == {}
    # other scopes are left alone
    book5 = Book(book.records)
    reconcile(book5, "room-1", {}, "r:", T0 + 2000)
    assert not book5.changed


def test_rules_merge_defaults_room_session_and_latching():
    cfg = parse_config({**config_mapping("c1"), "alarms": {"defaults": {"hr": {"high": 130}},
                                                        "rooms": {"room-1": {"hr": {"delay_s": 2}}}},
                        "alerts": {"latching": {"high": True, "medium": True, "low": False}}})
    rules, problems = build_rules(cfg, "room-1", {"hr": '{"high": 140}', "spo2": '{"low": 85}',
                                                  "sbp": '{"low": 200}', "bogus": "{}", "dbp": "not json"})
    assert (rules["hr"].low, rules["hr"].high, rules["hr"].delay_ms) == (50, 140, 2000)
    assert rules["hr"].latching is True  # medium latches per [alerts] latching
    assert rules["spo2"].low == 85 and rules["spo2"].priority == "high"
    assert rules["sbp"].low == 90  # the bad override (low above high) is ignored, with a problem
    assert len(problems) == 3
    assert "temp" not in rules  # no limits configured for temp
    tech = technical_rules(cfg)
    assert tech["sensor_off"].delay_ms == 5000 and tech["degraded"].priority == "high"
