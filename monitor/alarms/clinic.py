"""Clinic-wide technical alarms: one alarm per cause, not one per room.

When one cause stops monitoring in many rooms at once — an ingest process down, the alert
engine's own workers missing, readings not being stored, the MQTT broker unreachable — the engine raises ONE
technical alert with `room` = "*" and the affected rooms in its `rooms` field (CONTRACT,
"Alarm actions and clinic-wide alarms"), and the device-level technical alarms that cause
explains (a device "silent" because its adapter is gone) are not raised while it lasts. The
screens mark the affected tiles "not monitored: <cause>" instead of each raising its own row.

The mechanism is a list of pure cause functions (`CAUSES`): each takes the same
`ClinicInputs` and returns a `ClinicCause` or None. To add a cause (e.g. "readings are not
being stored" from the writers' storage state): give `ClinicInputs` the field it needs, fill
it in the engine (`Worker._clinic_inputs`), write one function here, add it to `CAUSES`, and
name its technical condition in monitor.model.config TECHNICAL_CONDITIONS (its priority and
delay then come from `[alerts.technical.<condition>]`). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from monitor.model.config import Config
from monitor.model.storage import StorageState

from .model import Desired, TechRule
from .technical import NOT_STORED, MonitoringState

CLINIC = "*"  # the `room` of a clinic-wide alert (CONTRACT)
SCOPE = "c:"  # condition keys of clinic-wide causes in the clinic's alarm state
DEVICE_CONDITIONS = frozenset({"silent", "offline"})  # what an absent adapter makes a device look like


@dataclass(frozen=True)
class ClinicInputs:
    """Everything the cause functions may look at (filled by the engine each tick)."""

    cfg: Config
    now_ms: int
    monitoring: MonitoringState
    statuses: Mapping[str, Mapping[str, str]]  # device id → its status hash (every configured device)
    unevaluated: Mapping[str, str] = field(default_factory=dict)  # room → why no worker evaluates it
    storage: Mapping[str, str] = field(default_factory=dict)  # `storage` hash: <role>:<instance> → StorageState JSON


@dataclass(frozen=True)
class ClinicCause:
    """One cause that stops monitoring in several rooms."""

    key: str  # condition key ("c:<name>")
    cond: str  # technical condition (config priority/delay)
    message: str  # stable text (no ages: the record would change every tick)
    cause: str  # short words for a tile: "not monitored: <cause>"
    rooms: tuple[str, ...]
    devices: frozenset[str] = frozenset()  # devices whose own silent/offline alarms it explains


CauseFn = Callable[[ClinicInputs], "ClinicCause | None"]


def _int(text: object) -> int | None:
    try:
        return int(float(str(text)))
    except (TypeError, ValueError):
        return None


def adapter_missing(status: Mapping[str, str], monitoring: MonitoringState, now_ms: int, cfg: Config) -> bool:
    """True when nothing is running this device's adapter: no ingest process alive at all,
    no status hash, or an adapter that stopped writing it for a heartbeat period."""
    ingest = monitoring.roles.get("ingest")
    if ingest is None or not ingest.fresh:
        return True
    if not status:
        return True
    updated = _int(status.get("updated_ms"))
    return updated is not None and now_ms - updated > cfg.alerts.heartbeat_stale_s * 1000


def _in_order(cfg: Config, rooms: set[str]) -> list[str]:
    """`rooms` in the config's order (unknown ones last)."""
    order = {r.id: ix for ix, r in enumerate(cfg.rooms)}
    return sorted(rooms, key=lambda r: (order.get(r, len(order)), r))


def _rooms_text(rooms: list[str]) -> str:
    return f"{len(rooms)} room{'s' if len(rooms) != 1 else ''}"


def ingest_down(i: ClinicInputs) -> ClinicCause | None:
    """Readings cannot come in: no ingest process alive, one stopped heartbeating, or the
    adapters of some devices stopped writing their status."""
    missing = [(r.id, d.id) for r, d in i.cfg.devices()
               if adapter_missing(i.statuses.get(d.id) or {}, i.monitoring, i.now_ms, i.cfg)]
    if not missing and not i.monitoring.ingest_problems:
        return None
    rooms = _in_order(i.cfg, {r for r, _d in missing})
    ingest = i.monitoring.roles.get("ingest")
    if ingest is None or not ingest.fresh:
        message, cause = f"Ingest not running: no readings from {_rooms_text(rooms)}", "ingest not running"
    elif i.monitoring.ingest_problems:
        stopped = ", ".join(inst for inst, _age in ingest.stale) or "an ingest process"
        message = f"Ingest process {stopped} stopped: no readings from {_rooms_text(rooms)}"
        cause = "ingest process stopped"
    else:
        message = f"Device adapters not reporting: no readings from {_rooms_text(rooms)}"
        cause = "device adapter not reporting"
    return ClinicCause("c:ingest", "degraded", message, cause, tuple(rooms), frozenset(d for _r, d in missing))


def engine_gap(i: ClinicInputs) -> ClinicCause | None:
    """Rooms that no alert worker evaluates: their worker stopped and nobody took them yet."""
    if not i.unevaluated:
        return None
    rooms = _in_order(i.cfg, set(i.unevaluated))
    why = sorted(set(i.unevaluated.values()))
    return ClinicCause("c:engine", "engine", f"Alert engine: {_rooms_text(rooms)} not evaluated ({'; '.join(why)})",
                       "alert engine worker not evaluating", tuple(rooms))


def not_stored(i: ClinicInputs) -> ClinicCause | None:
    """Readings accepted but not stored: a live ingest process reports (its storage record,
    monitor.model.storage) that accepted readings have waited longer than a few seconds.
    Rooms = those whose devices' adapters say their readings are not being stored (all rooms
    with devices when none says so yet); those devices' own "silent" alarms wait while it lasts.
    When Redis refuses every write this cannot be seen here (ingest cannot write its record,
    nor the engine an alarm): that outage is paged directly and recorded afterwards
    (monitor/alarms/outage.py)."""
    ingest = i.monitoring.roles.get("ingest")
    fresh = {f"ingest:{x}" for x in ingest.fresh} if ingest else set()
    why: list[str] = []
    for name in sorted(i.storage):
        st = StorageState.from_json(i.storage[name]) if name in fresh else None
        if st is not None and st.stalled(i.now_ms):
            text = st.cause or st.spool_error or "reason unknown"
            if text not in why:
                why.append(text)
    if not why:
        return None
    devs = [(r.id, d.id) for r, d in i.cfg.devices()
            if str((i.statuses.get(d.id) or {}).get("detail", "")).startswith(NOT_STORED)] or \
        [(r.id, d.id) for r, d in i.cfg.devices()]
    rooms = _in_order(i.cfg, {r for r, _d in devs})
    return ClinicCause("c:storage", "not_stored", f"Readings are not being stored: {'; '.join(why)}",
                       "readings not being stored", tuple(rooms), frozenset(d for _r, d in devs))


BROKER_DOWN_AFTER_MS = 2000  # a broker link down this long is an outage, not a reconnect


def broker_down_since(status: Mapping[str, str]) -> int | None:
    """When the MQTT adapter running this device lost its broker link (its status hash's
    `broker_down_ms`, written by devices/mqtt_adapter.py every second), None while connected."""
    down = _int(status.get("broker_down_ms"))
    return down if down else None


def broker_down(i: ClinicInputs) -> ClinicCause | None:
    """MQTT broker unreachable: the live adapters of some MQTT devices report (their status,
    `broker_down_ms`) that their broker link has been down for over BROKER_DOWN_AFTER_MS.
    Rooms = those devices' rooms (serial/HL7-only rooms are unaffected); those devices' own
    silent alarms wait while it lasts. A device whose adapter is gone is `ingest_down`'s."""
    devs: list[tuple[str, str]] = []
    for r, d in i.cfg.devices():
        st = i.statuses.get(d.id) or {}
        if d.transport != "mqtt" or adapter_missing(st, i.monitoring, i.now_ms, i.cfg):
            continue
        since = broker_down_since(st)
        if since is not None and i.now_ms - since > BROKER_DOWN_AFTER_MS:
            devs.append((r.id, d.id))
    if not devs:
        return None
    rooms = _in_order(i.cfg, {r for r, _d in devs})
    return ClinicCause("c:broker", "broker", f"MQTT broker unreachable: no readings from {_rooms_text(rooms)}",
                       "MQTT broker unreachable", tuple(rooms), frozenset(d for _r, d in devs))


def broker_problems(cfg: Config, statuses: Mapping[str, Mapping[str, str]], monitoring: MonitoringState,
                    now_ms: int) -> list[str]:
    """The `broker_down` cause's sentence, for /health and the screens' reasons (pure)."""
    c = broker_down(ClinicInputs(cfg, now_ms, monitoring, statuses))
    return [f"{c.message} ({', '.join(c.rooms)})"] if c else []


CAUSES: tuple[CauseFn, ...] = (ingest_down, engine_gap, not_stored, broker_down)
OWNER_SILENT_MS = 3000  # workers beat every second: an owner this quiet is not evaluating


def unevaluated_rooms(owners: Mapping[str, str | None], heartbeats: Mapping[str, str],
                      free_since: Mapping[str, int], now_ms: int, lease_ms: int) -> dict[str, str]:
    """room → why no live worker evaluates it: its owner stopped heartbeating, or it has been
    without an owner for a whole lease period (a room handed from one worker to another is
    free for less than that)."""
    out: dict[str, str] = {}
    for room, owner in owners.items():
        if owner is None:
            since = free_since.get(room)
            if since is not None and now_ms - since >= lease_ms:
                out[room] = "rooms not taken over yet"
            continue
        beat = _int(heartbeats.get(f"alerts:{owner}"))
        # "silent", not "stopped": after a Redis failover a live worker's heartbeat is stale
        # on the new master until its next beat lands, and the words must not claim a crash.
        if beat is None:
            out[room] = f"worker {owner} not heard from"
        elif now_ms - beat > OWNER_SILENT_MS:
            out[room] = f"worker {owner} silent for {(now_ms - beat) // 1000} s"
    return out


def clinic_causes(inputs: ClinicInputs, causes: tuple[CauseFn, ...] = CAUSES) -> dict[str, ClinicCause]:
    """Every cause that holds now, by condition key."""
    out: dict[str, ClinicCause] = {}
    for fn in causes:
        c = fn(inputs)
        if c is not None:
            out[c.key] = c
    return out


def covered(causes: Mapping[str, ClinicCause]) -> dict[str, ClinicCause]:
    """device id → the cause that explains its silence (its own alarms wait while it lasts)."""
    out: dict[str, ClinicCause] = {}
    for c in causes.values():
        for d in c.devices:
            out.setdefault(d, c)
    return out


def desired(causes: Mapping[str, ClinicCause], tech: Mapping[str, TechRule],
            since_ms: Mapping[str, int], now_ms: int) -> dict[str, Desired]:
    """The clinic-wide alerts wanted now (for `evaluate.reconcile` on room "*"), honouring
    each condition's delay from when the cause began (`since_ms`)."""
    out: dict[str, Desired] = {}
    for key, c in causes.items():
        rule = tech[c.cond]
        start = since_ms.get(key, now_ms)
        if now_ms - start < rule.delay_ms:
            continue
        out[key] = Desired(key=key, cond=c.cond, kind="technical", priority=rule.priority, message=c.message,
                           start_ms=start, extra=(("rooms", ",".join(c.rooms)), ("cause", c.cause)))
    return out
