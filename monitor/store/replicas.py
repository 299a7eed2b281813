"""Confirm that replicas hold what this process wrote (`redis.min_replicas`), for writes
made outside the stream writer: session events, which people enter on the room page or the
CLI. (The writer confirms readings itself, monitor/store/streams.py.)

WAIT only counts the writes of the connection it runs on, and a pooled client may have
written on another one, so `confirm` first makes a write of its own on the connection it
uses — a PUBLISH, which Redis replicates and which touches no key — and WAITs on that: once
replicas acknowledge it they hold every earlier write to this master too.
"""

from __future__ import annotations

from typing import Any

from monitor.model.keys import Keys

WAIT_MS = 1000


def confirm(client: Any, keys: Keys, n: int, timeout_ms: int = WAIT_MS) -> str:
    """"" once `n` replicas hold everything written so far (at once when `n` is 0); else
    words for people saying it is not yet confirmed. Redis errors propagate."""
    if n <= 0:
        return ""
    pipe = client.pipeline(transaction=False)
    pipe.publish(keys.prefix + "writer-sync", "")
    pipe.execute_command("WAIT", n, timeout_ms)
    acks = pipe.execute()[-1]
    if isinstance(acks, int) and acks >= n:
        return ""
    return (f"saved on the Redis primary but not yet confirmed by {n} replica(s) ({acks} in "
            f"{timeout_ms} ms): if Redis fails over now it may be lost — check it is still there")
