"""What goes to the EHR when, and the loop that sends it — run inside `vitalwatch alerts`.

Destinations (one durable outbox each, monitor/store/outbox.py):
- `hl7` when `[hl7.outbound]` is set: ORU^R01 per CONTRACT.md. `on = "session_end"`: once a
  session is archived, its readings (from the archive) in one or more messages.
  `on = "live"`: every minute, per room with an open session, the readings that reached the
  room's stream since the last message; when the session is archived, the rest up to its end.
- `fhir` when `[fhir] url` is set: one transaction Bundle per archived session.

Every alert worker runs `start()`'s thread. Work is shared safely: enqueueing is idempotent
(keyed by session, or by room + first stream id), a short lock keeps two workers from
loading the same archive at once, and each destination is sent by whichever worker holds
its lease (at most one at a time), in order, with backoff until the receiver accepts.
Sessions archived more than `backfill_h` ago are not picked up (switching outbound on does
not flood the EHR with history). Readings that reach Redis after a session was archived
(the archive's late top-up) are not sent again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import sqlalchemy as sa

from monitor.interop import fhir, hl7_out, rows
from monitor.interop.senders import FhirSender, MllpSender
from monitor.model.codec import CodecError, from_fields
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.store import redis_types
from monitor.store.outbox import Outbox, OutboxSender, Outcome
from monitor.store.redis_conn import connect
from monitor.store.retry import REDIS_ERRORS, Backoff, Episode, keep_running
from monitor.store.streams import read_range

log = logging.getLogger(__name__)

DEST_HL7 = "hl7"
DEST_FHIR = "fhir"
SCAN_EVERY_S = 2.0
LIVE_EVERY_S = 60.0
LOOP_MAX_WAIT_S = 0.5


def destinations(cfg: Config) -> list[str]:
    """The outboxes this config sends to."""
    out = []
    if cfg.hl7.outbound is not None:
        out.append(DEST_HL7)
    if cfg.fhir.url:
        out.append(DEST_FHIR)
    return out


def make_sender(cfg: Config, dest: str) -> Callable[[Any], Outcome]:
    """The transport for a destination."""
    if dest == DEST_HL7:
        assert cfg.hl7.outbound is not None
        return MllpSender(cfg.hl7.outbound.url, cfg.hl7.outbound.timeout_s)
    if dest == DEST_FHIR:
        assert cfg.fhir.url is not None
        return FhirSender(cfg.fhir.url, cfg.fhir.timeout_s)
    raise ValueError(f"unknown destination {dest!r}")


def party(cfg: Config) -> hl7_out.Party:
    """MSH-3..6 from `[hl7.outbound]`."""
    o = cfg.hl7.outbound
    if o is None:
        return hl7_out.Party(facility=cfg.clinic.id)
    return hl7_out.Party(o.sending_application, o.sending_facility or cfg.clinic.id, o.receiving_application,
                         o.receiving_facility)


# --- session end -------------------------------------------------------------------------
def enqueue_session(client: redis.Redis, keys: Keys, cfg: Config, rec: Any, now_ms: int) -> dict[str, int]:
    """Enqueue an archived session (`SessionRecord`) for every session-end destination.

    Idempotent per destination (key `session:<id>`); returns messages added per destination.
    """
    sid = str(rec.header["id"])
    patient, room = str(rec.header.get("patient") or ""), str(rec.header.get("room") or "")
    vital_rows = rows.from_archive(rec.readings)
    added: dict[str, int] = {}
    if cfg.hl7.outbound is not None and cfg.hl7.outbound.on == "session_end":
        msgs = hl7_out.session_messages(vital_rows, session_id=sid, patient=patient, room=room, party=party(cfg),
                                        max_obx=cfg.hl7.outbound.max_obx, now_ms=now_ms)
        msgs = msgs if rows.value_count(vital_rows) else []  # nothing measured: nothing to chart
        items = [(body, {"control_id": cid, "session": sid, "part": str(i), "parts": str(len(msgs)),
                         "room": room}) for i, (cid, body) in enumerate(msgs, start=1)]
        ids = Outbox(client, keys, DEST_HL7).enqueue_many(items, kind="hl7-oru", key=sid, dedup_key=f"session:{sid}",
                                                        now_ms=now_ms)
        added[DEST_HL7] = len(ids or [])
    if cfg.hl7.outbound is not None and cfg.hl7.outbound.on == "live":
        added[DEST_HL7] = flush_live(client, keys, cfg, room, sid, patient, int(rec.header["started_ms"]),
                                     int(rec.header.get("ended_ms") or now_ms), now_ms, final=True)
    if cfg.fhir.url:
        bundle = fhir.session_bundle(vital_rows, clinic=cfg.clinic.id, session_id=sid, patient=patient,
                                     now_ms=now_ms, patient_system=cfg.fhir.patient_system,
                                     bundle_type="transaction")
        items = [(json.dumps(bundle, separators=(",", ":")), {"session": sid, "room": room,
                                                              "observations": str(len(bundle["entry"]))})]
        ids = Outbox(client, keys, DEST_FHIR).enqueue_many(
            items if bundle["entry"] else [], kind="fhir-bundle", key=sid, content_type="application/fhir+json",
            dedup_key=f"session:{sid}", now_ms=now_ms)
        added[DEST_FHIR] = len(ids or [])
    return added


def due_sessions(client: redis.Redis, keys: Keys, cfg: Config, now_ms: int) -> list[str]:
    """Archived sessions within the backfill window not yet enqueued for some destination."""
    dests = [d for d in destinations(cfg)]
    if not dests:
        return []
    window_ms = int(max(cfg.hl7.outbound.backfill_h if cfg.hl7.outbound else 0, cfg.fhir.backfill_h) * 3600_000)
    ids = redis_types.members(client.zrangebyscore(keys.sessions_index, now_ms - window_ms - 48 * 3600_000, "+inf"))
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for sid in ids:
        pipe.hmget(keys.session(sid), ["state", "archived_ms"])
        for d in dests:
            pipe.zscore(keys.outbox_keys(d), f"session:{sid}")
    res = pipe.execute()
    out = []
    step = 1 + len(dests)
    for i, sid in enumerate(ids):
        state, archived_ms = res[i * step]
        enqueued = res[i * step + 1:(i + 1) * step]
        if state == "archived" and archived_ms and int(archived_ms) >= now_ms - window_ms \
                and any(x is None for x in enqueued):
            out.append(sid)
    return out


def scan_once(client: redis.Redis, keys: Keys, cfg: Config, now_ms: int) -> int:
    """Enqueue every due session; returns how many sessions were enqueued."""
    from monitor.sessions.archive import NotArchived, load_session, open_archive

    n = 0
    for sid in due_sessions(client, keys, cfg, now_ms):
        try:
            rec = load_session(open_archive(cfg.archive.url), sid)
        except NotArchived:
            log.warning("session %s is marked archived but not in the archive; not sent", sid)
            continue
        added = enqueue_session(client, keys, cfg, rec, now_ms)
        log.info("session %s queued for the EHR: %s", sid, ", ".join(f"{d} {k} message(s)" for d, k in added.items()))
        n += 1
    return n


# --- live ----------------------------------------------------------------------------------
def flush_live(client: redis.Redis, keys: Keys, cfg: Config, room: str, sid: str, patient: str, start_ms: int,
               end_ms: int | None, now_ms: int, *, final: bool = False) -> int:
    """Send a room's readings that reached its stream since the last live message (up to
    `end_ms` measurement time when given); returns messages enqueued (0 or 1)."""
    box = Outbox(client, keys, DEST_HL7)
    cursor_key = keys.hl7_live_cursor(DEST_HL7)
    cursor = redis_types.opt_str(client.hget(cursor_key, sid)) or f"{max(0, start_ms - 60_000)}-0"
    entries = list(read_range(client, keys.vitals(room), f"({cursor}", "+"))
    batch, last_id = [], cursor
    for entry_id, f in entries:
        try:
            r = from_fields(room, f)
        except CodecError:
            continue
        last_id = entry_id
        if r.ts_ms >= start_ms and (end_ms is None or r.ts_ms <= end_ms):
            batch.append(r)
    added = 0
    vital_rows = rows.from_readings(batch)
    if rows.value_count(vital_rows):
        first = entries[0][0]
        cid = hl7_out.control_id(f"live:{sid}:{first}", 1)
        body = hl7_out.oru_message(vital_rows, control=cid, patient=patient, room=room, order=sid, party=party(cfg),
                                   now_ms=now_ms)
        ids = box.enqueue_many([(body, {"control_id": cid, "session": sid, "room": room, "live": "1"})],
                               kind="hl7-oru", key=sid, dedup_key=f"live:{sid}:{first}", now_ms=now_ms)
        added = len(ids or [])
    if final:
        client.hdel(cursor_key, sid)
        box.enqueue_many([], kind="hl7-oru", key=sid, dedup_key=f"session:{sid}", now_ms=now_ms)  # mark done
    elif last_id != cursor:
        client.hset(cursor_key, sid, last_id)
    return added


def live_once(client: redis.Redis, keys: Keys, cfg: Config, now_ms: int) -> int:
    """One live round: every room with an open session; returns messages enqueued."""
    from monitor.sessions.lifecycle import get_session, open_sessions

    n = 0
    for room, sid in open_sessions(client, keys).items():
        head = get_session(client, keys, sid)
        if head is None:
            continue
        n += flush_live(client, keys, cfg, room, sid, str(head.get("patient") or ""), int(head["started_ms"]),
                        None, now_ms)
    return n


# --- the loop --------------------------------------------------------------------------------
@dataclass
class InteropStats:
    """Counters for logs and tests."""

    scans: int = 0
    sessions: int = 0
    live_messages: int = 0
    sent: int = 0


class InteropRunner:
    """Scans, live rounds and the outbox senders of one alert worker. Drive with `step()`."""

    def __init__(self, cfg: Config, client: redis.Redis, keys: Keys, owner: str,
                 clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.cfg, self.client, self.keys, self.owner, self.clock = cfg, client, keys, owner, clock
        self.senders = {d: OutboxSender(Outbox(client, keys, d), make_sender(cfg, d), owner=owner)
                        for d in destinations(cfg)}
        self.stats = InteropStats()
        self._next_scan = 0
        self._next_live = 0

    def step(self) -> float:
        """Do what is due; returns how long to wait (s)."""
        now = self.clock()
        if now >= self._next_scan:
            self._next_scan = now + int(SCAN_EVERY_S * 1000)
            if self.client.set(self.keys.interop_lock("scan"), self.owner, nx=True, px=int(SCAN_EVERY_S * 900)):
                self.stats.scans += 1
                try:
                    self.stats.sessions += scan_once(self.client, self.keys, self.cfg, now)
                except sa.exc.SQLAlchemyError as e:
                    log.error("outbound: archive unavailable (%s); sessions are queued once it is back", e)
        out = self.cfg.hl7.outbound
        if out is not None and out.on == "live" and now >= self._next_live:
            self._next_live = now + int(LIVE_EVERY_S * 1000)
            if self.client.set(self.keys.interop_lock("live"), self.owner, nx=True, px=int(LIVE_EVERY_S * 900)):
                self.stats.live_messages += live_once(self.client, self.keys, self.cfg, now)
        wait = LOOP_MAX_WAIT_S
        for s in self.senders.values():
            before = s.sent
            wait = min(wait, s.step())
            self.stats.sent += s.sent - before
        return wait

    def close(self) -> None:
        """Give the leases back and close connections."""
        for s in self.senders.values():
            try:
                s.release()
            except REDIS_ERRORS as e:
                log.warning("outbox lease not released (%s); it expires by itself", e)
            closer = getattr(s.send, "close", None)
            if closer is not None:
                closer()


def start(cfg: Config, redis_url: str, keys: Keys, owner: str, stop: threading.Event) -> threading.Thread | None:
    """Run the outbound loop in a thread until `stop` is set (None when nothing is configured)."""
    if not destinations(cfg):
        return None

    def loop() -> None:
        client = connect(redis_url)
        runner = InteropRunner(cfg, client, keys, owner)
        log.info("outbound to %s: this worker scans sessions and sends while it holds a lease",
                 ", ".join(destinations(cfg)))
        backoff, episode = Backoff(0.5, 5.0), Episode("EHR outbound loop", log)
        try:
            while not stop.is_set():
                try:
                    wait = runner.step()
                    backoff.reset()
                    episode.recovered()
                except REDIS_ERRORS as e:  # unreachable, or an error reply (OOM, READONLY, …)
                    wait = backoff.next()
                    episode.failed(e, wait)
                stop.wait(wait)
        finally:
            runner.close()
            client.close()

    return keep_running("interop-outbound", loop, stop, log)
