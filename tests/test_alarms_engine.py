"""The engine against a real Redis, in-process, with an injected clock (no sleeping).

Covers: readings → raised/cleared events and records, acknowledge / pause / reset actions and
their audit entries, pause expiry and escalation through the engine, a hand-seeded session
(limits override + reminders), device silence, degraded monitoring, lease fencing.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from monitor.accounts import audit
from monitor.alarms import actions
from monitor.alarms.engine import Worker
from monitor.alarms.evaluate import Book
from monitor.alarms.model import AlertEvent, event_from_fields
from monitor.alarms.outbound import DEST_MQTT, Routes
from monitor.alarms.store import LostOwnership, commit, load_state
from monitor.model.codec import to_fields
from monitor.model.readings import Reading
from monitor.store import heartbeat
from monitor.store.status import publish_status
from tests.configs import alarm_defaults, alarm_rule
from tests.waiting import wait_for

T0 = 1_795_813_200_000


class Clock:
    """A settable clock in ms."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


ROUTES = Routes("vw-test/alerts")


class Recorder:
    """What the engine enqueued for the outbound channel (the pager outbox in Redis)."""

    def __init__(self, client, keys) -> None:
        self.client, self.keys = client, keys

    @property
    def sent(self) -> list[tuple[str, str, int | None]]:
        """(event, alert, tier) of every event message, in order (the event topic's copy)."""
        out = []
        for _id, f in self.client.xrange(self.keys.outbox(DEST_MQTT)):
            if json.loads(f["meta"])["topic"] == ROUTES.topic:
                body = json.loads(f["body"])
                out.append((body["event"], body["alert"], body["tier"]))
        return out

    @property
    def follow_ups(self) -> list[SimpleNamespace]:
        """People's actions also put on the page topic (not as pages), oldest first."""
        out = []
        for _id, f in self.client.xrange(self.keys.outbox(DEST_MQTT)):
            body = json.loads(f["body"])
            if json.loads(f["meta"])["topic"] == ROUTES.page_topic and not body["page"]:
                out.append(SimpleNamespace(**body))
        return out


@pytest.fixture
def setup(make_config, rclient, keys):
    cfg = make_config(
        rooms=[{"id": "room-1", "devices": [
                    {"id": "oxi-1", "protocol": "masimo-ascii", "transport": "serial", "port": "/dev/null"}]},
               {"id": "room-2", "devices": [
                    {"id": "oxi-2", "protocol": "nonin-df7", "transport": "serial", "port": "/dev/null"}]}],
        alarms=alarm_defaults(spo2=alarm_rule(low=90, delay_s=3), hr=alarm_rule(low=50, high=120, priority="medium")),
        alerts={"escalate_after_s": 60, "owner_ttl_s": 2})
    clock = Clock(T0)
    rec = Recorder(rclient, keys)
    w = Worker(cfg, rclient, keys, owner="w1", outbound=ROUTES, clock=clock)
    # devices are online and fresh unless a test says otherwise
    for dev, room in (("oxi-1", "room-1"), ("oxi-2", "room-2")):
        publish_status(rclient, keys, dev, {"room": room, "state": "online", "last_ts": T0, "since_ms": T0 - 1000})
    heartbeat.beat(rclient, keys, "ingest", "i1", T0)
    w.housekeeping(T0)
    assert set(w.rooms) == {"room-1", "room-2"}
    return cfg, w, clock, rec


def feed(rclient, keys, room: str, dev: str, start_s: float, values: list[float | None], metric="spo2",
         flags=()):
    for i, v in enumerate(values):
        vals = {metric: v} if v is not None else {}
        r = Reading(room, dev, T0 + int((start_s + i) * 1000), vals, frozenset(flags))
        # stored as received at its ts: the engine measures delays on the entry id. One older
        # than the stream's newest entry arrives late (a spool replay): stored after it, with
        # its receive time in `rx`, as the writer does
        fields, entry_ms = to_fields(r), r.ts_ms
        top = rclient.xrevrange(keys.vitals(room), count=1)
        if top and int(top[0][0].split("-")[0]) >= r.ts_ms:
            fields, entry_ms = {**fields, "rx": str(r.ts_ms)}, int(top[0][0].split("-")[0])
        rclient.xadd(keys.vitals(room), fields, id=f"{entry_ms}-*")


def events(rclient, keys, kind=None):
    out = [event_from_fields(f) for _id, f in rclient.xrange(keys.alerts)]
    return [e for e in out if kind is None or e.kind == kind]


def drain(w: Worker):
    while w.poll(5):
        pass


def refresh(rclient, keys, clock):
    """Keep devices fresh and ingest alive at the clock's time."""
    for dev in ("oxi-1", "oxi-2"):
        publish_status(rclient, keys, dev, {"last_ts": clock.ms})
    heartbeat.beat(rclient, keys, "ingest", "i1", clock.ms)


def test_sustained_breach_ack_pause_escalate_latch_reset(setup, rclient, keys):
    cfg, w, clock, rec = setup
    feed(rclient, keys, "room-1", "oxi-1", 0, [97, 88, 88, 88, 88, 88])
    drain(w)
    phys = events(rclient, keys, "physiological")
    assert [(e.event, e.metric, e.priority) for e in phys] == [("raised", "spo2", "high")]
    aid = phys[0].alert
    assert aid == f"room-1.oxi-1.spo2.{T0 + 1000}"
    (a,) = actions.active_alerts(rclient, keys, ["room-1"])
    assert a["state"] == "active" and a["value"] == 88 and a["limit"] == 90 and a["escalated"] is False

    # pause audio: event, then the engine ends the pause when it runs out
    st = actions.pause_audio(rclient, keys, aid, "nurse-a", seconds=300, now_ms=T0 + 10_000)
    assert st["paused_until_ms"] == T0 + 130_000  # clipped to 2 min
    clock.ms = T0 + 59_000
    refresh(rclient, keys, clock)
    w.tick(clock.ms)
    assert [e.event for e in events(rclient, keys, "physiological")][-1] == "audio_paused"
    # not acknowledged within escalate_after_s (60 s): escalated, and paged as tier 2
    clock.ms = T0 + 61_000
    refresh(rclient, keys, clock)
    w.tick(clock.ms)
    assert [e.event for e in events(rclient, keys, "physiological")][-1] == "escalated"
    assert ("escalated", aid, 2) in rec.sent
    assert actions.active_alerts(rclient, keys, ["room-1"])[0]["escalated"] is True
    clock.ms = T0 + 131_000
    refresh(rclient, keys, clock)
    w.tick(clock.ms)
    assert [e.event for e in events(rclient, keys, "physiological")][-1] == "pause_ended"

    st = actions.acknowledge(rclient, keys, aid, "nurse-b")
    assert st["acknowledged_by"] == "nurse-b" and st["paused_until_ms"] is None
    with pytest.raises(actions.NotLatched):
        actions.reset(rclient, keys, aid, "nurse-b")

    # back inside by the hysteresis (90 + 1): high priority latches
    feed(rclient, keys, "room-1", "oxi-1", 6, [90, 95])
    drain(w)
    (a,) = actions.active_alerts(rclient, keys, ["room-1"])
    assert a["state"] == "latched"
    st = actions.reset(rclient, keys, aid, "nurse-b")
    assert actions.active_alerts(rclient, keys, ["room-1"]) == []
    names = [e.event for e in events(rclient, keys, "physiological")]
    assert names == ["raised", "audio_paused", "escalated", "pause_ended", "acknowledged", "cleared", "reset"]
    users = {e.event: e.user for e in events(rclient, keys, "physiological")}
    assert users["acknowledged"] == "nurse-b" and users["audio_paused"] == "nurse-a"
    acts = [(x["user"], x["action"], x["details"]["alert"]) for x in audit.entries(rclient, keys)]
    assert ("nurse-b", "alert.acknowledge", aid) in acts and ("nurse-a", "alert.pause_audio", aid) in acts
    assert ("nurse-b", "alert.reset", aid) in acts
    # no second raise for the same episode anywhere
    assert names.count("raised") == 1


def test_unknown_alert_id_raises_keyerror(setup, rclient, keys):
    for act in (actions.acknowledge, actions.pause_audio, actions.reset):
        with pytest.raises(KeyError):
            act(rclient, keys, "room-1.oxi-1.spo2.123", "n")
        with pytest.raises(KeyError):
            act(rclient, keys, "nonsense", "n")


def test_non_latched_clears_and_high_priority_pages_when_nobody_listens(setup, rclient, keys):
    cfg, w, clock, rec = setup
    # a station screen with sound on: medium alarm, no page
    rclient.hset(keys.screens, "station-1", json.dumps({"ts_ms": T0, "sound_on": True, "user": "n"}))
    w.tick(T0)
    feed(rclient, keys, "room-2", "oxi-2", 0, [130, 100], metric="hr")
    drain(w)
    assert [e.event for e in events(rclient, keys, "physiological")] == ["raised", "cleared"]
    assert actions.active_alerts(rclient, keys) == []
    assert all(t is None for _e, _a, t in rec.sent)
    # the screen turns its sound off: a high-priority raise is paged at once (tier 1)
    rclient.hset(keys.screens, "station-1", json.dumps({"ts_ms": T0, "sound_on": False, "user": "n"}))
    w.tick(T0)
    feed(rclient, keys, "room-2", "oxi-2", 10, [80, 80, 80, 80])
    drain(w)
    raised = [x for x in rec.sent if x[0] == "raised"]
    assert raised[-1][2] == 1 and ".spo2." in raised[-1][1]
    # the page also waits for the page topic, in the same outbox, right behind its event
    topics = [json.loads(f["meta"])["topic"] for _i, f in rclient.xrange(keys.outbox(DEST_MQTT))]
    assert topics[-2:] == ["vw-test/alerts", "vw-test/alerts/page"]
    assert rclient.sismember(keys.outbox_destinations, DEST_MQTT)


def test_flagged_readings_raise_technical_not_physiological(setup, rclient, keys):
    cfg, w, clock, rec = setup
    feed(rclient, keys, "room-1", "oxi-1", 0, [None] * 7, flags=("sensor_off",))
    feed(rclient, keys, "room-1", "oxi-1", 7, [70] * 5, flags=("artifact",))
    drain(w)
    assert events(rclient, keys, "physiological") == []
    tech = [(e.event, e.message) for e in events(rclient, keys, "technical")]
    assert ("raised", "Sensor off (oxi-1)") in tech


def test_silent_device_then_ingest_down_is_one_clinic_wide_alarm(setup, rclient, keys):
    cfg, w, clock, rec = setup
    w.tick(T0)  # the engine's first tick starts its start-up grace
    clock.ms = T0 + 30_000
    publish_status(rclient, keys, "oxi-2", {"last_ts": clock.ms})  # room-2 fresh; oxi-1 is now 30 s old
    heartbeat.beat(rclient, keys, "ingest", "i1", T0 + 25_000)
    w.tick(clock.ms)
    tech = [e for e in events(rclient, keys, "technical") if e.event == "raised"]
    assert [(e.room, e.dev) for e in tech] == [("room-1", "oxi-1")]
    assert "silent" in tech[0].message
    # ingest stops heartbeating: ONE clinic-wide alarm naming both rooms; oxi-1's own silent
    # alarm is cleared as part of it, and nothing is raised per room
    clock.ms = T0 + 46_000
    w.tick(clock.ms)
    evs = [e for e in events(rclient, keys, "technical")][1:]
    assert [(e.event, e.room) for e in evs] == [("cleared", "room-1"), ("raised", "*")]
    assert "clinic-wide" in evs[0].message
    clin = evs[1]
    assert clin.rooms == "room-1,room-2" and clin.priority == "high" and clin.alert.startswith("*.-.degraded.")
    assert "Ingest" in clin.message and "/" not in clin.message
    (rec_,) = actions.active_alerts(rclient, keys, ["*"])
    assert rec_["rooms"] == "room-1,room-2" and rec_["cause"] == "ingest not running"
    w.tick(clock.ms + 500)  # another tick raises nothing new
    assert len([e for e in events(rclient, keys, "technical") if e.event == "raised"]) == 2
    # ingest back and the devices fresh: the clinic-wide alarm clears (technical: not latched)
    refresh(rclient, keys, Clock(clock.ms + 1000))
    for dev in ("oxi-1", "oxi-2"):
        publish_status(rclient, keys, dev, {"updated_ms": clock.ms + 1000})
    w.tick(clock.ms + 1000)
    assert [e.event for e in events(rclient, keys, "technical")][-1] == "cleared"
    assert actions.active_alerts(rclient, keys, ["*"]) == []


def test_action_events_are_forwarded_outbound_by_the_clinic_lease_holder(setup, rclient, keys):
    cfg, w, clock, rec = setup
    assert w.holds_clinic
    w.tick(T0)  # first tick: the cursor starts at the stream's tip
    feed(rclient, keys, "room-1", "oxi-1", 0, [97, 88, 88, 88, 88, 88])
    drain(w)
    aid = events(rclient, keys, "physiological")[0].alert
    actions.acknowledge(rclient, keys, aid, "nina")
    w.tick(T0 + 500)
    assert ("acknowledged", aid, None) in rec.sent
    assert [e.user for e in rec.follow_ups] == ["nina"]  # high priority: on the page topic too
    w.tick(T0 + 1000)  # forwarded once
    assert [x for x in rec.sent if x[0] == "acknowledged"] == [("acknowledged", aid, None)]


def test_unevaluated_rooms_from_owners_and_heartbeats():
    from monitor.alarms.clinic import unevaluated_rooms

    beats = {"alerts:w1": str(T0 - 500), "alerts:w2": str(T0 - 5000)}
    owners = {"r1": "w1", "r2": "w2", "r3": None, "r4": None}
    got = unevaluated_rooms(owners, beats, {"r3": T0 - 6000, "r4": T0 - 1000}, T0, 5000)
    assert got == {"r2": "worker w2 silent for 5 s", "r3": "rooms not taken over yet"}


def test_hand_seeded_session_limits_and_reminders(setup, rclient, keys):
    """A session written by hand per the sessions schema (docs/alerts.md)."""
    cfg, w, clock, rec = setup
    sid = "s-20261127-0001"
    rclient.hset(keys.session(sid), mapping={
        "id": sid, "room": "room-1", "patient": "p-77", "route": "intranasal", "protocol": "esketamine",
        "state": "open", "started_ms": str(T0), "started_by": "nurse-a"})
    rclient.hset(keys.open_sessions, "room-1", sid)
    rclient.zadd(keys.sessions_index, {sid: T0})
    rclient.xadd(keys.session_events(sid), {"ts": str(T0), "type": "start", "user": "nurse-a"})
    # the nurse lowers the SpO2 limit to 85 for this patient
    rclient.hset(keys.session_limits(sid), "spo2", json.dumps({"low": 85}))
    w.tick(clock.ms)
    rem = [e for e in events(rclient, keys, "reminder")]
    assert [(e.event, e.message) for e in rem] == [("raised", "BP check due before dosing")]
    feed(rclient, keys, "room-1", "oxi-1", 0, [88] * 6)  # below 90 but above the session's 85
    drain(w)
    assert events(rclient, keys, "physiological") == []
    # pre-dose BP, then the first dose: the pre-dose reminder clears, observation starts
    clock.ms = T0 + 60_000
    refresh(rclient, keys, clock)
    rclient.xadd(keys.session_events(sid), {"ts": str(T0 + 50_000), "type": "bp", "user": "nurse-a",
                                            "sbp": "128", "dbp": "82"})
    rclient.xadd(keys.session_events(sid), {"ts": str(T0 + 60_000), "type": "dose", "user": "nurse-a",
                                            "dose_mg": "56"})
    rclient.hset(keys.session(sid), "first_dose_ms", str(T0 + 60_000))
    w.tick(clock.ms)
    rem = [(e.event, e.message.split(":")[0]) for e in events(rclient, keys, "reminder")]
    assert rem[1:] == [("cleared", "BP check due before dosing"), ("raised", "Minimum observation")]
    # 36 min after the dose: the 40-min BP check is due
    clock.ms = T0 + 60_000 + 36 * 60_000
    refresh(rclient, keys, clock)
    w.tick(clock.ms)
    assert [e.message for e in events(rclient, keys, "reminder")][-1].startswith("BP check due (40 min")
    # session ends: limits removed, reminders go away, defaults apply again
    rclient.hdel(keys.open_sessions, "room-1")
    rclient.delete(keys.session_limits(sid))
    rclient.hset(keys.session(sid), "state", "ended")
    w.tick(clock.ms)
    assert [a for a in actions.active_alerts(rclient, keys) if a["kind"] == "reminder"] == []
    feed(rclient, keys, "room-1", "oxi-1", 100, [88] * 5)
    drain(w)
    assert [e.event for e in events(rclient, keys, "physiological")] == ["raised"]


def test_commit_is_fenced_by_the_lease(setup, rclient, keys):
    cfg, w, clock, rec = setup
    rclient.set(keys.room_owner("room-1"), "somebody-else")
    before = rclient.xlen(keys.outbox(DEST_MQTT))

    def raise_one(active):
        book = Book(active)
        book.events.append(AlertEvent(T0, "room-1", "room-1.-.x.1", "raised", "technical", "high", message="x"))
        return book

    with pytest.raises(LostOwnership):
        commit(rclient, keys, "room-1", "w1", raise_one, {"last_id": "1-0"}, 10**9, T0,
               outbox=lambda evs: [(DEST_MQTT, {"body": "x"}) for _e in evs])
    assert load_state(rclient, keys, "room-1")[0] != "1-0"
    assert rclient.xlen(keys.outbox(DEST_MQTT)) == before  # no page without its committed event
    # the worker notices at its next renewal and stops evaluating the room
    clock.ms = T0 + 5000
    w.housekeeping(clock.ms)
    assert "room-1" not in w.rooms


def test_rooms_are_divided_between_workers(make_config, rclient, keys):
    cfg = make_config(rooms=[{"id": f"room-{i}"} for i in range(1, 5)], alerts={"owner_ttl_s": 2})
    clock = Clock(T0)
    a = Worker(cfg, rclient, keys, owner="wa", clock=clock)
    b = Worker(cfg, rclient, keys, owner="wb", clock=clock)
    a.housekeeping(T0)
    assert len(a.rooms) == 4  # alone: takes everything
    for step in range(1, 8):  # b appears; a gives its excess back
        clock.ms = T0 + step * 700
        b.housekeeping(clock.ms)
        a.housekeeping(clock.ms)
    assert len(a.rooms) == 2 and len(b.rooms) == 2
    owners = {rclient.get(keys.room_owner(f"room-{i}")) for i in range(1, 5)}
    assert owners == {"wa", "wb"}
    # a dies (no renewals): after its leases expire b takes everything over
    for step in range(8, 20):
        clock.ms = T0 + step * 700
        b.housekeeping(clock.ms)
    # leases are real PX timers in Redis, so they expire by wall clock: wait for that
    def b_took_over() -> bool:
        clock.ms += 700
        b.housekeeping(clock.ms)
        return len(b.rooms) == 4

    wait_for(b_took_over, 10, "b holding all four rooms", interval_s=0.2)
    assert len(b.rooms) == 4


def test_start_up_grace_for_never_seen_ingest_and_devices(make_config, rclient, keys):
    """All roles start at once under `run` and `demo`: for one heartbeat period after the
    engine starts, technical conditions (no ingest heartbeat yet, a port not there yet) are
    start-up, not alarms; after it, those that persist are raised with their real onset —
    one clinic-wide alarm for the missing ingest, the device's own for the reported offline."""
    cfg = make_config(rooms=[{"id": "room-1", "devices": [
        {"id": "oxi-1", "protocol": "masimo-ascii", "transport": "serial", "port": "/dev/null"},
        {"id": "oxi-9", "protocol": "masimo-ascii", "transport": "serial", "port": "/dev/null"}]}])
    clock = Clock(T0)
    w = Worker(cfg, rclient, keys, owner="w1", outbound=ROUTES, clock=clock)
    publish_status(rclient, keys, "oxi-9", {"room": "room-1", "state": "offline", "since_ms": T0 - 5000,
                                            "detail": "cannot open /tmp/x/tty/oxi-9: [Errno 2] No such file"})
    w.housekeeping(T0)
    w.tick(T0)
    stale_after_ms = int(cfg.alerts.heartbeat_stale_s * 1000)
    w.tick(T0 + stale_after_ms - 1)
    assert [e for e in events(rclient, keys, "technical") if e.event == "raised"] == []
    heartbeat.beat(rclient, keys, "ingest", "i1", T0 + stale_after_ms)
    publish_status(rclient, keys, "oxi-9", {"updated_ms": T0 + stale_after_ms})
    w.tick(T0 + stale_after_ms + 1)
    raised = [e for e in events(rclient, keys, "technical") if e.event == "raised"]
    # oxi-1 has no status: no adapter runs it → the clinic-wide cause, not a device alarm
    assert sorted((e.room, e.dev) for e in raised) == [("*", ""), ("room-1", "oxi-9")]
    dev = next(e for e in raised if e.dev == "oxi-9")
    assert dev.message == "oxi-9 offline: cannot open its port" and dev.alert.endswith(str(T0 - 5000))
    clin = next(e for e in raised if e.room == "*")
    assert clin.rooms == "room-1" and "Device adapters not reporting" in clin.message


def test_each_batch_updates_the_rooms_latest_value_summary(setup, rclient, keys):
    """Screens read the newest value per metric from `latest:<room>` (no history scan); a late,
    older reading (a spool replay) never replaces a newer one."""
    cfg, w, clock, rec = setup
    feed(rclient, keys, "room-1", "oxi-1", 10, [97, 96])
    drain(w)
    summary = rclient.hgetall(keys.room_latest("room-1"))
    assert json.loads(summary["spo2"]) == [96, T0 + 11_000, "oxi-1"]
    assert summary["_id"] == rclient.xrevrange(keys.vitals("room-1"), count=1)[0][0]
    feed(rclient, keys, "room-1", "oxi-1", 2, [91])  # older than what the summary holds
    drain(w)
    assert json.loads(rclient.hget(keys.room_latest("room-1"), "spo2")) == [96, T0 + 11_000, "oxi-1"]


class Pages:
    """Stands in for the DirectPager: what would be paged straight to MQTT/webhook."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, int | None]] = []

    def page(self, ev, tier, room_name="All rooms"):
        self.sent.append((ev.event, ev.alert, tier))


def test_readings_not_stored_is_one_clinic_wide_alarm_paged_directly(setup, rclient, keys):
    """A live ingest reports (its storage record) that accepted readings wait, Redis taking
    the engine's writes: ONE clinic-wide `not_stored` alarm after its 2 s delay, naming the
    rooms whose devices say so and holding back their own silent alarms; paged directly (not
    through the outbox, whose copy is a plain event); cleared and followed up when storing again."""
    from monitor.model.storage import StorageState

    cfg, w, clock, rec = setup
    pages = Pages()
    w.pager = pages
    ingest_beat = f"ingest:{'i1'}"
    failing = StorageState(state="failing", cause="Redis user lacks permission to write (NOPERM no permissions)",
                           code="noperm", since_ms=T0, pending=12, oldest_pending_ms=T0)
    w.tick(T0 - int(cfg.alerts.heartbeat_stale_s * 1000))  # past the engine's start-up grace by T0
    for t in (T0 + 4000, T0 + 5000, T0 + 6500):  # stalled from T0 + 3 s; raised 2 s later
        clock.ms = t
        heartbeat.beat(rclient, keys, "ingest", "i1", t, storage=failing)
        publish_status(rclient, keys, "oxi-2", {"state": "silent", "updated_ms": t, "since_ms": T0,
                                                "detail": "readings not being stored: Redis user lacks permission"})
        publish_status(rclient, keys, "oxi-1", {"updated_ms": t, "last_ts": t})
        w.tick(t)
    clinic = [e for e in events(rclient, keys, "technical") if e.room == "*"]
    assert [(e.event, e.rooms) for e in clinic] == [("raised", "room-2")], clinic
    assert clinic[0].message == "Readings are not being stored: Redis user lacks permission to write (NOPERM no permissions)"
    assert [e for e in events(rclient, keys, "technical") if e.dev == "oxi-2"] == []  # explained by it
    assert pages.sent == [("raised", clinic[0].alert, 1)]
    assert [t for e, a, t in rec.sent if a == clinic[0].alert] == [None]  # the outbox copy is no page
    assert ingest_beat in rclient.hgetall(keys.storage)
    storing = StorageState(state="storing", last_stored_ms=T0 + 7000)
    clock.ms = T0 + 7500
    heartbeat.beat(rclient, keys, "ingest", "i1", clock.ms, storage=storing)
    publish_status(rclient, keys, "oxi-2", {"state": "online", "updated_ms": clock.ms, "last_ts": clock.ms})
    publish_status(rclient, keys, "oxi-1", {"updated_ms": clock.ms, "last_ts": clock.ms})
    w.tick(clock.ms)
    assert [e.event for e in events(rclient, keys, "technical") if e.room == "*"] == ["raised", "cleared"]
    assert pages.sent[-1] == ("cleared", clinic[0].alert, None)
