"""No loss, no duplicates: broker restarted, Redis restarted, `vitalwatch ingest` killed -9,
each while a QoS 1 publisher keeps sending 50 msg/s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import redis

from monitor.model.clock import now_ms
from monitor.model.keys import Keys
from tests.mqtt_support import (
    T_MON1,
    T_MON2,
    SteadyPublisher,
    mosquitto_pub,
    mqtt_config,
    running_adapter,
    stream_ts,
    write_toml,
)
from tests.servers import RedisProc
from tests.waiting import wait_for

VITALWATCH = str(Path(sys.executable).with_name("vitalwatch"))


def assert_exactly_once(client: redis.Redis, keys: Keys, port: int, sent: list[int]) -> None:
    """Every published ts is in room-2's stream, once; nothing else from mon-2 is.

    A last message published after all the others is the barrier: the broker delivers a
    topic's QoS 1 messages in order (redeliveries first), so once it is stored every earlier
    message, and any duplicate of one, is stored too — counting then needs no sleep."""
    key = keys.vitals("room-2")
    barrier = max(max(sent) + 20, now_ms())
    mosquitto_pub(port, T_MON2, json.dumps({"ts": barrier, "hr": 99}))
    wait_for(lambda: barrier in stream_ts(client, key, "mon-2"), 40, "the barrier message in Redis")
    got = [ts for ts in stream_ts(client, key, "mon-2") if ts != barrier]
    dupes = {ts: n for ts, n in Counter(got).items() if n > 1}
    missing = sorted(set(sent) - set(got))
    assert not missing and not dupes and len(got) == len(sent), (
        f"sent {len(sent)}, stored {len(got)}, missing {missing[:10]}, duplicated {list(dupes)[:10]}")


def publish_more(pub: SteadyPublisher, n: int, during: str) -> None:
    """Let the publisher send `n` more messages: each phase of a test is measured in traffic,
    not in seconds, so a slow machine still puts as many messages through every phase."""
    target = len(pub.sent_ts) + n
    wait_for(lambda: len(pub.sent_ts) >= target, 60, f"{n} more messages published {during}")


def test_broker_restarted_mid_stream(mosquitto_proc, rclient, keys, redis_url, tmp_path: Path):
    cfg = mqtt_config(keys.clinic, redis_url, mosquitto_proc.url, tmp_path / "data")
    with running_adapter(cfg, redis_url, mosquitto_proc.url) as adapter:
        assert adapter.subscribed.wait(10), "the adapter never subscribed"
        pub = SteadyPublisher(mosquitto_proc.url, T_MON2)
        pub.start()
        publish_more(pub, 75, "before the restart")
        mosquitto_proc.restart(down_s=1.0)  # SIGTERM: mosquitto saves sessions and queues; down 1 s
        publish_more(pub, 100, "after the restart")
        sent = pub.finish()
        assert_exactly_once(rclient, keys, mosquitto_proc.port, sent)
        wait_for(lambda: rclient.hget(keys.device_status("mon-2"), "reconnects") == "1",
                 what="the reconnect counted in the device status")


def test_redis_restarted_mid_stream(mosquitto_proc, keys, tmp_path: Path):
    rproc = RedisProc(tmp_path / "redis").start()
    client = redis.Redis.from_url(rproc.url, decode_responses=True)
    cfg = mqtt_config(keys.clinic, rproc.url, mosquitto_proc.url, tmp_path / "data")
    try:
        with running_adapter(cfg, rproc.url, mosquitto_proc.url) as adapter:
            assert adapter.subscribed.wait(10), "the adapter never subscribed"
            pub = SteadyPublisher(mosquitto_proc.url, T_MON2)
            pub.start()
            publish_more(pub, 75, "before Redis goes")
            rproc.kill()  # kill -9; AOF (fsync always) keeps what it acknowledged
            publish_more(pub, 100, "while Redis is down")
            rproc.start()
            publish_more(pub, 75, "after Redis is back")
            sent = pub.finish()
            assert_exactly_once(client, keys, mosquitto_proc.port, sent)
            assert adapter.writer.stats.reconnects >= 1
    finally:
        client.close()
        rproc.kill()


def _start_ingest(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([VITALWATCH, "ingest", "-c", str(config)], stdin=subprocess.DEVNULL,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def _ingest_up(rclient: redis.Redis, keys: Keys, port: int, probe_ts: int) -> bool:
    """Publish a probe on room-1 until the (re)started ingest stored it: subscribed for sure."""
    mosquitto_pub(port, T_MON1, json.dumps({"ts": probe_ts, "hr": 50}))
    return probe_ts in stream_ts(rclient, keys.vitals("room-1"), "mon-1")


def test_ingest_killed_9_while_publishing_then_restarted(mosquitto_proc, rclient, keys, redis_url,
                                                         tmp_path: Path):
    config = write_toml(tmp_path / "vw.toml", keys.clinic, redis_url, mosquitto_proc.url, tmp_path / "data")
    log = tmp_path / "ingest.log"
    proc = _start_ingest(config, log)
    pub = None
    try:
        probe = now_ms()
        wait_for(lambda: _ingest_up(rclient, keys, mosquitto_proc.port, probe), 30, "ingest subscribed")
        client_id = rclient.hget(keys.device_status("mon-2"), "client_id")
        pub = SteadyPublisher(mosquitto_proc.url, T_MON2)
        pub.start()
        publish_more(pub, 75, "before the kill")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        publish_more(pub, 150, "while ingest is down")  # the broker queues them for the session
        proc = _start_ingest(config, log)
        publish_more(pub, 75, "while ingest starts again")
        sent = pub.finish()
        pub = None
        assert_exactly_once(rclient, keys, mosquitto_proc.port, sent)
        assert rclient.hget(keys.device_status("mon-2"), "client_id") == client_id  # same session
    finally:
        if pub is not None:
            pub.finish()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, log.read_text()[-3000:]


def test_writer_skips_redeliveries_deep_in_the_stream_tail(rclient, keys, redis_url, tmp_path: Path):
    """After a crash the broker redelivers up to receive_maximum messages a few at a time;
    a fresh writer must recognise a stored one even ~1000 entries back (monitor/streams.py)."""
    from monitor.model.readings import Reading
    from monitor.store.streams import StreamWriter

    def writer(name: str) -> StreamWriter:
        return StreamWriter(redis_url, keys, retention_ms=3600_000, spool_path=tmp_path / f"{name}.jsonl")

    base = now_ms() - 600_000
    first = writer("a")
    for i in range(1500):
        first.write(Reading("room-2", "mon-2", base + i, {"hr": 70}))
    assert first.flush()
    first.close()
    again = writer("b")  # as a restarted ingest: nothing remembered; redeliveries are checked
    for i in (400, 1499):  # in the stream
        again.write(Reading("room-2", "mon-2", base + i, {"hr": 70}), stored_after_ms=now_ms() - 3600_000)
        assert again.flush()
    again.write(Reading("room-2", "mon-2", base + 1500, {"hr": 70}), stored_after_ms=now_ms() - 3600_000)
    assert again.flush()
    again.close()
    got = stream_ts(rclient, keys.vitals("room-2"), "mon-2")
    assert got == [base + i for i in range(1501)]
    assert again.stats.duplicates_skipped == 2
