"""Device status records in Redis: state, last valid reading, counters.

One hash per device (`Keys.device_status`), written by whichever adapter runs the device
(serial supervisor, MQTT adapter) and read by the dashboard, `/health` and the alert engine.
Fields: room, protocol, transport, state (connecting|online|silent|offline), since_ms,
last_ts (ms of last valid reading), frames, reconnects, rejects:<reason> counters,
updated_ms (when the adapter last wrote; an adapter that stops writing is itself suspect),
detail (human text, e.g. the last error).
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

from monitor.model.keys import Keys

STATES = ("connecting", "online", "silent", "offline")


def publish_status(
    client: redis.Redis | redis.client.Pipeline,
    keys: Keys,
    device: str,
    fields: Mapping[str, str | int | float],
    counters: Mapping[str, int] | None = None,
) -> None:
    """Set status fields and add to counters (`frames`, `rejects:<reason>`, …) at once."""
    # a Pipeline is also a redis.Redis: test for it first, or a caller's pipeline would be
    # bypassed (a nested pipeline executed here, at once, outside the caller's error handling)
    if isinstance(client, redis.client.Pipeline):
        pipe, own = client, False
    else:
        pipe, own = client.pipeline(transaction=False), True
    key = keys.device_status(device)
    if fields:
        pipe.hset(key, mapping={k: str(v) for k, v in fields.items()})
    for name, n in (counters or {}).items():
        if n:
            pipe.hincrby(key, name, n)
    if own:
        pipe.execute()


def read_status(client: redis.Redis, keys: Keys, devices: list[str]) -> dict[str, dict[str, str]]:
    """Status hashes of the given devices (empty dict for a device never seen)."""
    pipe = client.pipeline(transaction=False)
    for d in devices:
        pipe.hgetall(keys.device_status(d))
    return dict(zip(devices, pipe.execute(), strict=True))
