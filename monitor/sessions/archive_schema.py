"""The archive's tables and its migrations: a small versioned schema table, no alembic.

`vw_schema_version` holds one row per applied migration (version, applied_ms). `migrate()`
runs on every open and applies, in order and each in its own transaction, every migration
newer than the database's version. To change the schema: edit the Table definitions below
to the new shape AND append a function to MIGRATIONS that brings a database at the previous
version there (ALTER TABLE … ADD COLUMN, CREATE INDEX …). Never edit an applied migration.
Concurrent openers are serialised by a PostgreSQL advisory lock; on SQLite a loser of the
race retries once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from monitor.model.clock import now_ms

metadata = sa.MetaData()

schema_version = sa.Table(
    "vw_schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_ms", sa.BigInteger, nullable=False),
)

sessions = sa.Table(
    "sessions", metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("clinic", sa.String(64), nullable=False),
    sa.Column("room", sa.String(64), nullable=False),
    sa.Column("patient", sa.String(128), nullable=False),
    sa.Column("route", sa.String(16)),
    sa.Column("protocol", sa.String(64)),
    sa.Column("dose_mg", sa.Float),
    sa.Column("weight_kg", sa.Float),
    sa.Column("state", sa.String(16), nullable=False),  # archiving | archived
    sa.Column("started_ms", sa.BigInteger, nullable=False),
    sa.Column("first_dose_ms", sa.BigInteger),
    sa.Column("ready_ms", sa.BigInteger),
    sa.Column("ended_ms", sa.BigInteger),
    sa.Column("started_by", sa.String(128)),
    sa.Column("ended_by", sa.String(128)),
    sa.Column("signed_by", sa.String(128)),
    sa.Column("signed_ms", sa.BigInteger),
    sa.Column("archived_ms", sa.BigInteger),
    sa.Column("n_readings", sa.Integer, nullable=False, server_default="0"),
    sa.Column("alerts_high", sa.Integer, nullable=False, server_default="0"),
    sa.Column("alerts_medium", sa.Integer, nullable=False, server_default="0"),
    sa.Column("alerts_low", sa.Integer, nullable=False, server_default="0"),
    sa.Column("limits", sa.Text),  # JSON: the room's limits in force (before session overrides)
    sa.Column("header", sa.Text),  # JSON: the Redis header as it was
    sa.Index("ix_sessions_started", "started_ms"),
    sa.Index("ix_sessions_room", "room", "started_ms"),
    sa.Index("ix_sessions_patient", "patient"),
)

session_events = sa.Table(
    "session_events", metadata,
    sa.Column("session_id", sa.String(128), primary_key=True),
    sa.Column("event_id", sa.String(64), primary_key=True),  # stream id, or signoff-/addendum-…
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("user", sa.String(128), nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # JSON of the per-type fields
)

def _copied_entry() -> tuple[sa.Column[Any], ...]:
    """Key columns of a stream entry copied for a session: (session, stream id), and its ts."""
    return (sa.Column("session_id", sa.String(128), primary_key=True),
            sa.Column("stream_id", sa.String(40), primary_key=True),
            sa.Column("ts_ms", sa.BigInteger, nullable=False))


readings = sa.Table(
    "readings", metadata,
    *_copied_entry(),
    sa.Column("dev", sa.String(64), nullable=False),
    *(sa.Column(m, sa.Float) for m in ("hr", "spo2", "sbp", "dbp", "map", "rr", "temp", "pi")),
    sa.Column("flags", sa.String(256)),
    sa.Index("ix_readings_session_ts", "session_id", "ts_ms"),
)

alert_events = sa.Table(
    "alert_events", metadata,
    *_copied_entry(),
    sa.Column("room", sa.String(64)),
    sa.Column("alert", sa.String(128)),
    sa.Column("event", sa.String(32)),
    sa.Column("kind", sa.String(32)),
    sa.Column("priority", sa.String(16)),
    sa.Column("metric", sa.String(16)),
    sa.Column("dev", sa.String(64)),
    sa.Column("value", sa.String(32)),
    sa.Column("limit_value", sa.String(32)),
    sa.Column("message", sa.Text),
    sa.Column("user", sa.String(128)),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("clinic", sa.String(64), primary_key=True),
    sa.Column("stream_id", sa.String(40), primary_key=True),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("user", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("session_id", sa.String(128)),
    sa.Index("ix_audit_ts", "ts_ms"),
    sa.Index("ix_audit_session", "session_id"),
)

progress = sa.Table(
    "archive_progress", metadata,
    sa.Column("scope", sa.String(128), primary_key=True),  # session id, or audit:<clinic>
    sa.Column("part", sa.String(32), primary_key=True),  # events | readings | alerts | audit
    sa.Column("last_id", sa.String(40), nullable=False),  # last stream id committed
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
)

V1_TABLES = [sessions, session_events, readings, alert_events, audit_log, progress]

# v2: one row per archived session with the numbers the clinic quality report and a
# patient's course need (monitor/sessions/quality.py), written at archive time, so a report
# over a year of sessions never re-reads their readings. `version` says which computation
# wrote it; an older version is recomputed when read (monitor/sessions/summaries.py).
session_summaries = sa.Table(
    "session_summaries", metadata,
    sa.Column("session_id", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("computed_ms", sa.BigInteger, nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # JSON: the numbers (quality.session_summary)
    sa.Column("curve", sa.Text),  # JSON: the BP curve, read only by a patient's course
)


def _v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=V1_TABLES)


def _v2(conn: Connection) -> None:
    metadata.create_all(conn, tables=[session_summaries])


MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _v1),
    (2, _v2),
]
LATEST = MIGRATIONS[-1][0]


def current_version(conn: Connection) -> int:
    """The database's schema version (0 for an empty database)."""
    if not sa.inspect(conn).has_table(schema_version.name):
        return 0
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(schema_version.c.version), 0))).scalar_one())


def migrate(engine: Engine) -> int:
    """Bring the database to LATEST; returns the version it was at before."""
    try:
        return _migrate(engine)
    except (sa.exc.OperationalError, sa.exc.IntegrityError):
        # SQLite: another process created the same table or version row at the same
        # moment; its migration won — re-read the version and finish what is left.
        return _migrate(engine)


def _migrate(engine: Engine) -> int:
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7317001)"))  # one migrator at a time
        schema_version.create(conn, checkfirst=True)
        before = current_version(conn)
        for version, step in MIGRATIONS:
            if version > before:
                step(conn)
                conn.execute(schema_version.insert().values(version=version, applied_ms=now_ms()))
    return before
