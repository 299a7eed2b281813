"""MQTT transport: paho-mqtt 2.x clients configured the VitalWatch way. Bytes only.

- MQTT v5 by default (a broker's refusals — ACL, quota — come back as reason codes);
  3.1.1 when the broker only speaks that (the embedded amqtt broker).
- `mqtts://` (or `ssl://`) → TLS with the configured CA, client certificate and key.
- Username/password are handed in (read from the environment at the CLI edge).
- Reconnects on its own with exponential backoff (RECONNECT_MIN_S … RECONNECT_MAX_S).
- A persistent session (clean start off, session expiry) when the caller asks for one,
  so the broker queues QoS 1 messages while we are away.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

RECONNECT_MIN_S = 0.25
RECONNECT_MAX_S = 10.0
KEEPALIVE_S = 30
DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}


class MqttUrlError(ValueError):
    """A broker URL this transport cannot use."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Host, port and whether to use TLS, from an mqtt:// or mqtts:// URL."""

    host: str
    port: int
    tls: bool


def parse_url(url: str) -> BrokerAddress:
    """`mqtt://host[:port]`, `mqtts://host[:port]` (also tcp://, ssl://) → BrokerAddress."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise MqttUrlError(f"not an MQTT broker URL: {url!r}")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as e:
        raise MqttUrlError(f"bad port in {url!r}") from e
    return BrokerAddress(parts.hostname, port, parts.scheme in ("mqtts", "ssl"))


@dataclass(frozen=True)
class MqttSettings:
    """Everything needed to open one client connection."""

    url: str
    version: str = "5"  # "5" or "3.1.1"
    client_id: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    session_expiry_s: int = 3600
    receive_maximum: int = 1000
    keepalive_s: int = KEEPALIVE_S

    @property
    def v5(self) -> bool:
        """True for MQTT v5, False for 3.1.1."""
        return self.version == "5"


def make_client(s: MqttSettings, *, persistent: bool = False, manual_ack: bool = False) -> mqtt.Client:
    """A configured (not yet connected) paho client; call `connect_async()` then `loop_start()`."""
    addr = parse_url(s.url)
    if s.v5:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    else:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id,
                             clean_session=not persistent, protocol=mqtt.MQTTv311,
                             manual_ack=manual_ack)
    if s.username:
        client.username_pw_set(s.username, s.password or None)
    if addr.tls:
        # ca_file None → the system's trusted CAs
        client.tls_set(ca_certs=s.ca_file, certfile=s.cert_file, keyfile=s.key_file)
    client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)  # type: ignore[arg-type]
    return client


def connect_async(client: mqtt.Client, s: MqttSettings, *, persistent: bool = False) -> None:
    """Start connecting in the background (the network loop retries with backoff)."""
    addr = parse_url(s.url)
    if s.v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s if persistent else 0
        props.ReceiveMaximum = s.receive_maximum
        # clean_start=False always (not "first only"): a restart must resume the session
        client.connect_async(addr.host, addr.port, s.keepalive_s,
                             clean_start=not persistent, properties=props)
    else:
        client.connect_async(addr.host, addr.port, s.keepalive_s)


def reason_text(rc: ReasonCode | int) -> str:
    """Human text of a reason code, e.g. "Not authorized (135)"."""
    if isinstance(rc, ReasonCode):
        return f"{rc.getName()} ({rc.value})"
    return f"{mqtt.error_string(rc)} ({rc})"


def is_failure(rc: ReasonCode | int) -> bool:
    """True when a reason code (v5) or return code (3.1.1) means refusal."""
    if isinstance(rc, ReasonCode):
        return rc.is_failure
    return rc != 0


class Publisher:
    """A small blocking QoS 1 publisher that reports the broker's verdict on each message.

    MQTT v5 brokers answer a refused publish (ACL) with a failure reason code in PUBACK;
    3.1.1 brokers drop it silently (the PUBACK looks like success).
    """

    def __init__(self, s: MqttSettings, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self.client = make_client(s)
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._results: dict[int, ReasonCode | int] = {}
        self._done = threading.Condition(self._lock)
        self.connect_rc: ReasonCode | int | None = None
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        connect_async(self.client, s)
        self.client.loop_start()
        if not self._connected.wait(timeout_s):
            self.close()
            raise TimeoutError(f"no CONNACK from {s.url} within {timeout_s} s")
        if self.connect_rc is not None and is_failure(self.connect_rc):
            self.close()
            raise ConnectionRefusedError(f"broker refused connection: {reason_text(self.connect_rc)}")

    def _on_connect(self, client, userdata, flags, rc, properties=None) -> None:  # noqa: ANN001
        self.connect_rc = rc
        self._connected.set()

    def _on_publish(self, client, userdata, mid, rc, properties=None) -> None:  # noqa: ANN001
        with self._done:
            self._results[mid] = rc
            self._done.notify_all()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> ReasonCode | int:
        """Publish at QoS 1 and return the broker's reason code once it acknowledged."""
        # not under our lock: paho calls on_publish holding its own mutex, which publish() needs
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return info.rc
        with self._done:
            if not self._done.wait_for(lambda: info.mid in self._results, self.timeout_s):
                raise TimeoutError(f"no PUBACK for {topic} within {self.timeout_s} s")
            return self._results.pop(info.mid)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
