"""Confirm that replicas hold what this process wrote (`redis.min_replicas`), for writes
made outside the stream writer: session events, which people enter on the room page or the
CLI. (The writer confirms readings itself, monitor/store/streams.py.)

WAIT only counts the writes of the connection it runs on, and a pooled client may have
written on another one, so `confirm` first makes a write of its own on the connection it
uses — a PUBLISH, which Redis replicates and which touches no key — and WAITs on that: once
replicas acknowledge it they hold every earlier write to this master too.

"This master" is the catch: a pooled connection found dead is replaced without a word, and
behind Sentinel the new one may reach a new master, where WAIT confirms nothing about a
write the old one took. So a caller takes `server_id()` before it writes and passes it to
`confirm(since=…)`: when the server answering the confirmation is not the one that answered
then (another process, or the same one with another replication history), confirm says the
write may be lost instead of confirming it.
"""

from __future__ import annotations

from typing import Any

from monitor.model.keys import Keys

WAIT_MS = 1000


def _identity(pipe: Any) -> None:
    pipe.execute_command("INFO", "server")
    pipe.execute_command("INFO", "replication")


def _identity_of(server: object, replication: object) -> str:
    """run_id (the process) + master_replid (its replication history); "" when INFO is refused."""
    if not isinstance(server, dict) or not isinstance(replication, dict):
        return ""
    return f"{server.get('run_id', '')}/{replication.get('master_replid', '')}"


def server_id(client: Any) -> str:
    """Which Redis server the client's commands reach now (see the module doc); "" if INFO is
    not allowed (an ACL without it): then `confirm` cannot tell a change. Redis errors propagate."""
    pipe = client.pipeline(transaction=False)
    _identity(pipe)
    server, replication = pipe.execute(raise_on_error=False)
    return _identity_of(server, replication)


def confirm(client: Any, keys: Keys, n: int, timeout_ms: int = WAIT_MS, since: str = "") -> str:
    """"" once `n` replicas hold everything written so far (at once when `n` is 0); else
    words for people saying it is not yet confirmed. `since`: the `server_id()` taken before
    writing — a different server now means the write may be lost. Redis errors propagate."""
    if n <= 0:
        return ""
    pipe = client.pipeline(transaction=False)
    _identity(pipe)
    pipe.publish(keys.prefix + "writer-sync", "")
    pipe.execute_command("WAIT", n, timeout_ms)
    server, replication, published, acks = pipe.execute(raise_on_error=False)
    for reply in (published, acks):
        if isinstance(reply, Exception):
            raise reply
    now = _identity_of(server, replication)
    if since and now and now != since:
        return ("the Redis primary changed while it was being saved (a failover): it may be lost — "
                "check it is still there")
    if isinstance(acks, int) and acks >= n:
        return ""
    return (f"saved on the Redis primary but not yet confirmed by {n} replica(s) ({acks} in "
            f"{timeout_ms} ms): if Redis fails over now it may be lost — check it is still there")
