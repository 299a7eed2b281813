"""Redis stream I/O: a loss-free pipelined writer and readers for history and live tail.

The writer is the only way readings, rejects and other entries reach Redis from the edge:
- `write()`/`reject()` never block on Redis; entries queue in memory, in order.
- A background thread sends them in pipelined batches, trimming each stream by retention
  (`XADD … MINID ~`).
- Redis unreachable: entries stay queued (memory up to `buffer_max`, then an fsynced
  on-disk spool), the thread reconnects with backoff and flushes them in order.
- A batch whose outcome is unknown (connection lost mid-pipeline) is re-sent only after
  checking each stream's tail, so every reading is stored once (identity: device + ts).
- `close()` flushes; what cannot be flushed is spooled to disk and replayed at next start.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from monitor.model.clock import now_ms
from monitor.model.codec import from_fields, reject_fields, to_fields
from monitor.model.keys import F_DEV, F_TS, Keys
from monitor.model.readings import Reading, Refusal
from monitor.store import redis_types
from monitor.store.redis_conn import REDIS_DOWN, connect
from monitor.store.spool import Entry, Spool

log = logging.getLogger(__name__)

BATCH_MAX = 1000
TAIL_CHECK_EXTRA = 200  # entries beyond the batch size read back when checking a tail
# At least this many tail entries seed the identities: after an ingest crash an MQTT broker
# redelivers up to `mqtt.receive_maximum` (default 1000) unacknowledged messages, stored or
# not, arriving a few at a time; the first small batch must not seed too shallow a tail.
TAIL_CHECK_MIN = 2500
RECENT_KEYS_MAX = 20_000  # (dev, ts) identities remembered per stream for dedup

Done = Callable[[], None]


@dataclass
class WriterStats:
    """Counters a supervisor or benchmark can read."""

    written: int = 0
    duplicates_skipped: int = 0
    reconnects: int = 0
    spooled: int = 0
    queued: int = 0


class _Recent:
    """Identities (dev, ts) recently stored in one stream, seeded from its tail."""

    def __init__(self) -> None:
        self.order: collections.deque[tuple[str, str]] = collections.deque()
        self.ids: set[tuple[str, str]] = set()

    def add(self, ident: tuple[str, str]) -> None:
        if ident in self.ids:
            return
        self.ids.add(ident)
        self.order.append(ident)
        if len(self.order) > RECENT_KEYS_MAX:
            self.ids.discard(self.order.popleft())


class StreamWriter:
    """Pipelined, retention-trimming, outage-proof writer of stream entries."""

    def __init__(
        self,
        redis_url: str,
        keys: Keys,
        *,
        retention_ms: int,
        spool_path: Path,
        buffer_max: int = 100_000,
        client: redis.Redis | None = None,
    ) -> None:
        self.keys = keys
        self.retention_ms = retention_ms
        self.buffer_max = buffer_max
        self.stats = WriterStats()
        self._redis = client or connect(redis_url)
        self._spool = Spool(spool_path)
        self._mem: collections.deque[tuple[Entry, Done | None]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._in_flight = 0
        self._recent: dict[str, _Recent] = {}
        self._connected = True
        self._thread = threading.Thread(target=self._run, name="stream-writer", daemon=True)
        self._thread.start()

    # --- producer side --------------------------------------------------------------
    def write(self, reading: Reading, on_stored: Done | None = None) -> None:
        """Queue a reading for its room's stream; `on_stored` runs once it is in Redis."""
        self._put((self.keys.vitals(reading.room), to_fields(reading), True), on_stored)

    def reject(self, refusal: Refusal, ts_ms: int | None = None) -> None:
        """Queue a refusal for the rejects stream."""
        self._put((self.keys.rejects, reject_fields(refusal, ts_ms or now_ms()), False), None)

    def append(self, key: str, fields: dict[str, str], on_stored: Done | None = None) -> None:
        """Queue any other stream entry (alert events, audit) through the same safe path."""
        self._put((key, fields, False), on_stored)

    def _put(self, entry: Entry, done: Done | None) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("writer is closed")
            # Once anything is spooled, newer entries must queue behind it on disk too,
            # or order would break. Entries with a completion callback stay in memory
            # (the callback cannot be spooled); their producers are flow-controlled.
            if done is None and (self._spool.count or len(self._mem) >= self.buffer_max):
                self._spool.append([entry])
                self.stats.spooled += 1
            else:
                self._mem.append((entry, done))
            self.stats.queued = len(self._mem) + self._spool.count
            self._cond.notify()

    # --- state ----------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Entries accepted but not yet confirmed stored."""
        with self._cond:
            return len(self._mem) + self._spool.count + self._in_flight

    @property
    def connected(self) -> bool:
        """False while Redis is unreachable."""
        return self._connected

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far is stored; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._mem or self._spool.count or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed in `timeout_s`; spool the rest to disk; stop."""
        self.flush(timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout_s + 5)
        with self._cond:
            if self._mem:
                # memory holds the oldest entries: they go before anything already spooled
                self._spool.prepend([e for e, _ in self._mem])
                log.warning("writer closed with Redis unreachable: %d entries spooled to %s",
                            len(self._mem), self._spool.path)
                self._mem.clear()
            self._spool.close()

    # --- writer thread --------------------------------------------------------------
    def _next_batch(self) -> tuple[list[Entry], list[Done | None], int, int] | None:
        """The oldest entries (memory first: older than the spool), or None when closing."""
        with self._cond:
            while not self._mem and not self._spool.count:
                if self._closing:
                    return None
                self._cond.wait(0.5)
            if self._mem:
                n = min(BATCH_MAX, len(self._mem))
                items = [self._mem.popleft() for _ in range(n)]
                self._in_flight = n
                return [e for e, _ in items], [d for _, d in items], -1, 0
            entries, offset = self._spool.peek(BATCH_MAX)
            self._in_flight = len(entries)
            return entries, [None] * len(entries), offset, len(entries)

    def _run(self) -> None:
        backoff = 0.05
        unknown_outcome = False
        batch = None
        while True:
            if batch is None:
                batch = self._next_batch()
                if batch is None:
                    return
            entries, dones, spool_offset, spool_n = batch
            try:
                if unknown_outcome or not self._connected:
                    self._recent.clear()  # re-seed identities from the streams' tails
                self._send(entries)
            except REDIS_DOWN as e:
                if self._connected:
                    log.warning("Redis unreachable (%s); holding %d+ entries", e, len(entries))
                self._connected = False
                unknown_outcome = True
                with self._cond:
                    if self._closing:
                        # give the batch back so close() spools it
                        if spool_offset < 0:
                            self._mem.extendleft(reversed(list(zip(entries, dones, strict=True))))
                        self._in_flight = 0
                        return
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if not self._connected:
                log.info("Redis reachable again; flushing held entries")
                self.stats.reconnects += 1
            self._connected = True
            unknown_outcome = False
            backoff = 0.05
            with self._cond:
                if spool_offset >= 0:
                    self._spool.commit(spool_offset, spool_n)
                self._in_flight = 0
                self._cond.notify_all()
            for done in dones:
                if done is not None:
                    try:
                        done()
                    except Exception:  # a producer's callback must not kill the writer
                        log.exception("on_stored callback failed")
            batch = None

    def _identities(self, key: str, need: int) -> _Recent:
        rec = self._recent.get(key)
        if rec is None:
            rec = _Recent()
            tail_n = max(need + TAIL_CHECK_EXTRA, TAIL_CHECK_MIN)
            for _id, fields in reversed(redis_types.entries(self._redis.xrevrange(key, count=tail_n))):
                if F_DEV in fields and F_TS in fields:
                    rec.add((fields[F_DEV], fields[F_TS]))
            self._recent[key] = rec
        return rec

    def _send(self, entries: list[Entry]) -> None:
        min_id = str(now_ms() - self.retention_ms)
        per_key: dict[str, int] = collections.Counter(k for k, _, d in entries if d)
        pipe = self._redis.pipeline(transaction=False)
        sent: list[tuple[str, tuple[str, str] | None]] = []
        batch_ids: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
        for key, fields, dedup in entries:
            ident = None
            if dedup:
                ident = (fields[F_DEV], fields[F_TS])
                rec = self._identities(key, per_key[key])
                if ident in rec.ids or ident in batch_ids[key]:
                    self.stats.duplicates_skipped += 1
                    continue
                batch_ids[key].add(ident)
            pipe.xadd(key, fields, minid=min_id, approximate=True)  # type: ignore[arg-type]
            sent.append((key, ident))
        if sent:
            pipe.execute()
        for key, ident in sent:
            if ident is not None:
                self._recent[key].add(ident)
        self.stats.written += len(sent)


# --- readers ----------------------------------------------------------------------------
def read_range(
    client: redis.Redis, key: str, start: str = "-", end: str = "+", page: int = 2000
) -> Iterator[tuple[str, dict[str, str]]]:
    """Every entry of a stream between two ids (inclusive), paged with XRANGE."""
    cursor = start
    exclusive = False
    while True:
        lo = f"({cursor}" if exclusive else cursor
        chunk = redis_types.entries(client.xrange(key, min=lo, max=end, count=page))
        yield from chunk
        if len(chunk) < page:
            return
        cursor, exclusive = chunk[-1][0], True


def read_readings(
    client: redis.Redis, keys: Keys, room: str, start_ms: int | None = None, end_ms: int | None = None
) -> Iterator[Reading]:
    """A room's readings whose stream ids fall in [start_ms, end_ms]."""
    start = str(start_ms) if start_ms is not None else "-"
    end = str(end_ms) if end_ms is not None else "+"
    for _id, fields in read_range(client, keys.vitals(room), start, end):
        yield from_fields(room, fields)


def tail(
    client: redis.Redis, last_ids: dict[str, str], block_ms: int = 1000, count: int = 1000
) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """New entries after `last_ids` (key → id, "$" for only-new), blocking up to `block_ms`.

    Updates `last_ids` in place so the next call continues where this one stopped.
    """
    reply = client.xread(redis_types.stream_ids(last_ids), block=block_ms, count=count)
    resp = redis_types.xread_entries(reply) or []
    out = []
    for key, entries in resp:
        if entries:
            last_ids[key] = entries[-1][0]
            out.append((key, entries))
    return out
