"""Pure parts of the MQTT adapter: subscription plan, status payloads, device state, ack order."""

from __future__ import annotations

import pytest

from devices.mqtt_adapter import AckSequencer, device_state
from devices.mqtt_plan import parse_status, plan_subscriptions, slot_client_id
from devices.transports.mqtt import MqttUrlError, parse_url
from monitor.model.config import parse_config
from tests.configs import config_mapping


def cfg_with(mqtt: dict | None = None, extra_room: bool = False):
    rooms = [{"id": "room-1", "devices": [
        {"id": "oxi-1", "protocol": "masimo-ascii", "transport": "serial", "port": "/dev/null"},
        {"id": "mon-1", "protocol": "json", "transport": "mqtt", "topic": "vitalwatch/room-1/mon-1",
         "status_topic": "vitalwatch/room-1/mon-1/status"},
        {"id": "gw-1", "protocol": "senml", "transport": "mqtt", "topic": "gateways/gw-1"}]}]
    if extra_room:
        rooms.append({"id": "room-2", "devices": [
            {"id": "mon-2", "protocol": "json", "transport": "mqtt", "topic": "vitalwatch/room-2/mon-2"}]})
    return parse_config(config_mapping("c1", rooms=rooms, mqtt=mqtt or {}))


def test_plan_all_devices_watches_first_levels_without_overlap():
    cfg = cfg_with()
    plan = plan_subscriptions(cfg, cfg.devices())
    assert set(plan.routes) == {"vitalwatch/room-1/mon-1", "gateways/gw-1"}
    assert set(plan.status_routes) == {"vitalwatch/room-1/mon-1/status"}
    assert plan.watch == ("gateways/#", "vitalwatch/#")
    assert plan.filters == ("gateways/#", "vitalwatch/#")  # device topics covered, not repeated
    assert "vitalwatch/alerts" in plan.ignored
    assert plan.client_id.startswith("vitalwatch-ingest-c1-")


def test_plan_subset_subscribes_exact_topics_and_ignores_others():
    cfg = cfg_with(extra_room=True)
    mine = [(r, d) for r, d in cfg.devices() if r.id == "room-2"]
    plan = plan_subscriptions(cfg, mine)
    assert plan.watch == ()
    assert plan.filters == ("vitalwatch/room-2/mon-2",)
    assert {"vitalwatch/room-1/mon-1", "vitalwatch/room-1/mon-1/status", "gateways/gw-1"} <= plan.ignored
    other = plan_subscriptions(cfg, [(r, d) for r, d in cfg.devices() if r.id == "room-1"])
    assert other.client_id != plan.client_id  # another selection, another session


def test_plan_shared_group_and_explicit_watch_and_client_id():
    cfg = cfg_with({"shared_group": "ingest", "watch_topics": ["vitalwatch/#"], "client_id": "vw-a"})
    plan = plan_subscriptions(cfg, cfg.devices())
    assert plan.filters == ("$share/ingest/vitalwatch/#", "$share/ingest/gateways/gw-1")
    assert plan.client_id == "vw-a"
    assert slot_client_id("vw-a", 0) == "vw-a" and slot_client_id("vw-a", 2) == "vw-a-2"
    off = plan_subscriptions(cfg_with({"watch_topics": []}), cfg.devices())
    assert off.watch == () and len(off.filters) == 3


@pytest.mark.parametrize("payload, state", [
    (b"online", "online"), (b" OFFLINE\n", "offline"), (b'{"state": "offline"}', "offline"),
    (b'{"state": "Online", "battery": 80}', "online"), (b"bye", None), (b'{"state": 1}', None),
    (b"[1]", None), (b"\xff", None),
])
def test_parse_status(payload, state):
    assert parse_status(payload) == state


S = 10_000


@pytest.mark.parametrize("kw, state", [
    ({"broker_up": False}, "connecting"),
    ({"reported": "offline", "last_valid_ms": 99_000}, "offline"),
    ({"last_valid_ms": 95_000}, "online"),
    ({"last_valid_ms": 80_000, "last_msg_ms": 99_000}, "silent"),  # messages, none valid
    ({"reported": "online"}, "silent"),
    ({"up_since_ms": 95_000}, "connecting"),  # just connected, nothing yet
    ({"up_since_ms": 50_000}, "offline"),  # nothing at all for the timeout
    ({"last_valid_ms": 80_000, "last_msg_ms": 80_000}, "offline"),
])
def test_device_state(kw, state):
    args = {"broker_up": True, "reported": None, "last_valid_ms": None, "last_msg_ms": None,
            "up_since_ms": 0, "now_ms": 100_000, "silence_ms": S} | kw
    assert device_state(**args)[0] == state


def test_acks_leave_in_arrival_order_and_skip_qos0():
    sent: list[int] = []
    seq = AckSequencer(lambda mid, qos, gen: sent.append(mid))
    d1 = seq.add(1, 1, 0, 2)
    d2 = seq.add(2, 1, 0, 1)
    seq.add(3, 1, 0, 0)  # nothing to store (e.g. an ignored topic): waits for 1 and 2
    d2()
    assert sent == []
    d1()
    assert sent == []
    d1()
    assert sent == [1, 2, 3]
    seq.add(4, 0, 0, 0)  # QoS 0: nothing to acknowledge
    assert sent == [1, 2, 3] and seq.pending == 0


@pytest.mark.parametrize("url, host, port, tls", [
    ("mqtt://broker", "broker", 1883, False), ("mqtts://b.example:8884", "b.example", 8884, True),
    ("tcp://127.0.0.1:1884", "127.0.0.1", 1884, False), ("ssl://h", "h", 8883, True),
])
def test_parse_url(url, host, port, tls):
    a = parse_url(url)
    assert (a.host, a.port, a.tls) == (host, port, tls)


def test_parse_url_refuses_other_schemes():
    with pytest.raises(MqttUrlError):
        parse_url("http://broker")
