"""Seed a realistic, fully known dosing session into Redis (tests and benchmarks/review.py).

An intranasal esketamine session: a 1 Hz oximeter (hr, spo2) and an NIBP every 5 min
(sbp, dbp, map) in the room's vitals stream, a hypertensive episode 35–50 min after the
dose with a high-priority SBP alert acknowledged by `nurse-amy` after 45 s, manual BP
checks, a note, observations and a ready-to-leave. Stream ids equal measurement times, as
they would be when written live. Everything the tests assert is derived from `Seeded`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import redis

from monitor.model.clock import now_ms
from monitor.model.codec import fmt_value
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.sessions import lifecycle as sessions
from tests.configs import mqtt_device, room_entry, serial_device

MIN = 60_000


@dataclass
class Seeded:
    """What was seeded: the session id, its times and the exact stream content."""

    sid: str
    room: str
    patient: str
    t0_ms: int
    dose_ms: int
    end_ms: int
    readings: list[dict[str, str]] = field(default_factory=list)  # stream fields, in order
    alert_id: str = ""
    ack_s: float = 45.0


def _oxi(t_rel_s: int, dosed_min: float) -> dict[str, float]:
    hr = 72 + 6 * math.sin(t_rel_s / 300) + (10 if 35 <= dosed_min <= 50 else 0)
    spo2 = 97 + (1 if (t_rel_s // 60) % 3 == 0 else 0)
    return {"hr": round(hr), "spo2": spo2}


def _nibp(dosed_min: float) -> dict[str, float]:
    if 35 <= dosed_min <= 50:
        sbp, dbp = 192, 104  # the hypertensive episode
    elif dosed_min < 0:
        sbp, dbp = 128, 80
    else:
        sbp, dbp = 138, 86
    return {"sbp": sbp, "dbp": dbp, "map": round((sbp + 2 * dbp) / 3)}


def seed_session(client: redis.Redis, keys: Keys, cfg: Config, *, room: str = "room-1",
                 patient: str = "MRN-4711", duration_min: float = 130, t0_ms: int | None = None,
                 oxi_dev: str = "oxi-1", nibp_dev: str = "nibp-1", end: bool = False) -> Seeded:
    """Write a whole session (readings, alerts, events) ending at t0 + duration_min."""
    t0 = t0_ms if t0_ms is not None else now_ms() - int((duration_min + 30) * MIN)
    dose = t0 + 5 * MIN
    end_ms = t0 + int(duration_min * MIN)
    sid = sessions.start_session(client, keys, cfg, room, patient, "intranasal", "nurse-amy",
                                 dose_mg=56, weight_kg=70, now_ms=t0)
    seeded = Seeded(sid, room, patient, t0, dose, end_ms)
    # readings: stream ids = measurement time (live writers store them within ms)
    pipe = client.pipeline(transaction=False)
    vitals = keys.vitals(room)
    # one reading before and after the session that must NOT be archived
    pipe.xadd(vitals, {"ts": str(t0 - 1000), "dev": oxi_dev, "hr": "70"}, id=f"{t0 - 1000}-0")
    n = 0
    for s in range(0, int(duration_min * 60) + 1):
        ts = t0 + s * 1000
        dosed_min = (ts - dose) / MIN
        rows = [{"ts": str(ts), "dev": oxi_dev, **{k: fmt_value(v) for k, v in _oxi(s, dosed_min).items()}}]
        if s % 300 == 150:
            rows.append({"ts": str(ts), "dev": nibp_dev,
                         **{k: fmt_value(v) for k, v in _nibp(dosed_min).items()}})
        if s == 600:
            rows[0] = {"ts": str(ts), "dev": oxi_dev, "flags": "sensor_off"}
        for seq, f in enumerate(rows):
            pipe.xadd(vitals, f, id=f"{ts}-{seq}")
            seeded.readings.append(f)
        n += 1
        if n % 2000 == 0:
            pipe.execute()
    pipe.xadd(vitals, {"ts": str(end_ms + 5000), "dev": oxi_dev, "hr": "70"}, id=f"{end_ms + 5000}-0")
    pipe.execute()
    # the hypertensive episode's alert: raised at the first high NIBP, acknowledged after 45 s
    highs = [int(f["ts"]) for f in seeded.readings if f.get("sbp") == "192"]
    if highs:
        raised = highs[0]
        aid = f"{room}:{nibp_dev}:sbp:{raised}"
        seeded.alert_id = aid
        common = {"room": room, "alert": aid, "kind": "physiological", "priority": "high", "metric": "sbp",
                  "dev": nibp_dev, "value": "192", "limit": "180", "message": "SBP high 192 > 180"}
        cleared = next((int(f["ts"]) for f in seeded.readings
                        if f.get("sbp") and int(f["ts"]) > raised and f["sbp"] != "192"), end_ms)
        alert_entries = [(raised, 1, {"event": "raised", "user": ""}),
                         # another room's alert in the same span must not be archived with this session
                         (raised + 1, 0, {"room": "room-9", "alert": "other", "event": "raised", "user": ""}),
                         (raised + 45_000, 1, {"event": "acknowledged", "user": "nurse-amy"}),
                         (cleared, 1, {"event": "cleared", "user": ""})]
        for ts, seq, extra in alert_entries:
            client.xadd(keys.alerts, {**common, "ts": str(ts), **extra}, id=f"{ts}-{seq}")
    # session events, at their clinical times (only those that fall inside the session)
    steps = [
        (t0 + 2 * MIN, lambda t: sessions.record_bp(client, keys, sid, "nurse-amy", 126, 78, now_ms=t)),
        (dose, lambda t: sessions.record_dose(client, keys, sid, "nurse-amy", at_ms=t, dose_mg=56,
                                              note="2 devices")),
        (dose + 15 * MIN, lambda t: sessions.observe(client, keys, sid, "nurse-amy", "dissociation", now_ms=t)),
        (dose + 20 * MIN, lambda t: sessions.add_note(client, keys, sid, "nurse-amy", "patient anxious, reassured",
                                                      now_ms=t)),
        (dose + 41 * MIN, lambda t: sessions.record_bp(client, keys, sid, "nurse-amy", 188, 102, now_ms=t)),
        (dose + 118 * MIN, lambda t: sessions.observe(client, keys, sid, "nurse-amy", "ready_to_leave", now_ms=t)),
    ]
    for at, step in steps:
        if at <= end_ms:
            step(at)
    if end:
        sessions.end_session(client, keys, cfg, sid, "nurse-amy", now_ms=end_ms)
    return seeded


def room_config(make_config: Any) -> Config:
    """A config with one room holding the seeded devices (oxi-1 serial, nibp-1 MQTT)."""
    return make_config(rooms=[room_entry("room-1", serial_device("oxi-1"), mqtt_device("nibp-1", "json", "vw/room-1/nibp-1"),
                                   name="Treatment Room 1")])
