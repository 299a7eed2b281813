"""Acceptance, Redis Sentinel: the master is killed (-9) while MQTT monitors publish.

A master + a replica + 3 Sentinels of our own (tests/failover_support.py), a Mosquitto of our
own; `vitalwatch ingest`, `vitalwatch alerts` and `vitalwatch dashboard` run as real processes
on `redis+sentinel://` with `redis.min_replicas = 1`. Four MQTT monitors publish QoS 1 at
50 msg/s in total. Shortly before the kill the replica's link breaks (the replica is stopped
and the master drops it), so the master holds readings no replica has — exactly the ones a
failover loses unless they are acknowledged only after WAIT. Then:
- every reading the broker acknowledged to the monitors is on the new master exactly once;
- the same processes go on without restart: readings are stored on the new master soon after
  the kill, an SpO2 breach that spans the failover and one that starts after it each raise
  their alarm exactly once, and the dashboard's /health is 503 in the gap and 200 after.
Measured times are printed ([figures]); the waits only bound how long a broken build takes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis
import requests

from monitor.model.clock import now_ms
from monitor.model.keys import Keys
from monitor.store.embedded import free_port
from monitor.store.redis_conn import connect
from tests.configs import alarm_defaults, alarm_rule, config_mapping, mqtt_device, room_entry, write_config
from tests.failover_support import SentinelGroup
from tests.servers import MosquittoProc, kill_quietly
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
ROOMS = tuple(f"room-{i}" for i in range(1, 5))
RATE_HZ = 50.0  # in total, round-robin over the rooms
OWNER_TTL_S = 2


class Monitors(threading.Thread):
    """Four MQTT monitors on one connection, QoS 1, 50 messages/s in total. `values[room]` is
    what each room sends next; every (room, ts) and which of them the broker PUBACKed."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.values: dict[str, dict[str, float]] = {r: {"hr": 72, "spo2": 97} for r in ROOMS}
        self.sent: dict[int, tuple[str, int]] = {}  # mid → (room, ts)
        self.acked: set[int] = set()  # no lock of ours around paho: its callbacks run under its own
        self.halt = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ha-mon-{port}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(200)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        self.acked.add(mid)

    def run(self) -> None:
        i, last_ts = 0, 0
        next_t = time.monotonic()
        while not self.halt.is_set():
            room = ROOMS[i % len(ROOMS)]
            ts = max(now_ms(), last_ts + 1)  # unique per monitor even within a millisecond
            last_ts = ts
            info = self.client.publish(f"vw-ha/{room}/mon", json.dumps({"ts": ts, **self.values[room]}), qos=1)
            self.sent[info.mid] = (room, ts)
            i += 1
            next_t += 1.0 / RATE_HZ
            self.halt.wait(max(0.0, next_t - time.monotonic()))

    def finish(self) -> dict[str, set[int]]:
        """Stop, wait for the broker's PUBACK of everything sent; the acknowledged ts per room."""
        self.halt.set()
        self.join(5)
        wait_for(lambda: len(self.acked) >= len(self.sent), 20, "PUBACKs for every message sent")
        self.client.loop_stop()
        self.client.disconnect()
        out: dict[str, set[int]] = {r: set() for r in ROOMS}
        for mid, (room, ts) in self.sent.items():
            if mid in self.acked:
                out[room].add(ts)
        return out


class LeaseWatch(threading.Thread):
    """Polls the room leases through Sentinel; per room the longest run of polls that found
    it without an owner (polls that reach no master count for nothing either way), and every
    owner seen."""

    def __init__(self, url: str, keys: Keys) -> None:
        super().__init__(daemon=True)
        self.client = connect(url, timeout_s=1.0)
        self.keys = keys
        self.halt = threading.Event()
        self.owners: dict[str, set[str]] = {r: set() for r in ROOMS}
        self.longest: dict[str, float] = dict.fromkeys(ROOMS, 0.0)
        self._free_since: dict[str, float | None] = dict.fromkeys(ROOMS)

    def run(self) -> None:
        while not self.halt.wait(0.1):
            try:
                got = self.client.mget([self.keys.room_owner(r) for r in ROOMS])
            except redis.RedisError:
                continue
            now = time.monotonic()
            for room, owner in zip(ROOMS, got, strict=True):
                since = self._free_since[room]
                if owner:
                    self.owners[room].add(owner)
                    self._free_since[room] = None
                elif since is None:
                    self._free_since[room] = now
                else:
                    self.longest[room] = max(self.longest[room], now - since)


class HealthWatch(threading.Thread):
    """Polls the dashboard's /health and keeps (monotonic time, status code) pairs."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.1):
            try:
                code = requests.get(f"{self.url}/health", timeout=5).status_code
            except requests.RequestException:
                code = 0
            self.seen.append((time.monotonic(), code))

    def codes_after(self, t: float) -> list[int]:
        return [c for at, c in self.seen if at >= t]


def raised(client: Any, keys: Keys, room: str) -> list[dict[str, str]]:
    return [f for _i, f in client.xrange(keys.alerts)
            if f.get("event") == "raised" and f.get("metric") == "spo2" and f.get("room") == room]


def test_master_killed_9_under_mqtt_load(tmp_path: Path, clinic_id: str) -> None:
    group = SentinelGroup(tmp_path / "ha", password="ha-redis-pass").start()
    broker = MosquittoProc(tmp_path / "mqtt").start()
    port = free_port()
    cfg = write_config(tmp_path / "vitalwatch.toml", config_mapping(
        clinic_id, redis_url=group.url(), mqtt_url=broker.url, data_dir=tmp_path / "data",
        archive_url=f"sqlite:///{tmp_path / 'archive.db'}",
        rooms=[room_entry(r, mqtt_device(f"mon-{r[-1]}", "json", f"vw-ha/{r}/mon")) for r in ROOMS],
        redis={"min_replicas": 1}, alerts={"owner_ttl_s": OWNER_TTL_S, "heartbeat_stale_s": 5},
        alarms=alarm_defaults(spo2=alarm_rule(low=90, delay_s=2))))
    keys = Keys(clinic_id)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = []
    # two alert workers: they share the rooms, and must never both own one
    for name, role, extra in (("ingest", "ingest", []), ("alerts-1", "alerts", []), ("alerts-2", "alerts", []),
                              ("dashboard", "dashboard", ["--port", str(port)])):
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed in finally
        logs.append(log)
        procs[name] = subprocess.Popen([sys.executable, "-m", "monitor", role, "-c", str(cfg), *extra], cwd=ROOT,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    monitors = Monitors(broker.port)
    health = HealthWatch(url)
    leases = LeaseWatch(group.url(), keys)
    old = group.master
    try:
        wait_for(lambda: requests.get(f"{url}/health", timeout=5).status_code == 200, 60,
                 "the dashboard saying monitoring", ignoring=(requests.RequestException,))
        monitors.start()
        health.start()
        leases.start()
        before = old.admin()
        wait_for(lambda: all(before.xlen(keys.vitals(r)) >= 10 for r in ROOMS), 20, "readings flowing")
        pids = {r: p.pid for r, p in procs.items()}
        # room-2's SpO2 falls before the failover (alarm due 2 s later, i.e. after the kill)
        monitors.values["room-2"] = {"hr": 72, "spo2": 84}
        # the replica's link breaks: what the master takes from now on, no replica has
        group.replica.pause()
        before.client_kill_filter(_type="replica")
        at_break = before.xlen(keys.vitals("room-1"))
        wait_for(lambda: before.xlen(keys.vitals("room-1")) >= at_break + 10, 10, "readings only the master holds")
        old.kill()
        t_kill = time.monotonic()
        kill_ms = now_ms()
        group.replica.resume()
        new = group.wait_failover(old)
        t_promoted = time.monotonic()
        old.start()  # the operator restarts it; Sentinel makes it a replica of the new master
        client = new.admin()

        def stored_after_kill() -> bool:
            return any(int(f["ts"]) > kill_ms for r in ROOMS for _i, f in client.xrevrange(keys.vitals(r), count=1))
        wait_for(stored_after_kill, 20, "a reading published after the kill stored on the new master")
        first_new = time.monotonic() - t_kill
        monitors.values["room-1"] = {"hr": 72, "spo2": 83}  # a breach that starts after the failover
        wait_for(lambda: raised(client, keys, "room-1") and raised(client, keys, "room-2"), 30,
                 "both SpO2 alarms raised on the new master")
        wait_for(lambda: health.codes_after(t_promoted)[-5:] == [200] * 5, 30, "/health 200 again")
        acked = monitors.finish()
        for r in ROOMS:
            def complete(r: str = r) -> list[int] | None:
                ts = [int(f["ts"]) for _i, f in client.xrange(keys.vitals(r))]
                return ts if acked[r] <= set(ts) else None
            try:
                stored = wait_for(complete, 90, f"every acknowledged reading of {r} on the new master")
            except AssertionError:
                missing = acked[r] - {int(f["ts"]) for _i, f in client.xrange(keys.vitals(r))}
                raise AssertionError(f"{len(missing)} of {len(acked[r])} acknowledged readings of {r} "
                                     f"missing on the new master") from None
            assert len(stored) == len(set(stored)), f"duplicates in {r}"
        assert len(raised(client, keys, "room-1")) == 1 and len(raised(client, keys, "room-2")) == 1
        # leases: never ownerless for more than 2 lease periods while a master answered
        leases.halt.set()
        leases.join(5)
        assert max(leases.longest.values()) <= 2 * OWNER_TTL_S, leases.longest
        gap = [c for at, c in health.seen if t_kill <= at <= t_promoted + 1]
        assert 503 in gap or 0 in gap, f"/health never said NOT MONITORING in the gap: {gap}"
        assert {r: p.pid for r, p in procs.items()} == pids and all(p.poll() is None for p in procs.values())
        print(f"\n[figures] Sentinel failover under 50 msg/s QoS 1: promoted {t_promoted - t_kill:.1f} s, "
              f"first reading on the new master {first_new:.1f} s after kill -9; "
              f"{sum(map(len, acked.values()))} acknowledged readings, 0 missing, 0 duplicated; longest "
              f"ownerless room {max(leases.longest.values()):.1f} s (lease {OWNER_TTL_S} s)")
        assert first_new <= 5.0, f"first reading on the new master {first_new:.1f} s after the kill"
    finally:
        health.halt.set()
        leases.halt.set()
        if monitors.is_alive():
            monitors.halt.set()
        for p in procs.values():
            kill_quietly(p)
        for f in logs:
            f.close()
        broker.kill()
        group.stop()
