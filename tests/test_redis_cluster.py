"""Two clinics on one Redis Cluster (3 masters, started here), every role a real process.

Each clinic runs `vitalwatch ingest`, `alerts` and `dashboard` with `redis.url =
redis+cluster://…`; MQTT monitors publish readings QoS 1 and remember every acknowledged
one (the truth). The clinic ids are chosen so their hash tags `{<clinic>}` fall on different
masters, and the cluster itself (CLUSTER KEYSLOT, CLUSTER SLOTS, the keys on each node) must
say each clinic's keys live on its own shard. Then one clinic's slot is migrated to another
master (CLUSTER SETSLOT MIGRATING/IMPORTING + MIGRATE, one key at a time while readings
flow, so clients meet ASK and then MOVED): no acknowledged reading is lost or stored twice,
and the same processes go on storing and raising alarms. Then the other clinic's master dies
with no replica: this clinic monitors on. On a cluster with a replica per master, a master
is killed with `kill -9` while readings flow: its replica takes over, nothing is lost.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import redis
import requests
from redis.crc import key_slot

from monitor.accounts import tokens, users
from monitor.app.cli import main
from monitor.model.clock import now_ms
from monitor.model.keys import Keys
from monitor.store.embedded import free_port
from monitor.store.redis_conn import connect
from monitor.store.redis_faults import classify
from tests.configs import alarm_defaults, alarm_rule, config_mapping, mqtt_device, room_entry, write_config
from tests.servers import MosquittoProc, RedisClusterProc, RedisProc, kill_quietly
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
ROOM = "room-1"
ROLES = ("ingest", "alerts", "dashboard")


class Monitor(threading.Thread):
    """One clinic's MQTT monitor: a JSON reading every 0.1 s, every acknowledged `ts` kept."""

    def __init__(self, port: int, clinic: str) -> None:
        super().__init__(daemon=True)
        self.topic = f"{clinic}/{ROOM}/mon"
        self.sent: list[int] = []
        self.spo2 = 97
        self.stop_event = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"mon-{clinic}", protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def run(self) -> None:
        last = 0
        while not self.stop_event.wait(0.1):
            ts = max(now_ms(), last + 1)  # one reading per ts (the writer's identity)
            msg = self.client.publish(self.topic, json.dumps({"ts": ts, "hr": 72, "spo2": self.spo2}), qos=1)
            msg.wait_for_publish(10)
            self.sent.append(ts)
            last = ts

    def finish(self) -> None:
        self.stop_event.set()
        self.join(15)
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Clinic:
    id: str
    keys: Keys
    port: int
    token: str
    procs: dict[str, subprocess.Popen[bytes]]
    monitor: Monitor
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str) -> requests.Response:
        return requests.get(self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)


@dataclass
class System:
    cluster: RedisClusterProc
    client: redis.cluster.RedisCluster
    clinics: list[Clinic]
    broker: MosquittoProc


def slot_of(client: redis.cluster.RedisCluster, key: str) -> int:
    """The key's slot as the cluster computes it (CLUSTER KEYSLOT)."""
    return int(client.cluster_keyslot(key))


def two_clinics_on_different_masters(cluster: RedisClusterProc) -> list[str]:
    """The first two ids `vw-<n>` whose hash tags are served by different masters now."""
    admin = cluster.nodes[0].admin()
    chosen: dict[int, str] = {}
    for n in range(100):
        cid = f"vw-{n}"
        port = cluster.node_for_slot(int(admin.execute_command("CLUSTER", "KEYSLOT", Keys(cid).alerts))).port
        chosen.setdefault(port, cid)
        if len(chosen) == 2:
            return list(chosen.values())
    raise AssertionError("no two clinic ids on different masters")


def stored_ts(client: redis.cluster.RedisCluster, c: Clinic) -> list[int]:
    return [int(f["ts"]) for _i, f in client.xrange(c.keys.vitals(ROOM))]


def raised_spo2(client: redis.cluster.RedisCluster, c: Clinic) -> list[str]:
    return [f["alert"] for _i, f in client.xrange(c.keys.alerts)
            if f.get("event") == "raised" and f.get("metric") == "spo2"]


def all_acknowledged_stored_once(client: redis.cluster.RedisCluster, c: Clinic) -> None:
    sent = list(c.monitor.sent)
    stored = wait_for(lambda: (ts := stored_ts(client, c)) and set(sent) <= set(ts) and ts, 30,
                      f"every acknowledged reading of {c.id} stored")
    assert len(stored) == len(set(stored)), f"{c.id}: {len(stored) - len(set(stored))} reading(s) stored twice"


@contextlib.contextmanager
def running(tmp: Path, cluster: RedisClusterProc, clinic_ids: list[str]) -> Iterator[System]:
    """A broker and, per clinic, its three roles as processes on `cluster` and its monitor
    publishing; a signed-in API token per clinic. Everything stopped on the way out."""
    broker = MosquittoProc(tmp / "mqtt").start()
    client = connect(cluster.url)
    clinics: list[Clinic] = []
    logs = []
    try:
        for cid in clinic_ids:
            keys = Keys(cid)
            cfg = write_config(tmp / f"{cid}.toml", config_mapping(
                cid, redis_url=cluster.url, mqtt_url=broker.url, data_dir=tmp / f"data-{cid}",
                archive_url=f"sqlite:///{tmp / f'{cid}-archive.db'}",
                rooms=[room_entry(ROOM, mqtt_device("mon-1", "json", f"{cid}/{ROOM}/mon"))],
                alerts={"heartbeat_stale_s": 5, "owner_ttl_s": 3},
                alarms=alarm_defaults(spo2=alarm_rule(low=90))))
            users.create_user(client, keys, "robot", "nurse", "robot-pass-12")
            token = tokens.issue_token(client, keys, "robot", scopes=["read"])
            port = free_port()
            procs = {}
            for role in ROLES:
                log = open(tmp / f"{cid}-{role}.log", "wb")  # noqa: SIM115 - closed at teardown
                logs.append(log)
                extra = ["--port", str(port)] if role == "dashboard" else []
                procs[role] = subprocess.Popen([sys.executable, "-m", "monitor", role, "-c", str(cfg), *extra],
                                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            clinics.append(Clinic(cid, keys, port, token, procs, Monitor(broker.port, cid), cfg))
        for c in clinics:
            wait_for(lambda c=c: c.api("/api/v1/rooms").status_code == 200, 60, f"{c.id}'s dashboard answering",
                     ignoring=(requests.RequestException,))
            c.monitor.start()
        yield System(cluster, client, clinics, broker)
    finally:
        for c in clinics:
            c.monitor.finish() if c.monitor.is_alive() else None
            for p in c.procs.values():
                kill_quietly(p)
        for f in logs:
            f.close()
        client.close()
        broker.stop()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """Two clinics whose hash tags fall on different masters of a 3-master cluster."""
    tmp = tmp_path_factory.mktemp("cluster")
    cluster = RedisClusterProc(tmp / "redis", masters=3).start()
    try:
        with running(tmp, cluster, two_clinics_on_different_masters(cluster)) as system:
            yield system
    finally:
        cluster.stop()


def every_key(keys: Keys) -> dict[str, str]:
    """Every key name `Keys` builds (methods called with a placeholder argument)."""
    out = {}
    for name, attr in inspect.getmembers(type(keys)):
        if isinstance(attr, property):
            out[name] = getattr(keys, name)
        elif inspect.isfunction(attr) and not name.startswith("_"):
            n = len(inspect.signature(attr).parameters) - 1
            out[name] = getattr(keys, name)(*(["x1"] * n))
    return out


def test_every_key_of_a_clinic_carries_its_hash_tag_so_one_clinic_is_one_slot() -> None:
    keys = Keys("north")
    built = every_key(keys)
    assert len(built) > 40  # the walk found the key builders
    assert {k: v for k, v in built.items() if not v.startswith("vw:{north}:")} == {}
    assert {key_slot(v.encode()) for v in built.values()} == {key_slot(b"north")}


def test_cluster_redirections_and_lost_slots_are_waits_not_bad_entries() -> None:
    """A MOVED/ASK/TRYAGAIN/CLUSTERDOWN reply (also inside an EXEC) holds the batch for a retry,
    never sends the readings to `rejects`; no node for a slot yet is "unreachable"."""
    for exc in (redis.exceptions.MovedError("3999 127.0.0.1:7001"), redis.exceptions.AskError("3999 127.0.0.1:7001"),
                redis.exceptions.TryAgainError("Multiple keys request during rehashing of slot"),
                redis.exceptions.ClusterDownError("The cluster is down")):
        fault = classify(exc, in_exec=True)
        assert (fault.kind, fault.code) == ("refused", "cluster"), (exc, fault)
    fault = classify(redis.exceptions.SlotNotCoveredError("Slot 3999 is not covered by the cluster"))
    assert fault.kind == "unreachable", fault


@pytest.mark.slow
def test_two_clinics_run_side_by_side_with_their_keys_on_different_shards(system: System) -> None:
    client, cluster = system.client, system.cluster
    owners: list[RedisProc] = []
    for c in system.clinics:
        wait_for(lambda c=c: len(stored_ts(client, c)) >= 5, 30, f"readings of {c.id} stored")
        # the cluster says: every key of the clinic is in one slot, served by one master...
        slot = slot_of(client, c.keys.vitals(ROOM))
        assert {slot_of(client, k) for k in (c.keys.alerts, c.keys.heartbeats, c.keys.room_owner(ROOM),
                                             c.keys.device_status("mon-1"), c.keys.user("robot"))} == {slot}
        owner = cluster.node_for_slot(slot)
        owners.append(owner)
        # ...and the keys are really there: that master holds them, asked directly
        direct = owner.admin()
        assert direct.exists(c.keys.vitals(ROOM), c.keys.user("robot"), c.keys.heartbeats) == 3
        assert int(direct.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) >= 5
    assert owners[0].port != owners[1].port, "both clinics on one shard"

    # an alarm in each clinic, raised by its own alert engine from its own readings
    for c in system.clinics:
        c.monitor.spo2 = 82
    for c in system.clinics:
        wait_for(lambda c=c: raised_spo2(client, c), 30, f"an SpO2 alarm raised in {c.id}")
        c.monitor.spo2 = 97
    # each dashboard reads its own clinic: the push loop's room view (asyncio client) and
    # the alert list (sync client)
    for c in system.clinics:
        rooms = wait_for(lambda c=c: (r := c.api("/api/v1/rooms").json()["rooms"]) and r[0]["latest"].get("spo2")
                         and r, 30, f"{c.id}'s dashboard showing the room")
        assert [r["id"] for r in rooms] == [ROOM]
        alerts = c.api("/api/v1/alerts").json()
        assert set(raised_spo2(client, c)) <= {e.get("alert") for e in alerts["events"]}, alerts
    for c in system.clinics:
        assert all(p.poll() is None for p in c.procs.values()), f"{c.id}: a role exited"


@pytest.mark.slow
def test_the_command_line_tools_work_on_the_cluster(system: System, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`vitalwatch user / alert / session / export / outbox / archive` against one clinic on the
    cluster: accounts, an acknowledgement (WATCH/MULTI), a session started, ended and archived."""
    client, c = system.client, system.clinics[1]
    cfg = ["-c", str(c.config), "--user", "admin"]
    monkeypatch.setenv("VITALWATCH_PASSWORD", "nurse-pass-123")

    def run(*argv: str) -> str:
        capsys.readouterr()
        assert main([*argv, *cfg]) == 0, argv
        return capsys.readouterr().out

    run("user", "add", "nina", "--role", "nurse")
    assert "nina" in run("user", "list")
    assert users.get_user(client, c.keys, "nina") is not None
    alert = wait_for(lambda: raised_spo2(client, c), 30, "an alarm to acknowledge")[0]
    assert alert in run("alert", "list")
    run("alert", "ack", alert)
    assert any(f.get("event") == "acknowledged" and f.get("alert") == alert for _i, f in client.xrange(c.keys.alerts))
    sid = run("session", "start", "--room", ROOM, "--patient", "P-1", "--route", "iv", "--dose-mg", "20").split()[-1]
    run("session", "note", "--session", sid, "on the cluster")
    # a reading stored inside the session before it ends (on a loaded machine a session of a
    # few CLI calls can otherwise hold none, and its export rightly has only the header)
    n = client.xlen(c.keys.vitals(ROOM))
    wait_for(lambda: client.xlen(c.keys.vitals(ROOM)) >= n + 2, 30, "readings stored during the session")
    assert "archived" in run("session", "end", "--session", sid)
    run("export", "--session", sid, "--format", "csv", "-o", str(tmp_path / "s.csv"))
    assert (tmp_path / "s.csv").read_text().count("\n") > 1  # header and readings
    assert "pager-mqtt" in run("outbox", "list")
    run("archive", "backup", "-o", str(tmp_path / "backup.db"))


@pytest.mark.slow
def test_slot_migration_while_readings_flow_loses_and_duplicates_nothing(system: System) -> None:
    client, cluster = system.client, system.cluster
    moving, other = system.clinics
    slot = slot_of(client, moving.keys.vitals(ROOM))
    src = cluster.node_for_slot(slot)
    dst = next(n for n in cluster.masters() if n.port not in (src.port, cluster.node_for_slot(
        slot_of(client, other.keys.vitals(ROOM))).port))
    pids = {c.id: {r: p.pid for r, p in c.procs.items()} for c in system.clinics}
    src_id, dst_id = src.admin().cluster("myid"), dst.admin().cluster("myid")
    assert dst.admin().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    assert src.admin().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    names = src.admin().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10000)
    assert moving.keys.vitals(ROOM) in names
    for name in names:  # one key at a time, readings arriving in between: clients meet ASK
        n = len(moving.monitor.sent)
        wait_for(lambda n=n: len(moving.monitor.sent) > n, 10, "a reading acknowledged meanwhile")
        src.admin().execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", name)
    for node in sorted(cluster.masters(), key=lambda m: (m is not dst, m is not src)):  # dst, src, the third
        node.admin().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    wait_for(lambda: cluster.node_for_slot(slot).port == dst.port, 10, "the slot served by its new master")
    assert int(src.admin().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) == 0

    # after the move (clients now meet MOVED): still storing, and a new alarm is raised
    n = len(stored_ts(client, moving))
    wait_for(lambda: len(stored_ts(client, moving)) > n + 5, 30, "readings stored on the new master")
    before = set(raised_spo2(client, moving))
    moving.monitor.spo2 = 81
    wait_for(lambda: set(raised_spo2(client, moving)) - before, 30, "an SpO2 alarm after the migration")
    moving.monitor.spo2 = 97
    assert dst.admin().exists(moving.keys.vitals(ROOM), moving.keys.alerts) == 2

    for c in system.clinics:
        c.monitor.finish()
    for c in system.clinics:
        all_acknowledged_stored_once(client, c)
        assert {r: p.pid for r, p in c.procs.items()} == pids[c.id]
        assert all(p.poll() is None for p in c.procs.values()), f"{c.id}: a role exited"


@pytest.mark.slow
def test_another_clinics_shard_lost_this_clinic_monitors_on(system: System) -> None:
    """One clinic's master dies with no replica to take over (runs last: it breaks the
    cluster of this module): the other clinic, on another shard, goes on storing, alerting
    and monitoring (`cluster-require-full-coverage no`; PING/INFO/SCAN ask its own master)."""
    client, cluster = system.client, system.cluster
    stays, lost = system.clinics
    assert cluster.node_for_slot(slot_of(client, stays.keys.alerts)) is not cluster.node_for_slot(
        slot_of(client, lost.keys.alerts))
    cluster.node_for_slot(slot_of(client, lost.keys.alerts)).kill()
    if not stays.monitor.is_alive():  # stopped by the test before: a new one, same topic
        stays.monitor = Monitor(system.broker.port, stays.id)
        stays.monitor.start()
    n = len(stored_ts(client, stays))
    wait_for(lambda: len(stored_ts(client, stays)) > n + 10, 30, "the other clinic's readings still stored")
    before = set(raised_spo2(client, stays))
    stays.monitor.spo2 = 84
    wait_for(lambda: set(raised_spo2(client, stays)) - before, 30, "the other clinic's alarm raised")
    stays.monitor.spo2 = 97
    assert stays.api("/health").status_code == 200, stays.api("/health").json()
    assert stays.api("/api/v1/alerts").status_code == 200
    assert all(p.poll() is None for p in stays.procs.values())


@pytest.mark.slow
def test_master_killed_while_readings_flow_its_replica_takes_over_and_the_roles_go_on(tmp_path: Path) -> None:
    """kill -9 the master serving a clinic (3 masters, a replica each): the cluster promotes its
    replica; the same processes store on it, raise alarms and the dashboard monitors again;
    every acknowledged reading is there once."""
    cluster = RedisClusterProc(tmp_path / "redis", masters=3, replicas=1).start()
    try:
        with running(tmp_path, cluster, ["vw-0"]) as system:
            client, (c,) = system.client, system.clinics
            slot = slot_of(client, c.keys.vitals(ROOM))
            master = cluster.node_for_slot(slot)
            wait_for(lambda: len(stored_ts(client, c)) >= 5, 30, "readings stored before the kill")
            replica = next(n for n in cluster.nodes if n is not master
                           and n.admin().info("replication").get("master_port") == master.port)
            wait_for(lambda: replica.admin().info("replication").get("master_link_status") == "up", 10,
                     "the replica in sync")
            pids = {r: p.pid for r, p in c.procs.items()}
            sent_before = len(c.monitor.sent)
            t0 = time.monotonic()
            master.kill()
            wait_for(lambda: cluster.node_for_slot(slot) is replica, 30, "the replica promoted",
                     ignoring=(redis.RedisError,))
            promoted = time.monotonic() - t0
            # the first reading acknowledged after the kill, stored on the new master
            wait_for(lambda: len(c.monitor.sent) > sent_before + 1, 30, "readings acknowledged after the kill")
            first_after = c.monitor.sent[sent_before + 1]
            wait_for(lambda: first_after in set(stored_ts(client, c)), 30, "readings stored on the new master",
                     ignoring=(redis.RedisError,))  # our own client meets the dead master too, once
            stored_again = time.monotonic() - t0
            health: list[object] = []
            try:
                wait_for(lambda: (r := c.api("/health")).status_code == 200 or health.append(r.json()), 30,
                         "the dashboard monitoring again")
            except AssertionError as e:
                raise AssertionError(f"{e}; /health said {health[-1:]}") from None
            c.monitor.spo2 = 83
            wait_for(lambda: raised_spo2(client, c), 30, "an SpO2 alarm after the failover")
            c.monitor.finish()
            all_acknowledged_stored_once(client, c)
            assert replica.admin().exists(c.keys.vitals(ROOM)) == 1
            assert {r: p.pid for r, p in c.procs.items()} == pids
            assert all(p.poll() is None for p in c.procs.values()), "a role exited"
            print(f"\n[figures] master kill -9 (cluster-node-timeout 1 s, this shared 2-core machine): "
                  f"replica serving the slot after {promoted:.1f} s, a reading published after the kill "
                  f"stored {stored_again:.1f} s after it")
    finally:
        cluster.stop()
