"""`masimo-ascii` emitter: Radical-7 "ASCII 1" lines, one a second, CR LF ended.

Layout follows the public example lines (shared/protocols/masimo-ascii.md): device-local
`MM/dd/yy HH:mm:ss`, then `SN= SPO2= BPM= PI= SPCO= SPMET= DESAT= PIDELTA= PVI= ALARM= EXC=`.
Missing values are dashes; EXC carries 0x800 ("Masimo SET") in normal operation.
"""

from __future__ import annotations

import time

from devices.simulators.emitters.base import Chunk, Context, TruthReading, garbage

EXC_MASIMO_SET = 0x800
EXC_NO_SENSOR = 0x1
EXC_LOW_PERFUSION = 0x4
EXC_SENSOR_OFF = 0x20
ALARM_SPO2_LOW, ALARM_PULSE_HIGH, ALARM_PULSE_LOW, ALARM_ACTIVE = 0x2, 0x4, 0x8, 0x10

# The documented EXC → flag table (used to state the truth, not to parse).
EXC_FLAGS = {0x1: "no_sensor", 0x2: "no_sensor", 0x4: "low_perfusion", 0x8: "pulse_search",
             0x10: "interference", 0x20: "sensor_off", 0x40: "interference", 0x80: "no_sensor",
             0x100: "no_sensor", 0x400: "low_signal_iq", 0x1000: "no_sensor", 0x2000: "no_sensor",
             0x20000: "questionable"}
ALARM_FLAGS = {0x10: "device_alarm", 0x40: "low_battery"}
CRLF = b"\r\n"


def flags_of(exc: int, alarm: int) -> set[str]:
    """Flags the documented bit table gives for these EXC and ALARM words."""
    out = {f for bit, f in EXC_FLAGS.items() if exc & bit}
    return out | {f for bit, f in ALARM_FLAGS.items() if alarm & bit}


def device_clock(ts_ms: int) -> str:
    """The device's local clock as it prints it: `MM/dd/yy HH:mm:ss` (no zone)."""
    return time.strftime("%m/%d/%y %H:%M:%S", time.localtime(ts_ms / 1000))


def format_line(stamp: str, serial: str, spo2: int | None, bpm: int | None, pi: float | None,
                alarm: int, exc: int) -> bytes:
    """One ASCII 1 line (without CR LF)."""
    s = f"{spo2:03d}%" if spo2 is not None else "---%"
    b = f"{bpm:03d}" if bpm is not None else "---"
    p = f"{pi:05.2f}%" if pi is not None else "--.--%"
    return (f"{stamp} SN={serial} SPO2={s} BPM={b} PI={p} SPCO=--.-% SPMET=--.-% DESAT=-- "
            f"PIDELTA=+-- PVI=--- ALARM={alarm:04X} EXC={exc:06X}").encode("ascii")


class MasimoAscii:
    """Emits one line per tick; sensor-off → dashes + EXC 0x20; noise → garbage / cut lines."""

    protocol = "masimo-ascii"
    period_s = 1.0

    def __init__(self, serial: str = "0000070986") -> None:
        self.serial = serial

    def tick(self, ctx: Context) -> list[Chunk]:
        """The chunks of one second."""
        v = ctx.vitals.rounded()
        exc, alarm = EXC_MASIMO_SET, 0
        stamp = device_clock(ctx.now_ms + ctx.clock_skew_ms)
        if ctx.sensor_off:
            exc |= EXC_SENSOR_OFF
            spo2 = bpm = None
            pi = None
        else:
            spo2, bpm, pi = int(v["spo2"]), int(v["hr"]), float(v["pi"])
            if pi < 0.5:
                exc |= EXC_LOW_PERFUSION
            if spo2 < 90:
                alarm |= ALARM_SPO2_LOW | ALARM_ACTIVE
            if bpm > 120:
                alarm |= ALARM_PULSE_HIGH | ALARM_ACTIVE
            elif bpm < 50:
                alarm |= ALARM_PULSE_LOW | ALARM_ACTIVE
        line = format_line(stamp, self.serial, spo2, bpm, pi, alarm, exc)
        flags = flags_of(exc, alarm)
        values = {} if flags & {"sensor_off", "no_sensor"} else {"spo2": spo2, "hr": bpm, "pi": pi}
        truth = TruthReading({k: x for k, x in values.items() if x is not None}, sorted(flags))
        if ctx.clock_skew_ms:
            truth.device_ts_ms = ctx.now_ms + ctx.clock_skew_ms  # device time only; ts is receive time
        chunks: list[Chunk] = []
        rng = ctx.noisy
        if rng is not None and rng.random() < ctx.garbage_p:
            chunks.append(Chunk(garbage(rng, exclude=b"\r\n") + CRLF, noise="garbage"))
        if rng is not None and rng.random() < ctx.corrupt_p:
            # a dropout inside the time stamp: the line's remainder is lost, CR LF arrives
            cut = line[: rng.randint(3, 14)]
            truth.expect, truth.fault = "lost", "cut_line"
            chunks.append(Chunk(cut + CRLF, reading=truth, noise="cut"))
            return chunks
        chunks.append(Chunk(line + CRLF, reading=truth))
        return chunks
