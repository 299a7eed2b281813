"""The alert engine's data: rules, condition state, alert records and alert events.

Everything here is plain data with pure encoders; no I/O.
- `Rule`: one metric's limits for one room (merged config + session overrides).
- `Cond`: a condition in progress (pending or raised) for one room/device/metric; a
  condition that is normal is simply absent.
- Alert record: the JSON kept in `keys.active_alerts(room)` (docs/alerts.md lists fields).
- `AlertEvent`: one entry of the `alerts` stream (CONTRACT.md fields).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from monitor.model.codec import fmt_value

PRIORITY_RANK = {"high": 0, "medium": 1, "low": 2}
EVENTS = ("raised", "escalated", "acknowledged", "audio_paused", "pause_ended", "cleared", "reset",
          "unacknowledged", "dismissed")  # the last two added: undo of an acknowledge, a reminder dismissed
KINDS = ("physiological", "technical", "reminder")


@dataclass(frozen=True, slots=True)
class Rule:
    """One metric's alarm rule: beyond `low`/`high` for `delay_ms` raises; back by `hysteresis` clears."""

    metric: str
    low: float | None
    high: float | None
    priority: str
    delay_ms: int
    hysteresis: float
    latching: bool

    def breach(self, value: float) -> str | None:
        """"high"/"low" when `value` is beyond a limit (strictly), else None."""
        if self.high is not None and value > self.high:
            return "high"
        if self.low is not None and value < self.low:
            return "low"
        return None

    def back_inside(self, value: float, side: str) -> bool:
        """True when `value` is back inside the `side` limit by the hysteresis margin."""
        if side == "high":
            return self.high is None or value <= self.high - self.hysteresis
        return self.low is None or value >= self.low + self.hysteresis

    def limit(self, side: str) -> float | None:
        """The limit on `side`."""
        return self.high if side == "high" else self.low


@dataclass(frozen=True, slots=True)
class Cond:
    """A condition that is not normal: pending (not yet raised) or raised.

    `since_ms` is when the condition began (receive clock of its first reading); `side` is "high"/"low" for a
    physiological condition and "on" for a technical one; `alert_id` is set once raised.
    """

    since_ms: int
    side: str
    alert_id: str = ""
    value: float | None = None

    @property
    def raised(self) -> bool:
        """Whether this episode's alert has been raised."""
        return bool(self.alert_id)

    def to_json(self) -> str:
        """Encode for the alarm-state hash."""
        return json.dumps([self.since_ms, self.side, self.alert_id, self.value])

    @staticmethod
    def from_json(text: str) -> Cond:
        """Decode from the alarm-state hash."""
        since_ms, side, alert_id, value = json.loads(text)
        return Cond(int(since_ms), side, alert_id, value)


def alert_id(room: str, dev: str, cond: str, start_ms: int) -> str:
    """The stable id of one episode: room, device, condition and its start (measurement) time.

    Deterministic, so a replayed reading or a new worker derives the same id. Room and
    device ids cannot contain "." (config ID_RE), so the room is the text before the first dot.
    """
    return f"{room}.{dev or '-'}.{cond}.{start_ms}"


def room_of(alert: str) -> str:
    """The room an alert id belongs to."""
    room, sep, _ = alert.partition(".")
    if not sep or not room:
        raise KeyError(alert)
    return room


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One entry of the `alerts` stream (CONTRACT.md)."""

    ts_ms: int
    room: str
    alert: str
    event: str
    kind: str
    priority: str
    metric: str = ""
    dev: str = ""
    value: float | None = None
    limit: float | None = None
    message: str = ""
    user: str = ""
    rooms: str = ""  # clinic-wide alerts (room "*"): the affected rooms, comma-separated

    def to_fields(self) -> dict[str, str]:
        """Stream fields; optional ones only when present."""
        f = {"ts": str(self.ts_ms), "room": self.room, "alert": self.alert, "event": self.event,
             "kind": self.kind, "priority": self.priority, "message": self.message}
        if self.metric:
            f["metric"] = self.metric
        if self.dev:
            f["dev"] = self.dev
        if self.value is not None:
            f["value"] = fmt_value(self.value)
        if self.limit is not None:
            f["limit"] = fmt_value(self.limit)
        if self.user:
            f["user"] = self.user
        if self.rooms:
            f["rooms"] = self.rooms
        return f

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (outbound payloads, APIs)."""
        return {"ts": self.ts_ms, "room": self.room, "alert": self.alert, "event": self.event,
                "kind": self.kind, "priority": self.priority, "metric": self.metric or None,
                "dev": self.dev or None, "value": self.value, "limit": self.limit,
                "message": self.message, "user": self.user or None,
                **({"rooms": self.rooms.split(",")} if self.room == "*" else {})}


def event_from_fields(fields: Mapping[str, str]) -> AlertEvent:
    """Decode an `alerts` stream entry."""
    def num(k: str) -> float | None:
        return float(fields[k]) if fields.get(k) not in (None, "") else None
    return AlertEvent(int(fields["ts"]), fields["room"], fields["alert"], fields["event"],
                      fields.get("kind", ""), fields.get("priority", ""), fields.get("metric", ""),
                      fields.get("dev", ""), num("value"), num("limit"), fields.get("message", ""),
                      fields.get("user", ""), fields.get("rooms", ""))


def new_record(*, alert: str, room: str, dev: str, metric: str, kind: str, priority: str,
               value: float | None, limit: float | None, message: str, raised_ms: int,
               onset_ms: int, cond: str, latching: bool, **extra: Any) -> dict[str, Any]:
    """A fresh active-alert record (the JSON in `keys.active_alerts(room)`)."""
    rec: dict[str, Any] = {
        "alert": alert, "room": room, "dev": dev or None, "metric": metric or None, "kind": kind,
        "priority": priority, "state": "active", "value": value, "limit": limit,
        "message": message, "raised_ms": raised_ms, "onset_ms": onset_ms,
        "acknowledged_by": None, "acknowledged_ms": None, "paused_until_ms": None,
        "escalated": False, "cond": cond, "latching": latching, "cleared_ms": None,
    }
    rec.update(extra)
    return rec


def event_for(rec: Mapping[str, Any], event: str, ts_ms: int, message: str | None = None,
              user: str = "") -> AlertEvent:
    """The event `event` about an active-alert record."""
    return AlertEvent(ts_ms, rec["room"], rec["alert"], event, rec["kind"], rec["priority"],
                      rec.get("metric") or "", rec.get("dev") or "", rec.get("value"),
                      rec.get("limit"), rec["message"] if message is None else message, user,
                      str(rec.get("rooms") or ""))


def encode_record(rec: Mapping[str, Any]) -> str:
    """JSON text of a record."""
    return json.dumps(rec, sort_keys=True, separators=(",", ":"))


def sort_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most urgent first: priority, then active before latched, then oldest first."""
    return sorted(records, key=lambda r: (PRIORITY_RANK.get(r.get("priority", "low"), 3),
                                          r.get("state") != "active", r.get("raised_ms") or 0))


@dataclass(frozen=True, slots=True)
class TechRule:
    """A technical condition's priority and condition delay."""

    condition: str
    priority: str
    delay_ms: int


@dataclass(frozen=True, slots=True)
class Desired:
    """A condition that holds right now, computed from wall-clock state (device status,
    heartbeats, session timeline) rather than from one reading; reconciled into alerts."""

    key: str
    cond: str
    kind: str
    priority: str
    message: str
    start_ms: int
    dev: str = ""
    metric: str = ""
    value: float | None = None
    limit: float | None = None
    extra: tuple[tuple[str, Any], ...] = ()
