"""One alarm text (monitor/alarms/text.py), one alarm per clinic-wide cause
(monitor/alarms/clinic.py), and the alarm actions from the CLI (`vitalwatch alert`)."""

from __future__ import annotations

import argparse
import json

import pytest

from dashboard.live import monitoring_view
from monitor.alarms import actions
from monitor.alarms.clinic import ClinicInputs, broker_down, clinic_causes, covered, desired, ingest_down
from monitor.alarms.rules import technical_rules
from monitor.alarms.technical import monitoring_state
from monitor.alarms.text import ago, alarm_line, clean_detail, condition_text
from monitor.app import alert_cli
from monitor.model.config import parse_config
from tests.configs import config_mapping, mqtt_device, room_entry, serial_device
from tests.dashboard_support import inject_alert, now_ms

T0 = 1_795_813_200_000
CFG = parse_config(config_mapping("c1", rooms=[room_entry(f"room-{i}", serial_device(f"oxi-{i}"), name=f"Room {i}")
                                                 for i in (1, 2, 3)]), source="t")
TECH = technical_rules(CFG)


@pytest.mark.parametrize("metric,side,value,limit,text", [
    ("sbp", "high", 186, 180, "SBP 186 > 180 mmHg"),
    ("spo2", "low", 84, 90, "SpO2 84 < 90 %"),
    ("hr", "high", 131.0, 120, "HR 131 > 120 /min"),
    ("temp", "high", 38.46, 38, "Temp 38.5 > 38 °C"),
])
def test_condition_text(metric, side, value, limit, text):
    assert condition_text(metric, side, value, limit) == text


@pytest.mark.parametrize("seconds,text", [(0, "just now"), (4.9, "just now"), (40, "40 s ago"),
                                          (125, "2 min ago"), (7200, "2 h ago")])
def test_ago(seconds, text):
    assert ago(seconds) == text


def test_alarm_line_live_latched_and_clinic_wide():
    rec = {"priority": "high", "room": "room-2", "message": "SBP 186 > 180 mmHg", "metric": "sbp",
           "raised_ms": T0 - 120_000, "state": "active"}
    assert alarm_line(rec, "Room 2", now_ms=T0, current=161) == "HIGH · Room 2 · SBP 186 > 180 mmHg · 2 min ago · now 161"
    assert alarm_line({**rec, "state": "latched"}, "Room 2", when="10:32:05") == \
        "HIGH · Room 2 · SBP 186 > 180 mmHg · 10:32:05 · latched"
    assert alarm_line({**rec, "room": "*", "metric": None, "message": "Ingest not running"}, "", now_ms=T0) == \
        "HIGH · All rooms · Ingest not running · 2 min ago"


@pytest.mark.parametrize("detail,text", [
    ("cannot open /tmp/vitalwatch-demo-abc/tty/oxi-1: [Errno 2] could not open port /tmp/x: "
     "[Errno 2] No such file or directory: '/tmp/x'", "cannot open its port"),
    ("link lost: [Errno 5] Input/output error", "connection lost"),
    ("ingest stopped", "its adapter stopped"),
    ("broker 127.0.0.1:1883 unreachable", "broker 127.0.0.1:1883 unreachable"),
    ("no valid data from /dev/ttyUSB0 [Errno 11]", "no valid data from"),
])
def test_technical_texts_never_carry_paths_or_errno(detail, text):
    got = clean_detail(detail)
    assert got == text and "Errno" not in got and "/dev" not in got and "/tmp" not in got


def beats(**ages_s: float) -> dict[str, str]:
    return {k.replace("_", ":"): str(T0 - int(s * 1000)) for k, s in ages_s.items()}


def status(age_s: float = 0.5) -> dict[str, str]:
    return {"state": "online", "updated_ms": str(T0 - int(age_s * 1000)), "last_ts": str(T0)}


def inputs(hb: dict[str, str], statuses: dict[str, dict[str, str]], unevaluated=None) -> ClinicInputs:
    return ClinicInputs(CFG, T0, monitoring_state(hb, T0, CFG), statuses, unevaluated or {})


ALL = {f"oxi-{i}": status() for i in (1, 2, 3)}


@pytest.mark.parametrize("name,hb,statuses,rooms,cause", [
    ("healthy", beats(alerts_a=1, ingest_i=1), ALL, None, None),
    ("no ingest at all: every room, one cause", beats(alerts_a=1), ALL, ("room-1", "room-2", "room-3"),
     "ingest not running"),
    ("ingest stopped heartbeating", beats(alerts_a=1, ingest_i=30), ALL, ("room-1", "room-2", "room-3"),
     "ingest not running"),
    ("one of two ingests stopped: only its devices' rooms",
     beats(alerts_a=1, ingest_i=1, ingest_j=30), {**ALL, "oxi-2": status(age_s=30)}, ("room-2",),
     "ingest process stopped"),
    ("an adapter stalled while its process beats", beats(alerts_a=1, ingest_i=1),
     {**ALL, "oxi-3": status(age_s=60)}, ("room-3",), "device adapter not reporting"),
    ("a device no adapter runs", beats(alerts_a=1, ingest_i=1), {"oxi-1": status(), "oxi-2": status()},
     ("room-3",), "device adapter not reporting"),
])
def test_ingest_cause(name, hb, statuses, rooms, cause):
    got = ingest_down(inputs(hb, statuses))
    if rooms is None:
        assert got is None
        return
    assert got is not None and got.rooms == rooms and got.cause == cause
    assert got.devices == {f"oxi-{r.split('-')[1]}" for r in rooms}  # their own alarms wait
    assert "/" not in got.message


def test_engine_gap_and_desired_record_with_rooms_and_delay():
    got = clinic_causes(inputs(beats(alerts_a=1, ingest_i=1), ALL, {"room-2": "worker w2 stopped"}))
    assert set(got) == {"c:engine"} and got["c:engine"].rooms == ("room-2",)
    assert covered(got) == {}  # an unevaluated room's devices are not the engine's to hold back
    want = desired(got, TECH, {"c:engine": T0 - 1000}, T0)
    d = want["c:engine"]
    assert d.priority == "high" and dict(d.extra)["rooms"] == "room-2" and d.start_ms == T0 - 1000
    slow = {**TECH, "engine": TECH["engine"].__class__("engine", "high", 5000)}
    assert desired(got, slow, {"c:engine": T0 - 1000}, T0) == {}  # its delay not over yet


# room-1: an MQTT monitor; room-2: serial only; room-3: an MQTT monitor and a serial oximeter
MIXED = parse_config(config_mapping("c1", rooms=[
    room_entry("room-1", mqtt_device("mon-1", "json", "c1/room-1/mon")),
    room_entry("room-2", serial_device("oxi-2")),
    room_entry("room-3", mqtt_device("mon-3", "json", "c1/room-3/mon"), serial_device("oxi-3"))]), source="t")


def mqtt_status(down_s: float | None, age_s: float = 0.5) -> dict[str, str]:
    """An MQTT device's status as its adapter writes it: `broker_down_ms` 0 while connected."""
    down = 0 if down_s is None else T0 - int(down_s * 1000)
    return {**status(age_s), "state": "connecting" if down else "online", "broker_down_ms": str(down)}


def mixed(hb: dict[str, str], **mq: dict[str, str]) -> ClinicInputs:
    statuses = {"oxi-2": status(), "oxi-3": status(), "mon-1": mqtt_status(None), "mon-3": mqtt_status(None), **mq}
    return ClinicInputs(MIXED, T0, monitoring_state(hb, T0, MIXED), statuses)


LIVE = beats(alerts_a=1, ingest_i=1)


@pytest.mark.parametrize("name,hb,mq,rooms", [
    ("broker connected", LIVE, {}, None),
    ("a reconnect of 1 s is no outage", LIVE, {"mon-1": mqtt_status(1), "mon-3": mqtt_status(1)}, None),
    ("broker down 5 s: the rooms with MQTT devices, not the serial-only one", LIVE,
     {"mon-1": mqtt_status(5), "mon-3": mqtt_status(5)}, ("room-1", "room-3")),
    ("two ingests, one's link down: only its devices' rooms", LIVE, {"mon-3": mqtt_status(5)}, ("room-3",)),
    ("an older adapter without the field: nothing claimed", LIVE,
     {"mon-1": status(), "mon-3": status()}, None),
    ("adapter stopped writing its status: ingest_down's, not the broker's", LIVE,
     {"mon-1": mqtt_status(60, age_s=60), "mon-3": mqtt_status(None)}, None),
    ("no ingest alive: ingest_down's", beats(alerts_a=1), {"mon-1": mqtt_status(5), "mon-3": mqtt_status(5)}, None),
])
def test_broker_cause(name, hb, mq, rooms):
    got = broker_down(mixed(hb, **mq))
    if rooms is None:
        assert got is None
        return
    assert got is not None and got.rooms == rooms and got.key == "c:broker" and got.cond == "broker"
    assert got.cause == "MQTT broker unreachable"
    assert got.message == f"MQTT broker unreachable: no readings from {len(rooms)} room{'s' if len(rooms) > 1 else ''}"
    assert got.devices == {f"mon-{r.split('-')[1]}" for r in rooms}  # their silent alarms wait; oxi-3's do not


def test_broker_cause_is_one_clinic_wide_alarm_after_its_delay_and_on_the_health_reasons():
    i = mixed(LIVE, **{"mon-1": mqtt_status(5), "mon-3": mqtt_status(5)})
    got = clinic_causes(i)
    assert set(got) == {"c:broker"} and set(covered(got)) == {"mon-1", "mon-3"}
    tech = technical_rules(MIXED)
    assert tech["broker"].priority == "high"
    assert desired(got, tech, {"c:broker": T0 - tech["broker"].delay_ms + 1}, T0) == {}  # its delay not over yet
    d = desired(got, tech, {"c:broker": T0 - tech["broker"].delay_ms}, T0)["c:broker"]
    assert d.cond == "broker" and dict(d.extra)["rooms"] == "room-1,room-3"
    reasons, everywhere = monitoring_view(MIXED, LIVE, T0, statuses=i.statuses)
    assert reasons == ["MQTT broker unreachable: no readings from 2 rooms (room-1, room-3)"]
    assert everywhere == []  # room-2 (serial only) is monitored
    assert monitoring_view(MIXED, LIVE, T0, statuses=mixed(LIVE).statuses) == ([], [])


def test_alert_cli_list_ack_reset(make_config, rclient, keys, capsys):
    cfg = make_config()
    rec = inject_alert(rclient, keys, "room-1", "spo2", "high", 84, 90, dev="oxi-1")

    def run(action: str, **kw: object) -> int:
        return alert_cli.run(argparse.Namespace(action=action, user="nina", **kw), cfg)

    assert run("list") == 0
    out = capsys.readouterr().out
    assert rec["alert"] in out and "HIGH · room-1 · SpO2 84 < 90 % · just now" in out
    assert run("reset", alert=rec["alert"]) == 2  # its condition is still present
    assert "still present" in capsys.readouterr().err
    assert run("ack", alert=rec["alert"]) == 0
    stored = json.loads(rclient.hget(keys.active_alerts("room-1"), rec["alert"]))
    rclient.hset(keys.active_alerts("room-1"), rec["alert"],
                 json.dumps({**stored, "state": "latched", "cleared_ms": now_ms()}))
    assert run("reset", alert=rec["alert"]) == 0
    assert actions.active_alerts(rclient, keys, ["room-1"]) == []
    assert run("ack", alert="room-1.x.y.1") == 2
    acts = [(f["user"], f["action"]) for _i, f in rclient.xrange(keys.audit)]
    assert ("nina", "alert.acknowledge") in acts and ("nina", "alert.reset") in acts
