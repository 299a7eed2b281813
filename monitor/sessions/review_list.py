"""The review list's alarm counts, recomputed from the archived alert events on load.

The `sessions` table stores alerts_high/medium/low. Sessions archived before the counts
were restricted to physiological alarms hold every raised episode there (workflow reminders
such as "Minimum observation" and self-clearing technical alarms included), so the list
recounts physiological episodes per priority from `alert_events` for the rows it shows: one
grouped query over the listed sessions (primary key starts with session_id), cheap next to
the list query itself. The same rule as monitor.sessions.review.kind_of: an event without a known
kind counts as physiological.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from monitor.sessions.archive import Archive
from monitor.sessions.archive_schema import alert_events
from monitor.sessions.review import PRIORITIES

NOT_ALARM_KINDS = ("technical", "reminder")
CHUNK = 500  # ids per IN (...) list


def physiological_counts(arch: Archive, session_ids: list[str]) -> dict[str, dict[str, int]]:
    """{session id: {"high": n, "medium": n, "low": n}} of physiological alarm episodes raised."""
    out: dict[str, dict[str, int]] = {sid: dict.fromkeys(PRIORITIES, 0) for sid in session_ids}
    ae = alert_events.c
    with arch.engine.connect() as conn:
        for i in range(0, len(session_ids), CHUNK):
            q = (sa.select(ae.session_id, ae.priority, sa.func.count(sa.distinct(ae.alert)))
                 .where(ae.session_id.in_(session_ids[i:i + CHUNK]), ae.event == "raised",
                        sa.or_(ae.kind.is_(None), ae.kind.notin_(NOT_ALARM_KINDS)))
                 .group_by(ae.session_id, ae.priority))
            for sid, prio, n in conn.execute(q):
                if prio in out[sid]:
                    out[sid][prio] = int(n)
    return out


def with_alarm_counts(arch: Archive, rows: list[dict[str, Any]], high_only: bool = False) -> list[dict[str, Any]]:
    """`rows` (archive.list_sessions) with alerts_high/medium/low = physiological alarm counts.

    With `high_only` the rows without a physiological high-priority alarm are dropped (the
    stored column may still count a technical or reminder "high" for older archives, so the
    SQL filter alone lets them through)."""
    counts = physiological_counts(arch, [r["id"] for r in rows])
    out = []
    for r in rows:
        c = counts[r["id"]]
        r = {**r, "alerts_high": c["high"], "alerts_medium": c["medium"], "alerts_low": c["low"]}
        if not high_only or r["alerts_high"] > 0:
            out.append(r)
    return out
