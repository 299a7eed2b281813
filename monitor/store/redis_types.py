"""Typed views of Redis replies and arguments for our clients, which decode replies to str.

redis-py 8 types replies as `bytes | str` (stream entries and ids also `| None`) because it
cannot know that every client here is made with `decode_responses=True`
(monitor/store/redis_conn.py; dashboard/live.py's asyncio client likewise). These functions state
what our clients really return, at the place a reply is read. They are `typing.cast`s: they
neither convert nor check anything at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from redis.typing import (
    EncodableT,
    FieldT,
    KeyT,
    StreamIdT,
    StreamRangeResponse,
    XReadResponse,
    ZSetRangeResponse,
)

StreamEntry = tuple[str, dict[str, str]]
"""One decoded stream entry: (id, fields)."""


def entries(reply: StreamRangeResponse | None) -> list[StreamEntry]:
    """An XRANGE / XREVRANGE reply as decoded (id, fields) pairs."""
    return cast(list[StreamEntry], reply)


def xread_entries(reply: XReadResponse | None) -> list[tuple[str, list[StreamEntry]]] | None:
    """An XREAD reply (RESP2) as (stream key, entries) pairs; None when a block timed out."""
    return cast("list[tuple[str, list[StreamEntry]]] | None", reply)


def stream_ids(last_ids: Mapping[str, str]) -> dict[KeyT, StreamIdT]:
    """XREAD's `streams` argument (key → last id seen) as the (invariant) dict type it declares."""
    return cast(dict[KeyT, StreamIdT], last_ids)


def str_hash(reply: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """An HGETALL reply as field → value ({} for a missing key)."""
    return cast(dict[str, str], reply)


def opt_str(reply: bytes | str | None) -> str | None:
    """A GET / HGET reply: the value, or None when absent."""
    return cast("str | None", reply)


def text(reply: bytes | str) -> str:
    """A reply that is always a string, e.g. the id XADD returns."""
    return cast(str, reply)


def members(reply: ZSetRangeResponse) -> list[str]:
    """A ZRANGE-family reply without scores: the members."""
    return cast(list[str], reply)


def encodable(fields: Mapping[str, str]) -> dict[FieldT, EncodableT]:
    """Our str → str fields as the (invariant) dict type XADD / HSET mapping= declare."""
    return cast(dict[FieldT, EncodableT], fields)


def str_set(reply: Any) -> set[str]:
    """An SMEMBERS reply as a set of strings (decode_responses clients)."""
    return cast(set[str], reply)
