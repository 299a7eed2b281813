"""Outbound channel against a real Mosquitto (MQTT v5 and 3.1.1) and a real local webhook."""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import paho.mqtt.client as mqtt
import pytest

from monitor.alarms.model import AlertEvent
from monitor.alarms.outbound import Outbound
from tests.waiting import wait_for

T0 = 1_795_813_200_000


def subscriber(url_port: int, topic: str, version: int) -> tuple[mqtt.Client, queue.Queue]:
    got: queue.Queue = queue.Queue()
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-pager", protocol=version)
    c.on_message = lambda _c, _u, msg: got.put((msg.topic, json.loads(msg.payload)))
    c.on_subscribe = lambda *_a: ready.set()
    c.on_connect = lambda cl, *_a: cl.subscribe(topic, qos=1)
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    assert ready.wait(10)
    return c, got


class Hook(BaseHTTPRequestHandler):
    received: queue.Queue = queue.Queue()

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.put((self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_events_published_and_pages_sent(mosquitto_proc, version):
    proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
    sub, got = subscriber(mosquitto_proc.port, "vw-test/alerts/#", proto)
    httpd = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    out = Outbound(mosquitto_proc.url, version, "vw-test/alerts", f"test-alerts-{version}",
                   webhook_url=f"http://127.0.0.1:{httpd.server_port}/page")
    try:
        assert out.wait_connected(10)
        raised = AlertEvent(T0, "room-1", "room-1.oxi-1.spo2.1", "raised", "physiological", "high",
                            "spo2", "oxi-1", 86, 90, "SpO2 86 % below low limit 90")
        ack = AlertEvent(T0 + 5000, "room-1", "room-1.oxi-1.spo2.1", "acknowledged", "physiological",
                         "high", "spo2", "oxi-1", 86, 90, "ack", "nurse-a")
        out.send(raised, 1)
        out.send(ack, None)
        msgs = [got.get(timeout=10) for _ in range(3)]
        topics = sorted(t for t, _ in msgs)
        assert topics == ["vw-test/alerts", "vw-test/alerts", "vw-test/alerts/page"]
        page = next(p for t, p in msgs if t.endswith("/page"))
        assert page["alert"] == raised.alert and page["tier"] == 1 and page["page"] is True
        assert page["priority"] == "high" and page["value"] == 86 and page["limit"] == 90
        plain = [p for t, p in msgs if t == "vw-test/alerts"]
        assert {p["event"] for p in plain} == {"raised", "acknowledged"}
        assert next(p for p in plain if p["event"] == "acknowledged")["user"] == "nurse-a"
        ctype, body = Hook.received.get(timeout=10)
        assert ctype == "application/json" and body["alert"] == raised.alert and body["tier"] == 1
        assert Hook.received.empty()  # only pages go to the webhook
    finally:
        out.close()
        sub.loop_stop()
        sub.disconnect()
        httpd.shutdown()
    assert out.stats.pages == 1 and out.stats.webhook_sent == 1 and out.stats.publish_failed == 0


def test_events_queued_while_broker_is_down_are_delivered_after(mosquitto_proc):
    out = Outbound(mosquitto_proc.url, "5", "vw-test/alerts", "test-alerts-outage",
                   webhook_url="http://127.0.0.1:9/unreachable")
    try:
        assert out.wait_connected(10)
        mosquitto_proc.stop()
        wait_for(lambda: not out._connected.is_set(), 10, "the client to notice the broker is gone")
        ev = AlertEvent(T0, "room-1", "room-1.-.degraded.1", "escalated", "technical", "high", message="x")
        out.send(ev, 2)  # broker down: held by the client; the webhook is unreachable: counted
        assert out.unconfirmed == 2 and out.stats.acked == 0
        mosquitto_proc.start()
        wait_for(lambda: out.unconfirmed == 0, 20, "both events confirmed after the broker is back")
        assert out.unconfirmed == 0 and out.stats.acked == 2  # the broker confirmed both (PUBACK)
    finally:
        out.close()
    assert out.stats.webhook_failed == 1
