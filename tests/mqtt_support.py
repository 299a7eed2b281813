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
                    username: str = "", password: str = "", writer_url: str | None = None) -> Iterator[MqttAdapter]:
    """The MQTT adapter for all of `cfg`'s devices, with its own StreamWriter, in-process
    (`writer_url`: the writer's Redis, e.g. through a LinkProxy, if not the adapter's)."""
    keys = Keys(cfg.clinic.id)
    ep = Endpoints(redis_url, mqtt_url, version, keys, mqtt_username=username, mqtt_password=password)
    writer = StreamWriter(writer_url or redis_url, keys, retention_ms=24 * 3600_000,
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


class AckedPublisher(threading.Thread):
    """A thread publishing to `topic` at QoS 1 on a client of its own (at most `rate_hz` a second:
    `run` is the subclass's), counting the broker's PUBACKs itself: info.is_published() raises for
    messages queued while disconnected (paho keeps and sends them on reconnect)."""

    def __init__(self, mqtt_url: str, topic: str, rate_hz: float, client_prefix: str) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.period_s = 1.0 / rate_hz
        self.mids: list[int] = []
        self.acked: set[int] = set()
        self.halt = threading.Event()
        s = MqttSettings(url=mqtt_url, client_id=f"{client_prefix}-{uuid.uuid4().hex[:8]}")
        self.client = make_client(s)
        self.client.max_inflight_messages_set(100)
        self.client.on_publish = lambda _c, _u, mid, _rc, _p: self.acked.add(mid)
        connect_async(self.client, s)
        self.client.loop_start()

    def send(self, payload: str) -> None:
        """Publish once (while the broker is away paho keeps the message and sends it on reconnect)."""
        self.mids.append(self.client.publish(self.topic, payload, qos=1).mid)

    def stop_acked(self, timeout_s: float = 30.0) -> None:
        """Stop publishing, wait until the broker acknowledged every message, disconnect."""
        self.halt.set()
        self.join()
        wait_for(lambda: all(m in self.acked for m in self.mids), timeout_s, "publisher PUBACKs")
        self.client.disconnect()
        self.client.loop_stop()


class SteadyPublisher(AckedPublisher):
    """Publishes `{"ts": …, "hr": …}` at QoS 1 at a steady rate; every ts is unique."""

    def __init__(self, mqtt_url: str, topic: str, rate_hz: float = 50.0) -> None:
        super().__init__(mqtt_url, topic, rate_hz, "pub")
        self.sent_ts: list[int] = []

    def run(self) -> None:
        base = now_ms()
        i = 0
        next_t = time.monotonic()
        while not self.halt.is_set():
            ts = base + i * 20
            self.send(json.dumps({"ts": ts, "hr": 60 + i % 40}))
            self.sent_ts.append(ts)
            i += 1
            next_t += self.period_s
            self.halt.wait(max(0.0, next_t - time.monotonic()))

    def finish(self, timeout_s: float = 30.0) -> list[int]:
        """Stop publishing once every message is acknowledged: the ts sent."""
        self.stop_acked(timeout_s)
        return self.sent_ts


class TslessPublisher(AckedPublisher):
    """QoS 1 `{"hr": …, "spo2": …}` without ts (receive time is used); each pair unique."""

    def __init__(self, mqtt_url: str, topic: str, rate_hz: float = 200.0) -> None:
        super().__init__(mqtt_url, topic, rate_hz, "tsless")
        self.sent: list[tuple[str, str]] = []

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            hr, spo2 = 20 + i % 280, 50 + (i // 280) % 50
            self.send(json.dumps({"hr": hr, "spo2": spo2}))
            self.sent.append((str(hr), str(spo2)))
            i += 1
            self.halt.wait(self.period_s)

    def finish(self) -> list[tuple[str, str]]:
        """Stop publishing once every message is acknowledged: the (hr, spo2) pairs sent."""
        self.stop_acked()
        return self.sent

