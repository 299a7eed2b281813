"""Fake serial devices on real ptys, for tests — and by hand.

`PtyDevice(path)` makes a pty, puts its slave in raw mode and links it at `path` (as udev
links /dev/serial/by-id/...). `unplug()` closes the master (the reader gets EIO, like a
pulled USB adapter); `replug()` makes a new pty and relinks the same path.
`NibpResponder` answers nibp-un300 commands on such a pty.

By hand:  python -m tests.fake_serial masimo /tmp/oxi1     (then point a device at it)
          python -m tests.fake_serial nonin|ansar|nibp /tmp/dev
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import tty
from pathlib import Path

from devices.protocols.nibp_un300 import ETX, STX, encode_reply
from devices.protocols.nonin_df7 import make_packet

CAPTURE = Path(__file__).resolve().parent / "data" / "ivy450c-ansarb.bin"  # the real Ivy 450C capture
MASIMO_LINES = [
    b"12/01/05 11:56:29 SN=0123456789 SPO2=098% BPM=240 PI=20.00% SPCO=01.0% SPMET=00.5% DESAT=01 "
    b"PIDELTA=-02 PVI=027 ALARM=0000 EXC=000820",
    b"09/15/10 15:10:29 SPO2=097% BPM=064 PI=11.82% ALARM=20 EXC=800",
    b"05/15/07 08:12:21 SN=0000070986 SPO2=---% BPM=--- PI=--.--% SPCO=--.-% SPMET=--.-% DESAT=-- "
    b"PIDELTA=+-- PVI=--- ALARM=0000 EXC=000000",
]



def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` split at the offsets in `cuts` (any order; those past the end ignored), as a
    serial read may deliver it: for feeding a parser in arbitrary chunks."""
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


class PtyDevice:
    """A pty whose slave is linked at `path`; the test holds the master (the device side)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.master = -1
        self._slave = -1
        self._lock = threading.Lock()
        self.plug()

    def plug(self) -> None:
        """Create a fresh pty and (re)link `path` to its slave atomically."""
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass as on a real line
        tmp = self.path.with_name(self.path.name + ".new")
        tmp.unlink(missing_ok=True)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.path)
        with self._lock:
            self.master, self._slave = master, slave

    def unplug(self) -> None:
        """Close the device side: the reader sees EIO / empty reads."""
        with self._lock:
            for fd in (self.master, self._slave):
                if fd >= 0:
                    os.close(fd)
            self.master = self._slave = -1

    def replug(self) -> None:
        """A new pty at the same path (a replugged adapter gets a new tty)."""
        self.unplug()
        self.plug()

    def write(self, data: bytes) -> None:
        """Send bytes as the device."""
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def read(self, timeout_s: float = 0.1) -> bytes:
        """Bytes the host sent (empty on timeout)."""
        import select

        try:
            r, _, _ = select.select([self.master], [], [], timeout_s)
            return os.read(self.master, 4096) if r else b""
        except (OSError, ValueError):  # unplugged meanwhile (closed fd)
            return b""

    def close(self) -> None:
        """Unplug and remove the link."""
        self.unplug()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> PtyDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NibpResponder(threading.Thread):
    """A nibp-un300 module on a PtyDevice: answers every command with a status reply.

    `01;;` starts a measurement lasting `measure_s`; then S0 with `result` (sbp, dbp, map,
    pulse), or error `error` if set. `never_finish` keeps it measuring (timeout tests).
    """

    def __init__(self, dev: PtyDevice, result: tuple[int, int, int, int] = (121, 79, 93, 72),
                 measure_s: float = 1.5, error: str = "00", never_finish: bool = False) -> None:
        super().__init__(daemon=True)
        self.dev, self.result, self.measure_s = dev, result, measure_s
        self.error, self.never_finish = error, never_finish
        self.commands: list[bytes] = []
        self.starts = 0
        self._stop = threading.Event()
        self._buf = b""
        self._measuring_until: float | None = None
        self._last: tuple[int | None, ...] = (None, None, None, None)
        self._last_error = "00"

    def stop(self) -> None:
        """Stop answering."""
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            if self.dev.master < 0:
                time.sleep(0.05)
                continue
            self._buf += self.dev.read(0.05)
            while STX in self._buf and ETX in self._buf:
                start = self._buf.index(STX)
                end = self._buf.index(ETX, start) if ETX in self._buf[start:] else -1
                if end < 0:
                    break
                frame, self._buf = self._buf[start:end + 1], self._buf[end + 1:]
                self._answer(frame[1:-3])

    def _answer(self, payload: bytes) -> None:
        self.commands.append(payload)
        now = time.monotonic()
        if payload == b"01;;":
            self.starts += 1
            self._measuring_until = now + self.measure_s
        if self._measuring_until is not None and now >= self._measuring_until and not self.never_finish:
            self._measuring_until = None
            self._last = self.result
            self._last_error = self.error
        status = 1 if self._measuring_until is not None else 0
        sbp, dbp, map_, pulse = self._last if self._last_error == "00" else (None,) * 4
        try:
            self.dev.write(encode_reply(status, self._last_error, sbp, dbp, map_, pulse, int(now)))
        except OSError:
            pass  # unplugged mid-answer: the host sees the loss on its side


def main() -> None:
    """Run a fake device by hand."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["masimo", "nonin", "ansar", "nibp"])
    p.add_argument("path")
    a = p.parse_args()
    with PtyDevice(a.path) as dev:
        print(f"{a.kind} on {a.path} ({os.readlink(a.path)}); Ctrl-C to stop")
        if a.kind == "nibp":
            r = NibpResponder(dev, measure_s=10)
            r.start()
            r.join()
        data = CAPTURE.read_bytes() if a.kind == "ansar" else b""
        i = 0
        while True:
            if a.kind == "masimo":
                dev.write(MASIMO_LINES[1] + b"\r\n")
                time.sleep(1)
            elif a.kind == "nonin":
                dev.write(make_packet(72, 98))
                time.sleep(1 / 3)
            else:
                dev.write(data[i:i + 96])  # 9600 baud ≈ 960 bytes/s
                i = (i + 96) % len(data)
                time.sleep(0.1)


if __name__ == "__main__":
    main()
