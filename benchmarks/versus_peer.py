"""Screen latency against the Node-RED peer, in one run, interleaved.

Alternating batches: the peer's own measure.py (../shared/peers/node-red, Node-RED + FlowFuse
Dashboard 2: MQTT publish → value on the page), then ours (benchmarks/screen_latency.py
`run_once("both")`: the whole VitalWatch — redis-server, mosquitto, `vitalwatch ingest`,
`alerts` and `dashboard`, headless Chromium signed in — with markers alternating between an
XADD straight into the room's stream and an MQTT publish through ingest), then the peer again,
and so on, so both see the same machine load. Same method on both sides: rooms fed at 1 Hz, a
room held 1.2 s before its marker, the time from the write until the page text contains the
marker, checked on every animation frame inside the page.

The peer's measure.py feeds a fixed list of 20 rooms; for other counts it is run with its
ROOMS list replaced (its markers still go to r01…r20, as its own loop picks them).

    bash ../shared/peers/node-red/setup.sh          # once: Node-RED (npm), a venv with playwright
    nice -n -5 .venv/bin/python benchmarks/versus_peer.py                       # 20 and 100 rooms, 200 markers each
    .venv/bin/python benchmarks/versus_peer.py --rooms 20 --markers 40 --batches 2   # a quick look
    .venv/bin/python benchmarks/versus_peer.py --rooms 100 --spread         # each room at its own moment
    .venv/bin/python benchmarks/versus_peer.py --rooms 100 --peer-frame-probe   # peer timed by our probe

The peer's feed sends all rooms together once a second; `--spread` runs both feeds with each
room at its own moment of the second (independent monitors) — the peer's feed loop patched
in the copy it runs. The peer's marker wait (Playwright's wait_for_function) also counts a
marker already in the page when the call arrives, without a frame; `--peer-frame-probe`
times it with our animation-frame probe instead (PEER_WAIT_OLD/NEW below). Both print the
browsers' CPU over each batch's marker window.

Prints p50/p95/p99/max per series and room count, with the machine's load (uptime) at each
batch: these figures move with what else runs on the machine. For the same markers it also
prints the time until the page's text was written (a MutationObserver on both sides, no
frame): the pipeline alone, without the frame wait (PEER_WRITTEN_* below).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.screen_latency import pct, run_once  # noqa: E402

# the peer's directory: $VW_PEER_DIR, else ../shared/peers/node-red beside the checkout (or a worktree's /work/shared)
_REPO = Path(__file__).resolve().parents[1]
PEER_DIR = Path(os.environ.get("VW_PEER_DIR") or next(
    (p for p in (_REPO.parent / "shared/peers/node-red", _REPO.parents[1] / "shared/peers/node-red")
     if (p / "measure.py").exists()), _REPO.parent / "shared/peers/node-red"))
PEER_PY = Path("/tmp/vw-peer/venv/bin/python")
# the peer's measure.py, loaded with `patches` applied (pairs of its exact text and the
# replacement), its ROOMS list set to `n` rooms, run with `argv`
PEER_RUN = """
import sys, types
sys.path.insert(0, {dir!r})
src = open({dir!r} + "/measure.py").read()
for old, new in {patches!r}:  # see PEER_FEED_* and PEER_WAIT_*
    assert src.count(old) == 1, "measure.py changed: " + old.strip().splitlines()[0]
    src = src.replace(old, new)
measure = types.ModuleType("measure")
measure.__file__ = {dir!r} + "/measure.py"
exec(compile(src, measure.__file__, "exec"), measure.__dict__)
measure.ROOMS = [f"r{{i:02d}}" for i in range(1, {n} + 1)]
measure.WRITTEN = []  # publish → text written, ms (see PEER_WRITTEN_*)
sys.argv = ["measure.py"] + {argv!r}
measure.main()
"""

# `--spread`: the peer's feed loop with each room at its own moment of the second
PEER_FEED_PATCHES = (
    ("                for rm in ROOMS:\n"
     "                    if rm in held:\n"
     "                        continue\n",
     "                t_feed = time.time()\n"
     "                for k, rm in enumerate(ROOMS):\n"
     "                    stop_feed.wait(max(0.0, t_feed + k / len(ROOMS) - time.time()))\n"
     "                    if rm in held:\n"
     "                        continue\n"),
    ("                stop_feed.wait(1)\n", "                stop_feed.wait(max(0.0, t_feed + 1 - time.time()))\n"),
)


# The peer's measure.py waits for a marker with Playwright's wait_for_function(polling="raf"),
# which evaluates its predicate once as soon as the call reaches the page and then on each
# animation frame: a marker already in the DOM by then counts without waiting for a frame.
# Ours (screen_latency.py) installs its probe before the write and checks only on animation
# frames, so every figure includes the wait for the frame that shows it. `--peer-frame-probe`
# times the peer with that same probe (Date.now() in the page on the first animation frame
# whose text holds the marker, minus the publish time), so both sides measure one thing.
PEER_PUBLISH = (  # its marker's publish, and the time it is measured from
    "                t = time.time()\n"
    '                cli.publish(f"peer/{rm}/m", json.dumps({"ts": int(t * 1000), "hr": int(marker)}))\n')
PEER_LAT = {  # the line that records a marker's latency: its own wait (False), our probe (True)
    False: "                    lat.append((time.time() - t) * 1000)\n",
    True: '                    lat.append(page.evaluate("window.__vwSeen") - t * 1000)\n'}
PEER_WAIT_OLD = (
    PEER_PUBLISH
    + "                try:\n"
    "                    page.wait_for_function(f\"document.body.innerText.includes('{marker}')\", polling=\"raf\",\n"
    "                                           timeout=args.timeout * 1000)\n"
    + PEER_LAT[False])
PEER_WAIT_NEW = (
    '                page.evaluate("m => { window.__vwSeen = null; (function poll() { if (document.body.innerText'
    '.includes(m)) { window.__vwSeen = Date.now(); return; } requestAnimationFrame(poll); })(); }", marker)\n'
    + PEER_PUBLISH
    + "                try:\n"
    '                    page.wait_for_function("window.__vwSeen !== null", polling="raf", timeout=args.timeout * 1000)\n'
    + PEER_LAT[True])


# Both sides also time the write itself, free of any frame: the peer's copy installs a
# MutationObserver before each publish (it requests no frame, so the peer's own wait is
# unchanged) that notes when the page's text first holds the marker; ours notes when the
# tile's text node is written (screen_latency.py WATCH_JS). Publish → text written is the
# pipeline (broker, server, socket, page script); the rest of "→ screen" is the wait for a
# frame, which depends on how the probe and headless Chromium schedule frames.
PEER_WRITTEN_INSTALL = (
    PEER_PUBLISH,
    '                page.evaluate("m => { window.__vwWritten = null; const mo = new MutationObserver(() => { '
    "if (document.body.textContent.includes(m)) { window.__vwWritten = Date.now(); mo.disconnect(); } }); "
    'mo.observe(document.body, {characterData: true, childList: true, subtree: true}); }", marker)\n'
    + PEER_PUBLISH)
PEER_WRITTEN_RESULT = ('    result.update({"widget": args.widget,',
                       '    result["written_ms"] = WRITTEN\n    result.update({"widget": args.widget,')


def peer_written_patches(frame_probe: bool) -> list[tuple[str, str]]:
    """The patches that time the peer's publish → text written (applied after PEER_WAIT_*)."""
    read = PEER_LAT[frame_probe]  # the written time is read right after it
    return [PEER_WRITTEN_INSTALL,
            (read, read + '                    w = page.evaluate("window.__vwWritten")\n'
                          "                    if w is not None:\n"
                          "                        WRITTEN.append(round(w - t * 1000, 1))\n"),
            PEER_WRITTEN_RESULT]


def load() -> str:
    """The machine's load averages (1, 5, 15 min) and core count."""
    a, b, c = os.getloadavg()
    return f"load {a:.2f} {b:.2f} {c:.2f} on {os.cpu_count()} cores"


def peer_batch(n_rooms: int, markers: int, warmup_s: float, workdir: Path, spread: bool = False,
               frame_probe: bool = False) -> dict[str, Any]:
    out = workdir / f"peer-{n_rooms}-{time.monotonic_ns()}.json"
    patches = [*(PEER_FEED_PATCHES if spread else ()), *([(PEER_WAIT_OLD, PEER_WAIT_NEW)] if frame_probe else []),
               *peer_written_patches(frame_probe)]
    code = PEER_RUN.format(dir=str(PEER_DIR), n=n_rooms, patches=patches,
                           argv=["--markers", str(markers), "--warmup", str(warmup_s), "--json", str(out)])
    proc = subprocess.run([str(PEER_PY), "-c", code], capture_output=True, text=True, cwd=str(PEER_DIR), timeout=1800)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"peer measure.py failed ({proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    res: dict[str, Any] = json.loads(out.read_text())
    return res


def ours_batch(n_rooms: int, markers: int, warmup_s: float, spread: bool = False) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"vw-versus-{n_rooms}-"))
    try:
        return run_once("both", n_rooms, markers, warmup_s, 5.0, workdir, spread=spread)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def summary(vals: list[float]) -> dict[str, Any]:
    if not vals:
        return {"n": 0}
    s = sorted(vals)
    return {"n": len(s), "p50": round(statistics.median(s), 1), "p95": round(pct(s, 0.95), 1),
            "p99": round(pct(s, 0.99), 1), "max": round(s[-1], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", default="20,100", help="room counts, comma-separated")
    ap.add_argument("--markers", type=int, default=200, help="timed markers per series (peer, XADD, MQTT) and room count")
    ap.add_argument("--batches", type=int, default=2, help="alternating batches per room count")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--spread", action="store_true", help="both feeds with each room at its own moment of the "
                    "second (independent monitors), instead of all rooms together once a second (the peer's feed)")
    ap.add_argument("--peer-frame-probe", action="store_true", help="time the peer's markers with our in-page "
                    "animation-frame probe instead of its Playwright wait (see PEER_WAIT_OLD)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if not PEER_PY.exists():
        sys.exit(f"missing {PEER_PY}: run {PEER_DIR}/setup.sh first")
    per_batch = -(-args.markers // args.batches)
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                               "nice": os.nice(0), "spread": args.spread,
                               "peer_frame_probe": args.peer_frame_probe, "rooms": {}}
    workdir = Path(tempfile.mkdtemp(prefix="vw-versus-"))
    try:
        for n in [int(x) for x in args.rooms.split(",")]:
            series: dict[str, list[float]] = {"peer": [], "xadd": [], "mqtt": []}
            written: dict[str, list[float]] = {"peer": [], "xadd": [], "mqtt": []}  # → text written
            missed = {"peer": 0, "xadd": 0, "mqtt": 0}
            browser_cpu: dict[str, list[float]] = {"peer": [], "ours": []}  # % of a core, per batch
            loads: list[str] = []
            for b in range(args.batches):
                loads.append(load())
                print(f"{n} rooms, batch {b + 1}/{args.batches}: peer ({loads[-1]})", flush=True)
                peer = peer_batch(n, per_batch, args.warmup, workdir, args.spread, args.peer_frame_probe)
                browser_cpu["peer"].append(peer.get("cpu", {}).get("groups", {}).get("chromium-total", {}).get("cpu_pct"))
                series["peer"] += peer.get("latencies_ms", [])
                written["peer"] += peer.get("written_ms", [])
                missed["peer"] += int(peer.get("missed", 0))
                loads.append(load())
                print(f"{n} rooms, batch {b + 1}/{args.batches}: VitalWatch ({loads[-1]})", flush=True)
                # ours alternates XADD and MQTT markers: twice the markers for the same count each
                ours = ours_batch(n, 2 * per_batch, args.warmup, args.spread)
                browser_cpu["ours"].append(ours.get("cpu_pct_of_one_core", {}).get("chromium"))
                for how in ("xadd", "mqtt"):
                    series[how] += ours.get(f"{how}_to_screen_ms", [])
                    written[how] += ours.get(f"{how}_to_dom_write_ms", [])
                    missed[how] += int(ours.get(f"{how}_missed", 0))
            loads.append(load())
            results["rooms"][str(n)] = {"series": {k: {**summary(v), "missed": missed[k], "ms": v}
                                                   for k, v in series.items()},
                                        "written": {k: {**summary(v), "ms": v} for k, v in written.items()},
                                        "loads": loads,
                                        "browser_cpu_pct": browser_cpu}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    names = {"peer": "Node-RED publish → screen", "xadd": "VitalWatch XADD → screen",
             "mqtt": "VitalWatch MQTT publish → screen (ingest)"}
    feed = "each room at its own moment of the second" if args.spread else "all rooms together once a second"
    probe = "our in-page frame probe" if args.peer_frame_probe else "its own measure.py (Playwright wait)"
    print(f"\nscreen latency, ms (headless Chromium, text checked every animation frame); feed: {feed}; "
          f"peer timed by {probe}; "
          f"nice {results['nice']}")
    for n, r in results["rooms"].items():
        print(f"{n} rooms x 1 Hz; {r['loads'][0]} at the start, {r['loads'][-1]} at the end")
        print(f"  {'series':44s} {'n':>4s} {'p50':>6s} {'p95':>6s} {'p99':>6s} {'max':>6s} missed")
        for k, s in r["series"].items():
            if s["n"]:
                print(f"  {names[k]:44s} {s['n']:4d} {s['p50']:6.1f} {s['p95']:6.1f} {s['p99']:6.1f} {s['max']:6.1f}"
                      f" {s['missed']}")
            else:
                print(f"  {names[k]:44s}    0  (none seen; {s['missed']} missed)")
        print("  the same markers, publish/XADD → text written in the page (no frame wait):")
        for k, s in r["written"].items():
            if s["n"]:
                print(f"  {names[k].replace('screen', 'text written'):44s} {s['n']:4d} {s['p50']:6.1f} {s['p95']:6.1f}"
                      f" {s['p99']:6.1f} {s['max']:6.1f}")
        print(f"  browser CPU over each batch's marker window, % of a core: peer {r['browser_cpu_pct']['peer']}, "
              f"VitalWatch {r['browser_cpu_pct']['ours']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
