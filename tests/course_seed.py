"""Seed many fully known dosing sessions through the real pipeline (tests of the quality
report, a patient's course, the REMS forms; benchmarks).

Each `Plan` describes one session: patient, room, start, dose, a BP response (baseline →
peak around 40 min after the dose), HR/SpO2 shapes, physiological alarm episodes (raised,
acknowledged after N s or never, cleared after N s), technical alarm episodes (cause and
device), observations, manual BP checks and ready-to-leave. `seed(...)` writes readings and
alert events into the clinic's Redis streams (stream ids = measurement times, as live
writers store them), records the session events with the real lifecycle functions at
their clinical times, and ends the session — which archives it and stores its summary.
`Seeded.readings` keeps exactly what went into the stream, so a test can compute every
expected number from the raw readings on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from monitor.model.codec import fmt_value
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.sessions import lifecycle as sessions

MIN = 60_000


@dataclass
class Alarm:
    """One alarm episode of the plan (times relative to the first dose)."""

    at_min: float
    metric: str = "spo2"
    priority: str = "high"
    kind: str = "physiological"
    cond: str = ""  # default: "<metric>_low" (physiological) or the technical condition
    dev: str = ""  # default: the plan's oximeter
    ack_after_s: float | None = None  # None: never acknowledged
    clear_after_s: float | None = 60.0  # None: still active at the end


@dataclass
class Plan:
    """One session to seed."""

    patient: str
    room: str
    t0_ms: int
    dose_mg: float | None = 56
    route: str = "intranasal"
    protocol: str | None = None
    duration_min: float = 130
    dose_at_min: float | None = 5
    base_sbp: int = 128
    base_dbp: int = 80
    rise_sbp: int = 20
    rise_dbp: int = 10
    hr_base: int = 72
    hr_peak: int = 90
    spo2_min: int = 95
    oxi_every_s: int = 10
    nibp_every_min: int = 5
    nibp_offset_s: int = 150
    alarms: list[Alarm] = field(default_factory=list)
    observations: list[tuple[float, str]] = field(default_factory=list)  # (min after dose, name)
    manual_bp: list[tuple[float, int, int]] = field(default_factory=list)  # (min after dose, sbp, dbp)
    ready_at_min: float | None = 100
    oxi_dev: str = ""  # default: oxi-<n> for room-<n>
    nibp_dev: str = ""  # default: nibp-<n>

    def __post_init__(self) -> None:
        n = self.room.rsplit("-", 1)[-1]
        self.oxi_dev = self.oxi_dev or f"oxi-{n}"
        self.nibp_dev = self.nibp_dev or f"nibp-{n}"


@dataclass
class Seeded:
    """A seeded, ended session: its id, plan, times and the exact stream content."""

    sid: str
    plan: Plan
    dose_ms: int | None
    end_ms: int
    readings: list[dict[str, str]]
    alarms: list[dict[str, Any]]  # per episode: id, kind, priority, metric, dev, raised_ms, ack_ms, cleared_ms


def bp_at(plan: Plan, dosed_min: float | None) -> tuple[int, int]:
    """The NIBP value the plan gives at `dosed_min` after the dose (a ramp to the peak at 40 min)."""
    if dosed_min is None or dosed_min < 0:
        return plan.base_sbp, plan.base_dbp
    if dosed_min <= 40:
        f = dosed_min / 40
    elif dosed_min <= 100:
        f = 1 - (dosed_min - 40) / 60
    else:
        f = 0.0
    return round(plan.base_sbp + plan.rise_sbp * f), round(plan.base_dbp + plan.rise_dbp * f)


def _oxi(plan: Plan, dosed_min: float | None) -> tuple[int, int]:
    if dosed_min is None or dosed_min < 0:
        return plan.hr_base, 98
    near = max(0.0, 1 - abs(dosed_min - 30) / 30)
    return round(plan.hr_base + (plan.hr_peak - plan.hr_base) * near), round(98 - (98 - plan.spo2_min) * near)


def seed(client: redis.Redis, keys: Keys, cfg: Config, plan: Plan, user: str = "nurse-amy") -> Seeded:
    """Write one whole session (readings, alerts, events) and end it (archive + summary)."""
    t0 = plan.t0_ms
    dose = t0 + int(plan.dose_at_min * MIN) if plan.dose_at_min is not None else None
    end_ms = t0 + int(plan.duration_min * MIN)
    sid = sessions.start_session(client, keys, cfg, plan.room, plan.patient, plan.route, user,
                                 dose_mg=plan.dose_mg, protocol=plan.protocol, now_ms=t0)
    vitals = keys.vitals(plan.room)
    pipe = client.pipeline(transaction=False)
    rows: list[tuple[int, int, dict[str, str]]] = []
    for s in range(0, int(plan.duration_min * 60) + 1, plan.oxi_every_s):
        ts = t0 + s * 1000
        dm = (ts - dose) / MIN if dose is not None else None
        hr, spo2 = _oxi(plan, dm)
        rows.append((ts, 0, {"ts": str(ts), "dev": plan.oxi_dev, "hr": fmt_value(hr), "spo2": fmt_value(spo2)}))
    for s in range(plan.nibp_offset_s, int(plan.duration_min * 60) + 1, plan.nibp_every_min * 60):
        ts = t0 + s * 1000
        dm = (ts - dose) / MIN if dose is not None else None
        sbp, dbp = bp_at(plan, dm)
        rows.append((ts, 1, {"ts": str(ts), "dev": plan.nibp_dev, "sbp": fmt_value(sbp), "dbp": fmt_value(dbp),
                             "map": fmt_value(round((sbp + 2 * dbp) / 3))}))
    rows.sort(key=lambda r: (r[0], r[1]))
    for ts, seq, f in rows:
        pipe.xadd(vitals, f, id=f"{ts}-{seq}")
    pipe.execute()
    ref = dose if dose is not None else t0
    episodes = []
    alert_entries: list[tuple[int, int, dict[str, str]]] = []
    for i, a in enumerate(plan.alarms):
        raised = ref + int(a.at_min * MIN)
        cond = a.cond or (f"{a.metric}_low" if a.kind == "physiological" else "offline")
        dev = a.dev or plan.oxi_dev
        aid = f"{plan.room}.{dev}.{cond}.{raised}"
        common = {"room": plan.room, "alert": aid, "kind": a.kind, "priority": a.priority, "dev": dev,
                  "message": f"{cond} on {dev}", "value": "", "limit": ""}
        if a.kind == "physiological":
            common["metric"] = a.metric
        ack = raised + int(a.ack_after_s * 1000) if a.ack_after_s is not None else None
        cleared = raised + int(a.clear_after_s * 1000) if a.clear_after_s is not None else None
        events = [(raised, {"event": "raised", "user": ""})]
        if ack is not None:
            events.append((ack, {"event": "acknowledged", "user": "nurse-bo"}))
        if cleared is not None:
            events.append((cleared, {"event": "cleared", "user": ""}))
        alert_entries += [(ts, i, {**common, "ts": str(ts), **extra}) for ts, extra in events]
        episodes.append({"id": aid, "kind": a.kind, "priority": a.priority, "metric": a.metric if a.kind ==
                         "physiological" else None, "cond": cond, "dev": dev, "raised_ms": raised,
                         "ack_ms": ack, "cleared_ms": cleared})
    # the alerts stream is clinic-wide and its ids are times: one session's events in time order
    # (sessions must be seeded oldest first — `seed_all`)
    for ts, i, fields in sorted(alert_entries, key=lambda e: (e[0], e[1])):
        client.xadd(keys.alerts, fields, id=f"{ts}-{i}")
    steps: list[tuple[int, Any]] = []
    for at, sbp_, dbp_ in plan.manual_bp:
        steps.append((ref + int(at * MIN), lambda t, s=sbp_, d=dbp_: sessions.record_bp(
            client, keys, sid, user, s, d, now_ms=t)))
    if dose is not None:
        steps.append((dose, lambda t: sessions.record_dose(client, keys, sid, user, at_ms=t, dose_mg=plan.dose_mg)))
    for at, name in plan.observations:
        steps.append((ref + int(at * MIN), lambda t, n=name: sessions.observe(client, keys, sid, user, n, now_ms=t)))
    if plan.ready_at_min is not None:
        steps.append((ref + int(plan.ready_at_min * MIN),
                      lambda t: sessions.observe(client, keys, sid, user, "ready_to_leave", now_ms=t)))
    for at, step in sorted(steps, key=lambda s: s[0]):
        if at <= end_ms:
            step(at)
    sessions.end_session(client, keys, cfg, sid, user, now_ms=end_ms)
    return Seeded(sid, plan, dose, end_ms, [f for _, _, f in rows], episodes)


def seed_all(client: redis.Redis, keys: Keys, cfg: Config, plans: list[Plan]) -> list[Seeded]:
    """Seed every plan, oldest first (stream ids are times), returned in the plans' order."""
    done = {id(p): seed(client, keys, cfg, p) for p in sorted(plans, key=lambda p: p.t0_ms)}
    return [done[id(p)] for p in plans]


def two_room_config(make_config: Any, archive_url: str, **extra: Any) -> Config:
    """Two rooms, each with an oximeter and an NIBP (ids are clinic-wide: room-2 uses oxi-2/nibp-2)."""
    cfg = make_config(rooms=[
        {"id": "room-1", "name": "Treatment Room 1", "devices": [
            {"id": "oxi-1", "protocol": "masimo-ascii", "transport": "serial", "port": "/dev/null"},
            {"id": "nibp-1", "protocol": "json", "transport": "mqtt", "topic": "vw/room-1/nibp-1"}]},
        {"id": "room-2", "name": "Treatment Room 2", "devices": [
            {"id": "oxi-2", "protocol": "masimo-ascii", "transport": "serial", "port": "/dev/null"},
            {"id": "nibp-2", "protocol": "json", "transport": "mqtt", "topic": "vw/room-2/nibp-2"}]}], **extra)
    return cfg.model_copy(update={"archive": cfg.archive.model_copy(update={"url": archive_url})})
