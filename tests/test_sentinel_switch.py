"""Redis Sentinel, a planned failover (`SENTINEL FAILOVER`): the old master stays up and turns
replica, so clients still connected to it get `READONLY`. Over `redis+sentinel://` that means
"find the new master" — the stream writer (with `min_replicas = 1`) and the dashboard's
asyncio push loop carry on by themselves; over a plain `redis://` URL to the demoted server
the same reply stays a refusal the writer reports. Sentinels and servers have passwords of
their own (`sentinel_password` in the URL). The CLI and the archive top-up work on the new master.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from monitor.app.cli import main
from monitor.model.clock import now_ms
from monitor.model.keys import Keys
from monitor.model.readings import Reading
from monitor.sessions import archive_topup
from monitor.store import replicas
from monitor.store.redis_conn import connect
from monitor.store.streams import StreamWriter
from tests.configs import config_mapping, parsed, room_entry, serial_device, write_config
from tests.failover_support import MASTER_NAME, SentinelGroup
from tests.servers import RedisProc
from tests.test_mqtt_broker_features import _make_tls_files
from tests.test_push_faults import HubRun
from tests.waiting import wait_for


class Feed(threading.Thread):
    """Readings of one device every 20 ms through a writer; `confirmed` = ts whose callback ran."""

    def __init__(self, writer: StreamWriter) -> None:
        super().__init__(daemon=True)
        self.writer = writer
        self.confirmed: set[int] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        base = now_ms()
        i = 0
        while not self.halt.wait(0.02):
            ts = base + i
            self.writer.write(Reading("room-1", "mon-1", ts, {"hr": 70}), lambda ts=ts: self.confirmed.add(ts))
            i += 1


def test_planned_failover_readonly_means_rediscover(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    group = SentinelGroup(tmp_path / "ha", password="srv-pass", sentinel_password="sent-pass").start()
    url = group.url() + "?sentinel_password=sent-pass"
    mapping = config_mapping("t-" + uuid.uuid4().hex[:8], redis_url=url, data_dir=tmp_path / "data",
                             archive_url=f"sqlite:///{tmp_path / 'archive.db'}",
                             mqtt_url="mqtt://127.0.0.1:1",
                             rooms=[room_entry("room-1", serial_device("mon-1"))], redis={"min_replicas": 1})
    cfg = parsed(mapping)
    conf = str(write_config(tmp_path / "vw.toml", mapping))
    keys = Keys(cfg.clinic.id)
    writer = StreamWriter(url, keys, retention_ms=3600_000, spool_path=tmp_path / "spool.jsonl",
                          min_replicas=cfg.redis.min_replicas)
    feed = Feed(writer)
    hub = HubRun(cfg, url)
    old = group.master
    plain = StreamWriter(old.url, Keys(cfg.clinic.id + "-plain"), retention_ms=3600_000,
                         spool_path=tmp_path / "plain.jsonl")
    try:
        hub.start()
        feed.start()
        wait_for(lambda: len(feed.confirmed) >= 20, 10, "readings confirmed before the failover")
        with group.sentinels[0].client() as s:
            s.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        new = group.wait_failover(old)
        # Sentinel turns the old master into a replica ~8 s after it sees it still a master
        # (its publish period × 4); do now what it will do then
        old.admin().replicaof("127.0.0.1", str(new.port))
        # a plain URL to the demoted server: READONLY is a refusal, reported as such
        plain.write(Reading("room-1", "mon-1", now_ms(), {"hr": 70}))
        wait_for(lambda: plain.storage().code == "readonly", 10, "the plain-URL writer refused (READONLY)")
        # over Sentinel: readings confirmed again, on the new master, pushed to screens
        n = len(feed.confirmed)
        wait_for(lambda: len(feed.confirmed) >= n + 20, 15, "readings confirmed after the failover")
        # a one-off write on a pooled connection to the demoted server fails once (redis-py
        # drops that connection on READONLY); the next one goes to the new master
        ts = wait_for(lambda: hub.reading(hr=71), 10, "a write through Sentinel", ignoring=(redis.ConnectionError,))
        wait_for(lambda: hub.pushed(ts), 15, "the push loop delivering a reading written after the failover")
        feed.halt.set()
        feed.join(5)
        assert writer.flush(15)
        stored = [int(f["ts"]) for _i, f in new.admin().xrange(keys.vitals("room-1")) if f.get("dev") == "mon-1"]
        assert feed.confirmed <= set(stored) and len(stored) == len(set(stored))
        assert writer.stats.rejected == 0 and writer.storage().state == "storing"
        # the CLI and the archive top-up on the same URL, after the failover
        base = ["-c", conf, "--user", "amy"]
        assert main(["session", "start", *base, "--room", "room-1", "--patient", "P-1", "--route", "iv"]) == 0
        sid = capsys.readouterr().out.strip().splitlines()[-1]
        assert new.admin().exists(keys.session_events(sid))  # on the new master
        assert main(["session", "end", *base, "--session", sid]) == 0
        assert "archived" in capsys.readouterr().out
        archive_topup.top_up_once(connect(url), keys, cfg, "t", now_ms())
        assert replicas.confirm(connect(url), keys, 1) == ""  # the old master rejoined as replica
    finally:
        feed.halt.set()
        hub.close()
        writer.close(2)
        plain.close(0.5)
        group.stop()


def test_tls_to_sentinels_and_redis_across_a_kill(tmp_path: Path) -> None:
    """`rediss+sentinel://`: TLS to the Sentinels and to Redis (and between them), passwords on
    both; the writer (min_replicas = 1) follows a kill -9 of the master over TLS."""
    (tmp_path / "tls").mkdir()
    ca, cert, key = _make_tls_files(tmp_path / "tls")
    group = SentinelGroup(tmp_path / "ha", password="srv-pass", sentinel_password="sent-pass",
                          tls=(ca, cert, key)).start()
    url = group.url() + "&sentinel_password=sent-pass"
    assert url.startswith("rediss+sentinel://")
    keys = Keys("t-" + uuid.uuid4().hex[:8])
    writer = StreamWriter(url, keys, retention_ms=3600_000, spool_path=tmp_path / "spool.jsonl", min_replicas=1)
    feed = Feed(writer)
    old = group.master
    try:
        feed.start()
        wait_for(lambda: len(feed.confirmed) >= 20, 10, "readings confirmed over TLS")
        old.kill()
        new = group.wait_failover(old)
        group.rejoin(old, new)  # back as a replica of the new master: WAIT can confirm again
        n = len(feed.confirmed)
        wait_for(lambda: len(feed.confirmed) >= n + 20, 20, "readings confirmed over TLS after the failover")
        feed.halt.set()
        feed.join(5)
        assert writer.flush(15)
        stored = [int(f["ts"]) for _i, f in new.admin().xrange(keys.vitals("room-1"))]
        assert feed.confirmed <= set(stored) and len(stored) == len(set(stored))
    finally:
        feed.halt.set()
        writer.close(2)
        group.stop()


def test_session_events_say_when_no_replica_confirmed_them(redis_proc, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """min_replicas = 1 on a server without a replica: the session is saved, and the CLI says
    it is not confirmed by a replica (session events are written outside the stream writer)."""
    keys = Keys("t-" + uuid.uuid4().hex[:8])
    assert replicas.confirm(redis_proc.admin(), keys, 0) == ""
    assert "not yet confirmed by 1 replica" in replicas.confirm(redis_proc.admin(), keys, 1, 50)
    conf = str(write_config(tmp_path / "vw.toml", config_mapping(
        keys.clinic, redis_url=redis_proc.url, mqtt_url="mqtt://127.0.0.1:1", data_dir=tmp_path / "data",
        rooms=[room_entry("room-1", serial_device("mon-1"))], redis={"min_replicas": 1})))
    assert main(["session", "start", "-c", conf, "--user", "amy", "--room", "room-1", "--patient", "P-1",
                 "--route", "iv"]) == 0
    out = capsys.readouterr()
    assert redis_proc.admin().exists(keys.session_events(out.out.strip().splitlines()[-1]))
    assert "warning: saved on the Redis primary but not yet confirmed by 1 replica" in out.err


@pytest.mark.parametrize("replica_when", ["before", "after"])
def test_a_writer_stalled_across_a_failover_forgets_the_old_masters_stream(tmp_path: Path, replica_when: str) -> None:
    """The writer (min_replicas = 1) holds readings the old master has but no replica confirmed,
    and has read them back there (they are "stored" as far as that master's stream shows).
    The writer then stalls — a GC pause, a starved CPU — while the master is killed and a replica
    promoted, so it sees no connection error: redis-py reconnects the dead pooled connection to
    the new master without a word. What it read on the old master must not count there: every
    reading it confirms must be on the new master (it once confirmed them as duplicates of
    entries only the dead master had — 115 of 222 acknowledged readings lost in one run).
    `replica_when`: the new master has a replica again before the writer wakes (its first try
    there is confirmed) or only after (its first tries there come up short of a replica)."""
    group = SentinelGroup(tmp_path / "ha").start()
    keys = Keys("t-" + uuid.uuid4().hex[:8])
    writer = StreamWriter(group.url(), keys, retention_ms=3600_000, spool_path=tmp_path / "spool.jsonl",
                          min_replicas=1, wait_timeout_ms=200)
    old = group.master
    confirmed: set[int] = set()
    try:
        base = now_ms()
        writer.write(Reading("room-1", "mon-1", base, {"hr": 70}), lambda: confirmed.add(base))
        wait_for(lambda: base in confirmed, 10, "a reading confirmed before the replica goes")
        # the replica's link breaks: what the master takes now, no replica has
        group.replica.pause()
        old.admin().client_kill_filter(_type="replica")
        held = [base + 1 + i for i in range(20)]
        for ts in held:
            writer.write(Reading("room-1", "mon-1", ts, {"hr": 71}), lambda ts=ts: confirmed.add(ts))
        # written to the old master, WAIT short; re-sent after reading the stream back → all
        # "already stored" there, only confirmation missing
        wait_for(lambda: writer.stats.unconfirmed >= 3 and writer.stats.scanned >= len(held), 20,
                 "the held readings written and read back on the old master")
        assert old.admin().xlen(keys.vitals("room-1")) == 1 + len(held)
        with writer._cond:  # the writer stalls here before its next step (white box: a frozen thread)
            n_short = writer.stats.unconfirmed
            old.kill()
            group.replica.resume()
            new = group.wait_failover(old)
            if replica_when == "before":
                rejoin(group, old, new)
        if replica_when == "after":
            wait_for(lambda: writer.stats.unconfirmed >= n_short + 2, 20, "tries on the new master without a replica")
            rejoin(group, old, new)
        wait_for(lambda: set(held) <= confirmed, 30, "the held readings confirmed after the failover")
        stored = [int(f["ts"]) for _i, f in new.admin().xrange(keys.vitals("room-1"))]
        assert set(held) <= set(stored), f"confirmed but not on the new master: {sorted(set(held) - set(stored))}"
        assert len(stored) == len(set(stored))
    finally:
        writer.close(2)
        group.stop()


def test_a_session_event_saved_on_a_master_that_died_is_not_called_confirmed(tmp_path: Path) -> None:
    """A session event is written to the master, which dies before any replica has it; the
    confirmation that follows reaches the promoted replica through redis-py's silent reconnect,
    where WAIT succeeds. It must say the event may be lost — not confirm it."""
    group = SentinelGroup(tmp_path / "ha").start()
    keys = Keys("t-" + uuid.uuid4().hex[:8])
    client = connect(group.url(), timeout_s=2.0)
    old = group.master
    try:
        assert replicas.confirm(client, keys, 1, since=replicas.server_id(client)) == ""  # same master: confirmed
        group.replica.pause()
        old.admin().client_kill_filter(_type="replica")
        before = replicas.server_id(client)
        client.xadd(keys.session_events("S-1"), {"type": "note", "text": "written on the old master only"})
        old.kill()
        group.replica.resume()
        new = group.wait_failover(old)
        rejoin(group, old, new)
        warn = replicas.confirm(client, keys, 1, since=before)
        assert not new.admin().exists(keys.session_events("S-1"))  # it really is gone
        assert "primary changed" in warn and "may be lost" in warn, warn
        assert replicas.confirm(client, keys, 1, since=replicas.server_id(client)) == ""
    finally:
        group.stop()


def rejoin(group: SentinelGroup, old: RedisProc, new: RedisProc) -> None:
    """The old master back as the new one's replica, so WAIT can confirm again."""
    group.rejoin(old, new)
    wait_for(lambda: new.admin().info("replication").get("connected_slaves") == 1, 20,
             "the old master back as the new one's replica")


def test_clients_leave_a_replaced_master_that_is_still_up(tmp_path: Path) -> None:
    """A partition between the Sentinels and the master: the Sentinels cannot reach it (made
    here by changing its password and dropping their connections), promote the replica, and
    can never turn the old master into a replica — but clients' open connections to it still
    work, and it takes writes the new master never sees (in the kill test an alert worker kept
    committing to an abandoned master for 10 s and raised its alarm again afterwards). Clients
    must move to the master the Sentinels name by themselves within about a second: a sync
    client (every role's) and the dashboard's asyncio push loop."""
    group = SentinelGroup(tmp_path / "ha", password="ha-pass").start()
    url = group.url()
    cfg = parsed(config_mapping("t-" + uuid.uuid4().hex[:8], redis_url=url, data_dir=tmp_path / "data",
                                mqtt_url="mqtt://127.0.0.1:1", rooms=[room_entry("room-1", serial_device("mon-1"))]))
    keys = Keys(cfg.clinic.id)
    client = connect(url, timeout_s=5.0)
    hub = HubRun(cfg, url)
    old = group.master
    try:
        hub.start()
        ts = hub.reading(hr=70)
        wait_for(lambda: hub.pushed(ts), 15, "the push loop delivering from the first master")
        client.set(keys.prefix + "probe", "first")  # a pooled connection to the first master
        adm = old.admin()
        adm.config_set("requirepass", "not-what-sentinels-know")  # open connections stay signed in
        for c in adm.client_list():
            if c.get("name", "").startswith("sentinel-"):
                adm.client_kill_filter(_id=c["id"])
        new = group.wait_failover(old)
        assert adm.info("replication")["role"] == "master"  # cut off, still a master
        feeder = new.admin()
        moved_at = time.monotonic()

        def sync_moved() -> bool:
            client.set(keys.prefix + "probe", "after")  # where does the pooled client write?
            return feeder.get(keys.prefix + "probe") == "after"

        def push_moved() -> bool:
            ts = now_ms()
            feeder.xadd(keys.vitals("room-1"), {"ts": str(ts), "dev": "mon-1", "hr": "71"})
            return _pushed_soon(hub, ts)
        wait_for(sync_moved, 5, "the sync client writing to the new master")
        sync_s = time.monotonic() - moved_at
        wait_for(push_moved, 5, "the push loop reading from the new master")
        print(f"\n[figures] after the Sentinels named the new master: sync client on it {sync_s:.1f} s, "
              f"push loop {time.monotonic() - moved_at:.1f} s")
    finally:
        hub.close()
        group.stop()


def _pushed_soon(hub: HubRun, ts: int) -> bool:
    """Whether the reading labelled `ts` reaches the tab within 0.5 s."""
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        if hub.pushed(ts):
            return True
        time.sleep(0.05)
    return False
