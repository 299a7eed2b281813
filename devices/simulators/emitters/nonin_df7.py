"""`nonin-df7` emitter: Data Format 7 frames, 75 a second, 25 to a packet (3 packets a second).

Frame: STATUS (bit 7 always set, bit 0 SYNC on frame 1), PLETH MSB, PLETH LSB, FLOAT,
CHK = sum of the four mod 256. FLOAT per frame number (1–25) as shared/protocols/nonin-df7.md
tabulates: HR high/low bits (1, 2), SpO2 (3), firmware (4), STAT2 (8), SpO2 display/fast/
beat-to-beat (9–11), extended HR (14, 15), extended SpO2 (16, 17), display HR (20–23).
Values change once a second (one truth reading per second, on the second's first packet);
the pleth waveform follows the heart rate in wall time.
"""

from __future__ import annotations

import math

from devices.simulators.emitters.base import Chunk, Context, TruthReading, garbage

FRAMES_PER_PACKET = 25
PACKETS_PER_S = 3
FRAME_HZ = FRAMES_PER_PACKET * PACKETS_PER_S
SYNC, GREEN, RED, SNSA, OOT, ARTF, SNSD, BIT7 = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
HR_NONE, SPO2_NONE = 511, 127
STAT2_SMARTPOINT, STAT2_LOW_BATTERY = 0x20, 0x01
FIRMWARE_REV = 0x2B


def frame(status: int, pleth: int, float_byte: int) -> bytes:
    """One 5-byte frame with its checksum."""
    body = bytes([status | BIT7, (pleth >> 8) & 0xFF, pleth & 0xFF, float_byte & 0xFF])
    return body + bytes([sum(body) & 0xFF])


def float_bytes(hr: int, spo2: int, stat2: int) -> list[int]:
    """FLOAT of frames 1–25 (index 0 = frame 1)."""
    f = [0] * FRAMES_PER_PACKET
    hi, lo = (hr >> 7) & 0x03, hr & 0x7F
    f[0], f[1], f[2], f[3] = hi, lo, spo2, FIRMWARE_REV
    f[7] = stat2
    f[8] = f[9] = f[10] = spo2
    f[13], f[14] = hi, lo
    f[15] = f[16] = spo2
    f[19], f[20], f[21], f[22] = hi, lo, hi, lo
    return f


def pleth_sample(t_s: float, hr: float) -> int:
    """A pulse-shaped pleth value (16-bit) at wall time t_s for a heart rate `hr`."""
    phase = (t_s * max(hr, 1) / 60.0) % 1.0
    beat = math.exp(-((phase - 0.15) / 0.08) ** 2) + 0.35 * math.exp(-((phase - 0.45) / 0.1) ** 2)
    return int(20000 + 18000 * beat)


def packet(hr: int, spo2: int, status: int, stat2: int, t0_s: float, hr_wave: float) -> list[bytes]:
    """The 25 frames of one packet; frame 1 carries SYNC."""
    floats = float_bytes(hr, spo2, stat2)
    out = []
    for i in range(FRAMES_PER_PACKET):
        st = status | (SYNC if i == 0 else 0)
        out.append(frame(st, pleth_sample(t0_s + i / FRAME_HZ, hr_wave), floats[i]))
    return out


class NoninDf7:
    """Emits one packet per tick (1/3 s); a truth reading on every third packet."""

    protocol = "nonin-df7"
    period_s = 1.0 / PACKETS_PER_S

    def __init__(self) -> None:
        self.n = 0  # packets sent
        self._second: tuple[int, int, int, list[str], bool] | None = None  # values of this second

    def tick(self, ctx: Context) -> list[Chunk]:
        """The chunks of one packet period."""
        first_of_second = self.n % PACKETS_PER_S == 0
        rng = ctx.noisy
        if first_of_second or self._second is None:
            v = ctx.vitals.rounded()
            flags: list[str] = []
            if ctx.sensor_off:
                hr, spo2, status = HR_NONE, SPO2_NONE, SNSD
                flags.append("sensor_off")
            else:
                hr, spo2 = int(v["hr"]), int(v["spo2"])
                pi = float(v["pi"])
                status = GREEN if pi >= 1.0 else (GREEN | RED if pi >= 0.5 else RED)
                if status == RED:
                    flags.append("low_perfusion")
            corrupt = rng is not None and rng.random() < ctx.corrupt_p
            self._second = (hr, spo2, status, flags, corrupt)
        hr, spo2, status, flags, corrupt = self._second
        frames = packet(hr, spo2, status, STAT2_SMARTPOINT, ctx.now_ms / 1000, ctx.vitals.hr)
        chunks: list[Chunk] = []
        if rng is not None and rng.random() < ctx.garbage_p:
            # bytes without bit 7 can never be a STATUS byte: the receiver slides past them
            chunks.append(Chunk(bytes(b & 0x7F for b in garbage(rng, 1, 12)), noise="garbage"))
        if corrupt:  # every packet of this second gets one bad checksum: the second is lost
            i = 1 + (self.n * 7) % (FRAMES_PER_PACKET - 1)
            bad = bytearray(frames[i])
            bad[4] = (bad[4] + 1 + (rng.randrange(254) if rng else 0)) & 0xFF
            frames[i] = bytes(bad)
        truth = None
        if first_of_second:
            values: dict[str, float] = {} if "sensor_off" in flags else {"hr": hr, "spo2": spo2}
            truth = TruthReading(values, list(flags))
            if corrupt:
                truth.expect, truth.fault = "refused", "bad_checksum"
        chunks.append(Chunk(b"".join(frames), reading=truth, noise="bad_checksum" if corrupt else None))
        self.n += 1
        return chunks
