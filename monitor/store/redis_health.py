"""Would this Redis refuse writes right now, and why — seen from a reader's side.

When Redis refuses every write (out of memory, a read-only replica, a failed snapshot),
ingest cannot report its storage state either: its heartbeat goes stale as if it had
stopped. A reader that can still read (the dashboard, `/health`, the alert engine) asks
Redis itself: `write_refusal(client)` reads `INFO` and names the cause in the same words
the writer uses (monitor/store/redis_faults.py), or returns None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis


def refusal_from_info(info: Mapping[str, Any]) -> tuple[str, str] | None:
    """(code, cause) for an `INFO` reply (all sections) of a server refusing writes, or None.

    Pure: the same codes as `StorageState.code` (oom, readonly, misconf, loading)."""
    if str(info.get("loading", "0")) == "1":
        return "loading", "Redis is loading its dataset (LOADING)"
    if info.get("role") in ("slave", "replica"):
        master = f"{info.get('master_host', '?')}:{info.get('master_port', '?')}"
        return "readonly", f"Redis is a read-only replica of {master} (READONLY)"
    used, limit = _int(info.get("used_memory")), _int(info.get("maxmemory"))
    if limit and used is not None and used >= limit and info.get("maxmemory_policy", "noeviction") == "noeviction":
        return "oom", f"Redis out of memory ({used} of maxmemory {limit} bytes used; OOM)"
    if info.get("rdb_last_bgsave_status") == "err":
        return "misconf", "Redis cannot persist to disk: its last snapshot failed (MISCONF)"
    if info.get("aof_last_write_status") == "err":
        return "misconf", "Redis cannot persist to disk: its append-only file cannot be written (MISCONF)"
    return None


def write_refusal(client: redis.Redis) -> tuple[str, str] | None:
    """Ask Redis (`INFO`) whether it refuses writes now; (code, cause) or None. Raises the
    client's errors (an unreachable Redis is its own, louder, cause)."""
    info = client.info("all")
    return refusal_from_info(info)


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
