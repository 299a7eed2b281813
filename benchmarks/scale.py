"""Cost per room as the room count grows: every role at N rooms × 1 Hz, history prefilled.

For each N (default 20, 100, 300, 1,000), on its own redis-server (AOF, fsync always, as
tests/servers.py) and mosquitto, never the shared ones:

1. Redis memory: `--history-h` hours of 1 Hz history per room prefilled (what the writer
   stores: HR, SpO2, RR every second, a BP every 5 min); used_memory growth and MEMORY USAGE
   of a room's stream ÷ its entries → bytes per reading, per room-hour, and per room at the
   configured retention (`--retention-h`, default 168 h).
2. Ingest: one `vitalwatch ingest` with N MQTT `json` devices, a publisher at 1 Hz per device
   (QoS 1) for `--feed-s`: ingest CPU (% of one core) and the AOF growth → AOF bytes per
   room-hour (readings, device status, heartbeats: everything ingest writes).
3. Alerts: benchmarks/alert_latency.py's latency run with 1, 2 and 4 `vitalwatch alerts`
   workers: raise latency p50/p99 and the workers' CPU.
4. Dashboard: benchmarks/overview_scale.py's run with 1 and 10 headless Chromium browsers on
   the overview: all tiles visible (ms), dashboard server CPU, CPU and WebSocket bytes/s
   per browser.

Prints a table ("–" not measured, "n/f" did not finish) and the first figure that passes
its limit, at which N. The machine is
shared: note its load (printed) next to any figure taken from here.

    .venv/bin/python benchmarks/scale.py                # full: 20, 100, 300, 1000 rooms
    .venv/bin/python benchmarks/scale.py --quick        # 20 and 100 rooms, short runs
    .venv/bin/python benchmarks/scale.py --rooms 300 --skip dashboard --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from benchmarks import alert_latency, overview_scale  # noqa: E402
from benchmarks.mqtt_ingest import Pub  # noqa: E402
from benchmarks.screen_latency import cpu_report, cpu_snapshot, spawn, stop, write_config  # noqa: E402
from monitor.model.clock import now_ms  # noqa: E402
from monitor.model.keys import Keys  # noqa: E402
from tests.servers import MosquittoProc, RedisProc  # noqa: E402

# what "degraded" means for each figure (the first one past its limit is reported)
LIMITS: dict[str, tuple[float, str]] = {
    "alerts_p99_ms_1w": (100, "alert raise p99 (1 worker) > 100 ms"),
    "alerts_p99_ms_2w": (100, "alert raise p99 (2 workers) > 100 ms"),
    "tiles_ms_1b": (3000, "overview: all tiles visible > 3 s (1 browser)"),
    "tiles_ms_10b": (3000, "overview: all tiles visible > 3 s (10 browsers open)"),
    "browser_cpu_1b": (15, "browser CPU > 15 % of a core"),
    "dashboard_cpu_10b": (80, "dashboard server CPU > 80 % of a core (10 browsers)"),
    "ingest_cpu": (80, "ingest CPU > 80 % of a core"),
    "alerts_cpu_1w": (80, "alert worker CPU > 80 % of a core"),
    "redis_gb_at_retention": (4, "Redis memory for the vitals at the retention > 4 GB"),
}


def info(client: redis.Redis, section: str) -> dict[str, Any]:
    return dict(client.info(section))


def memory(n: int, history_h: float, retention_h: float, client: redis.Redis) -> dict[str, Any]:
    """Prefill history; bytes per reading from used_memory growth and from MEMORY USAGE."""
    keys = Keys(f"scale-mem{n}")
    rooms = [f"r{i:03d}" for i in range(1, n + 1)]
    before = info(client, "memory")["used_memory"]
    t = time.monotonic()
    entries = overview_scale.prefill(client, keys, rooms, history_h * 60, now_ms())
    prefill_s = time.monotonic() - t
    grown = info(client, "memory")["used_memory"] - before
    sample = keys.vitals(rooms[0])
    usage = client.memory_usage(sample, samples=0) or 0
    per_reading = grown / entries
    return {"entries": entries, "prefill_s": round(prefill_s, 1),
            "bytes_per_reading": round(per_reading, 1),
            "stream_bytes_per_reading": round(usage / max(1, client.xlen(sample)), 1),
            "mb_per_room_hour": round(per_reading * 3600 / 1e6, 3),
            "redis_gb_at_retention": round(per_reading * 3600 * retention_h * n / 1e9, 2)}


def ingest(n: int, feed_s: float, rp: RedisProc, mq: MosquittoProc, workdir: Path) -> dict[str, Any]:
    """One ingest process, N devices at 1 Hz: its CPU and the AOF bytes it causes."""
    clinic = f"scale-ing{n}"
    rooms = [f"r{i:03d}" for i in range(1, n + 1)]
    cfg = workdir / "ingest.toml"
    write_config(cfg, clinic, rp.url, mq.url, rooms, workdir / "data-ingest")
    client = redis.Redis.from_url(rp.url, decode_responses=True)
    keys = Keys(clinic)
    proc = spawn(["ingest", "-c", str(cfg)], workdir / "ingest.log")
    pub = Pub(mq.url)
    try:
        deadline = time.monotonic() + 60
        while not any(f.startswith("ingest:") for f in client.hgetall(keys.heartbeats)):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"ingest did not start (see {workdir / 'ingest.log'})")
            time.sleep(0.2)
        time.sleep(2)  # subscriptions
        sent = 0

        def second(i: int) -> None:
            nonlocal sent
            start = time.monotonic()
            for ix, r in enumerate(rooms):  # devices staggered across the second
                delay = start + ix / n - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pub.c.publish(f"bench/{r}/mon", json.dumps({"ts": now_ms(), "hr": 60 + (i + ix) % 30,
                                                            "spo2": 97, "rr": 14}), qos=1)
                sent += 1

        for i in range(3):  # warm up
            second(i)
        admin = rp.admin()
        admin.config_set("auto-aof-rewrite-percentage", 0)  # a rewrite in the window would shrink the AOF
        aof0 = info(client, "persistence").get("aof_current_size", 0)
        snap0 = cpu_snapshot({"ingest": proc.pid})
        t0 = time.monotonic()
        for i in range(3, 3 + int(feed_s)):
            second(i)
        snap1 = cpu_snapshot({"ingest": proc.pid})
        secs = time.monotonic() - t0
        aof1 = info(client, "persistence").get("aof_current_size", 0)
        admin.config_set("auto-aof-rewrite-percentage", 100)
        pub.wait(sent)
        cpu = cpu_report(snap0, snap1)["ingest"]
        stored = sum(client.xlen(keys.vitals(r)) for r in rooms)
        return {"ingest_cpu": cpu, "ingest_cpu_per_room": round(cpu / n, 3), "published": sent, "stored": stored,
                "aof_bytes_per_room_hour": round((aof1 - aof0) / n / secs * 3600)}
    finally:
        pub.close()
        stop(proc)


def alerts(n: int, workers: list[int], duration_s: float, rp: RedisProc, mq: MosquittoProc,
           workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for w in workers:
        cpu: dict[str, float] = {}
        lat = sorted(alert_latency.latency(n, duration_s, rp.url, mq.url, workdir, w, cpu, clinic=f"scale-al{n}w{w}"))
        if lat:
            out[f"alerts_p50_ms_{w}w"] = round(statistics.median(lat), 1)
            out[f"alerts_p99_ms_{w}w"] = round(lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))], 1)
        out[f"alerts_cpu_{w}w"] = round(cpu.get("alerts", 0.0), 1)
    return out


def dashboard(n: int, browsers: list[int], history_h: float, cpu_s: float, rp: RedisProc,
              workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for b in browsers:
        d = workdir / f"dash-{b}"
        d.mkdir()
        try:
            r = overview_scale.run_once(n, history_h * 60, cpu_s, rp, d, browsers=b)
        except Exception as e:  # noqa: BLE001 - a run that cannot finish is a result too
            print(f"  dashboard with {b} browser(s) at {n} rooms did not finish: {e!r}"[:300], flush=True)
            out[f"tiles_ms_{b}b"] = None
            continue
        cpu = r["cpu_pct_of_one_core"]
        out[f"tiles_ms_{b}b"] = r["tiles_warm_ms"]
        out[f"dashboard_cpu_{b}b"] = cpu["dashboard"]
        out[f"browser_cpu_{b}b"] = round(cpu["all_browsers"] / b, 1)
        out[f"ws_bytes_per_s_{b}b"] = r["ws_bytes_per_s_per_browser"]
        out[f"dashboard_cpu_per_browser_{b}b"] = round(cpu["dashboard"] / b, 1)
        if r.get("feed_errors"):
            out[f"feed_errors_{b}b"] = r["feed_errors"]  # seconds the feeder lost: the figures are suspect
    return out


COLUMNS = [
    ("ingest CPU %", "ingest_cpu"), ("alerts p99 ms 1w", "alerts_p99_ms_1w"), ("2w", "alerts_p99_ms_2w"),
    ("4w", "alerts_p99_ms_4w"), ("alerts CPU % 1w", "alerts_cpu_1w"), ("tiles ms 1b", "tiles_ms_1b"),
    ("tiles ms 10b", "tiles_ms_10b"), ("dash CPU % 1b", "dashboard_cpu_1b"), ("dash CPU % 10b", "dashboard_cpu_10b"),
    ("browser CPU %", "browser_cpu_1b"), ("WS B/s/browser", "ws_bytes_per_s_1b"),
    ("Redis B/reading", "bytes_per_reading"), ("MB/room-h", "mb_per_room_hour"),
    ("GB at retention", "redis_gb_at_retention"), ("AOF B/room-h", "aof_bytes_per_room_hour"),
]


def table(results: list[dict[str, Any]]) -> str:
    head = "| rooms | " + " | ".join(c for c, _k in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for r in results:
        cells = ["–" if k not in r else "n/f" if r[k] is None else str(r[k]) for _c, k in COLUMNS]
        lines.append(f"| {r['rooms']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def first_degradation(results: list[dict[str, Any]]) -> str:
    for r in results:  # in order of N
        over = [text for key, (limit, text) in LIMITS.items()
                if key in r and (r[key] is None or r[key] > limit)]
        if over:
            return f"first to degrade: at {r['rooms']} rooms — " + "; ".join(over)
    return "nothing passed its limit at the room counts measured"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", type=int, nargs="*")
    ap.add_argument("--quick", action="store_true", help="20 and 100 rooms, short runs, 1-2 workers, 1-2 browsers")
    ap.add_argument("--history-h", type=float)
    ap.add_argument("--retention-h", type=float, default=168)
    ap.add_argument("--skip", nargs="*", default=[], choices=["memory", "ingest", "alerts", "dashboard"])
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    rooms = args.rooms or ([20, 100] if args.quick else [20, 100, 300, 1000])
    history_h = args.history_h if args.history_h is not None else (0.25 if args.quick else 1.0)
    feed_s, alert_s, cpu_s = (10, 15, 10) if args.quick else (30, 40, 20)
    workers = [1, 2] if args.quick else [1, 2, 4]
    browsers = [1, 2] if args.quick else [1, 10]
    base = Path(tempfile.mkdtemp(prefix="vw-scale-"))
    mq = MosquittoProc(base / "mqtt").start()
    results: list[dict[str, Any]] = []
    print(f"machine: {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.1f} (shared machine)",
          flush=True)
    try:
        for n in rooms:
            work = base / f"n{n}"
            work.mkdir()
            rp = RedisProc(work / "redis").start()
            client = redis.Redis.from_url(rp.url, decode_responses=True)
            res: dict[str, Any] = {"rooms": n, "load_avg_start": round(os.getloadavg()[0], 1)}
            try:
                def add(name: str, got: dict[str, Any], res: dict[str, Any] = res) -> None:
                    res.update(got)
                    print(f"  {res['rooms']} rooms, {name}: {json.dumps(got)}", flush=True)

                if "memory" not in args.skip:
                    add("memory", memory(n, history_h, args.retention_h, client))
                if "ingest" not in args.skip:
                    add("ingest", ingest(n, feed_s, rp, mq, work))
                if "alerts" not in args.skip:
                    add("alerts", alerts(n, workers, alert_s, rp, mq, work))
                if "dashboard" not in args.skip:
                    add("dashboard", dashboard(n, browsers, history_h, cpu_s, rp, work))
            finally:
                res["load_avg_end"] = round(os.getloadavg()[0], 1)
                client.close()
                rp.kill()
            results.append(res)
            print(json.dumps(res), flush=True)
    finally:
        mq.stop()
        if not os.environ.get("VW_BENCH_KEEP"):
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n{len(rooms)} room counts × 1 Hz, {history_h:g} h of history per room, retention {args.retention_h:g} h")
    print(table(results))
    print(first_degradation(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
