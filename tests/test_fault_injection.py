"""Fault injection: the whole system as processes, one fault at a time while readings flow.

One System for the module (tests/fault_system.py): our own redis-server and Mosquitto on free
ports, `vitalwatch simulate --truth` (4 rooms, one MQTT monitor each, desaturation scenario at
20× so SpO2 crosses the alarm limit ~50–70 s in, mid-module, room-1's device clock stepping +2 min,
-2 min and -5 s periodically — the -5 s step re-uses labels sent 5 s before, exactly), `vitalwatch ingest` reaching Redis through a stall/drop proxy,
`vitalwatch alerts` and `vitalwatch dashboard`, and one headless Chromium signed in as a nurse.
The faults are independent, so each case injects one into the running system and checks,
against the simulator's ground-truth log:
- every reading accepted in the case's window stored once (0 lost, 0 duplicated), per-device
  order kept, no process restarted except the one the fault kills;
- the alarms the truth requires of the window raised;
- NOT MONITORING on the signed-in screen within 5 s where monitoring really stopped, and the
  screen clear again after recovery.
The last test audits the whole run, the clock-stepping device (no false 'silent' alarm; a
clock ahead stored at receive time, flagged; a clock behind under its own label, a re-used
label stored as a new reading) and prints the table for docs/reliability.md.
Waits only bound how long a broken build takes to fail; measured times are printed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard_support import chromium, login, wait_page
from tests.fault_system import (
    CLOCK_DEVICE_ROOM,
    INJECTORS,
    NURSE,
    Screen,
    System,
    alarms_required,
    have_tools,
    silent_alarms,
    wait_all_stored,
)
from tests.waiting import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]
if (why := have_tools()) is not None:
    pytest.skip(why, allow_module_level=True)

NOT_MONITORING_WITHIN_S = 5.0
RESULTS: dict[str, dict[str, Any]] = {}


def banner(d: Any) -> str:
    return d.execute_script("var b=document.getElementById('vw-banner');"
                            "return b && b.style.display !== 'none' ? b.textContent : ''")


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, Screen]]:
    s = System(Path(tmp_path_factory.mktemp("faults")), rooms=4, speed=20.0)
    driver = None
    screen = None
    try:
        s.start()
        driver = chromium()
        login(driver, s.url, *NURSE)
        wait_page(lambda: banner(driver) == "" and s.health()[0] == 200, 45, "monitoring before any fault")
        screen = Screen(lambda: banner(driver))
        screen.start()
        s.t0_ms = int(time.time() * 1000)
        yield s, screen
    finally:
        if screen is not None:
            screen.halt.set()
            screen.join(5)
        if driver is not None:
            driver.quit()
        s.stop()


@pytest.mark.parametrize("case", list(INJECTORS))
def test_fault(case: str, system: tuple[System, Screen]) -> None:
    s, screen = system
    wait_page(lambda: screen.showing() == "", 30, "a clear screen before the fault")
    before = s.pids()
    inj = INJECTORS[case](s)
    got = wait_all_stored(s, inj.start_ms - 3000, inj.end_ms, 45)
    shown = screen.first(inj.started, True)
    cleared = wait_for(lambda: screen.clear_after(inj.ended), 30, "the screen clear after recovery")
    def alarms() -> tuple[set[str], set[str]]:
        return alarms_required(s, inj.start_ms - 3000, inj.end_ms)
    wait_for(lambda: (a := alarms())[0] == a[1], 20, "the alarms the truth requires raised")
    need, raised = alarms()
    if not inj.stops_monitoring:  # what the screens say instead: the devices' silent alarms
        silent = [int(a["ts"]) for a in s.alerts() if a.get("event") == "raised" and " silent" in a.get("message", "")
                  and inj.start_ms <= int(a["ts"]) <= inj.end_ms + 10_000]
        inj.note += f"; first device silent alarm {(min(silent) - inj.start_ms) / 1000:.1f} s after" if silent else ""
    RESULTS[case] = {"audit": got, "shown": None if shown is None else shown - inj.started,
                     "cleared": None if cleared is None else cleared - inj.ended,
                     "alarms": (len(need), len(raised)), "note": inj.note, "stops": inj.stops_monitoring,
                     "text": screen.at(shown) if shown else ""}
    assert got.ok(), f"{case}: {got.line()}; lost {got.lost[:3]} duplicated {got.duplicated[:3]} {got.out_of_order}"
    assert all(s.alive().values()), s.alive()
    killed = {"ingest"} if "ingest kill" in case else set()
    killed |= {"redis"} if "redis kill" in case or "spool" in case else set()
    killed |= {"mosquitto"} if "broker kill" in case else set()
    assert {k: v for k, v in s.pids().items() if k not in killed} == {k: v for k, v in before.items() if k not in killed}
    if inj.stops_monitoring:
        assert shown is not None and shown - inj.started <= NOT_MONITORING_WITHIN_S, \
            f"{case}: NOT MONITORING on screen after {shown and shown - inj.started} s"
        assert inj.says in screen.at(shown), f"{case}: the banner does not name {inj.says!r}: {screen.at(shown)!r}"


def test_whole_run_against_the_truth(system: tuple[System, Screen]) -> None:
    s, _screen = system
    t0 = s.t0_ms
    end = int(time.time() * 1000) - 2000
    whole = wait_all_stored(s, t0, end, 30)
    assert whole.ok(), whole.line()
    clock_dev = f"mon-{CLOCK_DEVICE_ROOM}"
    steps = [r for r in s.truth() if r["device"] == clock_dev and r.get("device_ts_ms") is not None]
    ahead = [r for r in steps if r["device_ts_ms"] > r["ts_ms"]]
    behind = [r for r in steps if r["device_ts_ms"] < r["ts_ms"]]
    assert ahead and behind, "the device clock stepped both ways during the run"
    stored = s.stored(f"room-{CLOCK_DEVICE_ROOM}")
    assert any("clock_skew" in g.flags for g in stored)  # ahead: receive time, flagged
    assert {r["device_ts_ms"] for r in behind} <= {g.ts_ms for g in stored}  # behind: its own label
    assert not silent_alarms(s, clock_dev), silent_alarms(s, clock_dev)
    labels = [g.ts_ms for g in stored if t0 <= g.ts_ms <= end]
    reused = len(labels) - len(set(labels))  # new readings under a label already stored
    need, raised = alarms_required(s, 0, end)
    print(f"\n[figures] whole run ({(end - t0) / 1000:.0f} s, 4 rooms): {whole.line()}; "
          f"SpO2 alarms the truth requires {len(need)}, raised {len(raised)}; "
          f"clock +2 min / behind readings {len(ahead)} / {len(behind)}, labels re-used and stored {reused}, "
          f"false silent alarms 0")
    assert need == raised
    print("| fault | accepted | stored | lost | duplicated | NOT MONITORING on screen | screen clear after recovery "
          "| alarms required/raised |")
    print("|---|---|---|---|---|---|---|---|")
    for case, r in RESULTS.items():
        a = r["audit"]
        shown = f"{r['shown']:.1f} s" if r["shown"] is not None else "not shown"
        print(f"| {case} | {a.accepted} | {a.stored} | {len(a.lost)} | {len(a.duplicated)} | {shown} "
              f"| {r['cleared']:.1f} s | {r['alarms'][0]}/{r['alarms'][1]} |")
    for case, r in RESULTS.items():
        print(f"  {case}: first words on screen: {r['text'][:140]!r} {r['note']}")
