"""The alert-engine worker behind `vitalwatch alerts` (started by monitor/app/alerts_cli.py).

Several workers may run; they divide the rooms.

Each room is evaluated by exactly one worker at a time: the worker holds the room's lease
(`keys.room_owner(room)`, SET NX PX, all of a worker's leases renewed together every ~ttl/3
by one script call). A worker takes free rooms up to its fair share (rooms ÷ live workers,
from the "alerts" heartbeats) and any room left free for a whole lease period; one holding
more than its share gives the excess back at once, so a new worker has its share within
about a heartbeat period of being seen. A room whose worker died is free once its lease
expires (`[alerts] owner_ttl_s`) and is taken over within about one more lease period.

Round trips do not grow with the number of rooms: one XREAD reads every owned room's new
readings and one pipeline commits all their outcomes (each room's commit an atomic script
fenced by its lease, store.py); a tick reads everything it needs in one pipeline and commits
in one more; housekeeping is one pipeline plus one to take rooms when there are free ones.
What delays a raise is kept small: a reading batch that changes no alert commits without
the room's alerts (store.py), a tick goes in parts of TICK_PART rooms with readings read
between them, and a tick skips rooms where nothing it reads has changed since a tick that
changed nothing (until one of their timers falls due).

Per owned room the worker does only I/O around the pure functions of evaluate.py:
- readings: XREAD from the room's last applied stream id → `evaluate` → alert changes,
  committed with the new condition state and last id in one fenced atomic step (store.py),
  so a new owner resumes exactly where the old one stopped and a reading is applied once;
- every tick (~0.5 s): device silent/offline, session reminders, session limit overrides,
  pause expiry and escalation.
One worker also holds the clinic lease (`keys.room_owner("*")`, taken by whoever finds it
free): it raises the clinic-wide technical alarms (room "*", monitor/alarms/clinic.py — an
ingest process down, rooms no worker evaluates) and forwards the alert events people cause
(acknowledged, audio paused, reset, …; the dashboard and the API write them to the alerts
stream) to the outbound channel, so a pager stops when a nurse acknowledges on a screen.
Every worker keeps the device alarms a clinic-wide cause explains from being raised.
Each reading batch also updates the room's latest-value summary (`keys.room_latest`), which
screens read instead of scanning stream history.
Each commit also enqueues its events' outbound messages (pages) in the same transaction
(monitor/alarms/outbound.py); the process's outbox senders deliver them.
"""

from __future__ import annotations

import collections
import gc
import json
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from monitor.model.clock import Clock, now_ms
from monitor.model.codec import CodecError, from_fields
from monitor.model.config import Config, RoomConfig
from monitor.model.keys import Keys
from monitor.model.readings import Reading
from monitor.observe.collectors import AlertMetrics
from monitor.store import heartbeat
from monitor.store.outbox import Outbox
from monitor.store.redis_cluster import node_info
from monitor.store.redis_health import refusal_from_info
from monitor.store.retry import REDIS_ERRORS, Backoff, Episode, cause, reply_code, reply_text, words

from . import clinic
from .evaluate import BP_METRICS, Book, apply_timers, apply_transitions, evaluate, reconcile, timers_due_ms
from .model import AlertEvent, Cond, Desired, Rule, TechRule, event_from_fields
from .outage import COND_NOT_STORED, Outage, OutageTracker, record, resumed_event, stopped_event
from .outbound import DirectPager, Routes, outbox_entries, page_tier, unattended
from .reminders import reminder_conditions
from .rules import build_rules, technical_rules
from .store import (
    F_LAST_ID,
    LATEST_ID,
    Leases,
    LostOwnership,
    OutboxFor,
    PartialCommit,
    Pending,
    StrHash,
    commit,
    commit_many,
    latest_ts_of,
    latest_update,
    state_of,
)
from .technical import MonitoringState, device_conditions, monitoring_state

log = logging.getLogger(__name__)
Entries = list[tuple[str, dict[str, str]]]  # stream entries from a decode_responses client

ROLE = "alerts"
BATCH = 1000  # stream entries per room per read
TICK_MS = 500  # wall-clock conditions and timers
TICK_PART = 100  # rooms per part of a tick: the run loop reads readings between parts
HEARTBEAT_MS = 1000
FIRST_LOOKBACK_MS = 60_000  # a room never evaluated before starts this far back
COALESCE_MS_PER_ROOM = 0.02  # an XREAD costs ~2 µs per owned room: at most one per 20 ms at 1,000 rooms
COALESCE_MAX_MS = 20
HONEST_BEAT_MS = 3000  # steps failing this long: stop claiming to be alive (see housekeeping)


@dataclass
class RoomRun:
    """What a worker holds in memory for a room it owns (the truth is in Redis)."""

    room: RoomConfig
    last_id: str
    conds: dict[str, Cond]
    rules: dict[str, Rule]
    sid: str | None = None
    limits_raw: dict[str, str] = field(default_factory=dict)
    session: dict[str, str] = field(default_factory=dict)
    session_events: list[dict[str, str]] = field(default_factory=list)
    bp_only: dict[str, bool] = field(default_factory=dict)
    latest_ts: dict[str, int] = field(default_factory=dict)  # metric → ts of the summary's value
    vkey: str = ""  # its vitals stream's key
    stored_id: str = ""  # last_id as stored in its alarm state ("" none yet): what the next commit continues
    # a tick's inputs (active hash, desired device and reminder conditions) when it changed
    # nothing, and when a timer of its records falls due: until either changes, the next
    # ticks would change nothing either and are skipped (_tick_rooms)
    tick_seen: tuple[Any, ...] | None = None
    tick_due: int | None = None
    tick_try: tuple[Any, ...] | None = None  # the inputs of the tick being committed


@dataclass
class _Round:
    """What the parts of one tick share (read by its first part)."""

    mon: MonitoringState
    open_sessions: StrHash
    storage: StrHash
    statuses: dict[str, StrHash]  # device id → status hash as last read (Worker._statuses)
    starting: bool
    causes: dict[str, clinic.ClinicCause] | None = None  # the clinic lease holder's, from every device
    covered: dict[str, clinic.ClinicCause] | None = None  # clinic.covered(causes)


@dataclass
class WorkerStats:
    """Counters for logs and benchmarks."""

    readings: int = 0
    bad_entries: int = 0
    events: int = 0
    commits: int = 0
    takeovers: int = 0
    lost: int = 0


class Worker:
    """One alert-engine worker: leases, evaluation, ticks. Drive it with `run()` or `step()`."""

    def __init__(self, cfg: Config, client: redis.Redis, keys: Keys, *, owner: str | None = None,
                 outbound: Routes | None = None, pager: DirectPager | None = None, clock: Clock = now_ms) -> None:
        self.cfg, self.client, self.keys = cfg, client, keys
        self.owner = owner or f"{heartbeat.instance_name()}-{secrets.token_hex(2)}"
        self.outbound = outbound
        self.pager = pager  # pages that monitoring stopped: straight out, not through Redis
        self.outages = OutageTracker()
        self.finished_outages: collections.deque[Outage] = collections.deque(maxlen=20)  # paged, to record
        self.clock = clock
        self.ttl_ms = int(cfg.alerts.owner_ttl_s * 1000)
        self.leases = Leases(client, keys, self.owner, self.ttl_ms)
        self.rooms: dict[str, RoomRun] = {}
        self.tech: dict[str, TechRule] = technical_rules(cfg)
        self.retention_ms = int(cfg.redis.retention_hours * 3600 * 1000)
        self.stats = WorkerStats()
        self.metrics = AlertMetrics()  # histograms for /metrics (monitor/observe)
        self._free_since: dict[str, int] = {}
        self._screens: dict[str, str] = {}
        self._next_house = 0
        self._next_tick = 0
        self._first_tick_ms: int | None = None
        self._next_lease = 0
        self.holds_clinic = False  # the clinic lease: clinic-wide alarms and action forwarding
        self._unevaluated: dict[str, str] = {}  # room → why no live worker evaluates it
        self._active: dict[str, dict[str, str]] = {}  # room → its active-alert hash as last read/written
        self._sids: dict[str, str | None] = {}  # room → its open session at the last tick
        self._clinic_since: dict[str, int] = {}  # clinic cause key → when it began
        self.episode = Episode(f"alert worker {self.owner}", log)
        self.failing_since_ms: int | None = None  # steps failing on Redis since (run())
        # a write (heartbeat or probe) landed since the last failed step: only then is an
        # outage over — steps that only read succeed while Redis still refuses writes
        self.wrote_since_failure = True
        self._polled_at = 0.0  # time.monotonic() of the last XREAD (step)
        self._round: _Round | None = None  # the current tick's shared reads
        self._alerts_floor: int | None = None  # the alerts stream's trim floor (keys.trim_floor)
        self._parts: list[list[str]] = []  # the current tick's parts (step)
        # device id → its status hash as last read: a part reads its own rooms' devices; the
        # clinic lease holder also reads one share of the other devices per part
        self._statuses: dict[str, StrHash] = {}
        self._others: list[str] | None = None  # the devices of the rooms it does not evaluate (this tick)
        self._part_ix = 0  # the next part to do

    # --- leases -------------------------------------------------------------------------
    def housekeeping(self, now: int) -> None:
        """Heartbeat; renew, take and give back room leases; forget dead workers' heartbeats.

        One pipelined round trip renews every lease this worker holds (one script call, when
        due: every ttl/3) and reads every room's owner and the heartbeats; one more takes the
        free rooms it should have (SET NX each) and one reads the state of the rooms it took.
        A worker below its fair share (rooms ÷ live workers) takes free rooms at once; one above
        it gives its excess back at once (the newest rooms first), so a new worker has its
        share within about one heartbeat period of being seen. A room free for a whole lease
        period is taken by whoever sees it.

        A worker whose steps have kept failing for HONEST_BEAT_MS stops beating: it is not
        evaluating, and its stale heartbeat lets the screens and the other workers see that.
        """
        all_rooms = [r.id for r in self.cfg.rooms]
        renew = now >= self._next_lease
        mine = list(self.rooms) + ([clinic.CLINIC] if self.holds_clinic else [])
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.keys.trim_floor, self.keys.alerts)
        if self.failing_since_ms is None or now - self.failing_since_ms < HONEST_BEAT_MS:
            heartbeat.beat(pipe, self.keys, ROLE, self.owner, now)
        else:
            # Not beating (steps kept failing), but a write must still be tried: renewing
            # leases and reading are allowed under OOM, so without one a Redis that refuses
            # writes would look recovered here and the outage would never last long enough
            # to be paged. SET is refused like any write that stores data.
            pipe.set(f"{self.keys.prefix}write-probe:{ROLE}:{self.owner}", now, px=HEARTBEAT_MS * 10)
        if renew and mine:
            self.leases.renew_on(pipe, mine)
        pipe.hgetall(self.keys.heartbeats)
        n_own, owners_of = self.leases.owners_on(pipe, all_rooms)
        res = pipe.execute()
        self.wrote_since_failure = True  # the beat or the probe above was stored
        self._alerts_floor = _int_or_none(res[0])
        beats = cast(StrHash, res[-n_own - 1])
        owners: dict[str, str | None] = dict(zip(all_rooms, owners_of(res), strict=True))
        if renew:
            self._next_lease = now + max(200, self.ttl_ms // 3)
            for room, ok in (Leases.renewed(mine, res[-n_own - 2]) if mine else {}).items():
                if ok:
                    continue
                if room == clinic.CLINIC:
                    self.holds_clinic = False
                    log.info("gave up the clinic lease: lease lost")
                else:
                    self._drop(room, "lease lost")
        for room in [r for r in self.rooms if owners.get(r) != self.owner]:
            self._drop(room, f"lease lost (now {owners.get(room) or 'free'})")
        stale_ms = int(self.cfg.alerts.heartbeat_stale_s * 1000)
        live = {f.split(":", 1)[1] for f, v in beats.items()
                if f.startswith(ROLE + ":") and _age(v, now) <= stale_ms} | {self.owner}
        share = math.ceil(len(all_rooms) / len(live))
        want: list[str] = []
        for room in all_rooms:
            if owners.get(room) is not None:
                self._free_since.pop(room, None)
                continue
            first = self._free_since.setdefault(room, now)
            # below our share: take it now; otherwise only if nobody took it for a lease period
            if len(self.rooms) + len(want) < share or now - first >= self.ttl_ms:
                want.append(room)
        won = self.leases.acquire_many(want + ([] if self.holds_clinic else [clinic.CLINIC]))
        if clinic.CLINIC in won:
            won.remove(clinic.CLINIC)
            self.holds_clinic = True
            self._active.pop(clinic.CLINIC, None)  # read at the next tick
            log.info("took the clinic lease: clinic-wide alarms and action forwarding")
        for room in won:
            self._free_since.pop(room, None)
            owners[room] = self.owner
        self._adopt(won, now)
        self._unevaluated = clinic.unevaluated_rooms(owners, beats, self._free_since, now, self.ttl_ms)
        if len(self.rooms) > share and len(live) > 1:
            give = list(self.rooms)[share:]  # the most recently taken
            for room in give:
                self._drop(room, "rebalancing", quiet=True)
            self.leases.release_many(give)
            log.info("gave back %d room(s) (%s): %d workers share %d rooms", len(give), _few(give), len(live),
                     len(all_rooms))
        # a dead worker's heartbeat is removed once none of its rooms are still leased to it
        held = {o for o in owners.values() if o}
        for f, v in beats.items():
            inst = f.split(":", 1)[1] if ":" in f else ""
            if f.startswith(ROLE + ":") and _age(v, now) > stale_ms and inst not in held:
                log.warning("alert worker %s stopped heartbeating %d s ago; its rooms were taken over",
                            inst, _age(v, now) // 1000)
                self.client.hdel(self.keys.heartbeats, f)

    def _adopt(self, rooms: list[str], now: int) -> None:
        """Start evaluating rooms just taken: their state as the last owner left it, read in one round trip."""
        if not rooms:
            return
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        for room in rooms:
            pipe.hgetall(k.alarm_state(room))
            pipe.hgetall(k.room_latest(room))
            pipe.xrevrange(k.vitals(room), count=50)
            pipe.hgetall(k.active_alerts(room))
        res = iter(pipe.execute())
        for room in rooms:
            state_raw, latest_raw, tail, active = next(res), next(res), next(res), next(res)
            stored_id, conds = state_of(room, state_raw)
            last_id = stored_id if stored_id is not None else f"{max(0, now - FIRST_LOOKBACK_MS)}-0"
            rules, _problems = build_rules(self.cfg, room)
            rr = RoomRun(self.cfg.room(room), last_id, conds, rules, vkey=k.vitals(room),
                         stored_id=stored_id or "")
            rr.latest_ts = latest_ts_of(latest_raw)
            for _id, f in cast(Entries, tail):
                dev = f.get("dev", "")
                if dev and dev not in rr.bp_only:
                    rr.bp_only[dev] = _bp_only(f.keys())
            self.rooms[room] = rr
            self._active[room] = active
            self.stats.takeovers += 1
            log.info("took room %s; resuming after stream id %s with %d open condition(s)",
                     room, last_id, len(conds), extra={"room": room})

    def _drop(self, room: str, why: str, quiet: bool = False) -> None:
        self._active.pop(room, None)
        self._sids.pop(room, None)
        if self.rooms.pop(room, None) is not None:
            self.stats.lost += 1
            if not quiet:
                log.info("gave up room %s: %s", room, why, extra={"room": room})

    def release_all(self) -> None:
        """Give every room back (clean stop: others take over at once)."""
        rooms = list(self.rooms)
        self.leases.release_many(rooms)
        for room in rooms:
            self._drop(room, "stopping", quiet=True)
        if self.holds_clinic:
            self.leases.release(clinic.CLINIC)
            self.holds_clinic = False

    # --- readings -----------------------------------------------------------------------
    def poll(self, block_ms: int) -> int:
        """Read new readings of owned rooms (one XREAD, blocking up to `block_ms`) and apply
        them (one pipelined commit round trip for all rooms with news)."""
        if not self.rooms:
            return 0
        runs = list(self.rooms.values())
        names = [rr.vkey for rr in runs]
        # XREAD as redis-py's xread() sends it, without its per-call argument checks and
        # streaming-lag bookkeeping (a few ms a call at 1,000 rooms)
        resp = cast(list[tuple[str, Entries]], self.client.execute_command(
            "XREAD", "BLOCK", block_ms, "COUNT", BATCH, "STREAMS", *names, *[rr.last_id for rr in runs],
            keys=names) or [])
        prefix_len = len(self.keys.vitals(""))
        batch = {key[prefix_len:]: entries for key, entries in resp if entries and key[prefix_len:] in self.rooms}
        return self.apply_batch(batch)

    def apply_entries(self, room: str, entries: Entries) -> int:
        """Evaluate one room's new stream entries and commit the outcome."""
        return self.apply_batch({room: entries})

    def apply_batch(self, batch: dict[str, Entries]) -> int:
        """Evaluate rooms' new stream entries and commit every room's outcome (each room
        atomically, fenced by its lease) in one pipelined round trip."""
        if not batch:
            return 0
        started = time.perf_counter()
        now = self.clock()
        outbox = self._outbox(now)
        pending: list[Pending] = []
        done: dict[str, tuple[Any, str, dict[str, str], int]] = {}
        for room, entries in batch.items():
            rr = self.rooms[room]
            readings: list[Reading] = []
            for entry_id, fields in entries:
                try:
                    readings.append(from_fields(room, fields, entry_id))  # recv_ms: delays on the receive clock
                except CodecError as e:
                    self.stats.bad_entries += 1  # counted and logged; the stream keeps it for review
                    log.error("unreadable vitals entry %s skipped: %s", entry_id, e, extra={"room": room})
            for r in readings[-20:]:
                if r.values:
                    rr.bp_only[r.device] = _bp_only(r.values.keys())
            out = evaluate(room, rr.rules, self.tech, rr.conds, readings)
            last_id = entries[-1][0]
            state: dict[str, str | None] = {k: (c.to_json() if c else None) for k, c in out.changed.items()}
            state[F_LAST_ID] = last_id
            latest = latest_update(readings, rr.latest_ts, last_id)

            def build(active: dict[str, dict[str, Any]], transitions: list = out.transitions) -> Book:
                book = Book(active)
                apply_transitions(book, transitions, now)
                return book

            # no transition: the commit moves only the condition state, last id and summary
            pending.append(Pending(room, build if out.transitions else None, state, latest, outbox,
                                   after_id=rr.stored_id))
            done[room] = (out, last_id, latest, len(readings))
        n = 0
        results, error, stale = self._commit(pending, now)
        for room, book in results.items():
            if book is None:
                self._drop(room, "lease lost before commit; the new owner re-applies these readings")
                continue
            rr = self.rooms[room]
            out, last_id, latest, count = done[room]
            for k, c in out.changed.items():
                if c is None:
                    rr.conds.pop(k, None)
                else:
                    rr.conds[k] = c
            rr.last_id = rr.stored_id = last_id
            rr.latest_ts.update({m: int(json.loads(v)[1]) for m, v in latest.items() if m != LATEST_ID})
            self.stats.readings += count
            self.stats.commits += 1
            self._observe_raised(out.transitions, book.events)
            self._send(book.events, now)
            n += count
        self.metrics.evaluated(time.perf_counter() - started)
        if stale:  # an earlier commit whose reply was lost did apply: continue from what is stored
            log.warning("reloading the state of %d room(s) (%s): a commit whose reply was lost had applied",
                        len(stale), _few(sorted(stale)))
            for room in stale:
                self._drop(room, "reloading", quiet=True)
            self._adopt(sorted(stale), now)
        if error is not None:
            raise error
        return n

    def _commit(self, pending: list[Pending], now: int) -> tuple[dict[str, Book | None], Exception | None, set[str]]:
        """`commit_many` of this worker: (outcomes, the Redis error some rooms met, stale rooms)."""
        stale: set[str] = set()
        try:
            return commit_many(self.client, self.keys, self.owner, pending, self._active, self.retention_ms, now,
                               floor_ms=self._alerts_floor, stale=stale), None, stale
        except PartialCommit as e:
            return e.done, e.error, stale

    # --- wall-clock conditions ------------------------------------------------------------
    def tick(self, now: int) -> None:
        """Device silence, reminders, session limits, pauses, escalation; with the clinic lease
        also the clinic-wide alarms and the forwarding of people's actions to the outbound.
        All parts at once (the run loop does one part per step, reading readings between)."""
        parts = self._tick_parts()
        for ix, part in enumerate(parts):
            self.tick_part(now, part, ix, len(parts))

    def _tick_parts(self) -> list[list[str]]:
        """The owned rooms in parts of TICK_PART (one part, maybe empty, for the clinic lease only)."""
        rooms = list(self.rooms)
        if not rooms and not self.holds_clinic:
            return []
        return [rooms[i:i + TICK_PART] for i in range(0, len(rooms), TICK_PART)] or [[]]

    def _others_share(self, ix: int, parts: int) -> list[str]:
        """The devices of rooms this worker does not evaluate that the clinic lease holder reads
        in part `ix` of `parts`: all that it has never read in the first part, then a share each."""
        if ix == 0 or self._others is None:  # once a tick (a room given up meanwhile: read from the next)
            self._others = [d.id for r in self.cfg.rooms if r.id not in self.rooms for d in r.devices]
            if ix == 0 and any(d not in self._statuses for d in self._others):
                return self._others
        return self._others[ix::max(1, parts)]

    def tick_part(self, now: int, rooms: list[str], ix: int = 0, parts: int = 1) -> None:
        """Part `ix` of `parts` of a tick: `rooms`' wall-clock work; the first part also reads
        what the whole tick shares (heartbeats, screens, open sessions, storage) and does the
        clinic-wide work. With the clinic lease each part also reads its share of the other
        workers' rooms' devices (`_others_share`). A room whose inputs are as at a tick that
        changed nothing, with no timer due, is not rebuilt (`_tick_rooms`).

        One pipelined round trip reads everything the part needs (its devices' statuses, its
        sessions, its rooms' active alerts when they have any); a second one only for rooms
        whose open session changed since the last tick; one more commits every room's
        outcome (`commit_many`)."""
        k = self.keys
        first = ix == 0
        rooms = [r for r in rooms if r in self.rooms]
        holder = self.holds_clinic
        pipe = self.client.pipeline(transaction=False)
        if first:
            pipe.hgetall(k.heartbeats)
            pipe.hgetall(k.screens)
            pipe.hgetall(k.open_sessions)
            pipe.hgetall(k.storage)
        # every worker reads its part's rooms' devices (enough to know which of them to hold
        # back); the clinic lease holder judges every device (the clinic-wide causes name
        # rooms): it also reads the other rooms' devices, a share per part, so every device
        # is read once a tick without one part reading them all — and all of them at once
        # only when it has never read some (it just took the clinic lease)
        devs = [d.id for r in rooms for d in self.rooms[r].room.devices]
        if holder:
            devs += self._others_share(ix, parts)
        elif first:  # what the others' devices looked like is the clinic lease holder's business
            mine = {d.id for rr in self.rooms.values() for d in rr.room.devices}
            for d in [d for d in self._statuses if d not in mine]:
                del self._statuses[d]
        for d in devs:
            pipe.hgetall(k.device_status(d))
        # only a room's owner adds alerts; people's actions change or remove them: a room
        # whose alerts were none at its last read or commit still has none, the others are
        # read again (a pause, an acknowledge since) — and every commit checks anyway
        owned = [r for r in rooms if self._active.get(r)] + ([clinic.CLINIC] if first and holder else [])
        for room in owned:
            pipe.hgetall(k.active_alerts(room))
        guessed = [(room, sid) for room in rooms if (sid := self._sids.get(room))]
        for _room, sid in guessed:
            self._session_reads(pipe, sid)
        res = iter(pipe.execute())
        if first:
            beats, self._screens, open_sessions, storage = next(res), next(res), next(res), next(res)
            if self._first_tick_ms is None:
                self._first_tick_ms = now
            # `run`/`demo`/compose start every role at once: for one heartbeat period after the
            # engine starts, technical conditions (no ingest heartbeat yet, a port the simulator
            # has not made yet) are start-up, not faults. They are raised after it if they
            # persist, with their real onset; screens show NOT MONITORING until ingest beats.
            self._round = _Round(monitoring_state(beats, now, self.cfg), open_sessions, storage, self._statuses,
                                 now - self._first_tick_ms < self.cfg.alerts.heartbeat_stale_s * 1000)
        rnd = self._round
        if rnd is None:
            return
        for d in devs:
            self._statuses[d] = next(res)
        for room in owned:
            self._active[room] = next(res)
        sessions: dict[str, tuple[StrHash, StrHash, Entries]] = {}
        for _room, sid in guessed:
            sessions[sid] = (next(res), next(res), next(res))
        sids = {room: rnd.open_sessions.get(room) for room in rooms}
        new = sorted({sid for sid in sids.values() if sid and sid not in sessions})
        if new:  # sessions opened since the last tick
            pipe = self.client.pipeline(transaction=False)
            for sid in new:
                self._session_reads(pipe, sid)
            res = iter(pipe.execute())
            for sid in new:
                sessions[sid] = (next(res), next(res), next(res))
        self._sids.update(sids)
        causes = rnd.causes if holder and rnd.causes is not None else \
            clinic.clinic_causes(clinic.ClinicInputs(self.cfg, now, rnd.mon, rnd.statuses, self._unevaluated, rnd.storage))
        if holder and first:
            rnd.causes, rnd.covered = causes, clinic.covered(causes)
        covered = rnd.covered if holder and rnd.covered is not None else clinic.covered(causes)
        pending = self._tick_rooms(now, sids, sessions, rnd.statuses, covered, rnd.starting)
        if first and holder:
            pending.append(self._tick_clinic(now, causes, rnd.starting))
        results, error, _stale = self._commit(pending, now)  # wall-clock work continues no stream id
        escalate_ms = int(self.cfg.alerts.escalate_after_s * 1000)
        for room, book in results.items():
            if book is not None and (rr := self.rooms.get(room)) is not None:
                unchanged = not book.changed
                rr.tick_seen = rr.tick_try if unchanged else None
                rr.tick_due = timers_due_ms(book.records, escalate_ms) if unchanged else None
            if book is None:
                if room == clinic.CLINIC:
                    self.holds_clinic = False
                    log.info("gave up the clinic lease: lease lost before commit")
                else:
                    self._drop(room, "lease lost")
                continue
            self._send(book.events, now)
            if room == clinic.CLINIC:
                for ev in book.events:  # monitoring stopped (or resumed): paged directly, not through Redis
                    if _stops_monitoring(ev) and ev.event in ("raised", "cleared") and self.pager is not None:
                        self.pager.page(ev, 1 if ev.event == "raised" else None)
        if error is not None:
            raise error
        if not first:
            return
        if self.holds_clinic:
            self._forward_actions()
            if self.finished_outages and not rnd.starting:
                self._record_outages(now)
        elif self.finished_outages:
            log.info("%d outage(s) of this worker are recorded by the holder of the clinic lease",
                     len(self.finished_outages))
            self.finished_outages.clear()

    def _session_reads(self, pipe: redis.client.Pipeline, sid: str) -> None:
        k = self.keys
        pipe.hgetall(k.session_limits(sid))
        pipe.hgetall(k.session(sid))
        pipe.xrange(k.session_events(sid))

    def _tick_rooms(self, now: int, sids: dict[str, str | None],
                    sessions: dict[str, tuple[StrHash, StrHash, Entries]], statuses: dict[str, StrHash],
                    covered: dict[str, clinic.ClinicCause], starting: bool) -> list[Pending]:
        """Each owned room's wall-clock work, to commit."""
        outbox = self._outbox(now)
        escalate_ms = int(self.cfg.alerts.escalate_after_s * 1000)
        pending: list[Pending] = []
        for room, sid in sids.items():
            rr = self.rooms.get(room)
            if rr is None:
                continue
            limits, session, events = sessions[sid] if sid else ({}, {}, [])
            self._refresh_rules(rr, sid, limits)
            rr.session, rr.session_events = session, [dict(f) for _id, f in events]
            mine = {d.id: c for d in rr.room.devices if (c := covered.get(d.id)) is not None}
            dev_d = {} if starting else device_conditions(rr.room, self.cfg, statuses, now, self.tech,
                                                          rr.bp_only, skip=mine)
            why = {f"d:{d}": f"part of the clinic-wide alarm now ({c.cause})" for d, c in mine.items()}
            rem_d = reminder_conditions({**session, "id": sid or ""} if session else None, rr.session_events,
                                        now, self.cfg, room)
            seen = (self._active.get(room) or {}, dev_d, why, rem_d)
            if seen == rr.tick_seen and (rr.tick_due is None or now < rr.tick_due):
                continue  # as at a tick that changed nothing, and no timer due: nothing to change
            rr.tick_try = seen

            def build(active: dict[str, dict[str, Any]], room: str = room, dev_d: dict = dev_d,
                      rem_d: dict = rem_d, why: dict = why) -> Book:
                book = Book(active)
                reconcile(book, room, dev_d, "d:", now, why)
                reconcile(book, room, {}, "g:", now)  # per-room "degraded" of older versions: now clinic-wide
                reconcile(book, room, rem_d, "r:", now)
                apply_timers(book, now, escalate_ms)
                return book

            pending.append(Pending(room, build, outbox=outbox))
        return pending

    def _tick_clinic(self, now: int, causes: dict[str, clinic.ClinicCause], starting: bool) -> Pending:
        """Reconcile the clinic-wide alerts (room "*") with the causes that hold now."""
        for key in list(self._clinic_since):
            if key not in causes:
                del self._clinic_since[key]
        for key in causes:
            self._clinic_since.setdefault(key, now)
        want = {} if starting else clinic.desired(causes, self.tech, self._clinic_since, now)

        def build(active: dict[str, dict[str, Any]]) -> Book:
            book = Book(active)
            reconcile(book, clinic.CLINIC, want, clinic.SCOPE, now)
            apply_timers(book, now, int(self.cfg.alerts.escalate_after_s * 1000))
            return book

        return Pending(clinic.CLINIC, build, outbox=self._outbox(now))

    def _record_outages(self, now: int) -> None:
        """Record each outage this worker paged (monitoring stopped: Redis refused its writes or
        could not be reached) as a clinic-wide technical alarm now that Redis takes writes:
        raised with the outage's onset and cleared in the same commit, alarm id = the page's.
        Its outbound messages are plain events, not pages (the pages went out directly)."""
        rooms = [r.id for r in self.cfg.rooms]
        while self.finished_outages:
            o = self.finished_outages[0]
            d = record(o, self.owner, rooms, self.tech)
            lasted_s = ((o.until_ms or now) - o.since_ms) / 1000

            def build(active: dict[str, dict[str, Any]], d: Desired = d, lasted_s: float = lasted_s) -> Book:
                book = Book(active)
                reconcile(book, clinic.CLINIC, {d.key: d}, d.key, now)
                reconcile(book, clinic.CLINIC, {}, d.key, now, {d.key: f"over after {lasted_s:.0f} s"})
                return book

            try:
                book = commit(self.client, self.keys, clinic.CLINIC, self.owner, build, {}, self.retention_ms, now,
                              outbox=self._outbox(now, pages=False))
            except LostOwnership:
                self.holds_clinic = False
                log.info("gave up the clinic lease before recording an outage; its holder records its own")
                return
            self.finished_outages.popleft()
            self._send(book.events, now)

    def _forward_actions(self) -> None:
        """Put the alert events people caused (they carry a `user`) into the outbound outboxes,
        from a cursor kept in Redis so the next holder of the clinic lease goes on from there.
        Each entry is enqueued under its stream id as idempotency key: a holder that died
        before moving the cursor cannot make the next one send it twice."""
        routes = self.outbound
        if routes is None:
            return
        cursor = cast(str | None, self.client.get(self.keys.outbound_cursor))
        if cursor is None:
            tip = cast(Entries, self.client.xrevrange(self.keys.alerts, count=1))
            self.client.set(self.keys.outbound_cursor, tip[0][0] if tip else "0-0")
            return  # first holder ever: forward from now on, not the whole history
        entries = cast(Entries, self.client.xrange(self.keys.alerts, min=f"({cursor}", count=500))
        if not entries:
            return
        for entry_id, f in entries:
            if f.get("user"):
                ev = event_from_fields(f)
                self.stats.events += 1
                log.info("%s by %s %s", ev.event, ev.user, ev.alert, extra={"room": ev.room})
                msgs = routes.messages(ev, None, follow_up=ev.priority == "high", room_name=self._room_name(ev.room))
                for dest, kind in sorted({(m.dest, m.kind) for m in msgs}):
                    Outbox(self.client, self.keys, dest).enqueue_many(
                        [(m.body, dict(m.meta)) for m in msgs if (m.dest, m.kind) == (dest, kind)],
                        kind=kind, key=ev.alert, content_type="application/json",
                        dedup_key=f"action:{entry_id}:{kind}")
        self.client.set(self.keys.outbound_cursor, entries[-1][0])

    def _refresh_rules(self, rr: RoomRun, sid: str | None, limits: dict[str, str]) -> None:
        if sid == rr.sid and limits == rr.limits_raw:
            return
        rr.rules, problems = build_rules(self.cfg, rr.room.id, limits)
        for p in problems:
            log.warning("session %s: %s", sid, p, extra={"room": rr.room.id})
        if limits or rr.limits_raw:
            log.info("session %s: alarm limits now %s", sid,
                     {m: (r.low, r.high) for m, r in rr.rules.items()}, extra={"room": rr.room.id})
        rr.sid, rr.limits_raw = sid, dict(limits)

    def _outbox(self, now: int, pages: bool = True) -> OutboxFor | None:
        """The outbound messages of committed events, for `commit` to enqueue with them
        (`pages=False`: as plain events only)."""
        routes = self.outbound
        if routes is None:
            return None
        nobody = unattended(self._screens, now, self.cfg.alerts.screen_stale_s)

        def tier(ev: AlertEvent) -> int | None:
            # "monitoring stopped" is paged directly (DirectPager); its outbox copy is an event
            return page_tier(ev, nobody) if pages and not _stops_monitoring(ev) else None

        return lambda events: [e for ev in events for e in outbox_entries(
            routes.messages(ev, tier(ev), room_name=self._room_name(ev.room)), ev.alert, now)]

    def _observe_raised(self, transitions: Any, events: list[AlertEvent]) -> None:
        """For each alarm a commit raised: receive → committed (evaluation time: per batch)."""
        raised = {ev.alert for ev in events if ev.event == "raised"}
        if raised:
            done = self.clock()
            for t in transitions:
                if t.what == "raise" and t.alert in raised:
                    self.metrics.raised((done - t.ts_ms) / 1000)

    def _send(self, events: list[AlertEvent], now: int) -> None:
        """Log committed events (their outbound messages were enqueued with them)."""
        self.stats.events += len(events)
        for ev in events:
            log.info("%s %s %s: %s", ev.event, ev.priority, ev.alert, ev.message, extra={"room": ev.room})

    def _room_name(self, room: str) -> str:
        if room == clinic.CLINIC:
            return "All rooms"
        if (rr := self.rooms.get(room)) is not None:
            return rr.room.name or room
        try:
            return self.cfg.room(room).name or room
        except KeyError:
            return room

    # --- loop ---------------------------------------------------------------------------
    def step(self, max_block_ms: int = 200) -> None:
        """One loop iteration: housekeeping and tick when due, then read readings."""
        now = self.clock()
        if now >= self._next_house:
            self.housekeeping(now)
            self._next_house = now + HEARTBEAT_MS
        if now >= self._next_tick and self._part_ix >= len(self._parts):
            self._parts, self._part_ix = self._tick_parts(), 0
            self._next_tick = now + TICK_MS
        if self._part_ix < len(self._parts):  # one part of the tick per step: readings are read between
            self._part_ix += 1
            self.tick_part(now, self._parts[self._part_ix - 1], self._part_ix - 1, len(self._parts))
        more = self._part_ix < len(self._parts)
        wait = 1 if more else max(1, min(self._next_house, self._next_tick, now + max_block_ms) - self.clock())
        if self.rooms:
            # one XREAD names every owned room: with many rooms, readings arriving one by one
            # are gathered for a few ms so that its cost is paid per batch, not per reading
            gap = min(COALESCE_MAX_MS, len(self.rooms) * COALESCE_MS_PER_ROOM) / 1000
            idle = gap - (time.monotonic() - self._polled_at)
            if idle > 0 and not more:
                time.sleep(idle)
            self._polled_at = time.monotonic()
            self.poll(wait)
        elif self.holds_clinic:
            time.sleep(min(wait, 100) / 1000)  # the clinic lease only: ticks do its work
        else:
            time.sleep(wait / 1000)

    def run(self, stop: threading.Event, *, freeze_gc: bool = False) -> None:
        """Loop until `stop` is set; survive Redis outages and error replies; give rooms back
        on the way out. `freeze_gc` (the `vitalwatch alerts` process): once it holds rooms,
        what it holds is kept out of full garbage collections (`_freeze_long_lived`).

        Any Redis failure — unreachable, or an error reply: OOM while committing, READONLY or
        `UNBLOCKED` after a failover, LOADING, BUSY, NOAUTH — ends only this iteration: nothing
        was committed (a room's last applied id moves only with its commit), so the next try
        after a backoff evaluates the same readings again. One log line per episode.
        """
        backoff = Backoff(0.1, 2.0)
        frozen = not freeze_gc
        while not stop.is_set():
            try:
                self.step()
                if not frozen and self.rooms:
                    frozen = True
                    _freeze_long_lived()
            except REDIS_ERRORS as e:
                wait = backoff.next()
                if self.episode.since is None:
                    self.failing_since_ms = self.clock()
                self.episode.failed(e, wait)
                self.wrote_since_failure = False
                self._outage_failed(e)
                stop.wait(wait)
                continue
            backoff.reset()
            if not self.wrote_since_failure:
                continue  # reads work, but no write has landed yet: the outage goes on
            if self.episode.recovered():
                self.failing_since_ms = None
                self._outage_over()
        try:
            self.release_all()
            heartbeat.remove(self.client, self.keys, ROLE, self.owner)
        except REDIS_ERRORS as e:
            log.warning("could not release rooms on stop (%s); they expire in %.1f s", cause(e), self.ttl_ms / 1000)


    def _outage_failed(self, e: BaseException) -> None:
        """A step failed on Redis: once the failure has lasted PAGE_AFTER_MS, page that
        monitoring stopped — directly (DirectPager), since Redis cannot hold the page."""
        now = self.clock()
        o = self.outages.failed(reply_code(e), words(e), now)
        if o is None:
            return
        refusal = None
        if o.not_stored:
            try:  # a Redis that refuses writes still answers INFO: it says why
                refusal = refusal_from_info(node_info(self.client, self.keys.alerts))
            except REDIS_ERRORS:
                pass
        self.outages.detail(refusal[1] if refusal else reply_text(e), whole=refusal is not None)
        o = self.outages.current or o
        rooms = [r.id for r in self.cfg.rooms]
        log.error("NOT MONITORING: %s — paging directly (%s)", o.sentence(self.owner),
                  "sent" if self.pager is not None else "no pager configured")
        if self.pager is not None:
            self.pager.page(stopped_event(o, self.owner, rooms, now), 1)

    def _outage_over(self) -> None:
        """Steps work again: the follow-up page, and the episode kept for the record."""
        now = self.clock()
        o = self.outages.ok(now)
        if o is None:
            return
        rooms = [r.id for r in self.cfg.rooms]
        log.warning("monitoring resumed after %.1f s: was %s", (now - o.since_ms) / 1000, o.sentence(self.owner))
        if self.pager is not None:
            self.pager.page(resumed_event(o, self.owner, rooms, now), None)
        self.finished_outages.append(o)


def _freeze_long_lived() -> None:
    """Keep what the worker holds for as long as it runs (config, rooms, rules: ~93,000
    objects at 1,000 rooms) out of Python's full garbage collections: at 1,000 rooms each
    stopped the loop (readings waiting) for 50-90 ms every few seconds; now 1-2 ms."""
    gc.collect()
    gc.freeze()


def _stops_monitoring(ev: AlertEvent) -> bool:
    """A clinic-wide "readings are not being stored" event (its pages go out directly)."""
    return ev.room == clinic.CLINIC and ev.alert.startswith(f"{clinic.CLINIC}.-.{COND_NOT_STORED}.")


def _int_or_none(v: object) -> int | None:
    try:
        return int(str(v)) if v is not None else None
    except ValueError:
        return None


def _few(rooms: list[str]) -> str:
    return ", ".join(rooms[:5]) + (f" and {len(rooms) - 5} more" if len(rooms) > 5 else "")


def _age(value: str, now: int) -> int:
    try:
        return now - int(value)
    except ValueError:
        return 1 << 62


def _bp_only(metrics: Any) -> bool:
    ms = {m for m in metrics if m not in ("ts", "dev", "flags")}
    return bool(ms) and ms <= BP_METRICS
