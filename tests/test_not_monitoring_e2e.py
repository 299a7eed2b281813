"""Acceptance, the whole system as processes: Redis refusing writes for 6 s while readings flow.

`vitalwatch ingest`, `vitalwatch alerts` and `vitalwatch dashboard` run as real processes on a
redis-server and a Mosquitto of our own; MQTT monitors publish a reading a second; a nurse is
signed in on a headless Chromium. Redis is made to refuse writes (OOM: `maxmemory`; READONLY:
a temporary `REPLICAOF`) for 6 s. Then:
- the screen says NOT MONITORING naming the cause, and `/health` answers 503 with it;
- the pager gets "NOT MONITORING … readings are not being stored: <cause>" (sent directly);
- after recovery both clear, the same processes (no restart) store the readings accepted
  meanwhile, raise an alarm again, and the episode is on record as one clinic-wide alarm.
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

from monitor.accounts import users
from monitor.model.clock import now_ms
from monitor.model.keys import Keys
from monitor.store.embedded import free_port
from tests.configs import alarm_defaults, alarm_rule, config_mapping, mqtt_device, room_entry, write_config
from tests.dashboard_support import chromium, login, wait_page
from tests.fault_support import oom, readonly
from tests.servers import MosquittoProc, RedisProc, kill_quietly
from tests.test_alarms_outbound import subscriber
from tests.waiting import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
HOLD_S = 6.0
ROOMS = ("room-1", "room-2")


class Monitors(threading.Thread):
    """Two MQTT monitors, one JSON reading a second each, every `ts` remembered (the truth)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sent: dict[str, list[int]] = {r: [] for r in ROOMS}
        self.stop_event = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-monitors", protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, room: str, **vals: float) -> int:
        ts = now_ms()
        self.client.publish(f"vw-e2e/{room}/mon", json.dumps({"ts": ts, **vals}), qos=1).wait_for_publish(5)
        self.sent[room].append(ts)
        return ts

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            for r in ROOMS:
                self.publish(r, hr=72, spo2=97)

    def finish(self) -> None:
        self.stop_event.set()
        self.join(5)
        self.client.loop_stop()
        self.client.disconnect()


def banner(d: Any) -> str:
    return d.execute_script("var b=document.getElementById('vw-banner');"
                            "return b && b.style.display !== 'none' ? b.textContent : ''")


def health(url: str) -> tuple[int, dict[str, Any]]:
    r = requests.get(f"{url}/health", timeout=10)
    return r.status_code, r.json()


@pytest.mark.parametrize(("fault", "words"), [(oom, "Redis out of memory"), (readonly, "Redis is a read-only replica")])
def test_redis_refusing_writes_for_6_s_with_every_process_running(fault: Any, words: str, fault_redis: RedisProc,
                                                                  mosquitto_proc: MosquittoProc, clinic_id: str,
                                                                  tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "vitalwatch.toml", config_mapping(
        clinic_id, redis_url=fault_redis.url, mqtt_url=mosquitto_proc.url, data_dir=tmp_path / "data",
        archive_url=f"sqlite:///{tmp_path / 'archive.db'}",
        rooms=[room_entry(r, mqtt_device(f"mon-{r[-1]}", "json", f"vw-e2e/{r}/mon")) for r in ROOMS],
        mqtt={"alerts_topic": "vw-e2e/alerts"}, alerts={"heartbeat_stale_s": 3},
        alarms=alarm_defaults(spo2=alarm_rule(low=90))))
    keys = Keys(clinic_id)
    client = redis.Redis.from_url(fault_redis.url, decode_responses=True)
    users.create_user(client, keys, "nina", "nurse", "nurse-pass-1")
    pager, got = subscriber(mosquitto_proc.port, "vw-e2e/alerts/page", client_id=f"pager-{clinic_id}")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = []
    for role, extra in (("ingest", []), ("alerts", []), ("dashboard", ["--port", str(port)])):
        log = open(tmp_path / f"{role}.log", "wb")  # noqa: SIM115 - closed in finally
        logs.append(log)
        procs[role] = subprocess.Popen([sys.executable, "-m", "monitor", role, "-c", str(cfg), *extra], cwd=ROOT,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    monitors = Monitors(mosquitto_proc.port)
    driver = chromium()
    try:
        wait_for(lambda: health(url)[0] in (200, 503), 30, "the dashboard answering", ignoring=(requests.RequestException,))
        monitors.start()
        login(driver, url, "nina", "nurse-pass-1")
        wait_page(lambda: banner(driver) == "" and health(url)[0] == 200, 45, "monitoring before the fault")
        pids = {r: p.pid for r, p in procs.items()}
        t0 = time.monotonic()
        with fault(fault_redis):
            wait_page(lambda: f"readings are not being stored: {words}" in banner(driver), 10, "the cause on screen")
            on_screen = time.monotonic() - t0
            status, body = wait_for(lambda: (h := health(url))[0] == 503 and h, 10, "/health 503")
            at_health = time.monotonic() - t0
            assert any(f"readings are not being stored: {words}" in p for p in body["problems"]), body
            _topic, page = got.get(timeout=10)
            paged = time.monotonic() - t0
            assert page["room"] == "*" and "readings are not being stored" in page["message"] and page["page"]
            time.sleep(max(0.0, HOLD_S - (time.monotonic() - t0)))  # the fault lasts 6 s
        t1 = time.monotonic()
        wait_page(lambda: banner(driver) == "", 20, "the banner clearing")
        cleared = time.monotonic() - t1
        wait_for(lambda: health(url)[0] == 200, 20, "/health 200 again")
        healthy = time.monotonic() - t1
        # the same processes store what was accepted meanwhile and raise alarms again
        assert {r: p.pid for r, p in procs.items()} == pids and all(p.poll() is None for p in procs.values())
        low = monitors.publish("room-2", hr=70, spo2=82)
        wait_for(lambda: any(f.get("event") == "raised" and f.get("metric") == "spo2" and f.get("room") == "room-2"
                             for _i, f in client.xrange(keys.alerts)), 20, "an alarm after recovery")
        monitors.finish()
        for r in ROOMS:
            stored = wait_for(lambda r=r: (ts := sorted(int(f["ts"]) for _i, f in client.xrange(keys.vitals(r))))
                              and set(monitors.sent[r]) <= set(ts) and ts, 30, f"every reading of {r} stored")
            assert len(stored) == len(set(stored))  # once each
        assert low in {int(f["ts"]) for _i, f in client.xrange(keys.vitals("room-2"))}
        recorded = [f for _i, f in client.xrange(keys.alerts) if f.get("alert") == page["alert"]]
        assert [f["event"] for f in recorded] == ["raised", "cleared"] and recorded[0]["rooms"] == ",".join(ROOMS)
        print(f"\n[figures] {fault.__name__}: NOT MONITORING with the cause on screen {on_screen:.1f} s, /health 503 "
              f"{at_health:.1f} s, page {paged:.1f} s after the fault; screen clear {cleared:.1f} s, /health 200 "
              f"{healthy:.1f} s after recovery")
    finally:
        driver.quit()
        monitors.finish() if monitors.is_alive() else None
        for p in procs.values():
            kill_quietly(p)
        for f in logs:
            f.close()
        pager.loop_stop()
        pager.disconnect()
        client.close()
