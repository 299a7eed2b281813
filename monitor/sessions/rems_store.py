"""REMS form entries in the archive: staff entries, the submission mark, forms due.

Entries are append-only `session_events` rows of the archived session (nothing is ever
overwritten, so who entered what and when stays on record):

- `rems_form`: `{"rems": {field: value, …}, "text": "REMS form: Lot number = A123"}` — one save
  of one or more fields; an empty value clears a field. On a signed (locked) session the
  same data is stored as an `addendum` (later changes to a signed session are addenda), so
  it shows in the session's addenda and never alters the signed record.
- `rems_submitted`: `{"rems_submitted": {"method": "portal"|"fax", "reference": …}, "text": …}` —
  the form was submitted to the REMS program (VitalWatch does not submit it itself).

Callers write the audit log (`rems.update`, `rems.submitted`). `form_state` / `forms_due`
combine these entries with the session summary's prefill (monitor/sessions/summaries.py) into
monitor.sessions.rems_form.FormState.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import sqlalchemy as sa

from monitor.model.config import Config
from monitor.sessions import rems_form, summaries
from monitor.sessions.archive import Archive, NotArchived, insert_ignore
from monitor.sessions.archive_schema import session_events, sessions

REMS_EVENT_TYPES = ("rems_form", "rems_submitted", "addendum")
SUBMIT_METHODS = ("portal", "fax")
CHUNK = 500


class NotRemsSession(ValueError):
    """The session is not an esketamine session: the REMS form does not apply."""


class FormIncomplete(ValueError):
    """A form cannot be marked submitted while required fields are missing."""


def _session_row(conn: sa.Connection, sid: str) -> Any:
    row = conn.execute(sa.select(sessions.c.id, sessions.c.protocol, sessions.c.signed_by, sessions.c.state)
                       .where(sessions.c.id == sid)).first()
    if row is None:
        raise NotArchived(sid)
    if not rems_form.is_rems_session({"protocol": row.protocol}):
        raise NotRemsSession(f"session {sid} is not an esketamine session (protocol {row.protocol!r}); "
                             "the REMS Patient Monitoring Form applies to SPRAVATO sessions only")
    return row


def save_entries(arch: Archive, sid: str, user: str, values: dict[str, Any], ts_ms: int) -> dict[str, str]:
    """Validate and store one save of staff entries; returns the normalised values stored.

    Raises rems_form.InvalidEntry (nothing stored), NotArchived, NotRemsSession."""
    clean = {k: rems_form.validate_entry(k, v) for k, v in values.items()}
    if not clean:
        raise rems_form.InvalidEntry("nothing to save")
    with arch.engine.begin() as conn:
        row = _session_row(conn, sid)
        kind = "addendum" if row.signed_by else "rems_form"
        insert_ignore(conn, session_events, [{
            "session_id": sid, "event_id": f"rems-{ts_ms}-{secrets.token_hex(3)}", "ts_ms": ts_ms, "type": kind,
            "user": user or "unknown",
            "data": json.dumps({"rems": clean, "text": rems_form.entry_text(clean)}, sort_keys=True)}])
    return clean


def mark_submitted(arch: Archive, cfg: Config, sid: str, user: str, ts_ms: int, method: str,
                   reference: str = "") -> dict[str, Any]:
    """Record that the form was submitted (portal or fax). Refused while it is incomplete."""
    if method not in SUBMIT_METHODS:
        raise rems_form.InvalidEntry(f"submission method must be one of {', '.join(SUBMIT_METHODS)}")
    with arch.engine.connect() as conn:
        _session_row(conn, sid)  # unknown / not esketamine: say so before judging completeness
    state = form_state(arch, cfg, sid, ts_ms)
    if state.missing:
        raise FormIncomplete("the form is incomplete — missing: " + ", ".join(state.missing))
    sub = {"method": method, "reference": reference.strip()[:100]}
    text = f"REMS form submitted via {method}" + (f" (reference {sub['reference']})" if sub["reference"] else "")
    with arch.engine.begin() as conn:
        _session_row(conn, sid)
        insert_ignore(conn, session_events, [{
            "session_id": sid, "event_id": f"rems-submitted-{ts_ms}-{secrets.token_hex(3)}", "ts_ms": ts_ms,
            "type": "rems_submitted", "user": user or "unknown",
            "data": json.dumps({"rems_submitted": sub, "text": text}, sort_keys=True)}])
    return {**sub, "by": user, "ts": ts_ms}


def rems_events(arch: Archive, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The REMS entry and submission events of these sessions, decoded, by session id."""
    out: dict[str, list[dict[str, Any]]] = {sid: [] for sid in ids}
    se = session_events.c
    with arch.engine.connect() as conn:
        for i in range(0, len(ids), CHUNK):
            q = (sa.select(se.session_id, se.event_id, se.ts_ms, se.user, se.data)
                 .where(se.session_id.in_(ids[i:i + CHUNK]), se.type.in_(REMS_EVENT_TYPES))
                 .order_by(se.ts_ms, se.event_id))
            for sid, eid, ts, user, data in conn.execute(q):
                d = json.loads(data or "{}")
                if "rems" in d or "rems_submitted" in d:
                    out[sid].append({**d, "id": eid, "ts": int(ts), "user": user})
    return out


def states_for(cfg: Config, rows: list[dict[str, Any]], events: dict[str, list[dict[str, Any]]],
               now_ms: int) -> dict[str, rems_form.FormState]:
    """FormState per session summary in `rows` (pure given the events)."""
    setting = rems_form.setting_defaults(cfg.rems.setting, cfg.clinic.name)
    out = {}
    for s in rows:
        staff, submitted = rems_form.fold(events.get(s["session"], []))
        out[s["session"]] = rems_form.build(s["rems"], staff, submitted, setting, cfg.clinic.timezone, now_ms,
                                            cfg.rems.due_days)
    return out


def form_state(arch: Archive, cfg: Config, sid: str, now_ms: int) -> rems_form.FormState:
    """One session's form (prefill from its summary + staff entries). NotArchived if unknown."""
    summary = summaries.get_many(arch, [sid]).get(sid)
    if summary is None:
        raise NotArchived(sid)
    return states_for(cfg, [summary], rems_events(arch, [sid]), now_ms)[sid]


def forms_due(arch: Archive, cfg: Config, now_ms: int, limit: int = 500) -> tuple[list[rems_form.FormState], int]:
    """Forms not yet marked submitted (esketamine sessions), overdue first then by due date.

    Returns (at most `limit` states, how many there are in all)."""
    se, s = session_events.c, sessions.c
    submitted = sa.select(se.session_id).where(se.type == "rems_submitted", se.session_id == s.id).exists()
    proto = sa.func.lower(sa.func.coalesce(s.protocol, ""))
    q = (sa.select(s.id).where(s.clinic == cfg.clinic.id, s.state == "archived",
                               sa.or_(proto.like("%esketamine%"), proto.like("%spravato%")), ~submitted)
         .order_by(s.started_ms))
    with arch.engine.connect() as conn:
        ids = [r[0] for r in conn.execute(q)]
    rows = list(summaries.get_many(arch, ids).values())
    states = list(states_for(cfg, rows, rems_events(arch, ids), now_ms).values())
    states.sort(key=lambda f: (not f.overdue, f.due_ms))
    return states[:limit], len(states)
