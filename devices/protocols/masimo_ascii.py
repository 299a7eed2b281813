"""`masimo-ascii`: Masimo Radical-7 / Rad-8 "ASCII 1" lines (shared/protocols/masimo-ascii.md).

Framing: one line per second ended by CR LF. Lines are parsed by tag, never by position.
Resynchronisation: a line is taken from its *last* `MM/dd/yy HH:mm:ss` stamp, so noise or
the tail of a cut line glued in front of a good line is refused and the good line kept.
"""

from __future__ import annotations

import re

from devices.protocols.framing import Parsed, Result, checked, is_dashes, parse_number, refusal
from monitor.model.readings import Refusal

LINE_MAX = 1024  # a real line is ~150 bytes; past this without LF the buffer is noise

_STAMP_RE = re.compile(rb"\d\d/\d\d/\d\d \d\d:\d\d:\d\d")
_HEX_RE = re.compile(r"^[0-9A-Fa-f]{1,8}$")

# tag → metric
VALUE_TAGS = {"SPO2": "spo2", "BPM": "hr", "PI": "pi"}

# EXC bit → flag (None: a known bit that raises no flag)
EXC_FLAGS: dict[int, str | None] = {
    0x1: "no_sensor",
    0x2: "no_sensor",
    0x4: "low_perfusion",
    0x8: "pulse_search",
    0x10: "interference",
    0x20: "sensor_off",
    0x40: "interference",
    0x80: "no_sensor",
    0x100: "no_sensor",
    0x400: "low_signal_iq",
    0x800: None,  # "Masimo SET": normal operation
    0x1000: "no_sensor",
    0x2000: "no_sensor",
    0x20000: "questionable",
}
ALARM_FLAGS: dict[int, str] = {0x10: "device_alarm", 0x40: "low_battery"}


def exc_flags(exc: int) -> set[str]:
    """Flags for an EXC exception word."""
    return {flag for bit, flag in EXC_FLAGS.items() if exc & bit and flag}


def alarm_flags(alarm: int) -> set[str]:
    """Flags for an ALARM word."""
    return {flag for bit, flag in ALARM_FLAGS.items() if alarm & bit}


def parse_line(line: bytes, source: str = "") -> Result:
    """One line (without CR LF) → at most one Parsed, plus refusals. Never raises."""
    stamps = list(_STAMP_RE.finditer(line))
    if not stamps:
        return [], [refusal(source, "bad_line", "no MM/dd/yy HH:mm:ss stamp (cut line or noise)", line)]
    start = stamps[-1].start()
    refusals: list[Refusal] = []
    if start:
        refusals.append(refusal(source, "garbage", f"{start} bytes before a line stamp", line[:start]))
    body = line[start:]
    text = body.decode("ascii", "replace")
    clock = text[:17]
    values: dict[str, float] = {}
    flags: set[str] = set()
    info: dict[str, str] = {}
    for token in text[17:].split():
        tag, sep, value = token.partition("=")
        if not sep:
            continue  # a stray word: tags we do not know are ignored, so are fragments
        if tag in VALUE_TAGS:
            if is_dashes(value):
                continue  # "no value": the metric is absent, never 0
            number = parse_number(value.rstrip("%"))
            if number is None:
                refusals.append(refusal(source, "bad_value", f"{tag}={value!r}", body))
            else:
                values[VALUE_TAGS[tag]] = number
        elif tag in ("EXC", "ALARM"):
            if is_dashes(value):
                continue
            if not _HEX_RE.match(value):
                refusals.append(refusal(source, "bad_value", f"{tag}={value!r} is not hex", body))
                continue
            word = int(value, 16)
            flags |= exc_flags(word) if tag == "EXC" else alarm_flags(word)
        elif tag == "SN" and not is_dashes(value):
            info["serial"] = value
    parsed, bad = checked(source, values, flags, body, device_clock=clock, info=info)
    return [parsed], refusals + bad


class MasimoParser:
    """Stateful line framer + parser for one connection. `feed()` never raises."""

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.frames = 0  # intact lines decoded (proves the link is alive)
        self._buf = bytearray()

    def feed(self, data: bytes) -> Result:
        """Bytes in → results of every line completed by them."""
        out: list[Parsed] = []
        refusals: list[Refusal] = []
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            line = bytes(self._buf[:nl]).rstrip(b"\r")
            del self._buf[: nl + 1]
            self._line(line, out, refusals)
        if len(self._buf) > LINE_MAX:
            # Keep a trailing stamp (a good line may be arriving); refuse the rest.
            stamps = list(_STAMP_RE.finditer(self._buf))
            keep = stamps[-1].start() if stamps and stamps[-1].start() > 0 else len(self._buf)
            refusals.append(refusal(self.source, "line_too_long",
                                    f"{keep} bytes without a line end", bytes(self._buf[:keep])))
            del self._buf[:keep]
        return out, refusals

    def _line(self, line: bytes, out: list[Parsed], refusals: list[Refusal]) -> None:
        if not line.strip():
            return  # blank line (e.g. CR CR LF): nothing to decode, nothing lost
        parsed, bad = parse_line(line, self.source)
        self.frames += len(parsed)
        out.extend(parsed)
        refusals.extend(bad)
