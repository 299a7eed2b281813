"""Outbound channel against a real Mosquitto (MQTT v5 and 3.1.1), a real local webhook and
real Redis: the transports' answers, the durable outbox path (retries with backoff, order,
refusals kept) and the direct path for pages that must not depend on Redis."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis

from monitor.alarms.model import AlertEvent
from monitor.alarms.outbound import (
    DEST_MQTT,
    DEST_WEBHOOK,
    DirectPager,
    MqttSender,
    Routes,
    WebhookSender,
    outbox_entries,
    start_senders,
)
from monitor.model.keys import Keys
from monitor.store.outbox import Delivered, Message, Outbox, Refused, Retry
from tests.waiting import wait_for

T0 = 1_795_813_200_000
RAISED = AlertEvent(T0, "room-1", "room-1.oxi-1.spo2.1", "raised", "physiological", "high",
                    "spo2", "oxi-1", 86, 90, "SpO2 86 % below low limit 90")
ACK = AlertEvent(T0 + 5000, "room-1", "room-1.oxi-1.spo2.1", "acknowledged", "physiological",
                 "high", "spo2", "oxi-1", 86, 90, "ack", "nurse-a")


def subscriber(port: int, topic: str, version: int = mqtt.MQTTv5, client_id: str = "test-pager",
               persistent: bool = False) -> tuple[mqtt.Client, queue.Queue]:
    """A pager: subscribed QoS 1 to `topic`; `persistent` keeps its session (and what the broker
    holds for it) across its own disconnects and a broker restart."""
    got: queue.Queue = queue.Queue()
    ready = threading.Event()
    kw: dict[str, Any] = {}
    if version == mqtt.MQTTv311:
        kw["clean_session"] = not persistent
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **kw)
    c.on_message = lambda _c, _u, msg: got.put((msg.topic, json.loads(msg.payload)))
    c.on_subscribe = lambda *_a: ready.set()
    c.on_connect = lambda cl, *_a: cl.subscribe(topic, qos=1)
    if version == mqtt.MQTTv5 and persistent:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", port, clean_start=False, properties=props)
    else:
        c.connect("127.0.0.1", port)
    c.loop_start()
    assert ready.wait(10)
    return c, got


class Hook:
    """A local webhook: answers each POST with the next status of `plan` (then 204)."""

    def __init__(self, plan: list[int] | None = None) -> None:
        self.plan = list(plan or [])
        self.received: queue.Queue = queue.Queue()
        self.answers: list[int] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = hook.plan.pop(0) if hook.plan else 204
                hook.answers.append(status)
                if status < 300:
                    hook.received.put((self.headers["Content-Type"], json.loads(body)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/page"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def msg(body: bytes, **meta: str) -> Message:
    return Message("1-0", DEST_MQTT, "alert-page", body.decode(), meta=meta)


def test_routes_put_every_event_on_the_topic_and_pages_also_on_the_page_topic_and_webhook() -> None:
    r = Routes("vw/alerts", webhook=True)
    plain, page = r.messages(ACK, None), r.messages(RAISED, 1)
    assert [(m.dest, m.meta.get("topic"), m.kind) for m in plain] == [(DEST_MQTT, "vw/alerts", "alert-event")]
    assert [(m.dest, m.meta.get("topic"), m.kind) for m in page] == [
        (DEST_MQTT, "vw/alerts", "alert-event"), (DEST_MQTT, "vw/alerts/page", "alert-page"),
        (DEST_WEBHOOK, None, "alert-page")]
    body = json.loads(page[0].body)
    assert body["alert"] == RAISED.alert and body["tier"] == 1 and body["page"] is True
    assert [m.dest for m in Routes("vw/alerts").messages(RAISED, 1)] == [DEST_MQTT, DEST_MQTT]  # no webhook
    (dest, fields), *_ = outbox_entries(page, RAISED.alert, T0)
    assert dest == DEST_MQTT and fields["key"] == RAISED.alert and json.loads(fields["meta"]) == {"topic": "vw/alerts"}


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_mqtt_sender_answers_delivered_only_after_the_broker_acknowledges(mosquitto_proc, version: str) -> None:
    sub, got = subscriber(mosquitto_proc.port, "vw-test/alerts/#",
                          mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311)
    s = MqttSender(mosquitto_proc.url, version, f"test-sender-{version}", puback_timeout_s=2)
    try:
        assert s.wait_connected(10)
        assert s(msg(b'{"a":1}', topic="vw-test/alerts/page")) == Delivered("PUBACK")
        assert got.get(timeout=10) == ("vw-test/alerts/page", {"a": 1})
        assert isinstance(s(msg(b"{}")), Refused)  # no topic: kept for an admin, not retried forever
        mosquitto_proc.stop()
        wait_for(lambda: not s.connected.is_set(), 10, "the sender noticing the broker is gone")
        out = s(msg(b'{"a":2}', topic="vw-test/alerts"))
        assert isinstance(out, Retry) and "not connected" in out.reason
    finally:
        s.close()
        sub.loop_stop()
        sub.disconnect()


def test_webhook_sender_retries_5xx_and_network_errors_and_keeps_4xx_refusals() -> None:
    h = Hook([503, 429, 400])
    try:
        w = WebhookSender(h.url, timeout_s=2)
        assert isinstance(w(msg(b'{"x":1}')), Retry)  # 503
        assert isinstance(w(msg(b'{"x":1}')), Retry)  # 429
        refused = w(msg(b'{"x":1}'))  # 400: the receiver does not want it
        assert isinstance(refused, Refused) and "HTTP 400" in refused.reason
        assert w(msg(b'{"x":1}')) == Delivered("HTTP 204")
        assert h.received.get(timeout=2)[0] == "application/json"
    finally:
        h.close()
    assert isinstance(WebhookSender("http://127.0.0.1:9/none", timeout_s=1)(msg(b"{}")), Retry)


def enqueue(client: redis.Redis, keys: Keys, routes: Routes, event: AlertEvent, tier: int | None) -> None:
    pipe = client.pipeline(transaction=True)
    for dest, fields in outbox_entries(routes.messages(event, tier), event.alert, event.ts_ms):
        pipe.xadd(keys.outbox(dest), fields)
    pipe.execute()


def test_outbox_senders_deliver_in_order_and_retry_the_webhook_with_backoff(rclient, keys, mosquitto_proc) -> None:
    sub, got = subscriber(mosquitto_proc.port, "vw-test/alerts/#")
    h = Hook([503, 503, 500])  # the webhook fails three times, then takes the page
    routes = Routes("vw-test/alerts", webhook=True)
    s = MqttSender(mosquitto_proc.url, "5", "test-outbox-sender")
    stop = threading.Event()
    threads = start_senders(lambda: _client_like(rclient), keys, "w1",
                            {DEST_MQTT: s, DEST_WEBHOOK: WebhookSender(h.url, timeout_s=2)}, stop)
    try:
        enqueue(rclient, keys, routes, RAISED, 1)
        enqueue(rclient, keys, routes, ACK, None)
        msgs = [got.get(timeout=15) for _ in range(3)]
        assert [(t, p["event"]) for t, p in msgs] == [("vw-test/alerts", "raised"), ("vw-test/alerts/page", "raised"),
                                                      ("vw-test/alerts", "acknowledged")]
        ctype, body = h.received.get(timeout=30)
        assert ctype == "application/json" and body["alert"] == RAISED.alert and body["tier"] == 1
        assert h.answers == [503, 503, 500, 204]  # retried, then delivered once
        wait_for(lambda: Outbox(rclient, keys, DEST_WEBHOOK).pending_count() == 0, 10, "the webhook outbox settled")
        wait_for(lambda: Outbox(rclient, keys, DEST_MQTT).pending_count() == 0, 10, "the MQTT outbox settled")
        assert Outbox(rclient, keys, DEST_WEBHOOK).state()["delivered"] == "1"
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        s.close()
        h.close()
        sub.loop_stop()
        sub.disconnect()


def _client_like(c: redis.Redis) -> redis.Redis:
    """A new client to the same server as `c` (each sender thread has its own)."""
    kw = c.connection_pool.connection_kwargs
    return redis.Redis(host=kw.get("host", "127.0.0.1"), port=kw.get("port", 6379), db=kw.get("db", 0),
                       password=kw.get("password"), decode_responses=True)


def test_a_refused_page_is_kept_for_admins_and_the_queue_goes_on(rclient, keys, mosquitto_proc) -> None:
    h = Hook([400])
    routes = Routes("vw-test/alerts", webhook=True)
    stop = threading.Event()
    threads = start_senders(lambda: _client_like(rclient), keys, "w1",
                            {DEST_WEBHOOK: WebhookSender(h.url, timeout_s=2)}, stop)
    try:
        enqueue(rclient, keys, routes, RAISED, 1)
        second = AlertEvent(T0 + 1, "room-2", "room-2.oxi-2.spo2.2", "escalated", "physiological", "high")
        enqueue(rclient, keys, routes, second, 2)
        _ctype, body = h.received.get(timeout=15)
        assert body["alert"] == second.alert  # the first was refused; the next one still went
        failed = wait_for(lambda: Outbox(rclient, keys, DEST_WEBHOOK).failed(), 10, "the refusal kept")
        assert failed[0].message.key == RAISED.alert and "HTTP 400" in failed[0].reason
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        h.close()


class FakeClock:
    def __init__(self) -> None:
        self.s = 0.0

    def __call__(self) -> float:
        return self.s


def test_direct_pager_retries_from_memory_until_the_broker_is_back(mosquitto_proc, hook: Hook) -> None:
    """The page that says monitoring stopped does not touch Redis: held in memory, retried."""
    sub, got = subscriber(mosquitto_proc.port, "vw-test/alerts/#", client_id="direct-pager-sub", persistent=True)
    s = MqttSender(mosquitto_proc.url, "5", "test-direct", puback_timeout_s=2)
    pager = DirectPager(Routes("vw-test/alerts", webhook=True), s, WebhookSender(hook.url, timeout_s=2))
    stop = threading.Event()
    try:
        assert s.wait_connected(10)
        mosquitto_proc.stop()
        wait_for(lambda: not s.connected.is_set(), 10, "the sender noticing the broker is gone")
        stopped = AlertEvent(T0, "*", "*.-.not_storing.1", "raised", "technical", "high",
                             message="NOT MONITORING: readings are not being stored: Redis out of memory")
        pager.start(stop)
        pager.page(stopped, 1)
        assert hook.received.get(timeout=10)[1]["alert"] == stopped.alert  # the webhook is up: at once
        wait_for(lambda: pager.stats["attempts"] >= 4, 15, "MQTT tries while the broker is down")
        assert pager.held == 2  # the event topic and the page topic
        mosquitto_proc.start()
        topics = sorted(wait_for(lambda: got.qsize() >= 2 and [got.get_nowait()[0] for _ in range(2)], 30,
                                 "the page once the broker is back"))
        assert topics == ["vw-test/alerts", "vw-test/alerts/page"]
        wait_for(lambda: pager.held == 0, 10, "nothing held")
    finally:
        stop.set()
        s.close()
        sub.loop_stop()
        sub.disconnect()


def test_direct_pager_is_bounded_in_time_and_size() -> None:
    clock = FakeClock()
    calls = {"n": 0}

    class Down:
        def publish(self, topic: str, body: bytes) -> Any:
            calls["n"] += 1
            return Retry("broker down")

    pager = DirectPager(Routes("t"), Down(), None, give_up_s=60, max_held=3, clock=clock)  # type: ignore[arg-type]
    ev = AlertEvent(T0, "*", "*.-.x.1", "raised", "technical", "high")
    pager.page(ev, 1)
    pager.page(ev, 1)  # 4 messages for a bound of 3: the oldest is dropped (and logged)
    assert pager.held == 3 and pager.stats["dropped"] == 1
    waits = []
    for _ in range(8):
        waits.append(pager.step())
        clock.s += waits[-1]
    assert max(waits) <= 10.0 and waits[3] > waits[1]  # backoff, capped
    clock.s = 61
    pager.step()
    assert pager.held == 0 and pager.stats["dropped"] == 4
