"""Stream writer and readers against a real Redis, including kill -9 and restart mid-write."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from monitor.model.keys import Keys
from monitor.model.readings import Reading, Refusal
from monitor.store import streams
from monitor.store.streams import StreamWriter, read_range, read_readings, tail
from tests.servers import RedisProc
from tests.waiting import wait_for

HOUR_MS = 3600_000


def _reading(i: int, base: int, room: str = "room-1") -> Reading:
    return Reading(room, "oxi-1", base + i * 10, {"hr": 60 + i % 50, "spo2": 90 + i % 10})


def _writer(url: str, keys: Keys, tmp: Path, **kw) -> StreamWriter:
    return StreamWriter(url, keys, retention_ms=HOUR_MS, spool_path=tmp / "spool" / "w.jsonl", **kw)


def test_write_and_read_back(redis_url: str, keys: Keys, rclient: redis.Redis, tmp_path: Path) -> None:
    w = _writer(redis_url, keys, tmp_path)
    base = int(time.time() * 1000)
    for i in range(2500):
        w.write(_reading(i, base, room=("room-1" if i % 2 else "room-2")))
    w.reject(Refusal("oxi-1", "bad_checksum", "x", b"\x00\x01"))
    assert w.flush(30)
    w.close()
    r1 = list(read_readings(rclient, keys, "room-1"))
    r2 = list(read_readings(rclient, keys, "room-2"))
    assert len(r1) == 1250 and len(r2) == 1250
    assert [r.ts_ms for r in r1] == sorted(r.ts_ms for r in r1)  # in order
    assert r1[0] == _reading(1, base)
    rej = rclient.xrange(keys.rejects)
    assert len(rej) == 1 and rej[0][1]["reason"] == "bad_checksum" and rej[0][1]["raw"] == "\\x00\\x01"


def test_paged_range_reads_everything(redis_url: str, keys: Keys, rclient: redis.Redis, tmp_path: Path) -> None:
    for i in range(45):
        rclient.xadd(keys.vitals("r"), {"ts": str(i), "dev": "d", "hr": "70"})
    assert len(list(read_range(rclient, keys.vitals("r"), page=10))) == 45


def test_retention_trims_old_entries(redis_url: str, keys: Keys, rclient: redis.Redis, tmp_path: Path) -> None:
    key = keys.vitals("room-1")
    for i in range(3000):  # entries "from" long ago (explicit old ids)
        rclient.xadd(key, {"ts": str(i), "dev": "d", "hr": "70"}, id=f"{1000 + i}-0")
    w = _writer(redis_url, keys, tmp_path)
    w.write(_reading(0, int(time.time() * 1000)))
    w.flush()
    w.close()
    # MINID ~ trims whole macro nodes only, so a few old entries may remain; most must go
    assert rclient.xlen(key) < 500


def test_duplicate_identity_is_stored_once(redis_url: str, keys: Keys, rclient: redis.Redis, tmp_path: Path) -> None:
    base = int(time.time() * 1000)
    w = _writer(redis_url, keys, tmp_path)
    w.write(_reading(1, base))
    w.write(_reading(1, base))  # the same identity again, fresh: this writer stored it
    w.flush()
    w.close()
    assert w.stats.duplicates_skipped == 1
    w2 = _writer(redis_url, keys, tmp_path)  # a new process gets a redelivery: checks the stream
    w2.write(_reading(1, base), stored_after_ms=base - 60_000)
    w2.write(_reading(2, base))
    w2.flush()
    w2.close()
    assert [r.ts_ms for r in read_readings(rclient, keys, "room-1")] == [base + 10, base + 20]
    assert w2.stats.duplicates_skipped == 1


def test_reused_label_after_clock_step_back_is_stored_redelivery_is_not(
        redis_url: str, keys: Keys, rclient: redis.Redis, tmp_path: Path) -> None:
    """A device clock stepped back relabels new readings with ts already stored: with other
    values they are new readings and stored; a byte-identical redelivery — fresh, or to a
    new process checking the stream (even a stored copy carrying `rx`) — is stored once."""
    base = int(time.time() * 1000) // 1000 * 1000  # whole seconds, as a device sends them
    key = keys.vitals("room-1")
    first = [Reading("room-1", "oxi-1", base + i * 1000, {"hr": 70 + i, "spo2": 97}) for i in range(3)]
    again = [Reading("room-1", "oxi-1", base + i * 1000, {"hr": 80 + i, "spo2": 96}) for i in range(3)]
    rclient.xadd(key, {"ts": str(base - 5000), "dev": "oxi-1", "hr": "65", "rx": str(base)})  # stored late
    w = _writer(redis_url, keys, tmp_path)
    for r in first + again + first:  # clock stepped back 3 s, twice; the last 3 are redeliveries
        w.write(r)
    assert w.flush(10)
    w.close()
    assert w.stats.duplicates_skipped == 3
    w2 = _writer(redis_url, keys, tmp_path)  # a new process: MQTT redeliveries, checked in the stream
    for r in [Reading("room-1", "oxi-1", base - 5000, {"hr": 65}), *again,
              Reading("room-1", "oxi-1", base, {"hr": 70, "spo2": 97}, frozenset({"artifact"}))]:
        w2.write(r, stored_after_ms=base - 60_000)
    assert w2.flush(10)
    w2.close()
    assert w2.stats.duplicates_skipped == 4
    stored = list(read_readings(rclient, keys, "room-1"))
    assert [(r.ts_ms - base, r.values["hr"]) for r in stored] == [
        (-5000, 65), (0, 70), (1000, 71), (2000, 72), (0, 80), (1000, 81), (2000, 82), (0, 70)]
    assert stored[-1].flags == {"artifact"}


def test_on_stored_runs_after_redis_has_it(redis_url: str, keys: Keys, rclient: redis.Redis, tmp_path: Path) -> None:
    w = _writer(redis_url, keys, tmp_path)
    seen: list[int] = []
    done = threading.Event()
    w.write(_reading(0, int(time.time() * 1000)), on_stored=lambda: (seen.append(rclient.xlen(keys.vitals("room-1"))), done.set()))
    assert done.wait(10)
    w.close()
    assert seen == [1]


def _count(url: str, key: str) -> list[tuple[str, dict[str, str]]]:
    c = redis.Redis.from_url(url, decode_responses=True)
    try:
        return c.xrange(key)
    finally:
        c.close()


@pytest.mark.parametrize(("how", "down_s"), [("kill", 1.5), ("stop", 10.0)])
def test_redis_down_mid_write_loses_nothing(redis_proc: RedisProc, tmp_path: Path, how: str, down_s: float) -> None:
    """Redis killed with -9 (or stopped cleanly for 10 s) while a producer writes ~2,000
    readings/s; restarted: every accepted reading is in the stream, once, in order."""
    keys = Keys("killtest")
    w = _writer(redis_proc.url, keys, tmp_path)
    base = int(time.time() * 1000)
    per_s = 2000
    n_total = int((down_s + 4) * per_s)
    produced = threading.Event()
    written = [0]

    def produce() -> None:
        for i in range(n_total):
            w.write(_reading(i, base))
            written[0] = i + 1
            if i % 200 == 199:
                time.sleep(0.1)  # the producer's rate: ~2,000 readings/s
        produced.set()

    t = threading.Thread(target=produce)
    t.start()
    wait_for(lambda: written[0] >= 2000, what="writing under way")
    redis_proc.kill() if how == "kill" else redis_proc.stop()
    wait_for(lambda: not w.connected, what="the writer to see Redis gone")
    at_outage = written[0]
    # readings keep flowing while Redis is down: write() does not block on the outage
    wait_for(lambda: written[0] >= at_outage + 1000, what="1,000 more readings accepted during the outage")
    time.sleep(down_s)  # the outage lasts this long (a real-world condition, nothing is counted after it)
    assert not produced.is_set(), "the producer finished during the outage: make n_total larger"
    redis_proc.start()
    t.join(120)
    assert produced.is_set()
    assert w.flush(60), f"still pending: {w.pending}"
    w.close()
    entries = _count(redis_proc.url, keys.vitals("room-1"))
    ts = [int(f["ts"]) for _, f in entries]
    assert len(ts) == n_total, f"{n_total - len(ts)} missing or {len(ts) - n_total} extra"
    assert ts == [base + i * 10 for i in range(n_total)]  # each once, in order
    assert w.stats.reconnects >= 1


def test_outage_longer_than_memory_spools_to_disk_and_survives_restart(tmp_path: Path) -> None:
    """Redis down: memory bound overflows to the spool; writer closed while down; a new writer
    (a restarted process) replays the spool once Redis is back."""
    proc = RedisProc(tmp_path / "redis")
    keys = Keys("spooltest")
    w = _writer(proc.url, keys, tmp_path, buffer_max=100)  # Redis not started yet
    base = int(time.time() * 1000)
    for i in range(1000):
        w.write(_reading(i, base))
    # memory holds about buffer_max; the rest moves to disk as soon as no send is in flight
    wait_for(lambda: w.stats.spooled >= 900, what="entries beyond buffer_max spooled")
    w.close(timeout_s=0.5)
    assert (tmp_path / "spool" / "w.jsonl").stat().st_size > 0
    proc.start()
    try:
        w2 = _writer(proc.url, keys, tmp_path, buffer_max=100)
        for i in range(1000, 1100):
            w2.write(_reading(i, base))
        assert w2.flush(30)
        w2.close()
        ts = [int(f["ts"]) for _, f in _count(proc.url, keys.vitals("room-1"))]
        assert ts == [base + i * 10 for i in range(1100)]
        assert (tmp_path / "spool" / "w.jsonl").stat().st_size == 0
    finally:
        proc.kill()


def test_identities_stored_are_remembered_for_a_while_not_for_ever() -> None:
    """A re-sent reading is caught by the identities the writer stored in the last RECENT_MS;
    older ones are forgotten (a count alone let ingest hold 20,000 per room: ~14 MB/h of growth
    at 20 rooms × 1 Hz for 5.5 h, ~1.2 GB at 300 rooms)."""
    seen = streams._Seen()
    seen.add(("oxi-1", 1_000, 7), 0)
    seen.add(("oxi-1", 2_000, 7), streams.RECENT_MS)
    seen.trim(streams.RECENT_MS)
    assert seen.ids == {("oxi-1", 1_000, 7), ("oxi-1", 2_000, 7)}  # both within the window
    seen.trim(streams.RECENT_MS + 1)
    assert seen.ids == {("oxi-1", 2_000, 7)}  # the first is older than the window
    for i in range(streams.RECENT_KEYS_MAX + 5):  # and never more than the cap, however recent
        seen.add(("oxi-1", 10_000 + i, 7), streams.RECENT_MS + 2)
    seen.trim(streams.RECENT_MS + 2)
    assert len(seen.ids) == len(seen.order) == streams.RECENT_KEYS_MAX


def test_tail_continues_from_last_id(redis_url: str, keys: Keys, rclient: redis.Redis) -> None:
    key = keys.vitals("room-1")
    rclient.xadd(key, {"ts": "1", "dev": "d", "hr": "70"})
    last = {key: "0-0"}
    got = tail(rclient, last, block_ms=100)
    assert len(got[0][1]) == 1
    assert tail(rclient, last, block_ms=50) == []
    rclient.xadd(key, {"ts": "2", "dev": "d", "hr": "71"})
    got = tail(rclient, last, block_ms=100)
    assert got[0][1][0][1]["ts"] == "2"
