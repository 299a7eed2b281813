"""Redis stream I/O: the loss-free writer of accepted entries, and readers.

The writer is the only way readings, rejects and other entries reach Redis from the edge.
- `write()`/`reject()`/`append()` never block on Redis: entries join one queue, in arrival
  order. The queue's oldest part may be on disk (the spool), the rest is in memory.
- A background thread sends the oldest entries in batches, each one transaction
  (MULTI/EXEC: all or nothing, so order holds), trimming each stream by retention.
- Every Redis error is classified (monitor/store/redis_faults.py): unreachable or timed out,
  refused by the server (OOM, READONLY, MISCONF, LOADING, BUSY, NOAUTH…), or refused for one
  entry (WRONGTYPE). The first two keep the entries and retry with backoff (≤ 2 s) for as
  long as it takes; an entry refused for itself goes to `rejects` (`store_refused`, with
  Redis's words) and the rest goes on. The thread never dies of an error; if it dies
  anyway, `ensure_running()` (called by ingest's supervisor) starts a new one.
- While writes fail for more than a second, and whenever memory holds `buffer_max`
  entries, the memory part moves to the spool (fsynced), so a crash loses nothing accepted
  more than about a second before it, and memory stays bounded. Entries with a completion
  callback spool too; their callbacks wait in memory (in order, run-length packed).
- Identity (device, ts, digest of values and flags — monitor/model/codec.py `identity`,
  computed alike from a queued entry's fields and a stored one's): a redelivery repeats all
  three; a new reading reusing a ts label (a device clock stepped back) differs in the
  digest and is stored. An entry that may already be in Redis — sent when the connection
  broke, replayed from a spool an earlier process left, redelivered by MQTT
  (`stored_after_ms`), or re-sent by a producer in the first two minutes after a start —
  is checked against the stream itself, from the earliest time a stored copy could have
  been written up to now (read with XRANGE, cached while needed).
  The window follows from what can be redelivered, not from an entry count, so no pack
  size or outage length can outrun it. Fresh entries are checked against the identities
  this writer stored in the last RECENT_MS (a device re-publishing a reading).
- `storage()` tells the truth about all this: `storing` or `failing` with the cause, since
  when, how many entries wait and since when (monitor/model/storage.py). `last_stored(dev)`
  and `device_backlog(dev)` give the same per device, for device status.
- An entry stored more than `RX_LAG_MS` after it was accepted carries `rx`, its receive
  time, so consumers measure delays on the receive clock even after an outage.
- Trimming: each XADD trims its stream to `retention_ms` (MINID ~), but never below the
  stream's trim floor (`keys.trim_floor`, kept by the archive top-up: the start of the
  oldest session not archived yet in that room), so no reading leaves Redis before the
  archive has it.
- `close()` flushes; what cannot be flushed goes to the spool and is replayed at next start.
- `min_replicas` > 0 (config `redis.min_replicas`): each batch is MULTI/EXEC + `WAIT n`
  in one round trip on one connection; an entry counts as stored (its callback runs, its
  device's last-stored mark moves) only when WAIT says n replicas hold it. Short of that
  the batch stays queued, as after a broken connection: it is re-sent after checking the
  stream by identity, on whichever server is master by then (a Sentinel failover). A batch
  found wholly stored is confirmed by a propagated no-op (PUBLISH on the clinic's
  `…:writer-sync` channel) + WAIT, since WAIT only covers this connection's own writes.
- Behind a Sentinel URL or with `min_replicas` the identities this writer remembers hold
  only for the connection they were read or written on: a promoted replica may lack what the
  old master had, so only what the current master's stream shows counts as stored. Only a
  new connection can reach a new master, and redis-py makes one without raising anything
  when it finds a pooled connection dead (a writer stalled across a failover wakes up on the
  new master), so every connection the writer's client makes is counted (`_connects`): a
  new one forgets the identities, and an attempt during which one was made is re-checked
  (its scan and its send may have reached different servers).
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from monitor.model.clock import now_ms
from monitor.model.codec import Identity, from_fields, identity, reject_fields, to_fields
from monitor.model.keys import F_DEV, F_RX, F_TS, Keys
from monitor.model.ratelimit import RateLimiter
from monitor.model.readings import MAX_AHEAD_MS, Reading, Refusal
from monitor.model.redis_url import RedisUrlError
from monitor.model.redis_url import parse as parse_redis_url
from monitor.model.storage import FAILING, STORING, DeviceBacklog, StorageState, StoredMark
from monitor.store import redis_types
from monitor.store.redis_conn import connect
from monitor.store.redis_faults import ENTRY, REDIS_FAILURES, REFUSED, Fault, classify, outcome_unknown
from monitor.store.spool import Item, Spool, SpoolError

log = logging.getLogger(__name__)

BATCH_MAX = 1000
TRIM_FLOOR_EVERY_MS = 10_000  # how often the writer reads the trim floors (`keys.trim_floor`)
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0  # once Redis is back, storing resumes within this
SPILL_AFTER_MS = 1000  # failing this long: memory goes to the spool (survives a crash)
SPOOL_RETRY_S = 5.0  # after the spool could not be written
REMIND_EVERY_S = 60.0  # "still not storing" log line while failing
RX_LAG_MS = 1000  # stored later than this after acceptance: the entry carries `rx`
# Entry ids are Redis's clock, acceptance times ours: allow this much disagreement when
# deciding where in a stream a stored copy could be.
CLOCK_SLACK_MS = 120_000
SCAN_IDLE_MS = 30_000  # a stream's scanned window is dropped this long after last needed
# Just after a start, a reading may be a producer's re-send of one the previous process
# stored but never confirmed (an HL7 sender without its ACK, a broker without DUP flags):
# readings accepted this soon after start are checked against the streams, back to
# STARTUP_LOOKBACK_MS before the start.
STARTUP_CHECK_MS = 120_000
STARTUP_LOOKBACK_MS = 600_000
# Identities this writer stored, remembered per stream to store a device's re-sent reading
# once: for RECENT_MS (a re-send comes within seconds or minutes — an unacknowledged publish
# repeated, a clock stepped back), and never more than RECENT_KEYS_MAX. Only a count (20,000
# a stream) was ~200 B × 20,000 × rooms once full: ingest grew ~14 MB/h at 20 rooms × 1 Hz
# for 5.5 h, and would have held ~1.2 GB at 300 rooms.
RECENT_MS = 600_000
RECENT_KEYS_MAX = 20_000
TRACEBACK_EVERY_S = 10.0
REJECT_REASON = "store_refused"
WAIT_TIMEOUT_MS = 1000  # min_replicas: how long WAIT may block before the batch is retried

Done = Callable[[], None]


@dataclass
class WriterStats:
    """Counters a supervisor or benchmark can read."""

    written: int = 0
    duplicates_skipped: int = 0
    reconnects: int = 0  # failing → storing transitions
    spooled: int = 0  # entries moved to the spool
    queued: int = 0  # entries waiting (memory + spool) at the last put
    rejected: int = 0  # entries Redis refused for themselves, sent to rejects
    lost: int = 0  # refused rejects that had nowhere to go (logged with their content)
    failures: int = 0  # failed attempts
    unconfirmed: int = 0  # batches written but not confirmed by WAIT (min_replicas)
    restarts: int = 0  # writer threads started by ensure_running()
    scanned: int = 0  # stream entries read back for identity checks
    readings_accepted: int = 0  # readings queued by write()
    readings_stored: int = 0  # readings Redis confirmed (including ones replayed from a spool)

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return dict(vars(self))


class _Seen:
    """(dev, ts, digest) identities known stored in one stream: what this writer stored recently,
    plus — while maybe-stored entries are being checked — everything in a scanned window."""

    def __init__(self) -> None:
        self.ids: set[Identity] = set()
        self.order: collections.deque[tuple[Identity, int]] = collections.deque()  # (id, host ms added)
        self.lo_ms: int | None = None  # the window covers ids ≥ lo_ms …
        self.hi_id: str | None = None  # … up to this id (read again from here on refresh)
        self.read_at_ms = 0  # host time the last read up to "+" began
        self.active_until_ms = 0
        self.unreadable = ""  # XRANGE refused (e.g. WRONGTYPE): cannot check this key

    def add(self, ident: Identity, now: int) -> None:
        if ident not in self.ids:
            self.ids.add(ident)
            self.order.append((ident, now))

    def trim(self, now: int) -> None:
        """Drop the scanned window once unused; keep the identities added in the last
        RECENT_MS, at most RECENT_KEYS_MAX of them."""
        if self.lo_ms is not None and now > self.active_until_ms:
            self.lo_ms = self.hi_id = None
        if self.lo_ms is None:
            horizon = now - RECENT_MS
            while self.order and (len(self.order) > RECENT_KEYS_MAX or self.order[0][1] < horizon):
                self.ids.discard(self.order.popleft()[0])

    def cover(self, client: redis.Redis, key: str, lo_ms: int, now: int, until_ms: int | None) -> int:
        """Make the window cover stream ids from `lo_ms` up to what was stored by host time
        `until_ms` (None: up to now); returns entries read. Read forward again only when
        the last forward read began before `until_ms`."""
        self.active_until_ms = now + SCAN_IDLE_MS
        n = 0
        if self.lo_ms is None:
            self.read_at_ms = now
            n += self._scan(client, key, str(lo_ms), "+", now, extend_hi=True)
            self.lo_ms = lo_ms
            return n
        if lo_ms < self.lo_ms:
            n += self._scan(client, key, str(lo_ms), str(self.lo_ms - 1), now, extend_hi=False)
            self.lo_ms = lo_ms
        if until_ms is None or until_ms >= self.read_at_ms:
            self.read_at_ms = now
            start = f"({self.hi_id}" if self.hi_id else str(self.lo_ms)
            n += self._scan(client, key, start, "+", now, extend_hi=True)
        return n

    def _scan(self, client: redis.Redis, key: str, start: str, end: str, now: int, *, extend_hi: bool) -> int:
        n = 0
        for entry_id, fields in read_range(client, key, start, end):
            n += 1
            if F_DEV in fields and F_TS in fields:
                self.add(identity(fields), now)
            if extend_hi:
                self.hi_id = entry_id
        return n


class _Batch:
    """Entries taken from the head of the queue for one attempt."""

    def __init__(self, items: list[tuple[Item | None, Done | None]], from_spool: bool,
                 spool_end: int = 0) -> None:
        self.items = items
        self.from_spool = from_spool
        self.spool_end = spool_end


class StreamWriter:
    """Loss-free, order-keeping, error-proof writer of stream entries; see the module doc."""

    def __init__(
        self,
        redis_url: str,
        keys: Keys,
        *,
        retention_ms: int,
        spool_path: Path,
        buffer_max: int = 100_000,
        client: redis.Redis | None = None,
        min_replicas: int = 0,
        wait_timeout_ms: int = WAIT_TIMEOUT_MS,
    ) -> None:
        self.keys = keys
        self.min_replicas = min_replicas
        self.wait_timeout_ms = wait_timeout_ms
        try:
            sentinel = parse_redis_url(redis_url).kind == "sentinel"
        except RedisUrlError:
            sentinel = False
        # the master may change under us: nothing remembered from one counts after a failure
        self._forget_on_failure = sentinel or min_replicas > 0
        self.retention_ms = retention_ms
        self.buffer_max = buffer_max
        self.stats = WriterStats()
        # every connection this client makes (also the silent reconnects of a pool): a new
        # one may reach another master, see _attempt
        self._connects = 0
        self._seen_connects = 0
        # (only where it matters: a Cluster client runs its own connect hook, and calls ours after it)
        hook: dict[str, Any] = {"redis_connect_func": self._on_connect} if self._forget_on_failure else {}
        self._redis = client or connect(redis_url, **hook)
        self._cond = threading.Condition()
        self._mem: collections.deque[tuple[Item, Done | None]] = collections.deque()
        self._spool = Spool(spool_path)
        # callbacks of spooled entries, aligned with the spool's lines: [done, n] runs
        self._spool_dones: collections.deque[list] = collections.deque()
        if self._spool.count:
            self._spool_dones.append([None, self._spool.count])
        self._spool_head_acc: int | None = None
        self._spool_unknown_ms: int | None = None  # a spool batch was sent, outcome unknown
        self._stop = threading.Event()  # close(): ends backoff waits
        self._batch: _Batch | None = None
        self._closing = False
        self._seen: dict[str, _Seen] = {}
        # per device: readings accepted and not yet resolved → [count, oldest accepted ms]
        self._backlog: dict[str, list[int]] = {}
        self._marks: dict[str, StoredMark] = {}
        # storage state
        started = self._started_ms = now_ms()
        self._state, self._code, self._cause, self._since_ms = STORING, "", "", started
        self._last_stored_ms: int | None = None
        self._spool_error = ""
        self._next_spill_try = 0.0
        self._next_remind = 0.0
        self._tracebacks = RateLimiter(TRACEBACK_EVERY_S)
        self._floors: dict[str, int] = {}
        self._floors_due_ms = 0
        if self._spool.count:
            head, _ = self._spool.peek(1)
            self._spool_head_acc = head[0].accepted_ms if head and head[0] else started
            log.info("spool %s holds %d entries from an earlier run: replaying them first",
                     self._spool.path, self._spool.count)
        self._thread = self._start_thread()

    def _on_connect(self, connection: Any) -> None:
        """redis-py's hook for each new connection: do its handshake, then count it."""
        connection.on_connect()
        self._connects += 1

    def _start_thread(self) -> threading.Thread:
        t = threading.Thread(target=self._run, name="stream-writer", daemon=True)
        t.start()
        return t

    # --- producer side --------------------------------------------------------------
    def write(self, reading: Reading, on_stored: Done | None = None, *,
              stored_after_ms: int | None = None) -> None:
        """Queue a reading for its room's stream; `on_stored` runs once it is in Redis (or,
        refused by Redis for itself, in `rejects`).

        `stored_after_ms`: this reading may already be in Redis (an MQTT redelivery), stored
        no earlier than this host time; it is then checked against the stream first.
        """
        now = now_ms()
        until = None
        if stored_after_ms is None and now - self._started_ms < STARTUP_CHECK_MS:
            # only a copy the previous process stored: written before this one started
            stored_after_ms, until = self._started_ms - STARTUP_LOOKBACK_MS, self._started_ms
        check = None
        if stored_after_ms is not None:
            # a stored copy was accepted after its label could be (≤ MAX_AHEAD_MS early)
            check = max(stored_after_ms, reading.ts_ms - MAX_AHEAD_MS)
        item = Item(self.keys.vitals(reading.room), to_fields(reading), True, now, check)
        item.check_until_ms = until
        self._put(item, on_stored)

    def reject(self, refusal: Refusal, ts_ms: int | None = None) -> None:
        """Queue a refusal for the rejects stream."""
        now = now_ms()
        self._put(Item(self.keys.rejects, reject_fields(refusal, ts_ms or now), False, now), None)

    def append(self, key: str, fields: dict[str, str], on_stored: Done | None = None) -> None:
        """Queue any other stream entry (alert events, audit) through the same safe path."""
        self._put(Item(key, dict(fields), False, now_ms()), on_stored)

    def _put(self, item: Item, done: Done | None) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("writer is closed")
            self._mem.append((item, done))
            if item.dedup:
                self.stats.readings_accepted += 1
                dev = item.fields.get(F_DEV, "")
                b = self._backlog.get(dev)
                if b is None:
                    self._backlog[dev] = [1, item.accepted_ms]
                else:
                    b[0] += 1
            if len(self._mem) >= self.buffer_max:
                self._spill_if_due(time.monotonic())  # at once unless a batch is out
            self.stats.queued = len(self._mem) + self._spool.count
            self._cond.notify()

    # --- state ----------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Entries accepted but not yet confirmed stored."""
        with self._cond:
            return self._pending_locked()

    def _pending_locked(self) -> int:
        in_batch = len(self._batch.items) if self._batch and not self._batch.from_spool else 0
        return len(self._mem) + self._spool.count + in_batch

    @property
    def connected(self) -> bool:
        """True while Redis accepts our writes (False when unreachable *or* refusing)."""
        return self._state == STORING

    def storage(self) -> StorageState:
        """The writer's storage state now (see monitor/model/storage.py)."""
        with self._cond:
            oldest = [it.accepted_ms for it, _ in (self._batch.items[:1] if self._batch else [])
                      if it is not None]
            if self._spool.count and self._spool_head_acc is not None:
                oldest.append(self._spool_head_acc)
            if self._mem:
                oldest.append(self._mem[0][0].accepted_ms)
            return StorageState(
                state=self._state, cause=self._cause, code=self._code, since_ms=self._since_ms,
                pending=self._pending_locked(), oldest_pending_ms=min(oldest) if oldest else None,
                last_stored_ms=self._last_stored_ms, spooled=self._spool.count,
                spool_error=self._spool_error, counters=self.stats.as_dict())

    def last_stored(self, device: str) -> StoredMark | None:
        """The newest reading of `device` that Redis confirmed (label, receive, store time)."""
        return self._marks.get(device)

    def device_backlog(self, device: str) -> DeviceBacklog:
        """Readings of `device` accepted by this writer and not yet stored."""
        with self._cond:
            b = self._backlog.get(device)
            return DeviceBacklog(b[0], b[1]) if b else DeviceBacklog()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far is stored; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._mem or self._spool.count or self._batch is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def ensure_running(self) -> bool:
        """Start a new writer thread if the last one died (a bug); True if it had to."""
        with self._cond:
            if self._closing or self._thread.is_alive():
                return False
            batch, self._batch = self._batch, None
            if batch is not None:
                self._give_back(batch, now_ms(), unknown=True)
            self.stats.restarts += 1
            self._thread = self._start_thread()
        log.error("stream-writer thread had died; started a new one (restart %d)", self.stats.restarts)
        return True

    @property
    def thread_alive(self) -> bool:
        """Whether the writer thread runs."""
        return self._thread.is_alive()

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed in `timeout_s`; spool the rest to disk; stop."""
        self.flush(timeout_s)
        with self._cond:
            self._closing = True
            self._stop.set()
            self._cond.notify_all()
        self._thread.join(timeout_s + 5)
        with self._cond:
            if self._batch is not None:  # the thread is stuck in a send: keep its batch too
                self._give_back(self._batch, now_ms(), unknown=True)
                self._batch = None
            if self._mem:
                items = [it for it, _ in self._mem]
                try:
                    self._spool.append(items)
                    log.warning("writer closed while not storing (%s): %d entries spooled to %s",
                                self._cause or "timeout", len(items), self._spool.path)
                except SpoolError as e:
                    self.stats.lost += len(items)
                    log.error("writer closed: %d entries LOST, the spool cannot be written (%s)",
                              len(items), e)
                self._mem.clear()
            self._spool.close()

    # --- writer thread --------------------------------------------------------------
    def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                ok = self._attempt(batch)
            except Exception as e:  # noqa: BLE001 - a bug here must not stop storing
                self._unexpected(e, batch)
                ok = False
            if ok:
                backoff = BACKOFF_MIN_S
                continue
            with self._cond:
                self._spill_if_due(time.monotonic())
                if self._closing:
                    return
            # not on the condition: every new entry notifies it, which would turn backoff
            # into a busy retry loop while Redis refuses
            self._stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            self._remind()

    def _next_batch(self) -> _Batch | None:
        """The oldest entries (spool first: it holds the oldest), or None when closing."""
        with self._cond:
            while True:
                self._spill_if_due(time.monotonic())
                if self._spool.count:
                    lines, end = self._spool.peek(BATCH_MAX)
                    dones = self._spool_done_slice(len(lines))
                    self._batch = _Batch(list(zip(lines, dones, strict=True)), True, end)
                    first = next((it for it in lines if it is not None), None)
                    if first is not None:
                        self._spool_head_acc = first.accepted_ms
                    for it in lines:
                        if it is not None and it.prior:
                            it.check_until_ms = self._started_ms  # the earlier process stored it, if at all
                    if self._spool_unknown_ms is not None:  # the last try's outcome is unknown
                        for it in lines:
                            if it is not None and it.dedup:
                                if it.check_from_ms is None or it.check_from_ms > self._spool_unknown_ms:
                                    it.check_from_ms = self._spool_unknown_ms
                                it.check_until_ms = None
                    return self._batch
                if self._mem:
                    n = min(BATCH_MAX, len(self._mem))
                    self._batch = _Batch([self._mem.popleft() for _ in range(n)], False)
                    return self._batch
                if self._closing:
                    return None
                self._cond.wait(0.5)

    def _spool_done_slice(self, n: int) -> list[Done | None]:
        """The callbacks of the next `n` spool lines (not consumed until commit)."""
        out: list[Done | None] = []
        for run in self._spool_dones:
            take = min(run[1], n - len(out))
            out.extend([run[0]] * take)
            if len(out) == n:
                break
        out.extend([None] * (n - len(out)))
        return out

    def _spool_done_consume(self, n: int) -> None:
        while n and self._spool_dones:
            run = self._spool_dones[0]
            take = min(run[1], n)
            run[1] -= take
            n -= take
            if run[1] == 0:
                self._spool_dones.popleft()

    def _spill_if_due(self, mono: float) -> None:
        """Under the lock, no batch out: move memory to the spool when failing for over
        SPILL_AFTER_MS or when memory is full."""
        if self._spool_error and not self._mem and self._state != FAILING:
            # Redis came back before the spool could be written again and took what memory
            # held: the spool's error no longer keeps anything from being stored
            log.info("spool %s: nothing waits for it any more (Redis took what memory held)",
                     self._spool.path)
            self._spool_error = ""
        if not self._mem or self._batch is not None or mono < self._next_spill_try:
            return
        failing_long = self._state == FAILING and now_ms() - self._since_ms >= SPILL_AFTER_MS
        if not failing_long and len(self._mem) < self.buffer_max:
            return
        entries = list(self._mem)
        try:
            self._spool.append([it for it, _ in entries])
        except SpoolError as e:
            self._next_spill_try = mono + SPOOL_RETRY_S
            if not self._spool_error:
                log.error("%s: keeping %d entries in memory until it can be written", e, len(entries))
            self._spool_error = str(e)
            return
        if self._spool_error:
            log.info("spool %s writable again", self._spool.path)
        self._spool_error = ""
        if self._spool.count == len(entries):
            self._spool_head_acc = entries[0][0].accepted_ms
        for _it, done in entries:
            if self._spool_dones and self._spool_dones[-1][0] is done:
                self._spool_dones[-1][1] += 1
            else:
                self._spool_dones.append([done, 1])
        self.stats.spooled += len(entries)
        self._mem.clear()

    def _give_back(self, batch: _Batch, attempt_ms: int, unknown: bool) -> None:
        """Under the lock: a failed batch goes back to the head of the queue."""
        if unknown:
            for it, _ in batch.items:
                if it is not None and it.dedup:
                    if it.check_from_ms is None or it.check_from_ms > attempt_ms:
                        it.check_from_ms = attempt_ms
                    it.check_until_ms = None  # this process may have stored it just now
        if batch.from_spool:  # never taken off the spool: mark its lines for the next read
            if unknown and (self._spool_unknown_ms is None or attempt_ms < self._spool_unknown_ms):
                self._spool_unknown_ms = attempt_ms
        else:
            self._mem.extendleft(reversed([(it, d) for it, d in batch.items if it is not None]))

    # --- one attempt ------------------------------------------------------------------
    def _attempt(self, batch: _Batch) -> bool:
        """Send one batch; resolve what Redis settled; True if nothing must be retried."""
        attempt_ms = now_ms()
        items = batch.items
        if self._forget_on_failure and self._connects != self._seen_connects:
            self._forget(self._connects)  # read or written on an earlier connection: may be another master
        connects = self._connects
        try:
            self._check_identities(items, attempt_ms)
            plan, results, short = self._send(items, attempt_ms)
        except REDIS_FAILURES as e:
            return self._failed(batch, classify(e), attempt_ms)
        except OSError as e:
            return self._failed(batch, classify(e), attempt_ms)
        if self._forget_on_failure and self._connects != connects and "dup" in plan:
            # a connection was made during this attempt: what was read back and what was
            # sent may be on different servers, so what counted as "already stored" may not
            # be stored where the batch went. Check it all again on the current connection.
            log.warning("Redis connection renewed while storing (a failover?): re-checking %d entries "
                        "against the stream on the current master", len(items))
            with self._cond:
                self._batch = None
                self._give_back(batch, attempt_ms, unknown=True)
                self._forget(self._connects)
                self._cond.notify_all()
            return True  # nothing failed: retry at once
        if short is not None:  # written, but fewer replicas than asked confirmed it
            self.stats.unconfirmed += 1
            return self._failed(batch, Fault(REFUSED, "replicas", short), attempt_ms, unknown=True)
        # per entry: "dup" (already stored), "bad" (not sendable), or its EXEC result
        stored: list[tuple[Item, Done | None]] = []
        skipped: list[tuple[Item, Done | None]] = []
        refused: list[tuple[Item, Done | None, str]] = []
        retry: list[tuple[Item, Done | None]] = []
        retry_fault: Fault | None = None
        later: list[Done] = []  # callbacks of entries settled without being stored
        for (it, done), what in zip(items, plan, strict=True):
            if it is None:
                if done is not None:
                    later.append(done)  # unreadable spool line: logged and kept aside
                continue
            if what == "dup":
                skipped.append((it, done))
            elif not isinstance(what, int):
                refused.append((it, done, "entry has no fields"))
            else:
                res = results[what]
                if isinstance(res, Exception):
                    fault = classify(res, in_exec=True)
                    if fault.kind == ENTRY:
                        refused.append((it, done, fault.cause))
                    else:
                        retry.append((it, done))
                        retry_fault = fault
                else:
                    stored.append((it, done))
        done_now = now_ms()
        with self._cond:
            self._batch = None
            for it, _ in stored:
                seen = self._seen.setdefault(it.key, _Seen())
                if it.dedup:
                    seen.add(identity(it.fields), done_now)
            for it, _ in stored + skipped:
                self._resolved(it, done_now, stored=True)
            for it, done, why in refused:
                self._resolved(it, done_now, stored=False)
                lost_done = self._refuse(it, done, why, done_now)
                if lost_done is not None:
                    later.append(lost_done)
            if batch.from_spool:
                # a retry here is rare (an EXEC with a server-wide error for some commands
                # only): the batch stays on the spool; what was stored is skipped by identity
                if not retry:
                    self._spool.commit(batch.spool_end, len(items))
                    self._spool_done_consume(len(items))
                    self._spool_unknown_ms = None
            elif retry:
                self._mem.extendleft(reversed(retry))
            if stored:
                self._last_stored_ms = done_now
            for seen in self._seen.values():
                seen.trim(done_now)
            self.stats.written += len(stored)
            self.stats.readings_stored += sum(1 for it, _ in stored if it.dedup)
            self.stats.duplicates_skipped += len(skipped)
            if retry_fault is None:
                self._set_storing(done_now)
            else:
                self._set_failing(retry_fault, done_now)
            self._cond.notify_all()
        for _it, done in stored + skipped:
            if done is not None:
                self._call(done)
        for done in later:
            self._call(done)
        return retry_fault is None

    def _check_identities(self, items: list[tuple[Item | None, Done | None]], now: int) -> None:
        """Scan the streams where maybe-stored entries may already be (see module doc)."""
        lo: dict[str, int] = {}
        until: dict[str, int | None] = {}  # latest host time a copy may have been stored
        for it, _ in items:
            if it is not None and it.dedup and it.check_from_ms is not None:
                lo[it.key] = min(lo.get(it.key, it.check_from_ms), it.check_from_ms)
                u = until.get(it.key, 0)
                until[it.key] = None if u is None or it.check_until_ms is None else max(u, it.check_until_ms)
        for key, from_ms in lo.items():
            seen = self._seen.setdefault(key, _Seen())
            if seen.unreadable:
                continue
            try:
                self.stats.scanned += seen.cover(self._redis, key, from_ms - CLOCK_SLACK_MS, now, until[key])
            except redis.ResponseError as e:
                fault = classify(e)
                if fault.code != "refused":
                    raise  # server-wide (LOADING, NOAUTH…): wait like any write
                # e.g. WRONGTYPE: the key is not a stream; its entries will be refused one
                # by one when sent, and go to rejects — nothing here to check them against
                seen.unreadable = fault.cause
                log.error("cannot read %s to check for stored copies: %s", key, fault.cause)

    def _send(self, items: list[tuple[Item | None, Done | None]],
              now: int) -> tuple[list[int | str], list[object], str | None]:
        """One MULTI/EXEC of the entries not already stored; returns per entry its plan
        ("dup", "bad" or its index in the EXEC results), the results, and — with
        `min_replicas` — None once WAIT confirmed, else why not (words for people)."""
        horizon = now - self.retention_ms
        floors = self._trim_floors(now)
        waiting = self.min_replicas > 0
        pipe = self._redis.pipeline(transaction=not waiting)
        if waiting:  # MULTI … EXEC WAIT by hand: one round trip, all on one connection
            pipe.execute_command("MULTI")
        plan: list[int | str] = []
        in_batch: dict[str, set[Identity]] = collections.defaultdict(set)
        n = 0
        for it, _ in items:
            if it is None:
                plan.append("bad")
                continue
            if not it.fields:
                plan.append("bad")
                continue
            fields = it.fields
            if it.dedup:
                ident = identity(fields)
                seen = self._seen.get(it.key)
                if ident in in_batch[it.key] or (seen is not None and ident in seen.ids):
                    plan.append("dup")
                    continue
                in_batch[it.key].add(ident)
                if now - it.accepted_ms > RX_LAG_MS:
                    fields = {**fields, F_RX: str(it.accepted_ms)}
            floor = floors.get(it.key)
            min_id = str(horizon if floor is None else min(horizon, floor))
            pipe.xadd(it.key, fields, minid=min_id, approximate=True)  # type: ignore[arg-type]
            plan.append(n)
            n += 1
        if not waiting:
            return plan, (pipe.execute(raise_on_error=False) if n else []), None
        if n == 0 and "dup" not in plan:
            return plan, [], None
        if n == 0:  # all already stored (maybe unconfirmed): make WAIT cover them
            pipe.execute_command("PUBLISH", self.keys.prefix + "writer-sync", "")
        pipe.execute_command("EXEC")
        pipe.execute_command("WAIT", self.min_replicas, self.wait_timeout_ms)
        replies: list[object] = pipe.execute(raise_on_error=False)
        queued, exec_reply, acks = replies[1:-2], replies[-2], replies[-1]
        if isinstance(replies[0], Exception):
            raise replies[0]
        if isinstance(exec_reply, Exception):
            # EXECABORT: raise what refused the queued command (READONLY, OOM…), not EXECABORT
            raise next((q for q in queued if isinstance(q, Exception)), exec_reply)
        if isinstance(acks, Exception):
            raise acks
        results = list(exec_reply) if isinstance(exec_reply, list) and n else []
        if not isinstance(acks, int) or acks < self.min_replicas:
            return plan, results, (f"Redis replicas did not confirm the write in "
                                   f"{self.wait_timeout_ms} ms (WAIT: {acks} of {self.min_replicas})")
        return plan, results, None

    def _trim_floors(self, now: int) -> dict[str, int]:
        """stream key → ms below which it must not be trimmed yet (`keys.trim_floor`: data the
        archive has not taken), read again every TRIM_FLOOR_EVERY_MS."""
        if now >= self._floors_due_ms:
            floors: dict[str, int] = {}
            for k, v in redis_types.str_hash(self._redis.hgetall(self.keys.trim_floor)).items():
                try:
                    floors[k] = int(v)
                except ValueError:
                    log.error("trim floor of %s is not a time (%r): ignored", k, v)
            self._floors, self._floors_due_ms = floors, now + TRIM_FLOOR_EVERY_MS
        return self._floors

    def _failed(self, batch: _Batch, fault: Fault, attempt_ms: int, *, unknown: bool = False) -> bool:
        with self._cond:
            self._batch = None
            self._give_back(batch, attempt_ms, unknown=unknown or outcome_unknown(fault))
            if self._forget_on_failure and outcome_unknown(fault):
                # the connection broke: the next one may reach another master (a replica
                # WAIT came up short on keeps this connection; what was read there holds
                # until a new one is made — _attempt checks)
                self._forget(self._connects)
            self._set_failing(fault, now_ms())
            self._cond.notify_all()
        return False

    def _unexpected(self, e: Exception, batch: _Batch) -> None:
        allowed, held = self._tracebacks.allow(type(e).__name__, time.monotonic())
        if allowed:
            log.error("stream writer: unexpected %s (+%d like it suppressed); entries kept, retrying",
                      type(e).__name__, held, exc_info=e)
        with self._cond:
            if self._batch is batch:
                self._batch = None
                self._give_back(batch, now_ms(), unknown=True)
            if self._forget_on_failure:
                self._forget(self._connects)
            self._set_failing(classify(e), now_ms())
            self._cond.notify_all()

    def _forget(self, connects: int) -> None:
        """Drop every identity read or written so far; they held for connections up to `connects`."""
        self._seen.clear()
        self._seen_connects = connects

    # --- resolution (under the lock) ----------------------------------------------------
    def _resolved(self, it: Item, now: int, *, stored: bool) -> None:
        if not it.dedup:
            return
        dev = it.fields.get(F_DEV, "")
        if stored:
            try:
                ts = int(it.fields.get(F_TS, ""))
            except ValueError:
                ts = 0
            self._marks[dev] = StoredMark(ts, it.accepted_ms, now)
        if it.prior:
            return  # accepted by an earlier process: never counted in this one's backlog
        b = self._backlog.get(dev)
        if b is None:
            return
        b[0] -= 1
        if b[0] <= 0:
            del self._backlog[dev]
        else:
            b[1] = max(b[1], it.accepted_ms)  # the next one was accepted no earlier

    def _refuse(self, it: Item, done: Done | None, why: str, now: int) -> Done | None:
        """An entry Redis refused for itself: into `rejects`, carrying its callback. A
        refused rejects entry has nowhere left to go: logged whole, counted, and its
        callback returned to be called (so an MQTT message is not held forever)."""
        if it.key == self.keys.rejects:
            self.stats.lost += 1
            log.error("a rejects entry was refused by Redis (%s) and is LOST: %s", why,
                      json.dumps(it.fields)[:1000])
            return done
        self.stats.rejected += 1
        source = it.fields.get(F_DEV) or it.key
        log.error("Redis refused an entry for %s: %s; it goes to rejects (%s)", it.key, why, REJECT_REASON)
        ref = Refusal(source, REJECT_REASON, f"{it.key}: {why}",
                      json.dumps(it.fields, separators=(",", ":")).encode())
        self._mem.appendleft((Item(self.keys.rejects, reject_fields(ref, now), False, now), done))
        return None

    def _set_storing(self, now: int) -> None:
        if self._state == STORING:
            return
        log.info("storing in Redis again after %.1f s (%s); %d entries waiting are being written",
                 (now - self._since_ms) / 1000, self._cause, self._pending_locked())
        self.stats.reconnects += 1
        self._state, self._code, self._cause, self._since_ms = STORING, "", "", now

    def _set_failing(self, fault: Fault, now: int) -> None:
        self.stats.failures += 1
        if self._state == FAILING and fault.code == self._code:
            self._cause = fault.cause  # same kind of trouble; keep its latest words
            return
        if self._state == STORING:
            self._since_ms = now
            self._next_remind = time.monotonic() + REMIND_EVERY_S
        log.warning("cannot store in Redis: %s; holding %d entries (memory, then spool %s)",
                    fault.cause, self._pending_locked(), self._spool.path)
        self._state, self._code, self._cause = FAILING, fault.code, fault.cause

    def _remind(self) -> None:
        if self._state != FAILING or time.monotonic() < self._next_remind:
            return
        self._next_remind = time.monotonic() + REMIND_EVERY_S
        st = self.storage()
        log.warning("still not storing after %d s: %s; %d entries waiting (%d on disk), oldest %d s",
                    (now_ms() - st.since_ms) // 1000, st.cause, st.pending, st.spooled,
                    st.pending_age_ms(now_ms()) // 1000)

    def _call(self, done: Done) -> None:
        try:
            done()
        except Exception as e:  # noqa: BLE001 - a producer's callback must not stop the writer
            allowed, held = self._tracebacks.allow(("callback", type(e).__name__), time.monotonic())
            if allowed:
                log.error("on_stored callback failed (+%d like it suppressed)", held, exc_info=e)


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
    """A room's readings whose stream ids fall in [start_ms, end_ms] (with `recv_ms`)."""
    start = str(start_ms) if start_ms is not None else "-"
    end = str(end_ms) if end_ms is not None else "+"
    for entry_id, fields in read_range(client, keys.vitals(room), start, end):
        yield from_fields(room, fields, entry_id)


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
