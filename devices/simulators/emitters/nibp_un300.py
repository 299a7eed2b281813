"""`nibp-un300` emitter: a *responding* NIBP module (pure state machine; I/O in runners.py).

The host sends `STX payload CHK ETX` commands; the module answers each known command
(`01;;` start, `03;;` manual mode, `18;;` status) with the status reply
`S<st>;A0;C00;M<err>;P<sys><dia><map>;R<pulse>;T<counter>;;` framed the same way plus CR.
CHK = sum of the payload bytes mod 256 as two upper-case hex digits
(shared/protocols/nibp-un300.md). A measurement takes 30–45 simulated seconds (seeded),
i.e. that divided by --speed in wall time, never less than MIN_MEASURE_WALL_S so a host
polling once a second still sees S1. While a sensor-off fault is on the measurement fails
with M01 (cuff leak): flag `measurement_error`, no values.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from devices.simulators.emitters.base import Chunk, TruthReading, garbage
from devices.simulators.physiology import Vitals

STX, ETX, CR = 0x02, 0x03, 0x0D
MEASURE_SIM_S = (30.0, 45.0)
MIN_MEASURE_WALL_S = 2.5
ERR_NONE, ERR_CUFF_LEAK = 0, 1
COMMANDS = ("01;;", "03;;", "18;;")


def checksum(payload: bytes) -> bytes:
    """Two upper-case hex digits of the payload's byte sum mod 256."""
    return b"%02X" % (sum(payload) & 0xFF)


def frame(payload: bytes) -> bytes:
    """STX + payload + checksum + ETX (a command; a reply adds CR)."""
    return bytes([STX]) + payload + checksum(payload) + bytes([ETX])


def reply_payload(status: int, err: int, result: tuple[int, int, int, int] | None, counter: int) -> bytes:
    """The status reply's payload; 999 groups when there is no value."""
    sbp, dbp, mapp, pr = result if result else (999, 999, 999, 999)
    return (f"S{status};A0;C00;M{err:02d};P{sbp:03d}{dbp:03d}{mapp:03d};R{pr:03d};T{counter};;").encode("ascii")


def split_frames(buf: bytearray) -> list[tuple[bytes, bool]]:
    """Take complete STX…ETX frames out of `buf`: (payload, checksum ok); junk is dropped."""
    out: list[tuple[bytes, bool]] = []
    while True:
        start = buf.find(bytes([STX]))
        if start < 0:
            buf.clear()
            return out
        del buf[:start]
        end = buf.find(bytes([ETX]))
        if end < 0:
            return out
        body = bytes(buf[1:end])
        del buf[: end + 1]
        payload, chk = body[:-2], body[-2:]
        out.append((payload, len(body) >= 2 and checksum(payload) == chk))


@dataclass
class Un300Module:
    """The module's state: idle or measuring, last result, error, time counter."""

    speed: float = 1.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    measuring_until_s: float | None = None  # wall s when the running measurement ends
    result: tuple[int, int, int, int] | None = None
    err: int = ERR_NONE
    counter: int = 0
    pending: TruthReading | None = None  # a finished result the host has not yet been shown
    measurements: int = 0

    def start(self, wall_s: float) -> None:
        """Begin a measurement (a start while measuring is ignored, as the module does)."""
        if self.measuring_until_s is None:
            sim_len = self.rng.uniform(*MEASURE_SIM_S)
            self.measuring_until_s = wall_s + max(sim_len / self.speed, MIN_MEASURE_WALL_S)

    def update(self, wall_s: float, vitals_now: Callable[[], Vitals], sensor_off: bool) -> None:
        """Finish the measurement when its time is up, taking the vitals of that moment."""
        self.counter = int(wall_s * 10) % 100000
        if self.measuring_until_s is not None and wall_s >= self.measuring_until_s:
            self.measuring_until_s = None
            self.measurements += 1
            if sensor_off:
                self.result, self.err = None, ERR_CUFF_LEAK
                self.pending = TruthReading({}, ["measurement_error"])
            else:
                v = vitals_now().rounded()
                self.result = (int(v["sbp"]), int(v["dbp"]), int(v["map"]), int(v["hr"]))
                self.err = ERR_NONE
                self.pending = TruthReading(
                    {"sbp": self.result[0], "dbp": self.result[1], "map": self.result[2], "hr": self.result[3]})

    def handle(self, payload: bytes, wall_s: float, noisy: random.Random | None,
               garbage_p: float = 0.10, corrupt_p: float = 0.06) -> list[Chunk]:
        """Answer one host command (unknown commands get no answer); noisy: maybe garble it."""
        text = payload.decode("ascii", "replace")
        if text not in COMMANDS:
            return []
        if text == "01;;":
            self.start(wall_s)
        status = 1 if self.measuring_until_s is not None else 0
        body = reply_payload(status, self.err, self.result, self.counter)
        out: list[Chunk] = []
        if noisy is not None and noisy.random() < garbage_p:
            out.append(Chunk(garbage(noisy, exclude=bytes([STX, ETX])), noise="garbage"))
        if noisy is not None and noisy.random() < corrupt_p:
            chk = checksum(body)
            bad = b"%02X" % ((int(chk, 16) + 1 + noisy.randrange(250)) & 0xFF)
            out.append(Chunk(bytes([STX]) + body + bad + bytes([ETX, CR]), noise="bad_checksum"))
            return out  # the result stays pending: the host sees it on its next poll
        reading = None
        if status == 0 and self.pending is not None:
            reading, self.pending = self.pending, None
        out.append(Chunk(frame(body) + bytes([CR]), reading=reading))
        return out
