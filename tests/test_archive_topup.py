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
