"""What a named person can do to an alert: acknowledge (and undo that within a few seconds),
pause its audio, reset a latched one, dismiss a reminder.

Used alike by the dashboard, the HTTP API and scripts. Each action changes the alert's
record in `keys.active_alerts(room)` (optimistic transaction, so it never overwrites an
engine update), appends the CONTRACT event to `keys.alerts` in the same transaction, and
writes the audit log (monitor.accounts.audit.record). An unknown alert id raises KeyError.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis

from monitor.accounts import audit
from monitor.model import clock
from monitor.model.keys import Keys
from monitor.store.redis_cluster import scan_keys

from .model import AlertEvent, encode_record, event_for, room_of, sort_records

PAUSE_MAX_S = 120  # IEC 60601-1-8: audio paused for at most 2 minutes
UNDO_S = 10  # an acknowledge clicked by mistake can be undone this long, by the one who clicked


class NotLatched(ValueError):
    """Reset asked for an alert whose condition is still present (acknowledge it instead)."""


class Refused(ValueError):
    """The action does not apply to this alert now (the message says why)."""


Change = Callable[[dict[str, Any], int], tuple[dict[str, Any] | None, AlertEvent | None]]


def _act(client: redis.Redis, keys: Keys, alert: str, user: str, action: str, change: Change,
         now_ms: int | None, **details: Any) -> dict[str, Any]:
    room = room_of(alert)
    key = keys.active_alerts(room)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                raw = pipe.hget(key, alert)
                if raw is None:
                    raise KeyError(alert)
                rec = json.loads(raw)
                ts = now_ms if now_ms is not None else clock.now_ms()
                new, event = change(rec, ts)
                pipe.multi()
                if new is None:
                    pipe.hdel(key, alert)
                elif new != rec:
                    pipe.hset(key, alert, encode_record(new))
                if event is not None:
                    pipe.xadd(keys.alerts, event.to_fields())  # type: ignore[arg-type]
                pipe.execute()
                break
            except redis.WatchError:
                continue  # the engine changed the room's alerts meanwhile: redo on fresh data
    audit.record(client, keys, user, action, alert=alert, room=room, changed=event is not None, **details)
    return new if new is not None else {**rec, "state": "reset"}


def acknowledge(client: redis.Redis, keys: Keys, alert_id: str, user: str,
                now_ms: int | None = None) -> dict[str, Any]:
    """Acknowledge an alert: its audio stops and it stays acknowledged until cleared/reset."""
    def change(rec: dict[str, Any], ts: int) -> tuple[dict[str, Any], AlertEvent | None]:
        if rec.get("acknowledged_ms") is not None:
            return rec, None  # already acknowledged: keep who did it first
        new = {**rec, "acknowledged_by": user, "acknowledged_ms": ts, "paused_until_ms": None}
        return new, event_for(new, "acknowledged", ts, message=f"{rec['message']}: acknowledged by {user}", user=user)
    return _act(client, keys, alert_id, user, "alert.acknowledge", change, now_ms)


def pause_audio(client: redis.Redis, keys: Keys, alert_id: str, user: str, seconds: float = 120,
                now_ms: int | None = None) -> dict[str, Any]:
    """Pause an alert's audio for `seconds` (at most 2 min); the engine ends the pause (`pause_ended`)."""
    pause_s = max(1.0, min(float(seconds), PAUSE_MAX_S))

    def change(rec: dict[str, Any], ts: int) -> tuple[dict[str, Any], AlertEvent]:
        new = {**rec, "paused_until_ms": ts + int(pause_s * 1000), "paused_by": user}
        return new, event_for(new, "audio_paused", ts,
                              message=f"{rec['message']}: audio paused {pause_s:g} s by {user}", user=user)
    return _act(client, keys, alert_id, user, "alert.pause_audio", change, now_ms, seconds=pause_s)


def reset(client: redis.Redis, keys: Keys, alert_id: str, user: str,
          now_ms: int | None = None) -> dict[str, Any]:
    """Reset a latched alert (condition gone): it is removed. NotLatched if still active."""
    def change(rec: dict[str, Any], ts: int) -> tuple[None, AlertEvent]:
        if rec.get("state") != "latched":
            raise NotLatched(f"alert {alert_id}: its condition is still present; acknowledge it instead")
        return None, event_for({**rec, "state": "reset"}, "reset", ts,
                               message=f"{rec['message']}: reset by {user}", user=user)
    return _act(client, keys, alert_id, user, "alert.reset", change, now_ms)


def unacknowledge(client: redis.Redis, keys: Keys, alert_id: str, user: str, window_s: float = UNDO_S,
                  now_ms: int | None = None) -> dict[str, Any]:
    """Undo an acknowledge clicked by mistake: only the person who acknowledged, within
    `window_s`, while the condition is still present. The alarm sounds again (it only becomes
    more alarming, which IEC 60601-1-8 allows at any time). Refused otherwise."""
    def change(rec: dict[str, Any], ts: int) -> tuple[dict[str, Any], AlertEvent]:
        if rec.get("acknowledged_ms") is None:
            raise Refused(f"alert {alert_id} is not acknowledged")
        if rec.get("acknowledged_by") != user:
            raise Refused(f"only {rec.get('acknowledged_by')} can undo their acknowledge")
        if ts - int(rec["acknowledged_ms"]) > window_s * 1000:
            raise Refused(f"an acknowledge can be undone for {window_s:g} s only")
        if rec.get("state") != "active":
            raise Refused(f"alert {alert_id} is no longer active")
        new = {**rec, "acknowledged_by": None, "acknowledged_ms": None}
        return new, event_for(new, "unacknowledged", ts, message=f"{rec['message']}: acknowledge undone by {user}",
                              user=user)
    return _act(client, keys, alert_id, user, "alert.unacknowledge", change, now_ms)


def dismiss(client: redis.Redis, keys: Keys, alert_id: str, user: str, now_ms: int | None = None) -> dict[str, Any]:
    """Dismiss a reminder: hidden while its condition lasts (the engine does not raise it
    again); doing the task (a BP recorded) ends it as well. Refused for an alarm."""
    def change(rec: dict[str, Any], ts: int) -> tuple[dict[str, Any], AlertEvent | None]:
        if rec.get("kind") != "reminder":
            raise Refused(f"alert {alert_id} is an alarm, not a reminder: acknowledge it instead")
        if rec.get("state") == "dismissed":
            return rec, None
        new = {**rec, "state": "dismissed", "dismissed_by": user, "dismissed_ms": ts}
        return new, event_for(new, "dismissed", ts, message=f"{rec['message']}: dismissed by {user}", user=user)
    return _act(client, keys, alert_id, user, "alert.dismiss", change, now_ms)


def active_alerts(client: redis.Redis, keys: Keys, rooms: list[str] | None = None) -> list[dict[str, Any]]:
    """Active and latched alerts of the given rooms (all rooms when None), most urgent first."""
    if rooms is None:
        pattern = keys.active_alerts("*").replace("{", "\\{").replace("}", "\\}")
        names = scan_keys(client, keys.alerts, pattern)
    else:
        names = [keys.active_alerts(r) for r in rooms]
    pipe = client.pipeline(transaction=False)
    for n in names:
        pipe.hvals(n)
    out = [rec for vals in pipe.execute() for v in vals if (rec := json.loads(v)).get("state") != "dismissed"]
    return sort_records(out)


def end_session_reminders(client: redis.Redis, keys: Keys, room: str, sid: str, ts_ms: int) -> list[str]:
    """Clear the active reminders of session `sid` in `room` because it ended, stamped `ts_ms`
    (the session's end); returns their ids. Called by `session end` after the session is
    marked ended and before it is archived, so the clear is in the alerts stream when the
    archive copies it — an export made right away and one made later read the same record.

    Each reminder's record is kept, marked "dismissed", instead of being removed: an engine
    tick that read the session while it was still open and commits after this must not raise
    the reminder again (`evaluate.reconcile` never raises an alert whose record exists), and
    the engine drops the record quietly at its next tick once no session asks for it.
    """
    key = keys.active_alerts(room)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                recs = [json.loads(v) for v in pipe.hvals(key)]
                mine = [r for r in recs if r.get("kind") == "reminder" and r.get("session") == sid
                        and r.get("state") == "active"]
                if not mine:
                    pipe.unwatch()
                    return []
                pipe.multi()
                for rec in mine:
                    new = {**rec, "state": "dismissed", "dismissed_by": "", "dismissed_ms": ts_ms}
                    pipe.hset(key, rec["alert"], encode_record(new))
                    ev = event_for(rec, "cleared", ts_ms, message=f"{rec['message']}: session ended")
                    pipe.xadd(keys.alerts, ev.to_fields())  # type: ignore[arg-type]
                pipe.execute()
                return [r["alert"] for r in mine]
            except redis.WatchError:
                continue  # the engine changed the room's alerts meanwhile: redo on fresh data
