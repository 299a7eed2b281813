"""Alarm delays and silence on the host's receive clock; a device `ts` is only a label.

Pure tables (evaluate with `recv_ms`, device_conditions with `last_recv_ms`) and the engine
against a real Redis, where the receive time is the stream entry id (set explicitly here,
as if Redis had stored each reading when it was received) or the `rx` field of a reading
stored late.
"""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest
import redis

from monitor.alarms.engine import Worker
from monitor.alarms.evaluate import evaluate
from monitor.alarms.model import Rule, TechRule
from monitor.alarms.rules import technical_rules
from monitor.alarms.technical import device_conditions
from monitor.model.codec import from_fields, recv_ms_of, to_fields
from monitor.model.keys import Keys
from monitor.model.readings import Reading
from monitor.store import heartbeat
from monitor.store.status import publish_status
from tests.configs import alarm_defaults, alarm_rule

T0 = 1_795_813_200_000
SPO2 = Rule("spo2", low=90, high=None, priority="high", delay_ms=15000, hysteresis=1, latching=True)
TECH = {n: TechRule(n, "medium", 0) for n in (
    "sensor_off", "no_sensor", "poor_signal", "measurement_failed", "device_alarm", "low_battery",
    "silent", "offline", "degraded")}


def rd(label_ms: int, recv_ms: int, spo2: float) -> Reading:
    return Reading("room-1", "oxi-1", label_ms, MappingProxyType({"spo2": spo2}), frozenset(), recv_ms)


@pytest.mark.parametrize(("name", "labels_ms"), [
    ("honest clock", [T0 + i * 1000 for i in range(20)]),
    ("first reading stamped +290 s", [T0 + 290_000] + [T0 + i * 1000 for i in range(1, 20)]),
    ("clock 60 s behind", [T0 - 60_000 + i * 1000 for i in range(20)]),
    ("clock steps back 2 min mid-breach", [T0 + i * 1000 if i < 8 else T0 + i * 1000 - 120_000 for i in range(20)]),
])
def test_delay_counts_on_the_receive_clock_whatever_the_labels(name: str, labels_ms: list[int]) -> None:
    """SpO2 85 then 82 every second (received at T0 + i s): raised at the reading received
    15 s after the first breach, whatever the device stamped."""
    readings = [rd(label, T0 + i * 1000, 85 if i == 0 else 82) for i, label in enumerate(labels_ms)]
    out = evaluate("room-1", {"spo2": SPO2}, TECH, {}, readings)
    raises = [t for t in out.transitions if t.what == "raise"]
    assert len(raises) == 1, name
    assert raises[0].ts_ms == T0 + 15_000 and raises[0].onset_ms == T0, name


def test_without_a_receive_time_the_label_is_used() -> None:
    readings = [Reading("room-1", "oxi-1", T0 + i * 1000, {"spo2": 82}) for i in range(16)]
    raises = [t for t in evaluate("room-1", {"spo2": SPO2}, TECH, {}, readings).transitions if t.what == "raise"]
    assert [t.ts_ms for t in raises] == [T0 + 15_000]


def test_recv_ms_from_entry_id_or_rx() -> None:
    fields = to_fields(Reading("room-1", "oxi-1", T0, {"hr": 70}))
    assert recv_ms_of(f"{T0 + 5}-3", fields) == T0 + 5
    assert recv_ms_of(f"{T0 + 600_000}-0", {**fields, "rx": str(T0 + 2)}) == T0 + 2  # stored late
    r = from_fields("room-1", fields, f"{T0 + 7}-0")
    assert r.recv_ms == T0 + 7 and r == Reading("room-1", "oxi-1", T0, {"hr": 70})  # not part of identity


def test_silence_is_judged_on_the_receive_time_of_the_last_stored_reading(make_config) -> None:
    cfg = make_config(alerts={"quiet_s": 10})
    room = cfg.room("room-1")
    now = T0 + 1_000_000
    tech = technical_rules(cfg)
    behind = {"oxi-1": {"state": "online", "last_ts": str(now - 60_000), "last_recv_ms": str(now - 800),
                        "since_ms": str(T0)}}
    assert device_conditions(room, cfg, behind, now, tech) == {}
    quiet = {"oxi-1": {**behind["oxi-1"], "last_ts": str(now - 500), "last_recv_ms": str(now - 11_000)}}
    assert device_conditions(room, cfg, quiet, now, tech)["d:oxi-1"].cond == "silent"
    not_stored = {"oxi-1": {**behind["oxi-1"], "state": "silent",
                            "detail": "readings not being stored: Redis out of memory (OOM …)"}}
    got = device_conditions(room, cfg, not_stored, now, tech)["d:oxi-1"]
    assert got.cond == "silent" and "Redis out of memory" in got.message


def test_a_reconnecting_device_gets_one_quiet_period_before_its_old_reading_counts(make_config) -> None:
    """Ingest restarted after a gap: the status still holds the previous process's receive
    time (a minute old) while the new adapter connects. No silent alarm for one quiet period
    from when it began connecting; after that the old reading's age counts again."""
    cfg = make_config(alerts={"quiet_s": 10})
    room = cfg.room("room-1")
    now = T0 + 1_000_000
    tech = technical_rules(cfg)
    restarted = {"oxi-1": {"state": "connecting", "since_ms": str(now - 2_000), "updated_ms": str(now),
                           "last_ts": str(now - 60_000), "last_recv_ms": str(now - 60_000)}}
    assert device_conditions(room, cfg, restarted, now, tech) == {}
    still = {"oxi-1": {**restarted["oxi-1"], "since_ms": str(now - 10_001)}}
    got = device_conditions(room, cfg, still, now, tech)["d:oxi-1"]
    assert got.cond == "silent" and got.message == "oxi-1 silent: no reading for over 10 s"


def test_engine_raises_on_time_after_a_reading_stamped_290_s_ahead(
        make_config, rclient: redis.Redis, keys: Keys) -> None:
    """SpO2 85 stamped +290 s (stored as an older ingest allowed, within 5 min), then 82
    with honest stamps, one a second: the high-priority alarm is raised at the reading
    received 15 s (its delay) after the first — not 290 s later."""
    cfg = make_config(alarms=alarm_defaults(spo2=alarm_rule(low=90, delay_s=15)))
    clock_ms = [T0]
    w = Worker(cfg, rclient, keys, owner="w1", clock=lambda: clock_ms[0])
    publish_status(rclient, keys, "oxi-1", {"room": "room-1", "state": "online", "last_ts": T0, "since_ms": T0})
    heartbeat.beat(rclient, keys, "ingest", "i1", T0)
    w.housekeeping(T0)
    raised_at = None
    for i in range(20):
        label = T0 + 290_000 if i == 0 else T0 + i * 1000
        fields = to_fields(Reading("room-1", "oxi-1", label, {"spo2": 85 if i == 0 else 82}))
        rclient.xadd(keys.vitals("room-1"), fields, id=f"{T0 + i * 1000}-*")  # received each second
        clock_ms[0] = T0 + i * 1000
        while w.poll(5):
            pass
        if raised_at is None and rclient.xlen(keys.alerts):
            raised_at = i
    assert raised_at == 15
    events = [f for _id, f in rclient.xrange(keys.alerts)]
    assert [(e["event"], e["metric"], e["priority"]) for e in events] == [("raised", "spo2", "high")]
    active = [json.loads(v) for v in rclient.hgetall(keys.active_alerts("room-1")).values()]
    assert active[0]["onset_ms"] == T0
