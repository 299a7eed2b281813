"""Overview at scale: time until every tile shows its values, and browser CPU after that.

For N rooms (default 20, 100, 300) fed at 1 Hz (HR, SpO2, RR every second; a BP every 5 min;
temperature never, the worst case for a history scan), with `--history-min` minutes of history
prefilled in every room's stream, each component a separate process as in production
(redis-server with AOF, `vitalwatch alerts`, `vitalwatch dashboard`) and a headless Chromium
signed in as a nurse:

- `tiles`: from the navigation to the overview until all N tiles are in the page with their
  HR values (a requestAnimationFrame poll installed before the page loads, so it is the
  browser's own clock from navigation start). Three loads: the first right after the
  dashboard started (`cold`, its push hub fills its cache meanwhile), two more (`warm`).
- `browser CPU`: the whole Chromium process tree over `--cpu-s` seconds with the overview open
  and the feed running, in % of one core (from /proc, as benchmarks/screen_latency.py).
- `hold`: for 10 s after that, each HR's time from its socket message reaching the page to its
  tile's text (0 when written in the message's own task): what the overview's frame budget
  holds readings (dashboard/assets/live.js `VW.frameBudget`; `--frames-per-s` to vary it).

    .venv/bin/python benchmarks/overview_scale.py                       # 20, 100, 300 rooms, 60 min history
    .venv/bin/python benchmarks/overview_scale.py --rooms 100 --history-min 240 --json out.json
    .venv/bin/python benchmarks/overview_scale.py --rooms 100 --history-min 10 --spread   # independent monitors
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from benchmarks.screen_latency import cpu_report, cpu_snapshot, spawn, stop, write_config  # noqa: E402
from monitor.accounts import users  # noqa: E402
from monitor.model.clock import now_ms  # noqa: E402
from monitor.model.keys import Keys  # noqa: E402
from monitor.store import heartbeat  # noqa: E402
from monitor.store.embedded import free_port  # noqa: E402
from monitor.store.status import publish_status  # noqa: E402
from tests.dashboard_support import chromium, login  # noqa: E402
from tests.dashboard_support import wait_page as wait_for  # noqa: E402
from tests.servers import RedisProc, wait_port  # noqa: E402

BP_EVERY_S = 300
# Installed before each page load: the first animation frame at which all N tiles show an HR.
ALL_TILES_JS = """
(function () {
  var want = %d;
  function poll() {
    var vals = document.querySelectorAll('.vw-tile [data-vw-part=value][data-vw-metric=hr]');
    if (vals.length === want) {
      var ok = true;
      for (var i = 0; i < vals.length; i++) { if (vals[i].textContent === '--') { ok = false; break; } }
      if (ok) { window.__vwAllTilesMs = performance.now(); return; }
    }
    requestAnimationFrame(poll);
  }
  requestAnimationFrame(poll);
})();
"""


# Installed before each page load: counts the bytes the page's WebSockets receive.
WS_BYTES_JS = """
(function () {
  var Orig = window.WebSocket;
  window.__vwWsBytes = 0;
  function Counted(url, protocols) {
    var ws = protocols === undefined ? new Orig(url) : new Orig(url, protocols);
    ws.addEventListener('message', function (e) {
      window.__vwWsBytes += typeof e.data === 'string' ? e.data.length : (e.data.byteLength || e.data.size || 0);
    });
    return ws;
  }
  Counted.prototype = Orig.prototype;
  Counted.CONNECTING = Orig.CONNECTING; Counted.OPEN = Orig.OPEN;
  Counted.CLOSING = Orig.CLOSING; Counted.CLOSED = Orig.CLOSED;
  window.WebSocket = Counted;
})();
"""


def prefill(client: redis.Redis, keys: Keys, rooms: list[str], minutes: float, end_ms: int) -> int:
    """`minutes` of 1 Hz history per room, ids from the readings' times (as the writer's would be)."""
    n = 0
    rnd = random.Random(1)
    start = end_ms - int(minutes * 60_000)
    for room in rooms:
        pipe = client.pipeline(transaction=False)
        key = keys.vitals(room)
        for i, ts in enumerate(range(start, end_ms, 1000)):
            fields = {"ts": str(ts), "dev": f"mon-{room}", "hr": str(rnd.randint(60, 90)), "spo2": "97", "rr": "14"}
            if i % BP_EVERY_S == 0:
                fields.update(sbp=str(rnd.randint(110, 140)), dbp=str(rnd.randint(65, 90)), map="95")
            pipe.xadd(key, fields, id=f"{ts}-0")  # type: ignore[arg-type]
            n += 1
            if n % 5000 == 0:
                pipe.execute()
        pipe.execute()
    return n


# Installed after the CPU window: for each HR written to a tile, the ms since its reading's socket
# message reached the page (a listener beside live.js's; a write in the message's own task, before
# this listener ran, counts as 0). What the frame budget holds a reading, timed in the page.
HOLD_JS = """
window.VWH = {late: [], msg: {}};
VW.ws.addEventListener('message', function (ev) {
  var d = JSON.parse(ev.data), l = Array.isArray(d) ? d : [d];
  for (var i = 0; i < l.length; i++) {
    if (l[i].t === 'v' && l[i].vals.hr !== undefined) { VWH.msg[l[i].room + ':' + l[i].vals.hr + ':' + l[i].ts] = performance.now(); }
  }
});
new MutationObserver(function (muts) {
  var t = performance.now();
  for (var i = 0; i < muts.length; i++) {
    var el = muts[i].target.nodeType === 3 ? muts[i].target.parentElement : muts[i].target;
    if (!el || el.getAttribute('data-vw-part') !== 'value' || el.getAttribute('data-vw-metric') !== 'hr') { continue; }
    var k = el.getAttribute('data-vw-room') + ':' + el.textContent + ':' + el.getAttribute('data-vw-ts'), at = VWH.msg[k];
    VWH.late.push(at === undefined ? 0 : t - at);
    delete VWH.msg[k];
  }
}).observe(document.querySelector('[data-vw-grid]'), {subtree: true, characterData: true, childList: true});
"""
HOLD_S = 10


def _perf(driver: Any) -> dict[str, float]:
    """Chromium's own counters for the page (seconds spent in script, style, layout, tasks)."""
    return {m["name"]: m["value"] for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}


def load_overview(driver: Any, url: str, n_rooms: int, timeout_s: float) -> float:
    """Navigate to the overview; ms from navigation start until all tiles show their HR."""
    script = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ALL_TILES_JS % n_rooms})
    try:
        driver.get(url + "/")
        return float(wait_for(lambda: driver.execute_script("return window.__vwAllTilesMs || null"), timeout_s,
                              f"all {n_rooms} tiles"))
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})


def open_browser(url: str, n_rooms: int, timeout_s: float) -> tuple[Any, float | None]:
    """A signed-in Chromium showing the overview, counting its WebSocket bytes; (driver, ms
    until all tiles showed, None if not within `timeout_s`)."""
    driver = chromium()
    driver.set_window_size(1920, 1080)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WS_BYTES_JS})
    login(driver, url, "bench", "bench-password", path="/account")
    try:
        return driver, load_overview(driver, url, n_rooms, timeout_s)
    except AssertionError:
        return driver, None


def run_once(n_rooms: int, history_min: float, cpu_s: float, rp: RedisProc, workdir: Path,
             spread: bool = False, browsers: int = 1, frames_per_s: float | None = None) -> dict[str, Any]:
    """One dashboard with the overview open in `browsers` headless Chromiums (the first one
    measured: tile times, CPU; the others opened first, each measured once); all browsers'
    CPU together and the WebSocket bytes each receives. `spread`: each room's reading at its
    own phase of the second (one socket message each), not all rooms in one write (one
    message for all)."""
    rooms = [f"r{i:03d}" for i in range(1, n_rooms + 1)]
    clinic = f"ovbench{n_rooms}x{os.getpid()}"
    keys = Keys(clinic)
    cfg_path = workdir / "vitalwatch.toml"
    write_config(cfg_path, clinic, rp.url, "mqtt://127.0.0.1:1", rooms, workdir / "data")
    client = redis.Redis.from_url(rp.url, decode_responses=True)
    users.create_user(client, keys, "bench", "nurse", "bench-password")
    result: dict[str, Any] = {"rooms": n_rooms, "history_min": history_min, "browsers": browsers}
    t = time.monotonic()
    result["prefilled_entries"] = prefill(client, keys, rooms, history_min, now_ms())
    result["prefill_s"] = round(time.monotonic() - t, 1)
    stop_feed = threading.Event()

    feed_errors: list[str] = []

    def feed_spread() -> None:  # each room at its own phase of the second, as independent monitors are
        rnd = random.Random(2)
        while not stop_feed.is_set():
            start = now_ms()
            for i, r in enumerate(rooms):
                stop_feed.wait(max(0.0, (start + 1000 * i / len(rooms) - now_ms()) / 1000))
                ts = now_ms()
                try:
                    pipe = client.pipeline(transaction=False)
                    pipe.xadd(keys.vitals(r), {"ts": str(ts), "dev": f"mon-{r}", "hr": str(rnd.randint(60, 90)),
                                               "spo2": "97", "rr": "14"})
                    publish_status(pipe, keys, f"mon-{r}", {"room": r, "protocol": "json", "transport": "mqtt",
                                                            "state": "online", "last_ts": ts, "updated_ms": ts})
                    pipe.execute()
                except redis.RedisError as e:  # a slow Redis: go on, say so
                    feed_errors.append(f"{type(e).__name__}: {e}")
            try:
                heartbeat.beat(client, keys, "ingest", "bench-feeder", now_ms())
            except redis.RedisError as e:
                feed_errors.append(f"{type(e).__name__}: {e}")
            stop_feed.wait(max(0.0, 1 - (now_ms() - start) / 1000))

    def feed() -> None:
        rnd = random.Random(2)
        while not stop_feed.is_set():
            ts = now_ms()
            try:
                pipe = client.pipeline(transaction=False)
                for r in rooms:  # what an ingest writes: the reading and its device's status
                    pipe.xadd(keys.vitals(r), {"ts": str(ts), "dev": f"mon-{r}", "hr": str(rnd.randint(60, 90)),
                                               "spo2": "97", "rr": "14"})
                    publish_status(pipe, keys, f"mon-{r}", {"room": r, "protocol": "json", "transport": "mqtt",
                                                            "state": "online", "last_ts": ts, "updated_ms": ts})
                pipe.execute()
                heartbeat.beat(client, keys, "ingest", "bench-feeder", ts)
            except redis.RedisError as e:  # a slow Redis (fsync, a loaded machine): go on, say so
                feed_errors.append(f"{type(e).__name__}: {e}")
            stop_feed.wait(max(0.0, 1 - (now_ms() - ts) / 1000))

    feeder = threading.Thread(target=feed_spread if spread else feed, daemon=True)
    feeder.start()
    port = free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    driver = None
    others: list[Any] = []
    try:
        procs["alerts"] = spawn(["alerts", "-c", str(cfg_path)], workdir / "alerts.log")
        t_dash = time.monotonic()
        procs["dashboard"] = spawn(["dashboard", "-c", str(cfg_path), "--port", str(port)], workdir / "dashboard.log")
        wait_port(port, 60)
        url = f"http://127.0.0.1:{port}"
        others_ms = []
        for _ in range(browsers - 1):
            d, ms = open_browser(url, n_rooms, 120)
            others.append(d)
            others_ms.append(ms)
        result["tiles_other_browsers_ms"] = [round(x) if x is not None else None for x in others_ms]
        driver = chromium()
        driver.set_window_size(1920, 1080)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WS_BYTES_JS})
        login(driver, url, "bench", "bench-password", path="/account")
        result["cold_from_dashboard_start_s"] = None
        loads = [load_overview(driver, url, n_rooms, 120)]
        result["cold_from_dashboard_start_s"] = round(time.monotonic() - t_dash, 1)
        for _ in range(2):
            loads.append(load_overview(driver, url, n_rooms, 60))
        result["tiles_ms"] = [round(x) for x in loads]
        result["tiles_cold_ms"] = round(loads[0])
        result["tiles_warm_ms"] = round(statistics.median(loads[1:]))
        if frames_per_s is not None:  # the overview's frame budget for this run (0: every reading at once)
            driver.execute_script("if (arguments[0] === 0) { VW.frameBudget.minRooms = 1e9; } "
                                  "else { VW.frameBudget.perSecond = arguments[0]; }", frames_per_s)
        time.sleep(3)  # settle: first sparklines, ages
        groups = {"chromium": driver.service.process.pid, "dashboard": procs["dashboard"].pid,
                  "alerts": procs["alerts"].pid, "redis": rp.proc.pid if rp.proc else 0}
        driver.execute_cdp_cmd("Performance.enable", {})
        perf0 = _perf(driver)
        groups.update({f"chromium{i}": d.service.process.pid for i, d in enumerate(others, 1)})
        ws_bytes = "return window.__vwWsBytes || 0"
        bytes0 = [d.execute_script(ws_bytes) for d in [driver, *others]]
        snap0 = cpu_snapshot(groups)
        frames0, slow0, held0 = driver.execute_script("return [VW.frames, VW.budgetFlushes, VW.heldFlushes]")
        time.sleep(cpu_s)
        snap1 = cpu_snapshot(groups)
        perf1 = _perf(driver)
        # the page's main thread, in % of the window: script, style, layout, all its tasks
        result["renderer_main_pct"] = {k: round(100 * (perf1[k] - perf0[k]) / cpu_s, 1)
                                       for k in ("ScriptDuration", "RecalcStyleDuration", "LayoutDuration", "TaskDuration")}
        bytes1 = [d.execute_script(ws_bytes) for d in [driver, *others]]
        result["ws_bytes_per_s_per_browser"] = round(sum(b - a for a, b in zip(bytes0, bytes1, strict=True))
                                                     / len(bytes0) / cpu_s)
        cpu = cpu_report(snap0, snap1)
        cpu["all_browsers"] = round(sum(v for g, v in cpu.items() if g.startswith("chromium")), 1)
        result["cpu_pct_of_one_core"] = cpu
        frames1, slow1, held1 = driver.execute_script("return [VW.frames, VW.budgetFlushes, VW.heldFlushes]")
        result["frames_per_s"] = round((frames1 - frames0) / cpu_s, 1)
        # frames that wrote readings under the frame budget (an overview of VW.frameBudget.minRooms
        # rooms or more), and of those, the ones that had waited for the budget
        result["batches_per_s"] = round((slow1 - slow0) / cpu_s, 1)
        result["held_batches_per_s"] = round((held1 - held0) / cpu_s, 1)
        driver.execute_script(HOLD_JS)
        time.sleep(HOLD_S)
        late = sorted(driver.execute_script("return VWH.late"))
        result["hr_writes_timed"] = len(late)
        if late:
            result["hold_ms"] = {"p50": round(statistics.median(late)), "p95": round(late[int(0.95 * (len(late) - 1))]),
                                 "max": round(late[-1])}
        result["dom_elements"] = driver.execute_script("return document.getElementsByTagName('*').length")
        result["ws_messages"] = driver.execute_script("return VW.received")
        result["feed_errors"] = len(feed_errors)
        driver.save_screenshot(str(workdir / f"overview-{n_rooms}.png"))
    finally:
        stop_feed.set()
        for d in [driver, *others]:
            if d is not None:
                d.quit()
        for p in procs.values():
            stop(p)
        for k in client.scan_iter(match=keys.prefix.replace("{", "\\{").replace("}", "\\}") + "*", count=1000):
            client.delete(k)
        client.close()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", type=int, nargs="*", default=[20, 100, 300])
    ap.add_argument("--history-min", type=float, default=60.0)
    ap.add_argument("--cpu-s", type=float, default=30.0)
    ap.add_argument("--spread", action="store_true",
                    help="feed each room at its own phase of the second (else all rooms at once)")
    ap.add_argument("--frames-per-s", type=float, help="the overview's frame budget for readings for the run "
                    "(0: every reading written at once), instead of dashboard/assets/live.js's VW.frameBudget")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="vw-overview-"))
    rp = RedisProc(base / "redis").start()
    results = []
    try:
        for n in args.rooms:
            workdir = base / f"n{n}"
            workdir.mkdir()
            res = run_once(n, args.history_min, args.cpu_s, rp, workdir, args.spread, frames_per_s=args.frames_per_s)
            results.append(res)
            cpu = res["cpu_pct_of_one_core"]
            print(f"{n} rooms x 1 Hz{' (spread over the second)' if args.spread else ''}, {args.history_min:g} min of history each ({res['prefilled_entries']} entries): "
                  f"all tiles visible cold {res['tiles_cold_ms'] / 1000:.2f} s, warm {res['tiles_warm_ms'] / 1000:.2f} s "
                  f"(loads {res['tiles_ms']} ms); browser CPU {cpu['chromium']:.1f} % of a core, dashboard "
                  f"{cpu['dashboard']:.1f} %, alerts {cpu['alerts']:.1f} %, redis {cpu['redis']:.1f} % over "
                  f"{args.cpu_s:g} s; {res['frames_per_s']} frame flushes/s, {res['batches_per_s']} budgeted reading writes/s ({res['held_batches_per_s']} held for the budget); socket message → tile, ms (over {HOLD_S} s after, {res.get('hr_writes_timed')} HR writes): {res.get('hold_ms')}; {res['dom_elements']} elements; page main thread "
                  f"(% of the window) {res['renderer_main_pct']}", flush=True)
    finally:
        rp.kill()
        if not os.environ.get("VW_BENCH_KEEP"):
            shutil.rmtree(base, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
