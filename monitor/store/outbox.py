"""A durable outbox in Redis: messages for one destination, sent in order, at least once.

Transport-agnostic: what a message is (HL7, FHIR JSON, a pager payload) and how it leaves
(MLLP, HTTP, MQTT) is the caller's; a *sender* is a callable `Message -> Outcome`:
`Delivered` (the receiver's positive answer), `Refused(reason, answer)` (a negative answer:
kept with the message, listed for admins, re-sendable) or `Retry(reason)` (no answer,
unreachable, a 5xx: tried again with backoff).

Keys (monitor/model/keys.py): `outbox:<dest>` a stream of messages (enqueue = XADD, so an
enqueued message survives any restart the Redis data survives); `outbox-state:<dest>` the
cursor (id of the last settled message), attempt count, backoff and last error;
`outbox-failed:<dest>` refused messages, body included; `outbox-lease:<dest>` which process
sends; `outbox-keys:<dest>` idempotency keys (an enqueue with a key already seen is a no-op).

Order and single sender: `OutboxSender.step()` sends only while it holds the destination's
lease (SET NX PX, renewed), always the oldest unsettled message, and moves the cursor only
if it still holds the lease (one Lua script), so two processes never both move one
destination forward. A sender that dies between sending and settling leaves the message
unsettled: the next holder sends it again (at-least-once; receivers see the same message
id twice). Settled messages older than `retention_ms` are trimmed; unsettled ones never.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from monitor.model.keys import Keys
from monitor.store import redis_types

log = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 300.0
RETENTION_MS = 7 * 24 * 3600 * 1000
KEY_RETENTION_MS = 30 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Delivered:
    """The receiver took the message."""

    answer: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """The receiver answered no; the message is kept for an admin to look at and resend."""

    reason: str
    answer: str = ""


@dataclass(frozen=True, slots=True)
class Retry:
    """No usable answer (unreachable, timeout, busy): try again later."""

    reason: str


Outcome = Delivered | Refused | Retry


@dataclass(frozen=True, slots=True)
class Message:
    """One outbound message as stored."""

    id: str
    dest: str
    kind: str
    body: str
    key: str = ""
    content_type: str = "text/plain"
    created_ms: int = 0
    meta: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (failed records, admin views)."""
        return {"id": self.id, "dest": self.dest, "kind": self.kind, "body": self.body, "key": self.key,
                "content_type": self.content_type, "created_ms": self.created_ms, "meta": dict(self.meta)}


@dataclass(frozen=True, slots=True)
class FailedMessage:
    """A refused message with the receiver's answer."""

    message: Message
    reason: str
    answer: str
    failed_ms: int
    attempts: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# KEYS: stream, idempotency zset, destinations set. ARGV: score, key, dest, JSON list of
# messages (each a flat [field, value, ...] list). All or nothing, once per key.
_ENQUEUE = """
if ARGV[2] ~= '' then
  if redis.call('ZADD', KEYS[2], 'NX', ARGV[1], ARGV[2]) == 0 then return false end
end
redis.call('SADD', KEYS[3], ARGV[3])
local ids = {}
for _, f in ipairs(cjson.decode(ARGV[4])) do ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(f)) end
return ids
"""

# KEYS: lease, state, failed. ARGV: owner, id, failed_json ('' when delivered), now, answer.
_SETTLE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'cursor', ARGV[2], 'attempts', '0', 'next_ms', '0', 'last_ms', ARGV[4],
           'last_error', '', 'last_answer', ARGV[5])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
  redis.call('HINCRBY', KEYS[2], 'refused', 1)
else
  redis.call('HINCRBY', KEYS[2], 'delivered', 1)
end
return 1
"""

# KEYS: lease. ARGV: owner, ttl_ms. Take a free lease or renew ours.
_LEASE = """
local cur = redis.call('GET', KEYS[1])
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""


def _decode(dest: str, entry_id: str, f: Mapping[str, str]) -> Message:
    try:
        meta = json.loads(f.get("meta") or "{}")
    except ValueError:
        meta = {}
    return Message(entry_id, dest, f.get("kind", ""), f.get("body", ""), f.get("key", ""),
                   f.get("content_type", "text/plain"), int(f.get("created_ms") or 0),
                   {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {})


def message_fields(body: str, *, kind: str, key: str = "", content_type: str = "text/plain",
                   meta: Mapping[str, str] | None = None, now_ms: int) -> dict[str, str]:
    """The stream fields of one outbox message (what `enqueue` adds; pure). A writer that must
    enqueue in its own MULTI/EXEC — the alert engine, with the events the messages announce —
    XADDs these to `keys.outbox(dest)` and SADDs `dest` to `keys.outbox_destinations`."""
    return {"kind": kind, "key": key, "body": body, "content_type": content_type, "created_ms": str(now_ms),
            "meta": json.dumps(dict(meta or {}), sort_keys=True)}


class Outbox:
    """One destination's queue: enqueue, read, list refusals, resend."""

    def __init__(self, client: redis.Redis, keys: Keys, dest: str) -> None:
        self.client, self.keys, self.dest = client, keys, dest
        self._enqueue = client.register_script(_ENQUEUE)

    def enqueue(self, body: str, *, kind: str, key: str = "", content_type: str = "text/plain",
                meta: Mapping[str, str] | None = None, dedup_key: str = "", now_ms: int | None = None) -> str | None:
        """Add a message at the end; returns its id, or None when `dedup_key` was enqueued before."""
        ids = self.enqueue_many([(body, dict(meta or {}))], kind=kind, key=key, content_type=content_type,
                                dedup_key=dedup_key, now_ms=now_ms)
        return ids[0] if ids else None

    def enqueue_many(self, items: list[tuple[str, dict[str, str]]], *, kind: str, key: str = "",
                     content_type: str = "text/plain", dedup_key: str = "", now_ms: int | None = None) -> list[str] | None:
        """Add (body, meta) messages at the end, in order, atomically; their ids, or None when
        `dedup_key` was enqueued before (nothing is added then)."""
        now = _now_ms() if now_ms is None else now_ms
        flat = []
        for body, meta in items:
            fields = message_fields(body, kind=kind, key=key, content_type=content_type, meta=meta, now_ms=now)
            flat.append([x for kv in fields.items() for x in kv])
        res = self._enqueue(keys=[self.keys.outbox(self.dest), self.keys.outbox_keys(self.dest),
                                  self.keys.outbox_destinations],
                            args=[str(now), dedup_key, self.dest, json.dumps(flat)])
        if res is None:
            return None
        return [redis_types.text(x) for x in res]

    def seen(self, dedup_key: str) -> bool:
        """Was something enqueued under this idempotency key?"""
        return self.client.zscore(self.keys.outbox_keys(self.dest), dedup_key) is not None

    def state(self) -> dict[str, str]:
        """The sender's state hash (cursor, attempts, next_ms, last_error, delivered, refused)."""
        return redis_types.str_hash(self.client.hgetall(self.keys.outbox_state(self.dest)))

    def _cursor(self) -> str:
        return self.state().get("cursor") or "0-0"

    def next(self) -> Message | None:
        """The oldest message not yet settled."""
        got = redis_types.entries(self.client.xrange(self.keys.outbox(self.dest), min=f"({self._cursor()}", count=1))
        return _decode(self.dest, *got[0]) if got else None

    def pending(self, limit: int = 100) -> list[Message]:
        """Messages not yet settled, oldest first."""
        got = redis_types.entries(self.client.xrange(self.keys.outbox(self.dest), min=f"({self._cursor()}",
                                                     count=limit))
        return [_decode(self.dest, i, f) for i, f in got]

    def pending_count(self, cap: int = 10_000) -> int:
        """How many messages wait (counted up to `cap`)."""
        return len(redis_types.entries(self.client.xrange(self.keys.outbox(self.dest), min=f"({self._cursor()}",
                                                          count=cap)))

    def failed(self) -> list[FailedMessage]:
        """Refused messages, newest refusal first."""
        out = []
        for raw in redis_types.str_hash(self.client.hgetall(self.keys.outbox_failed(self.dest))).values():
            try:
                d = json.loads(raw)
                m = d["message"]
                msg = Message(m["id"], self.dest, m["kind"], m["body"], m.get("key", ""),
                              m.get("content_type", "text/plain"), int(m.get("created_ms", 0)), m.get("meta", {}))
                out.append(FailedMessage(msg, d.get("reason", ""), d.get("answer", ""), int(d.get("failed_ms", 0)),
                                         int(d.get("attempts", 0))))
            except (ValueError, KeyError, TypeError) as e:
                log.error("outbox %s: unreadable failed record (%s)", self.dest, e)
        return sorted(out, key=lambda f: f.failed_ms, reverse=True)

    def resend(self, message_id: str) -> str:
        """Enqueue a refused message again (at the end; same body); returns the new id.

        Raises KeyError when no refused message has this id (already resent, or never).
        """
        raw = self.client.hget(self.keys.outbox_failed(self.dest), message_id)
        if raw is None:
            raise KeyError(message_id)
        m = json.loads(str(raw))["message"]
        meta = {**m.get("meta", {}), "resend_of": message_id}
        new_id = self.enqueue(m["body"], kind=m["kind"], key=m.get("key", ""),
                              content_type=m.get("content_type", "text/plain"), meta=meta)
        self.client.hdel(self.keys.outbox_failed(self.dest), message_id)
        assert new_id is not None  # no dedup key: always enqueued
        return new_id

    def trim(self, now_ms: int, retention_ms: int = RETENTION_MS) -> None:
        """Drop settled messages older than `retention_ms` (never an unsettled one)."""
        cursor_ms = int(self._cursor().split("-")[0])
        limit = min(cursor_ms, now_ms - retention_ms)
        if limit > 0:
            self.client.xtrim(self.keys.outbox(self.dest), minid=str(limit), approximate=True)
        self.client.zremrangebyscore(self.keys.outbox_keys(self.dest), "-inf", now_ms - KEY_RETENTION_MS)


class OutboxSender:
    """Sends one destination's messages, in order, while holding its lease. Drive with `step()`."""

    def __init__(self, outbox: Outbox, send: Callable[[Message], Outcome], *, owner: str | None = None,
                 lease_ms: int = 15_000, backoff_start_s: float = BACKOFF_START_S,
                 backoff_max_s: float = BACKOFF_MAX_S, clock: Callable[[], int] = _now_ms) -> None:
        self.outbox, self.send = outbox, send
        self.owner = owner or secrets.token_hex(6)
        self.lease_ms = lease_ms
        self.backoff_start_s, self.backoff_max_s = backoff_start_s, backoff_max_s
        self.clock = clock
        c, k, d = outbox.client, outbox.keys, outbox.dest
        self._lease = c.register_script(_LEASE)
        self._settle = c.register_script(_SETTLE)
        self._keys = (k.outbox_lease(d), k.outbox_state(d), k.outbox_failed(d))
        self._next_trim = 0
        self.sent = 0
        self.idle = False  # the last step found nothing to send (the caller may wait for new messages)

    def holds_lease(self) -> bool:
        """Take the destination's lease if free, or renew ours."""
        return bool(self._lease(keys=[self._keys[0]], args=[self.owner, self.lease_ms]))

    def release(self) -> None:
        """Give the lease up (on shutdown), if it is ours."""
        c = self.outbox.client
        if c.get(self._keys[0]) == self.owner:
            c.delete(self._keys[0])

    def step(self) -> float:
        """Send at most one message; returns how long to wait before the next step (s)."""
        self.idle = False
        now = self.clock()
        if not self.holds_lease():
            return self.lease_ms / 3000
        state = self.outbox.state()
        wait_ms = int(state.get("next_ms") or 0) - now
        if wait_ms > 0:
            return min(wait_ms / 1000, self.lease_ms / 3000)
        if now >= self._next_trim:
            self.outbox.trim(now)
            self._next_trim = now + 3600_000
        msg = self.outbox.next()
        self.idle = msg is None
        if msg is None:
            return 0.5
        try:
            outcome = self.send(msg)
        except Exception as e:  # noqa: BLE001 - a sender bug must not lose the message nor stop the queue
            log.exception("outbox %s: sending %s failed", msg.dest, msg.id)
            outcome = Retry(f"internal error: {type(e).__name__}: {e}")
        self.sent += 1
        return self._apply(msg, outcome, int(state.get("attempts") or 0))

    def _apply(self, msg: Message, outcome: Outcome, attempts: int) -> float:
        now = self.clock()
        if isinstance(outcome, Retry):
            attempts += 1
            delay_s = min(self.backoff_start_s * 2 ** (attempts - 1), self.backoff_max_s)
            self.outbox.client.hset(self._keys[1], mapping={
                "attempts": str(attempts), "next_ms": str(now + int(delay_s * 1000)), "last_ms": str(now),
                "last_error": outcome.reason[:500], "retrying": msg.id})
            log.warning("outbox %s: %s not delivered (%s); attempt %d, next in %.0f s", msg.dest, msg.id,
                        outcome.reason, attempts, delay_s)
            return min(delay_s, self.lease_ms / 3000)
        failed = ""
        if isinstance(outcome, Refused):
            failed = json.dumps({"message": msg.to_dict(), "reason": outcome.reason[:1000],
                                 "answer": outcome.answer[:4000], "failed_ms": now, "attempts": attempts + 1})
            log.error("outbox %s: %s refused by the receiver: %s", msg.dest, msg.id, outcome.reason)
        settled = self._settle(keys=list(self._keys), args=[self.owner, msg.id, failed, now, outcome.answer[:2000]])
        if not settled:
            log.warning("outbox %s: lease lost while sending %s; the new holder sends it again", msg.dest, msg.id)
        return 0.0
