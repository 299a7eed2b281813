"""Per-session summaries in the archive (`session_summaries`): written at archive time, read by
the quality report, the patient course and the REMS lists.

`refresh(arch, sid)` (monitor.sessions.archive.store_summary) loads one archived session and
stores `quality.session_summary` of it; the archive does so whenever a session's data is
(re)counted — at the end of archiving and after a late-data top-up. Readers (`in_range`, `for_patient`, `get_many`)
recompute, once, any listed session whose summary is missing or was written by an older
`quality.SUMMARY_VERSION` (sessions archived before this table existed), so their answers
are always complete; only that first read is slow.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy as sa

from monitor.sessions import quality
from monitor.sessions.archive import Archive, store_summary
from monitor.sessions.archive_schema import session_summaries, sessions

log = logging.getLogger(__name__)
CHUNK = 500  # ids per IN (...) list


def refresh(arch: Archive, sid: str) -> dict[str, Any]:
    """Compute and store one session's summary from its archived data; returns it (with its curve)."""
    return store_summary(arch, sid)


def _select(arch: Archive, where: list[Any], curves: bool = False) -> list[dict[str, Any]]:
    """Summaries of the archived sessions matching `where`, oldest first, backfilling stale ones.

    The BP curve (`curve`) is read only when asked for: a report over thousands of sessions
    does not need it, and decoding JSON is most of a report's time."""
    ss = session_summaries.c
    cols = [sessions.c.id, ss.version, ss.data, *([ss.curve] if curves else [])]
    q = (sa.select(*cols)
         .select_from(sessions.outerjoin(session_summaries, ss.session_id == sessions.c.id))
         .where(sessions.c.state == "archived", *where).order_by(sessions.c.started_ms, sessions.c.id))
    with arch.engine.connect() as conn:
        rows = conn.execute(q).all()
    out, stale = [], 0
    for row in rows:
        sid, version, data = row[0], row[1], row[2]
        if data is not None and version == quality.SUMMARY_VERSION:
            s = json.loads(data)
            if curves:
                s["curve"] = json.loads(row[3] or "[]")
            out.append(s)
        else:
            stale += 1
            s = refresh(arch, sid)
            if not curves:
                s.pop("curve", None)
            out.append(s)
    if stale:
        log.info("summarised %d archived session(s) for the first time (or after a definition change)", stale)
    return out


def in_range(arch: Archive, clinic: str, since_ms: int | None = None, until_ms: int | None = None,
             room: str | None = None, patient: str | None = None, curves: bool = False) -> list[dict[str, Any]]:
    """Summaries of the clinic's archived sessions started in [since, until], oldest first."""
    where = [sessions.c.clinic == clinic]
    if since_ms is not None:
        where.append(sessions.c.started_ms >= since_ms)
    if until_ms is not None:
        where.append(sessions.c.started_ms <= until_ms)
    if room:
        where.append(sessions.c.room == room)
    if patient:
        where.append(sessions.c.patient == patient)
    return _select(arch, where, curves)


def for_patient(arch: Archive, clinic: str, patient: str) -> list[dict[str, Any]]:
    """Every archived session of one patient, oldest first, with their BP curves."""
    return in_range(arch, clinic, patient=patient, curves=True)


def get_many(arch: Archive, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Summaries of the given archived sessions by id (unknown or unfinished ids are left out)."""
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), CHUNK):
        for s in _select(arch, [sessions.c.id.in_(ids[i:i + CHUNK])]):
            out[s["session"]] = s
    return out
