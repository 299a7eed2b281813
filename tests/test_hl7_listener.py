"""The MLLP listener against real sockets and the test Redis: answers after storage,
refusals, re-sends stored once, monitors that never read, many connections."""

from __future__ import annotations

from tests.hl7_support import BPM, HR, PCT, SPO2, nm, now_ms, oru, rig


def test_aa_after_the_reading_is_in_its_room_stream(make_config, redis_url, keys, rclient, tmp_path):
    ts = now_ms() - 2000
    with rig(make_config, redis_url, keys, tmp_path) as r:
        peer = r.peer()
        code, ctrl = peer.ask(oru("c1", ts, [nm(HR, 72, BPM), nm(SPO2, 97, PCT)]))
        assert (code, ctrl) == ("AA", "c1")
        # the AA left only after storage: the entry is there the moment we hold the answer
        entries = rclient.xrange(keys.vitals("room-1"))
        assert [(f["dev"], f["ts"], f["hr"], f["spo2"]) for _, f in entries] == [("mon-1", str(ts // 1000 * 1000), "72", "97")]
