"""Table tests: session reminders, device silent/offline, monitoring_state (all pure)."""

from __future__ import annotations

import pytest

from monitor.alarms.model import AlertEvent, TechRule
from monitor.alarms.outbound import page_tier, payload, unattended
from monitor.alarms.reminders import reminder_conditions
from monitor.alarms.rules import technical_rules
from monitor.alarms.technical import device_conditions, device_quiet_s, monitoring_state
from monitor.model.config import parse_config
from tests.configs import config_mapping

T0 = 1_795_813_200_000
MIN = 60_000
CFG = parse_config({**config_mapping("c1"), "rooms": [{"id": "room-1", "devices": [
    {"id": "oxi-1", "protocol": "masimo-ascii", "transport": "serial", "port": "/dev/null"},
    {"id": "nibp-1", "protocol": "nibp-un300", "transport": "serial", "port": "/dev/null", "cycle_s": 300,
     "cycle_by_phase_s": {"dosing": 300, "observation": 900}},
    {"id": "mon-1", "protocol": "json", "transport": "mqtt", "topic": "t/mon-1"},
    {"id": "bp-2", "protocol": "senml", "transport": "mqtt", "topic": "t/bp-2", "silence_s": 1200},
]}]})
TECH = technical_rules(CFG)


def session(first_dose_min: float | None = None, protocol: str = "esketamine", state: str = "open"):
    s = {"id": "s1", "room": "room-1", "patient": "p-1", "route": "intranasal", "protocol": protocol,
         "state": state, "started_ms": str(T0)}
    if first_dose_min is not None:
        s["first_dose_ms"] = str(T0 + int(first_dose_min * MIN))
    return s


def bp(at_min: float):
    return {"ts": str(T0 + int(at_min * MIN)), "type": "bp", "user": "n", "sbp": "120", "dbp": "80"}


def dose(at_min: float):
    return {"ts": str(T0 + int(at_min * MIN)), "type": "dose", "user": "n", "dose_mg": "56"}


# name, session, events, now (min after start), expected reminder keys
REMINDERS = [
    ("no session, no reminders", None, [], 5, set()),
    ("ended session, no reminders", session(10, state="ended"), [dose(10)], 20, set()),
    ("BP due before dosing", session(), [], 1, {"r:bp-pre"}),
    ("pre-dose BP recorded", session(), [bp(2)], 3, set()),
    ("after dose: observation running", session(10), [bp(2), dose(10)], 20, {"r:observe"}),
    ("40-min check due from 35 min (tolerance 5)", session(10), [bp(2), dose(10)], 45, {"r:observe", "r:bp-40min"}),
    ("40-min check done", session(10), [bp(2), dose(10), bp(48)], 55, {"r:observe"}),
    ("BP before discharge due near the end", session(10), [dose(10), bp(48)], 126, {"r:observe", "r:bp-discharge"}),
    ("observation complete, discharge BP missing", session(10), [dose(10), bp(48)], 140, {"r:bp-discharge"}),
    ("observation complete and BP done: ready", session(10), [dose(10), bp(48), bp(127)], 140, {"r:discharge-ready"}),
    ("first dose from the events when the header lacks it", session(None), [bp(1), dose(10)], 45,
     {"r:observe", "r:bp-40min"}),
    ("iv-ketamine: the latest due check only", session(0, protocol="iv-ketamine"), [bp(-1), dose(0)], 21,
     {"r:observe", "r:bp-20min"}),
]


@pytest.mark.parametrize("name,sess,events,now_min,expected", REMINDERS, ids=[r[0] for r in REMINDERS])
def test_reminders(name, sess, events, now_min, expected):
    got = reminder_conditions(sess, events, T0 + int(now_min * MIN), CFG, "room-1")
    assert set(got) == expected
    for d in got.values():
        assert d.kind == "reminder" and d.priority == "low"


def test_observation_reminder_says_time_remaining():
    got = reminder_conditions(session(10), [dose(10)], T0 + 50 * MIN, CFG)
    obs = got["r:observe"]
    assert "80 min remaining" in obs.message
    assert dict(obs.extra)["due_ms"] == T0 + 130 * MIN
    overdue = reminder_conditions(session(10), [dose(10)], T0 + 58 * MIN, CFG)["r:bp-40min"]
    assert "overdue 8 min" in overdue.message


def status(state="online", last_s_ago=1.0, now=T0, **kw):
    st = {"room": "room-1", "state": state, "since_ms": str(now - 3_600_000), "updated_ms": str(now)}
    if last_s_ago is not None:
        st["last_ts"] = str(now - int(last_s_ago * 1000))
    st.update(kw)
    return st


# name, statuses, expected {device: condition}
DEVICES = [
    ("all fresh", {"oxi-1": status(), "nibp-1": status(last_s_ago=200), "mon-1": status(last_s_ago=5),
                   "bp-2": status(last_s_ago=1000)}, {}),
    ("continuous oximeter silent after quiet_s", {"oxi-1": status(last_s_ago=11)}, {"oxi-1": "silent"}),
    ("NIBP by its longest cycle: 900 + 60 s", {"nibp-1": status(last_s_ago=950)}, {}),
    ("NIBP past its cycle is silent", {"nibp-1": status(last_s_ago=961)}, {"nibp-1": "silent"}),
    ("adapter says offline", {"oxi-1": status(state="offline", detail="port gone")}, {"oxi-1": "offline"}),
    ("adapter says silent", {"oxi-1": status(state="silent", last_s_ago=2)}, {"oxi-1": "silent"}),
    # no adapter runs it: the clinic-wide ingest cause says so (monitor/alarms/clinic.py), not the device
    ("no status hash at all: no device alarm", {}, {}),
    ("adapter late writing its status: wait for the clinic-wide cause",
     {"oxi-1": status(last_s_ago=30, updated_ms=str(T0 - 4000))}, {}),
    ("device silence_s wins", {"bp-2": status(last_s_ago=1100)}, {}),
]


@pytest.mark.parametrize("name,statuses,expected", DEVICES, ids=[r[0] for r in DEVICES])
def test_device_conditions(name, statuses, expected):
    full = {"oxi-1": status(), "nibp-1": status(last_s_ago=10), "mon-1": status(), "bp-2": status()}
    full.update(statuses)
    if name.startswith("no status"):
        del full["oxi-1"]
    got = device_conditions(CFG.room("room-1"), CFG, full, T0, TECH)
    assert {k.split(":", 1)[1]: d.cond for k, d in got.items()} == expected
    for d in got.values():
        assert d.kind == "technical"


def test_offline_text_has_no_path_or_errno_and_waits_its_delay():
    st = {"oxi-1": status(state="offline", since_ms=str(T0 - 1000),
                          detail="cannot open /tmp/vitalwatch-demo-x1/tty/oxi-1: [Errno 2] could not open port "
                                 "/tmp/vitalwatch-demo-x1/tty/oxi-1: [Errno 2] No such file or directory: "
                                 "'/tmp/vitalwatch-demo-x1/tty/oxi-1'")}
    got = device_conditions(CFG.room("room-1"), CFG, st, T0, TECH)["d:oxi-1"]
    assert got.message == "oxi-1 offline: cannot open its port"
    assert "/" not in got.message and "Errno" not in got.message
    delayed = {**TECH, "offline": TechRule("offline", "medium", 5000)}
    assert "d:oxi-1" not in device_conditions(CFG.room("room-1"), CFG, st, T0, delayed)
    st["oxi-1"]["updated_ms"] = str(T0 + 4000)  # its adapter keeps writing
    assert "d:oxi-1" in device_conditions(CFG.room("room-1"), CFG, st, T0 + 4000, delayed)


def test_devices_a_clinic_cause_explains_are_skipped():
    st = {"oxi-1": status(last_s_ago=30)}
    assert "d:oxi-1" in device_conditions(CFG.room("room-1"), CFG, st, T0, TECH)
    assert "d:oxi-1" not in device_conditions(CFG.room("room-1"), CFG, st, T0, TECH, skip={"oxi-1"})


def test_mqtt_device_seen_sending_only_bp_counts_as_nibp():
    mon = CFG.room("room-1").devices[2]
    assert device_quiet_s(mon, CFG) == 10
    assert device_quiet_s(mon, CFG, bp_only=True) == 360


def test_connecting_device_gets_one_quiet_period():
    st = {"oxi-1": {"state": "connecting", "since_ms": str(T0 - 3000)}}
    assert device_conditions(CFG.room("room-1"), CFG, st, T0, TECH).get("d:oxi-1") is None
    st = {"oxi-1": {"state": "connecting", "since_ms": str(T0 - 30000)}}
    assert device_conditions(CFG.room("room-1"), CFG, st, T0, TECH)["d:oxi-1"].cond == "silent"


# name, heartbeats (role:inst → seconds ago), ok, problem substrings
MONITORING = [
    ("engine and ingest alive", {"alerts:a": 1, "ingest:i": 2, "dashboard:d": 100}, True, []),
    ("engine dead", {"alerts:a": 30, "ingest:i": 1}, False, ["Alert engine not running"]),
    # no entry: never started, or stopped cleanly (the entry is removed) — the text must not guess which
    ("engine without heartbeat entry", {"ingest:i": 1}, False, ["Alert engine not running (no heartbeat)"]),
    ("ingest without heartbeat entry", {"alerts:a": 1}, False, ["No ingest process running (no heartbeat)"]),
    ("one of two workers dead", {"alerts:a": 1, "alerts:b": 20, "ingest:i": 1}, False, ["Alert worker b stopped"]),
    ("ingest dead", {"alerts:a": 1, "ingest:i": 15}, False, ["No ingest process running", "Ingest process i stopped"]),
    ("one ingest of two dead", {"alerts:a": 1, "ingest:i": 1, "ingest:j": 50}, False, ["Ingest process j stopped"]),
    ("long-dead entries are forgotten", {"alerts:a": 1, "ingest:i": 1, "ingest:old": 5000}, True, []),
]


@pytest.mark.parametrize("name,beats,ok,problems", MONITORING, ids=[r[0] for r in MONITORING])
def test_monitoring_state(name, beats, ok, problems):
    hb = {k: str(T0 - int(s * 1000)) for k, s in beats.items()}
    st = monitoring_state(hb, T0, CFG)
    assert st.ok is ok
    for p in problems:
        assert any(p in x for x in st.problems), st.problems
    assert st.to_dict()["ok"] is ok


# name, screens (id → (seconds ago, sound_on)), nobody listening?
SCREENS = [
    ("no screen", {}, True),
    ("fresh screen with sound", {"s1": (2, True)}, False),
    ("fresh screen, sound off", {"s1": (2, False)}, True),
    ("stale screen", {"s1": (30, True)}, True),
    ("one of two hears", {"s1": (2, False), "s2": (3, True)}, False),
]


@pytest.mark.parametrize("name,screens,expected", SCREENS, ids=[r[0] for r in SCREENS])
def test_unattended(name, screens, expected):
    import json
    raw = {k: json.dumps({"ts_ms": T0 - s * 1000, "sound_on": on, "user": "n"}) for k, (s, on) in screens.items()}
    assert unattended(raw, T0, 10) is expected


def test_page_tiers_and_payload():
    import json
    ev = AlertEvent(T0, "room-1", "room-1.oxi-1.spo2.1", "raised", "physiological", "high", "spo2", "oxi-1", 85, 90, "m")
    assert page_tier(ev, True) == 1 and page_tier(ev, False) is None
    med = AlertEvent(T0, "room-1", "a", "raised", "physiological", "medium")
    assert page_tier(med, True) is None
    esc = AlertEvent(T0, "room-1", "a", "escalated", "physiological", "high")
    assert page_tier(esc, False) == 2
    body = json.loads(payload(ev, 1))
    assert body["page"] is True and body["tier"] == 1 and body["alert"] == ev.alert and body["value"] == 85
