"""`vitalwatch ingest` as a real process, killed with -9 while HL7 messages are unanswered:
the monitor re-sends what was never answered and every reading is stored exactly once."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import redis

from monitor.model.mllp import MllpFramer, frame
from monitor.store.embedded import free_port
from tests.configs import config_mapping, room_entry
from tests.configs import write_config as write_config_file
from tests.hl7_support import BPM, HR, msa, nm, now_ms, oru
from tests.waiting import wait_for


def write_config(tmp: Path, clinic: str, redis_url: str, port: int) -> Path:
    return write_config_file(tmp / "vitalwatch.toml", config_mapping(
        clinic, redis_url=redis_url, mqtt_url="mqtt://127.0.0.1:1", data_dir=tmp / "data",
        hl7={"listen": f"127.0.0.1:{port}"},
        rooms=[room_entry("room-1", {"id": "mon-1", "protocol": "hl7", "transport": "mllp", "source": "ABC123"})]))


def start_ingest(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "monitor", "ingest", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


class Monitor:
    """A monitor that keeps every message until it is answered and re-sends after reconnecting."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.unanswered: dict[str, bytes] = {}
        self.answered: set[str] = set()
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None

    def connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        threading.Thread(target=self._read, args=(self.sock,), daemon=True).start()

    def _read(self, sock: socket.socket) -> None:
        framer = MllpFramer()
        try:
            while data := sock.recv(65536):
                for p in framer.feed(data):
                    if isinstance(p, bytes):
                        code, ctrl = msa(p)
                        assert code == "AA", p
                        with self.lock:
                            self.unanswered.pop(ctrl, None)
                            self.answered.add(ctrl)
        except OSError:
            pass  # the listener died: what is unanswered gets re-sent

    def send(self, ctrl: str, msg: bytes) -> None:
        with self.lock:
            self.unanswered[ctrl] = msg
        assert self.sock is not None
        self.sock.sendall(frame(msg))

    def resend_all(self) -> int:
        with self.lock:
            pending = list(self.unanswered.values())
        assert self.sock is not None
        for m in pending:
            self.sock.sendall(frame(m))
        return len(pending)


def test_kill_9_with_unanswered_messages_then_resend_stores_each_once(tmp_path, clinic_id, keys, redis_proc):
    port = free_port()
    config = write_config(tmp_path, clinic_id, redis_proc.url, port)
    client = redis.Redis.from_url(redis_proc.url, decode_responses=True)
    proc = start_ingest(config)
    mon = Monitor(port)
    try:
        wait_for(lambda: _listening(port), what="listener up", timeout_s=30)
        mon.connect()
        base = now_ms() - 3600_000
        n = 0
        for i in range(200):  # stored and answered
            mon.send(f"a{i}", oru(f"a{i}", base + n * 1000, [nm(HR, 60 + n % 40, BPM)]))
            n += 1
        wait_for(lambda: len(mon.answered) == 200, what="first answers")
        # Redis stops answering: messages pile up unanswered inside ingest (some may reach Redis
        # when it comes back, from the dead process's socket) — then ingest dies with -9.
        redis_proc.proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(300):
                mon.send(f"b{i}", oru(f"b{i}", base + n * 1000, [nm(HR, 60 + n % 40, BPM)]))
                n += 1
            wait_for(lambda: len(mon.unanswered) == 300, what="unanswered messages")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            redis_proc.proc.send_signal(signal.SIGCONT)
        assert len(mon.unanswered) > 0, "the crash must leave messages unanswered"
        proc = start_ingest(config)
        wait_for(lambda: _listening(port), what="listener up again", timeout_s=30)
        mon.connect()
        # the monitor re-sends everything unanswered (and a few answered ones, as real ones do)
        resent = mon.resend_all()
        for i in range(10):
            mon.send(f"a{i}", oru(f"a{i}", base + i * 1000, [nm(HR, 60 + i % 40, BPM)]))
        wait_for(lambda: not mon.unanswered, what="every message answered after the restart", timeout_s=60)
        assert resent > 0
        entries = [f for _i, f in client.xrange(keys.vitals("room-1"))]
        ts = [int(f["ts"]) for f in entries]
        assert len(ts) == n == len(set(ts)), f"{len(ts)} entries for {n} messages"
        assert sorted(ts) == [base // 1000 * 1000 + k * 1000 for k in range(n)]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        client.close()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False
