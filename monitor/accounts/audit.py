"""The audit log: who did what, when. Written to a Redis stream, archived durably.

Every login, acknowledge, pause, limit change, session event, sign-off and export goes
through `record()`. Details must never carry patient names (patient ids only where the
action is about a session, and never into the process logs).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from monitor.model.clock import now_ms
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


def record(client: redis.Redis, keys: Keys, user: str, action: str, **details: Any) -> str:
    """Append an audit entry now; returns its stream id. Audit entries are never trimmed."""
    ts_ms = now_ms()
    return client.xadd(keys.audit, redis_types.encodable(audit_fields(user, action, ts_ms, **details)))  # type: ignore[return-value]


def entries(client: redis.Redis, keys: Keys, count: int = 200) -> list[dict[str, Any]]:
    """The newest audit entries, newest first, decoded."""
    out = []
    for entry_id, f in redis_types.entries(client.xrevrange(keys.audit, count=count)):
        out.append({"id": entry_id, "ts": int(f["ts"]), "user": f["user"], "action": f["action"],
                    "details": json.loads(f.get("details") or "{}")})
    return out
