"""Open Redis clients from a URL; the only place that knows connection options."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def connect(url: str, *, timeout_s: float = 5.0, retries: int = 0, **kw: object) -> redis.Redis:
    """A decoded-string Redis client for `url` (redis://, rediss://, unix://).

    `retries=0` by default: callers that must not lose data (the stream writer) run their
    own reconnect-with-backoff loop and need to see every failure.
    """
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=min(timeout_s, 3.0),
        retry=Retry(NoBackoff(), retries),
        health_check_interval=30,
        **kw,  # type: ignore[arg-type]
    )


REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)
"""Errors that mean "Redis is unreachable right now" (retry later), not a bad command."""
