"""The stream writer through every class of Redis fault, on a Redis of our own.

Each case injects one fault while a producer keeps writing, holds it until the oldest
waiting reading has waited a while, clears it, and checks: the writer said `failing` with
the right cause (and `connected` was false) while Redis refused, nothing accepted was lost
or stored twice, the room stream is in acceptance order, and the writer still stores
afterwards. Fault injection (CONFIG SET, REPLICAOF, EVAL, SIGSTOP) only ever touches the
server these tests started.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from monitor.model.clock import now_ms
from monitor.model.keys import Keys
from monitor.model.readings import Reading
from monitor.model.storage import FAILING, STORING
from monitor.store.embedded import free_port
from monitor.store.redis_faults import ENTRY, REFUSED, TIMEOUT, UNREACHABLE, classify
from monitor.store.streams import StreamWriter
from tests.servers import RedisProc
from tests.waiting import wait_for

HOUR_MS = 3600_000


def _writer(url: str, keys: Keys, tmp: Path, **kw) -> StreamWriter:
    return StreamWriter(url, keys, retention_ms=HOUR_MS, spool_path=tmp / "spool" / "w.jsonl", **kw)


def _ts_in_stream(url: str, key: str) -> list[int]:
    c = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [int(f["ts"]) for _id, f in c.xrange(key)]
    finally:
        c.close()


class Producer(threading.Thread):
    """Writes one reading every `period_s` (distinct ts) until stopped; records what it wrote."""

    def __init__(self, w: StreamWriter, period_s: float = 0.004) -> None:
        super().__init__(daemon=True)
        self.w, self.period_s = w, period_s
        self.base = now_ms() - 10_000
        self.written: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            ts = self.base + i
            self.w.write(Reading("room-1", "oxi-1", ts, {"hr": 60 + i % 40, "spo2": 97}))
            self.written.append(ts)
            i += 1
            self.halt.wait(self.period_s)

    def finish(self) -> list[int]:
        self.halt.set()
        self.join(10)
        return self.written


def through_fault(proc: RedisProc, tmp: Path, inject: Callable[[redis.Redis], None],
                  clear: Callable[[redis.Redis], None], code: str, hold_ms: int = 2000) -> StreamWriter:
    """Producer running; inject; wait for `failing`/`code` and readings waiting `hold_ms`;
    clear; check exactly once, in order, still storing. Returns the (closed) writer."""
    keys = Keys("faults")
    w = _writer(proc.url, keys, tmp)
    admin = proc.admin()
    prod = Producer(w)
    prod.start()
    try:
        wait_for(lambda: w.stats.written > 200, what="storing before the fault")
        inject(admin)
        st = wait_for(lambda: (s := w.storage()).state == FAILING and s.code == code and s, what=f"failing: {code}")
        assert not w.connected  # not "connected" while Redis refuses writes
        assert st.cause
        # the fault lasts until readings have waited hold_ms: they keep being accepted meanwhile
        wait_for(lambda: w.storage().pending_age_ms(now_ms()) >= hold_ms, what="readings waiting")
        failing = w.storage()
        assert failing.state == FAILING and failing.pending > 0
        problem = failing.problem(now_ms(), after_ms=hold_ms // 2)
        assert problem is not None and st.cause.split(" (")[0] in problem
        clear(admin)
        wait_for(lambda: w.connected, what="storing again")
        written = prod.finish()
        assert w.flush(60), f"still pending: {w.storage()}"
        stored = _ts_in_stream(proc.url, keys.vitals("room-1"))
        missing = sorted(set(written) - set(stored))
        assert not missing and len(stored) == len(written), (
            f"written {len(written)}, stored {len(stored)}, missing {missing[:5]}")
        assert stored == written  # once each, in acceptance order
        # and it goes on storing, without a restart
        w.write(Reading("room-1", "oxi-1", now_ms(), {"hr": 70}))
        assert w.flush(10)
        assert w.storage().state == STORING and w.storage().pending == 0
        assert w.stats.reconnects >= 1
        return w
    finally:
        prod.halt.set()
        w.close(timeout_s=1)
        admin.close()


def test_oom_for_6_s_then_recovery_loses_nothing(redis_proc: RedisProc, tmp_path: Path) -> None:
    """maxmemory below what Redis uses: every write refused (OOM) for 6 s, then lifted."""
    w = through_fault(
        redis_proc, tmp_path,
        lambda a: a.config_set("maxmemory", max(1, int(a.info("memory")["used_memory"]) - 1024)),
        lambda a: a.config_set("maxmemory", 0), "oom", hold_ms=6000)
    assert w.stats.spooled > 0  # failing for over a second: held readings went to disk


def test_readonly_replica_after_failover(redis_proc: RedisProc, tmp_path: Path) -> None:
    """REPLICAOF a master that is not there: a read-only replica (as after a failover)."""
    dead = free_port()
    through_fault(redis_proc, tmp_path,
                  lambda a: a.execute_command("REPLICAOF", "127.0.0.1", str(dead)),
                  lambda a: a.execute_command("REPLICAOF", "NO", "ONE"), "readonly")


def test_misconf_cannot_persist(tmp_path: Path) -> None:
    """The snapshot directory vanishes: BGSAVE fails and Redis refuses writes (MISCONF)."""
    proc = RedisProc(tmp_path / "redis", extra_args=("--enable-protected-configs", "yes")).start()
    gone = tmp_path / "gone"

    def inject(a: redis.Redis) -> None:
        gone.mkdir()
        a.config_set("save", "3600 1")
        a.config_set("dir", str(gone))
        gone.rmdir()  # Redis's working directory no longer exists: it cannot write a snapshot
        a.bgsave()
        wait_for(lambda: a.info("persistence")["rdb_last_bgsave_status"] == "err", what="BGSAVE failed")

    def clear(a: redis.Redis) -> None:
        a.config_set("dir", str(proc.dir))
        wait_for(lambda: not a.info("persistence")["rdb_bgsave_in_progress"], what="no BGSAVE running")
        a.bgsave()
        wait_for(lambda: a.info("persistence")["rdb_last_bgsave_status"] == "ok", what="BGSAVE ok")

    try:
        through_fault(proc, tmp_path, inject, clear, "misconf")
    finally:
        proc.kill()


def test_busy_script(redis_proc: RedisProc, tmp_path: Path) -> None:
    """A script loops: Redis answers BUSY to everyone until SCRIPT KILL."""
    looping: list[threading.Thread] = []

    def inject(a: redis.Redis) -> None:
        a.config_set("busy-reply-threshold", 50)

        def loop() -> None:
            c = redis.Redis(port=redis_proc.port, socket_timeout=60)
            try:
                c.eval("local i = 0 while true do i = i + 1 end", 0)
            except redis.ResponseError:
                pass  # "Script killed by user": what clear() does
            finally:
                c.close()

        looping.append(threading.Thread(target=loop, daemon=True))
        looping[-1].start()

    def clear(a: redis.Redis) -> None:
        a.script_kill()
        looping[-1].join(10)

    through_fault(redis_proc, tmp_path, inject, clear, "busy")


def test_noauth_after_password_set_and_reconnect(redis_proc: RedisProc, tmp_path: Path) -> None:
    """A password appears and our connection is dropped: reconnecting is refused (auth)."""

    def inject(a: redis.Redis) -> None:
        a.config_set("requirepass", "pw")
        a.client_kill_filter(_type="normal", skipme=True)

    def clear(_a: redis.Redis) -> None:
        c = redis.Redis(port=redis_proc.port, password="pw")
        c.config_set("requirepass", "")
        c.close()

    through_fault(redis_proc, tmp_path, inject, clear, "auth")


def test_hung_server_times_out_and_outcome_unknown_is_checked(redis_proc: RedisProc, tmp_path: Path) -> None:
    """SIGSTOP: sends time out with their outcome unknown; on resume each reading once."""
    w = through_fault(redis_proc, tmp_path, lambda _a: redis_proc.pause(), lambda _a: redis_proc.resume(),
                      "timeout", hold_ms=6000)
    assert w.stats.scanned > 0  # the unknown batch was checked against the stream


def test_entry_refused_for_itself_goes_to_rejects_and_the_rest_goes_on(
        redis_url: str, keys: Keys, rclient: redis.Redis, tmp_path: Path) -> None:
    """A room stream key holding a string (WRONGTYPE): its readings go to rejects with the
    reason; other rooms' readings are stored; every callback runs; the writer keeps storing."""
    rclient.set(keys.vitals("room-bad"), "not a stream")
    w = _writer(redis_url, keys, tmp_path)
    done: list[str] = []
    base = now_ms()
    for i in range(5):
        w.write(Reading("room-ok", "oxi-1", base + i, {"hr": 70}), on_stored=lambda i=i: done.append(f"ok{i}"))
        w.write(Reading("room-bad", "oxi-2", base + i, {"hr": 80}), on_stored=lambda i=i: done.append(f"bad{i}"))
    assert w.flush(10)
    assert w.storage().state == STORING
    w.close()
    assert len(rclient.xrange(keys.vitals("room-ok"))) == 5
    rejects = [f for _id, f in rclient.xrange(keys.rejects)]
    assert len(rejects) == 5 and {r["reason"] for r in rejects} == {"store_refused"}
    assert all("WRONGTYPE" in r["detail"] and keys.vitals("room-bad") in r["detail"] for r in rejects)
    assert all('"dev":"oxi-2"' in r["raw"] for r in rejects)  # the refused reading, kept
    assert sorted(done) == sorted([f"ok{i}" for i in range(5)] + [f"bad{i}" for i in range(5)])
    assert w.stats.rejected == 5


@pytest.mark.parametrize(("exc", "kind", "code"), [
    (redis.ConnectionError("Error 111 connecting"), UNREACHABLE, "unreachable"),
    (redis.TimeoutError("Timeout reading from socket"), TIMEOUT, "timeout"),
    (redis.BusyLoadingError("Redis is loading the dataset in memory"), REFUSED, "loading"),
    (redis.AuthenticationError("WRONGPASS invalid username-password pair"), REFUSED, "auth"),
    (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), REFUSED, "oom"),
    (redis.ReadOnlyError("You can't write against a read only replica."), REFUSED, "readonly"),
    (redis.ResponseError("MISCONF Redis is configured to save RDB snapshots"), REFUSED, "misconf"),
    (redis.ResponseError("Command # 3 (XADD k * a 1) of pipeline caused error: BUSY Redis is busy"), REFUSED, "busy"),
    (redis.ResponseError("NOREPLICAS Not enough good replicas to write."), REFUSED, "replicas"),
    (redis.ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"), REFUSED, "readonly"),
    (redis.ResponseError("ERR syntax error"), REFUSED, "refused"),  # for a whole batch: held
])
def test_classification_table(exc: Exception, kind: str, code: str) -> None:
    f = classify(exc)
    assert (f.kind, f.code) == (kind, code) and f.cause


def test_only_per_command_errors_inside_exec_are_per_entry() -> None:
    assert classify(redis.ResponseError("WRONGTYPE Operation against a key"), in_exec=True).kind == ENTRY
    assert classify(redis.ResponseError("ERR something about this entry"), in_exec=True).kind == ENTRY
    # a server-wide refusal is never blamed on the entry, wherever it shows up
    assert classify(redis.exceptions.OutOfMemoryError("command not allowed"), in_exec=True).kind == REFUSED


def test_a_reader_sees_why_redis_refuses_writes(redis_proc: RedisProc) -> None:
    """When Redis refuses every write, ingest cannot report it: a reader asks Redis."""
    from monitor.store.redis_health import write_refusal

    admin = redis_proc.admin()
    try:
        assert write_refusal(admin) is None
        admin.config_set("maxmemory", max(1, int(admin.info("memory")["used_memory"]) - 1024))
        code, cause = write_refusal(admin) or ("", "")
        assert code == "oom" and "out of memory" in cause
        admin.config_set("maxmemory", 0)
        admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        code, cause = write_refusal(admin) or ("", "")
        assert code == "readonly" and "read-only replica" in cause
        admin.execute_command("REPLICAOF", "NO", "ONE")
        assert write_refusal(admin) is None
    finally:
        admin.close()
