"""Screenshots of the overview for docs/ — made from the running code, so they stay true.

Starts a private redis-server and a dashboard for a 10-room clinic, writes what ingest and the
alert engine would (readings, device status, a high SBP alarm, a latched SpO2 alarm, a device
gone silent, sessions with reminders and an observation timer, a stale BP), signs in as a
nurse in headless Chromium and saves:

    docs/img/overview-1280x800.png   docs/img/overview-1920x1080.png   docs/img/phone-390x844.png

    .venv/bin/python scripts/screenshots.py            # needs redis-server and chromium (make test installs them)
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from dashboard.app import Served  # noqa: E402
from monitor.accounts import users  # noqa: E402
from monitor.alarms.model import alert_id, new_record  # noqa: E402
from monitor.alarms.text import condition_text  # noqa: E402
from monitor.model.config import parse_config  # noqa: E402
from monitor.model.keys import Keys  # noqa: E402
from monitor.sessions import lifecycle as sessions  # noqa: E402
from monitor.store.status import publish_status  # noqa: E402
from tests.dashboard_support import Beats, chromium, login, now_ms  # noqa: E402
from tests.dashboard_support import wait_page as wait_for  # noqa: E402
from tests.overview_support import viewport  # noqa: E402
from tests.servers import RedisProc  # noqa: E402

OUT = ROOT / "docs" / "img"
ROOMS = 10
SHOTS = (("overview-1280x800.png", 1280, 800, False), ("overview-1920x1080.png", 1920, 1080, False),
         ("phone-390x844.png", 390, 844, True))


def seed(client: redis.Redis, keys: Keys, cfg, now: int) -> None:  # noqa: ANN001
    """What the other roles would have written by now."""
    for i in range(1, ROOMS + 1):
        room = f"room-{i}"
        for dev in (f"mon-{i}", f"bp-{i}"):
            silent = dev == "mon-7"
            publish_status(client, keys, dev, {"room": room, "state": "silent" if silent else "online",
                                               "since_ms": now - 3_600_000, "updated_ms": now,
                                               "last_ts": now - (40_000 if silent else 1000)})
        hr, spo2, rr = 64 + 3 * i, 99 - (i % 4), 12 + i % 5
        if i == 3:
            spo2 = 96  # recovered: its SpO2 alarm is latched
        client.xadd(keys.vitals(room), {"ts": str(now - (40_000 if i == 7 else 1000)), "dev": f"mon-{i}",
                                        "hr": str(hr), "spo2": str(spo2), "rr": str(rr)})
        sbp, dbp = (197, 104) if i == 2 else (112 + 2 * i, 70 + i)
        bp_age = 900_000 if i == 9 else 120_000  # room 9's BP is older than its cycle: it looks stale
        client.xadd(keys.vitals(room), {"ts": str(now - bp_age), "dev": f"bp-{i}", "sbp": str(sbp),
                                        "dbp": str(dbp), "map": str(round((sbp + 2 * dbp) / 3))})

    def alarm(room: str, dev: str, metric: str, side: str, value: float, limit: float, ago_s: int,
              **extra: object) -> None:
        t = now - ago_s * 1000
        aid = alert_id(room, dev, metric, t)
        rec = new_record(alert=aid, room=room, dev=dev, metric=metric, kind="physiological", priority="high",
                         value=value, limit=limit, message=condition_text(metric, side, value, limit),
                         raised_ms=t, onset_ms=t, cond=f"p:{dev}:{metric}", latching=True)
        rec.update(extra)
        client.hset(keys.active_alerts(room), aid, json.dumps(rec))

    alarm("room-2", "bp-2", "sbp", "high", 197, 180, 95)
    alarm("room-3", "mon-3", "spo2", "low", 84, 90, 420, state="latched", cleared_ms=now - 120_000,
          acknowledged_by="nina", acknowledged_ms=now - 400_000)
    t = now - 30_000
    silent = new_record(alert=alert_id("room-7", "mon-7", "silent", t), room="room-7", dev="mon-7", metric="",
                        kind="technical", priority="medium", value=None, limit=None,
                        message="mon-7 silent: no reading for over 10 s", raised_ms=t, onset_ms=t,
                        cond="d:mon-7", latching=False)
    client.hset(keys.active_alerts("room-7"), silent["alert"], json.dumps(silent))
    for i, (route, dosed_min) in {4: ("intranasal", 41), 5: ("iv", 12), 6: ("intranasal", None)}.items():
        started = now - 60 * 60_000
        sid = sessions.start_session(client, keys, cfg, f"room-{i}", f"DEMO-{i:04d}", route, "nina", now_ms=started)
        if dosed_min is not None:
            sessions.record_dose(client, keys, sid, "nina", at_ms=now - dosed_min * 60_000, dose_mg=56)
        reminders = {4: [("bp-40min", "BP check due (40 min after dose)", now - 60_000)],
                     5: [("observe", "Minimum observation: 108 min remaining", now + 108 * 60_000)],
                     6: [("bp-pre", "BP check due before dosing", started)]}[i]
        for cond, msg, due in reminders:
            rid = alert_id(f"room-{i}", "", cond, due)
            rec = new_record(alert=rid, room=f"room-{i}", dev="", metric="", kind="reminder", priority="low",
                             value=None, limit=None, message=msg, raised_ms=now - 60_000, onset_ms=due,
                             cond=f"r:{cond}", latching=False, session=sid, due_ms=due)
            client.hset(keys.active_alerts(f"room-{i}"), rid, json.dumps(rec))


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vw-shots-"))
    rp = RedisProc(work / "redis").start()
    cfg = parse_config({
        "clinic": {"id": "shots", "name": "VitalWatch Demo Clinic"}, "redis": {"url": rp.url},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"}, "data": {"dir": str(work)},
        "rooms": [{"id": f"room-{i}", "name": f"Treatment Room {i}", "devices": [
            {"id": f"mon-{i}", "protocol": "json", "transport": "mqtt", "topic": f"vw/{i}/mon"},
            {"id": f"bp-{i}", "protocol": "json", "transport": "mqtt", "topic": f"vw/{i}/bp", "silence_s": 900}]}
            for i in range(1, ROOMS + 1)]}, source="screenshots")
    keys = Keys(cfg.clinic.id)
    client = redis.Redis.from_url(rp.url, decode_responses=True)
    users.create_user(client, keys, "nina", "nurse", "screenshot-pass-1")
    seed(client, keys, cfg, now_ms())
    beats = Beats(client, keys).start()
    stop = threading.Event()

    def feed() -> None:  # 1 Hz, as the monitors would (room 7's monitor is the silent one)
        while not stop.wait(1.0):
            t = now_ms()
            for i in range(1, ROOMS + 1):
                if i != 7:
                    client.xadd(keys.vitals(f"room-{i}"), {"ts": str(t), "dev": f"mon-{i}", "hr": str(64 + 3 * i),
                                                           "spo2": str(96 if i == 3 else 99 - i % 4), "rr": str(12 + i % 5)})
                    publish_status(client, keys, f"mon-{i}", {"last_ts": t, "updated_ms": t})
                publish_status(client, keys, f"bp-{i}", {"updated_ms": t})

    threading.Thread(target=feed, daemon=True).start()
    served = Served(cfg, rp.url).start()
    driver = chromium()
    try:
        for name, width, height, phone in SHOTS:
            viewport(driver, width, height, phone)
            login(driver, served.url, "nina", "screenshot-pass-1", path="/m" if phone else "/")
            wait_for(lambda: len(driver.find_elements("css selector", ".vw-tile [data-vw-alarm]")) >= 1, 15, "tiles")
            driver.execute_script("VW.blinkHold = {high: '0', medium: '0'};")  # the bright phase
            time.sleep(1.2)  # ages tick, the flash settles
            driver.save_screenshot(str(OUT / name))
            print(f"wrote {OUT / name}")
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    finally:
        stop.set()
        driver.quit()
        served.stop()
        beats.stop()
        client.close()
        rp.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
