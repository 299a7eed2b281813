"""The durable archive of finished sessions and the audit log (SQLAlchemy 2 Core).

SQLite by default (`archive.url = "sqlite:///data/archive.db"`, parent directories are
created), PostgreSQL by URL (`postgresql://…`, driven by psycopg 3). The schema is versioned
by monitor/sessions/archive_schema.py (a small migrations table, applied on open).

Archiving a session copies, from Redis: its header, every session event, every reading of
the room's stream whose ts falls between start and end, the room's alert events in that
span (acknowledgements included) — with the clinic-wide alarms (room "*") whose `rooms` name
the session's room and whose active interval overlaps the session — and the audit log (clinic-wide, incrementally). It is
idempotent and resumable: rows have unique keys and are inserted with "on conflict do
nothing"; each batch commits together with a per-(session, part) progress marker, so an
interrupted archive resumes after the last committed batch and a rerun adds nothing.

A signed session is locked: archiving it again changes nothing; later changes are addenda.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from monitor.accounts import audit
from monitor.accounts.audit import audit_fields
from monitor.alarms.clinic import CLINIC
from monitor.model import clock
from monitor.model.codec import CodecError, from_fields
from monitor.model.config import Config
from monitor.model.keys import ALERT_FIELDS, Keys
from monitor.model.readings import METRICS
from monitor.sessions import quality
from monitor.sessions.archive_schema import (
    alert_events,
    audit_log,
    metadata,
    migrate,
    progress,
    readings,
    session_events,
    session_summaries,
    sessions,
)
from monitor.sessions.records import decode_event, get_session
from monitor.sessions.review import SessionRecord, base_limits
from monitor.store import redis_types

log = logging.getLogger(__name__)

BATCH_SIZE = 2000
# Stream ids are insertion times; a device clock may run up to 5 min ahead (CONTRACT.md),
# and a writer that held readings through a short outage stores them late. Scan this much
# around the session's span and filter by the reading's own ts.
SCAN_MARGIN_MS = 10 * 60 * 1000
READING_METRICS = tuple(METRICS)
# How far before a session's start to look for a clinic-wide alarm (ingest down, readings
# not stored…) that was already active when it began and so belongs to its record.
CLINIC_LOOKBACK_MS = 24 * 3600 * 1000

OnBatch = Callable[[str, int], None]
# A row builder's answer for an entry that is fine but outside the session (not counted).
OUT_OF_SPAN: dict[str, Any] = {}


class ArchiveError(Exception):
    """An archive request that cannot be done (unknown session, session still open…)."""


class NotArchived(ArchiveError, KeyError):
    """No archived session with this id."""

    def __str__(self) -> str:
        return f"no archived session {self.args[0]!r}"


class Locked(ArchiveError):
    """The session is signed off; only addenda may be added."""


# --- opening ----------------------------------------------------------------------------
@dataclass
class Archive:
    """An opened, migrated archive database."""

    url: str
    engine: Engine

    @property
    def dialect(self) -> str:
        """"sqlite" or "postgresql"."""
        return self.engine.dialect.name


_open: dict[str, Archive] = {}
_open_lock = threading.Lock()


def engine_url(url: str) -> sa.URL:
    """The SQLAlchemy URL for a configured archive URL (postgresql:// → psycopg 3)."""
    u = sa.make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def open_archive(url: str) -> Archive:
    """The archive at `url`, created and migrated on first use (cached per URL per process)."""
    with _open_lock:
        arch = _open.get(url)
        if arch is not None:
            return arch
        u = engine_url(url)
        if u.drivername.startswith("sqlite"):
            if u.database and u.database != ":memory:":
                Path(u.database).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(u, connect_args={"timeout": 30})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = sa.create_engine(u, pool_pre_ping=True)
        migrate(engine)
        arch = Archive(url, engine)
        _open[url] = arch
        return arch


def close_archive(url: str) -> None:
    """Dispose of a cached archive engine (tests, purge of a dropped database)."""
    with _open_lock:
        arch = _open.pop(url, None)
    if arch is not None:
        arch.engine.dispose()


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    # WAL: the dashboard reads while `session end` writes; NORMAL sync is durable in WAL.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _insert(conn: Connection, table: sa.Table) -> Any:
    return pg_insert(table) if conn.dialect.name == "postgresql" else sqlite_insert(table)


def insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, skipping any whose unique key already exists (the idempotence)."""
    if rows:
        conn.execute(_insert(conn, table).on_conflict_do_nothing(), rows)


def _upsert(conn: Connection, table: sa.Table, row: dict[str, Any], keys: list[str],
            update: Iterable[str]) -> None:
    stmt = _insert(conn, table).values(**row)
    cols = {c: getattr(stmt.excluded, c) for c in update}
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=cols) if cols
                 else stmt.on_conflict_do_nothing())


# --- pure row builders ------------------------------------------------------------------
def reading_row(sid: str, entry_id: str, fields: dict[str, str]) -> dict[str, Any] | None:
    """A vitals-stream entry as a `readings` row, or None if malformed (pure; codec.from_fields)."""
    try:
        r = from_fields("", fields)
    except CodecError:
        return None
    row: dict[str, Any] = {"session_id": sid, "stream_id": entry_id, "ts_ms": r.ts_ms, "dev": r.device,
                           "flags": ",".join(sorted(r.flags)) or None}
    for m in READING_METRICS:
        row[m] = r.values.get(m)
    return row


def alert_row(sid: str, entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """An alerts-stream entry as an `alert_events` row (pure)."""
    row: dict[str, Any] = {"session_id": sid, "stream_id": entry_id, "ts_ms": int(fields.get("ts") or 0)}
    for f in ALERT_FIELDS:
        if f == "ts":
            continue
        col = "limit_value" if f == "limit" else f
        row[col] = fields.get(f)
    return row


def audit_row(clinic: str, entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """An audit-stream entry as an `audit_log` row, with the session it is about (pure)."""
    details = fields.get("details") or "{}"
    try:
        sid = json.loads(details).get("session")
    except (ValueError, AttributeError):
        sid = None
    return {"clinic": clinic, "stream_id": entry_id, "ts_ms": int(fields.get("ts") or 0),
            "user": fields.get("user") or "unknown", "action": fields.get("action") or "",
            "details": details, "session_id": sid if isinstance(sid, str) else None}


def event_row(sid: str, entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A session-event entry as a `session_events` row: common columns + JSON data (pure)."""
    data = {k: v for k, v in fields.items() if k not in ("ts", "type", "user")}
    return {"session_id": sid, "event_id": entry_id, "ts_ms": int(fields["ts"]), "type": fields["type"],
            "user": fields.get("user") or "unknown", "data": json.dumps(data, sort_keys=True)}


# --- archiving ----------------------------------------------------------------------------
def _progress(conn: Connection, scope: str, part: str) -> tuple[str | None, bool]:
    row = conn.execute(sa.select(progress.c.last_id, progress.c.done)
                       .where(progress.c.scope == scope, progress.c.part == part)).first()
    return (row.last_id or None, bool(row.done)) if row else (None, False)


def _copy_stream(
    arch: Archive, client: redis.Redis, scope: str, part: str, key: str, start_id: str, end_id: str,
    table: sa.Table, to_rows: Callable[[str, dict[str, str]], dict[str, Any] | None],
    batch_size: int, on_batch: OnBatch | None, finishes: bool = True,
) -> dict[str, int]:
    """Copy a stream range into `table` in committed batches, resuming from the marker."""
    with arch.engine.connect() as conn:
        cursor, done = _progress(conn, scope, part)
    stats = {"entries": 0, "rows": 0, "skipped": 0, "batches": 0}
    if done:
        return stats
    while True:
        lo = f"({cursor}" if cursor else start_id
        chunk = redis_types.entries(client.xrange(key, min=lo, max=end_id, count=batch_size))
        rows = []
        for entry_id, fields in chunk:
            row = to_rows(entry_id, fields)
            if row is None:
                stats["skipped"] += 1
            elif row is not OUT_OF_SPAN:
                rows.append(row)
        last = chunk[-1][0] if chunk else cursor
        finished = len(chunk) < batch_size
        with arch.engine.begin() as conn:
            insert_ignore(conn, table, rows)
            _upsert(conn, progress, {"scope": scope, "part": part, "last_id": last or "",
                                     "done": finished and finishes, "updated_ms": clock.now_ms()},
                    ["scope", "part"], ["last_id", "done", "updated_ms"])
        stats["entries"] += len(chunk)
        stats["rows"] += len(rows)
        stats["batches"] += 1
        if on_batch is not None:
            on_batch(part, stats["batches"])  # tests inject a crash here
        if finished:
            return stats
        cursor = last


def archive_audit(client: redis.Redis, keys: Keys, arch: Archive, batch_size: int = BATCH_SIZE,
                  on_batch: OnBatch | None = None, retention_ms: int | None = None) -> dict[str, int]:
    """Copy new audit entries (all of keys.audit since the last run) into the archive; with
    `retention_ms`, then trim from Redis what the archive holds and is older than that."""
    scope = f"audit:{keys.clinic}"
    stats = _copy_stream(arch, client, scope, "audit", keys.audit, "-", "+", audit_log,
                         lambda i, f: audit_row(keys.clinic, i, f), batch_size, on_batch, finishes=False)
    if retention_ms is not None:
        with arch.engine.connect() as conn:
            archived_id, _done = _progress(conn, scope, "audit")
        stats["trimmed"] = audit.trim_archived(client, keys, archived_id, retention_ms)
    return stats


def _header_row(keys: Keys, head: dict[str, Any], cfg: Config, state: str) -> dict[str, Any]:
    return {
        "id": head["id"], "clinic": keys.clinic, "room": head.get("room"), "patient": head.get("patient"),
        "route": head.get("route"), "protocol": head.get("protocol"),
        "dose_mg": float(head["dose_mg"]) if head.get("dose_mg") else None,
        "weight_kg": float(head["weight_kg"]) if head.get("weight_kg") else None,
        "state": state, "started_ms": int(head["started_ms"]),
        "first_dose_ms": _int_or_none(head.get("first_dose_ms")),
        "ready_ms": _int_or_none(head.get("ready_ms")), "ended_ms": _int_or_none(head.get("ended_ms")),
        "started_by": head.get("started_by"), "ended_by": head.get("ended_by"),
        "limits": json.dumps(base_limits(cfg, head["room"]), sort_keys=True),
        "header": json.dumps({k: str(v) for k, v in head.items()}, sort_keys=True),
    }


def archive_session(client: redis.Redis, keys: Keys, cfg: Config, sid: str, *,
                    batch_size: int = BATCH_SIZE, on_batch: OnBatch | None = None) -> dict[str, Any]:
    """Copy an ended session from Redis into the archive; resumable and idempotent.

    Returns {"session", "state", "readings", "events", "alert_events", "audit", "skipped"}.
    `on_batch(part, n)` is called after each committed batch (a test hook for crashes).
    """
    arch = open_archive(cfg.archive.url)
    head = get_session(client, keys, sid)
    with arch.engine.connect() as conn:
        existing = conn.execute(sa.select(sessions.c.state, sessions.c.signed_by)
                                .where(sessions.c.id == sid)).first()
    if head is None:
        if existing is not None:
            return {"session": sid, "state": existing.state, "note": "not in Redis; archive kept as is"}
        raise NotArchived(sid)
    if head.get("state") == "open":
        raise ArchiveError(f"session {sid} is still open; end it first")
    if existing is not None and existing.signed_by:
        return {"session": sid, "state": "locked", "note": f"signed by {existing.signed_by}; unchanged"}
    room = head["room"]
    start_ms, end_ms = int(head["started_ms"]), int(head["ended_ms"])
    with arch.engine.begin() as conn:
        row = _header_row(keys, head, cfg, "archiving")
        _upsert(conn, sessions, row, ["id"], [c for c in row if c not in ("id", "state")])
    out: dict[str, Any] = {"session": sid}
    ev = _copy_stream(arch, client, sid, "events", keys.session_events(sid), "-", "+", session_events,
                      lambda i, f: event_row(sid, i, f), batch_size, on_batch)

    lo, hi = str(max(0, start_ms - SCAN_MARGIN_MS)), str(end_ms + SCAN_MARGIN_MS)
    rd, al = _copy_data(arch, client, keys, sid, room, start_ms, end_ms, lo, hi, batch_size, on_batch)
    au = archive_audit(client, keys, arch, batch_size, on_batch,
                       retention_ms=int(cfg.redis.retention_hours * 3_600_000))
    archived_ms = clock.now_ms()
    n = _finish(arch, sid, state="archived", archived_ms=archived_ms)
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.session(sid), mapping={"state": "archived", "archived_ms": str(archived_ms)})
    # Redis keeps live copies only as long as it keeps readings; the archive is the record.
    ttl_s = int(cfg.redis.retention_hours * 3600)
    pipe.expire(keys.session(sid), ttl_s)
    pipe.expire(keys.session_events(sid), ttl_s)
    pipe.zremrangebyscore(keys.sessions_index, "-inf", archived_ms - ttl_s * 1000)
    pipe.execute()
    out.update(state="archived", readings=n, events=ev["rows"], alert_events=al["rows"],
               audit=au["rows"], skipped=rd["skipped"] + al["skipped"] + ev["skipped"])
    if out["skipped"]:
        log.warning("archive %s: %d malformed stream entries not archived", sid, out["skipped"])
    return out


def _copy_data(arch: Archive, client: redis.Redis, keys: Keys, sid: str, room: str, start_ms: int,
               end_ms: int, lo: str, hi: str, batch_size: int = BATCH_SIZE,
               on_batch: OnBatch | None = None, carry: bool = True) -> tuple[dict[str, int], dict[str, int]]:
    """Copy the room's readings and alert events measured within the session span; with
    `carry`, also the earlier events of clinic-wide alarms already active at its start (a
    top-up passes False: those were in the stream when the session was archived)."""
    def reading_in_span(i: str, f: dict[str, str]) -> dict[str, Any] | None:
        r = reading_row(sid, i, f)
        if r is None:
            return None
        return r if start_ms <= r["ts_ms"] <= end_ms else OUT_OF_SPAN

    rd = _copy_stream(arch, client, sid, "readings", keys.vitals(room), lo, hi, readings,
                      reading_in_span, batch_size, on_batch)

    # clinic-wide alarms (room "*") that name this room and were already active when the
    # session began: their events before the start belong to the record too (the outage
    # overlaps the session even if it neither began nor ended inside it)
    carried = clinic_alerts_active_at(client, keys, room, start_ms - 1000) if carry else {}

    def alert_in_span(i: str, f: dict[str, str]) -> dict[str, Any] | None:
        if not alert_concerns(f, room):
            return OUT_OF_SPAN
        r = alert_row(sid, i, f)
        if start_ms - 1000 <= r["ts_ms"] <= end_ms + 1000:
            return r
        return r if r["ts_ms"] < start_ms and f.get("alert") in carried else OUT_OF_SPAN

    first = min([int(x.split("-")[0]) for x in carried.values()] + [int(lo)])
    al = _copy_stream(arch, client, sid, "alerts", keys.alerts, str(first), hi, alert_events,
                      alert_in_span, batch_size, on_batch)
    return rd, al


def alert_concerns(fields: dict[str, str], room: str) -> bool:
    """True if an alerts-stream entry is about `room`: the room's own alerts, and the
    clinic-wide ones (room "*", CONTRACT) whose `rooms` list names it (pure)."""
    if fields.get("room") == room:
        return True
    return fields.get("room") == CLINIC and room in (fields.get("rooms") or "").split(",")


def clinic_alerts_active_at(client: redis.Redis, keys: Keys, room: str, at_ms: int,
                            lookback_ms: int = CLINIC_LOOKBACK_MS) -> dict[str, str]:
    """The clinic-wide alerts naming `room` that were raised within `lookback_ms` before
    `at_ms` and not yet cleared or reset at `at_ms` (read from the alerts stream): alert id →
    the stream id of its "raised" event."""
    active: dict[str, str] = {}
    cursor = str(max(0, at_ms - lookback_ms))
    while True:
        chunk = redis_types.entries(client.xrange(keys.alerts, min=cursor, max=str(at_ms), count=BATCH_SIZE))
        for i, f in chunk:
            if f.get("room") != CLINIC or not alert_concerns(f, room) or int(f.get("ts") or 0) > at_ms:
                continue
            if f.get("event") == "raised":
                active.setdefault(f.get("alert") or "", i)
            elif f.get("event") in ("cleared", "reset"):
                active.pop(f.get("alert") or "", None)
        if len(chunk) < BATCH_SIZE:
            return active
        cursor = f"({chunk[-1][0]}"


def _finish(arch: Archive, sid: str, **values: Any) -> int:
    """Recount a session's readings and alerts into its header row; returns the reading count."""
    with arch.engine.begin() as conn:
        counts = _alert_counts(conn, sid)
        n = conn.execute(sa.select(sa.func.count()).select_from(readings)
                         .where(readings.c.session_id == sid)).scalar_one()
        conn.execute(sessions.update().where(sessions.c.id == sid).values(
            n_readings=n, alerts_high=counts.get("high", 0), alerts_medium=counts.get("medium", 0),
            alerts_low=counts.get("low", 0), **values))
    _summarise(arch, sid)
    return int(n)


def _summarise(arch: Archive, sid: str) -> None:
    """Store the session's report summary now that its data is counted. A failure here never
    fails the archive: readers (monitor/sessions/summaries.py) recompute a missing summary."""
    try:
        store_summary(arch, sid)
    except (sa.exc.SQLAlchemyError, ValueError, KeyError, TypeError, ArithmeticError) as e:
        log.error("archive %s: report summary not stored (%s: %s); it is recomputed when a report "
                  "reads it", sid, type(e).__name__, e)


def store_summary(arch: Archive, sid: str) -> dict[str, Any]:
    """Compute one archived session's report summary (monitor.sessions.quality) and store it in
    `session_summaries` — the numbers as `data`, the BP curve apart as `curve` (only a
    patient's course reads it). Returns the summary with its curve."""
    data = quality.session_summary(load_session(arch, sid))
    row = {"session_id": sid, "version": quality.SUMMARY_VERSION, "computed_ms": clock.now_ms(),
           "data": json.dumps({k: v for k, v in data.items() if k != "curve"}, separators=(",", ":")),
           "curve": json.dumps(data["curve"], separators=(",", ":"))}
    with arch.engine.begin() as conn:
        _upsert(conn, session_summaries, row, ["session_id"], ["version", "computed_ms", "data", "curve"])
    return data


def top_up_session(client: redis.Redis, keys: Keys, cfg: Config, sid: str) -> int:
    """Copy readings and alert events of an archived session that reached Redis after it was
    archived (ingest batching, a device's held MQTT messages forwarded after an outage).

    Continues each stream from the last entry already copied (stream ids grow with arrival),
    so it reads only what arrived since; rows are keyed, so a rerun adds nothing. Signed
    sessions are locked and left alone. Returns the number of readings added.
    """
    arch = open_archive(cfg.archive.url)
    head = get_session(client, keys, sid)
    if head is None or head.get("state") != "archived":
        return 0
    with arch.engine.connect() as conn:
        row = conn.execute(sa.select(sessions.c.signed_by, sessions.c.n_readings)
                           .where(sessions.c.id == sid)).first()
    if row is None or row.signed_by:
        return 0
    with arch.engine.begin() as conn:  # reopen the two data parts where they stopped
        conn.execute(progress.update().where(progress.c.scope == sid, progress.c.part.in_(["readings", "alerts"]))
                     .values(done=False))
    start_ms, end_ms = int(head["started_ms"]), int(head["ended_ms"])
    _copy_data(arch, client, keys, sid, head["room"], start_ms, end_ms,
               str(max(0, start_ms - SCAN_MARGIN_MS)), "+", carry=False)
    n = _finish(arch, sid)
    added = n - int(row.n_readings or 0)
    if added:
        log.warning("archive %s: %d late reading(s) added after archiving", sid, added)
    return added


def top_up_recent(client: redis.Redis, keys: Keys, cfg: Config, now_ms: int, window_ms: int) -> int:
    """`top_up_session` for every session archived within the last `window_ms`."""
    ids = redis_types.members(client.zrangebyscore(keys.sessions_index, now_ms - window_ms - 48 * 3600_000, "+inf"))
    if not ids:
        return 0
    pipe = client.pipeline(transaction=False)
    for sid in ids:
        pipe.hmget(keys.session(sid), ["state", "archived_ms"])
    added = 0
    for sid, (state, archived_ms) in zip(ids, pipe.execute(), strict=True):
        if state == "archived" and archived_ms and int(archived_ms) >= now_ms - window_ms:
            added += top_up_session(client, keys, cfg, sid)
    return added


def _alert_counts(conn: Connection, sid: str) -> dict[str, int]:
    # physiological alarms only: reminders and technical alarms are counted apart by the
    # review (rows archived before this hold all kinds; monitor/sessions/review_list.py recounts)
    q = (sa.select(alert_events.c.priority, sa.func.count(sa.distinct(alert_events.c.alert)))
         .where(alert_events.c.session_id == sid, alert_events.c.event == "raised",
                sa.or_(alert_events.c.kind.is_(None), alert_events.c.kind.notin_(("technical", "reminder"))))
         .group_by(alert_events.c.priority))
    return {p or "": int(n) for p, n in conn.execute(q)}


# --- sign-off and addenda -----------------------------------------------------------------
def sign_off(arch: Archive, sid: str, user: str, ts_ms: int) -> dict[str, Any]:
    """Lock an archived session with the director's name and time; raises Locked if signed."""
    with arch.engine.begin() as conn:
        row = conn.execute(sa.select(sessions.c.state, sessions.c.signed_by, sessions.c.signed_ms)
                           .where(sessions.c.id == sid)).first()
        if row is None:
            raise NotArchived(sid)
        if row.state != "archived":
            raise ArchiveError(f"session {sid} is not fully archived yet (state {row.state})")
        if row.signed_by:
            raise Locked(f"session {sid} was signed by {row.signed_by}")
        conn.execute(sessions.update().where(sessions.c.id == sid, sessions.c.signed_by.is_(None))
                     .values(signed_by=user, signed_ms=ts_ms))
        insert_ignore(conn, session_events, [{"session_id": sid, "event_id": f"signoff-{ts_ms}",
                                              "ts_ms": ts_ms, "type": "signoff", "user": user,
                                              "data": "{}"}])
    return {"session": sid, "signed_by": user, "signed_ms": ts_ms}


def add_addendum(arch: Archive, sid: str, user: str, text: str, ts_ms: int) -> dict[str, Any]:
    """Append an addendum to an archived session (allowed before and after sign-off)."""
    eid = f"addendum-{ts_ms}-{secrets.token_hex(3)}"
    with arch.engine.begin() as conn:
        if conn.execute(sa.select(sessions.c.id).where(sessions.c.id == sid)).first() is None:
            raise NotArchived(sid)
        insert_ignore(conn, session_events, [{"session_id": sid, "event_id": eid, "ts_ms": ts_ms,
                                              "type": "addendum", "user": user,
                                              "data": json.dumps({"text": text})}])
    return {"session": sid, "event_id": eid, "ts_ms": ts_ms}


# --- reads --------------------------------------------------------------------------------
def _filtered(q: sa.Select[Any], ts_col: sa.Column[Any], since_ms: int | None, until_ms: int | None,
              equal: list[tuple[sa.Column[Any], str | None]]) -> sa.Select[Any]:
    """`q` limited to `ts_col` in [since_ms, until_ms] and to every (column, value) given a value."""
    if since_ms is not None:
        q = q.where(ts_col >= since_ms)
    if until_ms is not None:
        q = q.where(ts_col <= until_ms)
    for col, value in equal:
        if value:
            q = q.where(col == value)
    return q


def list_sessions(arch: Archive, *, since_ms: int | None = None, until_ms: int | None = None,
                  room: str | None = None, patient: str | None = None, high_only: bool = False,
                  clinic: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Archived sessions, newest first, filtered by start time, room, patient, high alerts."""
    cols = [c for c in sessions.c if c.name not in ("header", "limits")]
    q = _filtered(sa.select(*cols).order_by(sessions.c.started_ms.desc()).limit(limit),
                  sessions.c.started_ms, since_ms, until_ms,
                  [(sessions.c.room, room), (sessions.c.patient, patient), (sessions.c.clinic, clinic)])
    if high_only:
        q = q.where(sessions.c.alerts_high > 0)
    with arch.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def load_session(arch: Archive, sid: str) -> SessionRecord:
    """Everything archived about one session, as the pure review layer's input."""
    with arch.engine.connect() as conn:
        head = conn.execute(sa.select(sessions).where(sessions.c.id == sid)).first()
        if head is None:
            raise NotArchived(sid)
        evs = conn.execute(sa.select(session_events).where(session_events.c.session_id == sid)
                           .order_by(session_events.c.ts_ms, session_events.c.event_id)).all()
        cols = [readings.c.ts_ms, readings.c.dev, readings.c.flags, *(readings.c[m] for m in READING_METRICS)]
        rows = conn.execute(sa.select(*cols).where(readings.c.session_id == sid)
                            .order_by(readings.c.ts_ms, readings.c.stream_id)).all()
        als = conn.execute(sa.select(alert_events).where(alert_events.c.session_id == sid)
                           .order_by(alert_events.c.ts_ms, alert_events.c.stream_id)).all()
        aud = conn.execute(sa.select(audit_log).where(audit_log.c.session_id == sid)
                           .order_by(audit_log.c.ts_ms)).all()
    header = {k: v for k, v in head._mapping.items() if k not in ("header", "limits")}
    events = [decode_event(e.event_id, {**json.loads(e.data or "{}"), "ts": str(e.ts_ms), "type": e.type,
                                        "user": e.user}) for e in evs]
    alerts = []
    for a in als:
        d = dict(a._mapping)
        d["limit"] = d.pop("limit_value")
        d["ts"] = d.pop("ts_ms")
        alerts.append(d)
    return SessionRecord(
        header=header, events=events,
        readings=[(r[0], r[1], r[2], r[3:]) for r in rows],
        alert_events=alerts,
        audit=[{"id": a.stream_id, "ts": a.ts_ms, "user": a.user, "action": a.action,
                "details": json.loads(a.details or "{}")} for a in aud],
        base_limits=json.loads(head.limits or "{}"),
    )


def audit_entries(arch: Archive, *, clinic: str | None = None, since_ms: int | None = None,
                  until_ms: int | None = None, user: str | None = None, action: str | None = None,
                  limit: int = 500) -> list[dict[str, Any]]:
    """Archived audit entries, newest first, filtered (the admin's audit view)."""
    q = _filtered(sa.select(audit_log).order_by(audit_log.c.ts_ms.desc(), audit_log.c.stream_id.desc()).limit(limit),
                  audit_log.c.ts_ms, since_ms, until_ms, [(audit_log.c.clinic, clinic), (audit_log.c.user, user)])
    if action:
        q = q.where(audit_log.c.action.like(f"{action}%"))
    with arch.engine.connect() as conn:
        return [{"id": a.stream_id, "ts": a.ts_ms, "user": a.user, "action": a.action,
                 "session": a.session_id, "details": json.loads(a.details or "{}")}
                for a in conn.execute(q)]


def record_audit_local(arch: Archive, clinic: str, user: str, action: str, **details: Any) -> str:
    """An audit entry written straight into the archive (when Redis is unreachable)."""
    ts = clock.now_ms()
    fields = audit_fields(user, action, ts, **details)
    entry_id = f"local-{ts}-{secrets.token_hex(3)}"
    with arch.engine.begin() as conn:
        insert_ignore(conn, audit_log, [audit_row(clinic, entry_id, fields)])
    return entry_id


# --- maintenance ----------------------------------------------------------------------------
def purge(arch: Archive, older_than_ms: int) -> dict[str, int]:
    """Delete sessions that ended before `older_than_ms` (all their rows) and older audit."""
    out = {"sessions": 0, "readings": 0, "events": 0, "alert_events": 0, "audit": 0}
    with arch.engine.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.select(sessions.c.id).where(
            sessions.c.ended_ms.is_not(None), sessions.c.ended_ms < older_than_ms))]
        for chunk_start in range(0, len(ids), 500):
            chunk = ids[chunk_start:chunk_start + 500]
            conn.execute(session_summaries.delete().where(session_summaries.c.session_id.in_(chunk)))
            for name, table in (("readings", readings), ("events", session_events),
                                ("alert_events", alert_events)):
                out[name] += conn.execute(table.delete().where(table.c.session_id.in_(chunk))).rowcount
            conn.execute(progress.delete().where(progress.c.scope.in_(chunk)))
            out["sessions"] += conn.execute(sessions.delete().where(sessions.c.id.in_(chunk))).rowcount
        out["audit"] = conn.execute(audit_log.delete().where(audit_log.c.ts_ms < older_than_ms)).rowcount
    return out


def backup(arch: Archive, dest: Path) -> dict[str, int]:
    """Write a consistent copy of the archive to `dest` as a SQLite file (any source DB).

    SQLite sources use SQLite's online backup API; other databases are copied table by
    table. The result is itself a valid archive: point `archive.url` at it to restore.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    if arch.dialect == "sqlite":
        raw = arch.engine.raw_connection()
        try:
            target = sqlite3.connect(tmp)
            raw.driver_connection.backup(target)  # type: ignore[union-attr]
            target.execute("PRAGMA journal_mode=DELETE")
            target.close()
        finally:
            raw.close()
        target_engine = sa.create_engine(f"sqlite:///{tmp}")
    else:
        target_engine = sa.create_engine(f"sqlite:///{tmp}")
        migrate(target_engine)
        with arch.engine.connect() as src, target_engine.begin() as dst:
            for table in metadata.sorted_tables:
                dst.execute(table.delete())
                rows = src.execute(sa.select(table)).mappings()
                while batch := rows.fetchmany(5000):
                    dst.execute(table.insert(), [dict(r) for r in batch])
    with target_engine.connect() as conn:
        for table in metadata.sorted_tables:
            counts[table.name] = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    target_engine.dispose()
    tmp.replace(dest)
    return counts


def _int_or_none(v: Any) -> int | None:
    return int(v) if v not in (None, "") else None

