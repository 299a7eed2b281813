"""The dashboard's push loop (dashboard/live.py Hub) never dies and never looks live when it
is not: Redis error replies (OOM, READONLY, BUSY, NOAUTH, LOADING, CLIENT UNBLOCK … ERROR),
malformed entries and records, a crash inside the loop and a loop that hangs.

The Hub runs in its own event loop in a thread, as in the dashboard process; a subscribed
tab's queue is drained into a list, so the tests see exactly what a browser would receive.
Faults are real, on a redis-server of our own (tests/fault_support.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dashboard import live
from dashboard.data import Data
from dashboard.live import Hub
from monitor.model.clock import now_ms
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.store import heartbeat
from monitor.store.redis_conn import connect
from monitor.store.status import publish_status
from tests.configs import config_mapping, parsed, room_entry, serial_device
from tests.fault_support import FAULTS, unblock_xread
from tests.servers import RedisProc
from tests.waiting import wait_for


def make_cfg(url: str, tmp_path: Path) -> Config:
    return parsed(config_mapping("t-" + uuid.uuid4().hex[:8], redis_url=url, data_dir=tmp_path / "data",
                                 rooms=[room_entry("room-1", serial_device("mon-1"))]))


class HubRun:
    """A Hub in its own event loop thread; `msgs` is what one subscribed tab received."""

    def __init__(self, cfg: Config, url: str) -> None:
        self.keys = Keys(cfg.clinic.id)
        self.hub = Hub(cfg, self.keys, url, Data(connect(url, timeout_s=2.0), self.keys, cfg))
        self.msgs: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)
        self.feeder = connect(url)
        self.beats_stop = threading.Event()
        self.beats = threading.Thread(target=self._beats, daemon=True)

    async def _main(self) -> None:
        self.stop_event = asyncio.Event()
        tab = self.hub.subscribe("nina", "nurse")
        runner = asyncio.create_task(self.hub.run(self.stop_event))
        while not self.stop_event.is_set():
            try:
                text = await asyncio.wait_for(tab.queue.get(), 0.2)
            except TimeoutError:
                continue
            with self.lock:
                self.msgs.append(json.loads(text, parse_constant=_not_json))  # as strict as a browser
        await runner

    def _beats(self) -> None:
        """The alert engine's and ingest's heartbeats (writes refused during a fault: skipped)."""
        while not self.beats_stop.wait(0.5):
            try:
                for role in ("alerts", "ingest"):
                    heartbeat.beat(self.feeder, self.keys, role, "test", now_ms())
                publish_status(self.feeder, self.keys, "mon-1", {"room": "room-1", "state": "online",
                                                                  "last_ts": now_ms(), "since_ms": now_ms()})
            except (redis.RedisError, OSError):
                pass

    def start(self) -> HubRun:
        self.beats.start()
        self.thread.start()
        wait_for(lambda: self.last_mon().get("ok"), 15, "monitoring ok")
        return self

    def close(self) -> None:
        self.beats_stop.set()
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)
        self.beats.join(5)
        self.feeder.close()

    def got(self, t: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.msgs if m.get("t") == t]

    def last_mon(self) -> dict[str, Any]:
        mons = self.got("mon")
        return mons[-1] if mons else {}

    def reading(self, **vals: Any) -> int:
        ts = now_ms()
        self.feeder.xadd(self.keys.vitals("room-1"), {"ts": str(ts), "dev": "mon-1",
                                                      **{k: str(v) for k, v in vals.items()}})
        return ts

    def pushed(self, ts: int) -> bool:
        """A reading labelled `ts` reached the tab: alone ("v") or in a room's catch-up ("vb")."""
        return (any(m["ts"] == ts for m in self.got("v"))
                or any(row[0] == ts for m in self.got("vb") for row in m["rows"]))


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON: a browser's JSON.parse would fail on this frame")


@pytest.fixture
def hub_run(fault_redis: RedisProc, tmp_path: Path) -> Iterator[HubRun]:
    run = HubRun(make_cfg(fault_redis.url, tmp_path), fault_redis.url).start()
    yield run
    run.close()


EXPECTED = {
    "oom": "readings are not being stored: Redis out of memory",
    "readonly": "readings are not being stored: Redis is a read-only replica",
    "busy": "Redis is blocked by a long-running script",
    "noauth": "Redis refused our credentials",
    "loading": "Redis is loading its dataset",
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_push_loop_survives_error_replies_and_says_why(fault: str, hub_run: HubRun, fault_redis: RedisProc) -> None:
    before = hub_run.reading(hr=71)
    wait_for(lambda: hub_run.pushed(before), 10, "a reading pushed before the fault")
    with FAULTS[fault](fault_redis):
        mon = wait_for(lambda: next((m for m in reversed(hub_run.got("mon"))
                                     if not m["ok"] and EXPECTED[fault] in " ".join(m["reasons"])), None),
                       15, f"NOT MONITORING naming {fault}")
        assert len(mon["reasons"]) == 1, mon  # one cause, not its consequences too
        assert hub_run.hub.loop_problem() is None  # the loop itself is fine: it is Redis
    wait_for(lambda: hub_run.last_mon().get("ok"), 20, "monitoring again after the fault")
    after = hub_run.reading(hr=72)
    wait_for(lambda: hub_run.pushed(after), 10, "a reading pushed after the fault")
    assert hub_run.hub.stats["loop_failures"] == 0 and hub_run.hub.loop_restarts == 0


def test_blocked_read_ended_by_failover_or_client_unblock(hub_run: HubRun, fault_redis: RedisProc) -> None:
    for _ in range(3):
        unblock_xread(fault_redis)
    ts = hub_run.reading(spo2=97)
    wait_for(lambda: hub_run.pushed(ts), 10, "a reading pushed after the unblocks")
    assert hub_run.last_mon().get("ok") and hub_run.hub.stats["loop_failures"] == 0


def test_malformed_entries_and_records_do_not_stop_the_push(hub_run: HubRun) -> None:
    k, f = hub_run.keys, hub_run.feeder
    for bad in ({"ts": "not-a-time", "dev": "mon-1", "hr": "70"}, {"ts": "1e3", "dev": "mon-1"},
                {"ts": "99999999999999999999999", "dev": "mon-1", "hr": "70"},
                {"ts": str(now_ms()), "dev": "mon-1", "hr": "nan"},
                {"ts": str(now_ms()), "dev": "mon-1", "spo2": "1e999"}, {"ts": str(now_ms()), "hr": "70"}):
        f.xadd(k.vitals("room-1"), bad)
    f.hset(k.device_status("mon-1"), "last_ts", "yesterday")  # a device status that does not parse
    f.hset(k.open_sessions, "room-1", "s-bad")
    f.hset(k.session("s-bad"), mapping={"id": "s-bad", "room": "room-1", "started_ms": "soon"})
    f.hset(k.active_alerts("room-1"), "broken", "{not json")
    good = hub_run.reading(hr=66)
    wait_for(lambda: hub_run.pushed(good), 10, "the good reading after the bad ones")
    assert all(m["vals"] == {"hr": 66.0} for m in hub_run.got("v") if m["ts"] == good)
    wait_for(lambda: hub_run.hub.stats["bad_records"] >= 6, 10, "the bad records counted")
    # a tab opened now still gets its full state (a NaN in it would make every hello unsendable)
    assert hub_run.hub._dumps(hub_run.hub.hello("late", "nurse")) is not None
    assert hub_run.hub.state["room-1"]["latest"]["hr"]["v"] == 66.0
    f.delete(k.active_alerts("room-1"))
    f.hset(k.device_status("mon-1"), "last_ts", str(now_ms()))
    f.hdel(k.open_sessions, "room-1")
    later = hub_run.reading(hr=67)
    wait_for(lambda: hub_run.pushed(later), 10, "readings keep flowing")
    assert hub_run.hub.stats["loop_failures"] == 0 and hub_run.last_mon().get("ok")


def test_a_crashed_push_loop_is_reported_and_restarted(hub_run: HubRun, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Hub._on_entries
    crashes = {"n": 0}

    async def crash_once(self: Hub, client: Any, key: str, entries: list) -> None:
        if crashes["n"] == 0:
            crashes["n"] += 1
            raise RuntimeError("a bug in the push loop")
        await real(self, client, key, entries)

    monkeypatch.setattr(Hub, "_on_entries", crash_once)
    hub_run.reading(hr=80)  # this one meets the bug
    mon = wait_for(lambda: next((m for m in hub_run.got("mon")
                                 if "live updates of this dashboard stopped" in " ".join(m["reasons"])), None),
                   10, "the screens told the push loop stopped")
    assert "RuntimeError: a bug in the push loop" in mon["reasons"][0] and not mon["ok"]
    wait_for(lambda: hub_run.hub.loop_restarts == 1, 10, "the loop started again")
    ts = hub_run.reading(hr=81)
    wait_for(lambda: hub_run.pushed(ts), 10, "readings pushed after the restart")
    wait_for(lambda: hub_run.last_mon().get("ok"), 10, "monitoring again")
    assert hub_run.hub.loop_problem() is None


def test_a_stuck_push_loop_is_reported_then_restarted(hub_run: HubRun, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "STALL_S", 1.5)
    monkeypatch.setattr(live, "RESTART_STALL_S", 4.0)
    real = Hub._poll
    hung = {"n": 0}

    async def hang_once(self: Hub, client: Any) -> None:
        if hung["n"] == 0:
            hung["n"] += 1
            await asyncio.Event().wait()  # an await that never returns
        await real(self, client)

    monkeypatch.setattr(Hub, "_poll", hang_once)
    mon = wait_for(lambda: next((m for m in hub_run.got("mon")
                                 if "live updates of this dashboard stalled" in " ".join(m["reasons"])), None),
                   10, "the screens told the push loop stalled")
    assert not mon["ok"]
    wait_for(lambda: hub_run.hub.loop_restarts == 1, 15, "the stuck loop cancelled and started again")
    ts = hub_run.reading(hr=82)
    wait_for(lambda: hub_run.pushed(ts), 10, "readings pushed after the restart")
    wait_for(lambda: hub_run.last_mon().get("ok"), 10, "monitoring again")


def test_a_live_ingest_that_cannot_store_is_not_monitoring_with_its_cause(hub_run: HubRun) -> None:
    """Redis takes the dashboard's writes but ingest's readings wait (its storage record
    says so, e.g. its account lacks permission): NOT MONITORING with ingest's own cause."""
    from monitor.model.storage import StorageState

    st = StorageState(state="failing", cause="Redis user lacks permission to write (NOPERM no permissions)",
                      code="noperm", since_ms=now_ms() - 9000, pending=40, oldest_pending_ms=now_ms() - 8000)
    hub_run.feeder.hset(hub_run.keys.storage, "ingest:test", st.to_json())  # "test": HubRun's live ingest
    mon = wait_for(lambda: next((m for m in reversed(hub_run.got("mon"))
                                 if "readings are not being stored" in " ".join(m["reasons"])), None),
                   10, "NOT MONITORING naming ingest's cause")
    assert not mon["ok"] and "Redis user lacks permission to write" in mon["reasons"][0]
    assert mon["reasons"][0] in mon["everywhere"]
    hub_run.feeder.hset(hub_run.keys.storage, "ingest:test", StorageState().to_json())
    wait_for(lambda: hub_run.last_mon().get("ok"), 10, "monitoring once ingest stores again")
    # a record of an ingest that is not alive (no fresh heartbeat) says nothing by itself
    hub_run.feeder.hset(hub_run.keys.storage, "ingest:gone", st.to_json())
    ts = hub_run.reading(hr=70)
    wait_for(lambda: hub_run.pushed(ts), 10, "a reading pushed")
    assert hub_run.last_mon().get("ok")


def test_device_status_pushed_on_change_not_every_second(hub_run: HubRun) -> None:
    """The device's last_ts changes with every reading (here every 0.5 s): no `dev` message for
    that; one when its state changes. (Break it: compare the views with last_ts again.)"""
    start = len(hub_run.got("mon"))
    wait_for(lambda: len(hub_run.got("mon")) >= start + 1, 5, "a poll")
    devs = len(hub_run.got("dev"))
    wait_for(lambda: len(hub_run.got("mon")) >= start + 5, 10, "four more polls, last_ts changing meanwhile")
    assert len(hub_run.got("dev")) == devs, hub_run.got("dev")[devs:]
    hub_run.beats_stop.set()
    hub_run.beats.join(5)
    publish_status(hub_run.feeder, hub_run.keys, "mon-1", {"room": "room-1", "state": "silent", "detail": "no data",
                                                             "last_ts": now_ms() - 30_000, "since_ms": now_ms()})
    msg = wait_for(lambda: next((m for m in hub_run.got("dev")[devs:]), None), 10, "the state change pushed")
    assert msg["devices"]["mon-1"]["state"] == "silent" and "last_ts" not in msg["devices"]["mon-1"]


@pytest.mark.parametrize("dropped", [False, True], ids=["stall", "stall-and-reconnect"])
def test_catch_up_after_a_stall_is_coalesced_per_room(dropped: bool, fault_redis: RedisProc, tmp_path: Path) -> None:
    """300 rooms: the push loop held up while 8 readings a room (2,400, beyond a tab's
    CLIENT_QUEUE_MAX) are stored; afterwards the tab gets every reading — one message per
    room, not a burst — and is not disconnected. `dropped`: meanwhile its Redis connection
    is killed too, so it reconnects (and snapshots) before reading on: the readings stored
    in between still reach the tab. (Break it: send the backlog as single `v`s; or start
    reads at the streams' tips after a reconnect.)"""
    rooms = [room_entry(f"room-{i}", serial_device(f"mon-{i}")) for i in range(1, 301)]
    cfg = parsed(config_mapping("t-" + uuid.uuid4().hex[:8], redis_url=fault_redis.url, data_dir=tmp_path / "data",
                                rooms=rooms))
    run = HubRun(cfg, fault_redis.url).start()
    try:
        started, release = threading.Event(), threading.Event()

        def stall() -> None:  # the loop's thread held up, as by a slow request run inline
            started.set()
            release.wait(20)

        run.loop.call_soon_threadsafe(stall)
        assert started.wait(10)
        per_room = 8
        pipe = run.feeder.pipeline(transaction=False)
        for k in range(per_room):
            for i in range(1, 301):
                pipe.xadd(run.keys.vitals(f"room-{i}"), {"ts": str(now_ms() + k), "dev": f"mon-{i}", "hr": str(60 + k)})
        pipe.execute()
        if dropped:  # the loop's blocked read: its connection gone, as after a timeout or a network blip
            admin = fault_redis.admin()
            for c in admin.client_list():
                if c.get("cmd") == "xread":
                    admin.client_kill_filter(_id=c["id"])
        release.set()

        def received() -> int:
            return len(run.got("v")) + sum(len(m["rows"]) for m in run.got("vb"))

        wait_for(lambda: received() >= 300 * per_room, 20, "every reading of the backlog on the tab")
        assert run.hub.stats["tabs_dropped"] == 0
        assert len(run.got("vb")) + len(run.got("v")) <= 300 * 2  # a message or two a room, not eight
        room7 = [r[2]["hr"] for m in run.got("vb") if m["room"] == "room-7" for r in m["rows"]]
        room7 += [m["vals"]["hr"] for m in run.got("v") if m["room"] == "room-7"]
        assert room7 == [60 + k for k in range(per_room)]  # every point, in order (the trend's too)
    finally:
        run.close()
