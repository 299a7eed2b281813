"""Benchmark: readings/s one process writes to Redis through StreamWriter, and Redis memory
per reading (MEMORY USAGE) of a 1 Hz room stream.

Runs its own redis-server on a free port (AOF on, appendfsync always — as the embedded and
compose servers run), so the numbers include durability. Usage:
    .venv/bin/python benchmarks/stream_write.py [--readings 200000]
    .venv/bin/python benchmarks/stream_write.py --replica   # the cost of redis.min_replicas

`--replica` adds a replica to the server and compares `min_replicas` 0 and 1 (WAIT after
each batch): bulk throughput, and the time from `write()` to the stored callback (what an
MQTT PUBACK / HL7 ACK waits for) for single readings written one at a time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.model.clock import now_ms  # noqa: E402
from monitor.model.codec import to_fields  # noqa: E402
from monitor.model.keys import Keys  # noqa: E402
from monitor.model.readings import Reading  # noqa: E402
from monitor.store.streams import StreamWriter  # noqa: E402
from tests.servers import RedisProc  # noqa: E402


def throughput(url: str, n: int, rooms: int, tmp: Path, run: int = 0, min_replicas: int = 0) -> float:
    # a clinic of its own per run: a new writer checks its first minutes' readings against
    # what its streams hold (re-sends after a restart); earlier runs' 200,000 entries are not
    # what a real restart finds there
    keys = Keys(f"bench-{run}")
    w = StreamWriter(url, keys, retention_ms=168 * 3600_000, spool_path=tmp / f"spool-{run}.jsonl",
                     buffer_max=n + 1, min_replicas=min_replicas)
    base = now_ms()
    readings = [Reading(f"room-{i % rooms}", f"oxi-{i % rooms}", base + i, {"hr": 60 + i % 40, "spo2": 95 + i % 5, "pi": 2.5})
                for i in range(n)]
    t0 = time.perf_counter()
    for r in readings:
        w.write(r)
    assert w.flush(300)
    dt = time.perf_counter() - t0
    w.close()
    return n / dt


def bytes_per_reading(client: redis.Redis, n: int) -> tuple[float, float]:
    """A 1 Hz stream of n readings: ids 1 s apart as XADD * gives at 1 Hz (ids set explicitly
    so the benchmark needn't wait n seconds). Two shapes: oximeter (hr, spo2, pi) and a
    multi-parameter monitor (hr, spo2, rr, temp)."""
    keys = Keys("mem")
    out = []
    for shape in (lambda i: {"hr": 60 + i % 30, "spo2": 95 + i % 5, "pi": round(1 + (i % 50) / 10, 1)},
                  lambda i: {"hr": 60 + i % 30, "spo2": 95 + i % 5, "rr": 12 + i % 6, "temp": 36.6}):
        key = keys.vitals("room-mem")
        client.delete(key)
        base = 1_795_813_200_000
        pipe = client.pipeline(transaction=False)
        for i in range(n):
            r = Reading("room-mem", "oxi-1", base + i * 1000, shape(i))
            pipe.xadd(key, to_fields(r), id=f"{base + i * 1000 + 7}-0")
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        out.append(client.memory_usage(key, samples=0) / n)
    return out[0], out[1]


def ack_latency(url: str, n: int, tmp: Path, run: str, min_replicas: int) -> list[float]:
    """Milliseconds from write() to the stored callback, one reading at a time."""
    keys = Keys(f"bench-ack-{run}")
    w = StreamWriter(url, keys, retention_ms=168 * 3600_000, spool_path=tmp / f"spool-{run}.jsonl",
                     min_replicas=min_replicas)
    out = []
    base = now_ms()
    for i in range(n):
        done = threading.Event()
        t0 = time.perf_counter()
        w.write(Reading("room-1", "oxi-1", base + i, {"hr": 70, "spo2": 97}), done.set)
        assert done.wait(10), "not confirmed in 10 s"
        out.append((time.perf_counter() - t0) * 1000)
    w.close()
    return sorted(out)


def wait_cost(n: int, rooms: int, tmp: Path) -> None:
    master = RedisProc(tmp / "master").start()
    replica = RedisProc(tmp / "replica", extra_args=("--replicaof", "127.0.0.1", str(master.port))).start()
    try:
        while replica.admin().info("replication").get("master_link_status") != "up":
            time.sleep(0.1)
        for mr in (0, 1):
            rates = [throughput(master.url, n, rooms, tmp, 10 + 10 * mr + run, min_replicas=mr) for run in range(3)]
            lat = ack_latency(master.url, 1000, tmp, f"{mr}", mr)
            p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            print(f"min_replicas={mr} (1 replica attached): {max(rates):,.0f} readings/s bulk "
                  f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}); write→stored one at a time "
                  f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {lat[-1]:.2f} ms")
    finally:
        replica.kill()
        master.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--replica", action="store_true", help="measure WAIT (redis.min_replicas) with a replica")
    args = ap.parse_args()
    if args.replica:
        with tempfile.TemporaryDirectory() as d:
            print("redis with AOF appendfsync always on master and replica, 127.0.0.1")
            wait_cost(args.readings, args.rooms, Path(d))
        return
    with tempfile.TemporaryDirectory() as d:
        proc = RedisProc(Path(d) / "redis").start()
        try:
            client = redis.Redis.from_url(proc.url)
            version = client.info("server")["redis_version"]
            rates = [throughput(proc.url, args.readings, args.rooms, Path(d), run) for run in range(3)]
            oxi, mon = bytes_per_reading(client, 86_400)
        finally:
            proc.kill()
    print(f"redis {version}, AOF appendfsync always, {args.rooms} room streams")
    print(f"stream_write: {max(rates):,.0f} readings/s from one process (runs: {', '.join(f'{r:,.0f}' for r in rates)})")
    print(f"memory: {oxi:.1f} bytes/reading (oximeter hr+spo2+pi), {mon:.1f} bytes/reading (monitor hr+spo2+rr+temp), 1 Hz, 24 h stream")


if __name__ == "__main__":
    main()
