"""Process heartbeats: every long-running role says it is alive, so silence can be seen.

`vw:{c}:heartbeats` is a hash of `<role>:<instance>` → ms. The dashboard and `/health`
compare the newest per role with now: a stale alert engine or ingest means NOT MONITORING.
"""

from __future__ import annotations

import os
import socket

import redis

from monitor.model.keys import Keys
from monitor.store.redis_types import str_hash


def instance_name() -> str:
    """A name for this process that is unique on the host: `<host>-<pid>`."""
    return f"{socket.gethostname()}-{os.getpid()}"


def beat(client: redis.Redis, keys: Keys, role: str, instance: str, now_ms: int) -> None:
    """Record that `role`/`instance` is alive now."""
    client.hset(keys.heartbeats, f"{role}:{instance}", str(now_ms))


def remove(client: redis.Redis, keys: Keys, role: str, instance: str) -> None:
    """Forget an instance that stopped cleanly (so its silence is not an alarm)."""
    client.hdel(keys.heartbeats, f"{role}:{instance}")


def newest_by_role(client: redis.Redis, keys: Keys) -> dict[str, int]:
    """role → newest heartbeat ms across its instances."""
    out: dict[str, int] = {}
    for field, value in str_hash(client.hgetall(keys.heartbeats)).items():
        role = field.split(":", 1)[0]
        try:
            ms = int(value)
        except ValueError:
            continue
        out[role] = max(out.get(role, 0), ms)
    return out
