"""Per-protocol glue between a parser and the supervisor: pure, clock passed in.

A driver turns bytes and time into a `Step`: results to store, refusals, bytes to send,
status fields to set. Streaming devices (Masimo, Nonin, ANSAR-B) only parse; the NIBP
driver also runs the `NibpPoller`. The supervisor does every piece of I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from devices.protocols.ansar_b import AnsarBParser
from devices.protocols.framing import Parsed
from devices.protocols.masimo_ascii import MasimoParser
from devices.protocols.nibp_un300 import (
    POLL_IDLE_S,
    Measured,
    MeasureFailed,
    MeasureTimedOut,
    NibpParser,
    NibpPoller,
)
from devices.protocols.nonin_df7 import NoninParser
from monitor.model.config import DeviceConfig
from monitor.model.readings import Refusal

OXIMETER_QUIET_S = 3.0  # no valid frame this long → silent (a line/packet comes every ≤1 s)
NIBP_QUIET_S = 2 * POLL_IDLE_S + 1  # two idle polls unanswered → the module is gone


@dataclass
class Step:
    """What one feed or tick produced. `results` pair a Parsed with its ts (None: now)."""

    results: list[tuple[Parsed, float | None]] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    send: list[bytes] = field(default_factory=list)
    status: dict[str, str | int | float] = field(default_factory=dict)
    clear_status: list[str] = field(default_factory=list)
    detail: str | None = None


class StreamDriver:
    """A device that talks unasked: parse what arrives, send nothing."""

    quiet_state = "silent"

    def __init__(self, parser: MasimoParser | NoninParser | AnsarBParser, quiet_s: float,
                 min_interval_s: float = 0.0) -> None:
        self.parser = parser
        self.quiet_s = quiet_s
        self.min_interval_s = min_interval_s  # publish at most one reading per this many s

    @property
    def frames(self) -> int:
        """Intact frames decoded so far on this connection."""
        return self.parser.frames

    def open(self, now_s: float) -> Step:
        """The link opened."""
        return Step()

    def feed(self, data: bytes, now_s: float) -> Step:
        """Bytes arrived."""
        parsed, refusals = self.parser.feed(data)
        step = Step(results=[(p, None) for p in parsed], refusals=refusals)
        for p in parsed:
            if p.info.get("serial"):
                step.status["serial"] = p.info["serial"]
            if p.device_clock:
                step.status["device_clock"] = p.device_clock
        return step

    def tick(self, now_s: float) -> Step:
        """Time passed."""
        return Step()


class NibpDriver:
    """Drives a nibp-un300 module: commands on the poller's schedule, replies into events."""

    quiet_state = "offline"  # a polled module that stops answering is not connected
    quiet_s = NIBP_QUIET_S
    min_interval_s = 0.0

    def __init__(self, poller: NibpPoller, source: str = "") -> None:
        self.poller = poller
        self.parser = NibpParser(source)

    @property
    def frames(self) -> int:
        """Valid replies so far on this connection."""
        return self.parser.frames

    def open(self, now_s: float) -> Step:
        """The link opened: manual mode, then the schedule."""
        self.parser = NibpParser(self.parser.source)
        step = Step(send=self.poller.connect(now_s))
        self._merge(step, self.tick(now_s))
        return step

    def feed(self, data: bytes, now_s: float) -> Step:
        """Replies arrived."""
        replies, refusals = self.parser.feed(data)
        step = Step(refusals=refusals)
        for reply in replies:
            self._events(step, self.poller.on_reply(reply, now_s))
        return step

    def tick(self, now_s: float) -> Step:
        """Time passed: maybe start, poll, or time out."""
        send, events = self.poller.tick(now_s)
        step = Step(send=send)
        self._events(step, events)
        if send and self.poller.measuring and self.poller.started_s == now_s:
            step.status["nibp_started_ms"] = int(now_s * 1000)
        step.status["nibp_cycle_s"] = self.poller.cycle_s
        nxt = self.poller.next_start_s
        if nxt is not None:
            step.status["nibp_next_ms"] = int(nxt * 1000)
        return step

    @staticmethod
    def _merge(into: Step, other: Step) -> None:
        into.results += other.results
        into.refusals += other.refusals
        into.send += other.send
        into.status.update(other.status)
        into.clear_status += other.clear_status
        into.detail = other.detail or into.detail

    @staticmethod
    def _events(step: Step, events: list[Measured | MeasureFailed | MeasureTimedOut]) -> None:
        for ev in events:
            if isinstance(ev, Measured):
                step.refusals += list(ev.refusals)
                if ev.parsed.storable:
                    step.results.append((ev.parsed, ev.ts_s))
                    step.detail = ""
                else:
                    step.detail = "NIBP measurement finished without values"
                step.clear_status += ["nibp_timeout_ms", "nibp_error"]
            elif isinstance(ev, MeasureFailed):
                step.results.append((Parsed(flags=frozenset({"measurement_error"}), raw=ev.raw), ev.ts_s))
                step.status["nibp_error"] = ev.error
                step.clear_status.append("nibp_timeout_ms")
                step.detail = f"NIBP measurement failed: module error M{ev.error}"
            else:
                step.status["nibp_timeout_ms"] = int(ev.ts_s * 1000)
                step.detail = "NIBP measurement timed out (no result within 120 s)"


Driver = StreamDriver | NibpDriver


def make_driver(dev: DeviceConfig, poller: NibpPoller | None = None) -> Driver:
    """A fresh driver (fresh parser state) for one connection of `dev`.

    The NIBP poller is passed in so its schedule survives reconnects.
    """
    if dev.protocol == "masimo-ascii":
        return StreamDriver(MasimoParser(dev.id), OXIMETER_QUIET_S)
    if dev.protocol == "nonin-df7":
        return StreamDriver(NoninParser(dev.id), OXIMETER_QUIET_S, min_interval_s=1.0)
    if dev.protocol == "ansar-b":
        return StreamDriver(AnsarBParser(dev.id), OXIMETER_QUIET_S)
    if dev.protocol == "nibp-un300":
        return NibpDriver(poller or NibpPoller(dev.nibp_cycle_s, dev.id), dev.id)
    raise ValueError(f"no serial driver for protocol {dev.protocol!r}")


def cycle_for(dev: DeviceConfig, phase: str) -> float:
    """The cycle for NIBP `phase` (monitor/sessions/phase.py): `cycle_by_phase_s[phase]` when set,
    else `cycle_s` (default 300)."""
    if dev.cycle_by_phase_s and phase in dev.cycle_by_phase_s:
        return dev.cycle_by_phase_s[phase]
    return dev.nibp_cycle_s
