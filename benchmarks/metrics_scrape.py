"""Benchmark: what one Prometheus scrape of `vitalwatch ingest` costs, by device count.

Builds the ingest's registry (monitor/observe/collectors.py) over a real StreamWriter on its
own redis-server and N fake device rows, and times `generate_latest` (what each GET
/metrics does). Prints the mean time per scrape and the size of the answer. Usage:
    .venv/bin/python benchmarks/metrics_scrape.py [--devices 20 100 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import generate_latest  # noqa: E402

from monitor.model.keys import Keys  # noqa: E402
from monitor.observe.collectors import IngestCollector, rejected, role_registry  # noqa: E402
from monitor.store.streams import StreamWriter  # noqa: E402
from tests.servers import RedisProc  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, nargs="+", default=[20, 100, 1000])
    ap.add_argument("--scrapes", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        redis_proc = RedisProc(tmp / "redis").start()
        try:
            writer = StreamWriter(redis_proc.url, Keys("bench-scrape"), retention_ms=3600_000,
                                  spool_path=tmp / "spool.jsonl")
            for reason in ("bad_checksum", "out_of_range", "invalid_json"):
                rejected(reason)
            for n in args.devices:
                rows = [(f"room-{i // 2}", f"dev-{i}", "mqtt", "online") for i in range(n)]
                reg = role_registry(IngestCollector(writer, lambda rows=rows: rows, mqtt=lambda: (True, 0)))
                body = generate_latest(reg)
                t0 = time.perf_counter()
                for _ in range(args.scrapes):
                    generate_latest(reg)
                per = (time.perf_counter() - t0) / args.scrapes
                print(f"ingest scrape, {n:>5} devices: {per * 1000:.2f} ms per scrape, {len(body) / 1024:.0f} KiB")
            writer.close()
        finally:
            redis_proc.stop()


if __name__ == "__main__":
    main()
