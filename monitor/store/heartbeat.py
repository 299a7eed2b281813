"""Process heartbeats: every long-running role says it is alive, so silence can be seen.

`vw:{c}:heartbeats` is a hash of `<role>:<instance>` → ms. The dashboard and `/health`
compare the newest per role with now: a stale alert engine or ingest means NOT MONITORING.

A role that stores readings also reports its writer's storage state with each beat
(`vw:{c}:storage`, `<role>:<instance>` → JSON of monitor.model.storage.StorageState plus
`updated_ms` and `restarts`), in the same round trip: when Redis accepts the beat it also
accepts the truth about storing. `storage_states()` reads them back.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import replace

import redis

from monitor.model.keys import Keys
from monitor.model.storage import StorageState
from monitor.store.redis_types import str_hash


def instance_name() -> str:
    """A name for this process that is unique on the host: `<host>-<pid>`."""
    return f"{socket.gethostname()}-{os.getpid()}"


def beat(client: redis.Redis, keys: Keys, role: str, instance: str, now_ms: int,
         storage: StorageState | None = None, restarts: Mapping[str, int] | None = None) -> None:
    """Record that `role`/`instance` is alive now, with its storage state when it has one."""
    name = f"{role}:{instance}"
    if storage is None:
        client.hset(keys.heartbeats, name, str(now_ms))
        return
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.heartbeats, name, str(now_ms))
    report = replace(storage, updated_ms=now_ms, restarts=dict(restarts or {}))
    pipe.hset(keys.storage, name, report.to_json())
    pipe.execute()


def remove(client: redis.Redis, keys: Keys, role: str, instance: str) -> None:
    """Forget an instance that stopped cleanly (so its silence is not an alarm)."""
    pipe = client.pipeline(transaction=False)
    pipe.hdel(keys.heartbeats, f"{role}:{instance}")
    pipe.hdel(keys.storage, f"{role}:{instance}")
    pipe.execute()


def storage_states(client: redis.Redis, keys: Keys) -> dict[str, StorageState]:
    """`<role>:<instance>` → its last reported StorageState (`updated_ms`: when)."""
    out: dict[str, StorageState] = {}
    for name, text in str_hash(client.hgetall(keys.storage)).items():
        st = StorageState.from_json(text)
        if st is not None:
            out[name] = st
    return out


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
