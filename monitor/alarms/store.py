"""Redis I/O for the alert engine: room ownership leases, condition state, atomic commits.

Every write an owner makes to a room (active-alert records, alert events, condition state
and the last processed stream id) goes out in ONE MULTI/EXEC that WATCHes the room's owner
key and active-alert hash. So:
- a worker that lost its lease (paused, partitioned, taken over) cannot write: its EXEC fails
  because the owner key changed or expired (`LostOwnership`);
- state and events never disagree: a crash before EXEC leaves nothing, after EXEC leaves
  both, and the next owner resumes from the stored last id — a reading is applied once;
- an acknowledge from the dashboard racing with the engine is retried, not overwritten.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import redis

from monitor.model.keys import Keys
from monitor.model.readings import Reading
from monitor.store.redis_cluster import pipeline_script

from .evaluate import Book
from .model import AlertEvent, Cond, encode_record

log = logging.getLogger(__name__)
StrHash = dict[str, str]  # what a decode_responses client returns for HGETALL

F_LAST_ID = "last_id"  # alarm-state field: last vitals stream id applied
LATEST_ID = "_id"  # latest-summary field: the last vitals stream id folded in
COND_PREFIXES = ("p:", "t:")  # alarm-state fields holding a Cond

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class LostOwnership(Exception):
    """This worker no longer owns the room (its lease expired or another worker took it)."""


class Leases:
    """Owner leases on rooms: `SET NX PX` to take, compare-and-PEXPIRE to renew, compare-and-DEL to release."""

    def __init__(self, client: redis.Redis, keys: Keys, owner: str, ttl_ms: int) -> None:
        self.client, self.keys, self.owner, self.ttl_ms = client, keys, owner, ttl_ms
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def owners(self, rooms: list[str]) -> dict[str, str | None]:
        """room → current owner (None when free)."""
        pipe = self.client.pipeline(transaction=False)
        for r in rooms:
            pipe.get(self.keys.room_owner(r))
        return dict(zip(rooms, pipe.execute(), strict=True))

    def acquire(self, room: str) -> bool:
        """Take a free room."""
        return bool(self.client.set(self.keys.room_owner(room), self.owner, nx=True, px=self.ttl_ms))

    def renew(self, rooms: list[str]) -> dict[str, bool]:
        """Extend our leases; room → still ours."""
        pipe = self.client.pipeline(transaction=False)
        for r in rooms:
            pipeline_script(pipe, self._renew, [self.keys.room_owner(r)], [self.owner, self.ttl_ms])
        return {r: bool(ok) for r, ok in zip(rooms, pipe.execute(), strict=True)}

    def release(self, room: str) -> None:
        """Give a room up (only if it is still ours)."""
        self._release(keys=[self.keys.room_owner(room)], args=[self.owner])


def load_state(client: redis.Redis, keys: Keys, room: str) -> tuple[str | None, dict[str, Cond]]:
    """(last applied stream id or None, condition state) of a room, as the last owner left it."""
    raw = cast(StrHash, client.hgetall(keys.alarm_state(room)))
    conds = {}
    for k, v in raw.items():
        if k.startswith(COND_PREFIXES):
            try:
                conds[k] = Cond.from_json(v)
            except (ValueError, TypeError) as e:
                log.error("alarm state %s of room %s is unreadable (%s); starting it from normal", k, room, e)
    return raw.get(F_LAST_ID), conds


def read_active(client: redis.Redis | redis.client.Pipeline, keys: Keys, room: str) -> dict[str, dict[str, Any]]:
    """A room's active-alert records."""
    raw = cast(StrHash, client.hgetall(keys.active_alerts(room)))
    return {k: json.loads(v) for k, v in raw.items()}


def latest_update(readings: Iterable[Reading], have_ts: Mapping[str, int], last_id: str) -> dict[str, str]:
    """The room's latest-value summary fields that `readings` make newer (pure): metric →
    JSON [value, ts, device] where a reading is at least as new as the summary's value, and
    `_id` = last_id. An older reading arriving late (a spool replay) never replaces a newer one."""
    best: dict[str, tuple[float, int, str]] = {}
    for r in readings:
        for m, v in r.values.items():
            if r.ts_ms >= have_ts.get(m, -1) and (m not in best or r.ts_ms >= best[m][1]):
                best[m] = (v, r.ts_ms, r.device)
    out = {m: json.dumps([v, ts, dev]) for m, (v, ts, dev) in best.items()}
    out[LATEST_ID] = last_id
    return out


def latest_ts_of(summary: Mapping[str, str]) -> dict[str, int]:
    """metric → ts of the summary's value (unreadable fields are left out)."""
    out = {}
    for m, v in summary.items():
        if m == LATEST_ID:
            continue
        try:
            out[m] = int(json.loads(v)[1])
        except (ValueError, TypeError, IndexError):
            continue
    return out


OutboxFor = Callable[[list[AlertEvent]], list[tuple[str, dict[str, str]]]]


def commit(client: redis.Redis, keys: Keys, room: str, owner: str,
           build: Callable[[dict[str, dict[str, Any]]], Book],
           state: Mapping[str, str | None], retention_ms: int, now_ms: int,
           attempts: int = 20, latest: Mapping[str, str] | None = None, outbox: OutboxFor | None = None) -> Book:
    """Apply `build(active records) -> Book` and `state` changes atomically, fenced by ownership.

    `state` maps alarm-state field → new value (None deletes it); `latest` fields go to the
    room's latest-value summary in the same transaction. `outbox(events)` gives the outbound
    messages of the events as (destination, outbox stream fields): they are added in the same
    transaction too, so an event is never stored without its pages (nor the reverse).
    Raises LostOwnership.
    """
    owner_key, active_key = keys.room_owner(room), keys.active_alerts(room)
    with client.pipeline(transaction=True) as pipe:
        for _ in range(attempts):
            try:
                pipe.watch(owner_key, active_key)
                if pipe.get(owner_key) != owner:
                    raise LostOwnership(room)
                book = build(read_active(pipe, keys, room))
                if not book.changed and not state and not latest:
                    pipe.unwatch()
                    return book
                pipe.multi()
                for aid, rec in book.updates.items():
                    if rec is None:
                        pipe.hdel(active_key, aid)
                    else:
                        pipe.hset(active_key, aid, encode_record(rec))
                min_id = str(max(0, now_ms - retention_ms))
                for ev in book.events:
                    pipe.xadd(keys.alerts, ev.to_fields(), minid=min_id, approximate=True)  # type: ignore[arg-type]
                for dest, fields in (outbox(book.events) if outbox is not None and book.events else []):
                    pipe.xadd(keys.outbox(dest), fields)  # type: ignore[arg-type]
                    pipe.sadd(keys.outbox_destinations, dest)
                sets = {k: v for k, v in state.items() if v is not None}
                dels = [k for k, v in state.items() if v is None]
                if sets:
                    pipe.hset(keys.alarm_state(room), mapping=sets)  # type: ignore[arg-type]
                if dels:
                    pipe.hdel(keys.alarm_state(room), *dels)
                if latest:
                    pipe.hset(keys.room_latest(room), mapping=dict(latest))  # type: ignore[arg-type]
                pipe.execute()
                return book
            except redis.WatchError:
                continue  # an action or a lease renewal touched the keys: recompute
    raise redis.WatchError(f"room {room}: could not commit after {attempts} attempts")
