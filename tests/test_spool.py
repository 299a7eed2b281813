"""The writer's spool: torn tails, crash mid-drain, order with callbacks, a full disk.

Real files, a real Redis of our own (started late or killed where a case needs it), and a
writer process killed with -9 where the case is a crash.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import redis

from monitor.model.clock import now_ms
from monitor.model.codec import to_fields
from monitor.model.keys import Keys
from monitor.model.readings import Reading
from monitor.store.spool import Item, Spool
from monitor.store.streams import StreamWriter
from tests.servers import RedisProc
from tests.waiting import wait_for

HOUR_MS = 3600_000
ROOT = Path(__file__).resolve().parents[1]


def _writer(url: str, keys: Keys, spool: Path, **kw) -> StreamWriter:
    return StreamWriter(url, keys, retention_ms=HOUR_MS, spool_path=spool, **kw)


def _item(keys: Keys, ts: int) -> Item:
    return Item(keys.vitals("room-1"), to_fields(Reading("room-1", "oxi-1", ts, {"hr": 70})), True, ts)


def _stream_ts(client: redis.Redis, keys: Keys) -> list[int]:
    return [int(f["ts"]) for _id, f in client.xrange(keys.vitals("room-1"))]


def test_torn_tail_is_cut_at_open_and_the_spool_drains(redis_url: str, keys: Keys, rclient: redis.Redis,
                                                       tmp_path: Path) -> None:
    """A crash mid-append leaves half a line: it is cut off (kept in .torn), the whole lines
    are stored, the spool ends empty — no busy loop waiting for a line that never completes."""
    path = tmp_path / "spool" / "w.jsonl"
    path.parent.mkdir()
    base = now_ms()
    whole = b"".join(_item(keys, base + i).to_line() for i in range(3))
    torn = _item(keys, base + 3).to_line()[:25]
    path.write_bytes(whole + torn)
    w = _writer(redis_url, keys, path)
    assert w.flush(10), f"not drained: {w.storage()}"
    assert w.storage().pending == 0
    w.close()
    assert _stream_ts(rclient, keys) == [base, base + 1, base + 2]
    assert path.stat().st_size == 0
    assert (path.parent / "w.jsonl.torn").read_bytes() == torn + b"\n"


def test_unreadable_line_is_skipped_counted_and_kept(redis_url: str, keys: Keys, rclient: redis.Redis,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    base = now_ms()
    path.write_bytes(_item(keys, base).to_line() + b'{"key": 5, garbage}\n' + _item(keys, base + 1).to_line())
    w = _writer(redis_url, keys, path)
    assert w.flush(10)
    w.close()
    assert _stream_ts(rclient, keys) == [base, base + 1]
    assert (tmp_path / "w.jsonl.corrupt").read_bytes() == b'{"key": 5, garbage}\n'


def test_offset_survives_reopen_and_a_truncated_file(tmp_path: Path) -> None:
    keys = Keys("x")
    sp = Spool(tmp_path / "s.jsonl")
    sp.append([_item(keys, i) for i in range(5)])
    items, end = sp.peek(2)
    sp.commit(end, 2)
    sp.close()
    again = Spool(tmp_path / "s.jsonl")  # reopened: resumes after the two committed
    assert again.count == 3
    items, _ = again.peek(10)
    assert [it.accepted_ms for it in items if it] == [2, 3, 4]
    assert all(it.check_from_ms == it.accepted_ms for it in items if it)  # maybe sent before
    again.close()
    # drained and truncated, crashed before the offset file went: nothing pending
    (tmp_path / "s.jsonl").write_bytes(b"")
    assert Spool(tmp_path / "s.jsonl").count == 0


def test_spooled_entries_keep_their_place_ahead_of_newer_ones_with_callbacks(tmp_path: Path) -> None:
    """Redis away: old readings spill to disk, and so do newer ones with completion callbacks
    (MQTT: memory stays bounded); more arrive in memory as Redis comes back. The stream holds
    all of them in arrival order — nothing in memory overtakes the spool — and each callback
    runs only after its reading is stored, in order."""
    proc = RedisProc(tmp_path / "redis")
    keys = Keys("order")
    w = _writer(proc.url, keys, tmp_path / "w.jsonl", buffer_max=150)
    base = now_ms()
    called: list[int] = []
    stored_then: list[bool] = []
    client = redis.Redis(port=proc.port, decode_responses=True)

    def cb(i: int) -> None:
        called.append(i)
        stored_then.append(str(base + i) in {f["ts"] for _id, f in client.xrevrange(keys.vitals("room-1"), count=400)})

    n_old = 8000  # several batches to drain: newer entries arrive in memory meanwhile
    for i in range(n_old):
        w.write(Reading("room-1", "oxi-1", base + i, {"hr": 70}))
    for i in range(n_old, n_old + 100):
        w.write(Reading("room-1", "mon-1", base + i, {"hr": 71}), on_stored=lambda i=i: cb(i))
    wait_for(lambda: w.stats.spooled >= n_old + 100, what="all of it spooled, callback entries too")
    proc.start()
    try:
        wait_for(lambda: w.stats.written > 0 and w.storage().spooled > 1000, what="draining the spool")
        for i in range(n_old + 100, n_old + 200):  # live again, mid-drain: these wait in memory
            w.write(Reading("room-1", "mon-1", base + i, {"hr": 72}), on_stored=lambda i=i: cb(i))
        assert w.flush(30)
        w.close()
        assert _stream_ts(client, keys) == [base + i for i in range(n_old + 200)]
        assert called == list(range(n_old, n_old + 200)) and all(stored_then)
    finally:
        client.close()
        proc.kill()


WRITER_PROC = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from monitor.model.keys import Keys
    from monitor.store import spool
    from monitor.store.streams import StreamWriter
    commit, calls = spool.Spool.commit, []
    def dying_commit(self, offset, lines):
        calls.append(offset)
        if len(calls) == 3:  # the third batch is in Redis; its offset never reaches the disk
            os.kill(os.getpid(), signal.SIGKILL)
        commit(self, offset, lines)
    spool.Spool.commit = dying_commit
    w = StreamWriter({url!r}, Keys({clinic!r}), retention_ms=3600_000, spool_path=Path({spool!r}))
    print("open", flush=True)
    w.flush(120)
    print("drained", flush=True)
    w.close()
""")


def test_killed_9_while_draining_the_spool_then_restarted_stores_each_once(tmp_path: Path) -> None:
    """A spool of 20,000 readings left by an outage; the process draining it is killed -9
    after Redis stored its third batch and before that batch's offset reached the disk; the
    next start replays from the older offset and checks the stream: every reading once, in
    order (the 1,000 already stored are recognised and skipped)."""
    proc = RedisProc(tmp_path / "redis")
    keys = Keys("crash")
    spool = tmp_path / "w.jsonl"
    base = now_ms() - 60_000
    n = 20_000
    w = _writer(proc.url, keys, spool, buffer_max=500)  # Redis not started: all spools
    for i in range(n):
        w.write(Reading("room-1", "oxi-1", base + i, {"hr": 60 + i % 40}))
    w.close(timeout_s=0.2)
    proc.start()
    client = redis.Redis(port=proc.port, decode_responses=True)
    try:
        child = subprocess.Popen([sys.executable, "-c", WRITER_PROC.format(
            root=str(ROOT), url=proc.url, clinic=keys.clinic, spool=str(spool))],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert child.wait(60) == -signal.SIGKILL
        assert client.xlen(keys.vitals("room-1")) == 3000
        w2 = _writer(proc.url, keys, spool)
        assert w2.flush(60)
        w2.close()
        got = _stream_ts(client, keys)
        assert got == [base + i for i in range(n)], f"{len(got)} stored for {n}"
        assert w2.stats.duplicates_skipped == 1000
    finally:
        client.close()
        proc.kill()


SPOOL_LIMIT_PROC = textwrap.dedent("""
    import json, resource, sys, time
    sys.path.insert(0, {root!r})
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, resource.RLIM_INFINITY))
    from pathlib import Path
    from monitor.model.keys import Keys
    from monitor.model.readings import Reading
    from monitor.store.streams import StreamWriter
    w = StreamWriter({url!r}, Keys({clinic!r}), retention_ms=3600_000, spool_path=Path({spool!r}),
                     buffer_max=20)
    for i in range(1000):
        w.write(Reading("room-1", "oxi-1", {base} + i, {{"hr": 70}}))
    def until(cond):
        deadline = time.monotonic() + 60
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.05)
    until(lambda: w.storage().spool_error)
    print(json.dumps({{"spool_error": w.storage().spool_error, "pending": w.storage().pending}}), flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # space again
    until(lambda: not w.storage().spool_error and w.storage().spooled == 1000)
    print(json.dumps({{"spooled": w.storage().spooled}}), flush=True)
    sys.stdin.readline()  # the test starts Redis, then says go
    ok = w.flush(60)
    print(json.dumps({{"flushed": ok, "lost": w.stats.lost}}), flush=True)
    w.close()
""")


def test_spool_file_size_limit_keeps_readings_in_memory_and_loses_none(tmp_path: Path) -> None:
    """RLIMIT_FSIZE (a full disk, as the process sees it): a spool append fails part-way; the
    half-written part is cut back, the readings stay in memory and the state names the
    spool's error. Space again: they spool (no half line left between), and once Redis is
    back all are stored, once, in order."""
    proc = RedisProc(tmp_path / "redis")
    keys = Keys("fsize")
    base = now_ms()
    child = subprocess.Popen([sys.executable, "-c", SPOOL_LIMIT_PROC.format(
        root=str(ROOT), url=proc.url, clinic=keys.clinic, spool=str(tmp_path / "w.jsonl"), base=base)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        first = json.loads(child.stdout.readline() or "{}")
        assert "File too large" in first.get("spool_error", ""), first
        assert first["pending"] == 1000
        assert json.loads(child.stdout.readline() or "{}") == {"spooled": 1000}
        proc.start()
        child.stdin.write("go\n")
        child.stdin.flush()
        last = json.loads(child.stdout.readline() or "{}")
        assert last == {"flushed": True, "lost": 0}, (last, child.stderr.read() if child.stderr else "")
        child.wait(30)
        client = redis.Redis(port=proc.port, decode_responses=True)
        assert _stream_ts(client, keys) == [base + i for i in range(1000)]
        assert not (tmp_path / "w.jsonl.corrupt").exists()
        client.close()
    finally:
        if child.poll() is None:
            child.kill()
        proc.kill()


def test_idle_writer_does_not_spin_while_redis_is_away(tmp_path: Path) -> None:
    """While failing, the writer retries with backoff (≤ 2 s) — not on every new entry."""
    keys = Keys("idle")
    w = _writer(f"redis://127.0.0.1:{_closed_port()}/0", keys, tmp_path / "w.jsonl")
    stop = threading.Event()

    def produce() -> None:  # a steady producer: each put notifies the writer
        i = 0
        while not stop.is_set():
            w.write(Reading("room-1", "oxi-1", now_ms() + i, {"hr": 70}))
            i += 1
            stop.wait(0.002)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        wait_for(lambda: w.stats.failures >= 3, what="a few failed attempts")
        f0, p0 = w.stats.failures, w.storage().pending
        wait_for(lambda: w.storage().pending >= p0 + 1500, what="some 1,500 more readings")
        # ~1,500 puts later: attempts grew with the backoff, not with the puts
        assert w.stats.failures - f0 < 10
    finally:
        stop.set()
        t.join(5)
        w.close(timeout_s=0.2)


def _closed_port() -> int:
    from monitor.store.embedded import free_port
    return free_port()
