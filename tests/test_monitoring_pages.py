"""The page that says monitoring stopped goes out while Redis refuses every write.

An alert worker runs its real loop on a redis-server of our own; Redis is made to refuse
writes (OOM, READONLY) for 6 s. The worker's direct pager — not the outbox, which Redis
cannot hold — sends "NOT MONITORING … readings are not being stored: <cause>" to the page
topic of a real Mosquitto and to a local webhook, once, and "Monitoring resumed" after.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest

from monitor.alarms.outbound import DirectPager, MqttSender, Routes, WebhookSender
from tests.fault_support import oom, readonly
from tests.servers import MosquittoProc, RedisProc
from tests.test_alarms_outbound import Hook, subscriber
from tests.test_role_faults import Running, make_cfg
from tests.waiting import wait_for

HOLD_S = 6.0


def drain(q: queue.Queue) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


@pytest.mark.parametrize(("fault", "words"), [(oom, "Redis out of memory"), (readonly, "Redis is a read-only replica")])
def test_worker_pages_directly_that_monitoring_stopped_and_resumed(fault, words: str, fault_redis: RedisProc,  # noqa: ANN001
                                                                   mosquitto_proc: MosquittoProc,
                                                                   tmp_path: Path) -> None:
    sub, got = subscriber(mosquitto_proc.port, "vw-mon/alerts/page")
    hook = Hook()
    sender = MqttSender(mosquitto_proc.url, "5", "test-mon-pager")
    pager = DirectPager(Routes("vw-mon/alerts", webhook=True), sender, WebhookSender(hook.url, timeout_s=2))
    stop = threading.Event()
    pager.start(stop)
    cfg = make_cfg(fault_redis.url, tmp_path, rooms=[{"id": f"room-{i}"} for i in (1, 2, 3)])
    run = Running(cfg, fault_redis.url)
    run.worker.pager = pager
    try:
        assert sender.wait_connected(10)
        run.start()
        t0 = time.monotonic()
        with fault(fault_redis):
            _topic, page = got.get(timeout=10)
            paged_s = time.monotonic() - t0
            assert page["room"] == "*" and page["event"] == "raised" and page["priority"] == "high"
            assert page["page"] is True and page["tier"] == 1
            assert page["message"].startswith(f"NOT MONITORING (3 rooms): readings are not being stored: {words}")
            _ctype, hooked = hook.received.get(timeout=10)
            assert hooked["alert"] == page["alert"]
            time.sleep(max(0.0, HOLD_S - (time.monotonic() - t0)))  # the fault lasts 6 s
        _topic, back = got.get(timeout=15)
        assert back["alert"] == page["alert"] and back["event"] == "cleared" and back["page"] is False
        assert back["message"].startswith("Monitoring resumed after")
        assert hook.received.get(timeout=10)[1]["event"] == "cleared"
        wait_for(lambda: pager.held == 0, 10, "nothing held")
        assert drain(got) == [] and hook.received.empty()  # once each, not once per failed step
        # once Redis takes writes: the episode recorded as ONE clinic-wide technical alarm,
        # with the page's alert id, its rooms and its onset (raised and cleared together)
        recorded = wait_for(lambda: [f for _i, f in run.feeder.xrange(run.keys.alerts)
                                     if f.get("alert") == page["alert"]], 10, "the episode recorded")
        assert [f["event"] for f in recorded] == ["raised", "cleared"]
        assert all(f["room"] == "*" and f["kind"] == "technical" and f["priority"] == "high" for f in recorded)
        assert recorded[0]["rooms"] == "room-1,room-2,room-3"
        assert f"readings are not being stored: {words}" in recorded[0]["message"]
        assert recorded[1]["message"].endswith("s")  # "…: over after 6 s"
        assert run.feeder.hlen(run.keys.active_alerts("*")) == 0  # over: nothing active
        assert not run.worker.finished_outages
        print(f"\n{fault.__name__}: paged {paged_s:.1f} s after the fault")
    finally:
        run.close()
        stop.set()
        sender.close()
        hook.close()
        sub.loop_stop()
        sub.disconnect()
