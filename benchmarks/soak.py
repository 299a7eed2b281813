"""Soak: the whole system at 20 rooms for 30+ minutes with faults injected periodically.

Runs tests/fault_system.py's System — redis-server, Mosquitto, `vitalwatch simulate --truth`
(one MQTT monitor per room, desaturation scenario, one device's clock stepping ±2 min),
`vitalwatch ingest` (through the stall/drop proxy), `alerts`, `dashboard` — as processes on
free ports, and every `--every-s` seconds injects the next fault of the suite's INJECTORS
(cycling). Every 5 s it samples RSS and CPU of each process from /proc. At the end:
- per process (Redis's growth is the readings it stores, not counted as a leak): RSS first/last/max, CPU share, and the memory slope in MB/hour (least-squares
  fit over the second half of the run, after warm-up; restarted processes are fitted on their
  newest incarnation only);
- per fault: the audit against the truth (accepted, stored, lost, duplicated) and the times to
  NOT MONITORING (`/health` non-200) and back;
- the whole run audited against the truth; the SpO2 alarms the truth requires (desaturation
  ~17–23 min into the run) raised; no false 'silent' alarm for the device whose clock steps.
Exit 1 — loudly — if a process's memory slope exceeds `--max-slope` MB/hour, or any accepted
reading was lost or duplicated, or a process died.

Usage: nice .venv/bin/python benchmarks/soak.py [--minutes 30] [--rooms 20] [--every-s 60]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fault_system import (  # noqa: E402
    CLOCK_DEVICE_ROOM,
    INJECTORS,
    Screen,
    System,
    alarms_required,
    audit,
    health_text,
    proc_sample,
    silent_alarms,
    wait_all_stored,
)


def slope_mb_per_h(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB/hour."""
    n = len(points)
    if n < 3:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return 0.0 if den == 0 else sum((t - mx) * (v - my) for t, v in points) / den * 3600


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--every-s", type=float, default=60.0, help="seconds between fault injections")
    ap.add_argument("--max-slope", type=float, default=20.0, help="MB/hour above which memory counts as unbounded")
    args = ap.parse_args()

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # stop everything it started, then exit
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # also when started in the background (SIGINT ignored)
    work = Path(tempfile.mkdtemp(prefix="vw-soak-"))
    system = System(work, rooms=args.rooms, speed=1.0)
    print(f"soak: {args.rooms} rooms, {args.minutes:g} min, a fault every {args.every_s:g} s; work dir {work}", flush=True)
    system.start()
    screen = Screen(health_text(system), interval_s=0.25)
    screen.start()
    t_start, ms_start = time.monotonic(), int(time.time() * 1000)
    end = t_start + args.minutes * 60
    samples: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    results: list[tuple[str, str, str, str]] = []
    failures: list[str] = []
    names = list(INJECTORS)
    next_fault, i = t_start + 20, 0
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            for name, pid in system.pids().items():
                try:
                    rss, cpu = proc_sample(pid)
                except (FileNotFoundError, ProcessLookupError):
                    continue
                samples.setdefault((name, pid), []).append((now - t_start, rss, cpu))
            if now >= next_fault and end - now > 40:
                name = names[i % len(names)]
                i += 1
                try:
                    inj = INJECTORS[name](system)
                    got = wait_all_stored(system, inj.start_ms - 5000, inj.end_ms, 60)
                    shown = screen.first(inj.started, True)
                    wait_until = time.monotonic() + 30
                    while screen.clear_after(inj.ended) is None and time.monotonic() < wait_until:
                        time.sleep(0.25)
                    cleared = screen.clear_after(inj.ended)
                    nm = f"{shown - inj.started:.1f} s" if shown else "not shown"
                    back = f"{cleared - inj.ended:.1f} s" if cleared else "not cleared in 30 s"
                    results.append((name, got.line(), nm, back))
                    print(f"[{(time.monotonic() - t_start) / 60:5.1f} min] {name}: {got.line()}; "
                          f"NOT MONITORING {nm}, clear {back}", flush=True)
                    if not got.ok():
                        failures.append(f"{name}: {got.line()}")
                except Exception as e:  # noqa: BLE001 - one injector failing must not end the soak
                    traceback.print_exc()
                    failures.append(f"{name}: injector failed: {e!r}")
                dead = [r for r, ok in system.alive().items() if not ok]
                if dead:
                    failures.append(f"after {name}: dead {dead}")
                    print(f"DEAD after {name}: {dead}", flush=True)
                next_fault = time.monotonic() + args.every_s
            time.sleep(5.0)
        whole = audit(system, ms_start, int(time.time() * 1000) - 10_000)
        need, raised = alarms_required(system, 0, int(time.time() * 1000))
        false_silent = silent_alarms(system, f"mon-{CLOCK_DEVICE_ROOM}")
    finally:
        screen.halt.set()
        system.stop()
    minutes = (time.monotonic() - t_start) / 60
    print(f"\n== soak {minutes:.1f} min, {args.rooms} rooms, {i} faults injected (load: this shared 2-core machine)")
    print(f"whole run against the truth: {whole.line()}")
    if not whole.ok():
        failures.append(f"whole run: {whole.line()}")
    print(f"SpO2 alarms the truth requires: {len(need)} rooms, raised in {len(raised)}; "
          f"false 'silent' alarms for the device whose clock steps ±2 min: {len(false_silent)}")
    if need - raised or false_silent:
        failures.append(f"alarms: missing {sorted(need - raised)}, false silent {false_silent}")
    print("\n| process | RSS first MB | RSS last MB | RSS max MB | CPU % of a core | slope MB/h (2nd half) |")
    print("|---|---|---|---|---|---|")
    newest: dict[str, tuple[int, list[tuple[float, float, float]]]] = {}
    for (name, pid), pts in samples.items():
        if name not in newest or pts[0][0] > newest[name][1][0][0]:
            newest[name] = (pid, pts)
    for name, (_pid, pts) in sorted(newest.items()):
        span = pts[-1][0] - pts[0][0]
        half = [(t, r) for t, r, _c in pts if t >= pts[0][0] + span / 2]
        slope = slope_mb_per_h(half)
        cpu = (pts[-1][2] - pts[0][2]) / span * 100 if span > 0 else 0.0
        print(f"| {name} | {pts[0][1]:.1f} | {pts[-1][1]:.1f} | {max(r for _t, r, _c in pts):.1f} | {cpu:.1f} | {slope:+.2f} |")
        if slope > args.max_slope and span > 600 and name != "redis":  # Redis holds the readings: it grows
            failures.append(f"{name}: memory grows {slope:.1f} MB/h")
    print("\n| fault | truth vs Redis | NOT MONITORING after | clear after recovery |")
    print("|---|---|---|---|")
    for row in results:
        print("| " + " | ".join(row) + " |")
    if failures:
        print("\nSOAK FAILED:\n  " + "\n  ".join(failures), flush=True)
        return 1
    print("\nsoak passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
