"""MQTT broker killed (kill -9): VitalWatch says it is NOT MONITORING the rooms with MQTT
devices, naming the broker, and clears once it is back.

A real Mosquitto of our own, `vitalwatch ingest` in-process (its MQTT adapter writes each
device's status, `broker_down_ms` while its link is down) and `vitalwatch alerts` as a
process; an MQTT monitor publishes 10 readings a second in room-1, room-2 has only a serial
device. The monitoring state is read from Redis as the dashboard and /health read it
(`monitoring_view`) and as the engine does (`clinic_causes`), and the engine's own record is
checked: one clinic-wide `broker` alarm, the monitor's own "silent" alarm held back.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from dashboard.live import monitoring_view
from devices import ingest
from monitor.alarms import actions
from monitor.alarms.clinic import ClinicInputs, clinic_causes, covered
from monitor.alarms.model import event_from_fields
from monitor.alarms.rules import technical_rules
from monitor.alarms.technical import device_conditions, monitoring_state
from monitor.model.clock import now_ms
from monitor.model.keys import Keys
from monitor.store import heartbeat
from monitor.store.redis_types import str_hash
from monitor.store.status import read_status
from tests.configs import config_mapping, mqtt_device, parsed, room_entry, serial_device, write_config
from tests.mqtt_support import T_MON1, SteadyPublisher
from tests.servers import MosquittoProc, kill_quietly
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_broker_killed_is_one_cause_naming_mqtt_in_the_rooms_with_mqtt_devices(
        mosquitto_proc: MosquittoProc, rclient: redis.Redis, keys: Keys, redis_url: str, tmp_path: Path) -> None:
    # mon-1 silent by its own rules 5 s after its last reading (as in the fault-injection suite);
    # oxi-2 (no port) raises its own alarm at once; the engine's start-up grace is 3 s
    mapping = config_mapping(keys.clinic, rooms=[room_entry("room-1", mqtt_device("mon-1", "json", T_MON1, silence_s=5)),
                                                 room_entry("room-2", serial_device("oxi-2", silence_s=1))],
                             redis_url=redis_url, mqtt_url=mosquitto_proc.url, data_dir=tmp_path / "data",
                             alerts={"heartbeat_stale_s": 3})
    cfg = parsed(mapping)
    tech = technical_rules(cfg)
    room1 = cfg.rooms[0]

    def state() -> tuple[dict[str, Any], list[str], list[str], dict[str, Any]]:
        now = now_ms()
        beats = str_hash(rclient.hgetall(keys.heartbeats))
        statuses = read_status(rclient, keys, ["mon-1", "oxi-2"])
        causes = clinic_causes(ClinicInputs(cfg, now, monitoring_state(beats, now, cfg), statuses))
        reasons, everywhere = monitoring_view(cfg, beats, now, statuses=statuses)
        own = device_conditions(room1, cfg, statuses, now, tech)  # mon-1's own alarm, were it not held back
        held = device_conditions(room1, cfg, statuses, now, tech, skip=covered(causes))
        return causes, reasons, everywhere, {"own": own, "held": held}

    def clinic_events() -> list[tuple[str, str, str]]:
        evs = [event_from_fields(f) for _id, f in rclient.xrange(keys.alerts)]
        return [(e.event, e.rooms, e.message) for e in evs if e.room == "*" and e.alert.startswith("*.-.broker.")]

    stop = threading.Event()
    runner = threading.Thread(target=lambda: ingest.run(argparse.Namespace(room=[], device=[]), cfg, stop),
                              daemon=True)
    runner.start()
    with open(tmp_path / "alerts.log", "wb") as log:
        alerts = subprocess.Popen([sys.executable, "-m", "monitor", "alerts", "-c",
                                   str(write_config(tmp_path / "c.toml", mapping))],
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pub = SteadyPublisher(mosquitto_proc.url, T_MON1, rate_hz=10)
    pub.start()
    try:
        wait_for(lambda: read_status(rclient, keys, ["mon-1"])["mon-1"].get("state") == "online"
                 and "alerts" in {k.split(":")[0] for k in str_hash(rclient.hgetall(keys.heartbeats))}, 20,
                 "mon-1 online and the alert engine running")
        # the engine is past its start-up grace once it raises room-2's alarm (oxi-2 has no port)
        wait_for(lambda: any(f.get("dev") == "oxi-2" for _id, f in rclient.xrange(keys.alerts)), 20,
                 "the alert engine evaluating")
        assert "c:broker" not in state()[0]
        t0 = time.monotonic()
        mosquitto_proc.kill()
        causes, reasons, everywhere, _dev = wait_for(lambda: s if "c:broker" in (s := state())[0] else None, 10,
                                                     "the broker cause")
        seen_s = time.monotonic() - t0
        c = causes["c:broker"]
        assert c.rooms == ("room-1",) and c.devices == {"mon-1"}  # room-2 (serial only) is monitored
        assert c.message == "MQTT broker unreachable: no readings from 1 room"
        assert "MQTT broker unreachable: no readings from 1 room (room-1)" in reasons and everywhere == []
        # the engine records it: one clinic-wide alarm naming room-1 (what every screen shows)
        wait_for(lambda: [e[:2] for e in clinic_events()] == [("raised", "room-1")], 10, "the clinic-wide alarm")
        raised_s = time.monotonic() - t0
        # what the tiles (overview, room page, /m) read: the active clinic-wide record's rooms and cause
        active = [(a.get("rooms"), a.get("cause")) for a in actions.active_alerts(rclient, keys, ["*"])]
        assert ("room-1", "MQTT broker unreachable") in active, active
        # mon-1's own silent alarm would be due now; the cause holds it back, and the engine raised none
        dev = wait_for(lambda: d if (d := state()[3])["own"] else None, 15, "mon-1 silent by its own rules")
        assert dev["held"] == {}
        due_ms = now_ms()
        wait_for(lambda: heartbeat.newest_by_role(rclient, keys).get("alerts", 0) > due_ms + 1500, 10,
                 "the engine ticking after mon-1's own alarm was due")
        assert not [f for _id, f in rclient.xrange(keys.alerts) if f.get("dev") == "mon-1"]
        t1 = time.monotonic()
        mosquitto_proc.start()
        wait_for(lambda: "c:broker" not in (s := state())[0] and not s[1], 20, "the cause cleared")
        cleared_s = time.monotonic() - t1
        wait_for(lambda: [e[0] for e in clinic_events()] == ["raised", "cleared"], 10, "the clinic-wide alarm cleared")
        print(f"[figures] broker kill → cause {seen_s:.1f} s, clinic alarm {raised_s:.1f} s; "
              f"broker back → cleared {cleared_s:.1f} s (2 shared cores under load)")
    finally:
        pub.halt.set()
        stop.set()
        runner.join(15)
        kill_quietly(alerts)
