"""Redis I/O for the alert engine: room ownership leases, condition state, atomic commits.

Every write an owner makes to a room (active-alert records, alert events, their outbound
messages, condition state, the latest-value summary and the last processed stream id) goes
out in ONE server-side script (`_COMMIT`, run atomically by Redis) that first checks, inside
the script, that the room's owner key still names this worker and that the room's
active-alert hash is exactly what the worker computed from. So:
- a worker that lost its lease (paused, partitioned, taken over) cannot write: the script
  finds another owner (or none) and writes nothing (`LostOwnership`);
- state and events never disagree: the script writes all or nothing of a room's commit, and
  the next owner resumes from the stored last id — a reading is applied once;
- an acknowledge from the dashboard racing with the engine (it WATCHes the hash) is
  retried, not overwritten: the script returns the hash as it is now, and the worker
  recomputes on it.
`commit_many` sends the commits of many rooms in ONE pipelined round trip (each room's
script is still atomic on its own); a room whose hash changed is recomputed and sent again
in the next round trip. All keys of a commit carry the clinic's `{hash tag}`: one slot.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from monitor.model.keys import Keys
from monitor.model.readings import Reading
from monitor.store.redis_cluster import is_cluster, pipeline_script

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
_RENEW_MANY = """
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('get', k) == ARGV[1] then
    out[i] = redis.call('pexpire', k, ARGV[2])
  else
    out[i] = 0
  end
end
return out
"""
# KEYS: owner, active alerts, alarm state, latest summary, alerts stream, outbox
# destinations, outbox streams…; ARGV: owner, JSON plan. Replies {1} written, {0} not the
# owner (nothing written), {-1, field, value, …} the active hash changed (nothing written;
# checked only when the plan has `expect`: a plan without it writes no alert record or event),
# {2} the room's last applied id is not the one this commit continues from (nothing written:
# an earlier commit whose reply was lost did apply).
_COMMIT = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return {0} end
local p = cjson.decode(ARGV[2])
if p.from ~= nil and (redis.call('hget', KEYS[3], 'last_id') or '') ~= p.from then return {2} end
if p.expect ~= nil then
  local cur = redis.call('hgetall', KEYS[2])
  local same = true
  local n = 0
  for i = 1, #cur, 2 do
    n = n + 1
    if p.expect[cur[i]] ~= cur[i + 1] then same = false break end
  end
  if same then
    local m = 0
    for _ in pairs(p.expect) do m = m + 1 end
    same = (m == n)
  end
  if not same then
    local out = {-1}
    for i = 1, #cur do out[#out + 1] = cur[i] end
    return out
  end
end
for _, fv in ipairs(p.put) do redis.call('hset', KEYS[2], fv[1], fv[2]) end
for _, f in ipairs(p.drop) do redis.call('hdel', KEYS[2], f) end
for _, ev in ipairs(p.events) do
  redis.call('xadd', KEYS[5], 'MINID', '~', p.minid, '*', unpack(ev))
end
for _, o in ipairs(p.outbox) do
  redis.call('xadd', KEYS[o[1]], '*', unpack(o[3]))
  redis.call('sadd', KEYS[6], o[2])
end
for _, fv in ipairs(p.state) do redis.call('hset', KEYS[3], fv[1], fv[2]) end
for _, f in ipairs(p.unstate) do redis.call('hdel', KEYS[3], f) end
for _, fv in ipairs(p.latest) do redis.call('hset', KEYS[4], fv[1], fv[2]) end
return {1}
"""
RENEW_MANY_SHA = hashlib.sha1(_RENEW_MANY.encode()).hexdigest()
COMMIT_SHA = hashlib.sha1(_COMMIT.encode()).hexdigest()
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
        self.renew_on(pipe, rooms)
        return self.renewed(rooms, pipe.execute()[-1])

    def renew_on(self, pipe: redis.client.Pipeline, rooms: list[str]) -> None:
        """Queue the renewal of all `rooms` as ONE script call on `pipe` (loading the script
        first in the same pipeline); read its reply (the last) with `renewed`."""
        names = [self.keys.room_owner(r) for r in rooms]
        if is_cluster(pipe):  # a cluster pipeline refuses SCRIPT LOAD and EVALSHA (one slot: EVAL works)
            pipe.execute_command("EVAL", _RENEW_MANY, len(names), *names, self.owner, self.ttl_ms)
            return
        pipe.script_load(_RENEW_MANY)
        pipe.evalsha(RENEW_MANY_SHA, len(names), *names, self.owner, self.ttl_ms)

    @staticmethod
    def renewed(rooms: list[str], reply: list[int]) -> dict[str, bool]:
        """room → still ours, from the reply of `renew_on`."""
        return {r: bool(ok) for r, ok in zip(rooms, reply, strict=True)}

    def owners_on(self, pipe: redis.client.Pipeline, rooms: list[str]
                  ) -> tuple[int, Callable[[list[Any]], list[str | None]]]:
        """Queue the reads of the rooms' owners on `pipe` as its LAST commands (one MGET; a
        GET each on a Cluster, whose pipelines refuse MGET); returns how many replies they
        take and what picks the owners, in `rooms` order, out of the pipeline's replies."""
        names = [self.keys.room_owner(r) for r in rooms]
        if is_cluster(pipe):
            for name in names:
                pipe.get(name)
            return len(names), lambda res: list(res[len(res) - len(names):])
        pipe.mget(names)
        return 1, lambda res: list(res[-1])

    def acquire_many(self, rooms: list[str]) -> list[str]:
        """Take as many of the free `rooms` as possible in one round trip; the rooms won."""
        if not rooms:
            return []
        pipe = self.client.pipeline(transaction=False)
        for r in rooms:
            pipe.set(self.keys.room_owner(r), self.owner, nx=True, px=self.ttl_ms)
        return [r for r, ok in zip(rooms, pipe.execute(), strict=True) if ok]

    def release_many(self, rooms: list[str]) -> None:
        """Give rooms up (each only if it is still ours), in one round trip."""
        if not rooms:
            return
        pipe = self.client.pipeline(transaction=False)
        for r in rooms:
            pipeline_script(pipe, self._release, [self.keys.room_owner(r)], [self.owner])
        pipe.execute()

    def release(self, room: str) -> None:
        """Give a room up (only if it is still ours)."""
        self._release(keys=[self.keys.room_owner(room)], args=[self.owner])


def load_state(client: redis.Redis, keys: Keys, room: str) -> tuple[str | None, dict[str, Cond]]:
    """(last applied stream id or None, condition state) of a room, as the last owner left it."""
    return state_of(room, cast(StrHash, client.hgetall(keys.alarm_state(room))))


def state_of(room: str, raw: Mapping[str, str]) -> tuple[str | None, dict[str, Cond]]:
    """`load_state` from the alarm-state hash already read."""
    conds = {}
    for k, v in raw.items():
        if k.startswith(COND_PREFIXES):
            try:
                conds[k] = Cond.from_json(v)
            except (ValueError, TypeError) as e:
                log.error("alarm state %s of room %s is unreadable (%s); starting it from normal", k, room, e)
    return raw.get(F_LAST_ID), conds


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


@dataclass
class Pending:
    """One room's commit for `commit_many`: `build(active records) -> Book`, the alarm-state
    changes (`state`: field → value, None deletes), the latest-summary fields and the
    outbound messages of its events (`outbox`). `build` None: the commit changes no alert
    record (a reading batch without transitions) — the room's active alerts are then neither
    decoded nor sent for comparison, as nothing written depends on them."""

    room: str
    build: Callable[[dict[str, dict[str, Any]]], Book] | None
    state: Mapping[str, str | None] = field(default_factory=dict)
    latest: Mapping[str, str] | None = None
    outbox: OutboxFor | None = None
    after_id: str | None = None  # the stored last applied id this continues from ("" none yet; None: no check)


class PartialCommit(Exception):
    """Some rooms of a `commit_many` failed on a Redis error (`error`); `done` holds the
    outcome of the others, which did commit (or were refused) and must be taken into account."""

    def __init__(self, done: dict[str, Book | None], error: Exception) -> None:
        super().__init__(str(error))
        self.done, self.error = done, error


def _plan(keys: Keys, p: Pending, book: Book, raw: Mapping[str, str], min_id: str
          ) -> tuple[list[str], str, dict[str, str]]:
    """(KEYS, JSON plan, the active hash after it) of one room's `_COMMIT` call."""
    room = p.room
    ks = [keys.room_owner(room), keys.active_alerts(room), keys.alarm_state(room), keys.room_latest(room),
          keys.alerts, keys.outbox_destinations]
    after = dict(raw)
    put, drop = [], []
    for aid, rec in book.updates.items():
        if rec is None:
            drop.append(aid)
            after.pop(aid, None)
        else:
            text = encode_record(rec)
            put.append([aid, text])
            after[aid] = text
    outbox = []
    for dest, fields in (p.outbox(book.events) if p.outbox is not None and book.events else []):
        name = keys.outbox(dest)
        if name not in ks:
            ks.append(name)
        outbox.append([ks.index(name) + 1, dest, [x for kv in fields.items() for x in kv]])
    plan: dict[str, Any] = {
        "put": put, "drop": drop,
        "events": [[x for kv in ev.to_fields().items() for x in kv] for ev in book.events],
        "minid": min_id, "outbox": outbox,
        "state": [[k, v] for k, v in p.state.items() if v is not None],
        "unstate": [k for k, v in p.state.items() if v is None],
        "latest": [[k, v] for k, v in (p.latest or {}).items()],
    }
    if p.after_id is not None:
        plan["from"] = p.after_id
    if p.build is not None:  # what the records were computed from (a plan without writes none)
        # cjson reads an empty JSON object as an empty table: `expect` may be {}
        plan["expect"] = dict(raw)
    return ks, json.dumps(plan), after


def records_of(raw: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The active-alert records of a room's hash (alert id → record)."""
    return {k: json.loads(v) for k, v in raw.items()}


def commit_many(client: redis.Redis, keys: Keys, owner: str, pending: list[Pending],
                active: dict[str, dict[str, str]], retention_ms: int, now_ms: int,
                attempts: int = 20, floor_ms: int | None = None, stale: set[str] | None = None
                ) -> dict[str, Book | None]:
    """Commit many rooms' `Pending` work, each room atomically and fenced by its lease, in
    one pipelined round trip (more only for rooms whose active hash changed meanwhile).

    `active` is the worker's copy of each room's active-alert hash (raw JSON text by alert
    id): the commit is computed on it and applies only if Redis still holds exactly that;
    it is updated with what was written, or with the hash as Redis returned it on a
    mismatch (then that room is recomputed and retried). The alerts stream is trimmed to
    `retention_ms` but never below `floor_ms` (events the archive has not taken). Returns
    room → Book, or None for a room this worker no longer owns (nothing was written for it).
    A room whose stored last applied id is not its `Pending.after_id` (a commit whose reply
    was lost did apply) writes nothing and goes into `stale`: reload its state. A Redis error
    for some rooms raises PartialCommit once the others' outcomes are known.
    """
    out: dict[str, Book | None] = {}
    error: Exception | None = None
    todo = list(pending)
    horizon = max(0, now_ms - retention_ms)
    min_id = str(horizon if floor_ms is None else min(horizon, floor_ms))  # never below the trim floor
    for _ in range(attempts):
        if not todo:
            break
        calls: list[tuple[Any, ...]] = []
        sent: list[tuple[Pending, Book, dict[str, str]]] = []
        for p in todo:
            raw = active.get(p.room, {})
            book = Book({}) if p.build is None else p.build(records_of(raw))
            if not book.changed and not p.state and not p.latest:
                out[p.room] = book
                continue
            ks, plan, after = _plan(keys, p, book, raw, min_id)
            calls.append((COMMIT_SHA, len(ks), *ks, owner, plan))
            sent.append((p, book, after))
        todo = []
        if not sent:
            break
        for (p, book, after), reply in zip(sent, _evalsha_all(client, calls, _COMMIT), strict=True):
            if isinstance(reply, Exception):
                error = error or reply
                continue
            code = int(reply[0])
            if code == 1:
                active[p.room] = after
                out[p.room] = book
            elif code == 0:
                out[p.room] = None
            elif code == 2:
                if stale is not None:
                    stale.add(p.room)
            else:  # an action changed the room's alerts: recompute on the hash as it is
                active[p.room] = dict(zip(reply[1::2], reply[2::2], strict=True))
                todo.append(p)
    if error is not None:
        raise PartialCommit(out, error)
    if todo:
        raise PartialCommit(out, redis.WatchError(f"rooms {[p.room for p in todo]}: could not commit after "
                                                  f"{attempts} attempts"))
    return out


def _evalsha_all(client: redis.Redis, calls: list[tuple[Any, ...]], script: str) -> list[Any]:
    """Run EVALSHA `calls` in one pipeline; replies in order, an error reply as its exception.
    If Redis lost the script (restart, failover, SCRIPT FLUSH) — NOSCRIPT fails every call
    before it runs — load it and run them again. On a Cluster (whose pipelines refuse EVALSHA)
    the script goes with EVAL: every call's keys share the clinic's slot."""
    replies: list[Any] = []
    for _attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        for c in calls:
            if is_cluster(pipe):
                pipe.execute_command("EVAL", script, *c[1:])
            else:
                pipe.evalsha(*c)
        replies = cast(list[Any], pipe.execute(raise_on_error=False))
        if not any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
            return replies
        client.script_load(script)
    return replies


def commit(client: redis.Redis, keys: Keys, room: str, owner: str,
           build: Callable[[dict[str, dict[str, Any]]], Book],
           state: Mapping[str, str | None], retention_ms: int, now_ms: int,
           attempts: int = 20, latest: Mapping[str, str] | None = None, outbox: OutboxFor | None = None) -> Book:
    """One room's commit (`commit_many` for one room, reading the room's owner and active
    hash first): `build(active records) -> Book` and `state` changes applied atomically,
    fenced by ownership; `latest` fields go to the room's latest-value summary and
    `outbox(events)` messages to the outboxes in the same atomic step. Raises LostOwnership.
    """
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.room_owner(room))
    pipe.hgetall(keys.active_alerts(room))
    who, raw = pipe.execute()
    if who != owner:
        raise LostOwnership(room)
    try:
        got = commit_many(client, keys, owner, [Pending(room, build, state, latest, outbox)], {room: raw},
                          retention_ms, now_ms, attempts)
    except PartialCommit as e:
        raise e.error from None
    book = got.get(room)
    if book is None:
        raise LostOwnership(room)
    return book
