"""Runners: one thread per simulated device, doing the I/O around a pure emitter.

- `StreamingRunner`: masimo-ascii, nonin-df7, ansar-b — ticks at the emitter's period and
  writes to a pty/TCP link.
- `NibpRunner`: nibp-un300 — reads the host's command frames and answers them.
- `MqttRunner`: json/senml — publishes each tick's payload QoS 1.
- `Hl7Runner`: hl7 — ORU^R01 over MLLP to `[hl7] listen`, reading the ACKs.
Each consults the timeline's fault windows for its device, injects them, and writes the
ground truth (readings, noise, fault start/end, link events).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from devices.simulators.emitters import streaming_emitter
from devices.simulators.emitters.base import Chunk, Context
from devices.simulators.emitters.mqtt_payloads import MqttDevice
from devices.simulators.emitters.nibp_un300 import Un300Module, split_frames
from devices.simulators.link import Link
from devices.simulators.mqtt_pub import MqttPublisher
from devices.simulators.physiology import Physiology
from devices.simulators.scenarios import CLOCK_SKEW_MS, FaultWindow
from devices.simulators.truth import TruthLog

log = logging.getLogger(__name__)


class SimClock:
    """Wall time (what readings carry) and simulated time (= elapsed wall × speed)."""

    def __init__(self, speed: float = 1.0, wall: Callable[[], float] = time.time,
                 start_wall_s: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.wall = wall
        self.start_wall_s = wall() if start_wall_s is None else start_wall_s

    def now_ms(self) -> int:
        """Host time, ms since epoch."""
        return int(self.wall() * 1000)

    def elapsed_s(self) -> float:
        """Wall seconds since the run started."""
        return self.wall() - self.start_wall_s

    def sim_s(self) -> float:
        """Simulated seconds since the run started."""
        return self.elapsed_s() * self.speed

    def wall_ms_at_sim(self, sim_s: float) -> int:
        """The host time at which simulated time reaches sim_s."""
        return int((self.start_wall_s + sim_s / self.speed) * 1000)


@dataclass
class DeviceSpec:
    """What a runner needs to know about its device."""

    room: str
    device: str
    protocol: str
    faults: tuple[FaultWindow, ...] = ()
    seed: int = 1
    topic: str | None = None
    status_topic: str | None = None


@dataclass
class FaultState:
    """Which fault kinds are on for a device; logs each start/end to the truth log."""

    spec: DeviceSpec
    truth: TruthLog
    speed: float
    active: set[str] = field(default_factory=set)
    noise_rate: float | None = None  # a noisy-line window's own rate, when it sets one
    skew_ms: int = 0  # the device clock's error while a clock-skew window is on (signed)

    def update(self, elapsed_s: float, now_ms: int) -> set[str]:
        """Active fault kinds at elapsed_s (wall s since start)."""
        now = {w.kind for w in self.spec.faults if w.active(elapsed_s, self.speed)}
        for kind in sorted(now - self.active):
            self.truth.write("fault", room=self.spec.room, device=self.spec.device, fault=kind,
                             phase="start", ts_ms=now_ms)
        for kind in sorted(self.active - now):
            self.truth.write("fault", room=self.spec.room, device=self.spec.device, fault=kind,
                             phase="end", ts_ms=now_ms)
        self.active = now
        self.noise_rate = max((w.rate for w in self.spec.faults if w.kind == "noisy-line" and w.rate is not None
                               and w.active(elapsed_s, self.speed)), default=None)
        skews = [w for w in self.spec.faults if w.kind == "clock-skew" and w.active(elapsed_s, self.speed)]
        self.skew_ms = (CLOCK_SKEW_MS if skews[0].skew_s is None else int(skews[0].skew_s * 1000)) if skews else 0
        return now


class Runner(threading.Thread):
    """Base of the device threads: clock, physiology, faults, truth, stop event."""

    def __init__(self, spec: DeviceSpec, physiology: Physiology, clock: SimClock, truth: TruthLog,
                 stop: threading.Event | None = None) -> None:
        super().__init__(name=f"sim-{spec.device}", daemon=True)
        self.spec, self.physiology, self.clock, self.truth = spec, physiology, clock, truth
        self.stop_event = stop or threading.Event()
        self.faults = FaultState(spec, truth, clock.speed)
        self.noise_rng = random.Random(f"{spec.seed}:{spec.device}:noise")
        self.error: BaseException | None = None
        self.ready = threading.Event()  # set once the device is reachable (link open / client started)

    def stop(self) -> None:
        """Ask the thread to finish."""
        self.stop_event.set()

    def context(self, active: set[str]) -> Context:
        """The emitter context of this instant."""
        sim_s = self.clock.sim_s()
        rate = self.faults.noise_rate
        rates = {} if rate is None else {"garbage_p": rate, "corrupt_p": rate}
        return Context(
            now_ms=self.clock.now_ms(), sim_s=sim_s, vitals=self.physiology.vitals_at(sim_s),
            sensor_off="sensor-off" in active, noisy=self.noise_rng if "noisy-line" in active else None,
            clock_skew_ms=self.faults.skew_ms if "clock-skew" in active else 0,
            dose_s=self.physiology.first_dose_s, **rates)

    def log_chunk(self, chunk: Chunk, ctx: Context, delivered: bool) -> None:
        """Truth records for one chunk (its reading, its noise)."""
        base = {"room": self.spec.room, "device": self.spec.device}
        if chunk.noise:
            self.truth.write("noise", **base, what=chunk.noise, ts_ms=ctx.now_ms, bytes=len(chunk.data),
                             delivered=delivered)
        if chunk.reading is not None:
            rec = chunk.reading.as_record()
            if not delivered and rec["expect"] == "stored":
                rec["expect"], rec["fault"] = "lost", "no_listener"
            self.truth.write("reading", **base, protocol=self.spec.protocol, ts_ms=ctx.now_ms,
                             sim_s=round(ctx.sim_s, 3), **rec)

    def run(self) -> None:
        try:
            self.loop()
        except Exception as e:  # noqa: BLE001 - a dying device thread must say why, not vanish
            self.error = e
            log.exception("simulated device %s stopped", self.spec.device,
                          extra={"room": self.spec.room, "device": self.spec.device})
        finally:
            self.ready.set()
            self.shutdown()

    def loop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def shutdown(self) -> None:
        """Release what the device holds (link, MQTT client)."""


class _LinkRunner(Runner):
    """A serial device on a pty or TCP link; handles unplug/replug."""

    def __init__(self, spec: DeviceSpec, physiology: Physiology, clock: SimClock, truth: TruthLog,
                 link: Link, stop: threading.Event | None = None) -> None:
        super().__init__(spec, physiology, clock, truth, stop)
        self.link = link

    def plug(self, active: set[str]) -> bool:
        """Open or close the link as the `unplugged` fault says; True when plugged in."""
        base = {"room": self.spec.room, "device": self.spec.device, "path": self.link.where}
        if "unplugged" in active:
            if self.link.is_open:
                self.link.close()
                self.truth.write("link", **base, event="closed", ts_ms=self.clock.now_ms(),
                                 dropped_bytes=self.link.dropped_bytes)
            self.ready.set()  # starting unplugged is a valid start
            return False
        if not self.link.is_open:
            self.link.open()
            self.truth.write("link", **base, event="opened", ts_ms=self.clock.now_ms())
        self.ready.set()
        return True

    def shutdown(self) -> None:
        if self.link.is_open:
            self.link.close()
            self.truth.write("link", room=self.spec.room, device=self.spec.device, path=self.link.where,
                             event="closed", ts_ms=self.clock.now_ms(), dropped_bytes=self.link.dropped_bytes)


class StreamingRunner(_LinkRunner):
    """masimo-ascii, nonin-df7, ansar-b: bytes every period, unasked."""

    def __init__(self, spec: DeviceSpec, physiology: Physiology, clock: SimClock, truth: TruthLog,
                 link: Link, stop: threading.Event | None = None) -> None:
        super().__init__(spec, physiology, clock, truth, link, stop)
        self.emitter = streaming_emitter(spec.protocol)

    def loop(self) -> None:
        period = self.emitter.period_s
        next_t = time.monotonic()
        while not self.stop_event.is_set():
            active = self.faults.update(self.clock.elapsed_s(), self.clock.now_ms())
            if self.plug(active):
                ctx = self.context(active)
                for chunk in self.emitter.tick(ctx):
                    delivered = self.link.write(chunk.data) == len(chunk.data)
                    self.log_chunk(chunk, ctx, delivered)
            next_t += period
            delay = next_t - time.monotonic()
            if delay < -1.0:  # fell far behind (machine busy): re-anchor instead of bursting
                next_t, delay = time.monotonic(), 0.0
            self.stop_event.wait(max(0.0, delay))


class NibpRunner(_LinkRunner):
    """nibp-un300: answers the host's command frames; measures on `01;;`."""

    def __init__(self, spec: DeviceSpec, physiology: Physiology, clock: SimClock, truth: TruthLog,
                 link: Link, stop: threading.Event | None = None) -> None:
        super().__init__(spec, physiology, clock, truth, link, stop)
        self.module = Un300Module(speed=clock.speed, rng=random.Random(f"{spec.seed}:{spec.device}:nibp"))
        self.buf = bytearray()
        self.bad_commands = 0  # host frames with a bad checksum (ignored, as the module does)

    def loop(self) -> None:
        while not self.stop_event.is_set():
            active = self.faults.update(self.clock.elapsed_s(), self.clock.now_ms())
            if not self.plug(active):
                self.buf.clear()
                self.stop_event.wait(0.05)
                continue
            data = self.link.read(0.05)
            wall_s = self.clock.elapsed_s()
            self.module.update(wall_s, lambda: self.physiology.vitals_at(self.clock.sim_s()),
                               "sensor-off" in active)
            if not data:
                continue
            self.buf += data
            for payload, ok in split_frames(self.buf):
                if not ok:
                    self.bad_commands += 1
                    continue
                ctx = self.context(active)
                for chunk in self.module.handle(payload, wall_s, ctx.noisy, ctx.garbage_p, ctx.corrupt_p):
                    delivered = self.link.write(chunk.data) == len(chunk.data)
                    self.log_chunk(chunk, ctx, delivered)


class MqttRunner(Runner):
    """json/senml over MQTT; `unplugged` = device off, `broker-outage` = network down (held)."""

    def __init__(self, spec: DeviceSpec, physiology: Physiology, clock: SimClock, truth: TruthLog,
                 publisher: MqttPublisher, stop: threading.Event | None = None) -> None:
        super().__init__(spec, physiology, clock, truth, stop)
        if not spec.topic:
            raise ValueError(f"MQTT device {spec.device} has no topic")
        self.topic: str = spec.topic
        self.publisher = publisher
        self.device = MqttDevice(spec.protocol, spec.room, spec.device)
        self.held: deque[bytes] = deque()  # payloads kept while the device's network is down

    def loop(self) -> None:
        self.publisher.start()
        self.ready.set()
        next_t = time.monotonic()
        while not self.stop_event.is_set():
            active = self.faults.update(self.clock.elapsed_s(), self.clock.now_ms())
            off = "unplugged" in active
            outage = "broker-outage" in active
            if off or outage:
                if self.publisher.started:
                    self.publisher.go_offline()
            elif not self.publisher.started:
                self.publisher.start()
            if not off:
                ctx = self.context(active)
                for chunk in self.device.tick(ctx):
                    if outage or self.held:  # behind held messages: keep the order
                        self.held.append(chunk.data)
                    else:
                        self.publisher.publish(self.topic, chunk.data)
                    self.log_chunk(chunk, ctx, True)
            if self.held and not outage and not off and self.publisher.connected:
                while self.held:  # store-and-forward after the outage, oldest first
                    self.publisher.publish(self.topic, self.held.popleft())
            next_t += self.device.period_s
            delay = next_t - time.monotonic()
            if delay < -1.0:
                next_t, delay = time.monotonic(), 0.0
            self.stop_event.wait(max(0.0, delay))

    def shutdown(self) -> None:
        if not self.publisher.started and self.held:
            self.publisher.start()
            self.publisher.wait_connected(2.0)
        while self.held:
            self.publisher.publish(self.topic, self.held.popleft())
        self.publisher.stop()


class Hl7Runner(Runner):
    """An HL7 monitor: ORU^R01 over MLLP to `[hl7] listen`, as a Mindray-style device sends.

    It connects as a client, sends one message a period and reads the ACKs; a message stays
    unacknowledged until its AA/AE/AR arrives and is re-sent, oldest first, after a
    reconnect (so the listener sees the re-sends it must store once). Faults: `unplugged`
    = the connection dropped (nothing measured is sent meanwhile: truth `lost`),
    `ignore-acks` = the monitor never reads its socket (the ACKs pile up; when the socket
    will take no more, the monitor drops the connection and re-sends), `noisy-line` =
    garbage bytes and broken frames, `sensor-off`, `clock-skew`.
    """

    SEND_TIMEOUT_S = 5.0
    UNACKED_MAX = 5000

    def __init__(self, spec: DeviceSpec, physiology: Physiology, clock: SimClock, truth: TruthLog,
                 address: tuple[str, int], source: str, stop: threading.Event | None = None) -> None:
        super().__init__(spec, physiology, clock, truth, stop)
        from devices.simulators.emitters.hl7_oru import Hl7Monitor

        self.address = address
        self.monitor = Hl7Monitor(spec.room, spec.device, source)
        self.sock: socket.socket | None = None
        self.unacked: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self.acks: collections.Counter[str] = collections.Counter()  # AA/AE/AR received
        self.resent = 0
        self._inbuf = bytearray()

    def _where(self) -> str:
        return f"mllp://{self.address[0]}:{self.address[1]}"

    def _connect(self) -> bool:
        if self.sock is not None:
            return True
        try:
            s = socket.create_connection(self.address, timeout=2.0)
        except OSError as e:
            self.truth.write("link", room=self.spec.room, device=self.spec.device, path=self._where(),
                             event="no_listener", ts_ms=self.clock.now_ms(), error=str(e))
            return False
        s.settimeout(self.SEND_TIMEOUT_S)
        self.sock = s
        self.truth.write("link", room=self.spec.room, device=self.spec.device, path=self._where(),
                         event="opened", ts_ms=self.clock.now_ms())
        for data in list(self.unacked.values()):  # store-and-forward: re-send what was never answered
            if not self._send(data):
                return False
            self.resent += 1
        return True

    def _drop(self, why: str) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
            self._inbuf.clear()
            self.truth.write("link", room=self.spec.room, device=self.spec.device, path=self._where(),
                             event="closed", ts_ms=self.clock.now_ms(), why=why, unacked=len(self.unacked))

    def _send(self, data: bytes) -> bool:
        assert self.sock is not None
        try:
            self.sock.sendall(data)
            return True
        except OSError as e:  # includes a send timeout: the listener stopped reading us
            self._drop(f"send failed: {e}")
            return False

    def _read_acks(self) -> None:
        from monitor.model.mllp import MllpFramer

        assert self.sock is not None
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                if not data:
                    self._drop("closed by the listener")
                    return
                self._inbuf += data
        except OSError as e:
            self._drop(f"read failed: {e}")
            return
        finally:
            if self.sock is not None:
                self.sock.settimeout(self.SEND_TIMEOUT_S)
        framer = MllpFramer()
        for piece in framer.feed(bytes(self._inbuf)):
            if isinstance(piece, bytes):
                code, ctrl = _msa(piece)
                self.acks[code] += 1
                self.unacked.pop(ctrl, None)
        # keep an unfinished frame for the next read
        last = self._inbuf.rfind(b"\x0b")
        end = self._inbuf.rfind(b"\x1c")
        self._inbuf = self._inbuf[last:] if last > end else bytearray()

    def loop(self) -> None:
        from monitor.model.mllp import frame

        next_t = time.monotonic()
        self.ready.set()
        while not self.stop_event.is_set():
            active = self.faults.update(self.clock.elapsed_s(), self.clock.now_ms())
            if "unplugged" in active:
                self._drop("unplugged")
            ctx = self.context(active)
            connected = "unplugged" not in active and self._connect()
            if connected and "ignore-acks" not in active:
                self._read_acks()
            for chunk in self.monitor.tick(ctx):
                raw = chunk.noise == "garbage"
                data = chunk.data if raw else frame(chunk.data)
                delivered = self.sock is not None and self._send(data)
                if delivered and not raw and chunk.reading is not None and chunk.reading.expect == "stored":
                    self.unacked[str(self.monitor.control)] = data
                    while len(self.unacked) > self.UNACKED_MAX:
                        self.unacked.popitem(last=False)
                self.log_chunk(chunk, ctx, delivered)
            next_t += self.monitor.period_s
            delay = next_t - time.monotonic()
            if delay < -1.0:
                next_t, delay = time.monotonic(), 0.0
            self.stop_event.wait(max(0.0, delay))

    def shutdown(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.settimeout(1.0)
                self._read_acks()
            self._drop("stopped")


def _msa(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK ("?" when there is none)."""
    text = ack.decode("utf-8", "replace")
    sep = text[3] if len(text) > 3 else "|"
    for seg in text.replace("\n", "\r").split("\r"):
        if seg.startswith("MSA"):
            f = seg.split(sep)
            return (f[1] if len(f) > 1 else "?"), (f[2] if len(f) > 2 else "")
    return "?", ""
