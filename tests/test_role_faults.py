"""Roles other than ingest survive Redis error replies: the alert engine, its archive top-up
and EHR outbound loops. Each fault is real, on a redis-server of our own (tests/fault_support.py):
OOM, READONLY (a failover's replica), BUSY, NOAUTH, LOADING, and CLIENT UNBLOCK … ERROR on a
blocked XREAD. The worker runs its real `run()` loop in a thread on the real clock.
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from monitor.alarms.engine import Worker
from monitor.alarms.model import event_from_fields
from monitor.alarms.outbound import DEST_MQTT, start_senders
from monitor.model.clock import now_ms
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.sessions import archive_topup
from monitor.sessions import outbound as interop_outbound
from monitor.store import heartbeat
from monitor.store.outbox import Delivered, Outbox
from monitor.store.redis_conn import connect
from monitor.store.status import publish_status
from tests.configs import alarm_defaults, alarm_rule, config_mapping, parsed, room_entry, serial_device
from tests.fault_support import FAULTS, oom, unblock_xread
from tests.servers import RedisProc
from tests.waiting import wait_for


def make_cfg(url: str, tmp_path: Path, **extra: Any) -> Config:
    """One room with one oximeter, alarms without delay, short leases; `extra` as for config_mapping."""
    args: dict[str, Any] = {
        "redis_url": url, "data_dir": tmp_path / "data", "archive_url": f"sqlite:///{tmp_path / 'archive.db'}",
        "rooms": [room_entry("room-1", serial_device("mon-1"))],
        "alarms": alarm_defaults(sbp=alarm_rule(high=180), dbp=alarm_rule(high=110, priority="medium")),
        "alerts": {"owner_ttl_s": 2},
    }
    return parsed(config_mapping("t-" + uuid.uuid4().hex[:8], **{**args, **extra}))


def feed(client: redis.Redis, keys: Keys, **values: float) -> None:
    client.xadd(keys.vitals("room-1"), {"ts": str(now_ms()), "dev": "mon-1", **{m: str(v) for m, v in values.items()}})


def raised(client: redis.Redis, keys: Keys, metric: str) -> bool:
    return any(e.event == "raised" and e.metric == metric
               for e in (event_from_fields(f) for _i, f in client.xrange(keys.alerts)))


class Running:
    """A worker in its own thread, with ingest's heartbeat and device status kept fresh."""

    def __init__(self, cfg: Config, url: str) -> None:
        self.keys = Keys(cfg.clinic.id)
        self.client = connect(url)
        self.worker = Worker(cfg, self.client, self.keys, owner="w1")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,), daemon=True)
        self.feeder = connect(url)
        self.side = threading.Thread(target=self._fresh, daemon=True)

    def _fresh(self) -> None:
        while not self.stop.wait(0.5):
            try:
                heartbeat.beat(self.feeder, self.keys, "ingest", "test", now_ms())
                publish_status(self.feeder, self.keys, "mon-1", {"room": "room-1", "state": "online",
                                                                  "last_ts": now_ms(), "since_ms": now_ms()})
            except (redis.RedisError, OSError):
                pass  # the fault refuses our writes too; the test is about the worker

    def start(self) -> Running:
        self.side.start()
        self.thread.start()
        wait_for(lambda: self.feeder.get(self.keys.room_owner("room-1")) == "w1", 15, "the worker owns room-1")
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.side.join(5)
        self.client.close()
        self.feeder.close()


def worker_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.getMessage().startswith("alert worker w1:")]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_alert_worker_keeps_running_through_error_replies(fault: str, fault_redis: RedisProc, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    run = Running(make_cfg(fault_redis.url, tmp_path), fault_redis.url).start()
    try:
        feed(run.feeder, run.keys, sbp=200)
        wait_for(lambda: raised(run.feeder, run.keys, "sbp"), 10, "an alarm before the fault")
        with FAULTS[fault](fault_redis):
            # while loading, Redis answers only every few seconds: one LOADING reply is the fault
            times = 1 if fault == "loading" else 4
            wait_for(lambda: run.worker.episode.failures >= times, 30, f"the worker meeting {fault}")
            assert run.thread.is_alive()
        wait_for(lambda: not run.worker.episode.failing, 30, "the worker working again")
        # no restart: the same thread raises the next alarm
        feed(run.feeder, run.keys, dbp=130)
        wait_for(lambda: raised(run.feeder, run.keys, "dbp"), 10, "an alarm after the fault")
        assert run.thread.is_alive()
    finally:
        run.close()
    logged = worker_warnings(caplog)
    # once per episode and kind of error (e.g. a dropped connection, then NOAUTH), not per try
    assert 1 <= len(logged) <= 2, logged
    assert any(r.getMessage().startswith("alert worker w1: working again") for r in caplog.records)


def test_reading_stored_before_oom_raises_its_alarm_once_writes_are_back(fault_redis: RedisProc,
                                                                         tmp_path: Path) -> None:
    """The commit that an OOM refuses is not lost: the room's last applied id moves only with
    a commit, so the same reading is evaluated again after the fault and raises its alarm."""
    cfg = make_cfg(fault_redis.url, tmp_path)
    run = Running(cfg, fault_redis.url)
    run.worker.housekeeping(now_ms())  # owns room-1, not yet running
    assert "room-1" in run.worker.rooms
    feed(run.feeder, run.keys, sbp=210)
    try:
        with oom(fault_redis):
            run.side.start()
            run.thread.start()
            wait_for(lambda: run.worker.episode.failures >= 3, 20, "the worker failing on OOM")
            assert not raised(run.feeder, run.keys, "sbp")
        wait_for(lambda: raised(run.feeder, run.keys, "sbp"), 15, "the alarm of the reading stored before")
        assert sum(1 for _i, f in run.feeder.xrange(run.keys.alerts)
                   if f.get("metric") == "sbp" and f.get("event") == "raised") == 1
    finally:
        run.close()


def test_worker_blocked_read_ended_by_client_unblock(fault_redis: RedisProc, tmp_path: Path) -> None:
    """`-UNBLOCKED` ends an XREAD BLOCK (what a failover does): the worker reads again."""
    run = Running(make_cfg(fault_redis.url, tmp_path), fault_redis.url).start()
    try:
        for _ in range(3):
            unblock_xread(fault_redis)
        assert run.thread.is_alive()
        feed(run.feeder, run.keys, sbp=199)
        wait_for(lambda: raised(run.feeder, run.keys, "sbp"), 10, "an alarm after the unblocks")
    finally:
        run.close()


def test_worker_whose_steps_keep_failing_stops_claiming_to_be_alive(fault_redis: RedisProc, tmp_path: Path) -> None:
    """A worker that cannot evaluate (here: its room's alarm state is of the wrong type, so
    every commit gets WRONGTYPE) stops heartbeating, so the screens see it is not working."""
    run = Running(make_cfg(fault_redis.url, tmp_path), fault_redis.url).start()
    try:
        beat = f"alerts:{run.worker.owner}"
        wait_for(lambda: run.feeder.hget(run.keys.heartbeats, beat), 5, "the worker's heartbeat")
        run.feeder.delete(run.keys.alarm_state("room-1"))
        run.feeder.set(run.keys.alarm_state("room-1"), "not a hash")
        feed(run.feeder, run.keys, sbp=205)
        wait_for(lambda: run.worker.episode.failing, 10, "the worker failing on WRONGTYPE")
        first = int(run.feeder.hget(run.keys.heartbeats, beat) or 0)
        wait_for(lambda: now_ms() - int(run.feeder.hget(run.keys.heartbeats, beat) or 0) > 4000, 15,
                 "the heartbeat going stale")
        assert int(run.feeder.hget(run.keys.heartbeats, beat) or 0) >= first
        assert run.thread.is_alive()
        run.feeder.delete(run.keys.alarm_state("room-1"))  # repaired: it works and beats again
        wait_for(lambda: raised(run.feeder, run.keys, "sbp"), 10, "the alarm once the state is repaired")
        wait_for(lambda: now_ms() - int(run.feeder.hget(run.keys.heartbeats, beat) or 0) < 2000, 10,
                 "a fresh heartbeat again")
    finally:
        run.close()


def test_archive_topup_ehr_and_pager_loops_survive_oom(fault_redis: RedisProc, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The background loops of `vitalwatch alerts` meet OOM on their first write (a lock's SET
    NX, a lease), log it once, and go on once writes are back; a page enqueued during the
    fault's end is delivered."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(archive_topup, "EVERY_S", 0.05)
    monkeypatch.setattr(interop_outbound, "SCAN_EVERY_S", 0.05)
    cfg = make_cfg(fault_redis.url, tmp_path, fhir={"url": "http://127.0.0.1:9/fhir"})
    keys = Keys(cfg.clinic.id)
    admin = fault_redis.admin()
    stop = threading.Event()
    try:
        with oom(fault_redis):
            topup = archive_topup.start(cfg, fault_redis.url, keys, "w1", stop)
            interop = interop_outbound.start(cfg, fault_redis.url, keys, "w1", stop)
            assert interop is not None
            delivered: list[str] = []
            pagers = start_senders(lambda: connect(fault_redis.url), keys, "w1",
                                   {DEST_MQTT: lambda m: delivered.append(m.body) or Delivered("ok")}, stop)
            wait_for(lambda: sum("archive top-up (Redis): " in r.getMessage() for r in caplog.records), 10,
                     "the top-up meeting OOM")
            wait_for(lambda: sum("EHR outbound loop: " in r.getMessage() for r in caplog.records), 10,
                     "the outbound loop meeting OOM")
            wait_for(lambda: sum("outbound pager-mqtt: " in r.getMessage() for r in caplog.records), 10,
                     "the pager sender meeting OOM")
            assert topup.is_alive() and interop.is_alive() and all(t.is_alive() for t in pagers)
        wait_for(lambda: any("archive top-up (Redis): working again" in r.getMessage() for r in caplog.records),
                 10, "the top-up working again")
        wait_for(lambda: any("EHR outbound loop: working again" in r.getMessage() for r in caplog.records),
                 10, "the outbound loop working again")
        wait_for(lambda: any("outbound pager-mqtt: working again" in r.getMessage() for r in caplog.records),
                 10, "the pager sender working again")
        assert topup.is_alive() and interop.is_alive() and all(t.is_alive() for t in pagers)
        warn = [r for r in caplog.records if r.levelno == logging.WARNING
                and any(w in r.getMessage() for w in ("archive top-up (Redis)", "EHR outbound loop",
                                                      "outbound pager-mqtt"))]
        assert len(warn) == 3, [r.getMessage() for r in warn]  # one per loop, not one per round
        Outbox(admin, keys, DEST_MQTT).enqueue('{"page":true}', kind="alert-page", meta={"topic": "t/page"})
        wait_for(lambda: delivered == ['{"page":true}'], 10, "a page sent after the fault")
    finally:
        stop.set()
        admin.close()
