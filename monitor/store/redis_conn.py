"""Open Redis clients from a `redis.url`; the only place that knows connection options.

One server (`redis://`, `rediss://`, `unix://`), a Sentinel group (`redis+sentinel://`: the
client asks the Sentinels for the master and asks again after a failover) or a Cluster
(`redis+cluster://`). monitor/model/redis_url.py parses the URL; this module builds the
sync (`connect`) and asyncio (`connect_async`) clients every role uses.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from monitor.model.redis_url import RedisTarget, parse

# Query parameters of a URL passed on to the client as they are (strings).
_PASSED_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
                   "ssl_ca_path", "client_name")


def _common(target: RedisTarget, timeout_s: float) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": min(timeout_s, 3.0),
    }
    if target.username:
        kw["username"] = target.username
    if target.password is not None:
        kw["password"] = target.password
    if target.tls:
        kw["ssl"] = True
    kw.update({k: v for k, v in target.options if k in _PASSED_OPTIONS})
    return kw


def connect(url: str, *, timeout_s: float = 5.0, retries: int = 0, **kw: Any) -> Any:
    """A decoded-string sync client for `url` (redis.Redis, or redis.cluster.RedisCluster).

    `retries=0` by default: callers that must not lose data (the stream writer) run their
    own reconnect-with-backoff loop and need to see every failure. With Sentinel a
    `READONLY` reply from a demoted master surfaces as a ConnectionError (redis-py's
    SentinelManagedConnection disconnects on it), i.e. as "unreachable": the caller's retry
    reconnects, and every new connection asks the Sentinels where the master is (so do
    connections after a kill: MasterNotFoundError, a ConnectionError, while they name none).
    On a plain `redis://` URL the same READONLY stays an error reply ("refused").
    """
    target = parse(url)
    if target.kind == "single":
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=min(timeout_s, 3.0),
            retry=Retry(NoBackoff(), retries),
            health_check_interval=30,
            **kw,
        )
    common = _common(target, timeout_s) | kw
    if target.kind == "sentinel":
        from redis.sentinel import Sentinel

        # no retries with backoff on a Sentinel that does not answer: discovery asks the next
        # one (redis-py's default would sleep seconds per dead Sentinel, per question)
        sentinel = Sentinel(list(target.hosts),
                            sentinel_kwargs=_sentinel_kwargs(target, common) | {"retry": Retry(NoBackoff(), 0)},
                            **common)
        client = sentinel.master_for(target.master, db=target.db,
                                     retry=Retry(NoBackoff(), retries))
        _follow(client.connection_pool)
        return client
    from redis.cluster import ClusterNode, RedisCluster

    # `retries` as for one server: redis-py's cluster client would otherwise re-send a
    # command (a MULTI/EXEC of XADDs too) after a connection error, when it may have been
    # applied. `reinitialize_steps=1`: reload the slot map after every connection error or
    # redirection, so the caller's next try goes to the slot's new master — redis-py 8.1's
    # transaction pipelines count errors per pipeline and, with the default 5, never
    # reload it: after a master's loss they would keep trying the dead node.
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.hosts],
                        retry=Retry(NoBackoff(), retries), reinitialize_steps=1, **common)


def connect_async(url: str, *, timeout_s: float = 5.0, **kw: Any) -> Any:
    """A decoded-string asyncio client for `url` (the dashboard's push loop)."""
    target = parse(url)
    if target.kind == "single":
        return aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout_s,
                                       socket_connect_timeout=min(timeout_s, 3.0), **kw)
    common = _common(target, timeout_s) | kw
    if target.kind == "sentinel":
        from redis.asyncio.retry import Retry as AioRetry
        from redis.asyncio.sentinel import Sentinel as AioSentinel

        sentinel = AioSentinel(list(target.hosts),
                               sentinel_kwargs=_sentinel_kwargs(target, common) | {"retry": AioRetry(NoBackoff(), 0)},
                               **common)
        return sentinel.master_for(target.master, db=target.db)
    from redis.asyncio.cluster import ClusterNode as AioNode
    from redis.asyncio.cluster import RedisCluster as AioCluster

    return AioCluster(startup_nodes=[AioNode(h, p) for h, p in target.hosts], reinitialize_steps=1,
                      **common)


def _sentinel_kwargs(target: RedisTarget, common: dict[str, Any]) -> dict[str, Any]:
    """Options for talking to the Sentinels themselves: the same TLS, and the URL's
    credentials unless `sentinel_username` / `sentinel_password` query parameters give the
    Sentinels' own (Sentinels often have a `requirepass` of their own; empty = none)."""
    keep = ("username", "password", "ssl", "socket_timeout", "socket_connect_timeout",
            *_PASSED_OPTIONS)
    kw = {k: v for k, v in common.items() if k in keep}
    opts = dict(target.options)
    for name in ("username", "password"):
        if f"sentinel_{name}" in opts:
            kw.pop(name, None)
            if opts[f"sentinel_{name}"]:
                kw[name] = opts[f"sentinel_{name}"]
    return kw


# --- following Sentinel's choice of master ------------------------------------------------
# redis-py asks the Sentinels where the master is only when it opens a connection (or gets
# READONLY). A pooled connection to a master the Sentinels have replaced but that is still up
# — for the seconds before Sentinel turns it into a replica, or for as long as a partition
# keeps Sentinel from reaching it — goes on taking writes that the new master never sees
# (an alert raised there is raised again later). So every Sentinel-managed client is asked
# again every FOLLOW_EVERY_S: redis-py's get_master_address() drops idle connections to a
# master that is no longer named, and connections in use are dropped when they come back
# to the pool.
FOLLOW_EVERY_S = 0.5
log = logging.getLogger(__name__)
_followed: weakref.WeakSet[Any] = weakref.WeakSet()
_follow_lock = threading.Lock()
_follower: threading.Thread | None = None


def _follow(pool: Any) -> None:
    """Keep `pool` (a sync SentinelConnectionPool) on the master the Sentinels name."""
    global _follower
    with _follow_lock:
        _followed.add(pool)
        if _follower is None or not _follower.is_alive():
            _follower = threading.Thread(target=_follow_loop, name="sentinel-follow", daemon=True)
            _follower.start()


def _follow_loop() -> None:
    while True:
        time.sleep(FOLLOW_EVERY_S)
        with _follow_lock:
            pools = list(_followed)
        for pool in pools:
            before = pool.master_address
            try:
                now = pool.get_master_address()
            except (redis.RedisError, OSError):  # no master named (a failover under way): next time
                continue
            if before is not None and now != before:
                log.warning("Redis Sentinel names a new master %s:%s (was %s:%s): moving to it",
                            *now, *before)


async def master_moved(client: Any) -> bool:
    """For an asyncio Sentinel client: ask the Sentinels again; True when they name another
    master than the one its connections were opened to (idle ones are dropped already; the
    caller should reconnect and read afresh). False for other clients or while none is named."""
    pool = getattr(client, "connection_pool", None)
    if pool is None or not hasattr(pool, "get_master_address"):
        return False
    before = pool.master_address
    try:
        now = await pool.get_master_address()
    except (redis.RedisError, OSError):  # no master named (a failover under way): the reads will say
        return False
    return before is not None and now != before


REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)
"""Errors that mean "Redis is unreachable right now" (retry later), not a bad command."""
