"""Push: one async loop per dashboard process reads Redis and feeds every open browser tab.

The loop blocks on `redis.asyncio` XREAD over every room's vitals stream and the alert
stream, so a reading reaches the browsers as soon as it is stored — nothing is polled on a
tick. Once a second (between reads) it also checks heartbeats (NOT MONITORING), device
status and open sessions, and pushes only what changed. Each tab holds one WebSocket
(/ws/live); messages are small JSON objects (see docs/dashboard.md, "Push protocol"):

    hello   full state at connect: rooms (latest values, alerts, devices, session, sparkline),
            the clinic-wide alerts, monitoring state, the user, the rooms in config order
    v       one reading: room, ts, dev, vals, flags
    vb      several readings of a room from one read (a catch-up after a stall): room, rows of
            [ts, dev, vals, flags] — one message per room, however long the backlog
    spark   a room's 15-minute sparkline, once filled after a start (from the stream)
    alerts  a room's active alerts (room "*": the clinic-wide ones), after any alert event
    dev     a room's device status (state, detail, protocol), when it changed — not when only
            its last reading's time did: ages come from the readings
    sess    a room's session header, when it changed
    mon     monitoring state, every second (also the browser's keep-alive: silence = lost)
    logout  the sign-in ended — sent by dashboard/api.py, not by this hub: every 2 s it checks
            that the tab's sign-in still holds (not logged out or idle-expired; the account not
            disabled, its role or password not changed; a token not revoked or expired), then
            closes the socket

The hub's per-room state is the screens' summary: pages, the overview's tiles and
/api/v1/rooms read it instead of Redis. It is filled once at start (and after a Redis outage)
from each room's latest-value summary (`keys.room_latest`, kept by the alert engine) plus the
entries after it (few while the engine keeps up) — never by scanning history — and then kept
current by the push itself. Sparklines (15 minutes of a room's stream) are filled after the
tiles are up, room by room.

Why not Dash's own WebSocket callbacks: a persistent callback per tab would run one Redis
loop per tab (N tabs → N blocking reads) and route every reading through the React store;
one shared loop plus a small script that writes text into the tiles keeps both the server
and the browser cheap at 20–30 rooms (figures in docs/dashboard.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from dashboard.data import Data, decode_vitals
from dashboard.figures import sparkline_points
from monitor.accounts import audit
from monitor.alarms.actions import UNDO_S
from monitor.alarms.clinic import CLINIC, broker_problems
from monitor.alarms.technical import monitoring_state
from monitor.model.clock import now_ms
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.model.liveness import WriteProbe, not_storing, own_write_problem, storage_stalled
from monitor.sessions.phase import session_phase
from monitor.sessions.records import decode_header
from monitor.store import redis_types
from monitor.store.heartbeat import instance_name
from monitor.store.redis_cluster import node_info_async
from monitor.store.redis_conn import REDIS_DOWN, connect_async, master_moved
from monitor.store.redis_health import refusal_from_info
from monitor.store.retry import REDIS_ERRORS, Backoff, Episode, cause, reply_code, reply_text, words

log = logging.getLogger(__name__)

SPARK_WINDOW_MS = 15 * 60 * 1000
SPARK_BUCKET_S = 10
SPARK_METRICS = ("hr", "spo2")
CLIENT_QUEUE_MAX = 2000  # messages; a tab that falls this far behind is disconnected (it reconnects)
PRESENCE_FORGET_S = 600.0  # a screen id unreported this long no longer counts toward a sign-in's limit
SCREEN_FORGET_S = 600  # a `screens` entry unreported this long is removed
HOUSEKEEPING_S = 10.0
CATCHUP_MS = 5 * 60 * 1000  # after a reconnect, readings this far back are pushed (coalesced), not skipped
HUB_THREADS = 3  # the hub's own threads for its sync reads (alerts, snapshot, sparklines, housekeeping)
AIO_DOWN = REDIS_DOWN + (aioredis.ConnectionError, aioredis.TimeoutError)
WATCH_S = 1.0  # the supervisor looks at the push loop this often
STALL_S = 5.0  # no completed iteration for this long: the screens and /health say so
RESTART_STALL_S = 15.0  # ... and for this long: the loop is cancelled and started again
BAD_RECORD = (ValueError, TypeError, KeyError)  # what a malformed record raises while decoded


def monitoring_view(cfg: Config, beats_raw: dict[str, str], now: int, probe: WriteProbe | None = None,
                    info_cause: str | None = None,
                    storage_raw: dict[str, str] | None = None,
                    statuses: Mapping[str, Mapping[str, str]] | None = None) -> tuple[list[str], list[str]]:
    """(NOT MONITORING reasons, the ones among them that stop monitoring in every room) from
    the raw heartbeats hash (Redis itself answered) — the alert engine's own pure
    `monitoring_state`, so the screen and the engine agree —, this process's write probe
    with what Redis's INFO says (`info_cause`), the live ingest processes' storage
    records (`storage_raw`, the `storage` hash) and the device status hashes (`statuses`:
    an MQTT broker the adapters cannot reach, monitor.alarms.clinic `broker_down`; only the
    rooms with MQTT devices, so not "everywhere") (pure).

    Readings not being stored is one cause in every room. While Redis refuses writes
    server-wide (monitor.model.liveness) it is the only reason: the heartbeats and storage
    records that go stale meanwhile (the engine's, ingest's) are its consequence.
    """
    probe = probe or WriteProbe()
    stored = not_storing(probe, info_cause, now)
    if stored:
        return [stored], [stored]
    mon = monitoring_state(beats_raw, now, cfg)
    ingest = mon.roles.get("ingest")
    fresh = {f"ingest:{i}" for i in ingest.fresh} if ingest else set()
    stalled = storage_stalled(storage_raw or {}, fresh, now)
    own = [p] if (p := own_write_problem(probe, "dashboard", now)) else []
    broker = broker_problems(cfg, statuses or {}, mon, now)
    return own + stalled + list(mon.problems) + broker, own + stalled + list(mon.engine_problems)


def monitoring_problems(cfg: Config, beats_raw: dict[str, str], now: int, probe: WriteProbe | None = None,
                        info_cause: str | None = None, storage_raw: dict[str, str] | None = None,
                        statuses: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """Every NOT MONITORING reason (`monitoring_view`), for /health (pure)."""
    return monitoring_view(cfg, beats_raw, now, probe, info_cause, storage_raw, statuses)[0]



@dataclass(eq=False)  # identity hash: tabs live in a set
class Client:
    """One connected tab."""

    user: str
    role: str
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE_MAX))
    dropped: bool = False


class Hub:
    """The process's single Redis reader and fan-out to connected tabs."""

    def __init__(self, cfg: Config, keys: Keys, redis_url: str, data: Data) -> None:
        self.cfg, self.keys, self.redis_url, self.data = cfg, keys, redis_url, data
        self.rooms = [r.id for r in cfg.rooms]
        self.clients: set[Client] = set()
        self.state: dict[str, dict[str, Any]] = {r: self._empty_room() for r in self.rooms}
        self.clinic: list[dict[str, Any]] = []  # clinic-wide alerts (room "*")
        self.mon: dict[str, Any] = {"ok": False, "reasons": ["starting"], "everywhere": ["starting"], "ts": now_ms()}
        self._statuses: dict[str, dict[str, str]] = {}  # device status hashes, last read (broker cause)
        self.last_ids: dict[str, str] = {}
        self.instance = instance_name()
        self.stats = {"readings": 0, "messages": 0, "tabs_dropped": 0, "redis_errors": 0, "loop_failures": 0,
                      "bad_records": 0, "unsendable": 0}
        self._redis_ok = False
        # the push loop's own health (run() watches it; /health reports it)
        self._progress = time.monotonic()  # last time the loop completed an iteration
        self._polled = time.monotonic()  # ... and its once-a-second poll completed (or the loop (re)started)
        self._loop_down = False  # it failed and waits to be started again
        self.loop_error = ""
        self.loop_restarts = 0
        self.probe = WriteProbe()  # this process's heartbeat write: refused since when, why
        self.info_cause: str | None = None  # what Redis's INFO says while it refuses our writes
        self._parts: dict[str, Episode] = {}
        # live sockets and screen ids per sign-in (session or token digest): bounded
        self.sockets: dict[str, int] = {}
        self.presence: dict[str, dict[str, float]] = {}
        self._next_housekeeping = 0.0
        self._spark_task: asyncio.Task[None] | None = None
        # the sync reads the loop waits for run on threads of its own, not the event loop's
        # default pool nor the pages' (a burst of requests never delays a push)
        self._pool = ThreadPoolExecutor(HUB_THREADS, thread_name_prefix="push-hub")

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        """Release the hub's threads (after `run` returned)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def redis_ok(self) -> bool:
        """Whether the push loop's last Redis read succeeded (its state is current)."""
        return self._redis_ok

    @staticmethod
    def _empty_room() -> dict[str, Any]:
        return {"latest": {}, "alerts": [], "devices": {}, "session": None, "spark": {m: [] for m in SPARK_METRICS}}

    # --- fan-out ---------------------------------------------------------------------------
    def subscribe(self, user: str, role: str) -> Client:
        """Register a tab; its queue starts with the full state."""
        c = Client(user, role)
        hello = self._dumps(self.hello(user, role))
        if hello is not None:
            c.queue.put_nowait(hello)
        self.clients.add(c)
        return c

    def unsubscribe(self, c: Client) -> None:
        """Forget a tab."""
        self.clients.discard(c)

    def open_socket(self, principal: str, limit: int) -> bool:
        """Count one more live socket of a sign-in; False (not counted) beyond `limit`."""
        if self.sockets.get(principal, 0) >= limit:
            return False
        self.sockets[principal] = self.sockets.get(principal, 0) + 1
        return True

    def close_socket(self, principal: str) -> None:
        """A live socket of a sign-in closed."""
        n = self.sockets.get(principal, 0) - 1
        if n > 0:
            self.sockets[principal] = n
        else:
            self.sockets.pop(principal, None)

    def presence_allowed(self, principal: str, screen_id: str, limit: int, now_s: float | None = None) -> bool:
        """May this sign-in report `screen_id`? At most `limit` screen ids per sign-in (ids
        not reported for PRESENCE_FORGET_S are forgotten): a client cannot grow `screens`."""
        now = time.monotonic() if now_s is None else now_s
        seen = self.presence.setdefault(principal, {})
        for sid, t in list(seen.items()):
            if now - t > PRESENCE_FORGET_S:
                del seen[sid]
        if screen_id not in seen and len(seen) >= limit:
            return False
        seen[screen_id] = now
        return True

    def hello(self, user: str, role: str) -> dict[str, Any]:
        """The full state message for a new tab."""
        return {"t": "hello", "rooms": self.state, "clinic": self.clinic, "mon": self.mon,
                "user": {"name": user, "role": role}, "server_ms": now_ms(), "cfg": self._client_cfg()}

    def _client_cfg(self) -> dict[str, Any]:
        nibp = {d.id: d.nibp_cycle_s for _r, d in self.cfg.devices() if d.protocol == "nibp-un300"}
        return {"stale_s": self.cfg.dashboard.stale_s, "nibp_cycle_s": nibp, "undo_s": UNDO_S,
                "rooms": {r.id: r.name or r.id for r in self.cfg.rooms}, "order": list(self.rooms)}

    def broadcast(self, msg: dict[str, Any]) -> bool:
        """Queue one message for every tab (a tab too far behind is dropped and reconnects);
        False when it cannot be sent at all (not strict JSON: counted and logged)."""
        text = self._dumps(msg)
        if text is None:
            return False
        self.stats["messages"] += 1
        for c in list(self.clients):
            try:
                c.queue.put_nowait(text)
            except asyncio.QueueFull:
                c.dropped = True
                self.stats["tabs_dropped"] += 1
                self.clients.discard(c)
                log.warning("tab of %s fell %d messages behind: disconnected (it will reconnect)",
                            c.user, CLIENT_QUEUE_MAX)
        return True

    # --- the loop --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run the push loop until `stop` is set, and watch it.

        The loop (`_loop`) survives Redis itself: unreachable, and every error reply (OOM,
        READONLY, `UNBLOCKED` after a failover, LOADING, BUSY, NOAUTH) — it backs off, says
        so on every screen and goes on. This supervisor covers the rest: a loop that ended
        on an unexpected error is logged with its traceback and started again (backoff); a
        loop that stopped making progress for STALL_S is reported, and cancelled and started
        again after RESTART_STALL_S. Meanwhile it sends the screens the NOT MONITORING state
        itself, once a second, so a dead loop never looks like a live screen (`loop_problem`
        is also what /health reports).
        """
        task: asyncio.Task[None] | None = None
        backoff = Backoff(1.0, 30.0)
        restart_at = started = 0.0
        self._progress = self._polled = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if task is not None and task.done() and not stop.is_set():
                if now - started > 60:
                    backoff.reset()  # it had run well: a new failure, not the same one again
                self._loop_ended(task)
                restart_at = now + backoff.next()
                task = None
            if task is None and now >= restart_at:
                if self._loop_down:
                    self.loop_restarts += 1
                    log.warning("push loop: starting it again (restart %d)", self.loop_restarts)
                self._loop_down = False
                self._progress = self._polled = started = now
                task = asyncio.create_task(self._loop(stop), name="push-loop")
            elif task is not None and now - self._last_progress() > RESTART_STALL_S:
                age = now - self._last_progress()
                log.error("push loop: no progress for %.0f s; cancelling and starting it again", age)
                self.loop_error = f"no progress for {age:.0f} s"
                task.cancel()
            problem = self.loop_problem()
            if problem:
                self._publish_mon([problem], [problem])
            await _wait(stop, WATCH_S)
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout=4)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception:  # noqa: BLE001 - stopping anyway; the error is logged
                log.exception("push loop ended with an error while stopping")

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        try:
            exc = task.exception()
        except asyncio.CancelledError:
            exc = None
        if exc is None:
            self.loop_error = self.loop_error or "it ended"
            log.error("push loop ended before the dashboard stopped (%s)", self.loop_error)
        else:
            self.loop_error = f"{type(exc).__name__}: {exc}"[:300]
            log.error("push loop failed; restarting it", exc_info=exc)
        self._loop_down = True
        self.stats["loop_failures"] += 1

    def loop_problem(self, now_s: float | None = None) -> str | None:
        """Why this dashboard's live updates are not current (None when they are): the push
        loop failed and waits to start again, or it has made no progress for STALL_S."""
        now = time.monotonic() if now_s is None else now_s
        if self._loop_down:
            return f"live updates of this dashboard stopped ({self.loop_error}); restarting"
        age = now - self._last_progress()
        if age > STALL_S:
            why = f" (last error: {self.loop_error})" if self.loop_error else ""
            return f"live updates of this dashboard stalled for {age:.0f} s{why}"
        return None

    def loop_health(self) -> dict[str, Any]:
        """The push loop for /health: running, restarts, last error, seconds since progress."""
        return {"ok": self.loop_problem() is None, "restarts": self.loop_restarts, "error": self.loop_error,
                "progress_age_s": round(time.monotonic() - self._last_progress(), 1)}

    def _last_progress(self) -> float:
        """When the loop last made progress: both its reads and its poll (which runs beside the
        reads — a hung poll would leave the monitoring state, alerts and devices unchecked)."""
        return min(self._progress, self._polled)

    def write_health(self, now: int) -> dict[str, Any]:
        """This process's write probe for /health: whether Redis takes its writes, and if not why."""
        p = self.probe
        return {"ok": p.ok, "refused_s": round(p.refused_for_ms(now) / 1000, 1), "code": p.code,
                "cause": p.words, "reply": p.reply, "info": self.info_cause}

    async def _loop(self, stop: asyncio.Event) -> None:
        """Read Redis and push until `stop` is set; survive Redis outages and error replies."""
        client: aioredis.Redis | None = None
        next_poll = 0.0
        # the once-a-second poll runs beside the reads (on another of the client's pooled
        # connections), so a slow poll — 300 rooms' device status and sessions, the alerts read
        # in a thread — never holds a reading back; its errors are raised here, as the reads' are
        poller: asyncio.Task[None] | None = None
        episode = Episode("push loop", log)
        backoff = Backoff(0.2, 2.0)
        try:
            while not stop.is_set():
                try:
                    if client is None:
                        client = connect_async(self.redis_url, timeout_s=3.0)
                        await self._snapshot(client)
                        self._set_redis(True)
                        self._polled = time.monotonic()
                        next_poll = 0.0
                    if poller is not None and poller.done():
                        done, poller = poller, None
                        done.result()
                    if poller is None and time.monotonic() >= next_poll:
                        next_poll = time.monotonic() + 1.0
                        poller = asyncio.create_task(self._poll_and_housekeep(client), name="push-poll")
                    streams = dict(self.last_ids)
                    resp = await client.xread(redis_types.stream_ids(streams), block=500, count=1000)
                    for key, entries in redis_types.xread_entries(resp) or []:
                        if entries:
                            self.last_ids[key] = entries[-1][0]
                            await self._on_entries(client, key, entries)
                    self._progress = time.monotonic()
                    self._redis_ok = True
                    backoff.reset()
                    episode.recovered()
                    if self.loop_error:
                        self.loop_error = ""
                except (*AIO_DOWN, redis.RedisError) as e:
                    # no answer (AIO_DOWN): reconnect, and take a fresh snapshot; an error reply
                    # (LOADING, BUSY, UNBLOCKED, NOAUTH, …): read again on the same connection
                    down = isinstance(e, AIO_DOWN)
                    _cancel(poller)
                    poller = None
                    self._polled = time.monotonic()
                    self.stats["redis_errors"] += 1
                    wait = backoff.next()
                    episode.failed(e, wait)
                    if down or reply_code(e) != "UNBLOCKED":  # a failover ended our blocking read: just read again
                        self._set_redis(False, words(e))
                    if down:
                        await _close(client)
                        client = None
                    self._progress = time.monotonic()
                    await _wait(stop, wait)
        finally:
            _cancel(poller)
            if client is not None:
                if stop.is_set():
                    try:
                        await client.hdel(self.keys.heartbeats, f"dashboard:{self.instance}")
                    except REDIS_ERRORS as e:
                        log.warning("could not remove this dashboard's heartbeat: %s", cause(e))
                await _close(client)

    def _set_redis(self, ok: bool, why: str = "Redis unreachable") -> None:
        self._redis_ok = ok
        if not ok:
            self._publish_mon([why], [why])

    def _publish_mon(self, reasons: list[str], everywhere: list[str]) -> None:
        """`everywhere`: the reasons that stop monitoring in every room (each tile says so);
        the others name their rooms through a clinic-wide alert."""
        self.mon = {"ok": not reasons, "reasons": reasons, "everywhere": everywhere, "ts": now_ms()}
        self.broadcast({"t": "mon", **self.mon})

    async def _snapshot(self, client: aioredis.Redis) -> None:
        """Full state from Redis (after a start or an outage); tabs get it as a new hello."""
        pipe = client.pipeline(transaction=False)
        for r in self.rooms:
            pipe.xrevrange(self.keys.vitals(r), count=1)
        pipe.xrevrange(self.keys.alerts, count=1)
        tips = await pipe.execute()
        for r, tip in zip(self.rooms, tips[:-1], strict=True):
            key = self.keys.vitals(r)
            self.last_ids[key] = _resume_from(self.last_ids.get(key), tip[0][0] if tip else "0-0")
        self.last_ids[self.keys.alerts] = tips[-1][0][0] if tips[-1] else "0-0"
        state = await self._in_thread(self._sync_snapshot)
        self.state = state
        for c in list(self.clients):
            self._send_to(c, self.hello(c.user, c.role))
        # the 15-minute sparklines are the one part that reads history (900 entries a room at
        # 1 Hz): filled after the tiles are up, room by room, off the push loop's thread
        if self._spark_task is not None:
            self._spark_task.cancel()
        self._spark_task = asyncio.create_task(self._fill_sparks())

    async def _fill_sparks(self) -> None:
        for room in self.rooms:
            try:
                since = now_ms() - SPARK_WINDOW_MS
                hist = await self._in_thread(self.data.history, room, since)
            except REDIS_DOWN:
                return  # the push loop notices the outage and snapshots again
            st = self.state.get(room)
            if st is None:
                continue
            fetched = {m: sparkline_points(hist, m, SPARK_BUCKET_S) for m in SPARK_METRICS}
            for m in SPARK_METRICS:  # keep the points the push added meanwhile
                last = fetched[m][-1][0] if fetched[m] else 0
                fetched[m] += [p for p in st["spark"][m] if p[0] > last]
            st["spark"] = fetched
            self.broadcast({"t": "spark", "room": room, "spark": fetched})

    def _sync_snapshot(self) -> dict[str, dict[str, Any]]:
        """Latest values from each room's summary (plus the entries after it), alerts, devices,
        sessions — no history scan; sparklines start empty (`_fill_sparks` fills them)."""
        now = now_ms()
        alerts = self.data.active_alerts(self.rooms)
        self.clinic = [a for a in alerts if a.get("room") == CLINIC]
        sessions = self.data.room_sessions()
        state: dict[str, dict[str, Any]] = {}
        for room in self.cfg.rooms:
            old = self.state.get(room.id) or self._empty_room()
            state[room.id] = {
                "latest": self.data.latest(room.id),
                "alerts": [a for a in alerts if a.get("room") == room.id],
                "devices": self._devices(room.id),
                "session": self._session_view(sessions.get(room.id), now),
                "spark": old["spark"],  # what we had (after an outage), until refilled
            }
        return state

    def rooms_view(self) -> list[dict[str, Any]]:
        """Per room, as /api/v1/rooms answers: latest values with their ts, device status,
        active alerts (the clinic-wide ones that name the room too), the open session's id."""
        out = []
        for r in self.cfg.rooms:
            st = self.state.get(r.id) or self._empty_room()
            clinic = [a for a in self.clinic if r.id in str(a.get("rooms") or "").split(",")]
            out.append({
                "id": r.id, "name": r.name or r.id,
                "latest": {m: {"value": x["v"], "ts": x["ts"], "dev": x["dev"]} for m, x in st["latest"].items()},
                "devices": {d: {"state": s.get("state", "unknown"), "last_ts": s.get("last_ts")}
                            for d, s in st["devices"].items()},
                "active_alerts": st["alerts"] + clinic,
                "session": (st["session"] or {}).get("id"),
            })
        return out

    def _devices(self, room: str) -> dict[str, dict[str, str]]:
        devs = [d.id for d in self.cfg.room(room).devices]
        status = self.data.device_status(devs) if devs else {}
        return {d: _device_view(s) for d, s in status.items()}

    @staticmethod
    def _session_view(s: dict[str, Any] | None, now: int) -> dict[str, Any] | None:
        if not s:
            return None
        return {"id": s.get("id"), "state": s.get("state"), "started_ms": s.get("started_ms"),
                "first_dose_ms": s.get("first_dose_ms"), "ready_ms": s.get("ready_ms"),
                "route": s.get("route"), "protocol": s.get("protocol"),
                "phase": session_phase(s, now).stage}

    def _dumps(self, msg: dict[str, Any]) -> str | None:
        """Strict JSON (a NaN or Infinity would break the browser's parser for the whole
        frame); None, counted and logged, for a message that cannot be sent."""
        try:
            return json.dumps(msg, separators=(",", ":"), allow_nan=False)
        except (ValueError, TypeError) as e:
            self.stats["unsendable"] += 1
            self._bad_record("messages", f"{msg.get('t')} not sent: {e}")
            return None

    def _send_to(self, c: Client, msg: dict[str, Any]) -> None:
        text = self._dumps(msg)
        if text is None:
            return
        try:
            c.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.clients.discard(c)
            self.stats["tabs_dropped"] += 1

    async def _on_entries(self, client: aioredis.Redis, key: str, entries: list) -> None:
        if key == self.keys.alerts:
            rooms = {f.get("room") for _i, f in entries if f.get("room") in self.state or f.get("room") == CLINIC}
            await self._guarded("active alerts", self._refresh_alerts(client, sorted(rooms)))  # type: ignore[arg-type]
            return
        room = key[len(self.keys.vitals("")):]
        st = self.state.get(room)
        if st is None:
            return
        rows = []
        for entry_id, f in entries:
            row = decode_vitals(f)
            if row is None:  # the engine refuses it too (and logs it); the push goes on
                self._bad_record("vitals entries", f"{room} {entry_id}: {dict(f)!r}"[:300])
                continue
            ts, dev, vals, flags = row
            self.stats["readings"] += 1
            for m, v in vals.items():
                cur = st["latest"].get(m)
                if cur is None or ts >= cur["ts"]:
                    st["latest"][m] = {"v": v, "ts": ts, "dev": dev}
            _spark_add(st["spark"], ts, vals)
            rows.append(row)
        # Normally one reading per room per read. After a stall (the loop or this process held
        # up, Redis slow) a read returns a room's backlog: coalesced into one message per room
        # with all its points (the latest values and the trend's), so a catch-up is at most one
        # message per room per read, never a burst beyond a tab's CLIENT_QUEUE_MAX.
        if len(rows) > 1 and self.broadcast({"t": "vb", "room": room, "rows": [list(r) for r in rows]}):
            return
        for ts, dev, vals, flags in rows:  # one reading (or a batch that is not strict JSON: each alone)
            self.broadcast({"t": "v", "room": room, "ts": ts, "dev": dev, "vals": vals, "flags": flags})

    def _bad_record(self, part: str, what: str) -> None:
        """Count an unreadable record the push skipped; log it once per episode."""
        self.stats["bad_records"] += 1
        self._parts.setdefault(part, Episode(f"push loop: {part}", log)).failed(f"unreadable, skipped: {what}",
                                                                                kind="unreadable")

    async def _guarded(self, part: str, work: Coroutine[Any, Any, None]) -> None:
        """Run one part of a poll; a malformed record in it (a device status or session field
        that does not parse, a broken alert record) skips that part this time, not the push.
        Redis failures propagate to the loop."""
        episode = self._parts.setdefault(part, Episode(f"push loop: {part}", log))
        try:
            await work
        except BAD_RECORD as e:
            self.stats["bad_records"] += 1
            episode.failed(f"unreadable record, part skipped ({type(e).__name__}: {e})"[:300], kind=type(e).__name__)
            return
        episode.recovered()

    async def _refresh_alerts(self, client: aioredis.Redis, rooms: list[str]) -> None:
        alerts = await self._in_thread(self.data.active_alerts, [r for r in rooms if r != CLINIC])
        for r in rooms:
            mine = [a for a in alerts if a.get("room") == r]
            have = self.clinic if r == CLINIC else self.state[r]["alerts"]
            if mine != have:
                if r == CLINIC:
                    self.clinic = mine
                else:
                    self.state[r]["alerts"] = mine
                self.broadcast({"t": "alerts", "room": r, "alerts": mine})

    async def _poll_and_housekeep(self, client: aioredis.Redis) -> None:
        if await master_moved(client):  # the old master may still be up: read the new one afresh
            raise redis.ConnectionError("Redis Sentinel names a new master")
        await self._poll(client)
        self._polled = time.monotonic()
        if time.monotonic() >= self._next_housekeeping:
            self._next_housekeeping = time.monotonic() + HOUSEKEEPING_S
            try:
                await self._in_thread(self._housekeeping)
            except REDIS_ERRORS as e:  # writes refused (OOM, READONLY): the push goes on
                log.warning("housekeeping skipped: %s", cause(e))

    async def _poll(self, client: aioredis.Redis) -> None:
        """Once a second: heartbeat (our write probe) → monitoring state, alerts, device
        status, sessions. Each read part stands alone: a malformed record skips only it."""
        now = now_ms()
        await self._probe(client, now)
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(self.keys.heartbeats)
        pipe.hgetall(self.keys.storage)
        beats, storage = await pipe.execute()
        self._publish_mon(*monitoring_view(self.cfg, redis_types.str_hash(beats), now, self.probe, self.info_cause,
                                           redis_types.str_hash(storage), self._statuses))
        await self._guarded("active alerts", self._refresh_alerts(client, [*self.rooms, CLINIC]))
        await self._guarded("device status", self._refresh_devices(client))
        await self._guarded("sessions", self._refresh_sessions(client, now))

    async def _probe(self, client: aioredis.Redis, now: int) -> None:
        """Write this process's heartbeat — also the probe of whether Redis takes writes. A
        refusal (OOM, READONLY, MISCONF…) is recorded with Redis's INFO, which says why;
        the reads go on (a replica or a full Redis still answers them)."""
        try:
            await client.hset(self.keys.heartbeats, f"dashboard:{self.instance}", str(now))
        except AIO_DOWN:
            raise
        except redis.RedisError as e:
            if self.probe.ok:
                log.warning("Redis refuses this dashboard's writes: %s", cause(e))
            self.probe = self.probe.after(now, reply_code(e), words(e), reply_text(e))
            try:
                refusal = refusal_from_info(await node_info_async(client, self.keys.alerts))
            except AIO_DOWN:
                raise
            except redis.RedisError:
                refusal = None
            self.info_cause = refusal[1] if refusal else None
            return
        if not self.probe.ok:
            log.info("Redis takes this dashboard's writes again (refused for %.1f s)",
                     self.probe.refused_for_ms(now) / 1000)
        self.probe, self.info_cause = WriteProbe(), None

    async def _refresh_devices(self, client: aioredis.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        devs = [(r.id, d.id) for r in self.cfg.rooms for d in r.devices]
        for _r, d in devs:
            pipe.hgetall(self.keys.device_status(d))
        statuses = await pipe.execute() if devs else []
        by_room: dict[str, dict[str, Any]] = {r: {} for r in self.rooms}
        self._statuses = {d: redis_types.str_hash(s) for (_r, d), s in zip(devs, statuses, strict=True)}
        for (r, d), s in zip(devs, statuses, strict=True):
            by_room[r][d] = _device_view(s)
        for r, devices in by_room.items():
            shown = _device_push(devices)
            if shown != _device_push(self.state[r]["devices"]):
                self.broadcast({"t": "dev", "room": r, "devices": shown})
            self.state[r]["devices"] = devices  # last_ts kept current for /api/v1/rooms

    async def _refresh_sessions(self, client: aioredis.Redis, now: int) -> None:
        open_ = redis_types.str_hash(await client.hgetall(self.keys.open_sessions))
        with_session = [r for r in self.rooms if r in open_]
        pipe = client.pipeline(transaction=False)
        for r in with_session:
            pipe.hgetall(self.keys.session(open_[r]))
        got = dict(zip(with_session, await pipe.execute() if with_session else [], strict=True))
        for r in self.rooms:
            h = got.get(r)
            view = self._session_view(decode_header(h) if isinstance(h, dict) and h else None, now)
            if view != self.state[r]["session"]:
                self.state[r]["session"] = view
                self.broadcast({"t": "sess", "room": r, "session": view})

    async def write_screen(self, screen_id: str, sound_on: bool, user: str, role: str) -> None:
        """A tab reports it is watching and whether its sound is on (read by the alert engine)."""
        try:
            await asyncio.to_thread(self.data.report_screen, screen_id, sound_on, user, role)
        except REDIS_ERRORS as e:  # unreachable, or writes refused: the screens say so already
            log.debug("could not record screen %s: %s", screen_id, cause(e))

    def _housekeeping(self) -> None:
        """Every HOUSEKEEPING_S (in a thread): write held audit summaries, drop screens that
        stopped reporting long ago (the engine ignores them anyway; this bounds the hash)."""
        audit.flush_held(self.data.client, self.keys)
        self.data.prune_screens(now_ms() - SCREEN_FORGET_S * 1000)


def _device_view(s: dict[str, str]) -> dict[str, Any]:
    return {"state": s.get("state", "unknown"), "last_ts": _opt_ms(s.get("last_ts")),
            "detail": s.get("detail", ""), "protocol": s.get("protocol", "")}


def _resume_from(last: str | None, tip: str) -> str:
    """Where a room's reads start after a (re)connect: where they stopped — the readings
    stored meanwhile (the loop held up until its Redis timeout fired, a dropped connection)
    reach the screens as one coalesced catch-up message per room, trend points included —
    but no further back than CATCHUP_MS before the stream's tip (the hello carries the
    latest values; a longer gap is not worth pushing point by point). At the tip on start."""
    if last is None or tip == "0-0":
        return tip
    try:
        last_id = tuple(int(x) for x in last.split("-"))
        floor = (max(0, int(tip.split("-")[0]) - CATCHUP_MS), 0)
    except ValueError:
        return tip
    return last if last_id >= floor else f"{floor[0]}-{floor[1]}"


def _device_push(devices: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A room's device status as pushed: without `last_ts`, which changes with every reading
    (a status message per room per second for nothing — the screens take a reading's age
    from the readings themselves). Pushed when the state, its detail or protocol changed."""
    return {d: {k: v for k, v in s.items() if k != "last_ts"} for d, s in devices.items()}


def _opt_ms(text: str | None) -> int | None:
    """A ms field of a status hash, or None when absent or unreadable (shown as unknown)."""
    try:
        return int(text or 0) or None
    except ValueError:
        return None


def _spark_add(spark: dict[str, list[list[float]]], ts: int, vals: dict[str, float]) -> None:
    bucket_ms = SPARK_BUCKET_S * 1000
    for m in SPARK_METRICS:
        if m not in vals:
            continue
        pts = spark[m]
        b = ts // bucket_ms * bucket_ms + bucket_ms // 2
        if pts and pts[-1][0] == b:
            pts[-1][1] = round((pts[-1][1] + vals[m]) / 2, 1)  # running blend within the bucket
        else:
            pts.append([b, vals[m]])
        cutoff = ts - SPARK_WINDOW_MS
        while pts and pts[0][0] < cutoff:
            pts.pop(0)


def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a task if there is one and it has not ended."""
    if task is not None and not task.done():
        task.cancel()


async def _close(client: aioredis.Redis | None) -> None:
    """Close a client whatever state its connection is in (None: nothing to close)."""
    if client is None:
        return
    try:
        await client.aclose()
    except REDIS_ERRORS:
        pass  # the connection is already gone


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


__all__ = ["Hub", "Client", "redis"]
