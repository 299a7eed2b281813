"""One serial device's lifecycle: open, read, parse, store, watch for silence, reconnect.

States (device status `state`): `connecting` (port open, no valid frame yet) → `online`
(after the first valid frame) → `silent` (no valid frame for the driver's quiet time:
3 s for oximeters and ANSAR-B; a NIBP module that answers no poll for 11 s is `offline`)
→ `offline` (the port cannot be opened or was lost: unplug, EOF, I/O error). After a loss
the supervisor reopens with backoff (0.5 s doubling to 5 s), so a replugged device resumes
within seconds without restarting ingest.

Readings go through the process's StreamWriter; refusals go to `rejects`, at most one
entry a second per device and reason (the entry says how many it stands for), while the
status counters `rejects:<reason>` count every one. Each device runs in its own thread;
nothing here waits on Redis except the NIBP request/session look-ups (short timeouts).

Liveness comes from storage: `last_ts` / `last_recv_ms` in the status are those of the
newest reading Redis *confirmed* (the writer's `last_stored`; `last_recv_ms` that of the
oldest reading still waiting to be stored when it is newer, DeviceBacklog.heard_ms), and a
device whose readings have waited longer than its quiet time to be stored is `silent`
("readings not being stored: <cause>") even while its frames parse — to monitoring, that
is silence.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import cast

import redis
import serial

from devices.drivers import Driver, NibpDriver, Step, cycle_for, make_driver
from devices.protocols.framing import Parsed
from devices.protocols.nibp_un300 import NibpPoller
from devices.statusboard import StatusBoard
from devices.transports.serial import LINK_ERRORS, open_link, read_available
from monitor.model.clock import Clock, now_ms
from monitor.model.config import DeviceConfig, RoomConfig
from monitor.model.keys import Keys
from monitor.model.ratelimit import RateLimiter, RejectLimiter
from monitor.model.readings import Refusal, accept
from monitor.model.storage import StoredMark
from monitor.observe import collectors as observe
from monitor.sessions.phase import session_phase
from monitor.store.redis_faults import REDIS_FAILURES, classify
from monitor.store.streams import StreamWriter

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 5.0  # a replugged device is found again within this (plus the open time)
REJECT_INTERVAL_S = 1.0
NIBP_REQUESTS_EVERY_S = 1.0
NIBP_PHASE_EVERY_S = 5.0
STATUS_EVERY_S = 1.0
TRACEBACK_EVERY_S = 60.0


class DeviceSupervisor(threading.Thread):
    """Runs one serial device until `stop` is set. Never raises out of its thread."""

    def __init__(
        self,
        room: RoomConfig,
        dev: DeviceConfig,
        writer: StreamWriter,
        board: StatusBoard,
        stop: threading.Event,
        *,
        keys: Keys,
        client: redis.Redis | None = None,
        opener: Callable[[DeviceConfig], serial.SerialBase] = open_link,
        mono: Callable[[], float] = time.monotonic,
        wall_ms: Clock = now_ms,
    ) -> None:
        super().__init__(name=f"device-{dev.id}", daemon=True)
        self.room, self.dev = room, dev
        self.writer, self.board, self.stop_event = writer, board, stop
        self.keys, self.client = keys, client
        self.opener, self.mono, self.wall_ms = opener, mono, wall_ms
        self.state = ""
        self.limiter = RejectLimiter(REJECT_INTERVAL_S)
        self._tracebacks = RateLimiter(TRACEBACK_EVERY_S)
        # The NIBP schedule outlives a connection, so a replug does not re-inflate the cuff.
        self.poller = NibpPoller(dev.nibp_cycle_s, dev.id) if dev.protocol == "nibp-un300" else None
        self._last_ts = 0
        self._last_pub_s: float | None = None
        self._pending: tuple[Parsed, int] | None = None
        self._went_online = False
        self._log_extra = {"room": room.id, "device": dev.id}
        self._mark: StoredMark | None = None  # newest stored reading already published
        self._heard: int | None = None  # and the `last_recv_ms` published with it
        self._not_stored = ""  # why readings have waited too long to be stored ("" if not)
        self._init_args = (room, dev, writer, board, stop)
        self._init_kw = {"keys": keys, "client": client, "opener": opener, "mono": mono, "wall_ms": wall_ms}

    def replacement(self) -> DeviceSupervisor:
        """A new supervisor for the same device (this one's thread died), keeping its NIBP
        schedule and its identity clock so readings stay strictly increasing."""
        new = DeviceSupervisor(*self._init_args, **self._init_kw)  # type: ignore[arg-type]
        new.poller, new._last_ts, new._mark, new._heard = self.poller, self._last_ts, self._mark, self._heard
        return new

    # --- lifecycle ----------------------------------------------------------------
    def run(self) -> None:
        """Open, serve, lose, back off, reopen — until stopped."""
        self.board.set(self.dev.id, {"room": self.room.id, "protocol": self.dev.protocol,
                                     "transport": "serial", "port": self.dev.port or ""})
        self._set_state("connecting", f"opening {self.dev.port}")
        delay = BACKOFF_START_S
        opened_before = False
        while not self.stop_event.is_set():
            try:
                link = self.opener(self.dev)
            except LINK_ERRORS as e:
                self._set_state("offline", f"cannot open {self.dev.port}: {e}")
                self._wait(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            if opened_before:
                self.board.incr(self.dev.id, "reconnects")
            opened_before = True
            self._went_online = False
            reason = "stopped"
            try:
                self._serve(link)
            except LINK_ERRORS as e:
                reason = f"link lost: {e}"
            except Exception as e:  # a bug must not end monitoring of this device: log, reopen
                allowed, held = self._tracebacks.allow(type(e).__name__, self.mono())
                if allowed:  # one traceback per error type a minute; the rest counted in `errors`
                    log.error("device loop failed (+%d like it in the last %g s)", held, TRACEBACK_EVERY_S,
                              exc_info=e, extra=self._log_extra)
                self.board.incr(self.dev.id, "errors")
                reason = f"internal error: {e!r}"
            finally:
                try:
                    link.close()
                except LINK_ERRORS:
                    pass  # closing a port that is already gone: nothing left to release
            self._flush_refusals(drain=True)
            if self.stop_event.is_set():
                break
            self.publish_stored()
            self._set_state("offline", reason)
            if self._went_online:
                delay = BACKOFF_START_S
            self._wait(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
        self._set_state("offline", "ingest stopped")

    def _wait(self, delay_s: float) -> None:
        """Back off in 1 s slices, keeping `updated_ms` fresh (the adapter is alive)."""
        end = self.mono() + delay_s
        while not self.stop_event.is_set():
            left = end - self.mono()
            if left <= 0:
                return
            self.board.set(self.dev.id, {"updated_ms": self.wall_ms()})
            self.stop_event.wait(min(left, 1.0))

    def _serve(self, link: serial.SerialBase) -> None:
        driver = make_driver(self.dev, self.poller)
        now = self.mono()
        opened_s = now
        self._set_state("connecting", f"opened {self.dev.port}; waiting for a valid frame")
        self._apply(driver.open(now), link, now, driver)
        frames_seen = 0
        last_valid_s: float | None = None
        next_status_s = now
        next_requests_s = now
        next_phase_s = now
        while not self.stop_event.is_set():
            data = read_available(link)
            now = self.mono()
            if data:
                self._apply(driver.feed(data, now), link, now, driver)
            if isinstance(driver, NibpDriver) and self.client is not None:
                if now >= next_requests_s:
                    next_requests_s = now + NIBP_REQUESTS_EVERY_S
                    self._nibp_requests()
                if now >= next_phase_s and self.dev.cycle_by_phase_s:
                    next_phase_s = now + NIBP_PHASE_EVERY_S
                    self._nibp_phase()
            self._apply(driver.tick(now), link, now, driver)
            if driver.frames != frames_seen:
                self.board.incr(self.dev.id, "frames", driver.frames - frames_seen)
                frames_seen = driver.frames
                last_valid_s = now
                if self.state != "online":
                    self._went_online = True
                    if not self._not_stored:
                        self._set_state("online", "")
            self.publish_stored()
            quiet_since = opened_s if last_valid_s is None else last_valid_s
            if now - quiet_since > driver.quiet_s and self.state in ("online", "connecting"):
                what = "since the port opened" if last_valid_s is None else f"for {driver.quiet_s:g} s"
                self._set_state(driver.quiet_state, f"no valid data {what}")
            self._publish_pending(now, driver)
            self._flush_refusals(now=now)
            if now >= next_status_s:
                next_status_s = now + STATUS_EVERY_S
                self.board.set(self.dev.id, {"updated_ms": self.wall_ms()})
                linked = last_valid_s is not None and now - last_valid_s <= driver.quiet_s
                self._check_storage(driver.quiet_s, linked)

    # --- results -------------------------------------------------------------------
    def _apply(self, step: Step, link: serial.SerialBase, now: float, driver: Driver) -> None:
        for frame in step.send:
            link.write(frame)
        for parsed, ts_s in step.results:
            ts_ms = self.wall_ms() if ts_s is None else self.wall_ms() - int((now - ts_s) * 1000)
            self._offer(parsed, ts_ms, now, driver)
        for ref in step.refusals:
            self._refuse(ref, now)
        if step.status:
            self.board.set(self.dev.id, step.status)
        if step.clear_status:
            self.board.delete(self.dev.id, *step.clear_status)
        if step.detail is not None:
            self.board.set(self.dev.id, {"detail": step.detail}, urgent=True)
            if step.detail:
                log.warning("%s", step.detail, extra=self._log_extra)

    def _offer(self, parsed: Parsed, ts_ms: int, now: float, driver: Driver) -> None:
        """Store now, or hold as the newest candidate if the device's rate limit says wait."""
        if not parsed.storable:
            return
        if driver.min_interval_s and self._last_pub_s is not None \
                and now - self._last_pub_s < driver.min_interval_s:
            if self._pending is not None:
                self.board.incr(self.dev.id, "superseded")  # counted: an older packet replaced
            self._pending = (parsed, ts_ms)
            return
        self._last_pub_s = now
        self._store(parsed, ts_ms)

    def _publish_pending(self, now: float, driver: Driver) -> None:
        if self._pending is not None and self._last_pub_s is not None \
                and now - self._last_pub_s >= driver.min_interval_s:
            parsed, ts_ms = self._pending
            self._pending = None
            self._last_pub_s = now
            self._store(parsed, ts_ms)

    def _store(self, parsed: Parsed, ts_ms: int) -> None:
        # (device, ts, values+flags) identifies a reading: keep one device's ts strictly
        # increasing so two equal readings in one millisecond are not taken for a redelivery.
        ts_ms = max(ts_ms, self._last_ts + 1)
        self._last_ts = ts_ms
        reading, refusals = accept(self.room.id, self.dev.id, ts_ms, parsed.values, parsed.flags,
                                   raw=parsed.raw)
        for ref in refusals:
            self._refuse(ref, self.mono())
        if reading is not None:
            self.writer.write(reading)
            self.board.incr(self.dev.id, "readings")  # accepted; `last_ts` follows once stored

    def publish_stored(self) -> None:
        """Put the newest reading Redis confirmed into the status (cheap when unchanged;
        also called by ingest at shutdown, after the writer's last flush)."""
        mark = self.writer.last_stored(self.dev.id)
        heard = self.writer.device_backlog(self.dev.id).heard_ms(mark.recv_ms if mark else None)
        if (mark, heard) != (self._mark, self._heard):
            self._mark, self._heard = mark, heard
            fields: dict[str, str | int | float] = {} if mark is None else {"last_ts": mark.ts_ms}
            if heard is not None:
                fields["last_recv_ms"] = heard
            if fields:
                self.board.set(self.dev.id, fields)

    def _check_storage(self, quiet_s: float, linked: bool) -> None:
        """`silent` while readings wait longer than the quiet time to be stored; back to
        `online` once they are stored again and frames still arrive."""
        waited_ms = self.writer.device_backlog(self.dev.id).age_ms(self.wall_ms())
        if waited_ms > quiet_s * 1000:
            st = self.writer.storage()
            self._not_stored = ("readings not being stored: "
                                f"{st.cause or st.spool_error or 'waiting for Redis'}")
            if self.state in ("online", "silent", "connecting"):
                self._set_state("silent", self._not_stored)
        elif self._not_stored:
            self._not_stored = ""
            if linked:
                self._set_state("online", "")

    def _refuse(self, ref: Refusal, now: float) -> None:
        observe.rejected(ref.reason)
        self.board.incr(self.dev.id, f"rejects:{ref.reason}")
        out = self.limiter.offer(ref, now)
        if out is not None:
            self.writer.reject(out)

    def _flush_refusals(self, now: float | None = None, drain: bool = False) -> None:
        t = self.mono() if now is None else now
        for ref in (self.limiter.drain(t) if drain else self.limiter.due(t)):
            self.writer.reject(ref)

    def _set_state(self, state: str, detail: str) -> None:
        if state == self.state:
            self.board.set(self.dev.id, {"detail": detail, "updated_ms": self.wall_ms()})
            return
        self.state = state
        now = self.wall_ms()
        self.board.set(self.dev.id, {"state": state, "since_ms": now, "detail": detail, "updated_ms": now},
                       urgent=True)
        level = logging.INFO if state in ("online", "connecting") else logging.WARNING
        log.log(level, "%s%s", state, f": {detail}" if detail else "", extra=self._log_extra)

    # --- NIBP housekeeping (Redis look-ups) -----------------------------------------
    def _nibp_requests(self) -> None:
        """Pop "measure now" requests (the dashboard LPUSHes JSON {ts_ms, user})."""
        assert self.client is not None and self.poller is not None
        try:
            while (raw := self.client.rpop(self.keys.nibp_requests(self.dev.id))) is not None:
                try:
                    req = json.loads(str(raw))
                    user = str(req.get("user", "")) if isinstance(req, dict) else ""
                except ValueError:
                    user = ""
                self.poller.request_now()
                self.board.set(self.dev.id, {"nibp_request_ms": self.wall_ms(), "nibp_requested_by": user})
                log.info("measure-now requested by %s", user or "?", extra=self._log_extra)
        except REDIS_FAILURES as e:  # unreachable or refusing: try again next second
            log.debug("cannot read NIBP requests: %s", classify(e).cause, extra=self._log_extra)

    def _nibp_phase(self) -> None:
        """Follow the room's session phase when `cycle_by_phase_s` is configured."""
        assert self.client is not None and self.poller is not None
        try:
            sid = self.client.hget(self.keys.open_sessions, self.room.id)
            session = cast(dict[str, str], self.client.hgetall(self.keys.session(str(sid)))) if sid else None
        except REDIS_FAILURES as e:  # unreachable or refusing: keep the current cycle
            log.debug("cannot read the session phase: %s", classify(e).cause, extra=self._log_extra)
            return
        phase = session_phase(session, self.wall_ms()).nibp
        cycle_s = cycle_for(self.dev, phase)
        if cycle_s != self.poller.cycle_s:
            log.info("session phase %s: NIBP cycle %g s", phase, cycle_s, extra=self._log_extra)
            self.poller.set_cycle(cycle_s)
        self.board.set(self.dev.id, {"nibp_phase": phase})
