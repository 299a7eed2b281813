"""Outbound alert channel for pagers and nurse-call systems: MQTT topic and optional webhook.

- Every alert event is published (QoS 1, not retained) as JSON to `[mqtt] alerts_topic`.
- A *page* — an event someone must be fetched for — is also published to
  `<alerts_topic>/page` and POSTed to `[alerts] webhook_url` when set:
  tier 1: a high-priority alarm raised while no station screen is connected or none has its
  sound on (so nobody would hear it); tier 2: an escalation (high priority unacknowledged
  past `[alerts] escalate_after_s`).
- What people do to a high-priority alarm (acknowledged, reset, acknowledge undone) follows
  on the same page topic and webhook, `page: false`, so a pager stops (or starts again).
- Every payload carries `text`, the alarm row as the screens show it (monitor/alarms/text.py).
Publishing happens on background threads; a slow webhook never delays evaluation. Failures
are counted (`stats`) and logged, never silent.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from .model import AlertEvent
from .text import alarm_line

log = logging.getLogger(__name__)


# Who is at a screen to hear an alarm: a station screen or a nurse. A director reviewing or
# an admin managing users with the sound on does not stand in for them.
WATCHING_ROLES = frozenset({"station", "nurse"})


def unattended(screens: Mapping[str, str], now_ms: int, stale_s: float) -> bool:
    """True when no screen of a watching role (WATCHING_ROLES) has reported within
    `stale_s` with its sound on (pure)."""
    for raw in screens.values():
        try:
            s = json.loads(raw)
            fresh = now_ms - int(s.get("ts_ms", 0)) <= stale_s * 1000
        except (ValueError, TypeError, AttributeError):
            continue  # a malformed entry is not a screen anyone can hear
        # entries of dashboards older than the `role` field: counted as before (station)
        if fresh and s.get("sound_on", True) and s.get("role", "station") in WATCHING_ROLES:
            return False
    return True


def page_tier(event: AlertEvent, nobody_listening: bool) -> int | None:
    """Which paging tier an event goes to, or None when it is not a page (pure)."""
    if event.event == "escalated":
        return 2
    if event.event == "raised" and event.priority == "high" and nobody_listening:
        return 1
    return None


def payload(event: AlertEvent, tier: int | None, room_name: str = "") -> bytes:
    """The JSON an outbound consumer receives: the CONTRACT fields plus `page`, `tier` and
    `text` (the alarm row, e.g. "HIGH · Room 2 · SBP 186 > 180 mmHg · acknowledged by nina")."""
    # a person's action already says what happened in its message ("…: acknowledged by nina")
    tail = "" if event.user else event.event.replace("_", " ")
    text = alarm_line(event.to_dict(), room_name or event.room, tail=tail)
    return json.dumps({**event.to_dict(), "page": tier is not None, "tier": tier, "text": text},
                      separators=(",", ":")).encode()


@dataclass
class OutboundStats:
    """Counters: what went out and what failed."""

    published: int = 0
    acked: int = 0  # confirmed by the broker (PUBACK)
    publish_failed: int = 0
    pages: int = 0
    webhook_sent: int = 0
    webhook_failed: int = 0


class Outbound:
    """Publishes alert events to MQTT (paho 2) and pages to an optional webhook."""

    def __init__(self, mqtt_url: str, mqtt_version: str, topic: str, client_id: str, *,
                 webhook_url: str = "", webhook_timeout_s: float = 3.0, username: str | None = None,
                 password: str | None = None, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None) -> None:
        self.topic = topic
        self.stats = OutboundStats()
        self.webhook_url = webhook_url
        self.webhook_timeout_s = webhook_timeout_s
        self._connected = threading.Event()
        proto = mqtt.MQTTv5 if mqtt_version == "5" else mqtt.MQTTv311
        self._mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
        self._mqtt.max_queued_messages_set(10_000)  # held while the broker is away
        if username:
            self._mqtt.username_pw_set(username, password)
        u = urlparse(mqtt_url)
        tls = u.scheme in ("mqtts", "ssl")
        if tls:
            self._mqtt.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file,
                               tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._mqtt.on_publish = self._on_publish
        self._mqtt.reconnect_delay_set(1, 10)
        self._mqtt.connect_async(u.hostname or "127.0.0.1", u.port or (8883 if tls else 1883), keepalive=30)
        self._mqtt.loop_start()
        self._unacked: set[int] = set()
        self._early_acks: set[int] = set()
        self._lock = threading.Lock()
        self._hooks: queue.Queue[bytes | None] = queue.Queue()
        self._hook_thread: threading.Thread | None = None
        if webhook_url:
            self._hook_thread = threading.Thread(target=self._webhook_loop, name="alert-webhook", daemon=True)
            self._hook_thread.start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("outbound MQTT connect refused: %s", reason)
            return
        self._connected.set()
        log.info("outbound MQTT connected; alert events go to %s", self.topic)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()
        log.warning("outbound MQTT disconnected (%s); events are queued until it is back", reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            if mid in self._unacked:
                self._unacked.discard(mid)
            else:
                self._early_acks.add(mid)
            self.stats.acked += 1

    @property
    def unconfirmed(self) -> int:
        """Events published but not yet acknowledged by the broker (QoS 1)."""
        with self._lock:
            return len(self._unacked)

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait for the broker connection (tests, start-up)."""
        return self._connected.wait(timeout_s)

    def send(self, event: AlertEvent, tier: int | None, follow_up: bool = False, room_name: str = "") -> None:
        """Publish one event (and page it when `tier` is set; `follow_up`: also on the page
        topic and webhook, not as a page — an acknowledge that should stop a pager); never
        blocks on the network."""
        body = payload(event, tier, room_name)
        self._publish(self.topic, body)
        if tier is not None:
            self.stats.pages += 1
        if tier is not None or follow_up:
            self._publish(f"{self.topic}/page", body)
            if self.webhook_url:
                self._hooks.put(body)

    def _publish(self, topic: str, body: bytes) -> None:
        # never hold our lock while calling into paho: its network thread may be inside
        # _on_publish (holding paho's own locks) waiting for ours — a deadlock
        info = self._mqtt.publish(topic, body, qos=1)
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            with self._lock:  # the ack may already have arrived
                if info.mid in self._early_acks:
                    self._early_acks.discard(info.mid)
                else:
                    self._unacked.add(info.mid)
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self.stats.published += 1  # NO_CONN with QoS 1: queued by paho, sent on reconnect
        else:
            self.stats.publish_failed += 1
            log.error("outbound publish to %s failed: %s", topic, mqtt.error_string(info.rc))

    def _webhook_loop(self) -> None:
        while True:
            body = self._hooks.get()
            if body is None:
                return
            req = urllib.request.Request(self.webhook_url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.webhook_timeout_s) as resp:
                    resp.read()
                self.stats.webhook_sent += 1
            except (urllib.error.URLError, OSError, ValueError) as e:
                self.stats.webhook_failed += 1
                log.error("alert webhook POST failed (%s); page not delivered there: %s", e,
                          body[:200].decode(errors="replace"))

    def close(self, timeout_s: float = 3.0) -> None:
        """Send what is queued (best effort within `timeout_s`) and stop."""
        if self._hook_thread is not None:
            self._hooks.put(None)
            self._hook_thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.unconfirmed and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.unconfirmed:
            log.warning("outbound: stopping with %d alert event(s) not confirmed by the broker",
                        self.unconfirmed)
        self._mqtt.disconnect()
        self._mqtt.loop_stop()
