"""`nonin-df7`: Nonin binary Data Format 7 (shared/protocols/nonin-df7.md).

Frames are 5 bytes `STATUS, PLETH_MSB, PLETH_LSB, FLOAT, CHK`; 25 frames make a packet,
frame 1 carrying the SYNC bit. One `Parsed` per complete packet (3 a second); the
supervisor publishes at most one a second. Resynchronisation: while searching, slide one
byte at a time until a checksum-valid frame with SYNC; a bad checksum, a STATUS without
bit 7 or a packet of the wrong length drops the packet (counted, refused) and searches.
"""

from __future__ import annotations

from devices.protocols.framing import Parsed, Result, checked, refusal
from monitor.model.readings import Refusal

FRAME_LEN = 5
PACKET_FRAMES = 25
ACK, NAK = 0x06, 0x15
HR_NONE, SPO2_NONE = 511, 127
SKIP_REPORT = 512  # report a long run of skipped bytes before sync is found again

# STATUS bits
SYNC, GREEN, RED, SNSA, OOT, ARTF, SNSD, ALWAYS = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
STATUS_FLAGS = {SNSD: "sensor_off", OOT: "pulse_search", ARTF: "artifact", SNSA: "questionable"}
STAT2_LOW_BATTERY = 0x01


def checksum(frame: bytes | bytearray) -> int:
    """CHK of a frame's first four bytes."""
    return (frame[0] + frame[1] + frame[2] + frame[3]) & 0xFF


def make_frame(status: int, pleth: int, float_byte: int) -> bytes:
    """Encode one frame (for simulators, tests and benchmarks)."""
    body = bytes([status | ALWAYS, (pleth >> 8) & 0xFF, pleth & 0xFF, float_byte & 0xFF])
    return body + bytes([checksum(body)])


def make_packet(hr: int, spo2: int, status: int = 0, stat2: int = 0) -> bytes:
    """Encode one 25-frame packet carrying `hr` and `spo2` (for simulators and tests)."""
    floats = [0] * PACKET_FRAMES
    floats[0], floats[1], floats[2] = (hr >> 7) & 0x03, hr & 0x7F, spo2 & 0xFF
    floats[7] = stat2
    return b"".join(
        make_frame(status | (SYNC if n == 0 else 0), 512 + n, floats[n]) for n in range(PACKET_FRAMES)
    )


def decode_packet(packet: list[bytes], source: str = "") -> tuple[Parsed, list[Refusal]]:
    """Values and flags of a complete 25-frame packet."""
    floats = [f[3] for f in packet]
    statuses = [f[0] for f in packet]
    values: dict[str, float] = {}
    hr = ((floats[0] & 0x03) << 7) | (floats[1] & 0x7F)
    if hr != HR_NONE:
        values["hr"] = hr
    if floats[2] != SPO2_NONE:
        values["spo2"] = floats[2]
    any_status = 0
    for s in statuses:
        any_status |= s
    flags = {flag for bit, flag in STATUS_FLAGS.items() if any_status & bit}
    if any(s & (GREEN | RED) == RED for s in statuses):
        flags.add("low_perfusion")
    if floats[7] & STAT2_LOW_BATTERY:
        flags.add("low_battery")
    return checked(source, values, flags, b"".join(packet))


class NoninParser:
    """Stateful DF7 framer + packet decoder for one connection. `feed()` never raises."""

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.frames = 0  # checksum-valid frames in sync
        self.bad_checksums = 0
        self.control_bytes = 0  # ACK/NAK skipped between frames
        self._buf = bytearray()
        self._synced = False
        self._packet: list[bytes] = []
        self._skipped = bytearray()

    def feed(self, data: bytes) -> Result:
        """Bytes in → one result per complete packet, refusals for what was dropped."""
        out: list[Parsed] = []
        refusals: list[Refusal] = []
        buf = self._buf
        buf += data
        i = 0
        n = len(buf)
        while n - i >= FRAME_LEN:
            status = buf[i]
            if not self._synced:
                if status & (ALWAYS | SYNC) == ALWAYS | SYNC and checksum(buf[i:i + 4]) == buf[i + 4]:
                    self._end_skip(refusals)
                    self._synced = True
                else:
                    self._skip(buf[i], refusals)
                    i += 1
                    continue
            if not status & ALWAYS:
                if status in (ACK, NAK) and n - i > FRAME_LEN and self._frame_ok(buf, i + 1):
                    self.control_bytes += 1  # an ACK/NAK between frames: alignment is intact
                    i += 1
                    continue
                self._lose_sync(refusals, "lost_sync", "STATUS without bit 7")
                continue
            frame = bytes(buf[i:i + FRAME_LEN])
            if checksum(frame) != frame[4]:
                self.bad_checksums += 1
                refusals.append(refusal(self.source, "bad_checksum",
                                        f"CHK {frame[4]:02X}, expected {checksum(frame):02X}", frame))
                self._lose_sync(refusals, "incomplete_packet", "packet dropped after a bad frame")
                self._skip(buf[i], refusals)
                i += 1
                continue
            if status & SYNC:
                if self._packet:
                    refusals.append(refusal(self.source, "incomplete_packet",
                                            f"packet of {len(self._packet)} frames", b"".join(self._packet)))
                self._packet = []
            elif not self._packet:
                self._lose_sync(refusals, "lost_sync", "frame 26 without SYNC")
                continue
            self.frames += 1
            self._packet.append(frame)
            i += FRAME_LEN
            if len(self._packet) == PACKET_FRAMES:
                parsed, bad = decode_packet(self._packet, self.source)
                out.append(parsed)
                refusals.extend(bad)
                self._packet = []
        del buf[:i]
        return out, refusals

    def _frame_ok(self, buf: bytearray, i: int) -> bool:
        return bool(buf[i] & ALWAYS) and checksum(buf[i:i + 4]) == buf[i + 4]

    def _lose_sync(self, refusals: list[Refusal], reason: str, detail: str) -> None:
        if self._packet:
            refusals.append(refusal(self.source, reason, f"{detail}; {len(self._packet)} frames dropped",
                                    b"".join(self._packet)))
        self._packet = []
        self._synced = False

    def _skip(self, byte: int, refusals: list[Refusal]) -> None:
        self._skipped.append(byte)
        if len(self._skipped) >= SKIP_REPORT:
            self._end_skip(refusals)

    def _end_skip(self, refusals: list[Refusal]) -> None:
        if self._skipped:
            refusals.append(refusal(self.source, "resync", f"skipped {len(self._skipped)} bytes",
                                    bytes(self._skipped)))
            self._skipped = bytearray()
