"""The `hl7` simulator twin against the real listener: readings as the truth log says,
garbage and broken frames refused, a dropped connection's unanswered messages re-sent once,
and a monitor that never reads its ACKs still stored."""

from __future__ import annotations

from devices.simulators.clinic import Clinic
from devices.simulators.scenarios import FaultWindow, parse_scenario, with_faults
from tests.hl7_support import ListenerRig, hl7_config
from tests.waiting import wait_for


def stored(rclient, keys):
    return [f for _i, f in rclient.xrange(keys.vitals("room-1"))]


def run_twin(make_config, redis_url, keys, tmp_path, rclient, faults=(), seconds=6.0):
    base = hl7_config(make_config)
    with ListenerRig(base, redis_url, keys, tmp_path) as r:
        cfg = base.model_copy(update={"hl7": base.hl7.model_copy(update={"listen": f"127.0.0.1:{r.port}"})})
        timeline = with_faults(parse_scenario("routine"), *faults)
        clinic = Clinic(cfg, timeline, seed=3, speed=30).start()
        runner = clinic.runners[0]
        try:
            wait_for(lambda: runner.acks["AA"] >= seconds, timeout_s=seconds * 5, what="answered messages")
        finally:
            clinic.stop()
        wait_for(lambda: r.writer.pending == 0, what="all stored")
        return runner, stored(rclient, keys), clinic.truth.records, r.listener.stats


def test_twin_readings_match_the_truth(make_config, redis_url, keys, rclient, tmp_path):
    runner, got, truth, stats = run_twin(make_config, redis_url, keys, tmp_path, rclient)
    sent = [t for t in truth if t["kind"] == "reading" and t["expect"] == "stored"]
    assert runner.acks["AE"] == runner.acks["AR"] == 0
    assert len(got) == len(sent) - len(runner.unacked)
    for t in sent[: len(got)]:
        assert any(all(float(f.get(m, "nan")) == v for m, v in t["values"].items()) for f in got)
    assert all(f["dev"] == "mon-1" and "spo2" in f and "rr" in f for f in got)


def test_twin_faults_garbage_drop_and_deaf(make_config, redis_url, keys, rclient, tmp_path):
    faults = (FaultWindow("noisy-line", rate=0.3), FaultWindow("unplugged", at_s=1.0, duration_s=1.0),
              FaultWindow("ignore-acks", at_s=2.5, duration_s=1.5))
    runner, got, truth, stats = run_twin(make_config, redis_url, keys, tmp_path, rclient, faults, seconds=8)
    assert stats.ar >= 1 and stats.garbage >= 1  # broken frames answered AR, garbage counted
    refused = [t for t in truth if t["kind"] == "reading" and t["expect"] == "refused"]
    assert refused and runner.acks["AR"] >= 1
    ts = [int(f["ts"]) for f in got]
    assert len(ts) == len(set(ts))  # re-sent after the drop: still once each
    links = [t["event"] for t in truth if t["kind"] == "link"]
    assert "closed" in links and links.count("opened") >= 2
    rejected = {f["reason"] for _i, f in rclient.xrange(keys.rejects)}
    assert {"bad_hl7", "mllp_garbage"} <= rejected
