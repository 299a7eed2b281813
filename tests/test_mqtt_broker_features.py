"""Broker-side features: passwords and ACLs (refusals visible in MQTT v5), TLS, and the
embedded amqtt broker (MQTT 3.1.1) the demo falls back to."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from devices.transports.mqtt import MqttSettings, Publisher
from monitor.model.clock import now_ms
from monitor.model.mqtt_acl import acl_users
from monitor.store.embedded import start_broker
from monitor.store.status import read_status
from tests.mqtt_support import T_MON1, T_MON2, mqtt_config, running_adapter, stream_ts
from tests.servers import MosquittoProc
from tests.waiting import wait_for


@pytest.fixture
def acl_broker(tmp_path: Path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "ingest", "ingest-pw"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "mon-1", "mon-1-pw"], check=True)
    acl = tmp_path / "acl"
    acl.write_text("user ingest\ntopic read vitalwatch/#\n\n"
                   f"user mon-1\ntopic write {T_MON1}\n")
    proc = MosquittoProc(tmp_path / "mqtt", extra_conf=(
        f"allow_anonymous false\npassword_file {pw}\nacl_file {acl}\n")).start()
    yield proc
    proc.kill()


def test_acl_denied_publish_is_visible_in_v5(acl_broker, rclient, keys, redis_url, tmp_path: Path):
    cfg = mqtt_config(keys.clinic, redis_url, acl_broker.url, tmp_path / "data")
    with running_adapter(cfg, redis_url, acl_broker.url, username="ingest", password="ingest-pw") as adapter:
        assert adapter.subscribed.wait(10)
        dev = Publisher(MqttSettings(acl_broker.url, client_id="mon-1", username="mon-1", password="mon-1-pw"))
        try:
            ts = now_ms()
            ok = dev.publish(T_MON1, json.dumps({"ts": ts, "hr": 70}))
            denied = dev.publish(T_MON2, json.dumps({"ts": ts, "hr": 70}))  # not its topic
        finally:
            dev.close()
        assert ok.value == 0
        assert denied.value == 135 and denied.getName() == "Not authorized"
        wait_for(lambda: stream_ts(rclient, keys.vitals("room-1"), "mon-1") == [ts], what="allowed reading")
    assert stream_ts(rclient, keys.vitals("room-2"), "mon-2") == []
    # the same denial over 3.1.1 looks like success: why v5 is the default
    old = Publisher(MqttSettings(acl_broker.url, version="3.1.1", username="mon-1", password="mon-1-pw"))
    try:
        assert old.publish(T_MON2, b'{"hr": 70}') == 0
    finally:
        old.close()


def test_refused_credentials_show_in_device_status(acl_broker, rclient, keys, redis_url, tmp_path: Path):
    cfg = mqtt_config(keys.clinic, redis_url, acl_broker.url, tmp_path / "data")
    with running_adapter(cfg, redis_url, acl_broker.url, username="ingest", password="wrong"):
        wait_for(lambda: "refused" in read_status(rclient, keys, ["mon-1"])["mon-1"].get("detail", ""),
                 what="connection refusal in the status detail")
        status = read_status(rclient, keys, ["mon-1"])["mon-1"]
    assert status["state"] == "connecting"
    assert "Not authorized" in status["detail"] or "Bad user name or password" in status["detail"]


def _make_tls_files(d: Path) -> tuple[Path, Path, Path]:
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=vitalwatch-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return d / "ca.crt", d / "server.crt", d / "server.key"


def test_tls_broker(rclient, keys, redis_url, tmp_path: Path):
    tls = tmp_path / "tls"
    tls.mkdir()
    ca, cert, key = _make_tls_files(tls)
    proc = MosquittoProc(tmp_path / "mqtt", extra_conf=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n").start()
    url = f"mqtts://localhost:{proc.port}"
    try:
        cfg = mqtt_config(keys.clinic, redis_url, url, tmp_path / "data", ca_file=str(ca))
        with running_adapter(cfg, redis_url, url) as adapter:
            assert adapter.subscribed.wait(10)
            dev = Publisher(MqttSettings(url, ca_file=str(ca)))
            ts = now_ms()
            try:
                assert dev.publish(T_MON1, json.dumps({"ts": ts, "spo2": 97})) == 0
            finally:
                dev.close()
            wait_for(lambda: stream_ts(rclient, keys.vitals("room-1"), "mon-1") == [ts], what="reading over TLS")
    finally:
        proc.kill()


def test_embedded_amqtt_broker_mqtt_311(rclient, keys, redis_url, tmp_path: Path):
    cfg = mqtt_config(keys.clinic, redis_url, "mqtt://127.0.0.1:1", tmp_path / "data", version="3.1.1")
    accounts = {"vitalwatch-ingest": "ingest-pw-1", "vitalwatch-alerts": "alerts-pw-1", "vitalwatch-simulate": "sim-pw-1"}
    server = start_broker(tmp_path / "embedded", prefer="amqtt", accounts=accounts,
                          acl=acl_users(cfg, simulate=True))
    assert server.kind == "amqtt" and server.version == "3.1.1"
    try:
        cfg = mqtt_config(keys.clinic, redis_url, server.url, tmp_path / "data", version="3.1.1")
        with running_adapter(cfg, redis_url, server.url, version="3.1.1", username="vitalwatch-ingest",
                             password="ingest-pw-1") as adapter:
            assert adapter.subscribed.wait(15)
            dev = Publisher(MqttSettings(server.url, version="3.1.1", username="vitalwatch-simulate",
                                         password="sim-pw-1"))
            ts = now_ms()
            try:
                dev.publish(T_MON1, json.dumps({"ts": ts, "hr": 64, "spo2": 99}))
                dev.publish("vitalwatch/room-1/nibp-1", json.dumps(
                    [{"bt": ts / 1000, "n": "sbp", "u": "mmHg", "v": 118}, {"n": "dbp", "u": "mmHg", "v": 76}]))
            finally:
                dev.close()
            wait_for(lambda: len(rclient.xrange(keys.vitals("room-1"))) == 2, what="both readings")
        fields = [f for _id, f in rclient.xrange(keys.vitals("room-1"))]
        assert {"ts": str(ts), "dev": "mon-1", "hr": "64", "spo2": "99"} in fields
        assert {"ts": str(ts), "dev": "nibp-1", "sbp": "118", "dbp": "76"} in fields
    finally:
        server.stop()
