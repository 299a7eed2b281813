"""Dosing sessions: the one core used by the CLI, the dashboard and the API.

A session lives in Redis while it is open (header hash, event stream, limit overrides) and
is copied to the durable archive when it ends (`end_session` returns only once archived).
Redis schema (docs/sessions.md):

- `keys.session(id)` hash: id, room, patient, route, dose_mg, weight_kg, protocol,
  state (open|ended|archived), started_ms, first_dose_ms (after the first dose event),
  ended_ms, started_by, signed_by, signed_ms, ready_ms (first ready-to-leave observation).
- `keys.open_sessions` hash room → open session id (HSETNX: at most one per room).
- `keys.sessions_index` zset session id → started_ms.
- `keys.session_events(id)` stream: ts, type, user + per-type fields (see EVENT_TYPES).
- `keys.session_limits(id)` hash metric → JSON of AlarmSpec fields (removed at end).

Every action writes an audit entry (monitor.accounts.audit.record). Errors: UnknownSession,
UnknownRoom, RoomBusy, SessionClosed, InvalidEvent (all subclasses of SessionError);
Redis errors propagate unchanged (the caller decides: CLI exit 1, dashboard banner).
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError

from monitor.accounts import audit
from monitor.alarms.actions import end_session_reminders
from monitor.model import clock
from monitor.model.config import AlarmSpec, Config
from monitor.model.keys import Keys
from monitor.model.readings import METRICS, check_value
from monitor.sessions import archive
from monitor.sessions.records import decode_event, decode_header, get_session
from monitor.store import redis_types
from monitor.store.status import read_status

ROUTES = ("iv", "im", "intranasal")
DEFAULT_PROTOCOL = {"intranasal": "esketamine", "iv": "iv-ketamine", "im": "iv-ketamine"}
OBSERVATIONS = ("sedation", "dissociation", "respiratory_depression", "nausea", "ready_to_leave")
EVENT_TYPES = (
    "start", "devices_confirmed", "dose", "bp", "note", "observe", "limit", "end", "addendum",
    "signoff",
)
STATES = ("open", "ended", "archived")


class SessionError(Exception):
    """A session action that cannot be done as asked (bad usage, not an outage)."""


class UnknownSession(SessionError, KeyError):
    """No session with this id."""

    def __str__(self) -> str:
        return f"unknown session {self.args[0]!r}"


class UnknownRoom(SessionError, KeyError):
    """No room with this id in the config."""

    def __str__(self) -> str:
        return f"unknown room {self.args[0]!r}"


class RoomBusy(SessionError):
    """The room already has an open session."""

    def __init__(self, room: str, session_id: str) -> None:
        super().__init__(f"room {room!r} already has an open session: {session_id}")
        self.room, self.session_id = room, session_id


class SessionClosed(SessionError):
    """The session has ended; later changes are addenda."""


class InvalidEvent(SessionError, ValueError):
    """An event whose values are not acceptable (unknown observation, BP out of range…)."""


# --- pure helpers --------------------------------------------------------------------
def new_session_id(room: str, ts_ms: int) -> str:
    """A URL-safe, sortable, unique id: `<room>-<YYYYmmdd-HHMMSS>-<4 hex>` (UTC)."""
    stamp = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y%m%d-%H%M%S")
    return f"{room}-{stamp}-{secrets.token_hex(2)}"


def event_fields(kind: str, ts_ms: int, user: str, **extra: Any) -> dict[str, str]:
    """Encode one session event as stream fields (None values are left out)."""
    if kind not in EVENT_TYPES:
        raise InvalidEvent(f"unknown event type {kind!r}")
    fields = {"ts": str(int(ts_ms)), "type": kind, "user": user or "unknown"}
    for k, v in extra.items():
        if v is None:
            continue
        fields[k] = v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else _num(v)
    return fields


def _num(v: float | int) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


# --- reads -------------------------------------------------------------------------------
def open_session_for_room(client: redis.Redis, keys: Keys, room: str) -> str | None:
    """Id of the room's open session, or None."""
    return redis_types.opt_str(client.hget(keys.open_sessions, room))


def open_sessions(client: redis.Redis, keys: Keys) -> dict[str, str]:
    """room → open session id, for every room with one."""
    return redis_types.str_hash(client.hgetall(keys.open_sessions))


def session_events(client: redis.Redis, keys: Keys, sid: str) -> list[dict[str, Any]]:
    """Every event of a session, oldest first, decoded."""
    return [decode_event(i, f) for i, f in redis_types.entries(client.xrange(keys.session_events(sid)))]


def session_limits(client: redis.Redis, keys: Keys, sid: str) -> dict[str, dict[str, Any]]:
    """The session's temporary limit overrides: metric → AlarmSpec fields."""
    raw = redis_types.str_hash(client.hgetall(keys.session_limits(sid)))
    return {m: json.loads(v) for m, v in raw.items()}


def list_sessions(client: redis.Redis, keys: Keys, since_ms: int | None = None,
                  limit: int = 200) -> list[dict[str, Any]]:
    """Headers of the newest sessions Redis still holds (newest first)."""
    ids = redis_types.members(client.zrevrangebyscore(
        keys.sessions_index, "+inf", since_ms if since_ms is not None else "-inf", start=0, num=limit))
    pipe = client.pipeline(transaction=False)
    for sid in ids:
        pipe.hgetall(keys.session(sid))
    return [decode_header(h) for h in pipe.execute() if h]


def _require(client: redis.Redis, keys: Keys, sid: str, *, open_only: bool = True) -> dict[str, Any]:
    head = get_session(client, keys, sid)
    if head is None:
        raise UnknownSession(sid)
    if open_only and head.get("state") != "open":
        raise SessionClosed(f"session {sid} has ended; later changes are addenda")
    return head


def _append(client: redis.Redis, keys: Keys, sid: str, fields: dict[str, str]) -> str:
    return redis_types.text(client.xadd(keys.session_events(sid), redis_types.encodable(fields)))


# --- lifecycle ---------------------------------------------------------------------------
def start_session(
    client: redis.Redis, keys: Keys, cfg: Config, room: str, patient: str, route: str, user: str,
    dose_mg: float | None = None, weight_kg: float | None = None, protocol: str | None = None,
    now_ms: int | None = None,
) -> str:
    """Open a session in `room`; records start + devices_confirmed events. Returns its id.

    The room's configured devices and their current status are recorded as the
    `devices_confirmed` event: the person starting the session saw and confirmed them.
    """
    try:
        room_cfg = cfg.room(room)
    except KeyError:
        raise UnknownRoom(room) from None
    if route not in ROUTES:
        raise InvalidEvent(f"unknown route {route!r}; expected one of {', '.join(ROUTES)}")
    if not patient or not patient.strip():
        raise InvalidEvent("a patient id is required")
    for name, v in (("dose_mg", dose_mg), ("weight_kg", weight_kg)):
        if v is not None and not v > 0:
            raise InvalidEvent(f"{name} must be positive")
    ts = now_ms if now_ms is not None else clock.now_ms()
    protocol = protocol or DEFAULT_PROTOCOL[route]
    sid = new_session_id(room, ts)
    if not client.hsetnx(keys.open_sessions, room, sid):
        raise RoomBusy(room, open_session_for_room(client, keys, room) or "?")
    header = {"id": sid, "room": room, "patient": patient.strip(), "route": route,
              "protocol": protocol, "state": "open", "started_ms": str(ts),
              "started_by": user or "unknown"}
    if dose_mg is not None:
        header["dose_mg"] = _num(dose_mg)
    if weight_kg is not None:
        header["weight_kg"] = _num(weight_kg)
    dev_ids = [d.id for d in room_cfg.devices]
    status = read_status(client, keys, dev_ids) if dev_ids else {}
    devices = [{"id": d.id, "protocol": d.protocol, "transport": d.transport,
                "state": status.get(d.id, {}).get("state", "unknown"),
                "last_ts": int(status.get(d.id, {}).get("last_ts") or 0) or None}
               for d in room_cfg.devices]
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.session(sid), mapping=redis_types.encodable(header))
    pipe.zadd(keys.sessions_index, {sid: ts})
    pipe.xadd(keys.session_events(sid), redis_types.encodable(event_fields(
        "start", ts, user, room=room, patient=patient.strip(), route=route, protocol=protocol,
        dose_mg=dose_mg, weight_kg=weight_kg)))
    pipe.xadd(keys.session_events(sid), redis_types.encodable(
        event_fields("devices_confirmed", ts, user, devices=devices)))
    pipe.execute()
    audit.record(client, keys, user, "session.start", session=sid, room=room, patient=patient.strip(),
                 route=route, protocol=protocol, devices=[d["id"] for d in devices])
    return sid


def record_dose(client: redis.Redis, keys: Keys, sid: str, user: str, at_ms: int | None = None,
                dose_mg: float | None = None, note: str | None = None, now_ms: int | None = None) -> str:
    """A dose event at `at_ms` (default now); the first one sets first_dose_ms. Returns event id."""
    _require(client, keys, sid)
    ts = at_ms if at_ms is not None else (now_ms if now_ms is not None else clock.now_ms())
    if dose_mg is not None and not dose_mg > 0:
        raise InvalidEvent("dose_mg must be positive")
    eid = _append(client, keys, sid, event_fields("dose", ts, user, dose_mg=dose_mg, note=note))
    # the earliest dose wins even if a back-dated dose is recorded later
    cur = redis_types.opt_str(client.hget(keys.session(sid), "first_dose_ms"))
    if cur is None or int(cur) > ts:
        client.hset(keys.session(sid), "first_dose_ms", str(ts))
    audit.record(client, keys, user, "session.dose", session=sid, at_ms=ts, dose_mg=dose_mg)
    return eid


def record_bp(client: redis.Redis, keys: Keys, sid: str, user: str, sbp: int, dbp: int,
              now_ms: int | None = None) -> str:
    """A manual blood-pressure check (mmHg). Returns the event id."""
    _require(client, keys, sid)
    for metric, v in (("sbp", sbp), ("dbp", dbp)):
        if check_value(metric, v) is not None:
            m = METRICS[metric]
            raise InvalidEvent(f"{metric} {v} outside {m.low:g}–{m.high:g} {m.unit}")
    if dbp >= sbp:
        raise InvalidEvent(f"diastolic ({dbp}) must be below systolic ({sbp})")
    ts = now_ms if now_ms is not None else clock.now_ms()
    eid = _append(client, keys, sid, event_fields("bp", ts, user, sbp=sbp, dbp=dbp))
    audit.record(client, keys, user, "session.bp", session=sid, sbp=sbp, dbp=dbp)
    return eid


def add_note(client: redis.Redis, keys: Keys, sid: str, user: str, text: str,
             now_ms: int | None = None) -> str:
    """A free-text note on an open session. Returns the event id."""
    _require(client, keys, sid)
    if not text or not text.strip():
        raise InvalidEvent("a note needs text")
    ts = now_ms if now_ms is not None else clock.now_ms()
    eid = _append(client, keys, sid, event_fields("note", ts, user, text=text.strip()))
    audit.record(client, keys, user, "session.note", session=sid)
    return eid


def observe(client: redis.Redis, keys: Keys, sid: str, user: str, observation: str,
            now_ms: int | None = None, text: str | None = None) -> str:
    """A structured observation (one of OBSERVATIONS); ready_to_leave also sets ready_ms."""
    _require(client, keys, sid)
    observation = observation.replace("-", "_")
    if observation not in OBSERVATIONS:
        raise InvalidEvent(f"unknown observation {observation!r}; expected one of {', '.join(OBSERVATIONS)}")
    ts = now_ms if now_ms is not None else clock.now_ms()
    eid = _append(client, keys, sid, event_fields("observe", ts, user, observation=observation, text=text))
    if observation == "ready_to_leave":
        client.hsetnx(keys.session(sid), "ready_ms", str(ts))
    audit.record(client, keys, user, "session.observe", session=sid, observation=observation)
    return eid


def set_limit(client: redis.Redis, keys: Keys, sid: str, user: str, metric: str, spec: dict[str, Any],
              cfg: Config | None = None, now_ms: int | None = None) -> dict[str, Any]:
    """Override one metric's alarm limits for this session only; `{}` removes the override.

    `spec` holds AlarmSpec fields (low, high, priority, delay_s, hysteresis, latching).
    With `cfg`, the merged room + override limits must still have low < high.
    Returns the stored override.
    """
    head = _require(client, keys, sid)
    if metric not in METRICS:
        raise InvalidEvent(f"unknown metric {metric!r}")
    try:
        parsed = AlarmSpec.model_validate(spec)
    except ValidationError as e:
        raise InvalidEvent(f"bad limits for {metric}: {e.errors()[0]['msg']}") from None
    stored = {k: v for k, v in parsed.model_dump().items() if v is not None}
    if cfg is not None and stored:
        base = cfg.alarm_spec(head["room"], metric)
        eff = base.merged(parsed) if base else parsed
        if eff.low is not None and eff.high is not None and eff.low >= eff.high:
            raise InvalidEvent(f"{metric}: low ({eff.low:g}) must be below high ({eff.high:g})")
    ts = now_ms if now_ms is not None else clock.now_ms()
    if stored:
        client.hset(keys.session_limits(sid), metric, json.dumps(stored, sort_keys=True))
    else:
        client.hdel(keys.session_limits(sid), metric)
    _append(client, keys, sid, event_fields("limit", ts, user, metric=metric, limit=stored))
    audit.record(client, keys, user, "session.limit", session=sid, metric=metric, limit=stored)
    return stored


def end_session(client: redis.Redis, keys: Keys, cfg: Config, sid: str, user: str,
                now_ms: int | None = None) -> dict[str, Any]:
    """End (discharge) the session and archive it; returns the archive result.

    Ending an already ended session that is not yet archived (a crash between the two)
    resumes its archive; ending an archived session is a no-op that reports so.
    """
    head = _require(client, keys, sid, open_only=False)
    if head.get("state") == "open":
        ts = now_ms if now_ms is not None else clock.now_ms()
        ts = max(ts, int(head["started_ms"]))
        pipe = client.pipeline(transaction=True)
        pipe.hset(keys.session(sid), mapping={"state": "ended", "ended_ms": str(ts), "ended_by": user})
        pipe.xadd(keys.session_events(sid), redis_types.encodable(event_fields("end", ts, user)))
        pipe.delete(keys.session_limits(sid))
        pipe.execute()
        # only free the room if it still points at us
        if client.hget(keys.open_sessions, head["room"]) == sid:
            client.hdel(keys.open_sessions, head["room"])
        audit.record(client, keys, user, "session.end", session=sid)
        head["state"], head["ended_ms"] = "ended", ts
    if head.get("state") == "ended":
        # its reminders clear at the end, in the stream before the archive copies it (also
        # when resuming after a crash here): the record is final at once, not a minute later
        end_session_reminders(client, keys, head["room"], sid, int(head["ended_ms"]))
    return archive.archive_session(client, keys, cfg, sid)


def sign_off(client: redis.Redis | None, keys: Keys, cfg: Config, sid: str, user: str,
             now_ms: int | None = None) -> dict[str, Any]:
    """A director's sign-off (name, time) in the archive; the session is locked after it."""
    ts = now_ms if now_ms is not None else clock.now_ms()
    result = archive.sign_off(archive.open_archive(cfg.archive.url), sid, user, ts)
    if client is not None:
        if client.exists(keys.session(sid)):
            client.hset(keys.session(sid), mapping={"signed_by": user, "signed_ms": str(ts)})
        audit.record(client, keys, user, "session.signoff", session=sid)
    return result


def add_addendum(client: redis.Redis | None, keys: Keys, cfg: Config, sid: str, user: str, text: str,
                 now_ms: int | None = None) -> dict[str, Any]:
    """A later change to an ended (possibly signed) session: stored as an addendum."""
    if not text or not text.strip():
        raise InvalidEvent("an addendum needs text")
    ts = now_ms if now_ms is not None else clock.now_ms()
    result = archive.add_addendum(archive.open_archive(cfg.archive.url), sid, user, text.strip(), ts)
    if client is not None:
        audit.record(client, keys, user, "session.addendum", session=sid)
    return result

