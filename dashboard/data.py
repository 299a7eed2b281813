"""The dashboard's reader: latest values, history, alerts, device status, heartbeats, sessions.

`Data` is the synchronous reader (and alert-action writer) used by pages, callbacks and the
JSON API; it also carries the Redis client that pages hand to the core's functions for
changes (see dashboard/app.py for every place that reaches Redis). The push loop
(dashboard/live.py) has its own `redis.asyncio` client but decodes entries with
`decode_vitals` here — codec.from_fields underneath, as in the alert engine and the
archive — so one reading looks the same on every path.

Alert actions go through monitor/alarms/actions.py (the alert engine's module), so a click,
an API call from a pager and the engine all change an alert the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis

from monitor.accounts import audit
from monitor.alarms import actions
from monitor.alarms.clinic import CLINIC
from monitor.alarms.store import LATEST_ID
from monitor.model.clock import now_ms
from monitor.model.codec import CodecError, from_fields
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.sessions import lifecycle
from monitor.sessions.records import get_session
from monitor.store import heartbeat, redis_cluster, redis_types
from monitor.store.redis_conn import REDIS_DOWN
from monitor.store.streams import read_range

PRIORITY_RANK = {"high": 0, "medium": 1, "low": 2}
NIBP_REQUESTS_MAX = 3
NIBP_REQUEST_TTL_S = 600
LATEST_SCAN_MAX = 500  # no summary yet (no engine ever ran): entries looked back at, at most
LATEST_TAIL_MAX = 2000  # stream entries after the summary's last id folded in, at most


VitalsRow = tuple[int, str, dict[str, float], list[str]]
"""(ts_ms, dev, values, flags) of one reading: the shape figures and the push messages use."""


def decode_vitals(fields: dict[str, str]) -> VitalsRow | None:
    """One vitals-stream entry as a VitalsRow, via codec.from_fields (the engine's and the
    archive's decoder too); None for an entry they refuse as well (pure)."""
    try:
        r = from_fields("", fields)
    except CodecError:
        return None
    return r.ts_ms, r.device, dict(r.values), sorted(r.flags)


def sort_alerts(alerts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts by priority (high first), then newest raised first."""
    return sorted(alerts, key=lambda a: (PRIORITY_RANK.get(a.get("priority", "low"), 3),
                                         -int(a.get("raised_ms") or 0)))


class Data:
    """Synchronous access to one clinic's keys for the dashboard."""

    def __init__(self, client: redis.Redis, keys: Keys, cfg: Config) -> None:
        self.client, self.keys, self.cfg = client, keys, cfg

    # --- readings ------------------------------------------------------------------------
    def latest(self, room: str) -> dict[str, dict[str, Any]]:
        """metric → {v, ts, dev}: the room's latest-value summary (`keys.room_latest`, kept by
        the alert engine with each batch it applies) plus the stream entries after the last
        id it folded in. Never a scan of history: without a summary (no engine has run yet)
        only the newest LATEST_SCAN_MAX entries are looked at."""
        summary = redis_types.str_hash(self.client.hgetall(self.keys.room_latest(room)))
        after = summary.get(LATEST_ID)
        if after:
            chunk = redis_types.entries(self.client.xrange(self.keys.vitals(room), min=f"({after}", max="+",
                                                           count=LATEST_TAIL_MAX))
            if len(chunk) == LATEST_TAIL_MAX:  # the engine is far behind: the newest entries too
                chunk += redis_types.entries(self.client.xrevrange(self.keys.vitals(room),
                                                                   count=LATEST_SCAN_MAX))[::-1]
        else:
            chunk = redis_types.entries(self.client.xrevrange(self.keys.vitals(room), count=LATEST_SCAN_MAX))[::-1]
        out: dict[str, dict[str, Any]] = {}
        for m, raw in summary.items():
            if m == LATEST_ID:
                continue
            try:
                v, ts, dev = json.loads(raw)
                out[m] = {"v": float(v), "ts": int(ts), "dev": str(dev)}
            except (ValueError, TypeError):
                continue
        for _id, f in chunk:
            row = decode_vitals(f)
            if row is None:
                continue
            ts, dev, values, _flags = row
            for m, v in values.items():
                if m not in out or ts >= out[m]["ts"]:
                    out[m] = {"v": v, "ts": ts, "dev": dev}
        return out

    def history(self, room: str, start_ms: int, end_ms: int | None = None) -> list[VitalsRow]:
        """Decoded readings of a room whose stream ids fall in [start_ms, end_ms] (malformed ones skipped)."""
        end = str(end_ms) if end_ms is not None else "+"
        entries = read_range(self.client, self.keys.vitals(room), str(start_ms), end, page=5000)
        return [row for _id, f in entries if (row := decode_vitals(f)) is not None]

    # --- devices, heartbeats --------------------------------------------------------------
    def device_status(self, devices: list[str]) -> dict[str, dict[str, str]]:
        """device → status hash (empty when never seen)."""
        pipe = self.client.pipeline(transaction=False)
        for d in devices:
            pipe.hgetall(self.keys.device_status(d))
        return dict(zip(devices, pipe.execute(), strict=True))

    def heartbeats(self) -> dict[str, int]:
        """role → newest heartbeat ms."""
        return heartbeat.newest_by_role(self.client, self.keys)

    def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return redis_cluster.ping(self.client, self.keys.heartbeats)
        except REDIS_DOWN:
            return False

    # --- alerts ----------------------------------------------------------------------------
    def active_alerts(self, rooms: list[str] | None = None) -> list[dict[str, Any]]:
        """Active (and latched) alerts of the rooms and the clinic-wide ones (room "*"), by
        priority then time; dismissed reminders are left out."""
        rooms = rooms if rooms is not None else [r.id for r in self.cfg.rooms]
        return sort_alerts(actions.active_alerts(self.client, self.keys, [*rooms, CLINIC]))

    def alert_events(self, since_ms: int = 0, count: int = 1000, room: str | None = None,
                     until_ms: int | None = None) -> list[dict[str, Any]]:
        """Alert events with stream ids in [since_ms, until_ms], oldest first."""
        chunk = redis_types.entries(self.client.xrange(self.keys.alerts, min=str(since_ms),
                                                       max=str(until_ms) if until_ms is not None else "+",
                                                       count=count))
        out = [{"id": i, **f} for i, f in chunk]
        return [e for e in out if room is None or e.get("room") == room]

    def acknowledge(self, alert_id: str, user: str) -> dict[str, Any]:
        """Acknowledge an alert as `user` (KeyError when unknown); returns its new state."""
        return actions.acknowledge(self.client, self.keys, alert_id, user)

    def reset(self, alert_id: str, user: str) -> dict[str, Any]:
        """Reset a latched alert whose condition ended (NotLatched while it is present)."""
        return actions.reset(self.client, self.keys, alert_id, user)

    def dismiss(self, alert_id: str, user: str) -> dict[str, Any]:
        """Dismiss a reminder (Refused for an alarm)."""
        return actions.dismiss(self.client, self.keys, alert_id, user)

    def unacknowledge(self, alert_id: str, user: str) -> dict[str, Any]:
        """Undo one's own acknowledge within actions.UNDO_S (Refused otherwise)."""
        return actions.unacknowledge(self.client, self.keys, alert_id, user)

    def pause_audio(self, alert_id: str, user: str, seconds: float | None = None) -> dict[str, Any]:
        """Pause an alert's audio as `user` (KeyError when unknown); returns its new state."""
        seconds = seconds if seconds is not None else self.cfg.alerts.pause_max_s
        return actions.pause_audio(self.client, self.keys, alert_id, user, seconds=seconds)

    # --- sessions --------------------------------------------------------------------------
    def open_sessions(self) -> dict[str, str]:
        """room → open session id."""
        return self.client.hgetall(self.keys.open_sessions)  # type: ignore[return-value]

    def session(self, sid: str) -> dict[str, Any] | None:
        """A session header (decoded), or None."""
        return get_session(self.client, self.keys, sid)

    def session_events(self, sid: str) -> list[dict[str, Any]]:
        """A session's events, oldest first."""
        return lifecycle.session_events(self.client, self.keys, sid)

    def room_sessions(self) -> dict[str, dict[str, Any]]:
        """room → its open session's header, for rooms that have one."""
        out = {}
        for room, sid in self.open_sessions().items():
            s = self.session(sid)
            if s:
                out[room] = s
        return out

    # --- writes other than alerts ----------------------------------------------------------
    def request_nibp(self, device: str, user: str) -> None:
        """Queue a "measure BP now" request for an NIBP device (the adapter pops it)."""
        key = self.keys.nibp_requests(device)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, json.dumps({"ts_ms": now_ms(), "user": user}))
        pipe.ltrim(key, 0, NIBP_REQUESTS_MAX - 1)  # repeated clicks: one measurement is enough
        pipe.expire(key, NIBP_REQUEST_TTL_S)  # a device that is off never inflates hours later
        pipe.execute()
        audit.record(self.client, self.keys, user, "nibp.measure_now", device=device)

    def report_screen(self, screen_id: str, sound_on: bool, user: str, role: str) -> None:
        """Record that a screen is watching (and whether its sound is on) right now."""
        self.client.hset(self.keys.screens, screen_id,
                         json.dumps({"ts_ms": now_ms(), "sound_on": bool(sound_on), "user": user, "role": role}))

    def prune_screens(self, older_than_ms: int) -> int:
        """Remove screens that last reported before `older_than_ms`; how many."""
        old = []
        for sid, raw in redis_types.str_hash(self.client.hgetall(self.keys.screens)).items():
            try:
                ts = int(json.loads(raw).get("ts_ms", 0))
            except (ValueError, TypeError, AttributeError):
                ts = 0
            if ts < older_than_ms:
                old.append(sid)
        if old:
            self.client.hdel(self.keys.screens, *old)
        return len(old)
