"""A session as Redis holds it, read back: the header hash and event-stream decoders, and `get_session`.

Pure decoders plus one read, shared by the lifecycle (monitor/sessions/lifecycle.py, which
writes sessions and archives them at the end) and the archive (which copies them), so
neither needs the other's module to read a session. Schema: docs/sessions.md.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from monitor.model.keys import Keys
from monitor.store import redis_types

_INT_FIELDS = ("started_ms", "first_dose_ms", "ended_ms", "signed_ms", "ready_ms", "archived_ms")
_FLOAT_FIELDS = ("dose_mg", "weight_kg")


def decode_event(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """Decode a session-event stream entry (pure): ints/floats/JSON where the field says so."""
    out: dict[str, Any] = {"id": entry_id, **fields}
    out["ts"] = int(fields["ts"])
    for k in ("sbp", "dbp"):
        if k in fields:
            out[k] = int(float(fields[k]))
    if "dose_mg" in fields:
        out["dose_mg"] = float(fields["dose_mg"])
    for k in ("limit", "devices"):
        if k in fields:
            out[k] = json.loads(fields[k])
    return out


def decode_header(fields: dict[str, str]) -> dict[str, Any]:
    """Session header hash → dict with ints for *_ms and floats for dose/weight (pure)."""
    out: dict[str, Any] = dict(fields)
    for k in _INT_FIELDS:
        if fields.get(k):
            out[k] = int(fields[k])
    for k in _FLOAT_FIELDS:
        if fields.get(k):
            out[k] = float(fields[k])
    return out


def get_session(client: redis.Redis, keys: Keys, sid: str) -> dict[str, Any] | None:
    """The session's header (decoded), or None if Redis does not hold it."""
    fields = redis_types.str_hash(client.hgetall(keys.session(sid)))
    return decode_header(fields) if fields else None
