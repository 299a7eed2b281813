"""Benchmark: MQTT → Redis through one `vitalwatch ingest` process.

1. Sustained readings/s: a backlog of SenML packs (10 readings each, 100 devices in 10 rooms)
   is queued at the broker for the ingest's persistent session while it is stopped; then
   the ingest starts and drains it. Rate = readings / (last − first stream entry id), i.e.
   broker → codec → Redis (AOF, fsync always) with PUBACK after store. Also for one-reading
   `json` messages.
2. Latency at 100 devices × 1 Hz: `json` messages carrying their publish time as `ts`;
   latency = stream entry id (Redis clock at XADD) − ts, same host. p50 / p99.

Runs its own mosquitto and redis-server on free ports. Usage:
    .venv/bin/python benchmarks/mqtt_ingest.py [--packs 600] [--json 10000] [--latency-s 20]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devices.transports.mqtt import MqttSettings, connect_async, make_client  # noqa: E402
from monitor.model.clock import now_ms  # noqa: E402
from monitor.model.keys import Keys  # noqa: E402
from tests.servers import MosquittoProc, RedisProc  # noqa: E402

ROOMS, PER_ROOM = 10, 10
VITALWATCH = str(Path(sys.executable).with_name("vitalwatch"))


def write_config(path: Path, redis_url: str, mqtt_url: str, data: Path, protocol: str) -> None:
    out = [f'[clinic]\nid = "bench"\n[redis]\nurl = "{redis_url}"\n[mqtt]\nurl = "{mqtt_url}"\n'
           f'[data]\ndir = "{data}"\n']
    for r in range(ROOMS):
        out.append(f'[[rooms]]\nid = "room-{r}"\n')
        for d in range(PER_ROOM):
            out.append(f'[[rooms.devices]]\nid = "dev-{r}-{d}"\nprotocol = "{protocol}"\n'
                       f'transport = "mqtt"\ntopic = "vw/room-{r}/dev-{r}-{d}"\n')
    path.write_text("\n".join(out))


def topics() -> list[str]:
    return [f"vw/room-{r}/dev-{r}-{d}" for r in range(ROOMS) for d in range(PER_ROOM)]


class Pub:
    """A paho QoS 1 publisher that can wait for all its PUBACKs."""

    def __init__(self, url: str) -> None:
        s = MqttSettings(url=url, client_id=f"bench-{uuid.uuid4().hex[:6]}")
        self.c = make_client(s)
        self.c.max_inflight_messages_set(1000)
        self.acked = 0
        self.lock = threading.Lock()
        up = threading.Event()
        self.c.on_connect = lambda *_a: up.set()
        self.c.on_publish = self._acked
        connect_async(self.c, s)
        self.c.loop_start()
        up.wait(10)

    def _acked(self, *_a: object) -> None:
        with self.lock:
            self.acked += 1

    def wait(self, n: int) -> None:
        while self.acked < n:
            time.sleep(0.01)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def start_ingest(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([VITALWATCH, "ingest", "-c", str(cfg)], stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT)


def stop_ingest(p: subprocess.Popen[bytes]) -> None:
    p.send_signal(signal.SIGINT)
    p.wait(30)


def stream_total(r: redis.Redis, keys: Keys) -> int:
    pipe = r.pipeline(transaction=False)
    for i in range(ROOMS):
        pipe.xlen(keys.vitals(f"room-{i}"))
    return sum(pipe.execute())


def id_ms(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


def span_ms(r: redis.Redis, keys: Keys) -> float:
    first, last = [], []
    for i in range(ROOMS):
        k = keys.vitals(f"room-{i}")
        first += [id_ms(e[0]) for e in r.xrange(k, count=1)]
        last += [id_ms(e[0]) for e in r.xrevrange(k, count=1)]
    return max(last) - min(first)


def wait_session(r: redis.Redis, keys: Keys) -> None:
    """Until the ingest has written device status (it connected and subscribed)."""
    while not r.hget(keys.device_status("dev-0-0"), "state"):
        time.sleep(0.05)
    time.sleep(1.0)


def drain(tmp: Path, rurl: str, mq: MosquittoProc, protocol: str, messages: int, per_msg: int) -> float:
    keys = Keys("bench")
    r = redis.Redis.from_url(rurl, decode_responses=True)
    for k in r.scan_iter("vw:{bench}:*"):
        r.delete(k)
    data = tmp / f"data-{protocol}"
    cfg = tmp / f"{protocol}.toml"
    write_config(cfg, rurl, mq.url, data, protocol)
    log = tmp / f"ingest-{protocol}.log"
    p = start_ingest(cfg, log)  # once, to create the persistent session and subscriptions
    wait_session(r, keys)
    stop_ingest(p)
    pub = Pub(mq.url)
    ts0 = now_ms() - 3600_000
    tops = topics()
    for i in range(messages):
        dev = i % len(tops)
        t = ts0 + (i // len(tops)) * per_msg * 10
        if protocol == "senml":
            pack = [{"bt": t / 1000, "n": "hr", "u": "beat/min", "v": 60 + i % 30, "t": 0.0},
                    {"n": "spo2", "u": "%", "v": 97, "t": 0.0}]
            pack += [{"n": "hr", "u": "beat/min", "v": 61, "t": k / 100} for k in range(1, per_msg)]
            body = json.dumps(pack)
        else:
            body = json.dumps({"ts": t, "hr": 60 + i % 30, "spo2": 97})
        pub.c.publish(tops[dev], body, qos=1)
    pub.wait(messages)
    pub.close()
    p = start_ingest(cfg, log)
    want = messages * per_msg
    deadline = time.monotonic() + 300
    while stream_total(r, keys) < want and time.monotonic() < deadline:
        time.sleep(0.1)
    got = stream_total(r, keys)
    stop_ingest(p)
    span = span_ms(r, keys)
    if got != want:
        print(f"  WARNING: {protocol}: stored {got} of {want} readings (see {log})")
    return got / (span / 1000) if span > 0 else float("inf")


def latency(tmp: Path, rurl: str, mq: MosquittoProc, seconds: float) -> tuple[float, float, int]:
    keys = Keys("bench")
    r = redis.Redis.from_url(rurl, decode_responses=True)
    for k in r.scan_iter("vw:{bench}:*"):
        r.delete(k)
    cfg = tmp / "lat.toml"
    write_config(cfg, rurl, mq.url, tmp / "data-lat", "json")
    p = start_ingest(cfg, tmp / "ingest-lat.log")
    wait_session(r, keys)
    pub = Pub(mq.url)
    tops = topics()
    n = 0
    start = time.monotonic()
    period = 1.0 / len(tops)  # 100 devices × 1 Hz, evenly spread
    while time.monotonic() - start < seconds:
        topic = tops[n % len(tops)]
        pub.c.publish(topic, json.dumps({"ts": now_ms(), "hr": 70, "spo2": 98}), qos=1)
        n += 1
        time.sleep(max(0.0, start + n * period - time.monotonic()))
    pub.wait(n)
    pub.close()
    while stream_total(r, keys) < n:
        time.sleep(0.1)
    stop_ingest(p)
    lat = []
    for i in range(ROOMS):
        for eid, f in r.xrange(keys.vitals(f"room-{i}")):
            lat.append(id_ms(eid) - int(f["ts"]))
    lat.sort()
    q = statistics.quantiles(lat, n=100)
    return q[49], q[98], len(lat)


def main() -> None:
    """Run both measurements and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packs", type=int, default=6000, help="SenML packs of 10 readings in the backlog")
    ap.add_argument("--json", type=int, default=10000, help="json messages in the backlog")
    ap.add_argument("--latency-s", type=float, default=20.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vw-bench-mqtt-") as d:
        tmp = Path(d)
        rp = RedisProc(tmp / "redis").start()
        mq = MosquittoProc(tmp / "mqtt").start()
        try:
            rate = drain(tmp, rp.url, mq, "senml", a.packs, 10)
            print(f"sustained ingest, SenML packs of 10: {rate:,.0f} readings/s "
                  f"({a.packs * 10:,} readings, 100 devices, one ingest process)")
            rate_j = drain(tmp, rp.url, mq, "json", a.json, 1)
            print(f"sustained ingest, one-reading json messages: {rate_j:,.0f} readings/s ({a.json:,} messages)")
            p50, p99, n = latency(tmp, rp.url, mq, a.latency_s)
            print(f"publish → stream latency at 100 devices × 1 Hz: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({n} readings)")
        finally:
            mq.kill()
            rp.kill()


if __name__ == "__main__":
    main()
