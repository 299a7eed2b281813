"""Push: one async loop per dashboard process reads Redis and feeds every open browser tab.

The loop blocks on `redis.asyncio` XREAD over every room's vitals stream and the alert
stream, so a reading reaches the browsers as soon as it is stored — nothing is polled on a
tick. Once a second (between reads) it also checks heartbeats (NOT MONITORING), device
status and open sessions, and pushes only what changed. Each tab holds one WebSocket
(/ws/live); messages are small JSON objects (see docs/dashboard.md, "Push protocol"):

    hello   full state at connect: rooms (latest values, alerts, devices, session, sparkline),
            the clinic-wide alerts, monitoring state, the user, the rooms in config order
    v       one reading: room, ts, dev, vals, flags
    spark   a room's 15-minute sparkline, once filled after a start (from the stream)
    alerts  a room's active alerts (room "*": the clinic-wide ones), after any alert event
    dev     a room's device status, when it changed
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
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from dashboard.data import Data, decode_vitals
from dashboard.figures import sparkline_points
from monitor.accounts import audit
from monitor.alarms.actions import UNDO_S
from monitor.alarms.clinic import CLINIC
from monitor.alarms.technical import monitoring_state
from monitor.model.clock import now_ms
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.sessions.phase import session_phase
from monitor.sessions.records import decode_header
from monitor.store import redis_types
from monitor.store.heartbeat import instance_name
from monitor.store.redis_conn import REDIS_DOWN

log = logging.getLogger(__name__)

SPARK_WINDOW_MS = 15 * 60 * 1000
SPARK_BUCKET_S = 10
SPARK_METRICS = ("hr", "spo2")
CLIENT_QUEUE_MAX = 2000  # messages; a tab that falls this far behind is disconnected (it reconnects)
PRESENCE_FORGET_S = 600.0  # a screen id unreported this long no longer counts toward a sign-in's limit
SCREEN_FORGET_S = 600  # a `screens` entry unreported this long is removed
HOUSEKEEPING_S = 10.0
AIO_DOWN = REDIS_DOWN + (aioredis.ConnectionError, aioredis.TimeoutError)


def monitoring_problems(cfg: Config, beats_raw: dict[str, str], now: int) -> list[str]:
    """NOT MONITORING reasons from the raw heartbeats hash (Redis itself answered): the alert
    engine's own pure `monitoring_state`, so the screen and the engine agree."""
    return list(monitoring_state(beats_raw, now, cfg).problems)



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
        self.last_ids: dict[str, str] = {}
        self.instance = instance_name()
        self.stats = {"readings": 0, "messages": 0, "tabs_dropped": 0, "redis_errors": 0}
        self._redis_ok = False
        # live sockets and screen ids per sign-in (session or token digest): bounded
        self.sockets: dict[str, int] = {}
        self.presence: dict[str, dict[str, float]] = {}
        self._next_housekeeping = 0.0
        self._spark_task: asyncio.Task[None] | None = None

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
        c.queue.put_nowait(json.dumps(self.hello(user, role)))
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

    def broadcast(self, msg: dict[str, Any]) -> None:
        """Queue one message for every tab (a tab too far behind is dropped and reconnects)."""
        text = json.dumps(msg, separators=(",", ":"))
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

    # --- the loop --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Read Redis until `stop` is set; survive Redis outages (and say so)."""
        client: aioredis.Redis | None = None
        next_poll = 0.0
        while not stop.is_set():
            try:
                if client is None:
                    client = aioredis.Redis.from_url(self.redis_url, decode_responses=True,
                                                     socket_connect_timeout=1, socket_timeout=3)
                    await self._snapshot(client)
                    self._set_redis(True)
                    next_poll = 0.0
                if time.monotonic() >= next_poll:
                    await self._poll(client)
                    next_poll = time.monotonic() + 1.0
                if time.monotonic() >= self._next_housekeeping:
                    self._next_housekeeping = time.monotonic() + HOUSEKEEPING_S
                    try:
                        await asyncio.to_thread(self._housekeeping)
                    except redis.ResponseError as e:  # a bad reply must not stop the push loop
                        log.error("housekeeping failed: %s", e)
                streams = dict(self.last_ids)
                resp = await client.xread(redis_types.stream_ids(streams), block=500, count=1000)
                for key, entries in redis_types.xread_entries(resp) or []:
                    if entries:
                        self.last_ids[key] = entries[-1][0]
                        await self._on_entries(client, key, entries)
            except AIO_DOWN as e:
                self.stats["redis_errors"] += 1
                if self._redis_ok:
                    log.warning("Redis unreachable: %s", e)
                self._set_redis(False)
                if client is not None:
                    try:
                        await client.aclose()
                    except AIO_DOWN:
                        pass
                client = None
                await _wait(stop, 0.5)
        if client is not None:
            try:
                await client.hdel(self.keys.heartbeats, f"dashboard:{self.instance}")
                await client.aclose()
            except AIO_DOWN:
                pass

    def _set_redis(self, ok: bool) -> None:
        self._redis_ok = ok
        if not ok:
            self._publish_mon(["Redis unreachable"], ["Redis unreachable"])

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
            self.last_ids[self.keys.vitals(r)] = tip[0][0] if tip else "0-0"
        self.last_ids[self.keys.alerts] = tips[-1][0][0] if tips[-1] else "0-0"
        state = await asyncio.to_thread(self._sync_snapshot)
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
                hist = await asyncio.to_thread(self.data.history, room, since)
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

    def _send_to(self, c: Client, msg: dict[str, Any]) -> None:
        try:
            c.queue.put_nowait(json.dumps(msg, separators=(",", ":")))
        except asyncio.QueueFull:
            self.clients.discard(c)
            self.stats["tabs_dropped"] += 1

    async def _on_entries(self, client: aioredis.Redis, key: str, entries: list) -> None:
        if key == self.keys.alerts:
            rooms = {f.get("room") for _i, f in entries if f.get("room") in self.state or f.get("room") == CLINIC}
            await self._refresh_alerts(client, sorted(rooms))  # type: ignore[arg-type]
            return
        room = key[len(self.keys.vitals("")):]
        st = self.state.get(room)
        if st is None:
            return
        for _id, f in entries:
            row = decode_vitals(f)
            if row is None:
                continue  # the engine refuses it too (and logs it)
            ts, dev, vals, flags = row
            self.stats["readings"] += 1
            for m, v in vals.items():
                cur = st["latest"].get(m)
                if cur is None or ts >= cur["ts"]:
                    st["latest"][m] = {"v": v, "ts": ts, "dev": dev}
            _spark_add(st["spark"], ts, vals)
            self.broadcast({"t": "v", "room": room, "ts": ts, "dev": dev, "vals": vals, "flags": flags})

    async def _refresh_alerts(self, client: aioredis.Redis, rooms: list[str]) -> None:
        alerts = await asyncio.to_thread(self.data.active_alerts, [r for r in rooms if r != CLINIC])
        for r in rooms:
            mine = [a for a in alerts if a.get("room") == r]
            have = self.clinic if r == CLINIC else self.state[r]["alerts"]
            if mine != have:
                if r == CLINIC:
                    self.clinic = mine
                else:
                    self.state[r]["alerts"] = mine
                self.broadcast({"t": "alerts", "room": r, "alerts": mine})

    async def _poll(self, client: aioredis.Redis) -> None:
        """Once a second: heartbeats → monitoring state, device status, sessions, alerts."""
        now = now_ms()
        await client.hset(self.keys.heartbeats, f"dashboard:{self.instance}", str(now))
        beats_raw = redis_types.str_hash(await client.hgetall(self.keys.heartbeats))
        mon = monitoring_state(beats_raw, now, self.cfg)
        self._publish_mon(list(mon.problems), list(mon.engine_problems))
        await self._refresh_alerts(client, [*self.rooms, CLINIC])
        # device status
        pipe = client.pipeline(transaction=False)
        devs = [(r.id, d.id) for r in self.cfg.rooms for d in r.devices]
        for _r, d in devs:
            pipe.hgetall(self.keys.device_status(d))
        statuses = await pipe.execute() if devs else []
        by_room: dict[str, dict[str, Any]] = {r: {} for r in self.rooms}
        for (r, d), s in zip(devs, statuses, strict=True):
            by_room[r][d] = _device_view(s)
        for r, devices in by_room.items():
            if devices != self.state[r]["devices"]:
                self.state[r]["devices"] = devices
                self.broadcast({"t": "dev", "room": r, "devices": devices})
        # sessions
        open_ = redis_types.str_hash(await client.hgetall(self.keys.open_sessions))
        pipe = client.pipeline(transaction=False)
        for r in self.rooms:
            pipe.hgetall(self.keys.session(open_[r])) if r in open_ else pipe.echo("")
        heads = await pipe.execute()
        for r, h in zip(self.rooms, heads, strict=True):
            view = self._session_view(decode_header(h) if isinstance(h, dict) and h else None, now)
            if view != self.state[r]["session"]:
                self.state[r]["session"] = view
                self.broadcast({"t": "sess", "room": r, "session": view})

    async def write_screen(self, screen_id: str, sound_on: bool, user: str, role: str) -> None:
        """A tab reports it is watching and whether its sound is on (read by the alert engine)."""
        try:
            await asyncio.to_thread(self.data.report_screen, screen_id, sound_on, user, role)
        except REDIS_DOWN as e:
            log.warning("could not record screen %s: %s", screen_id, e)

    def _housekeeping(self) -> None:
        """Every HOUSEKEEPING_S (in a thread): write held audit summaries, drop screens that
        stopped reporting long ago (the engine ignores them anyway; this bounds the hash)."""
        audit.flush_held(self.data.client, self.keys)
        self.data.prune_screens(now_ms() - SCREEN_FORGET_S * 1000)


def _device_view(s: dict[str, str]) -> dict[str, Any]:
    return {"state": s.get("state", "unknown"), "last_ts": int(s.get("last_ts") or 0) or None,
            "detail": s.get("detail", ""), "protocol": s.get("protocol", "")}


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


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


__all__ = ["Hub", "Client", "redis"]
