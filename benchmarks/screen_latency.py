"""Screen latency: XADD → value in the browser DOM, and MQTT publish → value in the DOM.

Measured like the Node-RED peer (shared/peers/node-red/measure.py): N rooms fed at 1 Hz,
then 20 markers (HR 141, 142, …) — room order (i*7) % N, the room held 1.2 s before its
marker, 5 s timeout, same p95 index — each timed from the XADD / publish until the page
text contains it (checked on every animation frame inside the page, as the peer's
`wait_for_function(polling="raf")` does). Also reported: the time until the live script wrote
the text node (a MutationObserver, no frame wait).

Everything runs as it would in production, each in its own process: redis-server,
mosquitto, `vitalwatch dashboard`, `vitalwatch alerts` (the alert engine reads the same
streams), `vitalwatch ingest` (MQTT path), headless Chromium signed in as a nurse. CPU is
read from /proc over the marker window, per process group, in % of one core.

    .venv/bin/python benchmarks/screen_latency.py                  # xadd and mqtt at 20 rooms, overview at 30
    .venv/bin/python benchmarks/screen_latency.py --path xadd --rooms 30 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt  # noqa: E402
import redis  # noqa: E402

from monitor.accounts import users  # noqa: E402
from monitor.model.clock import now_ms  # noqa: E402
from monitor.model.keys import Keys  # noqa: E402
from monitor.store import heartbeat
from monitor.store.embedded import free_port  # noqa: E402
from monitor.store.status import publish_status  # noqa: E402
from tests.dashboard_support import chromium, login, wait_page  # noqa: E402
from tests.servers import MosquittoProc, RedisProc, wait_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
VENV_BIN = Path(sys.executable).parent
WATCH_JS = """
window.VWB = {marker: arguments[0], room: arguments[1], seen: null, written: null, arrived: null};
var onMsg = function (ev) {
  if (VWB.arrived === null && ev.data.indexOf('"hr":' + VWB.marker) >= 0) { VWB.arrived = Date.now(); VW.ws.removeEventListener('message', onMsg); }
};
VW.ws.addEventListener('message', onMsg);
var el = document.querySelector('[data-vw-part=value][data-vw-room="' + arguments[1] + '"][data-vw-metric=hr]');
var mo = new MutationObserver(function () {
  if (VWB.written === null && el.textContent === VWB.marker) { VWB.written = Date.now(); mo.disconnect(); }
});
mo.observe(el, {characterData: true, childList: true, subtree: true});
(function poll() {
  if (document.body.innerText.indexOf(VWB.marker) >= 0) { VWB.seen = Date.now(); return; }
  requestAnimationFrame(poll);
})();
"""


# ---- CPU accounting from /proc (as the peer's measure.py) ------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = Path(f"/proc/{d}/stat").read_text()
                kids.setdefault(int(st[st.rfind(")") + 2:].split()[1]), []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def _tree(root: int) -> list[int]:
    kids, out, stack = _children(), [root], [root]
    while stack:
        for c in kids.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def _ticks(pid: int) -> int:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
        f = st[st.rfind(")") + 2:].split()
        return int(f[11]) + int(f[12])
    except (OSError, ValueError, IndexError):
        return 0


def cpu_snapshot(groups: dict[str, int]) -> tuple[dict[str, dict[int, int]], float]:
    return {g: {p: _ticks(p) for p in _tree(root)} for g, root in groups.items()}, time.time()


def cpu_report(a: tuple[dict[str, dict[int, int]], float], b: tuple[dict[str, dict[int, int]], float]) -> dict[str, float]:
    (s0, t0), (s1, t1) = a, b
    out = {}
    for g, procs in s1.items():
        ticks = sum(t - s0.get(g, {}).get(p, 0) for p, t in procs.items())
        out[g] = round(100.0 * ticks / TICK / (t1 - t0), 1)
    return out


def pct(sorted_vals: list[float], q: float) -> float:
    return sorted_vals[max(0, int(round(q * len(sorted_vals))) - 1)]


# ---- one run -------------------------------------------------------------------------------
def write_config(path: Path, clinic: str, redis_url: str, mqtt_url: str, rooms: list[str], data_dir: Path) -> None:
    lines = [f'[clinic]\nid = "{clinic}"\nname = "Bench"\n', f'[redis]\nurl = "{redis_url}"\n',
             f'[mqtt]\nurl = "{mqtt_url}"\nversion = "5"\n', f'[data]\ndir = "{data_dir}"\n',
             f'[archive]\nurl = "sqlite:///{data_dir}/archive.db"\n',
             '[logging]\nlevel = "warning"\n']
    for r in rooms:
        lines.append(f'[[rooms]]\nid = "{r}"\nname = "{r}"\n  [[rooms.devices]]\n  id = "mon-{r}"\n'
                     f'  protocol = "json"\n  transport = "mqtt"\n  topic = "bench/{r}/mon"\n')
    path.write_text("\n".join(lines))


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(VENV_BIN / "vitalwatch"), *args], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(p: subprocess.Popen[bytes] | None) -> None:
    if p is None or p.poll() is not None:
        return
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def marker_value(i: int) -> str:
    """The i-th marker HR: 141…290 over and over (inside the codec's 20–300 range, never a
    value the feed sends, and held too briefly to raise the HR alarm, whose delay is 6 s)."""
    return str(141 + i % 150)


def run_once(path: str, n_rooms: int, markers: int, warmup_s: float, timeout_s: float, workdir: Path,
             spread: bool = False) -> dict[str, Any]:
    """`path` "xadd" or "mqtt"; or "both": ingest runs and feeds every room over MQTT, and the
    markers alternate, XADD (even) and MQTT publish (odd), each path's figures apart. `spread`:
    each room's reading at its own moment of the second (as independent monitors send), not
    all rooms together once a second (as a gateway forwards them, and as the peer's feed does)."""
    rooms = [f"r{i:02d}" for i in range(1, n_rooms + 1)]
    clinic = f"bench{os.getpid()}"
    keys = Keys(clinic)
    rp = RedisProc(workdir / "redis").start()
    mq = MosquittoProc(workdir / "mqtt").start()
    cfg_path = workdir / "vitalwatch.toml"
    write_config(cfg_path, clinic, rp.url, mq.url, rooms, workdir / "data")
    client = redis.Redis.from_url(rp.url, decode_responses=True)
    users.create_user(client, keys, "bench", "nurse", "bench-password")
    port = free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    held: set[str] = set()
    stop_feed = threading.Event()
    result: dict[str, Any] = {"path": path, "rooms": n_rooms}
    driver = None
    pub = None
    try:
        procs["dashboard"] = spawn(["dashboard", "-c", str(cfg_path), "--port", str(port)], workdir / "dashboard.log")
        procs["alerts"] = spawn(["alerts", "-c", str(cfg_path)], workdir / "alerts.log")
        if path in ("mqtt", "both"):
            procs["ingest"] = spawn(["ingest", "-c", str(cfg_path)], workdir / "ingest.log")
        wait_port(port, 60)
        if path in ("mqtt", "both"):
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"vw-bench-{os.getpid()}")
            pub.connect("127.0.0.1", mq.port)
            pub.loop_start()

        def send(room: str, hr: int, ts: int, how: str = "xadd" if path == "xadd" else "mqtt") -> None:
            if how == "xadd":
                # what an ingest process writes: the reading, and its device's status
                pipe = client.pipeline(transaction=False)
                pipe.xadd(keys.vitals(room), {"ts": str(ts), "dev": f"mon-{room}", "hr": str(hr), "spo2": "98"})
                publish_status(pipe, keys, f"mon-{room}", {"room": room, "protocol": "json", "transport": "mqtt",
                                                           "state": "online", "last_ts": ts, "updated_ms": ts})
                pipe.execute()
            else:
                assert pub is not None
                pub.publish(f"bench/{room}/mon", json.dumps({"ts": ts, "hr": hr, "spo2": 98}), qos=1)

        def feed() -> None:
            rnd = random.Random(3)
            while not stop_feed.is_set():
                start = time.monotonic()
                for i, r in enumerate(rooms):
                    if spread:
                        stop_feed.wait(max(0.0, start + i / len(rooms) - time.monotonic()))
                    if r not in held:
                        send(r, rnd.randint(60, 90), now_ms())
                if path == "xadd":  # no ingest process in this path: say ingest is alive, as it would
                    heartbeat.beat(client, keys, "ingest", "bench-feeder", now_ms())
                stop_feed.wait(max(0.0, start + 1 - time.monotonic()) if spread else 1)

        threading.Thread(target=feed, daemon=True).start()
        driver = chromium()
        t_page = time.time()
        login(driver, f"http://127.0.0.1:{port}", "bench", "bench-password")
        wait_page(lambda: all(driver.execute_script(
            "var e=document.querySelector('[data-vw-part=value][data-vw-room=\"'+arguments[0]+'\"][data-vw-metric=hr]');"
            "return e && e.textContent !== '--'", r) for r in (rooms[0], rooms[-1])), 60, "rooms rendered")
        result["page_render_s"] = round(time.time() - t_page, 2)
        time.sleep(warmup_s)
        groups = {name: p.pid for name, p in procs.items()}
        groups.update(redis=rp.proc.pid if rp.proc else 0, chromium=driver.service.process.pid)
        snap0 = cpu_snapshot(groups)
        hows = ("xadd", "mqtt") if path == "both" else (path,)
        lat_seen: dict[str, list[float]] = {h: [] for h in hows}
        lat_written: dict[str, list[float]] = {h: [] for h in hows}
        lat_arrived: dict[str, list[float]] = {h: [] for h in hows}  # the socket message reached the page
        lat_stored: dict[str, list[float]] = {h: [] for h in hows}  # Redis's own time in the entry id
        missed = {h: 0 for h in hows}
        skipped = 0
        for i in range(markers):
            how = hows[i % len(hows)]
            room = rooms[(i * 7) % n_rooms]
            marker = marker_value(i)
            held.add(room)
            time.sleep(1.2)
            if driver.execute_script("return document.body.innerText.indexOf(arguments[0]) >= 0", marker):
                skipped += 1  # already on the page (as the peer does: not timed)
                held.discard(room)
                continue
            driver.execute_script(WATCH_JS, marker, room)
            t0 = now_ms()
            send(room, int(marker), t0, how)
            try:
                got = wait_page(lambda: driver.execute_script(
                    "return VWB.seen !== null ? [VWB.seen, VWB.written, VWB.arrived] : null"), timeout_s, f"marker {marker}")
                lat_seen[how].append(got[0] - t0)
                if got[1] is not None:
                    lat_written[how].append(got[1] - t0)
                if got[2] is not None:
                    lat_arrived[how].append(got[2] - t0)
                tip = client.xrevrange(keys.vitals(room), count=1)  # the marker: nothing else is sent to a held room
                if tip and tip[0][1].get("hr") == marker:
                    lat_stored[how].append(int(tip[0][0].split("-")[0]) - t0)
            except AssertionError:
                missed[how] += 1
            held.discard(room)
        snap1 = cpu_snapshot(groups)
        result["cpu_pct_of_one_core"] = cpu_report(snap0, snap1)
        result["cpu_window_s"] = round(snap1[1] - snap0[1], 1)
        result["ws_messages_received"] = driver.execute_script("return VW.received")
        result["active_alerts_on_screen"] = driver.execute_script(
            "return document.querySelectorAll('#ov-alerts [data-alert-id]').length")
        driver.save_screenshot(str(workdir / f"screen-{path}-{n_rooms}.png"))
        for how in hows:
            key = "" if path != "both" else f"{how}_"
            result.update(_stats(f"{key}to_screen", lat_seen[how]))
            result.update(_stats(f"{key}to_dom_write", lat_written[how]))
            result.update(_stats(f"{key}to_page_message", lat_arrived[how]))
            result.update(_stats(f"{key}to_stream", lat_stored[how]))
            result[f"{key}missed"] = missed[how]
        result["skipped"] = skipped
        result["markers"] = markers
    finally:
        stop_feed.set()
        if driver is not None:
            driver.quit()
        if pub is not None:
            pub.loop_stop()
            pub.disconnect()
        for p in procs.values():
            stop(p)
        client.close()
        mq.kill()
        rp.kill()
    return result


def _stats(name: str, vals: list[float]) -> dict[str, Any]:
    if not vals:
        return {f"{name}_n": 0}
    s = sorted(vals)
    return {f"{name}_n": len(s), f"{name}_p50_ms": round(statistics.median(s), 1),
            f"{name}_p95_ms": round(pct(s, 0.95), 1), f"{name}_p99_ms": round(pct(s, 0.99), 1),
            f"{name}_max_ms": round(s[-1], 1), f"{name}_ms": [round(x, 1) for x in vals]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", choices=("xadd", "mqtt", "all"), default="all")
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--markers", type=int, default=20)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--spread", action="store_true",
                    help="feed each room at its own moment of the second (else all rooms together once a second)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.path == "all":
        plan = [("xadd", args.rooms), ("mqtt", args.rooms), ("xadd", 30)]
    else:
        plan = [(args.path, args.rooms)]
    results = []
    for path, n in plan:
        workdir = Path(tempfile.mkdtemp(prefix=f"vw-screen-{path}-{n}-"))
        try:
            res = run_once(path, n, args.markers, args.warmup, args.timeout, workdir, spread=args.spread)
        finally:
            keep = os.environ.get("VW_BENCH_KEEP")
            if not keep:
                shutil.rmtree(workdir, ignore_errors=True)
        results.append(res)
        label = "XADD" if path == "xadd" else "MQTT publish"
        print(f"{label} -> screen, {n} rooms x 1 Hz (headless Chromium, signed in as a nurse)")
        if res.get("to_screen_n"):
            print(f"  visible text (rAF poll, as the peer): p50 {res['to_screen_p50_ms']:.0f} ms, "
                  f"p95 {res['to_screen_p95_ms']:.0f} ms, max {res['to_screen_max_ms']:.0f} ms; "
                  f"{res['missed']} of {res['markers']} missed")
        if res.get("to_dom_write_n"):
            print(f"  text node written:                    p50 {res['to_dom_write_p50_ms']:.0f} ms, "
                  f"p95 {res['to_dom_write_p95_ms']:.0f} ms, max {res['to_dom_write_max_ms']:.0f} ms")
        cpu = res.get("cpu_pct_of_one_core", {})
        print(f"  CPU over {res.get('cpu_window_s')} s (% of one core): "
              + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
        print(f"  page rendered in {res.get('page_render_s')} s; "
              f"{res.get('active_alerts_on_screen')} active alert(s) on screen")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
