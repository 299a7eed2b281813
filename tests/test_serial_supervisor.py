"""Supervisors on real ptys against real Redis: readings, flags, rejects, NIBP driving."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devices.protocols.nonin_df7 import SNSD, make_packet
from devices.statusboard import StatusBoard
from devices.supervisor import DeviceSupervisor
from monitor.model.keys import Keys
from monitor.model.ratelimit import RejectLimiter
from monitor.model.readings import Refusal
from monitor.store.streams import StreamWriter
from tests.fake_serial import CAPTURE, MASIMO_LINES, NibpResponder, PtyDevice
from tests.waiting import wait_for


class Rig:
    """One device under a supervisor, with a writer and status board on the test Redis."""

    def __init__(self, cfg, rclient: redis.Redis, keys: Keys, redis_url: str, tmp: Path) -> None:
        self.cfg, self.r, self.keys = cfg, rclient, keys
        self.room, self.dev = cfg.devices()[0]
        self.stop = threading.Event()
        self.writer = StreamWriter(redis_url, keys, retention_ms=3600_000, spool_path=tmp / "spool.jsonl")
        self.board = StatusBoard(redis.Redis.from_url(redis_url, decode_responses=True), keys, 0.2).start()
        self.sup = DeviceSupervisor(self.room, self.dev, self.writer, self.board, self.stop, keys=keys,
                                    client=redis.Redis.from_url(redis_url, decode_responses=True))

    def start(self) -> Rig:
        self.sup.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.sup.join(10)
        self.writer.close()
        self.board.stop()

    def status(self) -> Any:
        return self.r.hgetall(self.keys.device_status(self.dev.id))

    def wait_opened(self) -> None:
        wait_for(lambda: self.status().get("detail", "").startswith("opened"), what="port opened")

    def wait_parsed(self, frames: int, timeout_s: float = 30.0) -> None:
        """Wait until the supervisor has parsed `frames` frames (all the test wrote), then flush
        the writer: from here on the stream holds all that input will ever produce, so a count
        is exact without sleeping."""
        wait_for(lambda: int(self.status().get("frames", 0)) >= frames, timeout_s, f"{frames} frames parsed")
        assert self.writer.flush(10)

    def readings(self) -> Any:
        return [f for _, f in self.r.xrange(self.keys.vitals(self.room.id)) or []]

    def rejects(self) -> Any:
        return [f for _, f in self.r.xrange(self.keys.rejects) or []]


@pytest.fixture
def rig(make_config, rclient, keys, redis_url, tmp_path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def _make(**device: Any) -> Rig:
        dev = {"id": "dev-1", "transport": "serial", "port": str(tmp_path / "tty-dev"), **device}
        cfg = make_config(rooms=[{"id": "room-1", "devices": [dev]}])
        made.append(Rig(cfg, rclient, keys, redis_url, tmp_path).start())
        return made[-1]

    yield _make
    for r in made:
        r.close()


def test_masimo_lines_and_noise(rig, tmp_path):
    with PtyDevice(tmp_path / "tty-dev") as pty:
        r = rig(protocol="masimo-ascii")
        r.wait_opened()
        pty.write(b"0 SPO2=098% BPM=072\r\n")  # the cut first line
        pty.write(b"\x00\xff\xfe noise \x13\x11\r\n")
        for line in MASIMO_LINES:
            pty.write(line + b"\r\n")
        pty.write(b"01/02/24 10:00:01 SPO2=093% BPM=101 PI=00.40% ALARM=0010 EXC=000004\r\n")
        pty.write(b"01/02/24 10:00:02 SPO2=099% BPM=088 PI=03.10% ALARM=0000 EXC=000001\r\n")
        pty.write(b"01/02/24 10:00:03 SPO2=045% BPM=071 PI=03.10% ALARM=0000 EXC=000800\r\n")
        wait_for(lambda: len(r.readings()) >= 5, what="5 readings")
        r.writer.flush()
        got = [{k: v for k, v in f.items() if k != "ts"} for f in r.readings()]
        assert got == [
            {"dev": "dev-1", "flags": "sensor_off"},  # example 1: EXC 0x20 drops its values
            {"dev": "dev-1", "spo2": "97", "hr": "64", "pi": "11.82"},  # example 2; example 3 stores nothing
            {"dev": "dev-1", "spo2": "93", "hr": "101", "pi": "0.4", "flags": "device_alarm,low_perfusion"},
            {"dev": "dev-1", "flags": "no_sensor"},
            {"dev": "dev-1", "hr": "71", "pi": "3.1"},  # SpO2 45 is out of range: refused, others kept
        ]
        ts = [int(f["ts"]) for f in r.readings()]
        assert ts == sorted(set(ts))
        reasons = wait_for(lambda: {f["reason"] for f in r.rejects()} >= {"bad_line", "out_of_range"} and
                           {f["reason"] for f in r.rejects()}, what="rejects")
        assert all(f["source"] == "dev-1" for f in r.rejects())
        assert "bad_line" in reasons
        # status is written by its own thread: wait until it carries the last line's serial
        st = wait_for(lambda: r.status().get("state") == "online" and r.status().get("serial") == "0000070986"
                      and r.status(), what="online with the last line's serial")
        assert st["protocol"] == "masimo-ascii"
        wait_for(lambda: r.status().get("frames") == "6", what="6 frames counted")
        # the device stops talking: silent after the 3 s quiet time, online again on the next line
        st = wait_for(lambda: r.status().get("state") == "silent" and r.status(), what="silent")
        assert st["detail"] == "no valid data for 3 s"
        pty.write(MASIMO_LINES[1] + b"\r\n")
        wait_for(lambda: r.status().get("state") == "online", what="online again")


def test_nonin_bad_checksums_stray_byte_and_sentinels(rig, tmp_path):
    with PtyDevice(tmp_path / "tty-dev") as pty:
        r = rig(protocol="nonin-df7")
        r.wait_opened()
        bad = bytearray(make_packet(72, 98))
        for frame in range(0, 25, 2):
            bad[frame * 5 + 4] ^= 0x5A  # many bad checksums
        stray = make_packet(73, 97)
        pty.write(b"\x15" + make_packet(72, 98) + bytes(bad) + stray[:33] + b"\xc3" + stray[33:])
        pty.write(make_packet(511, 127))  # sentinels only: nothing to store
        pty.write(make_packet(74, 96))
        wait_for(lambda: any(f.get("hr") == "74" for f in r.readings()), what="recovered reading")
        pty.write(make_packet(511, 127, status=SNSD))
        wait_for(lambda: any(f.get("flags") == "sensor_off" for f in r.readings()), what="sensor_off")
        for _ in range(4):
            pty.write(make_packet(75, 95))
        wait_for(lambda: r.readings()[-1].get("hr") == "75", what="reporting again")
        readings = r.readings()
        assert all(f.get("hr") not in ("511",) and f.get("spo2") != "127" for f in readings)
        assert {f.get("hr") for f in readings} <= {"72", "74", "75", None}
        off = [f for f in readings if f.get("flags") == "sensor_off"]
        assert off and "hr" not in off[0] and "spo2" not in off[0]
        rejects = wait_for(lambda: [f for f in r.rejects() if f["reason"] == "bad_checksum"], what="bad_checksum")
        assert len(rejects) < 13  # rate-limited: not one entry per bad frame
        wait_for(lambda: int(r.status().get("rejects:bad_checksum", 0)) >= 1, what="counter")


def test_nibp_module_driven_on_its_cycle_and_measure_now(rig, tmp_path, keys, rclient):
    with PtyDevice(tmp_path / "tty-dev") as pty:
        module = NibpResponder(pty, result=(121, 79, 93, 72), measure_s=1.5)
        module.start()
        r = rig(protocol="nibp-un300", cycle_s=3600)
        wait_for(lambda: len(r.readings()) == 1, what="first measurement")
        first = r.readings()[0]
        assert {k: v for k, v in first.items() if k != "ts"} == {
            "dev": "dev-1", "sbp": "121", "dbp": "79", "map": "93", "hr": "72"}
        assert module.commands[0] == b"03;;" and b"01;;" in module.commands
        assert module.starts == 1
        module.result = (135, 85, 101, 80)
        rclient.lpush(keys.nibp_requests("dev-1"), json.dumps({"ts_ms": 1, "user": "nurse1"}))
        wait_for(lambda: len(r.readings()) == 2, what="measure-now result")
        assert r.readings()[1]["sbp"] == "135" and module.starts == 2
        st = r.status()
        assert st["state"] == "online" and st["nibp_requested_by"] == "nurse1"
        assert float(st["nibp_cycle_s"]) == 3600
        module.stop()


def test_nibp_cycle_follows_session_phase_and_silence_is_offline(rig, tmp_path, keys, rclient):
    # an open session dosed just now: phase "dosing", whose 2 s cycle overrides cycle_s
    rclient.hset(keys.open_sessions, "room-1", "s1")
    rclient.hset(keys.session("s1"), mapping={"id": "s1", "room": "room-1", "state": "open",
                                              "first_dose_ms": str(int(time.time() * 1000))})
    with PtyDevice(tmp_path / "tty-dev") as pty:
        module = NibpResponder(pty, measure_s=0.5)
        module.start()
        r = rig(protocol="nibp-un300", cycle_s=3600, cycle_by_phase_s={"dosing": 2, "observation": 900})
        wait_for(lambda: len(r.readings()) >= 2, what="two cycles")
        assert all({"sbp", "dbp", "map", "hr"} <= set(f) for f in r.readings())
        st = r.status()
        assert st["nibp_phase"] == "dosing" and float(st["nibp_cycle_s"]) == 2
        module.stop()  # the module stops answering polls: offline although the port is open
        st = wait_for(lambda: r.status().get("state") == "offline" and r.status(), timeout_s=30, what="offline")
        assert st["detail"].startswith("no valid data")


def test_nibp_m_error_is_flagged_reading_and_status(rig, tmp_path):
    with PtyDevice(tmp_path / "tty-dev") as pty:
        module = NibpResponder(pty, measure_s=0.5, error="03")
        module.start()
        r = rig(protocol="nibp-un300", cycle_s=3600)
        wait_for(lambda: r.readings(), what="error reading")
        f = r.readings()[0]
        assert f["flags"] == "measurement_error" and not {"sbp", "dbp", "map", "hr"} & set(f)
        st = wait_for(lambda: r.status().get("nibp_error") == "03" and r.status(), what="status")
        assert "M03" in st["detail"]
        module.stop()


def test_ivy_capture_through_a_pty(rig, tmp_path):
    with PtyDevice(tmp_path / "tty-dev") as pty:
        r = rig(protocol="ansar-b", baudrate=9600)
        r.wait_opened()
        data = CAPTURE.read_bytes()
        for i in range(0, len(data), 96):  # in 9600-baud-sized slices, faster than real time
            pty.write(data[i:i + 96])
            time.sleep(0.002)
        r.wait_parsed(27)
        readings = r.readings()
        assert len(readings) == 27  # one reading per whole message
        assert all((f["hr"], f["rr"], f["spo2"]) == ("80", "35", "100") for f in readings)
        nibp = [f for f in readings if "sbp" in f]
        assert len(nibp) == 1 and (nibp[0]["sbp"], nibp[0]["dbp"], nibp[0]["map"]) == ("121", "75", "92")
        assert nibp[0]["flags"] == "questionable"


def test_long_accelerated_run_exact_count(rig, tmp_path):
    n = 3000
    with PtyDevice(tmp_path / "tty-dev") as pty:
        r = rig(protocol="masimo-ascii")
        r.wait_opened()
        lines = b"".join(b"01/02/24 10:%02d:%02d SPO2=%03d%% BPM=%03d PI=02.00%% ALARM=0000 EXC=000800\r\n"
                         % (i // 60 % 60, i % 60, 90 + i % 10, 60 + i % 50) for i in range(n))
        pty.write(lines)
        r.wait_parsed(n, timeout_s=60)
        assert r.r.xlen(r.keys.vitals("room-1")) == n
        hrs = [int(f["hr"]) for f in r.readings()]
        assert hrs == [60 + i % 50 for i in range(n)]


def test_reject_limiter_summarises():
    lim = RejectLimiter(1.0)
    ref = Refusal("d", "bad_checksum", "x")
    assert lim.offer(ref, 0.0) is ref
    assert all(lim.offer(ref, 0.01 * i) is None for i in range(1, 75))
    (summary,) = lim.due(1.0)
    assert summary.detail.startswith("74 refusals (bad_checksum)")
    assert lim.due(1.5) == []
    assert lim.offer(ref, 1.6) is None
    (s2,) = lim.drain(1.7)
    assert s2 is ref
