"""Helpers for the MQTT tests: a config with MQTT devices, an in-process adapter, publishers."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import redis

from devices.mqtt_adapter import MqttAdapter, start
from devices.transports.mqtt import MqttSettings, connect_async, make_client
from monitor.model.clock import now_ms
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.store.runtime import Endpoints
from monitor.store.streams import StreamWriter
from tests.configs import config_mapping, mqtt_device, parsed, room_entry, write_config
from tests.waiting import wait_for

T_MON1 = "vitalwatch/room-1/mon-1"
T_MON1_STATUS = "vitalwatch/room-1/mon-1/status"
T_NIBP1 = "vitalwatch/room-1/nibp-1"
T_MON2 = "vitalwatch/room-2/mon-2"


def mqtt_rooms() -> list[dict[str, Any]]:
    """Two rooms, three MQTT devices (json with a status topic, senml, json)."""
    return [room_entry("room-1", mqtt_device("mon-1", "json", T_MON1, status_topic=T_MON1_STATUS),
                 mqtt_device("nibp-1", "senml", T_NIBP1)),
            room_entry("room-2", mqtt_device("mon-2", "json", T_MON2))]


def mqtt_config_mapping(clinic: str, redis_url: str, mqtt_url: str, data_dir: Path, **mqtt_extra: Any) -> dict[str, Any]:
    """The MQTT rooms on the given Redis and broker, as a config mapping."""
    return config_mapping(clinic, rooms=mqtt_rooms(), redis_url=redis_url, mqtt_url=mqtt_url, data_dir=data_dir,
                          mqtt=mqtt_extra)


def mqtt_config(clinic: str, redis_url: str, mqtt_url: str, data_dir: Path, **mqtt_extra: Any) -> Config:
    """A validated config with the MQTT rooms, on the given Redis and broker."""
    return parsed(mqtt_config_mapping(clinic, redis_url, mqtt_url, data_dir, **mqtt_extra))


def write_toml(path: Path, clinic: str, redis_url: str, mqtt_url: str, data_dir: Path) -> Path:
    """The same config as a TOML file, for `vitalwatch ingest` subprocesses."""
    return write_config(path, mqtt_config_mapping(clinic, redis_url, mqtt_url, data_dir))


@contextlib.contextmanager
def running_adapter(cfg: Config, redis_url: str, mqtt_url: str, version: str = "5",
                    username: str = "", password: str = "") -> Iterator[MqttAdapter]:
    """The MQTT adapter for all of `cfg`'s devices, with its own StreamWriter, in-process."""
    keys = Keys(cfg.clinic.id)
    ep = Endpoints(redis_url, mqtt_url, version, keys, mqtt_username=username, mqtt_password=password)
    writer = StreamWriter(redis_url, keys, retention_ms=24 * 3600_000,
                          spool_path=cfg.data_dir / "spool" / "test.jsonl")
    stop = threading.Event()
    handle = start(cfg, ep, writer, cfg.devices(), stop)
    try:
        yield handle
    finally:
        stop.set()
        handle.join(10)
        writer.close()


def mosquitto_pub(port: int, topic: str, payload: bytes | str, *extra: str) -> None:
    """Publish once with the mosquitto_pub tool, QoS 1, MQTT v5 (what a user would type)."""
    data = payload.encode() if isinstance(payload, str) else payload
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-q", "1",
                    "-t", topic, "-s", *extra], input=data, check=True, timeout=10)



def stream_ts(client: redis.Redis, key: str, dev: str) -> list[int]:
    """`ts` of every entry of device `dev` in a vitals stream, in stream order."""
    return [int(f["ts"]) for _id, f in client.xrange(key) if f.get("dev") == dev]


class SteadyPublisher(threading.Thread):
    """Publishes `{"ts": …, "hr": …}` at QoS 1 at a steady rate; every ts is unique."""

    def __init__(self, mqtt_url: str, topic: str, rate_hz: float = 50.0) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.period_s = 1.0 / rate_hz
        self.sent_ts: list[int] = []
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self._halt = threading.Event()
        s = MqttSettings(url=mqtt_url, client_id=f"pub-{uuid.uuid4().hex[:8]}")
        self.client = make_client(s)
        self.client.max_inflight_messages_set(100)
        self.acked: set[int] = set()
        # info.is_published() raises for messages queued while disconnected (paho keeps and
        # sends them on reconnect), so count the broker's PUBACKs ourselves
        self.client.on_publish = lambda _c, _u, mid, _rc, _p: self.acked.add(mid)
        connect_async(self.client, s)
        self.client.loop_start()

    def run(self) -> None:
        base = now_ms()
        i = 0
        next_t = time.monotonic()
        while not self._halt.is_set():
            ts = base + i * 20
            payload = json.dumps({"ts": ts, "hr": 60 + i % 40})
            # while the broker is away paho keeps the message and sends it on reconnect
            self.infos.append(self.client.publish(self.topic, payload, qos=1))
            self.sent_ts.append(ts)
            i += 1
            next_t += self.period_s
            self._halt.wait(max(0.0, next_t - time.monotonic()))

    def finish(self, timeout_s: float = 30.0) -> list[int]:
        """Stop publishing, wait until the broker acknowledged every message, disconnect."""
        self._halt.set()
        self.join()
        wait_for(lambda: all(i.mid in self.acked for i in self.infos), timeout_s, "publisher PUBACKs")
        self.client.disconnect()
        self.client.loop_stop()
        return self.sent_ts

