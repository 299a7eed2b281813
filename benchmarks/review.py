"""Benchmark: open the review of a 4-hour 1 Hz session, and export its PDF (warm).

Seeds a 4-hour session (1 Hz oximeter + NIBP every 5 min, ~14,450 readings) into Redis
under a throw-away clinic, archives it to a temporary SQLite file (timed), then times:
- review open: archive.load_session + review.summarize + the /review/<id> page layout,
  serialised to JSON as Dash sends it (median of 5 warm runs after one cold run);
- PDF export: export_bytes(rec, "pdf") including the chart rendered by kaleido/Chromium
  (the first, cold run starts Chromium; then the median of 5 warm runs).
Targets (issue 8): review ≤ 1 s, PDF ≤ 3 s warm.

    .venv/bin/python benchmarks/review.py [--redis redis://127.0.0.1:6379/0] [--hours 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
from plotly.io.json import to_json_plotly  # noqa: E402

from monitor.model.config import parse_config  # noqa: E402
from monitor.model.keys import Keys  # noqa: E402
from monitor.sessions import archive, export, review
from monitor.sessions import lifecycle as sessions  # noqa: E402
from tests.session_seed import seed_session  # noqa: E402


def timed(fn, runs: int = 5) -> tuple[float, float, object]:
    """(cold seconds, median warm seconds, last result)."""
    t = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t
    warm = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        warm.append(time.perf_counter() - t)
    return cold, statistics.median(warm), out


def main() -> int:
    """Run the benchmark and print the figures."""
    p = argparse.ArgumentParser()
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--hours", type=float, default=4.0)
    a = p.parse_args()
    clinic = "bench-" + uuid.uuid4().hex[:8]
    keys = Keys(clinic)
    client = redis.Redis.from_url(a.redis, decode_responses=True)
    tmp = Path(tempfile.mkdtemp(prefix="vw-bench-review-"))
    cfg = parse_config({
        "clinic": {"id": clinic}, "redis": {"url": a.redis}, "archive": {"url": f"sqlite:///{tmp / 'archive.db'}"},
        "rooms": [{"id": "room-1", "devices": [
            {"id": "oxi-1", "protocol": "masimo-ascii", "transport": "serial", "port": "/dev/null"},
            {"id": "nibp-1", "protocol": "json", "transport": "mqtt", "topic": "vw/room-1/nibp-1"}]}]})
    try:
        t = time.perf_counter()
        sd = seed_session(client, keys, cfg, duration_min=a.hours * 60)
        seed_s = time.perf_counter() - t
        t = time.perf_counter()
        res = sessions.end_session(client, keys, cfg, sd.sid, "bench", now_ms=sd.end_ms)
        archive_s = time.perf_counter() - t
        arch = archive.open_archive(cfg.archive.url)

        from dashboard.pages.review import session_page

        def open_review() -> int:
            rec = archive.load_session(arch, sd.sid)
            page = session_page(rec, review.summarize(rec), cfg.clinic.timezone, "bench")
            return len(to_json_plotly(page))  # what Dash does with a layout

        rv_cold, rv_warm, size = timed(open_review)
        rec = archive.load_session(arch, sd.sid)
        pdf_cold, pdf_warm, pdf = timed(lambda: export.export_bytes(rec, "pdf", cfg.clinic.timezone))
        csv_cold, csv_warm, _ = timed(lambda: export.export_bytes(rec, "csv", cfg.clinic.timezone), runs=3)
        print(f"session: {a.hours:g} h, {res['readings']} readings archived ({len(sd.readings)} seeded)")
        print(f"seed into Redis:        {seed_s:6.2f} s")
        print(f"archive (session end):  {archive_s:6.2f} s")
        print(f"open review (page):     cold {rv_cold:5.2f} s, warm median {rv_warm:5.2f} s "
              f"(payload {size / 1e6:.2f} MB)   target ≤ 1 s")
        print(f"export PDF:             cold {pdf_cold:5.2f} s, warm median {pdf_warm:5.2f} s "
              f"({len(pdf) / 1e3:.0f} kB)   target ≤ 3 s")  # type: ignore[arg-type]
        print(f"export CSV:             cold {csv_cold:5.2f} s, warm median {csv_warm:5.2f} s")
        return 0
    finally:
        for k in client.scan_iter(match=keys.prefix.replace("{", "\\{").replace("}", "\\}") + "*", count=1000):
            client.delete(k)
        archive.close_archive(cfg.archive.url)


if __name__ == "__main__":
    sys.exit(main())
