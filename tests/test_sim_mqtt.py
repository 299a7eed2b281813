"""Simulated MQTT devices against a real Mosquitto (tests/servers.py MosquittoProc)."""

from __future__ import annotations

import json
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest

from devices.simulators.cli import mqtt_target
from devices.simulators.fixtures import simulated_mqtt
from devices.simulators.scenarios import FaultWindow
from devices.simulators.truth import TruthLog
from monitor.model.config import parse_config
from monitor.store.runtime import RuntimeFailure
from tests.waiting import wait_for


class Subscriber:
    """A paho client collecting (topic, payload, qos) with a persistent session."""

    def __init__(self, url_port: int, topic: str, version: str = "5") -> None:
        self.messages: list[tuple[str, bytes, int]] = []
        self.lock = threading.Lock()
        proto = mqtt.MQTTProtocolVersion.MQTTv5 if version == "5" else mqtt.MQTTProtocolVersion.MQTTv311
        kw = {} if version == "5" else {"clean_session": False}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sub-" + uuid.uuid4().hex[:8],
                             protocol=proto, **kw)
        self.topic = topic
        self.subscribed = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self._on_message
        props = None
        if version == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
        self.c.connect("127.0.0.1", url_port, properties=props, **({"clean_start": False} if version == "5" else {}))
        self.c.loop_start()
        assert self.subscribed.wait(5)

    def _on_message(self, c, u, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.qos))

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [m[1] for m in self.messages]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.mark.parametrize("protocol,version", [("json", "5"), ("senml", "3.1.1")])
def test_publishes_qos1_payloads_that_match_the_truth(mosquitto_proc, protocol, version):
    topic = f"vw-test/{uuid.uuid4().hex[:6]}/mon-4"
    sub = Subscriber(mosquitto_proc.port, topic, version)
    truth = TruthLog()
    try:
        with simulated_mqtt(protocol, mosquitto_proc.url, topic, version=version, truth=truth, device="mon-4",
                            room="room-4", speed=60):
            wait_for(lambda: len(sub.payloads()) >= 3, what="3 messages")
        wait_for(lambda: len(sub.payloads()) >= len(truth.of("reading")), timeout_s=5, what="all messages")
    finally:
        sub.close()
    assert all(q == 1 for _, _, q in sub.messages)
    readings = truth.of("reading")
    assert len(sub.payloads()) == len(readings)
    for payload, rec in zip(sub.payloads(), readings, strict=False):
        doc = json.loads(payload)
        if protocol == "json":
            assert doc["ts"] == rec["ts_ms"]
            assert {k: v for k, v in doc.items() if k not in ("ts", "flags")} == rec["values"]
        else:
            assert doc[0]["bn"] == "room-4/mon-4/" and doc[0]["bt"] == rec["ts_ms"] / 1000
            assert {r["n"]: r["v"] for r in doc} == rec["values"]


def test_broker_restart_loses_nothing(mosquitto_proc):
    topic = "vw-test/restart/mon-1"
    sub = Subscriber(mosquitto_proc.port, topic)
    truth = TruthLog()
    try:
        with simulated_mqtt("json", mosquitto_proc.url, topic, truth=truth, device="mon-1"):
            wait_for(lambda: len(sub.payloads()) >= 2, what="first messages")
            mosquitto_proc.restart(down_s=1.5)  # SIGTERM (session saved), down, start again
            n = len(truth.of("reading"))
            wait_for(lambda: len(sub.payloads()) >= n + 2, timeout_s=15, what="messages after restart")
        wait_for(lambda: len({json.loads(p)["ts"] for p in sub.payloads()}) >= len(truth.of("reading")),
                 timeout_s=10, what="every reading")
    finally:
        sub.close()
    got = {json.loads(p)["ts"] for p in sub.payloads()}
    assert {r["ts_ms"] for r in truth.of("reading")} <= got  # QoS 1: at least once, none lost


def test_broker_outage_fault_holds_then_forwards_with_original_times(mosquitto_proc):
    topic = "vw-test/outage/mon-2"
    sub = Subscriber(mosquitto_proc.port, topic)
    truth = TruthLog()
    gaps = []
    try:
        faults = (FaultWindow("broker-outage", at_s=1.0, duration_s=2.0),)
        with simulated_mqtt("json", mosquitto_proc.url, topic, faults=faults, truth=truth, device="mon-2"):
            wait_for(lambda: [r["phase"] for r in truth.of("fault")] == ["start", "end"], what="outage over")
            during = [r["ts_ms"] for r in truth.of("reading")]
            wait_for(lambda: len(sub.payloads()) >= len(during), timeout_s=10, what="held messages")
        arrivals = [json.loads(p)["ts"] for p in sub.payloads()]
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    finally:
        sub.close()
    assert set(during) <= set(arrivals)
    assert arrivals == sorted(arrivals)  # held messages go out oldest first, before newer ones
    assert all(g > 0 for g in gaps)


def test_mqtt_version_and_url_come_from_the_runtime(tmp_path):
    cfg = parse_config({"clinic": {"id": "x"}, "mqtt": {"url": "mqtt://127.0.0.1:1999", "version": "3.1.1"},
                        "redis": {"url": "embedded"}, "data": {"dir": str(tmp_path)},
                        "rooms": [{"id": "r", "devices": [{"id": "m", "protocol": "json", "transport": "mqtt",
                                                           "topic": "t/m"}]}]})
    t = mqtt_target(cfg, {"VITALWATCH_MQTT_USERNAME": "dev", "VITALWATCH_MQTT_PASSWORD": "pw"})
    assert (t.url, t.version, t.username, t.password) == ("mqtt://127.0.0.1:1999", "3.1.1", "dev", "pw")
    (tmp_path / "embedded.json").write_text(json.dumps({"mqtt_url": "mqtt://127.0.0.1:2999", "mqtt_version": "3.1.1"}))
    emb = parse_config({"clinic": {"id": "x"}, "data": {"dir": str(tmp_path)}})  # embedded Redis not running: fine
    with pytest.raises(RuntimeFailure, match="no password for vitalwatch-simulate"):
        mqtt_target(emb, {})  # the embedded broker takes no anonymous publisher
    (tmp_path / "mqtt-credentials.json").write_text(json.dumps({"vitalwatch-simulate": "sim-pw"}))
    t = mqtt_target(emb, {})
    assert (t.url, t.version, t.username, t.password) == ("mqtt://127.0.0.1:2999", "3.1.1", "vitalwatch-simulate",
                                                           "sim-pw")
