"""Acknowledging on a screen ends the alarm everywhere and stops the pager: end to end.

A real alert engine (in-process Worker with its real outbound: the pager outbox and its
sender) on a real Redis and a real Mosquitto, a real dashboard (uvicorn) and a pager subscribed to the alert topic. The SpO2 alarm
is raised with nobody's screen connected, so it is paged (tier 1) on `<topic>/page`; a nurse
acknowledges through the dashboard's API — as the Acknowledge button does — and the pager gets
the `acknowledged` event on the same page topic (and the alert topic) within a moment, with
the alarm row's text."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis
import requests

from dashboard.app import Served
from monitor.accounts import tokens, users
from monitor.alarms.engine import Worker
from monitor.alarms.outbound import DEST_MQTT, MqttSender, Routes, start_senders
from monitor.model.config import parse_config
from monitor.model.keys import Keys
from tests.configs import alarm_defaults, alarm_rule
from tests.dashboard_support import now_ms
from tests.overview_support import FakeIngest
from tests.test_alarms_outbound import subscriber


class Inbox:
    """Everything the pager received, in order; `wait` finds a message in it."""

    def __init__(self, got: queue.Queue) -> None:
        self.got, self.history = got, []

    def wait(self, want: Any, timeout_s: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            while not self.got.empty():
                self.history.append(self.got.get_nowait())
            for topic, body in self.history:
                if want(topic, body):
                    return body
            if time.monotonic() > deadline:
                raise AssertionError(f"the pager never got it; it got {[(t, b['event']) for t, b in self.history]}")
            time.sleep(0.05)


def test_acknowledge_on_a_screen_reaches_the_pager(redis_url: str, mosquitto_proc: Any, tmp_path: Any) -> None:
    clinic = "t-" + uuid.uuid4().hex[:10]
    topic = f"vw-test-{clinic}/alerts"
    cfg = parse_config({
        "clinic": {"id": clinic, "name": "Test"}, "redis": {"url": redis_url},
        "mqtt": {"url": mosquitto_proc.url, "alerts_topic": topic}, "data": {"dir": str(tmp_path)},
        "alerts": {"heartbeat_stale_s": 1},
        "alarms": alarm_defaults(spo2=alarm_rule(low=90)),
        "rooms": [{"id": "room-1", "name": "Room 1", "devices": [
            {"id": "oxi-1", "protocol": "json", "transport": "mqtt", "topic": "vw-test/oxi"}]}]}, source="t.toml")
    keys = Keys(clinic)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    users.create_user(client, keys, "nina", "nurse", "nurse-pass-1")
    token = tokens.issue_token(client, keys, "nina", actor="test")
    pager, got = subscriber(mosquitto_proc.port, f"{topic}/#", mqtt.MQTTv5)
    inbox = Inbox(got)
    out = MqttSender(mosquitto_proc.url, "5", f"alerts-{clinic}")
    ingest = FakeIngest(client, keys, {"oxi-1": "room-1"}).start()
    worker = Worker(cfg, client, keys, owner="w1", outbound=Routes(topic))
    stop = threading.Event()
    senders = start_senders(lambda: redis.Redis.from_url(redis_url, decode_responses=True), keys, "w1",
                            {DEST_MQTT: out}, stop)
    engine = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    served = Served(cfg, redis_url).start()
    try:
        assert out.wait_connected(10)
        engine.start()
        time.sleep(1.5)  # past the engine's start-up grace (heartbeat_stale_s)
        for _ in range(2):
            client.xadd(keys.vitals("room-1"), {"ts": str(now_ms()), "dev": "oxi-1", "spo2": "84"})
        page = inbox.wait(lambda t, b: t == f"{topic}/page" and b["event"] == "raised")
        assert page["tier"] == 1 and page["text"] == "HIGH · Room 1 · SpO2 84 < 90 % · raised"
        r = requests.post(f"{served.url}/api/v1/alerts/{page['alert']}/acknowledge",
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200 and r.json()["acknowledged_by"] == "nina"
        t_ack = time.monotonic()
        ack = inbox.wait(lambda t, b: t == f"{topic}/page" and b["event"] == "acknowledged")
        assert ack["alert"] == page["alert"] and ack["user"] == "nina" and ack["page"] is False
        assert "acknowledged by nina" in ack["text"] and ack["text"].startswith("HIGH · Room 1 · SpO2 84 < 90 %")
        inbox.wait(lambda t, b: t == topic and b["event"] == "acknowledged")
        print(f"\n[figures] acknowledge → pager: {1000 * (time.monotonic() - t_ack):.0f} ms")
        # forwarded once (per topic), even across more ticks
        time.sleep(1.5)
        while not got.empty():
            inbox.history.append(got.get_nowait())
        assert len([1 for t, b in inbox.history if b["event"] == "acknowledged"]) == 2
    finally:
        stop.set()
        engine.join(10)
        for t in senders:
            t.join(5)
        served.stop()
        ingest.stop()
        out.close()
        pager.loop_stop()
        pager.disconnect()
        for k in client.scan_iter(match=keys.prefix.replace("{", "\\{").replace("}", "\\}") + "*"):
            client.delete(k)
        client.close()


pytestmark = pytest.mark.browser  # starts a dashboard: with the slow, whole-system tests
