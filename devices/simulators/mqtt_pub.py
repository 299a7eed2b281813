"""MQTT publisher of a simulated device: paho-mqtt 2 (CallbackAPIVersion.VERSION2), QoS 1.

One client per simulated device, as each real device has its own connection. The MQTT
version comes from the caller (monitor.store.runtime.resolve(cfg).mqtt_version; the embedded
amqtt broker speaks 3.1.1 only). While the broker is away paho keeps QoS 1 messages queued
and sends them after it reconnects; a *simulated* broker outage (the device's network
down) is modelled by the runner, which disconnects and holds messages itself.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

QOS = 1


@dataclass(frozen=True, slots=True)
class MqttTarget:
    """Where and how to connect: broker URL, MQTT version, credentials, TLS files."""

    url: str
    version: str = "3.1.1"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def _protocol(version: str) -> mqtt.MQTTProtocolVersion:
    return mqtt.MQTTProtocolVersion.MQTTv5 if version == "5" else mqtt.MQTTProtocolVersion.MQTTv311


class MqttPublisher:
    """A connected-or-reconnecting paho client that publishes QoS 1."""

    def __init__(self, target: MqttTarget, client_id: str, status_topic: str | None = None) -> None:
        self.target = target
        u = urlparse(target.url)
        self.host = u.hostname or "127.0.0.1"
        tls = u.scheme in ("mqtts", "ssl")
        self.port = u.port or (8883 if tls else 1883)
        self.status_topic = status_topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=_protocol(target.version))
        self.client.max_queued_messages_set(0)  # unbounded: a device outage must not drop data
        if target.username:
            self.client.username_pw_set(target.username, target.password)
        if tls:
            self.client.tls_set(ca_certs=target.ca_file, certfile=target.cert_file, keyfile=target.key_file,
                                cert_reqs=ssl.CERT_REQUIRED)
        if status_topic:
            self.client.will_set(status_topic, b"offline", qos=QOS, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_connect_fail = self._on_connect_fail
        self._warned = False  # one warning per outage, not one per retry
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._unacked: set[int] = set()
        self.published = 0  # acknowledged by the broker
        self.started = False

    # --- paho callbacks (VERSION2 signatures) -------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT connect to %s:%s refused: %s", self.host, self.port, reason)
            return
        self._connected.set()
        if self._warned:
            log.info("MQTT broker %s:%s reachable again; sending queued messages", self.host, self.port)
        self._warned = False
        if self.status_topic:
            client.publish(self.status_topic, b"online", qos=QOS, retain=True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._warned:
            log.warning("MQTT broker %s:%s unreachable; retrying, messages are queued", self.host, self.port)
            self._warned = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            if mid in self._unacked:
                self._unacked.discard(mid)
                self.published += 1

    # --- API ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Is the broker connection up?"""
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and run the loop."""
        if self.started:
            return
        props = None
        if self.target.version == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.connect_async(self.host, self.port, keepalive=15, properties=props)
        self.client.loop_start()
        self.started = True

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected (True) or timeout (False)."""
        return self._connected.wait(timeout_s)

    def publish(self, topic: str, payload: bytes) -> int:
        """Queue a QoS 1 publish (sent now, or after a reconnect); returns its mid."""
        info = self.client.publish(topic, payload, qos=QOS)
        with self._lock:
            self._unacked.add(info.mid)
        return info.mid

    def pending(self) -> int:
        """Publishes not yet acknowledged by the broker."""
        with self._lock:
            return len(self._unacked)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every publish is acknowledged (True) or timeout (False)."""
        deadline = time.monotonic() + timeout_s
        while self.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def go_offline(self) -> None:
        """The device's network goes down: announce offline (if it has a status topic), drop."""
        if self.status_topic and self.connected:
            info = self.client.publish(self.status_topic, b"offline", qos=QOS, retain=True)
            try:
                info.wait_for_publish(1.0)
            except RuntimeError as e:  # lost the connection meanwhile: the will says it instead
                log.debug("offline status not sent: %s", e)
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()
        self.started = False

    def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Deliver what is pending (bounded wait), then disconnect cleanly."""
        if not self.started:
            return
        if not self.flush(flush_timeout_s):
            log.warning("MQTT %s: %d publish(es) unacknowledged at stop", self.client._client_id, self.pending())
        if self.status_topic and self.connected:
            self.client.publish(self.status_topic, b"offline", qos=QOS, retain=True)
        self.client.disconnect()
        self.client.loop_stop()
        self.started = False
