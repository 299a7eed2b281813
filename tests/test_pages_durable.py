"""Acceptance: a page survives an alerts-process crash during a broker outage.

`vitalwatch alerts` runs as a real process on real Redis and a Mosquitto of our own, with a
webhook that answers 503. The broker is stopped, a high-priority alarm is raised with no
screen watching (a page), the process is killed with -9 while the page waits, and a new
process is started. Once the broker and the webhook are back, the page arrives on the page
topic and at the webhook — from the outbox in Redis, not from the dead process's memory.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from monitor.alarms.outbound import DEST_MQTT, DEST_WEBHOOK
from monitor.model.clock import now_ms
from monitor.store import heartbeat
from monitor.store.outbox import Outbox
from monitor.store.status import publish_status
from tests.configs import alarm_defaults, alarm_rule, config_mapping, room_entry, serial_device, write_config
from tests.servers import kill_quietly
from tests.test_alarms_outbound import Hook, subscriber
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_page_survives_kill_9_of_the_alerts_process_during_a_broker_outage(tmp_path, rclient, keys, clinic_id,
                                                                           redis_url, mosquitto_proc) -> None:
    hook = Hook([503] * 1000)  # the webhook is down too (answers 503) until we clear its plan
    cfg_path = write_config(tmp_path / "vitalwatch.toml", config_mapping(
        clinic_id, redis_url=redis_url, mqtt_url=mosquitto_proc.url, data_dir=tmp_path / "data",
        archive_url=f"sqlite:///{tmp_path / 'archive.db'}", rooms=[room_entry("room-1", serial_device("mon-1"))],
        mqtt={"alerts_topic": "vw-dur/alerts"},
        alerts={"owner_ttl_s": 2, "webhook_url": hook.url, "webhook_timeout_s": 2},
        alarms=alarm_defaults(sbp=alarm_rule(high=180))))
    pager, got = subscriber(mosquitto_proc.port, "vw-dur/alerts/page", client_id=f"pager-{clinic_id}",
                            persistent=True)
    stop = threading.Event()

    def fresh() -> None:  # ingest's heartbeat and the device's status: no technical alarm
        c = redis.Redis.from_url(redis_url, decode_responses=True)
        while not stop.wait(0.5):
            heartbeat.beat(c, keys, "ingest", "test", now_ms())
            publish_status(c, keys, "mon-1", {"room": "room-1", "state": "online", "last_ts": now_ms(),
                                              "since_ms": now_ms()})
        c.close()

    side = threading.Thread(target=fresh, daemon=True)
    side.start()
    procs: list[subprocess.Popen[bytes]] = []

    def start_alerts() -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"alerts-{len(procs)}.log", "wb")  # noqa: SIM115 - the child keeps it
        p = subprocess.Popen([sys.executable, "-m", "monitor", "alerts", "-c", str(cfg_path)], cwd=ROOT,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        return p

    try:
        first = start_alerts()
        wait_for(lambda: rclient.get(keys.room_owner("room-1")), 30, "the worker owning room-1")
        mosquitto_proc.stop()  # the broker goes away (its persistence keeps the pager's session)
        rclient.xadd(keys.vitals("room-1"), {"ts": str(now_ms()), "dev": "mon-1", "sbp": "204"})
        raised = wait_for(lambda: [f for _i, f in rclient.xrange(keys.alerts)
                                   if f.get("event") == "raised" and f.get("metric") == "sbp"], 15, "the alarm")
        alert = raised[0]["alert"]
        mqtt_box, hook_box = Outbox(rclient, keys, DEST_MQTT), Outbox(rclient, keys, DEST_WEBHOOK)
        wait_for(lambda: hook.answers, 15, "the webhook tried (and refused with 503)")
        assert any(m.key == alert and m.kind == "alert-page" for m in mqtt_box.pending())
        assert [m.key for m in hook_box.pending()] == [alert]
        first.send_signal(signal.SIGKILL)  # the page is held nowhere but in Redis now
        first.wait(10)
        start_alerts()
        mosquitto_proc.start()
        hook.plan.clear()  # the webhook answers 204 from now on
        topic, page = got.get(timeout=60)
        assert topic == "vw-dur/alerts/page" and page["alert"] == alert and page["tier"] == 1 and page["page"]
        _ctype, body = hook.received.get(timeout=60)
        assert body["alert"] == alert and body["tier"] == 1
        wait_for(lambda: hook_box.pending_count() == 0 and mqtt_box.pending_count() == 0, 20, "outboxes settled")
        assert page["message"] == "SBP 204 > 180 mmHg" and page["text"].startswith("HIGH · room-1 · SBP 204")
    finally:
        stop.set()
        for p in procs:
            kill_quietly(p)
        side.join(5)
        pager.loop_stop()
        pager.disconnect()
        hook.close()
