"""The MQTT adapter against a real Mosquitto (ours, on a free port) and real Redis."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import redis

from monitor.model.clock import now_ms
from monitor.store.status import read_status
from tests.mqtt_support import (
    T_MON1,
    T_MON1_STATUS,
    T_MON2,
    T_NIBP1,
    mosquitto_pub,
    mqtt_config,
    running_adapter,
)
from tests.waiting import wait_for


def entries(rclient: redis.Redis, key: str) -> list[dict[str, str]]:
    return [f for _id, f in rclient.xrange(key)]


def test_each_payload_kind_lands_in_its_room_stream(mosquitto_proc, rclient, keys, redis_url, tmp_path: Path):
    cfg = mqtt_config(keys.clinic, redis_url, mosquitto_proc.url, tmp_path / "data")
    port = mosquitto_proc.port
    t0 = now_ms() - 60_000
    with running_adapter(cfg, redis_url, mosquitto_proc.url) as adapter:
        assert adapter.subscribed.wait(10), "the adapter never subscribed"
        mosquitto_pub(port, T_MON1, json.dumps({"ts": t0, "hr": 72, "spo2": 98, "flags": ["low_perfusion"]}))
        t_iso = t0 + 500  # sent as ISO-8601 in UTC+01:00: the offset must be honoured
        iso = datetime.fromtimestamp(t_iso / 1000, timezone(timedelta(hours=1))).isoformat(timespec="milliseconds")
        mosquitto_pub(port, T_MON2, json.dumps({"ts": iso, "rr": 14, "temp": 36.6}))
        mosquitto_pub(port, T_MON1, json.dumps({"ts": t0 + 1000, "spo2": 97, "flags": ["sensor_off"]}))
        before = now_ms()
        mosquitto_pub(port, T_MON2, json.dumps({"hr": 61}))  # no ts → receive time
        mosquitto_pub(port, T_MON2, json.dumps({"ts": now_ms() + 3600_000, "hr": 62}))  # clock far ahead
        mosquitto_pub(port, T_NIBP1, json.dumps([
            {"bn": "room-1/nibp-1/", "bt": (t0 + 2000) / 1000, "n": "sbp", "u": "mmHg", "v": 121},
            {"n": "dbp", "u": "mmHg", "v": 79}, {"n": "map", "u": "mmHg", "v": 93}]))
        mosquitto_pub(port, T_NIBP1, json.dumps([
            {"bt": (t0 + 3000) / 1000, "n": "hr", "u": "beat/min", "v": 70},
            {"n": "hr", "u": "beat/min", "v": 71, "t": 1}, {"n": "spo2", "u": "%", "v": 96, "t": 1}]))
        wait_for(lambda: len(entries(rclient, keys.vitals("room-1"))) >= 5
                 and len(entries(rclient, keys.vitals("room-2"))) >= 3, what="all readings")
        after = now_ms()
        wait_for(lambda: read_status(rclient, keys, ["mon-1"])["mon-1"].get("state") == "online",
                 what="mon-1 online")
    room1 = entries(rclient, keys.vitals("room-1"))
    room2 = entries(rclient, keys.vitals("room-2"))
    assert room1 == [
        {"ts": str(t0), "dev": "mon-1", "hr": "72", "spo2": "98", "flags": "low_perfusion"},
        {"ts": str(t0 + 1000), "dev": "mon-1", "flags": "sensor_off"},
        {"ts": str(t0 + 2000), "dev": "nibp-1", "sbp": "121", "dbp": "79", "map": "93"},
        {"ts": str(t0 + 3000), "dev": "nibp-1", "hr": "70"},
        {"ts": str(t0 + 4000), "dev": "nibp-1", "hr": "71", "spo2": "96"},
    ]
    assert room2[0] == {"ts": str(t_iso), "dev": "mon-2", "rr": "14", "temp": "36.6"}
    assert room2[1]["dev"] == "mon-2" and room2[1]["hr"] == "61" and before <= int(room2[1]["ts"]) <= after
    assert room2[2]["hr"] == "62" and room2[2]["flags"] == "clock_skew"
    assert before <= int(room2[2]["ts"]) <= after
    assert rclient.xlen(keys.rejects) == 0
    status = read_status(rclient, keys, ["mon-1", "nibp-1", "mon-2"])
    assert status["nibp-1"]["transport"] == "mqtt" and status["nibp-1"]["room"] == "room-1"
    assert status["nibp-1"]["last_ts"] == str(t0 + 4000)
    assert status["mon-2"]["frames"] == "3"


# A date and time with no UTC offset: which instant it names is unknowable.
NAIVE_LOCAL_TIME = datetime(2031, 1, 2, 10).isoformat(sep=" ", timespec="minutes")

BAD = [  # (topic, payload, mosquitto_pub extra args, expected reason)
    (T_MON1, b"x" * (64 * 1024 + 10), (), "too_large"),
    (T_MON1, b'{"hr": 72, "note": "\xff"}', (), "bad_utf8"),
    (T_MON1, b"hr=72", (), "invalid_json"),
    (T_MON1, b"[72, 98]", (), "bad_shape"),
    (T_MON1, b'{"hr": 72, "glucose": 5.5}', (), "unknown_metric"),
    (T_MON1, b'{"hr": 72, "spo2": 140}', (), "out_of_range"),
    (T_MON1, json.dumps({"ts": NAIVE_LOCAL_TIME, "hr": 72}).encode(), (), "bad_ts"),
    (T_MON1, b'{"hr": "seventy"}', (), "bad_value"),
    (T_MON1, b'{"hr": 72, "flags": ["on_fire"]}', (), "unknown_flag"),
    (T_NIBP1, b'[{"n": "sbp", "u": "kPa", "v": 16}]', (), "bad_unit"),
    (T_MON2, b'{"hr": 70}', ("-r",), "retained"),  # published before the adapter subscribes
    (T_MON1_STATUS, b"maybe", (), "bad_status"),
    ("vitalwatch/room-9/oxi-9", b'{"hr": 70}', (), "unknown_topic"),
]


def test_bad_payloads_go_to_rejects_and_the_adapter_keeps_running(
        mosquitto_proc, rclient, keys, redis_url, tmp_path: Path):
    cfg = mqtt_config(keys.clinic, redis_url, mosquitto_proc.url, tmp_path / "data")
    port = mosquitto_proc.port
    # a retained message is replayed on subscribe: old, not a live measurement. (Delivered
    # live, a retained publish arrives without the retain flag and is a normal reading.)
    retained = [b for b in BAD if "-r" in b[2]]
    for topic, payload, extra, _reason in retained:
        mosquitto_pub(port, topic, payload, *extra)
    with running_adapter(cfg, redis_url, mosquitto_proc.url) as adapter:
        assert adapter.subscribed.wait(10), "the adapter never subscribed"
        for topic, payload, extra, _reason in BAD:
            if "-r" not in extra:
                mosquitto_pub(port, topic, payload, *extra)
        mosquitto_pub(port, T_MON1, b'{"hr": 66}')  # and a good one after all that
        wait_for(lambda: rclient.xlen(keys.rejects) >= len(BAD), what="all rejects")
        wait_for(lambda: any(f.get("hr") == "66" for f in entries(rclient, keys.vitals("room-1"))),
                 what="the good reading after the bad ones")
        wait_for(lambda: read_status(rclient, keys, ["mon-1"])["mon-1"].get("rejects:invalid_json"),
                 what="reject counters in the device status")
    rejects = entries(rclient, keys.rejects)
    assert Counter(r["reason"] for r in rejects) == Counter(reason for *_x, reason in BAD)
    by_reason = {r["reason"]: r for r in rejects}
    for topic, _payload, _extra, reason in BAD:
        assert by_reason[reason]["source"] == topic
        assert by_reason[reason]["detail"]
    assert by_reason["too_large"]["raw"] == "x" * 512 + "…"  # truncated to 512 bytes
    assert by_reason["bad_utf8"]["raw"].endswith('"\\xff"}')  # escaped, not dropped
    # out_of_range keeps the reading's other values
    assert {"ts", "dev", "hr"} <= set(entries(rclient, keys.vitals("room-1"))[0])
    status = read_status(rclient, keys, ["mon-1", "nibp-1"])
    assert status["mon-1"]["rejects:too_large"] == "1" and status["nibp-1"]["rejects:bad_unit"] == "1"


def test_reject_floods_are_rate_limited_but_counted(mosquitto_proc, rclient, keys, redis_url, tmp_path: Path):
    cfg = mqtt_config(keys.clinic, redis_url, mosquitto_proc.url, tmp_path / "data")
    with running_adapter(cfg, redis_url, mosquitto_proc.url) as adapter:
        assert adapter.subscribed.wait(10), "the adapter never subscribed"
        for _ in range(20):
            mosquitto_pub(mosquitto_proc.port, T_MON2, b"garbage")
        # one reject at once, then one summary carrying the count of the others
        wait_for(lambda: sum(int(r["detail"].split("+")[1].split()[0])
                             for r in entries(rclient, keys.rejects) if "+" in r["detail"]) +
                 sum(1 for r in entries(rclient, keys.rejects) if "+" not in r["detail"]) == 20,
                 what="every garbage message accounted for in rejects")
        wait_for(lambda: read_status(rclient, keys, ["mon-2"])["mon-2"].get("rejects:invalid_json") == "20",
                 what="all 20 counted in the device status")
    assert rclient.xlen(keys.rejects) < 20


def test_made_up_topics_share_one_reject_budget(mosquitto_proc, rclient, keys, redis_url, tmp_path: Path):
    """2,000 messages, each to a topic no device owns, cost a handful of `rejects` entries
    (keyed by device, never by topic), and every one of them is still counted."""
    cfg = mqtt_config(keys.clinic, redis_url, mosquitto_proc.url, tmp_path / "data")
    n = 2000
    with running_adapter(cfg, redis_url, mosquitto_proc.url) as adapter:
        adapter.subscribed.wait(10)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flood", protocol=mqtt.MQTTv5)
        pub.connect("127.0.0.1", mosquitto_proc.port)
        pub.loop_start()
        for i in range(n):
            pub.publish(f"vitalwatch/made-up-{i}/x", b'{"hr": 70}', qos=1).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()
        wait_for(lambda: adapter.unknown_topic_count == n, what="every message seen")

        def represented() -> int:
            # a reject stands for itself plus those held before it ("+N more suppressed before
            # this"); a summary ("+N more like this suppressed") stands for the N it held
            total = 0
            for r in entries(rclient, keys.rejects):
                m = re.search(r"\+(\d+) more", r["detail"])
                total += int(m.group(1)) if m and r["detail"].startswith("+") else 1 + (int(m.group(1)) if m else 0)
            return total

        wait_for(lambda: represented() == n, what="every message accounted for in rejects")
        written = rclient.xlen(keys.rejects)
    assert written < 50, written  # not one per topic


def test_status_topic_and_silence_timeout(mosquitto_proc, rclient, keys, redis_url, tmp_path: Path):
    cfg = mqtt_config(keys.clinic, redis_url, mosquitto_proc.url, tmp_path / "data", silence_s=1.0)
    port = mosquitto_proc.port

    def state(dev: str) -> str | None:
        return read_status(rclient, keys, [dev])[dev].get("state")

    with running_adapter(cfg, redis_url, mosquitto_proc.url) as adapter:
        assert adapter.subscribed.wait(10), "the adapter never subscribed"
        mosquitto_pub(port, T_MON1, b'{"hr": 70}')
        wait_for(lambda: state("mon-1") == "online", what="online after a valid reading")
        mosquitto_pub(port, T_MON1_STATUS, b'{"state": "offline"}', "-r")  # a last will, retained
        wait_for(lambda: state("mon-1") == "offline", what="offline from the status topic")
        mosquitto_pub(port, T_MON1_STATUS, b"online", "-r")
        wait_for(lambda: state("mon-1") == "silent", what="silent: says online, sends nothing")
        wait_for(lambda: state("nibp-1") == "offline", what="offline after silence_s with nothing heard")
        detail = read_status(rclient, keys, ["nibp-1"])["nibp-1"]["detail"]
        assert "no message for 1 s" in detail
    assert state("mon-2") == "offline"  # the adapter stopped: said so
    assert read_status(rclient, keys, ["mon-2"])["mon-2"]["detail"] == "ingest stopped"
