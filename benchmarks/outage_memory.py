"""Benchmark: memory of one `vitalwatch ingest` through a long Redis outage under MQTT load.

100 MQTT devices (10 rooms) publish SenML packs of 10 readings at QoS 1 while Redis is
down for `--outage-s` seconds; the broker is restarted half-way (a reconnect: the
redeliveries must not double what is held). Sampled once a second: the ingest's RSS, its
spool size. Then Redis comes back: time to drain, and every reading counted once.

Runs its own mosquitto and redis-server on free ports. Usage:
    .venv/bin/python benchmarks/outage_memory.py [--outage-s 60] [--rate 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.mqtt_ingest import ROOMS, Pub, start_ingest, stop_ingest, topics, wait_session, write_config  # noqa: E402
from monitor.model.clock import now_ms  # noqa: E402
from monitor.model.keys import Keys  # noqa: E402
from tests.servers import MosquittoProc, RedisProc  # noqa: E402

PER_MSG = 10


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def spool_mb(data: Path) -> float:
    return sum(p.stat().st_size for p in (data / "spool").glob("*.jsonl")) / 1e6 if (data / "spool").exists() else 0.0


class Load(threading.Thread):
    """`rate` SenML packs a second, round-robin over the devices, each ts distinct."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.pub, self.period = Pub(url), 1.0 / rate
        self.sent = 0
        self.halt = threading.Event()
        self.t0 = now_ms() - 3_600_000

    def run(self) -> None:
        tops = topics()
        start = time.monotonic()
        while not self.halt.is_set():
            i = self.sent
            t = self.t0 + (i // len(tops)) * PER_MSG * 10
            pack = [{"bt": t / 1000, "n": "hr", "u": "beat/min", "v": 60 + i % 30, "t": 0.0}]
            pack += [{"n": "hr", "u": "beat/min", "v": 61, "t": k / 100} for k in range(1, PER_MSG)]
            self.pub.c.publish(tops[i % len(tops)], json.dumps(pack), qos=1)
            self.sent += 1
            time.sleep(max(0.0, start + self.sent * self.period - time.monotonic()))

    def finish(self) -> int:
        self.halt.set()
        self.join()
        self.pub.wait(self.sent)
        self.pub.close()
        return self.sent


def main() -> None:
    """Run the outage and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outage-s", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=200.0, help="SenML packs (10 readings) per second")
    args = ap.parse_args()
    keys = Keys("bench")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rproc, mq = RedisProc(tmp / "redis").start(), MosquittoProc(tmp / "mqtt").start()
        r = redis.Redis.from_url(rproc.url, decode_responses=True)
        data, cfg = tmp / "data", tmp / "vw.toml"
        write_config(cfg, rproc.url, mq.url, data, "senml")
        p = start_ingest(cfg, tmp / "ingest.log")
        try:
            wait_session(r, keys)
            load = Load(mq.url, args.rate)
            load.start()
            time.sleep(10)
            before = rss_mb(p.pid)
            rproc.kill()
            t_out = time.monotonic()
            peak, spool_peak, restarted = before, 0.0, False
            while time.monotonic() - t_out < args.outage_s:
                time.sleep(1.0)
                peak = max(peak, rss_mb(p.pid))
                spool_peak = max(spool_peak, spool_mb(data))
                if not restarted and time.monotonic() - t_out > args.outage_s / 2:
                    mq.restart()
                    restarted = True
            during = load.sent
            rproc.start()
            t_back = time.monotonic()
            sent = load.finish()
            want = sent * PER_MSG

            def stored() -> int:
                pipe = r.pipeline(transaction=False)
                for i in range(ROOMS):
                    pipe.xlen(keys.vitals(f"room-{i}"))
                return sum(pipe.execute())

            while stored() < want and time.monotonic() - t_back < 600:
                time.sleep(0.2)
            drain_s = time.monotonic() - t_back
            got = stored()
            ids = set()
            for i in range(ROOMS):
                for _id, f in r.xrange(keys.vitals(f"room-{i}")):
                    ids.add((f["dev"], f["ts"]))
            after = rss_mb(p.pid)
        finally:
            stop_ingest(p)
            rproc.kill()
            mq.kill()
    print(f"outage_memory: {args.outage_s:g} s Redis outage (broker restarted half-way), "
          f"{args.rate:g} SenML packs/s × {PER_MSG} readings, 100 devices")
    print(f"  ingest RSS: {before:.1f} MB before, peak {peak:.1f} MB during, {after:.1f} MB after; "
          f"spool peak {spool_peak:.1f} MB")
    print(f"  published {sent} packs ({during} by the end of the outage); stored {got} readings for {want} "
          f"({len(ids)} distinct (dev, ts)); drained {drain_s:.1f} s after Redis came back")


if __name__ == "__main__":
    main()
