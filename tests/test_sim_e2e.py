"""`vitalwatch simulate` → `vitalwatch ingest` → Redis, compared with the ground-truth log.

Both commands run as real processes: ptys, a TCP listener, a real Mosquitto, the shared
Redis (per-test clinic prefix). Faults are scripted in a timeline TOML so each one is
checked for its documented effect: sensor off → a flag-only reading; noisy line →
refusals and nothing stored for lost/refused readings; unplugged → device offline;
broker outage → offline, then the held readings arrive with their own times; clock skew →
`clock_skew` flag.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import redis

from devices.simulators.truth import read_truth
from monitor.model.readings import Reading
from monitor.store.embedded import free_port
from monitor.store.streams import read_readings
from tests.configs import config_mapping, mqtt_device, room_entry, serial_device
from tests.configs import write_config as write_config_file
from tests.waiting import wait_for

SPEED = 240.0  # 1 wall s = 4 simulated min: the dose at 0.5 s, the hypertensive crossing ~10 s
SERIAL_TOL_MS = 2000  # serial readings carry the host's receive time, not our send time

TIMELINE = """
scenarios = ["hypertensive"]
dose_at_min = 2
[[faults]]
kind = "sensor-off"
at_s = 4
duration_s = 3
device = "oxi-1"
[[faults]]
kind = "noisy-line"
device = "oxi-2"
rate = 0.25
[[faults]]
kind = "noisy-line"
device = "oxi-1"
rate = 0.25
[[faults]]
kind = "unplugged"
at_s = 4
duration_s = 3
device = "mon-3"
[[faults]]
kind = "clock-skew"
device = "mon-4"
[[faults]]
kind = "broker-outage"
at_s = 5
duration_s = 5
device = "nibp-4"
"""


def write_config(tmp: Path, clinic: str, redis_url: str, mqtt_url: str, tcp_port: int) -> Path:
    tty = tmp / "tty"
    return write_config_file(tmp / "vitalwatch.toml", config_mapping(
        {"id": clinic}, redis_url=redis_url, mqtt_url=mqtt_url, data_dir=tmp / "data", rooms=[
            room_entry("room-1", serial_device("oxi-1", port=tty / "oxi-1"),
                 serial_device("nibp-1", "nibp-un300", tty / "nibp-1", cycle_s=4)),
            room_entry("room-2", serial_device("oxi-2", "nonin-df7", tty / "oxi-2")),
            room_entry("room-3", serial_device("mon-3", "ansar-b", f"socket://127.0.0.1:{tcp_port}")),
            room_entry("room-4", mqtt_device("mon-4", "json", f"vw-e2e/{clinic}/mon-4", silence_s=3),
                 mqtt_device("nibp-4", "senml", f"vw-e2e/{clinic}/nibp-4", silence_s=3))]))


def vitalwatch(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "monitor", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


class StatusWatcher(threading.Thread):
    """Records every device state seen in the status hashes."""

    def __init__(self, client: redis.Redis, keys, devices: list[str]) -> None:
        super().__init__(daemon=True)
        self.client, self.keys, self.devices = client, keys, devices
        self.seen: dict[str, list[str]] = {d: [] for d in devices}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for d in self.devices:
                state = self.client.hget(self.keys.device_status(d), "state")
                if state and (not self.seen[d] or self.seen[d][-1] != state):
                    self.seen[d].append(state)
            self.stop.wait(0.1)


def matches(r: dict, got: Reading, tol_ms: int) -> bool:
    return (got.device == r["device"] and abs(got.ts_ms - r["ts_ms"]) <= tol_ms
            and dict(got.values) == {k: float(v) for k, v in r["values"].items()}
            and set(got.flags) - {"questionable"} == set(r["flags"]))


def test_simulate_ingest_redis_agree_with_the_truth(tmp_path, clinic_id, keys, rclient, redis_url, mosquitto_proc):
    config = write_config(tmp_path, clinic_id, redis_url, mosquitto_proc.url, free_port())
    timeline = tmp_path / "session.toml"
    timeline.write_text(TIMELINE)
    truth_file = tmp_path / "truth.jsonl"
    sim = vitalwatch("simulate", "-c", str(config), "--scenario", str(timeline), "--speed", str(SPEED),
                     "--seed", "3", "--truth", str(truth_file))
    ingest = None
    devices = ["oxi-1", "nibp-1", "oxi-2", "mon-3", "mon-4", "nibp-4"]
    watcher = StatusWatcher(rclient, keys, devices)
    try:
        assert sim.stdout.readline().startswith("simulating 6 device(s)")
        assert (tmp_path / "tty" / "oxi-1").is_symlink()
        ingest = vitalwatch("ingest", "-c", str(config))
        watcher.start()
        wait_for(lambda: all(rclient.hget(keys.device_status(d), "state") == "online"
                             for d in ("oxi-1", "oxi-2", "mon-3", "nibp-1")), timeout_s=20, what="serial online")
        ready_ms = int(time.time() * 1000) + 1500
        # run past the hypertensive crossing (~37–41 simulated min after the 2-min dose)
        wait_for(lambda: any(r["kind"] == "reading" and r.get("sim_s", 0) > 47 * 60 for r in read_truth(truth_file)),
                 timeout_s=40, what="47 simulated minutes")
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(15) == 0, sim.stderr.read()
        assert not (tmp_path / "tty" / "oxi-1").exists()  # ptys removed on SIGTERM
        # ingest has drained what was in flight once it has noticed every device's end: the
        # serial ports gone, the MQTT devices silent
        wait_for(lambda: all(rclient.hget(keys.device_status(d), "state") != "online" for d in devices),
                 timeout_s=30, what="every device no longer online after the simulator stopped")
    finally:
        watcher.stop.set()
        if sim.poll() is None:
            sim.kill()
        if ingest is not None:
            ingest.send_signal(signal.SIGTERM)
            ingest.wait(15)
    truth = list(read_truth(truth_file))
    assert truth[0]["kind"] == "run" and truth[-1]["kind"] == "stop"
    end_ms = truth[-1]["ts_ms"] - 1500
    dose_ms = next(r["ts_ms"] for r in truth if r["kind"] == "dose" and r["room"] == "room-4")
    stored: list[Reading] = []
    for room_id in ("room-1", "room-2", "room-3", "room-4"):
        stored += list(read_readings(rclient, keys, room_id))
    window = [r for r in truth if r["kind"] == "reading" and ready_ms <= r["ts_ms"] <= end_ms]

    # every valid reading arrives once; nothing lost or refused is stored
    # (nonin: the adapter keeps the newest packet at most once a second; the simulator's
    # values change once a second, so each second's values still arrive exactly once)
    for dev in ("oxi-1", "nibp-1", "oxi-2", "mon-3", "mon-4", "nibp-4"):
        want = [r for r in window if r["device"] == dev and r["expect"] == "stored"]
        tol = 0 if dev == "nibp-4" else SERIAL_TOL_MS  # senml keeps the device's own ts
        if dev == "nibp-1":
            tol = 2500  # the host stamps S0 when its 1-s poll sees it
        got = [g for g in stored if g.device == dev]
        unmatched = list(got)
        for r in want:
            hit = next((g for g in unmatched if matches(r, g, tol)), None)
            assert hit is not None, f"{dev}: not stored: {r}"
            unmatched.remove(hit)
        lo, hi = ready_ms + tol, end_ms - tol
        extra = [g for g in unmatched if lo <= g.ts_ms <= hi and not (dev == "mon-3" and "questionable" in g.flags)]
        assert not extra, f"{dev}: stored but never sent (or twice): {extra}"
        assert want, f"{dev}: nothing to compare"
    # the faults as flags, refusals and offline states
    assert any(g.device == "oxi-1" and "sensor_off" in g.flags and not g.values for g in stored)
    assert all("clock_skew" in g.flags for g in stored if g.device == "mon-4")
    rejects = [f for _, f in rclient.xrange(keys.rejects)]
    noisy = {(r["device"], r["what"]) for r in truth if r["kind"] == "noise" and r["delivered"]}
    assert ("oxi-2", "bad_checksum") in noisy and ("oxi-1", "cut") in noisy
    assert any(f["source"] == "oxi-2" and f["reason"] == "bad_checksum" for f in rejects)
    assert any(f["source"] == "oxi-1" for f in rejects)
    mon3 = watcher.seen["mon-3"]
    went_off = mon3.index("offline", mon3.index("online"))
    assert "online" in mon3[went_off:], mon3  # unplugged → offline → plugged back → online
    assert "offline" in watcher.seen["nibp-4"], watcher.seen  # broker outage → silent device offline

    # hypertensive: systolic crosses 180 about 30–45 simulated minutes after the dose, MAP consistent
    bp = sorted((g for g in stored if g.device == "mon-4" and "sbp" in g.values), key=lambda g: g.ts_ms)
    crossing = next(g for g in bp if g.values["sbp"] >= 180)
    sim_min = (crossing.ts_ms - dose_ms) * SPEED / 60000
    assert 28 <= sim_min <= 47, sim_min  # ±2 min: a reading's ts is the host's, sampled every 4 sim-min
    for g in stored:
        if "sbp" in g.values:
            v = g.values
            assert abs(v["map"] - (v["dbp"] + (v["sbp"] - v["dbp"]) / 3)) <= 1
    # the truth log records every scripted fault: a start for each, an end for each window that closed
    scripted = {(f["device"], f["kind"]) for f in tomllib.loads(TIMELINE)["faults"]}
    logged = [(r["device"], r["fault"], r["phase"]) for r in truth if r["kind"] == "fault"]
    assert {(d, f) for d, f, phase in logged if phase == "start"} == scripted, logged
    windows = {(f["device"], f["kind"]) for f in tomllib.loads(TIMELINE)["faults"] if "duration_s" in f}
    assert {(d, f) for d, f, phase in logged if phase == "end"} >= windows, logged
