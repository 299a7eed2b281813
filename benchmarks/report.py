"""Benchmark: the clinic quality report over 5,000 archived sessions, and a patient's course
of 50 sessions.

Seeds N sessions (default 5,000) through the real pipeline — readings and alert events into
Redis, session events with the lifecycle functions, `session end` → archive + stored
summary — spread over a year, two rooms, ~600 patients plus one patient with 50 sessions
(an induction + maintenance series). Each session: an oximeter every `--oxi-every-s`
seconds and an NIBP every 5 min for 2 h 10 min, a BP response, some alarms. After each
session the room's stream is deleted (the archive holds it), so Redis stays small. Then
times, warm (median of 5 after one cold run):

- report: report.build over every session (stored summaries + REMS form states +
  aggregation) and its CSV — target ≤ 2 s; the PDF; the `/report` page body serialised as
  Dash sends it;
- the review list's "REMS forms due / overdue" (every unsubmitted form: here all of them);
- patient course: summaries.for_patient + the page serialised — target ≤ 1 s.

    .venv/bin/python benchmarks/report.py [--sessions 5000] [--postgres] [--redis URL]

`--postgres` runs against a private PostgreSQL cluster the benchmark starts (initdb on a free
port, as the tests do) instead of a SQLite file.
"""

from __future__ import annotations

import argparse
import random
import shutil
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
from monitor.sessions import archive, rems_store, report, report_pdf, summaries  # noqa: E402
from tests.course_seed import Alarm, Plan, seed  # noqa: E402

DAY = 86_400_000


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


def plans(n: int, now_ms: int, oxi_every_s: int, rng: random.Random) -> list[Plan]:
    """n sessions over the last year, oldest first; patient MRN-SERIES has 50 of them."""
    series_every = max(1, n // 50)
    out = []
    start = now_ms - 365 * DAY
    step = (365 * DAY - DAY) // n
    for i in range(n):
        t0 = start + i * step
        room = "room-1" if i % 2 == 0 else "room-2"
        patient = "MRN-SERIES" if i % series_every == 0 and i // series_every < 50 else f"MRN-{rng.randrange(600):04d}"
        dose = rng.choice((56, 84)) if patient != "MRN-SERIES" else (56 if i // series_every < 8 else 84)
        iv = rng.random() < 0.15
        alarms = []
        if rng.random() < 0.4:
            alarms.append(Alarm(rng.uniform(20, 60), "spo2", rng.choice(("high", "medium")),
                                ack_after_s=rng.choice((None, rng.uniform(5, 180))), clear_after_s=rng.uniform(5, 300)))
        if rng.random() < 0.2:
            alarms.append(Alarm(rng.uniform(60, 100), kind="technical", cond=rng.choice(("offline", "sensor_off")),
                                dev=rng.choice((f"nibp-{room[-1]}", f"oxi-{room[-1]}")), priority="medium",
                                clear_after_s=rng.uniform(10, 200)))
        obs = [(rng.uniform(5, 40), o) for o in ("dissociation", "sedation", "nausea") if rng.random() < 0.3]
        out.append(Plan(patient, room, t0, dose_mg=35 if iv else dose, route="iv" if iv else "intranasal",
                        rise_sbp=rng.randint(5, 60), rise_dbp=rng.randint(2, 32), oxi_every_s=oxi_every_s,
                        observations=obs, alarms=alarms, ready_at_min=rng.choice((None, rng.uniform(60, 120)))))
    return out


def main() -> int:
    """Seed, then time the report and the patient course; print the figures."""
    p = argparse.ArgumentParser()
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--sessions", type=int, default=5000)
    p.add_argument("--oxi-every-s", type=int, default=15)
    p.add_argument("--postgres", action="store_true")
    a = p.parse_args()
    clinic = "bench-" + uuid.uuid4().hex[:8]
    keys = Keys(clinic)
    client = redis.Redis.from_url(a.redis, decode_responses=True)
    tmp = Path(tempfile.mkdtemp(prefix="vw-bench-report-"))
    pg = None
    if a.postgres:
        import psycopg

        from tests.servers import PostgresProc

        pg = PostgresProc(Path(tempfile.mkdtemp(prefix="vw-bench-pg-"))).start()
        with psycopg.connect(pg.admin_url, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "bench"')
        url = pg.url("bench")
    else:
        url = f"sqlite:///{tmp / 'archive.db'}"
    rooms = [{"id": f"room-{n}", "devices": [
        {"id": f"oxi-{n}", "protocol": "masimo-ascii", "transport": "serial", "port": "/dev/null"},
        {"id": f"nibp-{n}", "protocol": "json", "transport": "mqtt", "topic": f"vw/room-{n}/nibp-{n}"}]}
        for n in (1, 2)]
    cfg = parse_config({"clinic": {"id": clinic, "timezone": "America/Denver"}, "redis": {"url": a.redis},
                        "data": {"dir": str(tmp)}, "archive": {"url": url}, "rooms": rooms})
    now = time.time_ns() // 1_000_000
    try:
        t = time.perf_counter()
        n_readings = 0
        for i, plan in enumerate(plans(a.sessions, now, a.oxi_every_s, random.Random(17))):
            sd = seed(client, keys, cfg, plan)
            n_readings += len(sd.readings)
            client.delete(keys.vitals(plan.room), keys.alerts)  # archived: keep the shared Redis small
            if (i + 1) % 500 == 0:
                print(f"  seeded {i + 1} sessions ({time.perf_counter() - t:.0f} s)", flush=True)
        seed_s = time.perf_counter() - t
        arch = archive.open_archive(url)
        t = time.perf_counter()
        for sid in [s["session"] for s in summaries.in_range(arch, clinic)][:100]:
            summaries.refresh(arch, sid)
        refresh_ms = (time.perf_counter() - t) * 1000 / 100

        from dashboard.pages.patient import course_page
        from dashboard.pages.report import body

        def run_report() -> tuple[int, int]:
            rep = report.build(arch, cfg, now - 366 * DAY, now, None, now)
            return len(rep.rows), len(rep.csv())

        rp_cold, rp_warm, (n_rows, csv_len) = timed(run_report)  # type: ignore[misc]
        rep = report.build(arch, cfg, now - 366 * DAY, now, None, now)
        pdf_cold, pdf_warm, pdf = timed(lambda: report_pdf.pdf_bytes(rep), runs=3)
        page_cold, page_warm, page_len = timed(lambda: len(to_json_plotly(body(rep))), runs=3)
        due_cold, due_warm, (_, due_total) = timed(lambda: rems_store.forms_due(arch, cfg, now, limit=100))  # type: ignore[misc]

        def run_course() -> int:
            rows = summaries.for_patient(arch, clinic, "MRN-SERIES")
            return len(to_json_plotly(course_page("MRN-SERIES", rows, cfg.clinic.timezone))), len(rows)

        cs_cold, cs_warm, (cs_len, cs_n) = timed(run_course)  # type: ignore[misc]
        backend = "PostgreSQL (private cluster)" if pg else "SQLite"
        print(f"archive: {backend}; {a.sessions} sessions, {n_readings} readings seeded in {seed_s:.0f} s "
              f"(through Redis, session end, archive and summary)")
        print(f"summary at archive time (load + compute + store), per session: {refresh_ms:.0f} ms")
        print(f"report over {n_rows} sessions (summaries + REMS states + totals + CSV {csv_len / 1e6:.1f} MB): "
              f"cold {rp_cold:.2f} s, warm median {rp_warm:.2f} s   target ≤ 2 s")
        print(f"report PDF ({len(pdf) / 1e3:.0f} kB): cold {pdf_cold:.2f} s, warm {pdf_warm:.2f} s")  # type: ignore[arg-type]
        print(f"/report page body serialised ({page_len / 1e6:.2f} MB): warm {page_warm:.2f} s "  # type: ignore[operator]
              f"(+ report {rp_warm:.2f} s)")
        print(f"REMS forms due / overdue ({due_total} unsubmitted): cold {due_cold:.2f} s, warm {due_warm:.2f} s")
        print(f"patient course, {cs_n} sessions (summaries + page serialised, {cs_len / 1e6:.2f} MB): "
              f"cold {cs_cold:.2f} s, warm median {cs_warm:.2f} s   target ≤ 1 s")
        return 0
    finally:
        for k in client.scan_iter(match=keys.prefix.replace("{", "\\{").replace("}", "\\}") + "*", count=1000):
            client.delete(k)
        archive.close_archive(url)
        if pg is not None:
            pg.stop()
            shutil.rmtree(pg.dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
