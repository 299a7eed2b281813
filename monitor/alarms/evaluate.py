"""Pure evaluation: a room's readings + condition state → transitions → alert changes.

Two layers, both free of I/O and clocks (time comes in as arguments):
1. `evaluate(...)` walks readings in stream order and moves each room/device/metric condition
   through normal → pending → raised → normal on the *receive* clock (`Reading.clock_ms`:
   when VitalWatch received the reading — the stream entry id, or `rx` for a reading stored
   late). A device's `ts` is only the reading's label: a device clock that is behind, ahead
   or jumps cannot shorten or postpone an alarm delay:
   - raise once the value has stayed beyond the limit for `delay_ms` (0: the first
     breaching reading raises); a reading back inside the limit before that resets it;
   - clear once the value is back inside by the hysteresis margin (so a value wobbling
     around the limit does not chatter);
   - values on a reading flagged as untrustworthy (sensor off, artifact, …) never count for
     physiological rules; the flags drive technical conditions instead.
   Alert ids are derived from room/device/condition/start time, so replaying the same
   readings from the same state yields the same ids.
2. `Book` + `apply_transitions` / `reconcile` / `apply_timers` turn those transitions and
   wall-clock conditions into changes of the active-alert records and alert events
   (latching, escalation, pause expiry).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.model.readings import Reading

from .model import AlertEvent, Cond, Desired, Rule, TechRule, alert_id, event_for, new_record
from .text import back_text, condition_text

# Flags that make a reading's values untrustworthy for physiological rules.
QUALITY_FLAGS = frozenset({"sensor_off", "no_sensor", "low_perfusion", "artifact", "pulse_search",
                           "interference", "low_signal_iq", "questionable"})
BP_METRICS = frozenset({"sbp", "dbp", "map"})

# technical condition → the flags that signal it
FLAG_CONDITIONS: dict[str, frozenset[str]] = {
    "sensor_off": frozenset({"sensor_off"}),
    "no_sensor": frozenset({"no_sensor"}),
    "poor_signal": frozenset({"low_perfusion", "artifact", "pulse_search", "interference",
                              "low_signal_iq", "questionable"}),
    "measurement_failed": frozenset({"measurement_error"}),
    "device_alarm": frozenset({"device_alarm"}),
    "low_battery": frozenset({"low_battery"}),
}
ALL_CONDITION_FLAGS = frozenset().union(*FLAG_CONDITIONS.values())
TECH_MESSAGES = {
    "sensor_off": "Sensor off",
    "no_sensor": "No sensor connected",
    "poor_signal": "Poor signal quality",
    "measurement_failed": "NIBP measurement failed",
    "device_alarm": "Device reports an alarm",
    "low_battery": "Device battery low",
}


@dataclass(frozen=True, slots=True)
class Transition:
    """A condition raised or cleared by a reading (`ts_ms`: its receive time)."""

    what: str  # "raise" | "clear"
    key: str  # condition key in the alarm state
    alert: str
    room: str
    dev: str
    cond: str  # metric for physiological, technical condition name otherwise
    kind: str
    priority: str
    latching: bool
    ts_ms: int
    onset_ms: int
    value: float | None
    limit: float | None
    message: str
    metric: str = ""


@dataclass
class Outcome:
    """What `evaluate` found: changed conditions (None = back to normal) and transitions."""

    changed: dict[str, Cond | None] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)


def phys_key(dev: str, metric: str) -> str:
    """Alarm-state key of a physiological condition."""
    return f"p:{dev}:{metric}"


def tech_key(dev: str, cond: str) -> str:
    """Alarm-state key of a reading-driven technical condition."""
    return f"t:{dev}:{cond}"


def _phys_message(rule: Rule, side: str, value: float) -> str:
    return condition_text(rule.metric, side, value, rule.limit(side))


def evaluate(room: str, rules: Mapping[str, Rule], tech: Mapping[str, TechRule],
             conds: Mapping[str, Cond], readings: Iterable[Reading]) -> Outcome:
    """Walk `readings` (in stream order) from condition state `conds`; `conds` is not modified."""
    cur = dict(conds)
    out = Outcome()
    changed, transitions = out.changed, out.transitions
    tech_devs = {k.split(":", 2)[1] for k in cur if k.startswith("t:")}
    for r in readings:
        dev, ts, flags = r.device, r.clock_ms, r.flags
        if r.values and not (flags & QUALITY_FLAGS):
            bp_failed = "measurement_error" in flags
            for metric, value in r.values.items():
                rule = rules.get(metric)
                if rule is None or (bp_failed and metric in BP_METRICS):
                    continue
                key = phys_key(dev, metric)
                c = cur.get(key)
                side = rule.breach(value)
                if c is None and side is None:
                    continue  # the common case: normal stays normal
                new = _step_phys(room, dev, rule, key, c, side, value, ts, transitions)
                if new is not c:
                    if new is None:
                        del cur[key]
                    else:
                        cur[key] = new
                    changed[key] = new
        if (flags & ALL_CONDITION_FLAGS) or dev in tech_devs:
            for name, wanted in FLAG_CONDITIONS.items():
                key = tech_key(dev, name)
                c = cur.get(key)
                present = bool(flags & wanted)
                if not present and c is None:
                    continue
                if not present and name == "measurement_failed" and not (r.values.keys() & BP_METRICS):
                    continue  # only a successful BP measurement ends a failed one
                new = _step_tech(room, dev, tech[name], key, c, present, ts, transitions)
                if new is not c:
                    if new is None:
                        del cur[key]
                    else:
                        cur[key] = new
                        tech_devs.add(dev)
                    changed[key] = new
    return out


def _step_phys(room: str, dev: str, rule: Rule, key: str, c: Cond | None, side: str | None,
               value: float, ts: int, out: list[Transition]) -> Cond | None:
    """One reading's effect on one physiological condition."""
    if c is not None and c.raised:
        if side == c.side:
            return c
        if side is None and not rule.back_inside(value, c.side):
            return c  # inside the limit but within the hysteresis band: still alarming
        out.append(_phys_transition("clear", room, dev, rule, key, c, value, ts, c.side))
        c = None
        if side is None:
            return None
    if side is None:
        return None  # pending and back inside the limit: the blip is over
    if c is None or c.side != side:
        c = Cond(ts, side, "", value)
    if ts - c.since_ms >= rule.delay_ms:
        c = Cond(c.since_ms, side, alert_id(room, dev, rule.metric, c.since_ms), value)
        out.append(_phys_transition("raise", room, dev, rule, key, c, value, ts, side))
    return c


def _phys_transition(what: str, room: str, dev: str, rule: Rule, key: str, c: Cond,
                     value: float, ts: int, side: str) -> Transition:
    if what == "raise":
        msg = _phys_message(rule, side, value)
    else:
        msg = back_text(rule.metric, value)
    return Transition(what, key, c.alert_id, room, dev, rule.metric, "physiological", rule.priority,
                      rule.latching, ts, c.since_ms, value, rule.limit(side), msg, rule.metric)


def _step_tech(room: str, dev: str, rule: TechRule, key: str, c: Cond | None, present: bool,
               ts: int, out: list[Transition]) -> Cond | None:
    """One reading's effect on one flag-driven technical condition."""
    if not present:
        if c is not None and c.raised:
            out.append(_tech_transition("clear", room, dev, rule, key, c, ts))
        return None
    if c is None:
        c = Cond(ts, "on")
    if not c.raised and ts - c.since_ms >= rule.delay_ms:
        c = Cond(c.since_ms, "on", alert_id(room, dev, rule.condition, c.since_ms))
        out.append(_tech_transition("raise", room, dev, rule, key, c, ts))
    return c


def _tech_transition(what: str, room: str, dev: str, rule: TechRule, key: str, c: Cond,
                     ts: int) -> Transition:
    base = TECH_MESSAGES.get(rule.condition, rule.condition)
    msg = f"{base} ({dev})" if what == "raise" else f"{base} ({dev}): resolved"
    # IEC 60601-1-8: technical alarms do not latch
    return Transition(what, key, c.alert_id, room, dev, rule.condition, "technical", rule.priority,
                      False, ts, c.since_ms, None, None, msg)


# --- alert records -----------------------------------------------------------------------
class Book:
    """A working copy of one room's active alerts that records what changed.

    `updates` maps alert id → new record (None = removed); `events` lists the alert events
    in order. Built from the records read from Redis; written back in one transaction.
    """

    def __init__(self, active: Mapping[str, dict[str, Any]]) -> None:
        self.records: dict[str, dict[str, Any]] = {k: dict(v) for k, v in active.items()}
        self.updates: dict[str, dict[str, Any] | None] = {}
        self.events: list[AlertEvent] = []

    def put(self, rec: dict[str, Any]) -> None:
        """Add or replace a record."""
        self.records[rec["alert"]] = rec
        self.updates[rec["alert"]] = rec

    def remove(self, alert: str) -> None:
        """Remove a record."""
        self.records.pop(alert, None)
        self.updates[alert] = None

    def emit(self, event: AlertEvent) -> None:
        """Append an alert event."""
        self.events.append(event)

    @property
    def changed(self) -> bool:
        """Whether anything must be written."""
        return bool(self.updates or self.events)


def apply_transitions(book: Book, transitions: Iterable[Transition], now_ms: int) -> None:
    """Raise/clear records for reading-driven transitions; a raise already present is a no-op."""
    for t in transitions:
        if t.what == "raise":
            if t.alert in book.records:
                continue  # idempotent: this episode was raised before (replay)
            rec = new_record(alert=t.alert, room=t.room, dev=t.dev, metric=t.metric, kind=t.kind,
                             priority=t.priority, value=t.value, limit=t.limit, message=t.message,
                             raised_ms=now_ms, onset_ms=t.onset_ms, cond=t.key, latching=t.latching)
            book.put(rec)
            book.emit(event_for(rec, "raised", now_ms))
        else:
            _clear(book, t.alert, now_ms, t.message, t.value)


def _clear(book: Book, alert: str, now_ms: int, message: str, value: float | None = None) -> None:
    rec = book.records.get(alert)
    if rec is None or rec["state"] != "active":
        return
    rec = dict(rec)
    if value is not None:
        rec["value"] = value
    if rec.get("latching"):
        # the record's text stays the condition that raised it: "latched" is its state, not
        # more text (a row ending "(latched until reset) · 161" read as a second breach)
        rec.update(state="latched", cleared_ms=now_ms)
        book.put(rec)
        book.emit(event_for(rec, "cleared", now_ms, message=f"{message}; latched until reset"))
    else:
        book.remove(alert)
        book.emit(event_for(rec, "cleared", now_ms, message=message))


def reconcile(book: Book, room: str, desired: Mapping[str, Desired], scope: str, now_ms: int,
              why_gone: Mapping[str, str] | None = None) -> None:
    """Make the active alerts whose condition key starts with `scope` match `desired`.

    A desired condition without an active alert is raised; one that has an alert updates
    its message/value quietly; an active alert no longer desired is cleared ("…: resolved",
    or "…: <why_gone[key]>"). A dismissed reminder (state "dismissed") is not raised again
    while its condition lasts, and is dropped quietly once the condition is over.
    """
    existing = {rec["cond"]: aid for aid, rec in book.records.items()
                if rec.get("cond", "").startswith(scope) and rec["state"] == "active"}
    for aid, rec in list(book.records.items()):
        if rec["state"] == "dismissed" and rec.get("cond", "").startswith(scope) and rec["cond"] not in desired:
            book.remove(aid)
    for key, aid in existing.items():
        if key not in desired:  # clears first: the event order reads as what happened
            rec = book.records[aid]
            _clear(book, aid, now_ms, f"{rec['message']}: {(why_gone or {}).get(key, 'resolved')}")
    for key, d in desired.items():
        found = existing.get(key)
        if found is not None:
            rec = book.records[found]
            extra = dict(d.extra)
            if (rec["message"], rec.get("value"), rec.get("limit")) != (d.message, d.value, d.limit) or \
                    any(rec.get(k) != v for k, v in extra.items()):
                book.put({**rec, "message": d.message, "value": d.value, "limit": d.limit, **extra})
            continue
        rec = new_record(alert=alert_id(room, d.dev, d.cond, d.start_ms), room=room, dev=d.dev,
                         metric=d.metric, kind=d.kind, priority=d.priority, value=d.value,
                         limit=d.limit, message=d.message, raised_ms=now_ms, onset_ms=d.start_ms,
                         cond=key, latching=False, **dict(d.extra))
        if rec["alert"] in book.records:
            continue
        book.put(rec)
        book.emit(event_for(rec, "raised", now_ms))


def timers_due_ms(records: Mapping[str, Mapping[str, Any]], escalate_after_ms: int) -> int | None:
    """The earliest time at which `apply_timers` would change any of `records` (a pause
    running out, an escalation falling due); None when no timer is set. Before it,
    `apply_timers` on these records changes nothing."""
    due: int | None = None
    for rec in records.values():
        until = rec.get("paused_until_ms")
        if until is not None:
            due = int(until) if due is None else min(due, int(until))
        if _escalates(rec) and rec.get("raised_ms"):
            at = int(rec["raised_ms"]) + escalate_after_ms
            due = at if due is None else min(due, at)
    return due


def _escalates(rec: Mapping[str, Any]) -> bool:
    """An alert that escalates once unacknowledged for long enough."""
    return (rec["priority"] == "high" and rec.get("acknowledged_ms") is None and not rec.get("escalated")
            and rec.get("kind") != "reminder" and rec.get("state") != "dismissed")


def apply_timers(book: Book, now_ms: int, escalate_after_ms: int) -> None:
    """Pause expiry (`pause_ended`) and escalation of unacknowledged high-priority alerts."""
    for aid in sorted(book.records):
        rec = book.records[aid]
        until = rec.get("paused_until_ms")
        if until is not None and until <= now_ms:
            rec = {**rec, "paused_until_ms": None}
            book.put(rec)
            if rec.get("acknowledged_ms") is None:
                book.emit(event_for(rec, "pause_ended", now_ms, message=f"{rec['message']}: audio pause ended"))
        if _escalates(rec) and now_ms - int(rec.get("raised_ms") or now_ms) >= escalate_after_ms:
            rec = {**rec, "escalated": True, "escalated_ms": now_ms}
            book.put(rec)
            book.emit(event_for(rec, "escalated", now_ms,
                                message=f"{rec['message']}: unacknowledged for "
                                        f"{(now_ms - int(rec['raised_ms'])) // 1000} s, escalated"))
