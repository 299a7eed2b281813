"""MQTT device adapter: broker → codecs → StreamWriter, acknowledged only once stored.

`start(cfg, endpoints, writer, devices, stop_event) -> handle` runs the MQTT devices of one
ingest process (`vitalwatch ingest` calls it). Delivery is at-least-once into Redis and,
with the writer's (device, ts) de-duplication, each reading is stored once:

- one persistent session per running copy (stable client id, clean start off, session
  expiry), QoS 1 subscriptions, so the broker queues while we are away;
- manual acknowledgement: a message's PUBACK goes out only after every entry it produced
  (readings and rejects) is in Redis, and PUBACKs leave in arrival order (MQTT §4.6);
- a redelivery after a crash carries the same device ts, so the writer skips it.

Everything refused goes to `rejects` with a reason (rate-limited per device and reason to
one a second — messages on topics no device owns share one budget, so a flood of made-up
topics writes one entry a second; what is held back is counted in a summary entry and in
the device's status).
Device status hashes (monitor/store/status.py) are written about once a second.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.subscribeoptions import SubscribeOptions

from devices.mqtt_plan import Plan, Route, parse_status, plan_subscriptions, slot_client_id
from devices.protocols import json_payload, senml
from devices.transports.mqtt import (
    MqttSettings,
    connect_async,
    is_failure,
    make_client,
    reason_text,
)
from monitor.model.clock import now_ms
from monitor.model.codec import reject_fields
from monitor.model.config import Config, DeviceConfig, RoomConfig
from monitor.model.ratelimit import RateLimiter
from monitor.model.readings import Reading, Refusal
from monitor.observe import collectors as observe
from monitor.store.redis_conn import connect
from monitor.store.redis_faults import REDIS_FAILURES, classify
from monitor.store.runtime import Endpoints
from monitor.store.status import publish_status
from monitor.store.streams import StreamWriter

log = logging.getLogger(__name__)

Decoder = Callable[[bytes, int, str, str, str], tuple[list[Reading], list[Refusal]]]
CODECS: dict[str, Decoder] = {"json": json_payload.decode, "senml": senml.decode}
STATUS_TICK_S = 1.0
UNKNOWN_SOURCE = "(topics no device owns)"  # rejects limiter key for unknown topics
MAX_SLOTS = 64
TRACEBACK_EVERY_S = 10.0  # at most one traceback per (topic, error type) this often
FLOW_WAIT_S = 0.5  # flow control: how often a held delivery looks at the stop flag
FLOW_LOG_EVERY_S = 60.0


def device_state(
    *,
    broker_up: bool,
    reported: str | None,
    last_valid_ms: int | None,
    last_msg_ms: int | None,
    up_since_ms: int | None,
    now_ms: int,
    silence_ms: int,
    not_stored: str = "",
) -> tuple[str, str]:
    """(state, detail) of one MQTT device (pure).

    connecting: broker link down, or just connected and nothing heard yet;
    online: a valid reading within the silence timeout, and its readings are being stored;
    silent: the device is there (status topic says online, or it sends messages that are
    refused) but no valid reading within the timeout — or its valid readings have not been
    stored for longer than that (`not_stored` says why): to monitoring, that is silence;
    offline: its status/last-will topic says offline, or nothing at all for the timeout.
    """
    silence_s = silence_ms / 1000
    if not broker_up:
        return "connecting", "broker not connected"
    if reported == "offline":
        return "offline", "device reported offline (status topic)"
    if last_valid_ms is not None and now_ms - last_valid_ms <= silence_ms:
        if not_stored:
            return "silent", not_stored
        return "online", ""
    heard = last_msg_ms is not None and now_ms - last_msg_ms <= silence_ms
    if reported == "online" or heard:
        return "silent", f"no valid reading for {silence_s:g} s"
    if last_msg_ms is None and up_since_ms is not None and now_ms - up_since_ms < silence_ms:
        return "connecting", "waiting for the first message"
    return "offline", f"no message for {silence_s:g} s"


class AckSequencer:
    """Acknowledges messages in arrival order once all entries of each are stored.

    A message whose PUBACK could not go out (its connection ended first) is remembered by
    packet id and content: when the broker redelivers it (DUP) on the new connection,
    `redelivered()` takes the held message over instead of storing it a second time — so a
    reconnect neither doubles what is held in memory nor stores a ts-less reading twice.
    """

    def __init__(self, send: Callable[[int, int, int], bool], remember_max: int = 4000) -> None:
        self._send = send
        self._remember_max = remember_max
        self._cond = threading.Condition()
        self._queue: collections.deque[list[int]] = collections.deque()
        # mid → (digest, slot) of messages not yet acknowledged on any connection
        self._unacked: collections.OrderedDict[int, tuple[int, list[int]]] = collections.OrderedDict()

    def add(self, mid: int, qos: int, gen: int, n_entries: int, digest: int = 0) -> Callable[[], None]:
        """Register a message with `n_entries` pending writes; returns their on_stored callback."""
        slot = [mid, qos, gen, n_entries]
        with self._cond:
            self._queue.append(slot)
            if qos > 0:
                self._remember(mid, digest, slot)
            self._release()

        def done() -> None:
            with self._cond:
                slot[3] -= 1
                self._release()

        return done

    def redelivered(self, mid: int, qos: int, gen: int, digest: int) -> bool:
        """A redelivery (DUP) of a message still held or stored-but-unacknowledged: move its
        acknowledgement to connection `gen`. False if it is not one we know."""
        with self._cond:
            known = self._unacked.get(mid)
            if known is None or known[0] != digest:
                return False
            slot = known[1]
            if slot[3] > 0:
                slot[2] = gen  # still being stored: acknowledge on this connection when done
            else:  # stored already, its PUBACK lost with the old connection: acknowledge now, in order
                slot = [mid, qos, gen, 0]
                self._queue.append(slot)
                self._unacked[mid] = (digest, slot)
            self._release()
            return True

    def _remember(self, mid: int, digest: int, slot: list[int]) -> None:
        self._unacked[mid] = (digest, slot)
        self._unacked.move_to_end(mid)
        while len(self._unacked) > self._remember_max:
            self._unacked.popitem(last=False)

    @property
    def pending(self) -> int:
        """Messages received and not yet released (stored or refused)."""
        with self._cond:
            return len(self._queue)

    @property
    def unacked(self) -> int:
        """Messages remembered as not yet acknowledged (held, or awaiting redelivery)."""
        with self._cond:
            return len(self._unacked)

    def wait_below(self, limit: int, timeout_s: float) -> bool:
        """Wait until fewer than `limit` messages are pending; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._queue) < limit, timeout_s)

    def _release(self) -> None:
        # under the lock, so PUBACKs leave in arrival order whichever thread releases them
        released = False
        while self._queue and self._queue[0][3] <= 0:
            mid, qos, gen, _ = self._queue.popleft()
            released = True
            if qos > 0 and self._send(mid, qos, gen):
                known = self._unacked.get(mid)
                if known is not None and known[1][2] == gen:
                    del self._unacked[mid]
        if released:
            self._cond.notify_all()


@dataclasses.dataclass
class _Device:
    route: Route
    silence_ms: int
    state: str = "connecting"
    since_ms: int = 0
    detail: str = ""
    last_valid_ms: int | None = None
    last_msg_ms: int | None = None
    last_ts: int | None = None  # label of the newest reading Redis confirmed
    last_recv_ms: int | None = None  # … and when it was received (host clock)
    reported: str | None = None
    next_recv_ms: int = 0  # receive times given to this device's readings stay distinct
    sub_error: str = ""
    frames: int = 0  # deltas not yet written to Redis
    reconnects: int = 0
    rejects: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


def _take_slot(data_dir: Path, base_id: str) -> tuple[int, int]:
    """Lock the lowest free copy number for `base_id` on this data directory → (slot, fd).

    The lock dies with the process (even kill -9), so a restarted copy gets its slot — and
    its client id, and its persistent session — back.
    """
    lock_dir = data_dir / "mqtt-clients"
    lock_dir.mkdir(parents=True, exist_ok=True)
    stem = hashlib.sha256(base_id.encode()).hexdigest()[:16]
    for slot in range(MAX_SLOTS):
        fd = os.open(lock_dir / f"{stem}.{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return slot, fd
    raise RuntimeError(f"more than {MAX_SLOTS} ingest copies share client id {base_id}")


class MqttAdapter:
    """Runs the MQTT devices of one ingest process; see the module docstring."""

    def __init__(
        self,
        cfg: Config,
        endpoints: Endpoints,
        writer: StreamWriter,
        devices: list[tuple[RoomConfig, DeviceConfig]],
        stop_event: threading.Event,
        *,
        status_client: redis.Redis | None = None,
    ) -> None:
        self.cfg = cfg
        self.keys = endpoints.keys
        self.writer = writer
        self.plan: Plan = plan_subscriptions(cfg, devices)
        self._stop_event = stop_event
        self._stopping = threading.Event()
        self._slot, self._slot_fd = _take_slot(cfg.data_dir, self.plan.client_id)
        self.client_id = slot_client_id(self.plan.client_id, self._slot)
        self.settings = MqttSettings(
            url=endpoints.mqtt_url, version=endpoints.mqtt_version, client_id=self.client_id,
            username=endpoints.mqtt_username, password=endpoints.mqtt_password,
            ca_file=cfg.mqtt.ca_file, cert_file=cfg.mqtt.cert_file, key_file=cfg.mqtt.key_file,
            session_expiry_s=cfg.mqtt.session_expiry_s, receive_maximum=cfg.mqtt.receive_maximum)
        self._lock = threading.Lock()  # device records, limiter
        self._ack_lock = threading.Lock()  # connection generation vs. PUBACKs
        self._gen = 0
        self._broker_up = False
        self._broker_detail = "connecting to broker"
        self._up_since_ms: int | None = None
        self._connected_once = False
        self.subscribed = threading.Event()  # set once the broker answered our SUBSCRIBE
        started = now_ms()
        # since when the broker link is down (from the start until the first connect):
        # each device's status says so (`broker_down_ms`), for the clinic-wide `broker` cause
        self._down_since_ms: int | None = started
        self.devices: dict[str, _Device] = {
            r.device: _Device(r, int((_device_cfg(devices, r.device).silence_s or cfg.mqtt.silence_s) * 1000),
                              since_ms=started)
            for r in self.plan.routes.values()}
        self.limiter = RateLimiter(1.0)
        self.unknown_topic_count = 0
        self.acks = AckSequencer(self._ack, remember_max=4 * cfg.mqtt.receive_maximum)
        # flow control: never more messages held (received, not yet stored) than the broker
        # may have in flight to us; beyond that the broker keeps them, unacknowledged
        self.max_held = cfg.mqtt.receive_maximum
        self.flow_waits = 0  # deliveries that had to wait for room (counted; logged once a minute)
        self._flow_log_next = 0.0
        # after reconnecting to a present session, the first deliveries may be redeliveries
        # a broker did not flag DUP: their readings are checked against the streams
        self._maybe_redelivered = 0
        self._tracebacks = RateLimiter(TRACEBACK_EVERY_S)
        self._status_error = ""
        self._redis = status_client or connect(endpoints.redis_url)
        self.client = make_client(self.settings, persistent=True, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._thread = threading.Thread(target=self._run, name="mqtt-adapter", daemon=True)

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> MqttAdapter:
        """Connect in the background and start the status loop."""
        log.info("MQTT ingest as %r on %s (MQTT %s): %d device(s), subscribing %s",
                 self.client_id, self.settings.url, self.settings.version, len(self.devices),
                 ", ".join(self.plan.filters) or "nothing")
        connect_async(self.client, self.settings, persistent=True)
        self.client.loop_start()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the adapter to stop (unacknowledged messages stay queued at the broker)."""
        self._stopping.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the adapter to have stopped."""
        self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        """True once asked to stop."""
        return self._stop_event.is_set() or self._stopping.is_set()

    def workers(self) -> list[tuple[str, Callable[[], bool], Callable[[], None]]]:
        """(name, is alive, restart) of this adapter's threads, for ingest's supervisor."""
        return [("mqtt-adapter", self._status_alive, self._restart_status_thread),
                ("mqtt-network", self._network_alive, self._restart_network)]

    def _status_alive(self) -> bool:
        # the *current* status thread: a restart replaces it (binding the first thread's
        # is_alive here made the watchdog start a new one every second after a restart)
        return self._thread.is_alive()

    def _network_alive(self) -> bool:
        t = self.client._thread  # paho keeps its loop_start() thread here
        return t is not None and t.is_alive()

    def _restart_network(self) -> None:
        self.client.loop_stop()  # forgets the dead thread (joins it: it has ended)
        self.client.loop_start()

    def _restart_status_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-adapter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stopping:
            try:
                self._tick()
            except Exception as e:  # noqa: BLE001 - status upkeep must never stop the ingest
                self._traceback(("tick", type(e).__name__), "device status update failed; retrying next tick", e)
            self._stopping.wait(STATUS_TICK_S)
        # reached only on a stop (a thread killed by a bug leaves the connection to the restart)
        with self._ack_lock:
            self._gen += 1  # no PUBACK after this point: unstored messages come back
        self.client.disconnect()
        self.client.loop_stop()
        try:
            self._tick(final=True)
        except Exception as e:  # noqa: BLE001 - stopping anyway; say why the last status is missing
            log.warning("final device status not written: %s", e)
        os.close(self._slot_fd)
        log.info("MQTT ingest %r stopped", self.client_id)

    def _traceback(self, key: object, what: str, e: BaseException) -> None:
        """Log an unexpected error with its traceback, at most once per key and interval."""
        allowed, held = self._tracebacks.allow(key, time.monotonic())
        if allowed:
            log.error("%s (+%d like it suppressed in the last %g s)", what, held, TRACEBACK_EVERY_S,
                      exc_info=e)

    # --- paho callbacks (network thread) ----------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    rc: mqtt.ReasonCode, properties: object = None) -> None:
        if is_failure(rc):
            self._broker_detail = f"broker refused the connection: {reason_text(rc)}"
            log.error("%s", self._broker_detail)
            return
        with self._ack_lock:
            self._gen += 1
        with self._lock:
            if self._connected_once:
                for d in self.devices.values():
                    d.reconnects += 1
            self._connected_once = True
            self._broker_up = True
            self._broker_detail = ""
            self._up_since_ms = now_ms()
            self._down_since_ms = None
        if flags.session_present:
            self._maybe_redelivered = self.settings.receive_maximum
        log.info("connected to %s (session present: %s)", self.settings.url, flags.session_present)
        if not self.plan.filters:
            return
        if self.settings.v5:
            client.subscribe([(f, SubscribeOptions(qos=1)) for f in self.plan.filters])
        else:
            client.subscribe([(f, 1) for f in self.plan.filters])

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self._broker_detail = f"broker {self.settings.url} unreachable"

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       rc: mqtt.ReasonCode, properties: object = None) -> None:
        with self._ack_lock:
            self._gen += 1
        with self._lock:
            was_up, self._broker_up = self._broker_up, False
            if was_up:  # else keep the refusal on_connect recorded: it says why
                self._broker_detail = f"broker connection lost: {reason_text(rc)}"
                self._down_since_ms = now_ms()
        if was_up and not (self._stopping.is_set() or self._stop_event.is_set()):
            log.warning("MQTT %s; reconnecting", self._broker_detail)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      rcs: list[mqtt.ReasonCode], properties: object = None) -> None:
        for filt, rc in zip(self.plan.filters, rcs, strict=False):
            if not is_failure(rc):
                continue
            why = f"broker refused subscription {filt!r}: {reason_text(rc)}"
            log.error("%s", why)
            bare = filt.split("/", 2)[2] if filt.startswith("$share/") else filt
            with self._lock:
                for d in self.devices.values():
                    if mqtt.topic_matches_sub(bare, d.route.topic):
                        d.sub_error = why
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self._handle(msg)
        except Exception as e:  # noqa: BLE001 - nothing may escape into paho: it would end its loop
            self._traceback((msg.topic, type(e).__name__), f"failed to handle a message on {msg.topic}", e)

    def _flow_control(self) -> None:
        """Hold this delivery while `max_held` messages wait to be stored.

        An MQTT 5 broker sends at most `receive_maximum` unacknowledged messages, so this
        only waits when a broker does not honour it (MQTT 3.1.1, or held messages from an
        earlier connection). Waiting here stops reading the socket: the broker keeps the
        rest, unacknowledged, and redelivers what a dropped connection left behind."""
        if self.acks.pending < self.max_held:
            return
        self.flow_waits += 1
        mono = time.monotonic()
        if mono >= self._flow_log_next:  # a drain after an outage hits the bound often: say it once a minute
            self._flow_log_next = mono + FLOW_LOG_EVERY_S
            log.warning("flow control: %d messages wait to be stored; taking no more from the broker "
                        "until some are (it keeps them; %d waits so far)", self.acks.pending, self.flow_waits)
        while not self.stopping and not self.acks.wait_below(self.max_held, FLOW_WAIT_S):
            pass

    def _handle(self, msg: mqtt.MQTTMessage) -> None:
        gen = self._gen  # the connection it came on: its PUBACK is only valid there
        payload = bytes(msg.payload)
        digest = hash((msg.topic, payload))
        maybe_stored = bool(msg.dup)
        if self._maybe_redelivered > 0:
            self._maybe_redelivered -= 1
            maybe_stored = True
        if msg.dup and msg.qos > 0 and self.acks.redelivered(msg.mid, msg.qos, gen, digest):
            return  # we hold it (or stored it) already: only its acknowledgement moves over
        self._flow_control()
        recv_ms = now_ms()  # after any wait: when it was taken in
        try:
            readings, refusals = self._classify(msg, recv_ms)
        except Exception as e:  # noqa: BLE001 - a codec bug must not stop every room's ingest
            self._traceback((msg.topic, type(e).__name__), f"failed to decode a message on {msg.topic}", e)
            readings, refusals = [], [Refusal(msg.topic, "internal_error", repr(e)[:200], payload)]
        self._store(msg, gen, recv_ms, readings, refusals, digest, maybe_stored)

    # --- message handling -------------------------------------------------------------
    def _classify(self, msg: mqtt.MQTTMessage, recv_ms: int) -> tuple[list[Reading], list[Refusal]]:
        topic, payload = msg.topic, bytes(msg.payload)  # paho types it bytes | bytearray
        route = self.plan.routes.get(topic)
        if route is not None:
            if msg.retain:
                # a retained value is replayed on every (re)subscribe: not a live measurement
                return [], [Refusal(topic, "retained", "retained message on a device topic", payload)]
            with self._lock:
                dev = self.devices[route.device]
                # A reading without a usable device time gets the receive time; two such
                # messages in one millisecond (a burst after an outage) must not share a
                # (device, ts) label, or the writer would fold the second into the first when
                # their values are equal too (identity: device, ts, values and flags).
                recv_ms = max(recv_ms, dev.next_recv_ms)
            readings, refusals = CODECS[route.protocol](payload, recv_ms, route.room, route.device, topic)
            with self._lock:
                given = [r.ts_ms for r in readings if recv_ms <= r.ts_ms <= recv_ms + len(readings)]
                dev.next_recv_ms = max([dev.next_recv_ms, recv_ms + 1] + [t + 1 for t in given])
                dev.last_msg_ms = recv_ms
                if readings:
                    dev.frames += 1
                    dev.last_valid_ms = recv_ms
                    if dev.reported == "offline":
                        dev.reported = None  # it sends data: whatever said offline is outdated
            return readings, refusals
        sroute = self.plan.status_routes.get(topic)
        if sroute is not None:
            state = parse_status(payload)
            if state is None:
                return [], [Refusal(topic, "bad_status", 'status payload must be "online", "offline" '
                                    'or {"state": ...}', payload)]
            with self._lock:
                dev = self.devices[sroute.device]
                dev.reported = state
                if state == "online":
                    dev.last_msg_ms = recv_ms
            log.info("device reports %s", state, extra={"room": sroute.room, "device": sroute.device})
            return [], []
        if topic in self.plan.ignored:
            return [], []  # another ingest process's device, or our own outbound topic
        self.unknown_topic_count += 1
        return [], [Refusal(topic, "unknown_topic", f"no device owns topic {topic!r}", payload)]

    def _store(self, msg: mqtt.MQTTMessage, gen: int, recv_ms: int, readings: list[Reading],
               refusals: list[Refusal], digest: int = 0, maybe_stored: bool = False) -> None:
        route = self.plan.routes.get(msg.topic) or self.plan.status_routes.get(msg.topic)
        rejects: list[dict[str, str]] = []
        mono = time.monotonic()
        with self._lock:
            for ref in refusals:
                observe.rejected(ref.reason)
                if route is not None:
                    self.devices[route.device].rejects[ref.reason] += 1
                # keyed by device, never by topic: made-up topics all share one budget
                allowed, held = self.limiter.allow((route.device if route else UNKNOWN_SOURCE, ref.reason), mono)
                if not allowed:
                    continue  # counted; drain() writes the summary
                if held:
                    ref = dataclasses.replace(ref, detail=f"{ref.detail} (+{held} more suppressed before this)")
                rejects.append(reject_fields(ref, recv_ms))
        done = self.acks.add(msg.mid, msg.qos, gen, len(readings) + len(rejects), digest)
        # a redelivery may already be stored (by us before a crash, or by another copy in a
        # shared subscription): no earlier than the broker could have held it for us
        stored_after = recv_ms - self.settings.session_expiry_s * 1000 if maybe_stored else None
        try:
            for r in readings:
                self.writer.write(r, on_stored=done, stored_after_ms=stored_after)
            for fields in rejects:
                self.writer.append(self.keys.rejects, fields, on_stored=done)
        except RuntimeError as e:  # writer closed: we are stopping; the broker keeps the message
            log.warning("message on %s not stored (%s); it will be redelivered", msg.topic, e)

    def metrics(self) -> tuple[bool, int]:
        """(connected to the broker, messages received and not yet acknowledged) for /metrics."""
        return self._broker_up, self.acks.pending

    def _ack(self, mid: int, qos: int, gen: int) -> bool:
        """PUBACK now if the message came on the current connection; True if sent."""
        with self._ack_lock:
            if gen == self._gen:
                self.client.ack(mid, qos)
                return True
            # else: delivered on an earlier connection; the broker redelivers it and
            # AckSequencer.redelivered() acknowledges it then
            return False

    # --- status -----------------------------------------------------------------------
    def _tick(self, final: bool = False) -> None:
        now = now_ms()
        pipe = self._redis.pipeline(transaction=False)
        taken: list[tuple[_Device, int, int, collections.Counter[str]]] = []
        storage = self.writer.storage()
        with self._lock:
            for d in self.devices.values():
                # liveness from storage: what Redis confirmed (or holds on its way there for
                # less than the silence time, see DeviceBacklog.heard_ms), not what was parsed
                mark = self.writer.last_stored(d.route.device)
                if mark is not None:
                    d.last_ts, d.last_recv_ms = mark.ts_ms, mark.recv_ms
                backlog = self.writer.device_backlog(d.route.device)
                waited_ms = backlog.age_ms(now)
                not_stored = ""
                if waited_ms > d.silence_ms:
                    not_stored = ("readings not being stored: "
                                  f"{storage.cause or storage.spool_error or 'waiting for Redis'}")
                state, detail = device_state(
                    broker_up=self._broker_up, reported=d.reported, last_valid_ms=d.last_valid_ms,
                    last_msg_ms=d.last_msg_ms, up_since_ms=self._up_since_ms, now_ms=now,
                    silence_ms=d.silence_ms, not_stored=not_stored)
                if final:
                    state, detail = "offline", "ingest stopped"
                elif state == "connecting" and not self._broker_up and self._broker_detail:
                    detail = self._broker_detail
                detail = "; ".join(x for x in (detail, d.sub_error) if x)
                if state != d.state:
                    log.info("%s → %s %s", d.state, state, detail,
                             extra={"room": d.route.room, "device": d.route.device})
                    d.state, d.since_ms = state, now
                d.detail = detail
                fields: dict[str, str | int] = {
                    "room": d.route.room, "protocol": d.route.protocol, "transport": "mqtt",
                    "state": d.state, "since_ms": d.since_ms, "updated_ms": now, "detail": d.detail,
                    "topic": d.route.topic, "client_id": self.client_id,
                    "broker_down_ms": 0 if final or self._down_since_ms is None else self._down_since_ms}
                if d.last_ts is not None:
                    fields["last_ts"] = d.last_ts
                heard = backlog.heard_ms(d.last_recv_ms)
                if heard is not None:
                    fields["last_recv_ms"] = heard
                counters = {"frames": d.frames, "reconnects": d.reconnects,
                            **{f"rejects:{k}": n for k, n in d.rejects.items()}}
                publish_status(pipe, self.keys, d.route.device, fields, counters)
                taken.append((d, d.frames, d.reconnects, d.rejects))
                d.frames, d.reconnects, d.rejects = 0, 0, collections.Counter()
            drained = self.limiter.drain(time.monotonic())
        try:
            for key, n in drained:
                source, reason = cast(tuple[str, str], key)
                self.writer.reject(
                    Refusal(source, reason, f"+{n} more like this suppressed (rate limit 1/s)"), now)
        except RuntimeError as e:  # writer already closed at shutdown: say what was not written
            log.warning("%d rate-limited reject summaries not written: %s", len(drained), e)
        try:
            pipe.execute()
        except REDIS_FAILURES as e:  # unreachable or refusing (OOM, READONLY…): keep, retry
            with self._lock:  # keep the counts for the next tick
                for d, frames, reconnects, rejects in taken:
                    d.frames += frames
                    d.reconnects += reconnects
                    d.rejects.update(rejects)
            cause = classify(e).cause
            if cause != self._status_error:
                log.warning("device status not written (%s); retrying every %g s", cause, STATUS_TICK_S)
            self._status_error = cause
            return
        if self._status_error:
            log.info("device status written again")
            self._status_error = ""


def _device_cfg(devices: list[tuple[RoomConfig, DeviceConfig]], device_id: str) -> DeviceConfig:
    return next(d for _r, d in devices if d.id == device_id)


def start(
    cfg: Config,
    endpoints: Endpoints,
    writer: StreamWriter,
    devices: list[tuple[RoomConfig, DeviceConfig]],
    stop_event: threading.Event,
) -> MqttAdapter:
    """Run the MQTT `devices` until `stop_event` is set or `.stop()`; returns the handle."""
    return MqttAdapter(cfg, endpoints, writer, devices, stop_event).start()
