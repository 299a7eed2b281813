"""`session end` clears the session's reminders itself, stamped at the end and before it
archives: the "Minimum observation" reminder's clear is in the record an export reads right
after `session end`, the engine's next tick adds nothing, and a later top-up changes nothing
(before, the engine's clear reached the archive a minute later, so two exports differed)."""

from __future__ import annotations

import json

from monitor.alarms import actions
from monitor.alarms.engine import Worker
from monitor.alarms.evaluate import Book, reconcile
from monitor.alarms.reminders import reminder_conditions
from monitor.model.clock import now_ms
from monitor.sessions import archive, review
from monitor.sessions import lifecycle as sessions
from monitor.sessions.export import report_rows
from monitor.store import heartbeat
from monitor.store.status import publish_status
from tests.configs import room_entry, serial_device

MIN = 60_000


def _min_obs(rec):
    (ep,) = [e for e in review.episodes(rec) if (e["message"] or "").startswith("Minimum observation")]
    return ep


def test_an_export_right_after_session_end_equals_a_later_one(make_config, rclient, keys):
    cfg = make_config(rooms=[room_entry("room-1", serial_device("oxi-1"))])
    t0 = now_ms() - 5 * MIN
    clock = [t0]
    publish_status(rclient, keys, "oxi-1", {"room": "room-1", "state": "online", "last_ts": t0, "since_ms": t0})
    heartbeat.beat(rclient, keys, "ingest", "i1", t0)
    w = Worker(cfg, rclient, keys, owner="w1", outbound=None, clock=lambda: clock[0])
    w.housekeeping(t0)
    sid = sessions.start_session(rclient, keys, cfg, "room-1", "P-1", "intranasal", "amy", now_ms=t0)
    sessions.record_bp(rclient, keys, sid, "amy", 128, 80, now_ms=t0 + 30_000)
    sessions.record_dose(rclient, keys, sid, "amy", at_ms=t0 + MIN, dose_mg=56)
    clock[0] = t0 + MIN + 1000
    w.tick(clock[0])
    assert any(a["message"].startswith("Minimum observation") for a in actions.active_alerts(rclient, keys, ["room-1"]))

    open_head = rclient.hgetall(keys.session(sid))
    open_events = [f for _i, f in rclient.xrange(keys.session_events(sid))]
    end = t0 + 4 * MIN  # before the minimum observation is over
    sessions.end_session(rclient, keys, cfg, sid, "amy", now_ms=end)
    arch = archive.open_archive(cfg.archive.url)
    first = archive.load_session(arch, sid)
    ep = _min_obs(first)
    assert ep["cleared_ms"] == end and review.reminder_status(ep, end) == "open at end"
    assert not [a for a in actions.active_alerts(rclient, keys, ["room-1"]) if a["kind"] == "reminder"]

    # the engine's next tick (it may have read the session while still open) raises and clears nothing
    # an engine tick that read the session while it was still open and commits now (its
    # transaction retried on the fresh records) must not raise the reminder again
    stale = reminder_conditions({**open_head, "id": sid}, open_events, end + 100, cfg, "room-1")
    assert any(d.message.startswith("Minimum observation") for d in stale.values())
    book = Book({a: json.loads(v) for a, v in rclient.hgetall(keys.active_alerts("room-1")).items()})
    reconcile(book, "room-1", stale, "r:", end + 100)
    assert book.events == []

    def reminder_events():
        return [f for _i, f in rclient.xrange(keys.alerts) if f.get("kind") == "reminder"]

    n_events = len(reminder_events())
    clock[0] = end + 500
    heartbeat.beat(rclient, keys, "ingest", "i1", clock[0])  # monitoring fine: no clinic-wide alarm
    publish_status(rclient, keys, "oxi-1", {"updated_ms": clock[0], "last_ts": clock[0]})
    w.tick(clock[0])
    w.tick(clock[0] + 500)
    assert len(reminder_events()) == n_events
    assert rclient.hlen(keys.active_alerts("room-1")) == 0  # the kept record is dropped quietly
    archive.top_up_session(rclient, keys, cfg, sid)
    later = archive.load_session(arch, sid)
    s1, s2 = review.summarize(first), review.summarize(later)
    assert report_rows(first, s1, "UTC")["alert_log"] == report_rows(later, s2, "UTC")["alert_log"]
