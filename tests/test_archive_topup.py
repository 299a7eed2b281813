"""Late data: a reading measured before a session ended but reaching Redis after it was
archived is copied in by the top-up (once), unless the session is signed."""

from __future__ import annotations

import time

from monitor.model.codec import to_fields
from monitor.model.readings import Reading
from monitor.sessions import archive, archive_topup
from monitor.sessions import lifecycle as sessions
from tests.session_seed import room_config, seed_session


def test_late_readings_are_topped_up_once_and_signed_sessions_stay_locked(rclient, keys, make_config):
    cfg = room_config(make_config)
    sd = seed_session(rclient, keys, cfg, duration_min=20)
    res = sessions.end_session(rclient, keys, cfg, sd.sid, "amy", now_ms=sd.end_ms)
    arch = archive.open_archive(cfg.archive.url)
    n0 = res["readings"]
    # an MQTT device forwards a held reading measured 1 minute before the end, after archiving
    late = Reading("room-1", "oxi-1", sd.end_ms - 60_000, {"hr": 71.0, "spo2": 97.0})
    rclient.xadd(keys.vitals("room-1"), to_fields(late))
    # and a reading measured after the end must not join the session
    rclient.xadd(keys.vitals("room-1"), to_fields(Reading("room-1", "oxi-1", sd.end_ms + 5_000, {"hr": 70.0})))
    now = int(time.time() * 1000)
    assert archive_topup.top_up_once(rclient, keys, cfg, "w1", now) == 1
    rec = archive.load_session(arch, sd.sid)
    assert len(rec.readings) == n0 + 1 and rec.header["n_readings"] == n0 + 1
    assert any(ts == late.ts_ms for ts, *_ in rec.readings)
    # the lock keeps a second process (or a rerun within the minute) from running it again
    assert archive_topup.top_up_once(rclient, keys, cfg, "w2", now) is None
    rclient.delete(keys.archive_topup_lock)
    assert archive.top_up_recent(rclient, keys, cfg, now, 30 * 60_000) == 0  # rerun adds nothing
    # signed: locked, later data is not merged in
    sessions.sign_off(rclient, keys, cfg, sd.sid, "dr-lee")
    rclient.xadd(keys.vitals("room-1"), to_fields(Reading("room-1", "oxi-1", sd.end_ms - 30_000, {"hr": 72.0})))
    assert archive.top_up_session(rclient, keys, cfg, sd.sid) == 0
    assert len(archive.load_session(arch, sd.sid).readings) == n0 + 1


def test_retention_never_trims_a_session_the_archive_has_not_taken(rclient, redis_url, keys, make_config, tmp_path):
    from monitor.store.streams import StreamWriter
    from tests.configs import room_entry, serial_device

    cfg = make_config(rooms=[room_entry("room-1", serial_device("oxi-1")), room_entry("room-2", serial_device("oxi-2"))],
                      redis={"retention_hours": 1})
    now = int(time.time() * 1000)
    began = now - 3 * 3600_000  # a session opened 3 h ago, never ended (not archived)
    sid = sessions.start_session(rclient, keys, cfg, "room-1", "p-1", "intranasal", "amy", now_ms=began)
    # 4 h of readings every 10 s in both rooms, stream ids = measurement times
    pipe = rclient.pipeline(transaction=False)
    for ts in range(now - 4 * 3600_000, now - 60_000, 10_000):
        for room, dev in (("room-1", "oxi-1"), ("room-2", "oxi-2")):
            pipe.xadd(keys.vitals(room), to_fields(Reading(room, dev, ts, {"hr": 70.0})), id=f"{ts}-0")
    pipe.execute()
    in_session = rclient.xrange(keys.vitals("room-1"), min=str(began))
    floors = archive_topup.update_trim_floors(rclient, keys, now, 3600_000)
    assert floors[keys.vitals("room-1")] <= began and keys.vitals("room-2") not in floors
    w = StreamWriter(redis_url, keys, retention_ms=3600_000, spool_path=tmp_path / "spool.jsonl")
    try:
        for room, dev in (("room-1", "oxi-1"), ("room-2", "oxi-2")):
            w.write(Reading(room, dev, now, {"hr": 72.0}))
        assert w.flush()
    finally:
        w.close()
    # room-2: trimmed to the retention (MINID ~ trims whole nodes: a little older may stay)
    oldest_2 = int(rclient.xrange(keys.vitals("room-2"), count=1)[0][0].split("-")[0])
    assert oldest_2 >= now - 3600_000 - 30 * 60_000
    # room-1: every reading of the session not yet archived is still there
    assert rclient.xrange(keys.vitals("room-1"), min=str(began), max=str(now - 60_000)) == in_session
    # once archived, the floor goes and the next write trims room-1 to the retention too
    sessions.end_session(rclient, keys, cfg, sid, "amy", now_ms=now - 30_000)
    assert archive_topup.update_trim_floors(rclient, keys, now, 3600_000) == {}
    w = StreamWriter(redis_url, keys, retention_ms=3600_000, spool_path=tmp_path / "spool2.jsonl")
    try:
        w.write(Reading("room-1", "oxi-1", now + 1000, {"hr": 72.0}))
        assert w.flush()
    finally:
        w.close()
    oldest_1 = int(rclient.xrange(keys.vitals("room-1"), count=1)[0][0].split("-")[0])
    assert oldest_1 >= now - 3600_000 - 30 * 60_000
