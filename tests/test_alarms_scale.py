"""The alert engine's batched, lease-fenced work on real Redis (monitor/alarms/engine.py, store.py).

- a new worker takes its fair share (about half with two) within two lease periods;
- a worker whose lease was taken cannot commit: its batched commit is refused per room,
  the rooms it still holds commit normally, and an alarm condition spanning the move is
  raised exactly once;
- an acknowledge that lands between the engine's read and its commit is kept, not overwritten;
- the work of a tick and of a poll takes a constant number of Redis round trips, whatever
  the number of rooms.
"""

from __future__ import annotations

import json

import pytest

from monitor.alarms import actions
from monitor.alarms.engine import HEARTBEAT_MS, Worker
from monitor.alarms.model import event_from_fields
from monitor.model.codec import to_fields
from monitor.model.readings import Reading
from monitor.store import heartbeat
from monitor.store.status import publish_status
from tests.configs import alarm_defaults, alarm_rule
from tests.waiting import wait_for

T0 = 1_795_813_200_000


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def rooms_cfg(make_config, n: int, ttl_s: float = 2, delay_s: float = 3):
    return make_config(
        rooms=[{"id": f"room-{i}", "devices": [
            {"id": f"mon-{i}", "protocol": "json", "transport": "mqtt", "topic": f"t/mon-{i}"}]} for i in range(n)],
        alarms=alarm_defaults(hr=alarm_rule(low=50, high=120, delay_s=delay_s)),
        alerts={"owner_ttl_s": ttl_s, "heartbeat_stale_s": 5})


def feed(rclient, keys, n: int, seconds: range, hr: float) -> None:
    pipe = rclient.pipeline(transaction=False)
    for s in seconds:
        for i in range(n):
            r = Reading(f"room-{i}", f"mon-{i}", T0 + s * 1000, {"hr": hr})
            pipe.xadd(keys.vitals(r.room), to_fields(r), id=f"{r.ts_ms}-*")  # received at its ts
    pipe.execute()


def drain(w: Worker) -> None:
    while w.poll(5):
        pass


def raised(rclient, keys) -> list[tuple[str, str]]:
    evs = [event_from_fields(f) for _id, f in rclient.xrange(keys.alerts)]
    return [(e.room, e.alert) for e in evs if e.event == "raised" and e.kind == "physiological"]


def owners(rclient, keys, n: int) -> list[str | None]:
    return rclient.mget([keys.room_owner(f"room-{i}") for i in range(n)])


def test_a_new_worker_takes_half_the_rooms_within_two_lease_periods(make_config, rclient, keys):
    n = 120
    cfg = rooms_cfg(make_config, n)
    clock = Clock(T0)
    a = Worker(cfg, rclient, keys, owner="wa", clock=clock)
    b = Worker(cfg, rclient, keys, owner="wb", clock=clock)
    a.housekeeping(clock.ms)
    assert len(a.rooms) == n  # alone: takes everything
    start, lease_ms = clock.ms, a.ttl_ms
    # b starts; both run their housekeeping every heartbeat period, as their loops do
    while len(b.rooms) < n // 2 and clock.ms - start <= 2 * lease_ms:
        clock.ms += HEARTBEAT_MS
        b.housekeeping(clock.ms)
        a.housekeeping(clock.ms)
    assert (len(a.rooms), len(b.rooms)) == (n // 2, n // 2), f"after {clock.ms - start} ms"
    assert clock.ms - start <= 2 * lease_ms
    # every room has exactly one owner, the one that evaluates it
    held = owners(rclient, keys, n)
    assert all(held[i] == ("wa" if f"room-{i}" in a.rooms else "wb") for i in range(n))
    assert not set(a.rooms) & set(b.rooms)
    # nobody flaps: more rounds move nothing
    for _ in range(3):
        clock.ms += HEARTBEAT_MS
        b.housekeeping(clock.ms)
        a.housekeeping(clock.ms)
    assert owners(rclient, keys, n) == held


def test_a_commit_after_the_lease_was_taken_is_refused_and_the_alarm_raised_once(make_config, rclient, keys):
    n = 6
    cfg = rooms_cfg(make_config, n, ttl_s=0.5)
    clock = Clock(T0)
    a = Worker(cfg, rclient, keys, owner="wa", clock=clock)
    a.housekeeping(clock.ms)
    assert len(a.rooms) == n
    feed(rclient, keys, n, range(0, 2), 80)
    feed(rclient, keys, n, range(2, 4), 130)  # breach began; the 3 s delay is not over
    drain(a)
    assert raised(rclient, keys) == []
    # a stalls (a long GC pause, a partition): its leases expire and b takes every room
    wait_for(lambda: not any(owners(rclient, keys, n)), 10, "a's leases expiring", interval_s=0.1)
    b = Worker(cfg, rclient, keys, owner="wb", clock=clock)
    clock.ms += 6000  # a's heartbeat is stale too: b's share is every room
    b.housekeeping(clock.ms)
    assert len(b.rooms) == n and set(owners(rclient, keys, n)) == {"wb"}
    feed(rclient, keys, n, range(4, 8), 130)  # the delay is over: every room's alarm is due
    # a wakes up still believing it owns the rooms: its batched commit is refused for each
    assert len(a.rooms) == n
    assert a.poll(5) == 0
    assert a.rooms == {} and raised(rclient, keys) == []
    drain(b)
    got = raised(rclient, keys)
    assert sorted(room for room, _alert in got) == [f"room-{i}" for i in range(n)], got  # once per room


def test_refused_rooms_do_not_hold_back_the_others_in_the_batch(make_config, rclient, keys):
    n = 4
    cfg = rooms_cfg(make_config, n, delay_s=0)
    clock = Clock(T0)
    a = Worker(cfg, rclient, keys, owner="wa", clock=clock)
    a.housekeeping(clock.ms)
    rclient.set(keys.room_owner("room-1"), "somebody-else")  # taken behind a's back
    feed(rclient, keys, n, range(0, 2), 130)
    drain(a)
    assert sorted(r for r, _a in raised(rclient, keys)) == ["room-0", "room-2", "room-3"]
    assert "room-1" not in a.rooms
    assert rclient.hget(keys.alarm_state("room-1"), "last_id") is None  # nothing of a's was written
    assert rclient.hget(keys.alarm_state("room-0"), "last_id") is not None


def test_an_acknowledge_between_read_and_commit_is_kept(make_config, rclient, keys):
    cfg = rooms_cfg(make_config, 1, delay_s=0)
    clock = Clock(T0)
    w = Worker(cfg, rclient, keys, owner="w1", clock=clock)
    w.housekeeping(clock.ms)
    feed(rclient, keys, 1, range(0, 1), 130)
    drain(w)
    [(_room, alert)] = raised(rclient, keys)
    # the worker's copy of the room's alerts is now older than Redis's: a nurse acknowledged
    actions.acknowledge(rclient, keys, alert, "nurse-1", now_ms=T0 + 500)
    feed(rclient, keys, 1, range(1, 3), 80)  # back to normal: the engine clears the alert
    drain(w)
    evs = [event_from_fields(f) for _id, f in rclient.xrange(keys.alerts)]
    assert [e.event for e in evs if e.alert == alert] == ["raised", "acknowledged", "cleared"]
    rec = json.loads(rclient.hget(keys.active_alerts("room-0"), alert))  # high priority latches
    assert (rec["state"], rec["acknowledged_by"]) == ("latched", "nurse-1")  # the ack was not overwritten


class Counting:
    """A Redis client wrapper counting round trips (commands sent alone, pipelines executed)."""

    def __init__(self, client) -> None:
        self.client, self.trips = client, 0

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if name == "pipeline":
            def pipeline(*a, **kw):
                pipe = attr(*a, **kw)
                execute = pipe.execute

                def counted(*ea, **ekw):
                    self.trips += 1
                    return execute(*ea, **ekw)
                pipe.execute = counted
                return pipe
            return pipeline
        if callable(attr) and name not in ("register_script",):
            def call(*a, **kw):
                self.trips += 1
                return attr(*a, **kw)
            return call
        return attr


@pytest.mark.parametrize("n", [5, 60])
def test_round_trips_do_not_grow_with_rooms(make_config, rclient, keys, n):
    cfg = rooms_cfg(make_config, n, delay_s=0)
    clock = Clock(T0)
    counted = Counting(rclient)
    w = Worker(cfg, counted, keys, owner="w1", clock=clock)  # type: ignore[arg-type]
    for i in range(n):
        publish_status(rclient, keys, f"mon-{i}", {"room": f"room-{i}", "state": "online", "last_ts": T0,
                                                   "since_ms": T0 - 1000})
    heartbeat.beat(rclient, keys, "ingest", "i1", T0)
    w.housekeeping(clock.ms)
    w.tick(clock.ms)
    feed(rclient, keys, n, range(0, 1), 130)  # every room raises an alarm
    counted.trips = 0
    assert w.poll(5) == n
    assert counted.trips == 2, "one XREAD, one pipelined commit"
    clock.ms += 500
    counted.trips = 0
    w.tick(clock.ms)
    # reads, commits, the clinic lease's action forwarding (cursor, entries)
    assert counted.trips <= 4
    clock.ms += HEARTBEAT_MS
    counted.trips = 0
    w.housekeeping(clock.ms)
    assert counted.trips == 1


def test_a_commit_whose_reply_was_lost_is_not_applied_twice(make_config, rclient, keys):
    """Two checks in the commit script each prevent it (the stored last id must be the one the
    commit continues from; the active alerts must be what it computed from): this fails only
    when both are removed."""
    import copy

    cfg = rooms_cfg(make_config, 2, delay_s=0)
    clock = Clock(T0)
    w = Worker(cfg, rclient, keys, owner="w1", clock=clock)
    w.housekeeping(clock.ms)
    feed(rclient, keys, 2, range(0, 2), 130)
    before = copy.deepcopy((w.rooms, w._active))
    drain(w)  # both rooms raise; then the connection drops before the replies arrive:
    w.rooms, w._active = before  # the worker knows nothing of those commits
    feed(rclient, keys, 2, range(2, 3), 130)
    drain(w)  # it evaluates the same readings again: the commits are refused, its state reloaded
    assert sorted(r for r, _a in raised(rclient, keys)) == ["room-0", "room-1"]  # once each
    feed(rclient, keys, 2, range(3, 5), 80)
    drain(w)
    evs = [event_from_fields(f) for _id, f in rclient.xrange(keys.alerts)]
    assert sorted((e.room, e.event) for e in evs if e.kind == "physiological") == [
        ("room-0", "cleared"), ("room-0", "raised"), ("room-1", "cleared"), ("room-1", "raised")]


def test_a_batch_without_transitions_is_fenced_too(make_config, rclient, keys):
    """Readings that change no alert commit without comparing the room's alerts (nothing
    written depends on them), but still only while the lease is this worker's: a worker that
    lost the room writes neither its condition state, last id nor latest values."""
    n = 2
    cfg = rooms_cfg(make_config, n)
    clock = Clock(T0)
    a = Worker(cfg, rclient, keys, owner="wa", clock=clock)
    a.housekeeping(clock.ms)
    feed(rclient, keys, n, range(0, 2), 80)
    drain(a)
    before = [(rclient.hgetall(keys.alarm_state(f"room-{i}")), rclient.hgetall(keys.room_latest(f"room-{i}")))
              for i in range(n)]
    assert all(state.get("last_id") and latest for state, latest in before)
    rclient.set(keys.room_owner("room-0"), "wb")  # taken behind a's back
    feed(rclient, keys, n, range(2, 4), 130)  # a breach begins: condition state, no transition yet
    assert a.poll(5) == 2  # room-1's two readings; room-0's refused
    assert "room-0" not in a.rooms
    assert (rclient.hgetall(keys.alarm_state("room-0")), rclient.hgetall(keys.room_latest("room-0"))) == before[0]
    state1 = rclient.hgetall(keys.alarm_state("room-1"))
    assert state1["last_id"] != before[1][0]["last_id"] and "p:mon-1:hr" in state1
    assert raised(rclient, keys) == []


def test_the_clinic_lease_holder_reads_every_device_once_a_tick_in_shares(make_config, rclient, keys, monkeypatch):
    """The holder of the clinic lease judges every device, also those of rooms another worker
    evaluates: it reads them a share per part of its tick, so that each is read once a tick
    (a device whose adapter stops writing its status is seen within a tick, and one that
    keeps writing never looks late)."""
    from monitor.alarms import engine

    monkeypatch.setattr(engine, "TICK_PART", 2)  # several parts with a few rooms
    n = 12
    cfg = rooms_cfg(make_config, n)
    clock = Clock(T0)
    a = Worker(cfg, rclient, keys, owner="wa", clock=clock)
    b = Worker(cfg, rclient, keys, owner="wb", clock=clock)

    def fresh(skip: str = "") -> None:
        heartbeat.beat(rclient, keys, "ingest", "i1", clock.ms)
        for i in range(n):
            if f"mon-{i}" != skip:
                publish_status(rclient, keys, f"mon-{i}", {"room": f"room-{i}", "state": "online",
                                                           "last_recv_ms": clock.ms, "updated_ms": clock.ms,
                                                           "since_ms": T0 - 1000})

    fresh()
    a.housekeeping(clock.ms)
    while len(b.rooms) < n // 2:  # b takes its half; a holds the clinic lease
        clock.ms += HEARTBEAT_MS
        b.housekeeping(clock.ms)
        a.housekeeping(clock.ms)
    assert a.holds_clinic and not b.holds_clinic and len(b.rooms) == n // 2
    other = sorted(b.rooms, key=lambda r: int(r.split("-")[1]))[-1]  # in the last share
    dev = f"mon-{other.split('-')[1]}"
    stale_ms = int(cfg.alerts.heartbeat_stale_s * 1000)
    for _ in range(2 * stale_ms // 500):  # well past the start-up grace, everything fresh
        clock.ms += 500
        fresh()
        a.tick(clock.ms)
    assert [f for _i, f in rclient.xrange(keys.alerts) if f["room"] == "*"] == []
    for _ in range(2 * stale_ms // 500):  # one adapter stops writing its device's status
        clock.ms += 500
        fresh(skip=dev)
        a.tick(clock.ms)
    clinic = [f for _i, f in rclient.xrange(keys.alerts) if f["room"] == "*"]
    assert [(f["event"], f["rooms"]) for f in clinic] == [("raised", other)], clinic
