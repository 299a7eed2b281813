"""Outbound alert channel for pagers and nurse-call systems: MQTT topic and optional webhook.

What goes out:
- Every alert event is published (QoS 1, not retained) as JSON to `[mqtt] alerts_topic`.
- A *page* — an event someone must be fetched for — is also published to
  `<alerts_topic>/page` and POSTed to `[alerts] webhook_url` when set:
  tier 1: a high-priority alarm raised while no station screen is connected or none has its
  sound on (so nobody would hear it); tier 2: an escalation (high priority unacknowledged
  past `[alerts] escalate_after_s`).
- What people do to a high-priority alarm (acknowledged, reset, acknowledge undone) follows
  on the same page topic and webhook, `page: false`, so a pager stops (or starts again).
- Every payload carries `text`, the alarm row as the screens show it (monitor/alarms/text.py).

How it goes out — durably. The engine puts each event's outbound messages (`Routes.messages`)
into Redis outboxes (monitor/store/outbox.py, the outbox the EHR interface uses) in the *same*
MULTI/EXEC that commits the event (monitor/alarms/store.py `commit`): an event that is stored
has its pages stored with it. Two destinations, each its own stream and queue:
`pager-mqtt` (every event; pages also to the page topic) and `pager-webhook` (pages). Every
alerts worker runs one sender thread per destination (`start_senders`); the destination's
lease lets exactly one of them send, in order, at least once, retrying with backoff
(PAGE_BACKOFF_START_S doubling to PAGE_BACKOFF_MAX_S) until the broker acknowledges (PUBACK)
or the webhook answers 2xx. A refusal (an MQTT v5 PUBACK reason ≥ 0x80, an HTTP 4xx other than
408/429) is kept with the message for admins (`vitalwatch outbox list`, /outbox). So a worker
killed during a broker outage loses nothing: after a restart (or from another worker, once the
lease lapses) the held pages go out when the broker is back. A receiver may see a message
twice (a crash between sending and settling): an event is identified by `alert` + `event` +
`ts`.

The exception — pages that say monitoring has stopped (`DirectPager`). When Redis itself
refuses writes (out of memory, a read-only replica) or cannot be reached, an outbox in Redis
can hold nothing, and that is exactly when the page matters most. So a process that detects
that monitoring stopped sends that page straight to the broker and the webhook from its own
memory, retried with backoff for up to DIRECT_GIVE_UP_S and at most DIRECT_HELD_MAX held —
bounded, and lost if that process dies meanwhile (the outbox cannot be used, and a page that
monitoring stopped is only useful while it is news).
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import redis

from monitor.model.keys import Keys
from monitor.model.redact import redact_url
from monitor.store.outbox import (
    Delivered,
    Message,
    Outbox,
    OutboxSender,
    Outcome,
    Refused,
    Retry,
    message_fields,
)
from monitor.store.retry import REDIS_ERRORS, Backoff, Episode, keep_running

from .model import AlertEvent
from .text import alarm_line

log = logging.getLogger(__name__)

DEST_MQTT = "pager-mqtt"
DEST_WEBHOOK = "pager-webhook"
PAGE_BACKOFF_START_S = 0.5
PAGE_BACKOFF_MAX_S = 10.0
PAGE_LEASE_MS = 5000  # a dead sender's destination is taken over within this
PUBACK_TIMEOUT_S = 5.0
DIRECT_GIVE_UP_S = 900.0
DIRECT_HELD_MAX = 200

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


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One message for one outbound destination."""

    dest: str
    body: str
    kind: str  # "alert-event" (the event topic) or "alert-page" (page topic, webhook)
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Routes:
    """Where alert events go: the MQTT topic (pages also to `<topic>/page`) and, for pages,
    the webhook when one is configured."""

    topic: str
    webhook: bool = False

    @property
    def page_topic(self) -> str:
        """The topic pages go to."""
        return f"{self.topic}/page"

    def destinations(self) -> list[str]:
        """The outboxes these routes fill."""
        return [DEST_MQTT] + ([DEST_WEBHOOK] if self.webhook else [])

    def messages(self, event: AlertEvent, tier: int | None, *, follow_up: bool = False,
                 room_name: str = "") -> list[OutMessage]:
        """The outbound messages of one event (pure): the event topic always; the page topic
        and the webhook for a page (`tier`) and for a `follow_up` (a person's action on a
        high-priority alarm, so a pager stops)."""
        body = payload(event, tier, room_name).decode()
        out = [OutMessage(DEST_MQTT, body, "alert-event", {"topic": self.topic})]
        if tier is not None or follow_up:
            out.append(OutMessage(DEST_MQTT, body, "alert-page", {"topic": self.page_topic}))
            if self.webhook:
                out.append(OutMessage(DEST_WEBHOOK, body, "alert-page"))
        return out


def outbox_entries(messages: list[OutMessage], key: str, now_ms: int) -> list[tuple[str, dict[str, str]]]:
    """(destination, outbox stream fields) of messages a commit enqueues (pure); `key` is
    the alert id (shown with the message on /outbox)."""
    return [(m.dest, message_fields(m.body, kind=m.kind, key=key, content_type="application/json", meta=m.meta,
                                    now_ms=now_ms)) for m in messages]


# --- transports ------------------------------------------------------------------------------
class MqttSender:
    """One MQTT connection (paho 2, v5 or 3.1.1, TLS with mqtts://) that publishes a message
    QoS 1 and waits for the broker's PUBACK: Delivered, Refused (a v5 reason ≥ 0x80) or Retry
    (not connected, no PUBACK in time). A callable `Message -> Outcome` for the outbox."""

    def __init__(self, mqtt_url: str, mqtt_version: str, client_id: str, *, username: str | None = None,
                 password: str | None = None, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, puback_timeout_s: float = PUBACK_TIMEOUT_S) -> None:
        self.puback_timeout_s = puback_timeout_s
        self.connected = threading.Event()
        self._reasons: dict[int, Any] = {}
        self._lock = threading.Lock()
        proto = mqtt.MQTTv5 if mqtt_version == "5" else mqtt.MQTTv311
        self._mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
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
        self.where = f"{u.hostname or '127.0.0.1'}:{u.port or (8883 if tls else 1883)}"
        self._mqtt.connect_async(u.hostname or "127.0.0.1", u.port or (8883 if tls else 1883), keepalive=30)
        self._mqtt.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("outbound MQTT connect refused: %s", reason)
            return
        self.connected.set()
        log.info("outbound MQTT connected to %s", self.where)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected.is_set():
            log.warning("outbound MQTT disconnected (%s); messages wait in their outbox", reason)
        self.connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            self._reasons[mid] = reason

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait for the broker connection (tests, start-up)."""
        return self.connected.wait(timeout_s)

    def __call__(self, msg: Message) -> Outcome:
        topic = msg.meta.get("topic", "")
        if not topic:
            return Refused("no MQTT topic in the message")
        return self.publish(topic, msg.body.encode())

    def publish(self, topic: str, body: bytes) -> Outcome:
        """Publish QoS 1 and wait for the broker's answer."""
        if not self.connected.is_set():
            return Retry(f"MQTT broker {self.where} not connected")
        # never hold our lock while calling into paho: its network thread may be inside
        # _on_publish (holding paho's own locks) waiting for ours
        info = self._mqtt.publish(topic, body, qos=1)
        try:
            info.wait_for_publish(self.puback_timeout_s)
        except (ValueError, RuntimeError) as e:
            return Retry(f"publish to {self.where} failed: {e}")
        if not info.is_published():
            return Retry(f"no PUBACK from {self.where} within {self.puback_timeout_s:g} s")
        with self._lock:
            reason = self._reasons.pop(info.mid, None)
        if reason is not None and getattr(reason, "is_failure", False):
            return Refused(f"broker refused the publish to {topic}: {reason}")
        return Delivered("PUBACK")

    def close(self) -> None:
        """Disconnect."""
        self._mqtt.disconnect()
        self._mqtt.loop_stop()


class WebhookSender:
    """POSTs a page as JSON to `[alerts] webhook_url`: 2xx Delivered; 4xx (but 408/429)
    Refused with the answer; 408, 429, 5xx and network errors Retry."""

    def __init__(self, url: str, timeout_s: float = 3.0) -> None:
        self.url, self.timeout_s = url, timeout_s

    def __call__(self, msg: Message) -> Outcome:
        return self.post(msg.body.encode())

    def post(self, body: bytes) -> Outcome:
        """POST one page and judge the answer."""
        req = urllib.request.Request(self.url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - the configured URL
                return Delivered(f"HTTP {resp.status}")
        except urllib.error.HTTPError as e:
            answer = e.read(4000).decode("utf-8", "replace") if e.fp else ""
            if e.code in (408, 429) or e.code >= 500:
                return Retry(f"HTTP {e.code} from {redact_url(self.url)}")
            return Refused(f"HTTP {e.code} from {redact_url(self.url)}", answer)
        except (urllib.error.URLError, OSError, TimeoutError, ValueError) as e:
            return Retry(f"{redact_url(self.url)}: {getattr(e, 'reason', e)}")


# --- the durable path: outbox senders -----------------------------------------------------
def run_sender(sender: OutboxSender, client: redis.Redis, keys: Keys, stop: threading.Event) -> None:
    """Step one destination's outbox sender until `stop`: send while holding its lease, wait
    for new messages (XREAD BLOCK) when there is nothing to send, survive every Redis error."""
    dest = sender.outbox.dest
    episode = Episode(f"outbound {dest}", log)
    backoff = Backoff(0.5, 5.0)
    while not stop.is_set():
        try:
            wait = sender.step()
            if sender.idle and not stop.is_set():  # nothing waits: wake as soon as one is added
                client.xread({keys.outbox(dest): "$"}, block=int(min(wait, 1.0) * 1000) or 1)
                wait = 0.0
            backoff.reset()
            episode.recovered()
        except REDIS_ERRORS as e:  # unreachable, or an error reply: the messages wait in Redis
            wait = backoff.next()
            episode.failed(e, wait)
        stop.wait(wait)


def start_senders(client_factory: Callable[[], redis.Redis], keys: Keys, owner: str,
                  transports: Mapping[str, Callable[[Message], Outcome]],
                  stop: threading.Event) -> list[threading.Thread]:
    """One sender thread per destination (`transports`: destination → Message -> Outcome),
    each with its own Redis client; threads that never die before `stop` (keep_running)."""
    threads = []
    for dest, send in transports.items():
        def body(dest: str = dest, send: Callable[[Message], Outcome] = send) -> None:
            client = client_factory()
            sender = OutboxSender(Outbox(client, keys, dest), send, owner=owner, lease_ms=PAGE_LEASE_MS,
                                  backoff_start_s=PAGE_BACKOFF_START_S, backoff_max_s=PAGE_BACKOFF_MAX_S)
            try:
                run_sender(sender, client, keys, stop)
            finally:
                try:
                    sender.release()
                except REDIS_ERRORS as e:
                    log.warning("outbound %s: lease not released (%s); it lapses by itself", dest, e)
                client.close()
        threads.append(keep_running(f"outbound-{dest}", body, stop, log))
    return threads


# --- the direct path: pages that cannot wait for Redis --------------------------------------
@dataclass
class _Held:
    name: str  # "mqtt <topic>" or "webhook"
    send: Callable[[], Outcome]
    first_s: float
    next_s: float
    attempts: int = 0


class DirectPager:
    """Sends a page straight to the broker and the webhook, from memory, retried with backoff
    for up to `give_up_s`; at most `max_held` held (the oldest dropped, logged, beyond that).
    For pages that must not depend on Redis (see the module docstring)."""

    def __init__(self, routes: Routes, mqtt_sender: MqttSender | None, webhook: WebhookSender | None, *,
                 give_up_s: float = DIRECT_GIVE_UP_S, max_held: int = DIRECT_HELD_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.routes, self.mqtt, self.webhook = routes, mqtt_sender, webhook
        self.give_up_s, self.max_held, self.clock = give_up_s, max_held, clock
        self._held: collections.deque[_Held] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.stats = {"sent": 0, "refused": 0, "dropped": 0, "attempts": 0}
        self._thread: threading.Thread | None = None

    def page(self, event: AlertEvent, tier: int | None, room_name: str = "All rooms") -> None:
        """Send one event as a page (tier set) or as its follow-up (tier None, e.g. monitoring
        resumed): to the event topic and the page topic, and to the webhook."""
        body = payload(event, tier, room_name)
        now = self.clock()
        items = []
        if self.mqtt is not None:
            for topic in (self.routes.topic, self.routes.page_topic):
                items.append(_Held(f"mqtt {topic}", functools.partial(self.mqtt.publish, topic, body), now, now))
        if self.webhook is not None:
            items.append(_Held("webhook", functools.partial(self.webhook.post, body), now, now))
        with self._lock:
            for it in items:
                if len(self._held) >= self.max_held:
                    old = self._held.popleft()
                    self.stats["dropped"] += 1
                    log.error("direct page to %s dropped: %d pages already held", old.name, self.max_held)
                self._held.append(it)
        self._wake.set()

    @property
    def held(self) -> int:
        """Pages not yet delivered."""
        with self._lock:
            return len(self._held)

    def step(self) -> float:
        """Try every held page that is due; returns the seconds until the next is due."""
        now = self.clock()
        with self._lock:
            due = [h for h in self._held if h.next_s <= now]
        for h in due:
            self.stats["attempts"] += 1
            h.attempts += 1
            outcome = h.send()
            done = not isinstance(outcome, Retry)
            if isinstance(outcome, Delivered):
                self.stats["sent"] += 1
            elif isinstance(outcome, Refused):
                self.stats["refused"] += 1
                log.error("direct page refused by %s: %s", h.name, outcome.reason)
            elif now - h.first_s >= self.give_up_s:
                done = True
                self.stats["dropped"] += 1
                log.error("direct page to %s given up after %.0f s (%d tries): %s", h.name, now - h.first_s,
                          h.attempts, outcome.reason)
            else:
                h.next_s = now + min(PAGE_BACKOFF_START_S * 2 ** (h.attempts - 1), PAGE_BACKOFF_MAX_S)
                if h.attempts == 1:
                    log.warning("direct page to %s not delivered (%s); retrying", h.name, outcome.reason)
            if done:
                with self._lock:
                    if h in self._held:
                        self._held.remove(h)
        with self._lock:
            nxt = min((h.next_s for h in self._held), default=now + 1.0)
        return max(0.05, nxt - self.clock())

    def start(self, stop: threading.Event) -> threading.Thread:
        """Send in a background thread until `stop`."""
        def body() -> None:
            while not stop.is_set():
                wait = self.step()
                self._wake.wait(min(wait, 1.0))
                self._wake.clear()

        self._thread = keep_running("direct-pager", body, stop, log)
        return self._thread
