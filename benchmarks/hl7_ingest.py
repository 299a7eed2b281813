"""Benchmark: HL7 ORU^R01 over MLLP → Redis through one `vitalwatch ingest` process.

1. Throughput: 100 monitors (10 rooms × 10) on 100 connections each send a backlog of
   Mindray-style ORU^R01 (the simulator's messages: 7 OBX periodic group, a Z-segment, a
   private code; one reading each) as fast as the listener answers, keeping up to 50
   unanswered messages in flight per connection. messages/s = answered messages / wall time;
   readings/s = stream entries / (last − first stream entry id), i.e. MLLP → parse → Redis
   (AOF, fsync always) with the AA sent after storage.
2. Latency at 100 monitors × 1 message/s: each message's OBX-14 is its send time (ms);
   latency = stream entry id (Redis clock at XADD) − that time, same host. p50 / p99.

Runs its own redis-server; the ingest is a real `vitalwatch ingest` subprocess. Usage:
    .venv/bin/python benchmarks/hl7_ingest.py [--messages 200] [--latency-s 20]
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devices.simulators.emitters.hl7_oru import Hl7Monitor  # noqa: E402
from monitor.model.keys import Keys  # noqa: E402
from monitor.model.mllp import MllpFramer, frame  # noqa: E402
from monitor.store.embedded import free_port  # noqa: E402
from tests.servers import RedisProc  # noqa: E402

ROOMS, PER_ROOM = 10, 10
VITALWATCH = str(Path(sys.executable).with_name("vitalwatch"))
VITALS = {"hr": 72, "spo2": 97, "pi": 2.1, "rr": 14, "temp": 36.7}


def write_config(path: Path, redis_url: str, data: Path, port: int) -> None:
    out = [f'[clinic]\nid = "bench"\n[redis]\nurl = "{redis_url}"\n[mqtt]\nurl = "mqtt://127.0.0.1:1"\n'
           f'[data]\ndir = "{data}"\n[hl7]\nlisten = "127.0.0.1:{port}"\n']
    for r in range(ROOMS):
        out.append(f'[[rooms]]\nid = "room-{r}"\n')
        for d in range(PER_ROOM):
            out.append(f'[[rooms.devices]]\nid = "mon-{r}-{d}"\nprotocol = "hl7"\ntransport = "mllp"\n'
                       f'source = "SRC{r:02d}{d:02d}"\n')
    path.write_text("\n".join(out))


class Conn:
    """One monitor's connection: send with a window of unanswered messages, count answers."""

    def __init__(self, port: int, window: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.window = threading.Semaphore(window)
        self.answers = 0
        self.not_aa = 0
        self.done = threading.Event()
        self.expect = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        f = MllpFramer()
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return  # closed at the end of the phase
            if not data:
                return
            for p in f.feed(data):
                if isinstance(p, bytes):
                    self.answers += 1
                    self.not_aa += b"MSA|AA|" not in p
                    self.window.release()
                    if self.answers == self.expect:
                        self.done.set()

    def send(self, data: bytes) -> None:
        self.window.acquire()
        self.sock.sendall(data)


def monitors() -> list[Hl7Monitor]:
    return [Hl7Monitor(f"room-{r}", f"mon-{r}-{d}", f"SRC{r:02d}{d:02d}") for r in range(ROOMS) for d in range(PER_ROOM)]


def throughput(port: int, client: redis.Redis, keys: Keys, per_monitor: int) -> None:
    mons = monitors()
    base = int(time.time() * 1000) - per_monitor * 1000 - 60_000
    batches = [[frame(m.message(base + i * 1000, VITALS)) for i in range(per_monitor)] for m in mons]
    conns = [Conn(port, 50) for _ in mons]
    for c in conns:
        c.expect = per_monitor
    t0 = time.perf_counter()
    threads = [threading.Thread(target=lambda c=c, b=b: [c.send(x) for x in b]) for c, b in zip(conns, batches, strict=True)]
    for t in threads:
        t.start()
    for c in conns:
        c.done.wait(600)
    wall = time.perf_counter() - t0
    total = per_monitor * len(mons)
    n = sum(client.xlen(keys.vitals(f"room-{r}")) for r in range(ROOMS))
    ids = [client.xrange(keys.vitals(f"room-{r}"), count=1)[0][0] for r in range(ROOMS)]
    last = [client.xrevrange(keys.vitals(f"room-{r}"), count=1)[0][0] for r in range(ROOMS)]
    span_s = (max(int(x.split("-")[0]) for x in last) - min(int(x.split("-")[0]) for x in ids)) / 1000
    print(f"throughput: {total} messages from {len(mons)} monitors on {len(conns)} connections in {wall:.2f} s "
          f"→ {total / wall:,.0f} messages/s answered; {n} readings stored in {span_s:.2f} s → "
          f"{n / max(span_s, 1e-9):,.0f} readings/s; non-AA answers: {sum(c.not_aa for c in conns)}")
    for c in conns:
        c.sock.close()


def latency(port: int, client: redis.Redis, keys: Keys, seconds: float) -> None:
    mons = monitors()
    conns = [Conn(port, 1000) for _ in mons]
    sent: dict[tuple[str, int], int] = {}
    stop = time.monotonic() + seconds
    step = 1.0 / len(mons)
    tick = time.monotonic()
    while time.monotonic() < stop:
        for m, c in zip(mons, conns, strict=True):
            now = int(time.time() * 1000)
            c.send(frame(m.message(now, VITALS)))
            sent[(m.device, now)] = now
            tick += step
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    time.sleep(1.0)
    lat = []
    for r in range(ROOMS):
        for entry_id, f in client.xrange(keys.vitals(f"room-{r}")):
            t = sent.get((f["dev"], int(f["ts"]) // 1000 * 1000))
            key_ms = int(f["ts"])
            if (f["dev"], key_ms) in sent:
                lat.append(int(entry_id.split("-")[0]) - key_ms)
            elif t is not None:
                lat.append(int(entry_id.split("-")[0]) - t)
    lat.sort()
    q = statistics.quantiles(lat, n=100)
    print(f"latency: {len(lat)} messages, 100 monitors × 1/s for {seconds:g} s: send → stream "
          f"p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, max {lat[-1]} ms")
    for c in conns:
        c.sock.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200, help="backlog per monitor for the throughput run")
    ap.add_argument("--latency-s", type=float, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        rp = RedisProc(tmp / "redis").start()
        try:
            for phase in ("throughput", "latency"):
                port = free_port()
                data = tmp / f"data-{phase}"
                cfg = tmp / f"{phase}.toml"
                write_config(cfg, rp.url, data, port)
                client = redis.Redis.from_url(rp.url, decode_responses=True)
                client.flushdb()  # our own server
                proc = subprocess.Popen([VITALWATCH, "ingest", "-c", str(cfg)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                try:
                    deadline = time.monotonic() + 20
                    while True:
                        try:
                            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                            break
                        except OSError:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.05)
                    if phase == "throughput":
                        throughput(port, client, Keys("bench"), args.messages)
                    else:
                        latency(port, client, Keys("bench"), args.latency_s)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
        finally:
            rp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
