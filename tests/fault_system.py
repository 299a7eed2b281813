"""The whole system as processes, and the faults a clinic will meet, injected one at a time.

Shared by the fault-injection suite (tests/test_fault_injection.py) and the soak benchmark
(benchmarks/soak.py). `System` starts, on free ports and in a work directory of its own:
a redis-server (AOF, DEBUG and protected CONFIG allowed, for the faults), a Mosquitto,
`vitalwatch simulate --truth` (one MQTT `json` monitor per room: the ground truth),
`vitalwatch ingest` (reaching Redis through `LinkProxy`, a TCP proxy that can stall or drop
the link), `vitalwatch alerts` and `vitalwatch dashboard`, each as a real subprocess.

`INJECTORS` maps a case name to a function that injects one fault into a running System and
takes it away again, returning when (monotonic) the fault began and ended and whether
monitoring really stopped meanwhile. `Screen` watches a NOT MONITORING indicator (a
logged-in browser's banner, or `/health`) in a thread and times its transitions.
`audit` compares the truth log with Redis: accepted, stored, lost, duplicated, out of order.
"""

from __future__ import annotations

import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

from devices.simulators.truth import read_truth
from monitor.accounts import users
from monitor.model.codec import Identity, reading_identity
from monitor.model.keys import Keys
from monitor.model.readings import AHEAD_TOLERANCE_MS
from monitor.store.embedded import free_port
from monitor.store.streams import read_readings
from tests.configs import alarm_defaults, alarm_rule, config_mapping, mqtt_device, room_entry, write_config
from tests.fault_support import DEBUG_ARGS, oom, readonly
from tests.servers import MosquittoProc, RedisProc, kill_quietly
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
BROKER_CONF = "autosave_interval 1\n"
NURSE = ("nina", "nurse-pass-1")
SPO2_LOW = 88  # the desaturation scenario goes below this ~15–21 simulated min after the dose
CLOCK_DEVICE_ROOM = 1  # room-1's monitor: its clock steps +2 min, then -2 min, periodically
# and 5 s back for 4 s: its ticks keep their millisecond phase (1 reading/s), so the labels of
# that last step repeat ones sent 5 s earlier, exactly — new readings with used labels, which
# must be stored (the -2 min step repeats only labels older than the suite's run).
CLOCK_STEPS = ({"at_s": 20, "every_s": 40, "duration_s": 8, "skew_s": 120},
               {"at_s": 36, "every_s": 40, "duration_s": 8, "skew_s": -120},
               {"at_s": 10, "every_s": 40, "duration_s": 4, "skew_s": -5})


# ------------------------------------------------------------------ the link ingest -> Redis
class LinkProxy(threading.Thread):
    """A TCP proxy between ingest and Redis that can `stall` (bytes held, connections open)
    or `drop` (every connection reset, new ones refused) the link, as a network does."""

    def __init__(self, target_port: int) -> None:
        super().__init__(daemon=True, name="link-proxy")
        self.target = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.refusing = False
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.halt = False

    def run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.halt:
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            if self.refusing:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                _reset(client)
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self.halt:
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for s in ready:
                    self.flowing.wait()
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):  # ValueError: select on a socket `drop` has closed
            return
        finally:
            for s in (a, b):
                with suppress(OSError):
                    s.close()
            with self.lock, suppress(ValueError):
                self.pairs.remove((a, b))

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def drop(self) -> None:
        """Reset every connection and refuse new ones until `restore`."""
        self.refusing = True
        with self.lock:
            pairs = list(self.pairs)
        for a, b in pairs:
            _reset(a)
            with suppress(OSError):
                b.close()

    def restore(self) -> None:
        self.refusing = False

    def close(self) -> None:
        self.halt = True
        self.flowing.set()
        self.sock.close()


def _reset(s: socket.socket) -> None:
    with suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()


# ------------------------------------------------------------------ the system
class System:
    """Redis, Mosquitto, simulate, ingest, alerts and dashboard as processes (see module doc)."""

    def __init__(self, workdir: Path, rooms: int = 6, speed: float = 12.0, seed: int = 5) -> None:
        self.dir = workdir
        self.rooms = [f"room-{i}" for i in range(1, rooms + 1)]
        self.speed, self.seed = speed, seed
        self.clinic = "fi-" + uuid.uuid4().hex[:8]
        self.keys = Keys(self.clinic)
        self.redis = RedisProc(workdir / "redis", extra_args=(*DEBUG_ARGS, "--enable-protected-configs", "local"))
        # as deploy/mosquitto/mosquitto.conf: sessions saved every second, so a broker killed -9
        # comes back knowing ingest's subscription (else it drops what devices publish meanwhile)
        self.broker = MosquittoProc(workdir / "mqtt", extra_conf=BROKER_CONF)
        self.proxy: LinkProxy | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Any] = {}
        self.truth_file = workdir / "truth.jsonl"
        self.data = workdir / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client: redis.Redis | None = None
        self.t0_ms = 0  # when the system was up and watched (set by the user of it)

    def device(self, room: str) -> str:
        return "mon-" + room.split("-")[1]

    def topic(self, room: str) -> str:
        return f"vw-fi/{self.clinic}/{room}/mon"

    def _config(self, redis_url: str) -> dict[str, Any]:
        return config_mapping(
            self.clinic, redis_url=redis_url, mqtt_url=self.broker.url, data_dir=self.data,
            archive_url=f"sqlite:///{self.dir / 'archive.db'}",
            rooms=[room_entry(r, mqtt_device(self.device(r), "json", self.topic(r), silence_s=5)) for r in self.rooms],
            alerts={"heartbeat_stale_s": 3},
            alarms=alarm_defaults(spo2=alarm_rule(low=SPO2_LOW)))

    def start(self) -> System:
        self.redis.start()
        self.broker.start()
        self.proxy = LinkProxy(self.redis.port)
        self.proxy.start()
        self.cfg = write_config(self.dir / "vitalwatch.toml", self._config(self.redis.url))
        self.ingest_cfg = write_config(self.dir / "ingest.toml",
                                       self._config(f"redis://127.0.0.1:{self.proxy.port}/0"))
        timeline = self.dir / "timeline.toml"
        steps = "".join(
            f'[[faults]]\nkind = "clock-skew"\ndevice = "mon-{CLOCK_DEVICE_ROOM}"\n'
            + "".join(f"{k} = {v}\n" for k, v in step.items()) for step in CLOCK_STEPS)
        timeline.write_text(f'scenarios = ["desaturation"]\ndose_at_min = 2\n{steps}')
        self.client = redis.Redis.from_url(self.redis.url, decode_responses=True, socket_timeout=10)
        users.create_user(self.client, self.keys, NURSE[0], "nurse", NURSE[1])
        self.start_role("ingest")
        self.start_role("alerts")
        self.start_role("dashboard")
        wait_for(lambda: self.health()[0] == 200, 60, "the dashboard healthy", ignoring=(requests.RequestException,))
        self.start_role("simulate", "--scenario", str(timeline), "--speed", str(self.speed), "--seed",
                     str(self.seed), "--truth", str(self.truth_file))
        wait_for(lambda: all(self.stored(r) for r in self.rooms), 60, "every room storing")
        return self

    def start_role(self, role: str, *extra: str) -> None:
        cfg = self.ingest_cfg if role == "ingest" else self.cfg
        args = [*extra, *(["--port", str(self.port)] if role == "dashboard" else [])]
        log = self.logs.get(role) or open(self.dir / f"{role}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.logs[role] = log
        self.procs[role] = subprocess.Popen([sys.executable, "-m", "monitor", role, "-c", str(cfg), *args], cwd=ROOT,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def stop(self) -> None:
        sim = self.procs.get("simulate")
        if sim is not None and sim.poll() is None:
            sim.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                sim.wait(15)
        for p in self.procs.values():
            kill_quietly(p)
        for log in self.logs.values():
            log.close()
        if self.proxy:
            self.proxy.close()
        if self.client:
            self.client.close()
        self.redis.kill()
        self.broker.kill()

    def pids(self) -> dict[str, int]:
        out = {role: p.pid for role, p in self.procs.items() if p.poll() is None}
        for name, srv in (("redis", self.redis), ("mosquitto", self.broker)):
            if srv.proc and srv.proc.poll() is None:
                out[name] = srv.proc.pid
        return out

    def alive(self) -> dict[str, bool]:
        return {role: p.poll() is None for role, p in self.procs.items()}

    def health(self) -> tuple[int, dict[str, Any]]:
        r = requests.get(f"{self.url}/health", timeout=5)
        return r.status_code, r.json()

    def stored(self, room: str) -> list[Any]:
        assert self.client is not None
        return list(read_readings(self.client, self.keys, room))

    def alerts(self) -> list[dict[str, str]]:
        assert self.client is not None
        return [f for _i, f in self.client.xrange(self.keys.alerts)]

    def truth(self) -> list[dict[str, Any]]:
        return [r for r in read_truth(self.truth_file) if r["kind"] == "reading" and r["expect"] == "stored"]


# ------------------------------------------------------------------ what a screen shows
class Screen(threading.Thread):
    """Polls `text()` (the NOT MONITORING banner's text, '' when none) and keeps every change
    with its monotonic time, so a case can tell when the screen said it and when it cleared."""

    def __init__(self, text: Callable[[], str], interval_s: float = 0.1) -> None:
        super().__init__(daemon=True, name="screen")
        self.text, self.interval = text, interval_s
        self.changes: list[tuple[float, str]] = []
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        last: str | None = None
        while not self.halt.is_set():
            try:
                now = self.text() or ""
            except Exception:  # noqa: BLE001 - a page redrawn, a server restarting: not a change
                now = last if last is not None else ""
            if now != last:
                with self.lock:
                    self.changes.append((time.monotonic(), now))
                last = now
            self.halt.wait(self.interval)

    def first(self, after: float, shown: bool) -> float | None:
        """When, after `after`, the screen first showed NOT MONITORING (`shown`) or nothing."""
        with self.lock:
            for t, text in self.changes:
                if t >= after and bool(text) == shown:
                    return t
        return None

    def clear_after(self, t: float) -> float | None:
        """When, from `t` on, the screen was clear: `t` itself if it was, else its first clear."""
        return t if self.at(t) == "" else self.first(t, False)

    def at(self, t: float) -> str:
        with self.lock:
            text = ""
            for when, what in self.changes:
                if when > t:
                    break
                text = what
            return text

    def showing(self) -> str:
        with self.lock:
            return self.changes[-1][1] if self.changes else ""


def health_text(system: System) -> Callable[[], str]:
    """`/health` as a screen: its problems while non-200 (what `vitalwatch dashboard` fails on)."""
    def text() -> str:
        code, body = system.health()
        return "" if code == 200 else "; ".join(body.get("problems", [])) or f"HTTP {code}"
    return text


# ------------------------------------------------------------------ the faults
@dataclass
class Injected:
    """What one injector did: when (monotonic and wall ms) the fault began and ended, and whether
    monitoring really stopped meanwhile (readings accepted but not stored)."""

    started: float
    ended: float
    start_ms: int
    end_ms: int
    stops_monitoring: bool
    note: str = ""
    says: str = ""  # words the NOT MONITORING banner must name (the cause), when it stops monitoring


def _now() -> tuple[float, int]:
    return time.monotonic(), int(time.time() * 1000)


def _hold(t0: float, seconds: float) -> None:
    time.sleep(max(0.0, t0 + seconds - time.monotonic()))  # the fault lasts this long (not a sync)


def _for(hold_s: float, begin: Callable[[], object], end: Callable[[], object], note: str = "",
         says: str = "") -> Injected:
    """Begin a fault that stops monitoring, hold it `hold_s`, end it: when it began and ended."""
    t0, m0 = _now()
    begin()
    _hold(t0, hold_s)
    end()
    t1, m1 = _now()
    return Injected(t0, t1, m0, m1, True, note=note, says=says)


def inject_redis_kill(s: System, hold_s: float = 4.0) -> Injected:
    """redis-server kill -9, down `hold_s`, restarted on the same port and AOF."""
    return _for(hold_s, s.redis.kill, s.redis.start)


def inject_redis_sigstop(s: System, hold_s: float = 10.0) -> Injected:
    """redis-server SIGSTOP for `hold_s` (hung: connections open, nothing answers), SIGCONT."""
    return _for(hold_s, s.redis.pause, s.redis.resume)


def _refusal(fault: Callable[[RedisProc], Any]) -> Callable[[System, float], Injected]:
    def inject(s: System, hold_s: float = 5.0) -> Injected:
        t0, m0 = _now()
        with fault(s.redis):
            _hold(t0, hold_s)
        t1, m1 = _now()
        return Injected(t0, t1, m0, m1, True)
    inject.__doc__ = f"Redis refuses writes ({fault.__name__}) for `hold_s`."
    return inject


class misconf:  # noqa: N801 - a context manager like tests.fault_support's
    """Writes refused with MISCONF ("cannot persist to disk"), as a full disk makes Redis answer:
    its snapshot directory is made to vanish (`CONFIG SET dir` to a directory then removed) and a
    BGSAVE fails, so `stop-writes-on-bgsave-error` refuses writes. No root, no mount, no loop
    device: works on a plain CI machine. (A full disk under the AOF with `appendfsync always`
    makes Redis exit instead — the kill -9 case.) Put back: `save ""` and the old dir."""

    def __init__(self, proc: RedisProc) -> None:
        self.proc = proc

    def __enter__(self) -> None:
        self.admin = self.proc.admin()
        self.old_dir = self.admin.config_get("dir")["dir"]
        gone = tempfile.mkdtemp(prefix="vw-misconf-")
        self.admin.config_set("dir", gone)
        os.rmdir(gone)
        self.admin.config_set("save", "3600 1")
        with suppress(redis.ResponseError):
            self.admin.bgsave()
        wait_for(lambda: self.admin.info("persistence")["rdb_last_bgsave_status"] == "err", 10, "BGSAVE failing")

    def __exit__(self, *exc: object) -> None:
        self.admin.config_set("save", "")
        self.admin.config_set("dir", self.old_dir)
        self.admin.close()


def inject_spool_full(s: System, hold_s: float = 6.0) -> Injected:
    """The spool's disk full while Redis is down: ingest's file-size limit (RLIMIT_FSIZE, set on the
    running process with prlimit(2)) is what its spool holds now plus 512 bytes, so appends fail with
    EFBIG (Python ignores SIGXFSZ) — as ENOSPC on a full disk would. Redis is kill -9'd for
    `hold_s` meanwhile so that everything must go through the spool."""
    pid = s.procs["ingest"].pid
    # Proof the appends were refused: ingest says its spool is writable again, or (Redis back
    # first and taking what memory held) that nothing waits for it any more — both said only
    # after an append failed. Counted, since an earlier injection may have said it already.
    said = ("writable again", "nothing waits for it any more")
    log_path = s.dir / "ingest.log"

    def refusals() -> int:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        return sum(text.count(w) for w in said)

    seen = refusals()
    size = sum(p.stat().st_size for p in (s.data / "spool").rglob("*") if p.is_file()) if (s.data / "spool").exists() else 0
    limit = size + 512
    old = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        injected = _for(hold_s, s.redis.kill, s.redis.start, note=f"spool limited to {limit} bytes: appends refused")
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, old)
    # proof the appends were refused: ingest said it keeps entries in memory because the spool
    # cannot be written (whether Redis or a later spill then took them depends on timing)
    wait_for(lambda: refusals() > seen, 20, "ingest saying its spool could not be written for a while")
    return injected


def inject_broker_kill(s: System, hold_s: float = 6.0) -> Injected:
    """Mosquitto kill -9 (no save on exit), down `hold_s`, restarted on the same port and data.
    Nothing reaches ingest meanwhile: the screens say NOT MONITORING, naming the broker (the
    clinic-wide `broker` cause, its devices' own silent alarms held back)."""
    return _for(hold_s, s.broker.kill, s.broker.start,
                note="banner names the broker; devices' silent alarms held back", says="MQTT broker unreachable")


def inject_ingest_kill_torn(s: System, hold_s: float = 5.0) -> Injected:
    """Redis down; ingest spools; kill -9 ingest, leave half a line at the end of its spool (what a
    crash mid-append leaves), start ingest again, then bring Redis back."""
    t0, m0 = _now()
    s.redis.kill()
    spool = s.data / "spool"
    wait_for(lambda: any(p.stat().st_size for p in spool.glob("*.jsonl")), 15, "ingest spooling")
    time.sleep(max(0.0, t0 + hold_s / 2 - time.monotonic()))
    killed_ms = int(time.time() * 1000)
    s.procs["ingest"].send_signal(signal.SIGKILL)
    s.procs["ingest"].wait()
    files = [p for p in spool.glob("*.jsonl") if p.stat().st_size]
    torn = 0
    for p in files:
        last = p.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        with p.open("ab") as fh:
            fh.write(last[: len(last) // 2])
        torn += 1
    s.start_role("ingest")
    _hold(t0, hold_s)
    s.redis.start()
    t1, m1 = _now()
    return Injected(t0, t1, m0, m1, True, note=f"ingest killed at {killed_ms}; torn tail in {torn} spool file(s)")


def inject_link_stall(s: System, hold_s: float = 6.0) -> Injected:
    """The TCP link ingest → Redis stalls for `hold_s` (bytes held both ways, connections open), then
    flows again, delivering what it held."""
    assert s.proxy is not None
    return _for(hold_s, s.proxy.stall, s.proxy.resume)


def inject_link_drop(s: System, hold_s: float = 4.0) -> Injected:
    """The TCP link ingest → Redis drops: connections reset, new ones refused for `hold_s`."""
    assert s.proxy is not None
    return _for(hold_s, s.proxy.drop, s.proxy.restore)


INJECTORS: dict[str, Callable[..., Injected]] = {
    "redis kill -9": inject_redis_kill,
    "redis SIGSTOP 10 s": inject_redis_sigstop,
    "redis OOM (maxmemory)": _refusal(oom),
    "redis READONLY (REPLICAOF)": _refusal(readonly),
    "redis MISCONF (cannot persist)": _refusal(misconf),
    "spool disk full (RLIMIT_FSIZE) in a Redis outage": inject_spool_full,
    "broker kill -9": inject_broker_kill,
    "ingest kill -9 in a Redis outage (torn spool)": inject_ingest_kill_torn,
    "link ingest-Redis stalls": inject_link_stall,
    "link ingest-Redis drops": inject_link_drop,
}


# ------------------------------------------------------------------ truth against Redis
@dataclass
class Audit:
    """Accepted readings (truth: sent, `expect` stored) against what Redis holds."""

    accepted: int = 0
    stored: int = 0
    lost: list[dict[str, Any]] = field(default_factory=list)
    duplicated: list[Any] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    identical: int = 0  # a reading equal in label, values and flags to one before it: one reading

    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order)

    def line(self) -> str:
        return (f"accepted {self.accepted}, stored {self.stored}, lost {len(self.lost)}, "
                f"duplicated {len(self.duplicated)}, out of order {len(self.out_of_order)}")


def _label(r: dict[str, Any]) -> tuple[int, bool]:
    """The label ingest should store for a truth reading and whether it is exact: the device's
    time when plausible, else the receive time (close to the send time, not exact)."""
    dev = r.get("device_ts_ms")
    if dev is None:
        return r["ts_ms"], True
    if "clock_skew" in r["flags"] or dev > r["ts_ms"] + AHEAD_TOLERANCE_MS:
        return r["ts_ms"], False
    return dev, True


def audit(s: System, from_ms: int, to_ms: int, rooms: list[str] | None = None) -> Audit:
    """Truth readings sent in [from_ms, to_ms] against each room's stream: each one stored once
    (exact label, or its receive time within 15 s for a clock ahead), in the order sent. A
    duplicate is one identity (model/codec.py: device, label, values and flags) stored twice;
    one label with other values is two readings (a device clock stepped back).

    Readings sent before from_ms are paired first too, only not counted: a device whose clock
    steps back re-uses labels, and a window that starts between the two sends would otherwise
    pair its reading with the earlier one's stored copy and call it out of order (the soak's
    per-fault audits said "out of order 1" where the whole run's said 0)."""
    out = Audit()
    truth = [r for r in s.truth() if r["ts_ms"] <= to_ms]
    for room in rooms or s.rooms:
        want = [r for r in truth if r["room"] == room]
        got = s.stored(room)
        by_label: dict[int, list[int]] = {}
        copies: dict[Identity, int] = {}  # stored copies per identity (device, ts, values+flags)
        for i, g in enumerate(got):
            by_label.setdefault(g.ts_ms, []).append(i)
            ident = reading_identity(g)
            copies[ident] = copies.get(ident, 0) + 1
        for (_dev, ts_text, _digest), n in copies.items():
            # one label twice with other values is two readings (a device clock stepped back)
            if n > 1 and from_ms - 130_000 <= int(ts_text) <= to_ms + 130_000:
                out.duplicated.append((room, int(ts_text), n))
        used: set[int] = set()
        positions: list[int] = []
        for r in want:
            counted = r["ts_ms"] >= from_ms
            out.accepted += counted
            label, exact = _label(r)
            values = {k: float(v) for k, v in r["values"].items()}
            if exact:
                same = [i for i in by_label.get(label, []) if dict(got[i].values) == values]
                hits = [i for i in same if i not in used]  # a re-used label: the copy with these values
                if not hits and any(got[i].flags == set(r["flags"]) for i in same):
                    if counted:  # stored once by design: it carries nothing new (docs/reliability.md)
                        out.identical += 1
                        out.stored += 1
                    continue
                hits = hits or [i for i in by_label.get(label, []) if i not in used]
            else:
                hits = [i for i, g in enumerate(got) if i not in used and label <= g.ts_ms <= label + 15_000
                        and dict(g.values) == values and "clock_skew" in g.flags]
            if not hits:
                if counted:
                    out.lost.append(r)
                continue
            used.add(hits[0])
            if counted:
                positions.append(hits[0])
                out.stored += 1
        for k in range(1, len(positions)):
            if positions[k] < positions[k - 1]:
                a, b = got[positions[k - 1]], got[positions[k]]
                out.out_of_order.append(f"{room}: label {b.ts_ms} (received {b.recv_ms}) sent after {a.ts_ms} "
                                        f"(received {a.recv_ms}) but stored before it")
    return out


def wait_all_stored(s: System, from_ms: int, to_ms: int, timeout_s: float = 45.0) -> Audit:
    """Wait (bounded) until the truth readings of [from_ms, to_ms] are all stored; the audit."""
    last: list[Audit] = []

    def done() -> bool:
        last[:] = [audit(s, from_ms, to_ms)]
        return not last[0].lost
    with suppress(AssertionError):
        wait_for(done, timeout_s, "every accepted reading stored", interval_s=0.5)
    return last[0]


def alarms_required(s: System, from_ms: int, to_ms: int) -> tuple[set[str], set[str]]:
    """Rooms whose first SpO2 below SPO2_LOW (truth) was sent in [from_ms, to_ms]: the alarms the
    truth requires of this window, and those among them raised (alerts stream)."""
    first: dict[str, int] = {}
    for r in s.truth():
        v = r["values"].get("spo2")
        if v is not None and float(v) < SPO2_LOW and r["room"] not in first:
            first[r["room"]] = r["ts_ms"]
    need = {room for room, t in first.items() if from_ms <= t <= to_ms}
    raised = {a["room"] for a in s.alerts() if a.get("event") == "raised" and a.get("metric") == "spo2"}
    return need, need & raised


def silent_alarms(s: System, device: str) -> list[dict[str, str]]:
    """'no reading for over N s' alarms raised for `device` alone (none is due while it sends
    every second, whatever its clock says). One raised within 20 s of another device's is the
    whole clinic going quiet (the broker killed), not this device's clock."""
    quiet = [a for a in s.alerts() if a.get("event") == "raised" and "no reading for over" in a.get("message", "")]
    return [a for a in quiet if a.get("dev") == device
            and not any(o.get("dev") != device and abs(int(o["ts"]) - int(a["ts"])) < 20_000 for o in quiet)]


def proc_sample(pid: int) -> tuple[float, float]:
    """(RSS MB, CPU seconds user+system) of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def have_tools() -> str | None:
    """Why the system cannot run here, or None."""
    for tool in ("redis-server", "mosquitto"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} not installed"
    return None
