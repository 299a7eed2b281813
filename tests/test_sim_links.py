"""Simulated serial devices over real ptys and a real TCP listener, read with pyserial."""

from __future__ import annotations

import os
import time
from pathlib import Path

import serial

from devices.simulators.fixtures import simulated_serial
from devices.simulators.scenarios import FaultWindow
from devices.simulators.truth import TruthLog
from monitor.store.embedded import free_port
from tests.waiting import wait_for


def read_until(ser: serial.Serial, pred, timeout_s: float = 10.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout_s
    while not pred(buf):
        if time.monotonic() > deadline:
            raise AssertionError(f"no match in {buf[-200:]!r}")
        buf += ser.read(ser.in_waiting or 1)
    return buf


def test_masimo_on_a_pty_linked_at_the_port_path(tmp_path: Path):
    port = tmp_path / "deep" / "tty" / "oxi-1"  # parent directories are created
    truth = TruthLog(tmp_path / "truth.jsonl")
    with simulated_serial("masimo-ascii", port, truth=truth, device="oxi-1") as where:
        assert where == str(port) and port.is_symlink() and os.readlink(port).startswith("/dev/pts/")
        with serial.Serial(where, 9600, timeout=0.2) as ser:
            data = read_until(ser, lambda b: b.count(b"\r\n") >= 3)
    assert not port.exists() and not port.is_symlink()  # the pty is gone with the device
    lines = [ln for ln in data.split(b"\r\n") if ln]
    sent = [r for r in truth.of("reading") if r["expect"] == "stored"]
    for line in lines[-2:]:  # the first may have been half-read: the host opened mid-line
        spo2 = int(line.split(b"SPO2=")[1][:3])
        assert any(r["values"].get("spo2") == spo2 for r in sent)
    # bytes sent before the host opened the port were not delivered, and the truth says so
    lost = [r for r in truth.of("reading") if r["expect"] == "lost"]
    assert all(r["fault"] == "no_listener" for r in lost)


def test_unplugged_pty_disappears_and_returns(tmp_path: Path):
    port = tmp_path / "tty" / "oxi"
    truth = TruthLog()
    faults = (FaultWindow("unplugged", at_s=0.5, duration_s=1.0),)
    with simulated_serial("nonin-df7", port, faults=faults, truth=truth, device="oxi-2"):
        first = os.readlink(port)
        wait_for(lambda: not port.exists() and not port.is_symlink(), what="unplug")
        wait_for(port.is_symlink, what="replug")
        with serial.Serial(str(port), 9600, timeout=0.2) as ser:
            data = read_until(ser, lambda b: len(b) >= 5 * 80)
    events = [(r["fault"], r["phase"]) for r in truth.of("fault")]
    assert events[:2] == [("unplugged", "start"), ("unplugged", "end")]
    assert [r["event"] for r in truth.of("link")][:3] == ["opened", "closed", "opened"]
    assert first.startswith("/dev/pts/")
    # 75 frames a second, 5 bytes each, SYNC every 25th: find alignment and check checksums
    i = next(i for i in range(len(data) - 5) if data[i] & 0x81 == 0x81 and data[i + 4] == sum(data[i:i + 4]) & 0xFF)
    frames = [data[j:j + 5] for j in range(i, len(data) - 4, 5)]
    assert all(f[4] == sum(f[:4]) & 0xFF and f[0] & 0x80 for f in frames)
    syncs = [k for k, f in enumerate(frames) if f[0] & 1]
    assert all(b - a == 25 for a, b in zip(syncs, syncs[1:], strict=False))


def _frame(payload: bytes) -> bytes:
    return b"\x02" + payload + b"%02X" % (sum(payload) % 256) + b"\x03"


def _reply(ser: serial.Serial) -> bytes:
    raw = read_until(ser, lambda b: b.endswith(b"\x03\r"), timeout_s=5)
    body = raw[raw.rindex(b"\x02") + 1:-2]
    payload, chk = body[:-2], body[-2:]
    assert chk == b"%02X" % (sum(payload) % 256), "reply checksum per the documented rule"
    return payload


def test_nibp_module_answers_real_command_frames_over_a_pty(tmp_path: Path):
    truth = TruthLog()
    with simulated_serial("nibp-un300", tmp_path / "nibp", truth=truth, device="nibp-1", speed=60) as port, \
            serial.Serial(port, 4800, timeout=0.1) as ser:
        ser.write(_frame(b"03;;"))
        assert _reply(ser).startswith(b"S0;A0;C00;M00;P999999999;R999;T")
        ser.write(_frame(b"01;;"))
        assert _reply(ser).startswith(b"S1;")
        seen = []

        def poll() -> bytes | None:
            """One status poll, as the host sends it; the reply once the measurement is done."""
            ser.write(_frame(b"18;;"))
            reply = _reply(ser)
            seen.append(reply[:2])
            return reply if reply.startswith(b"S0;") else None

        payload = wait_for(poll, 30, "the measurement to finish (S0)", interval_s=0.3)
        ser.write(b"\x0218;;00\x03")  # a bad checksum: the module ignores the frame
        ser.write(_frame(b"18;;"))
        repeat = _reply(ser)
    assert b"S1" in seen
    fields = dict((f[:1], f[1:]) for f in payload.split(b";") if f)
    sbp, dbp, mapp, pr = int(fields[b"P"][:3]), int(fields[b"P"][3:6]), int(fields[b"P"][6:]), int(fields[b"R"])
    assert fields[b"M"] == b"00" and 70 < sbp < 220 and dbp < mapp < sbp
    assert abs(mapp - (dbp + (sbp - dbp) / 3)) <= 1
    [reading] = truth.of("reading")
    assert reading["values"] == {"sbp": sbp, "dbp": dbp, "map": mapp, "hr": pr}
    assert repeat.split(b";")[4] == payload.split(b";")[4]  # the result stays until the next measurement


def test_tcp_listener_mode_for_a_serial_device_server(tmp_path: Path):
    url = f"socket://127.0.0.1:{free_port()}"
    truth = TruthLog()
    with simulated_serial("ansar-b", url, truth=truth, device="mon-3") as where:
        assert where == url
        with serial.serial_for_url(url, timeout=0.2) as ser:
            data = read_until(ser, lambda b: b.count(b"\xffANSAR-B ") >= 3, timeout_s=10)
    start = data.index(b"\xffANSAR-B ")
    msg = data[start:data.index(b"\xffANSAR-B ", start + 1)]
    text = msg[409:-1]
    assert msg[-1] == 0xFE and text.startswith(b"HR=1;") and text.endswith(b"T2=1;;;\r")
    delivered = [r for r in truth.of("reading") if r["expect"] == "stored"]
    hr = int(text.split(b";")[1])
    assert any(r["values"]["hr"] == hr for r in delivered)


def test_a_file_backed_truth_log_without_keep_holds_nothing_in_memory(tmp_path: Path):
    """`vitalwatch simulate` runs for hours: its truth log goes to the file only."""
    truth = TruthLog(tmp_path / "truth.jsonl", keep=False)
    for i in range(100):
        truth.write("reading", device="mon-1", ts_ms=i)
    truth.close()
    assert truth.records == [] and truth.of("reading") == []
    assert len((tmp_path / "truth.jsonl").read_text().splitlines()) == 100
