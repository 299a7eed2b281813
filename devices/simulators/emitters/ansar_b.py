"""`ansar-b` emitter: Ivy 450C-style messages, one a second.

Message: 0xFF, `ANSAR-B ` (8 bytes, trailing space), 400 waveform bytes (ECG 200, resp 50,
pleth 50, P1 50, P2 50; 0xFB fills a channel without transducer, as in the real capture),
then CR-ended lines `NAME=<code>;field;…;` in the capture's order (HR, RR, ETCO2, SPO2,
NIBP, P1, P2, T1, T2), then 0xFE. With the capture's values the text part is byte-for-byte
the capture's, so a message is 562 bytes long, as every whole message in the capture is
(the protocol note says 561; 252 + 27 × 562 = the capture's 15,426 bytes). The ECG's R peaks reach 0xFE/0xFF on
purpose: the docs warn a receiver that waveform bytes may equal the frame markers.
NIBP: the *last* result rides in every message until the next cycle replaces it.
"""

from __future__ import annotations

import math

from devices.simulators.emitters.base import (
    Chunk,
    Context,
    TruthReading,
    garbage,
    nibp_due,
)

START, END, CR = b"\xff", b"\xfe", b"\r"
HEADER = b"ANSAR-B "
NO_TRANSDUCER = 0xFB
WAVE_LEN = {"ecg": 200, "resp": 50, "pleth": 50, "p1": 50, "p2": 50}


def waveforms(t0_s: float, hr: float, rr: float) -> bytes:
    """400 waveform bytes for one second starting at wall time t0_s (P1/P2: no transducer)."""
    out = bytearray()
    for i in range(WAVE_LEN["ecg"]):
        phase = ((t0_s + i / 200) * hr / 60) % 1.0
        # P wave, QRS (R peak clipped to 0xFF/0xFE), T wave around a 0x80 baseline
        x = 0x80 + 12 * math.exp(-((phase - 0.1) / 0.025) ** 2) - 20 * math.exp(-((phase - 0.2) / 0.006) ** 2)
        x += 140 * math.exp(-((phase - 0.22) / 0.008) ** 2) + 25 * math.exp(-((phase - 0.45) / 0.05) ** 2)
        out.append(min(0xFF, max(0, int(x))))
    for i in range(WAVE_LEN["resp"]):
        out.append(int(0x80 + 40 * math.sin(2 * math.pi * (t0_s + i / 50) * rr / 60)))
    for i in range(WAVE_LEN["pleth"]):
        phase = ((t0_s + i / 50) * hr / 60) % 1.0
        out.append(int(0x40 + 0x70 * math.exp(-((phase - 0.2) / 0.12) ** 2)))
    out += bytes([NO_TRANSDUCER]) * (WAVE_LEN["p1"] + WAVE_LEN["p2"])
    return bytes(out)


def _num(v: float | int | None) -> str:
    return "" if v is None else (f"{v:.1f}" if isinstance(v, float) and not v.is_integer() else str(int(v)))


def text_lines(hr: int | None, rr: int | None, spo2: int | None, pr: int | None,
               nibp: tuple[int, int, int, int] | None, temp: float | None,
               hr_alarm: str = "", spo2_alarm: str = "",
               p1: tuple[int, int, int] | None = None) -> bytes:
    """The CR-ended lines of a message, in the capture's order and field layout."""
    hr_line = f"HR=1;{_num(hr)};ECG-II-DIAG;" + (f"{hr_alarm};" if hr_alarm else "")
    pr_text = f"PR={pr} " if pr is not None else "PR= "
    spo2_line = f"SPO2=1;{_num(spo2)};{pr_text};" + (f"{spo2_alarm};" if spo2_alarm else "")
    nibp_line = "NIBP=4;{};{};{};{};;".format(*nibp) if nibp else "NIBP=4;;;;;;"
    p1_line = "P1=3;{};{};{};;".format(*p1) if p1 else "P1=3;;;;NO TRANSDUCER;"
    temp_text = "" if temp is None else f"{temp:.1f}"
    lines = [hr_line, f"RR=1;{_num(rr)};APNEA: 20 SEC;", "ETCO2=1;;;", spo2_line, nibp_line,
             p1_line, "P2=3;;;;NO TRANSDUCER;", f"T1=1;{temp_text};;", "T2=1;;;"]
    return b"".join(line.encode("ascii") + CR for line in lines)


def message(wave: bytes, text: bytes) -> bytes:
    """A whole message: start, header, 400 waveform bytes, text lines, end."""
    if len(wave) != 400:
        raise ValueError("ANSAR-B carries exactly 400 waveform bytes")
    return START + HEADER + wave + text + END


class AnsarB:
    """Emits one message per tick; the NIBP result repeats until the next cycle."""

    protocol = "ansar-b"
    period_s = 1.0

    def __init__(self) -> None:
        self.nibp: tuple[int, int, int, int] | None = None
        self._prev_sim_s: float | None = None
        self._nibp_unseen = False  # a new result whose message was cut: the next one shows it

    def tick(self, ctx: Context) -> list[Chunk]:
        """The chunks of one second."""
        v = ctx.vitals.rounded()
        values: dict[str, float] = {}
        flags: list[str] = []
        if nibp_due(self._prev_sim_s, ctx.sim_s, ctx.dose_s):
            self.nibp = (int(v["sbp"]), int(v["dbp"]), int(v["map"]), int(v["hr"]))
            self._nibp_unseen = True
        if self._nibp_unseen and self.nibp:
            values.update(sbp=self.nibp[0], dbp=self.nibp[1], map=self.nibp[2])
        self._prev_sim_s = ctx.sim_s
        hr, rr, temp = int(v["hr"]), int(v["rr"]), float(v["temp"])
        spo2: int | None = int(v["spo2"])
        hr_alarm = "HR HIGH" if hr > 120 else ("HR LOW" if hr < 50 else "")
        spo2_alarm = "SPO2 LOW" if spo2 is not None and spo2 < 90 else ""
        if ctx.sensor_off:
            spo2, spo2_alarm = None, "SPO2 PROBE OFF"
        values.update(hr=hr, rr=rr, temp=temp)
        if spo2 is not None:
            values["spo2"] = spo2
        if hr_alarm or spo2_alarm:
            flags.append("device_alarm")
        text = text_lines(hr, rr, spo2, hr if spo2 is not None else None, self.nibp, temp,
                          hr_alarm, spo2_alarm)
        msg = message(waveforms(ctx.now_ms / 1000, ctx.vitals.hr, ctx.vitals.rr), text)
        truth = TruthReading(values, flags)
        chunks: list[Chunk] = []
        rng = ctx.noisy
        if rng is not None and rng.random() < ctx.garbage_p:
            chunks.append(Chunk(garbage(rng, exclude=b"\xff"), noise="garbage"))
        if rng is not None and rng.random() < ctx.corrupt_p:
            truth.expect, truth.fault = "lost", "cut_message"
            chunks.append(Chunk(msg[: rng.randint(20, 400)], reading=truth, noise="cut"))
            return chunks
        self._nibp_unseen = False
        chunks.append(Chunk(msg, reading=truth))
        return chunks
