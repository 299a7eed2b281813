"""The audit log: who did what, when. Written to a Redis stream, archived durably.

Every login, acknowledge, pause, limit change, session event, sign-off and export goes
through `record()`. Details must never carry patient names (patient ids only where the
action is about a session, and never into the process logs).

Anonymous sources (failed sign-ins from an address) cannot grow the log without bound:
`record_limited` writes at most PER_SOURCE_PER_MIN entries per source and minute and counts
the rest in `keys.audit_held`; `flush_held` (the dashboard's loop, every few seconds) writes
one `audit_suppressed` entry per source and action with the count, so nothing is lost from
the record. The stream itself is trimmed only below what the archive already holds and
beyond `redis.retention_hours` (`trim_archived`, after each archive run).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from monitor.model.clock import now_ms
from monitor.model.clock import now_ms as clock_now_ms
from monitor.model.keys import Keys
from monitor.store import redis_types


def audit_fields(user: str, action: str, ts_ms: int, **details: Any) -> dict[str, str]:
    """Encode one audit entry (pure)."""
    return {
        "ts": str(ts_ms),
        "user": user or "unknown",
        "action": action,
        "details": json.dumps(details, sort_keys=True, default=str),
    }


PER_SOURCE_PER_MIN = 10

# KEYS: held hash. ARGV: field prefix, now. Count one held entry (first/last time kept).
_HOLD = """
redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|n', 1)
redis.call('HSETNX', KEYS[1], ARGV[1] .. '|first', ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1] .. '|last', ARGV[2])
return 1
"""
# KEYS: held hash. Take everything held, atomically (several dashboards flush the same hash).
_TAKE = """
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return all
"""


def record(client: redis.Redis, keys: Keys, user: str, action: str, **details: Any) -> str:
    """Append an audit entry now; returns its stream id."""
    ts_ms = now_ms()
    return client.xadd(keys.audit, redis_types.encodable(audit_fields(user, action, ts_ms, **details)))  # type: ignore[return-value]


def entries(client: redis.Redis, keys: Keys, count: int = 200) -> list[dict[str, Any]]:
    """The newest audit entries, newest first, decoded."""
    out = []
    for entry_id, f in redis_types.entries(client.xrevrange(keys.audit, count=count)):
        out.append({"id": entry_id, "ts": int(f["ts"]), "user": f["user"], "action": f["action"],
                    "details": json.loads(f.get("details") or "{}")})
    return out


def record_limited(client: redis.Redis, keys: Keys, limit_key: str, user: str, action: str,
                   **details: Any) -> str | None:
    """`record`, but at most PER_SOURCE_PER_MIN entries per `limit_key` (an anonymous
    source) and minute; the rest are counted for `flush_held`. The entry id, or None when held."""
    now = now_ms()
    rate_key = keys.audit_rate(limit_key, now // 60_000)
    pipe = client.pipeline(transaction=False)
    pipe.incr(rate_key)
    pipe.expire(rate_key, 120)
    n = int(pipe.execute()[0])
    if n <= PER_SOURCE_PER_MIN:
        return record(client, keys, user, action, **details)
    client.register_script(_HOLD)(keys=[keys.audit_held], args=[f"{limit_key}|{action}", now])
    return None


def held_summaries(raw: list[str]) -> list[dict[str, Any]]:
    """The flat HGETALL reply of `keys.audit_held` as one summary per source and action (pure)."""
    flat = dict(zip(raw[::2], raw[1::2], strict=True))
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for k, v in flat.items():
        head, _, part = k.rpartition("|")
        source, _, action = head.rpartition("|")
        item = out.setdefault((source, action), {"source": source, "held_action": action})
        item[{"n": "count", "first": "first_ms", "last": "last_ms"}.get(part, part)] = int(v)
    return list(out.values())


def flush_held(client: redis.Redis, keys: Keys) -> int:
    """Write one `audit_suppressed` entry per source and action held since the last flush."""
    raw = client.register_script(_TAKE)(keys=[keys.audit_held])
    items = held_summaries([str(x) for x in raw or []])
    for it in items:
        record(client, keys, "?", "audit_suppressed", **it)
    return len(items)


def trim_archived(client: redis.Redis, keys: Keys, archived_id: str | None, retention_ms: int,
                  now_ms: int | None = None) -> int:
    """Trim audit entries that the archive holds (ids up to `archived_id`) and that are older
    than `retention_ms`; returns how many were removed."""
    if not archived_id:
        return 0
    now = clock_now_ms() if now_ms is None else now_ms
    try:
        archived_ms = int(archived_id.split("-", 1)[0])
    except ValueError:
        return 0
    return int(client.xtrim(keys.audit, minid=str(min(archived_ms, now - retention_ms)), approximate=False))
