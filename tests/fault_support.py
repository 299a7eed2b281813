"""Redis error replies on a redis-server of our own (never the shared one), as context managers.

Each makes Redis answer with the error a clinic will really meet, for as long as the `with`
block lasts, then puts the server back:
- `oom`: `maxmemory` below what is used — every write is refused with `-OOM`;
- `readonly`: `REPLICAOF` an address where no master listens — writes get `-READONLY`, and a
  blocked XREAD is ended with `-UNBLOCKED … (master -> replica?)`, as in a failover;
- `busy`: a Lua script that never ends — every command gets `-BUSY` (SCRIPT KILL at the end);
- `noauth`: `requirepass` set and the other clients dropped — reconnects get `NOAUTH`/auth errors;
- `loading`: DEBUG RELOAD with a slowed loader — commands get `-LOADING`;
- `unblock_xread`: `CLIENT UNBLOCK <id> ERROR` on whoever is blocked in XREAD.
`DEBUG_ARGS` lets a RedisProc take DEBUG commands (DEBUG SLEEP) on our own server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import redis

from monitor.store.embedded import free_port
from tests.servers import RedisProc

DEBUG_ARGS = ("--enable-debug-command", "local")
Fault = Callable[[RedisProc], AbstractContextManager[None]]


@contextmanager
def oom(proc: RedisProc) -> Iterator[None]:
    """Writes refused: out of memory."""
    admin = proc.admin()
    admin.config_set("maxmemory", "1")
    try:
        yield
    finally:
        admin.config_set("maxmemory", "0")
        admin.close()


@contextmanager
def readonly(proc: RedisProc) -> Iterator[None]:
    """Writes refused: a read-only replica of a master that is not there (data kept)."""
    admin = proc.admin()
    admin.replicaof("127.0.0.1", str(free_port()))
    try:
        yield
    finally:
        admin.replicaof("NO", "ONE")
        admin.close()


@contextmanager
def busy(proc: RedisProc) -> Iterator[None]:
    """Every command refused: a script runs forever (until SCRIPT KILL)."""
    admin = proc.admin()
    admin.config_set("busy-reply-threshold", "50")
    started = threading.Event()

    def run() -> None:
        c = redis.Redis(port=proc.port, password=proc.password or None, socket_timeout=60)
        started.set()
        try:
            c.eval("local i = 0 while true do i = i + 1 end", 0)
        except redis.ResponseError:
            pass  # killed, as intended
        finally:
            c.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    started.wait(5)
    _until(lambda: _answers_busy(proc), "the script to block the server")
    try:
        yield
    finally:
        killer = proc.admin()
        _until(lambda: _script_kill(killer), "SCRIPT KILL")
        t.join(10)
        killer.close()
        admin.close()


def _answers_busy(proc: RedisProc) -> bool:
    c = redis.Redis(port=proc.port, password=proc.password or None, socket_timeout=2)
    try:
        c.ping()
        return False
    except redis.ResponseError as e:
        return str(e).startswith("BUSY")
    finally:
        c.close()


def _script_kill(c: redis.Redis) -> bool:
    try:
        c.script_kill()
        return True
    except redis.ResponseError as e:
        return "NOTBUSY" in str(e)


@contextmanager
def noauth(proc: RedisProc, password: str = "fault-pass-1") -> Iterator[None]:
    """Credentials refused: a password required now, every other client dropped."""
    admin = proc.admin()
    admin.config_set("requirepass", password)
    admin.client_kill_filter(_type="normal", skipme=True)
    try:
        yield
    finally:
        admin.config_set("requirepass", "")
        admin.close()


@contextmanager
def loading(proc: RedisProc, keys: int = 50_000, delay_us: int = 30) -> Iterator[None]:
    """Commands refused with LOADING: DEBUG RELOAD of a dataset loaded slowly (`key-load-delay`),
    in a thread. While loading, Redis answers only now and then (every few seconds here), and
    then with -LOADING; the block ends once the reload is done (about 5 s)."""
    admin = proc.admin()
    admin.execute_command("DEBUG", "POPULATE", keys, "fault-pad", 100)
    admin.config_set("key-load-delay", str(delay_us))
    admin.config_set("loading-process-events-interval-bytes", "1024")
    done = threading.Event()

    def reload() -> None:
        c = redis.Redis(port=proc.port, password=proc.password or None, socket_timeout=120)
        try:
            c.execute_command("DEBUG", "RELOAD")
        finally:
            c.close()
            done.set()

    threading.Thread(target=reload, daemon=True).start()
    _until(lambda: _answers_loading(proc) or done.is_set(), "LOADING replies")
    try:
        yield
    finally:
        done.wait(120)
        admin.config_set("key-load-delay", "0")
        batch: list[str] = []
        for k in admin.scan_iter(match="fault-pad:*", count=5000):
            batch.append(k)
            if len(batch) >= 5000:
                admin.delete(*batch)
                batch.clear()
        if batch:
            admin.delete(*batch)
        admin.close()


def _answers_loading(proc: RedisProc) -> bool:
    c = redis.Redis(port=proc.port, password=proc.password or None, socket_timeout=10)
    try:
        c.get("fault-probe")  # not PING: PING is answered while loading
        return False
    except redis.BusyLoadingError:
        return True
    finally:
        c.close()


def unblock_xread(proc: RedisProc, timeout_s: float = 10.0) -> int:
    """End a blocked XREAD with an error, as CLIENT UNBLOCK … ERROR does; the client id."""
    admin = proc.admin()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for c in admin.client_list():
                if c.get("cmd") == "xread" and "b" in c.get("flags", ""):
                    if admin.client_unblock(int(c["id"]), error=True):
                        return int(c["id"])
            time.sleep(0.01)
    finally:
        admin.close()
    raise AssertionError("nobody was blocked in XREAD")


def _until(fn: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


FAULTS: dict[str, Fault] = {"oom": oom, "readonly": readonly, "busy": busy, "noauth": noauth, "loading": loading}
