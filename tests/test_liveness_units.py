"""Pure tables: what a Redis error means (monitor/store/retry.py), backoff and once-per-episode
logging, and the one cause a reader derives from its write probe and INFO (monitor/model/liveness.py)."""

from __future__ import annotations

import logging
import threading

import pytest
import redis

from monitor.model.liveness import WriteProbe, not_storing, own_write_problem, storage_stalled
from monitor.model.storage import DeviceBacklog, StorageState
from monitor.store.retry import Backoff, Episode, cause, keep_running, reply_code, words

R = redis.exceptions


@pytest.mark.parametrize(("exc", "code", "meaning"), [
    (R.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "OOM", "Redis out of memory"),
    (R.ReadOnlyError("You can't write against a read only replica."), "READONLY", "Redis is a read-only replica"),
    (R.ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)"),
     "UNBLOCKED", "Redis changed role (failover)"),
    (R.ResponseError("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."),
     "BUSY", "Redis is blocked by a long-running script"),
    (R.BusyLoadingError("Redis is loading the dataset in memory"), "LOADING", "Redis is loading its dataset"),
    (R.AuthenticationError("invalid username-password pair"), "NOAUTH", "Redis refused our credentials"),
    (R.ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist"),
     "MISCONF", "Redis cannot persist to disk and refuses writes"),
    (R.ResponseError("Command # 1 (SET k v) of pipeline caused error: READONLY You can't write"), "READONLY",
     "Redis is a read-only replica"),
    # redis.asyncio's pipeline writes the reply's args tuple into its prefix
    (R.ResponseError("Command # 1 (HGETALL h) of pipeline caused error: ('BUSY Redis is busy running a script.',)"),
     "BUSY", "Redis is blocked by a long-running script"),
    (R.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."), "", "Redis unreachable"),
    (R.TimeoutError("Timeout reading from socket"), "", "Redis not answering in time"),
    (ConnectionResetError(104, "Connection reset by peer"), "", "Redis unreachable"),
    (R.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), "WRONGTYPE",
     "Redis error (ResponseError)"),
])
def test_what_a_redis_error_means(exc: BaseException, code: str, meaning: str) -> None:
    assert reply_code(exc) == code
    assert words(exc) == meaning
    assert cause(exc).startswith(meaning + " (")


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.1, 0.5)
    assert [b.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    b.reset()
    assert b.next() == 0.1


def test_episode_logs_once_per_kind_and_reminds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    now = {"s": 0.0}
    ep = Episode("thing", logging.getLogger("t"), remind_s=60, clock=lambda: now["s"])
    oom, ro = R.OutOfMemoryError("x"), R.ReadOnlyError("y")
    logged = []
    for i in range(20):  # two errors alternating for 19 s: logged once each
        now["s"] = float(i)
        logged.append(ep.failed(oom if i % 2 else ro))
    assert sum(logged) == 2 and ep.failures == 20
    now["s"] = 80.0
    assert ep.failed(oom)  # a reminder after remind_s
    assert ep.recovered() and not ep.failing and not ep.recovered()
    texts = [r.getMessage() for r in caplog.records]
    assert len(texts) == 4 and texts[-1].startswith("thing: working again after 80.0 s (21 failed tries")


def test_keep_running_restarts_a_loop_that_raised(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    runs = {"n": 0}

    def body() -> None:
        runs["n"] += 1
        if runs["n"] < 3:
            raise KeyError("a malformed record")
        stop.wait()

    t = keep_running("test-loop", body, stop, logging.getLogger("t"), backoff=Backoff(0.01, 0.02))
    try:
        for _ in range(500):
            if runs["n"] >= 3:
                break
            stop.wait(0.01)
        assert runs["n"] == 3 and t.is_alive()
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2 and errors[0].exc_info is not None  # logged with the traceback
    finally:
        stop.set()
        t.join(2)


T = 1_000_000
OOM_INFO = "Redis out of memory (3300000 of maxmemory 1 bytes used; OOM)"


@pytest.mark.parametrize(("probe", "info", "now", "want"), [
    (WriteProbe(), OOM_INFO, T, None),
    (WriteProbe(False, "OOM", "Redis out of memory", "OOM …", T - 1999), OOM_INFO, T, None),  # a blip
    (WriteProbe(False, "OOM", "Redis out of memory", "OOM …", T - 2000), OOM_INFO, T,
     "readings are not being stored: " + OOM_INFO),
    (WriteProbe(False, "READONLY", "Redis is a read-only replica", "READONLY You can't write", T - 5000), None, T,
     "readings are not being stored: Redis is a read-only replica (READONLY You can't write)"),
    (WriteProbe(False, "NOPERM", "Redis user lacks permission", "NOPERM …", T - 5000), None, T, None),
])
def test_not_storing(probe: WriteProbe, info: str | None, now: int, want: str | None) -> None:
    assert not_storing(probe, info, now) == want


def test_stalled_storage_records_of_live_writers_only() -> None:
    failing = StorageState(state="failing", cause="Redis user lacks permission to write (NOPERM …)", code="noperm",
                           since_ms=T - 9000, pending=40, oldest_pending_ms=T - 8000)
    blip = StorageState(state="failing", cause="Redis unreachable (reset)", pending=3, oldest_pending_ms=T - 1000)
    records = {"ingest:a": failing.to_json(), "ingest:b": blip.to_json(), "ingest:gone": failing.to_json(),
               "ingest:junk": "{not json"}
    assert storage_stalled(records, {"ingest:a", "ingest:b", "ingest:junk"}, T) == [
        "readings are not being stored (8 s, 40 waiting): Redis user lacks permission to write (NOPERM …)"]
    assert storage_stalled(records, {"ingest:b"}, T) == []


def test_own_write_problem_is_only_for_refusals_of_this_reader() -> None:
    noperm = WriteProbe(False, "NOPERM", "Redis user lacks permission", "NOPERM no", T - 3000)
    assert own_write_problem(noperm, "dashboard", T) == \
        "this dashboard cannot write to Redis: Redis user lacks permission (NOPERM no)"
    assert own_write_problem(WriteProbe(False, "OOM", "x", "y", T - 3000), "dashboard", T) is None


def test_probe_keeps_the_start_of_its_episode() -> None:
    p = WriteProbe().after(T, "OOM", "Redis out of memory", "OOM")
    p = p.after(T + 1000, "READONLY", "Redis is a read-only replica", "READONLY")
    assert p.since_ms == T and p.code == "READONLY" and p.refused_for_ms(T + 2500) == 2500
    assert p.after(T + 3000, ok=True) == WriteProbe()


def test_outage_tracker_pages_once_after_three_seconds_and_follows_up() -> None:
    from monitor.alarms.outage import OutageTracker, resumed_event, stopped_event

    t = OutageTracker(page_after_ms=3000)
    assert t.failed("OOM", "Redis out of memory", T) is None
    assert t.ok(T + 1000) is None  # a blip: forgotten, no page, no follow-up
    assert t.failed("OOM", "Redis out of memory", T + 2000) is None
    assert t.failed("", "Redis unreachable", T + 3000) is None  # a failover drops connections too
    o = t.failed("OOM", "Redis out of memory", T + 5000)
    assert o is not None and o.paged and o.since_ms == T + 2000 and o.not_stored
    t.detail("used 3.1 MB, maxmemory 1 bytes")
    assert t.failed("OOM", "Redis out of memory", T + 6000) is None  # once per episode
    done = t.ok(T + 8000)
    assert done is not None and done.until_ms == T + 8000
    page = stopped_event(done, "w1", ["room-1", "room-2"], T + 5000)
    assert (page.room, page.alert, page.event, page.priority) == ("*", f"*.-.not_stored.{T + 2000}", "raised", "high")
    assert page.message == ("NOT MONITORING (2 rooms): readings are not being stored: Redis out of memory "
                            "(used 3.1 MB, maxmemory 1 bytes)")
    back = resumed_event(done, "w1", ["room-1", "room-2"], T + 8000)
    assert back.alert == page.alert and back.event == "cleared" and back.message.startswith("Monitoring resumed after 6 s")


def test_outage_of_an_unreachable_redis_is_about_this_worker() -> None:
    from monitor.alarms.outage import OutageTracker

    t = OutageTracker(page_after_ms=3000)
    t.failed("", "Redis unreachable", T)
    o = t.failed("", "Redis unreachable", T + 3000)
    assert o is not None and not o.not_stored and o.cond == "engine"
    assert o.sentence("w1") == "alarms are not being evaluated: Redis unreachable (alert worker w1)"


@pytest.mark.parametrize(("stored", "backlog", "want"), [
    (None, DeviceBacklog(), None),  # nothing stored, nothing waiting: never heard
    (1_000, DeviceBacklog(), 1_000),  # nothing waiting: the newest stored reading
    (1_000, DeviceBacklog(3, 5_000), 5_000),  # waiting behind others (a replay): heard then
    (None, DeviceBacklog(1, 5_000), 5_000),  # a fresh process, nothing of its own stored yet
    (6_000, DeviceBacklog(1, 5_000), 6_000),  # the stored one is newer
    (1_000, DeviceBacklog(0, 5_000), 1_000),  # an empty backlog's time means nothing
])
def test_a_device_is_heard_when_its_reading_is_stored_or_on_its_way(
        stored: int | None, backlog: DeviceBacklog, want: int | None) -> None:
    assert backlog.heard_ms(stored) == want
