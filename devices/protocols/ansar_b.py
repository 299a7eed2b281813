"""`ansar-b`: ANSAR-B output of bedside monitors, e.g. Ivy 450C (shared/protocols/ansar-b.md).

Message: 0xFF, `ANSAR-B `, 400 waveform bytes (any value, 0xFF/0xFE included), ASCII lines
each ended by CR, then 0xFE. The start is found by 0xFF + `ANSAR-B `, the end only after the
waveform. A message whose text part holds a non-text byte, or runs past TEXT_MAX, is
refused and the search restarts one byte after its header, so a new message is never lost
inside a broken one.

NIBP repeats in every message: it is emitted once when first seen on a connection, then
each time it changes, always riding in that message's reading, so one whole message is one
reading (one identity: device + ts). The first sight is flagged `questionable`, as when it
was measured is unknown; the flag is per reading, so it marks that one reading's HR/RR/SpO2
too — accepted: it is one reading per connection, and a physiological alarm on a value of
unknown age would be wrong anyway.
"""

from __future__ import annotations

from devices.protocols.framing import Parsed, Result, checked, parse_number, refusal
from monitor.model.readings import Refusal

HEADER = b"\xffANSAR-B "
WAVE_LEN = 400
END = 0xFE
TEXT_MAX = 2048  # the capture's text part is ~150 bytes
_TEXT_OK = frozenset(range(0x20, 0x7F)) | {0x0D, 0x0A, 0x09}

# line name → (metric per value position, index of the alarm-text field)
LINES: dict[str, tuple[tuple[str | None, ...], int]] = {
    "HR": (("hr",), 2),
    "RR": (("rr",), 2),
    "ETCO2": ((None,), 2),
    "SPO2": (("spo2",), 2),
    "NIBP": (("sbp", "dbp", "map", None), 5),
    "P1": ((None, None, None), 4),
    "P2": ((None, None, None), 4),
    "T1": (("temp",), 2),
    "T2": ((None,), 2),
}
NIBP_METRICS = ("sbp", "dbp", "map")
JUNK_REPORT = 512  # bytes outside messages are reported in runs of at most this
_UNSEEN = object()


def parse_lines(text: bytes, source: str = "") -> tuple[dict[str, float], set[str], list[Refusal]]:
    """The ASCII part of one message → values (NIBP included), flags, refusals."""
    values: dict[str, float] = {}
    flags: set[str] = set()
    refusals: list[Refusal] = []
    pulse_rate: float | None = None
    for raw_line in text.split(b"\r"):
        line = raw_line.strip(b"\n").decode("ascii", "replace")
        if not line:
            continue
        name, sep, rest = line.partition("=")
        spec = LINES.get(name)
        if not sep or spec is None:
            continue  # a line we do not know: ignored, like unknown tags elsewhere
        metrics, alarm_at = spec
        fields = rest.split(";")[1:]  # drop the status code; a trailing "" is the last ';'
        for pos, metric in enumerate(metrics):
            if metric is None or pos >= len(fields) or not fields[pos].strip():
                continue  # empty field or fewer fields than expected: no value
            number = parse_number(fields[pos])
            if number is None:
                refusals.append(refusal(source, "bad_value", f"{name} field {pos + 1} = {fields[pos]!r}",
                                        raw_line))
            else:
                values[metric] = number
        if name == "SPO2" and len(fields) > 1 and fields[1].strip().startswith("PR="):
            pulse_rate = parse_number(fields[1].strip()[3:])
        if alarm_at < len(fields) and fields[alarm_at].strip():
            flags.add("device_alarm")
    if "hr" not in values and pulse_rate is not None:
        values["hr"] = pulse_rate  # SpO2's pulse rate stands in only when HR has no value
    return values, flags, refusals


class AnsarBParser:
    """Stateful message framer + decoder for one connection. `feed()` never raises."""

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.frames = 0  # whole messages decoded
        self._buf = bytearray()
        self._junk_buf = bytearray()
        # NIBP as last seen on this connection; _UNSEEN before the first whole message
        self._last_nibp: object = _UNSEEN

    def feed(self, data: bytes) -> Result:
        """Bytes in → results of every whole message; refusals for what was skipped."""
        out: list[Parsed] = []
        refusals: list[Refusal] = []
        buf = self._buf
        buf += data
        while True:
            start = buf.find(HEADER)
            if start < 0:
                # keep a possible header beginning at the end; refuse what cannot be one
                keep_from = max(0, len(buf) - (len(HEADER) - 1))
                ff = buf.find(b"\xff", keep_from)
                cut = ff if ff >= 0 else len(buf)
                if cut:
                    self._junk(buf[:cut], refusals)
                    del buf[:cut]
                break
            if start:
                self._junk(buf[:start], refusals)
                del buf[:start]
            self._flush_junk(refusals)
            text_from = len(HEADER) + WAVE_LEN
            if len(buf) < text_from:
                break
            bad_at = -1
            end = -1
            for j in range(text_from, min(len(buf), text_from + TEXT_MAX + 1)):
                b = buf[j]
                if b == END:
                    end = j
                    break
                if b not in _TEXT_OK:
                    bad_at = j
                    break
            if end < 0 and bad_at < 0:
                if len(buf) - text_from <= TEXT_MAX:
                    break  # the message is still arriving
                bad_at = text_from + TEXT_MAX
            if bad_at >= 0:
                refusals.append(refusal(self.source, "partial_frame",
                                        f"message broken at byte {bad_at}", bytes(buf[:bad_at + 1])))
                del buf[:1]  # search again just after this header
                continue
            message = bytes(buf[: end + 1])
            del buf[: end + 1]
            self.frames += 1
            self._message(message, out, refusals)
        return out, refusals

    def _junk(self, junk: bytes | bytearray, refusals: list[Refusal]) -> None:
        self._junk_buf += junk
        if len(self._junk_buf) >= JUNK_REPORT:
            self._flush_junk(refusals)

    def _flush_junk(self, refusals: list[Refusal]) -> None:
        if self._junk_buf:
            refusals.append(refusal(self.source, "partial_frame",
                                    f"{len(self._junk_buf)} bytes outside a message", bytes(self._junk_buf)))
            self._junk_buf = bytearray()

    def _message(self, message: bytes, out: list[Parsed], refusals: list[Refusal]) -> None:
        text = message[len(HEADER) + WAVE_LEN: -1]
        values, flags, bad = parse_lines(text, self.source)
        refusals.extend(bad)
        nibp = {m: values.pop(m) for m in NIBP_METRICS if m in values}
        key = tuple(nibp.get(m) for m in NIBP_METRICS) if nibp else None
        if key is not None and key != self._last_nibp:
            if self._last_nibp is _UNSEEN:
                flags = flags | {"questionable"}  # first sight: when it was measured is unknown
            values.update(nibp)
        self._last_nibp = key
        parsed, bad = checked(self.source, values, flags, message)
        out.append(parsed)
        refusals.extend(bad)
