"""MLLP (HL7 Minimal Lower Layer Protocol) framing: <VT> message <FS><CR> (pure).

`MllpFramer.feed(data)` returns what a byte stream held: whole frames and the garbage
between them. It resynchronises on its own: bytes outside a frame are garbage; a new <VT>
inside an unfinished frame means the earlier one was cut off (it is reported as garbage and
the new frame starts); a frame longer than `max_bytes` is dropped as garbage up to its end.
An <FS> not followed by <CR> still ends the frame (some senders omit the <CR>). Used by the
inbound listener (devices/hl7_listener.py) and the outbound sender (monitor/interop).
"""

from __future__ import annotations

from dataclasses import dataclass

VT = 0x0B  # start block
FS = 0x1C  # end block
CR = 0x0D
START = bytes([VT])
END = bytes([FS, CR])
MAX_FRAME_BYTES = 1024 * 1024


def frame(message: bytes) -> bytes:
    """One message wrapped for the wire."""
    return START + message + END


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes that were not part of a complete frame, and why."""

    data: bytes  # at most the first 512 bytes
    size: int  # how many bytes were dropped
    reason: str  # "outside_frame" | "cut_off" | "too_large"


Piece = bytes | Garbage


class MllpFramer:
    """Incremental MLLP deframer; see the module docstring."""

    KEEP = 512

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._in_frame = False
        self._skip_cr = False
        self._oversize = 0  # > 0: inside a too-large frame, dropping until its <FS>
        self._oversize_head = b""

    def feed(self, data: bytes) -> list[Piece]:
        """Frames (bytes, without the envelope) and Garbage found in `data`, in order."""
        out: list[Piece] = []
        i, n = 0, len(data)
        while i < n:
            if self._skip_cr:
                self._skip_cr = False
                if data[i] == CR:
                    i += 1
                    continue
            if self._oversize:
                j = data.find(FS, i)
                if j < 0:
                    self._oversize += n - i
                    return out
                self._oversize += j - i
                out.append(Garbage(self._oversize_head, self._oversize, "too_large"))
                self._oversize, self._oversize_head = 0, b""
                self._skip_cr = True
                i = j + 1
                continue
            if not self._in_frame:
                j = data.find(VT, i)
                stop = n if j < 0 else j
                if stop > i:
                    self._garbage_outside(data[i:stop], out)
                if j < 0:
                    return out
                self._in_frame = True
                i = j + 1
                continue
            # inside a frame: up to the next FS or VT, whichever comes first
            j_fs = data.find(FS, i)
            j_vt = data.find(VT, i)
            if j_vt >= 0 and (j_fs < 0 or j_vt < j_fs):
                self._buf += data[i:j_vt]
                out.append(Garbage(bytes(self._buf[: self.KEEP]), len(self._buf) + 1, "cut_off"))
                self._buf.clear()
                i = j_vt + 1  # the new VT starts a new frame
                continue
            end = n if j_fs < 0 else j_fs
            self._buf += data[i:end]
            if len(self._buf) > self.max_bytes:
                self._oversize_head = bytes(self._buf[: self.KEEP])
                self._oversize = len(self._buf) + 1
                self._buf.clear()
                self._in_frame = False
                if j_fs >= 0:
                    out.append(Garbage(self._oversize_head, self._oversize, "too_large"))
                    self._oversize, self._oversize_head = 0, b""
                    self._skip_cr = True
                    i = j_fs + 1
                    continue
                return out
            if j_fs < 0:
                return out
            out.append(bytes(self._buf))
            self._buf.clear()
            self._in_frame = False
            self._skip_cr = True
            i = j_fs + 1
        return out

    def _garbage_outside(self, chunk: bytes, out: list[Piece]) -> None:
        # whitespace between frames (a stray CR/LF after <FS><CR>) is not worth a reject
        if chunk.strip(b"\r\n\t "):
            out.append(Garbage(chunk[: self.KEEP], len(chunk), "outside_frame"))

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held."""
        return len(self._buf) + self._oversize
