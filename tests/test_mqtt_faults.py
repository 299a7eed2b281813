"""The MQTT adapter under storage faults, against a real Mosquitto and Redis servers of ours.

- flow control: during a long Redis outage the adapter holds at most `receive_maximum`
  messages (the broker keeps the rest, unacknowledged), also across a broker restart, and
  stores every message once afterwards — ts-less ones too (a redelivery is taken over,
  not stored again with a new receive time);
- a SenML-heavy redelivery to a fresh process (stored but never acknowledged, deep in a
  busy stream) is recognised reading by reading;
- hostile payloads are refusals with a reason, never a traceback per message;
- a device clock 60 s behind does not make the device look silent;
- nor do readings that wait briefly to be stored after ingest restarts (a replay, a slow
  link): its status says when it was last heard, not only when Redis last confirmed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from devices.mqtt_adapter import MqttAdapter
from devices.transports.mqtt import MqttSettings, Publisher
from monitor.alarms.engine import Worker
from monitor.model.clock import now_ms
from monitor.model.config import parse_config
from monitor.model.keys import Keys
from monitor.store import heartbeat, streams
from monitor.store.status import read_status
from tests.fault_system import LinkProxy
from tests.mqtt_support import (
    T_MON1,
    T_MON2,
    T_NIBP1,
    SteadyPublisher,
    TslessPublisher,
    mosquitto_pub,
    mqtt_config,
    mqtt_rooms,
    running_adapter,
    stream_ts,
)
from tests.servers import MosquittoProc, RedisProc
from tests.waiting import wait_for


class Peak(threading.Thread):
    """Samples a value every few ms and keeps its maximum."""

    def __init__(self, sample) -> None:  # noqa: ANN001
        super().__init__(daemon=True)
        self.sample, self.peak, self.halt = sample, 0, threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak = max(self.peak, self.sample())
            self.halt.wait(0.005)

    def stop(self) -> int:
        self.halt.set()
        self.join(5)
        return self.peak


def test_long_redis_outage_holds_at_most_receive_maximum_and_loses_nothing(
        mosquitto_proc: MosquittoProc, tmp_path: Path) -> None:
    rproc = RedisProc(tmp_path / "redis").start()
    keys = Keys("flow")
    cfg = mqtt_config(keys.clinic, rproc.url, mosquitto_proc.url, tmp_path / "data", receive_maximum=20)
    client = redis.Redis.from_url(rproc.url, decode_responses=True)
    try:
        with running_adapter(cfg, rproc.url, mosquitto_proc.url) as adapter:
            adapter.subscribed.wait(10)
            held = Peak(lambda: max(adapter.acks.pending, adapter.writer.storage().pending))
            held.start()
            rproc.kill()  # a long outage begins
            with_ts = SteadyPublisher(mosquitto_proc.url, T_MON2)  # 50/s, ts 20 ms apart: real time
            tsless = TslessPublisher(mosquitto_proc.url, T_MON1, rate_hz=100)
            with_ts.start()
            tsless.start()
            wait_for(lambda: adapter.acks.pending >= 20, what="the adapter holding its maximum")
            wait_for(lambda: len(with_ts.sent_ts) >= 200, what="many more published meanwhile")
            assert adapter.writer.storage().state == "failing"
            mosquitto_proc.restart()  # the broker goes away and back: redeliveries come
            wait_for(lambda: adapter.acks.pending >= 20 and len(with_ts.sent_ts) >= 400,
                     what="reconnected, holding again, more published")
            rproc.start()  # Redis back
            sent = with_ts.finish()
            pairs = tsless.finish()
            # barriers: the broker delivers a topic's messages in order, redeliveries first, so
            # once these are stored every earlier message — and any duplicate — is too
            barrier_ts = max(max(sent) + 20, now_ms())
            mosquitto_pub(mosquitto_proc.port, T_MON2, json.dumps({"ts": barrier_ts, "hr": 99}))
            mosquitto_pub(mosquitto_proc.port, T_MON1, json.dumps({"hr": 300, "spo2": 100}))
            wait_for(lambda: barrier_ts in stream_ts(client, keys.vitals("room-2"), "mon-2"), 60,
                     "the barrier after the messages with ts")
            wait_for(lambda: any(f.get("hr") == "300" for _i, f in client.xrange(keys.vitals("room-1"))), 60,
                     "the barrier after the ts-less messages")
            peak = held.stop()
        got = [ts for ts in stream_ts(client, keys.vitals("room-2"), "mon-2") if ts != barrier_ts]
        assert sorted(got) == sorted(sent) and len(got) == len(sent), "with ts: lost or duplicated"
        stored_pairs = [(f["hr"], f["spo2"]) for _i, f in client.xrange(keys.vitals("room-1"))
                        if f.get("dev") == "mon-1" and f.get("hr") != "300"]
        dupes = [p for p, n in Counter(stored_pairs).items() if n > 1]
        assert not dupes and Counter(stored_pairs) == Counter(pairs), f"ts-less duplicated: {dupes[:5]}"
        # memory bounded: messages held (and their readings) never above receive_maximum,
        # though ~1,000 more waited at the broker and the broker restarted mid-outage
        assert peak <= 20, f"held {peak} > receive_maximum 20"
    finally:
        client.close()
        rproc.kill()


def senml_pack(base_ms: int, n: int) -> bytes:
    """One SenML pack of `n` heart-rate readings, 1 ms apart from base_ms."""
    recs = [{"bn": "room-1/nibp-1/", "bt": base_ms / 1000, "n": "hr", "u": "beat/min", "v": 70, "t": 0}]
    recs += [{"n": "hr", "u": "beat/min", "v": 70 + k % 30, "t": k / 1000} for k in range(1, n)]
    return json.dumps(recs).encode()


def test_senml_heavy_redelivery_to_a_fresh_process_is_stored_once(
        mosquitto_proc: MosquittoProc, rclient: redis.Redis, keys: Keys, redis_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """30 packs × 200 readings stored by one process that never acknowledged them (it died
    first); 20,000 other entries land in the room stream after them; a fresh process gets
    all 30 redelivered: none of the 6,000 readings is stored again; a new pack is."""
    cfg = mqtt_config(keys.clinic, redis_url, mosquitto_proc.url, tmp_path / "data", receive_maximum=100)
    base = now_ms() - 600_000
    with running_adapter(cfg, redis_url, mosquitto_proc.url) as first:
        first.subscribed.wait(10)
        first.acks._send = lambda mid, qos, gen: False  # dies before any PUBACK leaves
        for p in range(30):
            mosquitto_pub(mosquitto_proc.port, T_NIBP1, senml_pack(base + p * 200, 200))
        wait_for(lambda: len(stream_ts(rclient, keys.vitals("room-1"), "nibp-1")) >= 6000, 60, "6,000 stored")
    pipe = rclient.pipeline(transaction=False)
    for i in range(20_000):  # a busy room: another device's readings after them
        pipe.xadd(keys.vitals("room-1"), {"ts": str(base + i), "dev": "mon-1", "hr": "70"})
    pipe.execute()
    # only the DUP redeliveries say "maybe stored" (not the check of a writer's first minutes)
    monkeypatch.setattr(streams, "STARTUP_CHECK_MS", 0)
    with running_adapter(cfg, redis_url, mosquitto_proc.url) as second:
        second.subscribed.wait(10)
        wait_for(lambda: second.writer.stats.duplicates_skipped >= 6000, 60, "redeliveries recognised")
        # published after the redeliveries: once it is stored, they all were handled
        mosquitto_pub(mosquitto_proc.port, T_NIBP1, senml_pack(base + 30 * 200, 200))
        wait_for(lambda: base + 6199 in stream_ts(rclient, keys.vitals("room-1"), "nibp-1"), 30, "the new pack")
    got = stream_ts(rclient, keys.vitals("room-1"), "nibp-1")
    assert len(got) == 6200 and sorted(got) == [base + i for i in range(6200)]


HOSTILE = [  # (payload, topic, reason)
    (b'{"hr": ' + b"9" * 400 + b"}", T_MON1, "out_of_range"),
    (json.dumps([{"bt": 1e306, "n": "hr", "u": "beat/min", "v": 70}]).encode(), T_NIBP1, "bad_ts"),
    (b'{"hr": ' + b'{"a": ' * 50 + b"1" + b"}" * 50 + b"}", T_MON1, "too_deep"),
    (b"[" * 5000 + b"]" * 5000, T_MON2, "too_deep"),
    (b'{"ts": ' + b"9" * 400 + b', "hr": 70}', T_MON2, "bad_ts"),
]


def test_hostile_payloads_are_refused_with_a_reason_and_no_traceback(
        mosquitto_proc: MosquittoProc, rclient: redis.Redis, keys: Keys, redis_url: str, tmp_path: Path,
        caplog) -> None:  # noqa: ANN001
    cfg = mqtt_config(keys.clinic, redis_url, mosquitto_proc.url, tmp_path / "data")
    caplog.set_level(logging.INFO)
    with running_adapter(cfg, redis_url, mosquitto_proc.url) as adapter:
        adapter.subscribed.wait(10)
        for payload, topic, _reason in HOSTILE:
            mosquitto_pub(mosquitto_proc.port, topic, payload)
        mosquitto_pub(mosquitto_proc.port, T_MON1, b'{"hr": 66}')  # still working after all that
        wait_for(lambda: rclient.xlen(keys.rejects) >= len(HOSTILE), what="every hostile payload refused")
        wait_for(lambda: any(f.get("hr") == "66" for _i, f in rclient.xrange(keys.vitals("room-1"))),
                 what="a good reading after them")
    rejects = [f for _i, f in rclient.xrange(keys.rejects)]
    assert sorted(r["reason"] for r in rejects) == sorted(reason for *_x, reason in HOSTILE)
    assert "internal_error" not in {r["reason"] for r in rejects}
    assert all(len(r["detail"]) < 200 for r in rejects)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_device_clock_60_s_behind_raises_no_silent_alarm(
        mosquitto_proc: MosquittoProc, rclient: redis.Redis, keys: Keys, redis_url: str, tmp_path: Path) -> None:
    """Readings every 200 ms stamped a minute behind (accepted: up to 24 h behind is): the
    device status carries their receive time, and the engine sees a live device."""
    cfg = parse_config({
        "clinic": {"id": keys.clinic}, "redis": {"url": redis_url},
        "mqtt": {"url": mosquitto_proc.url, "silence_s": 2}, "data": {"dir": str(tmp_path / "data")},
        "alerts": {"quiet_s": 2}, "rooms": mqtt_rooms()}, source="test.toml")
    pub = Publisher(MqttSettings(url=mosquitto_proc.url, client_id="behind-60s"))
    try:
        with running_adapter(cfg, redis_url, mosquitto_proc.url) as adapter:
            adapter.subscribed.wait(10)
            heartbeat.beat(rclient, keys, "ingest", "i1", now_ms())
            worker = Worker(cfg, rclient, keys, owner="w1")
            t_end = time.monotonic() + 5.0  # well beyond quiet_s
            while time.monotonic() < t_end:
                pub.publish(T_MON1, json.dumps({"ts": now_ms() - 60_000, "hr": 70}))
                time.sleep(0.2)
            heartbeat.beat(rclient, keys, "ingest", "i1", now_ms())
            wait_for(lambda: read_status(rclient, keys, ["mon-1"])["mon-1"].get("state") == "online",
                     what="mon-1 online")
            worker.housekeeping(now_ms())  # takes the rooms
            worker.tick(now_ms())
            assert "room-1" in worker.rooms  # the engine judged this room
            status = read_status(rclient, keys, ["mon-1"])["mon-1"]
            assert now_ms() - int(status["last_ts"]) > 59_000  # its label: a minute behind
            assert now_ms() - int(status["last_recv_ms"]) < 2_000  # received just now
    finally:
        pub.close()
    active = [json.loads(v) for v in rclient.hgetall(keys.active_alerts("room-1")).values()]
    assert not [a for a in active if a.get("dev") == "mon-1"], active


def test_readings_waiting_briefly_after_a_restart_raise_no_silent_alarm(
        mosquitto_proc: MosquittoProc, redis_proc: RedisProc, tmp_path: Path) -> None:
    """Ingest stopped for longer than the quiet time, then started again while its link to
    Redis is stalled: the status still holds the receive time the first process stored, the
    new process connects, then the device sends and its readings wait to be stored. The
    engine must not call the device silent while it connects (one quiet period) nor while its
    readings wait less than the silence time — and must say "readings not being
    stored" (clinic-wide) once they wait longer (the soak's false "silent: no reading for
    over 5 s", seen about a minute after ingest was killed and restarted in a Redis outage)."""
    quiet_s = 3
    rclient = redis.Redis.from_url(redis_proc.url, decode_responses=True)
    keys = Keys("restart-gap")
    cfg = parse_config({
        "clinic": {"id": keys.clinic}, "redis": {"url": redis_proc.url},
        "mqtt": {"url": mosquitto_proc.url, "silence_s": quiet_s}, "data": {"dir": str(tmp_path / "data")},
        # heartbeat_stale_s: the engine's start-up grace for clinic-wide causes (default 10 s)
        "alerts": {"quiet_s": quiet_s, "heartbeat_stale_s": 2}, "rooms": mqtt_rooms()}, source="test.toml")

    def status() -> dict[str, str]:
        return read_status(rclient, keys, ["mon-1"])["mon-1"]

    def mon1_alerts(worker: Worker, ingest: MqttAdapter) -> list[str]:
        # as the ingest process's heartbeat thread does: its writer's storage record with it
        heartbeat.beat(rclient, keys, "ingest", "i1", now_ms(), storage=ingest.writer.storage())
        worker.housekeeping(now_ms())
        worker.tick(now_ms())
        assert "room-1" in worker.rooms
        return [a["message"] for a in (json.loads(v) for v in rclient.hgetall(keys.active_alerts("room-1")).values())
                if a.get("dev") == "mon-1"]

    with running_adapter(cfg, redis_proc.url, mosquitto_proc.url) as first:
        first.subscribed.wait(10)
        once = Publisher(MqttSettings(url=mosquitto_proc.url, client_id="once"))
        once.publish(T_MON1, json.dumps({"ts": now_ms(), "hr": 70}))
        once.close()
        wait_for(lambda: "last_recv_ms" in status(), what="the first process stored a reading")
    heard_before = int(status()["last_recv_ms"])
    worker = Worker(cfg, rclient, keys, owner="w1")
    worker.housekeeping(now_ms())  # takes the rooms…
    worker.tick(t_worker := now_ms())  # …and starts its start-up grace (heartbeat_stale_s)
    wait_for(lambda: now_ms() - heard_before > (quiet_s + 0.5) * 1000 and now_ms() - t_worker > 2500,
             timeout_s=10, what="a gap over the quiet time, and the engine past its start-up grace")

    proxy = LinkProxy(redis_proc.port)
    proxy.start()
    proxy.stall()
    pub = SteadyPublisher(mosquitto_proc.url, T_MON1, rate_hz=5)
    t_restart = now_ms()
    try:
        with running_adapter(cfg, redis_proc.url, mosquitto_proc.url,
                             writer_url=f"redis://127.0.0.1:{proxy.port}/0") as second:
            second.subscribed.wait(10)
            # connecting, nothing heard yet: the old receive time does not count for one quiet period
            wait_for(lambda: status().get("state") == "connecting" and int(status().get("updated_ms", 0)) >= t_restart,
                     what="the second process connecting mon-1")
            assert mon1_alerts(worker, second) == []
            t_first = now_ms()
            pub.start()
            wait_for(lambda: status().get("state") == "online" and int(status().get("updated_ms", 0)) > t_first,
                     what="the second process calls mon-1 online")
            st = status()
            assert int(st["last_recv_ms"]) >= t_first  # heard now, not when the first process stored
            assert len(stream_ts(rclient, keys.vitals("room-1"), "mon-1")) == 1, \
                "the new readings were stored already: the link was not stalled"
            assert mon1_alerts(worker, second) == []
            # still waiting past the silence time: that is a fault, and it is said
            wait_for(lambda: status().get("detail", "").startswith("readings not being stored"), timeout_s=15,
                     what="mon-1 reported as not being stored")
            def clinic_alerts() -> list[dict[str, str]]:
                assert mon1_alerts(worker, second) == []  # the clinic-wide cause covers the room's devices…
                return [json.loads(v) for v in rclient.hgetall(keys.active_alerts("*")).values()]
            # …and says so on every screen, after its 2 s delay
            wait_for(lambda: [(a["cause"], a["rooms"]) for a in clinic_alerts()] == [("readings not being stored", "room-1")],
                     timeout_s=10, what="the clinic-wide not_stored alarm for room-1")
            assert clinic_alerts()[0]["message"].startswith("Readings are not being stored")
            proxy.resume()
            pub.finish()
    finally:
        pub.halt.set()
        proxy.resume()
        proxy.halt = True
        rclient.close()
