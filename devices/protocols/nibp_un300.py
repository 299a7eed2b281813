"""`nibp-un300`: polled OEM NIBP module (shared/protocols/nibp-un300.md).

Three pure parts:
- `encode_command()` — host frames `STX payload CHK ETX` (`01;;` start, `03;;` manual mode,
  `18;;` status/result).
- `NibpParser` — module replies → `NibpReply` or refusals; resynchronises on STX.
- `NibpPoller` — the adapter's behaviour as a state machine over an injected clock
  (seconds): what to send when, and which replies make a measurement, an error or a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.protocols.framing import Parsed, checked, refusal
from monitor.model.readings import Refusal

STX, ETX, CR = 0x02, 0x03, 0x0D
FRAME_MAX = 128  # a reply is ~45 bytes; past this without ETX the frame is lost

CMD_START = "01;;"
CMD_MANUAL = "03;;"
CMD_STATUS = "18;;"

POLL_MEASURING_S = 1.0
POLL_IDLE_S = 5.0
S1_GRACE_S = 5.0  # accept S0 without having seen S1 after this long
TIMEOUT_S = 120.0
DEFAULT_CYCLE_S = 300.0


def payload_checksum(payload: bytes) -> bytes:
    """Two upper-case hex digits of the sum of the payload bytes, mod 256."""
    return b"%02X" % (sum(payload) & 0xFF)


def encode_command(payload: str) -> bytes:
    """A host command frame, e.g. `01;;` → b"\\x0201;;D7\\x03"."""
    body = payload.encode("ascii")
    return bytes([STX]) + body + payload_checksum(body) + bytes([ETX])


def encode_reply(status: int, error: str = "00", sbp: int | None = None, dbp: int | None = None,
                 map_: int | None = None, pulse: int | None = None, t: int = 0) -> bytes:
    """A module reply frame (for fake modules in tests, simulators and benchmarks)."""
    def g(v: int | None) -> str:
        return "999" if v is None else f"{v:03d}"
    body = f"S{status};A0;C00;M{error};P{g(sbp)}{g(dbp)}{g(map_)};R{g(pulse)};T{t};;".encode("ascii")
    return bytes([STX]) + body + payload_checksum(body) + bytes([ETX, CR])


@dataclass(frozen=True, slots=True)
class NibpReply:
    """One decoded status reply. Pressures/pulse are None for "no value" (`999`, `---`)."""

    status: int  # 0 idle (last result valid), 1 measuring
    error: str  # "00" = no error
    sbp: int | None
    dbp: int | None
    map: int | None
    pulse: int | None
    raw: bytes

    @property
    def failed(self) -> bool:
        """True when the module reports a measurement error (M code other than 00)."""
        return self.error != "00"


def _group(text: str) -> int | None:
    if text in ("999", "---") or not text.isdigit():
        return None
    return int(text)


def parse_payload(payload: bytes, raw: bytes, source: str = "") -> tuple[NibpReply | None, list[Refusal]]:
    """Reply payload (checksum already verified) → NibpReply, or a refusal."""
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        return None, [refusal(source, "bad_frame", "non-ASCII reply", raw)]
    fields = {f[0]: f[1:] for f in text.split(";") if f}
    status, error, pressures, pulse = fields.get("S"), fields.get("M"), fields.get("P"), fields.get("R")
    if status not in ("0", "1") or error is None or len(error) != 2:
        return None, [refusal(source, "bad_frame", f"reply without a valid S/M field: {text[:60]!r}", raw)]
    sbp = dbp = map_ = None
    if pressures is not None:
        if len(pressures) != 9:
            return None, [refusal(source, "bad_frame", f"P field {pressures!r} is not 3x3 digits", raw)]
        sbp, dbp, map_ = _group(pressures[0:3]), _group(pressures[3:6]), _group(pressures[6:9])
    hr = _group(pulse) if pulse is not None and len(pulse) == 3 else None
    return NibpReply(int(status), error, sbp, dbp, map_, hr, raw), []


class NibpParser:
    """Stateful reply framer for one connection. `feed()` never raises."""

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.frames = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> tuple[list[NibpReply], list[Refusal]]:
        """Bytes in → every complete, checksum-valid reply; refusals for the rest."""
        out: list[NibpReply] = []
        refusals: list[Refusal] = []
        buf = self._buf
        buf += data
        while buf:
            stx = buf.find(STX)
            if stx != 0:
                junk = bytes(buf if stx < 0 else buf[:stx])
                del buf[: len(junk)]
                junk_text = junk.strip(b"\r\n")
                if junk_text:
                    refusals.append(refusal(self.source, "garbage", f"{len(junk_text)} bytes between frames",
                                            junk_text))
                continue
            etx = buf.find(ETX, 1)
            nxt = buf.find(STX, 1)
            if nxt >= 0 and (etx < 0 or nxt < etx):
                refusals.append(refusal(self.source, "partial_frame", "frame cut by a new STX", bytes(buf[:nxt])))
                del buf[:nxt]
                continue
            if etx < 0:
                if len(buf) > FRAME_MAX:
                    refusals.append(refusal(self.source, "frame_too_long", f"{len(buf)} bytes without ETX",
                                            bytes(buf)))
                    del buf[:]
                break
            frame = bytes(buf[: etx + 1])
            del buf[: etx + 1]
            body, chk = frame[1:-3], frame[-3:-1]
            if len(frame) < 4 or payload_checksum(body) != chk:
                refusals.append(refusal(self.source, "bad_checksum",
                                        f"checksum {chk!r}, expected {payload_checksum(body)!r}", frame))
                continue
            reply, bad = parse_payload(body, frame, self.source)
            refusals.extend(bad)
            if reply is not None:
                self.frames += 1
                out.append(reply)
        return out, refusals


# --- adapter behaviour ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Measured:
    """A finished measurement: one reading (values may be partly absent) at `ts_s`."""

    parsed: Parsed
    refusals: tuple[Refusal, ...]
    ts_s: float


@dataclass(frozen=True, slots=True)
class MeasureFailed:
    """The module reported an M error: a reading flagged `measurement_error`, no values."""

    error: str
    ts_s: float
    raw: bytes


@dataclass(frozen=True, slots=True)
class MeasureTimedOut:
    """No result within TIMEOUT_S of the start command: a technical event."""

    started_s: float
    ts_s: float


Event = Measured | MeasureFailed | MeasureTimedOut


class NibpPoller:
    """The polling state machine. Feed it the clock and replies; it says what to send.

    On connect: `03;;` (manual mode). The first measurement starts on connect unless one
    started less than a cycle ago (kept across reconnects, so a replug does not inflate
    the cuff again), then every `cycle_s` from the previous start. While measuring: `18;;`
    every second; a result is taken when `S0` arrives after `S1` was seen (or 5 s passed);
    no result within 120 s → `MeasureTimedOut`. Between measurements `18;;` every 5 s, so
    a silent module is seen. `request_now()` starts an extra measurement.
    """

    def __init__(self, cycle_s: float = DEFAULT_CYCLE_S, source: str = "") -> None:
        self.cycle_s = cycle_s
        self.source = source
        self.measuring = False
        self.started_s: float | None = None  # last start command (survives reconnects)
        self._seen_s1 = False
        self._next_poll_s = 0.0
        self._requested = False

    # -- inputs --
    def connect(self, now_s: float) -> list[bytes]:
        """The link (re)opened: manual mode, then poll; a measurement in flight is abandoned."""
        self.measuring = False
        self._next_poll_s = now_s
        return [encode_command(CMD_MANUAL)]

    def request_now(self) -> None:
        """A "measure now" request: start at the next tick unless already measuring."""
        self._requested = True

    def set_cycle(self, cycle_s: float) -> None:
        """Change the cycle (e.g. the session phase changed); counts from the last start."""
        self.cycle_s = cycle_s

    @property
    def next_start_s(self) -> float | None:
        """When the next cycle measurement is due (None: on the next tick)."""
        return None if self.started_s is None else self.started_s + self.cycle_s

    def tick(self, now_s: float) -> tuple[list[bytes], list[Event]]:
        """Advance time: commands to send now and events (timeouts) that happened."""
        out: list[bytes] = []
        events: list[Event] = []
        if self.measuring and self.started_s is not None and now_s - self.started_s >= TIMEOUT_S:
            self.measuring = False
            events.append(MeasureTimedOut(self.started_s, now_s))
        if not self.measuring:
            due = self.next_start_s
            if self._requested or due is None or now_s >= due:
                self._requested = False
                self.measuring, self._seen_s1, self.started_s = True, False, now_s
                out.append(encode_command(CMD_START))
                self._next_poll_s = now_s + POLL_MEASURING_S
        if now_s >= self._next_poll_s:
            out.append(encode_command(CMD_STATUS))
            self._next_poll_s = now_s + (POLL_MEASURING_S if self.measuring else POLL_IDLE_S)
        return out, events

    def on_reply(self, reply: NibpReply, now_s: float) -> list[Event]:
        """A valid reply arrived: maybe the measurement in flight is finished."""
        if not self.measuring or self.started_s is None:
            return []  # idle poll or the result seen on connect: not a new measurement
        if reply.status == 1:
            self._seen_s1 = True
            return []
        if not (self._seen_s1 or now_s - self.started_s >= S1_GRACE_S):
            return []  # S0 straight after the start command: still the previous result
        self.measuring = False
        self._next_poll_s = now_s + POLL_IDLE_S
        if reply.failed:
            return [MeasureFailed(reply.error, now_s, reply.raw)]
        values = {k: v for k, v in (("sbp", reply.sbp), ("dbp", reply.dbp), ("map", reply.map),
                                     ("hr", reply.pulse)) if v is not None}
        parsed, bad = checked(self.source, values, frozenset(), reply.raw)
        return [Measured(parsed, tuple(bad), now_s)]
