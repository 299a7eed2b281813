"""Per-session alarm-limit overrides: validation table, effective view, CLI, and the engine using them.

Real Redis (per-test clinic prefix), the real `vitalwatch` entry point, an in-process alert
engine Worker with an injected clock.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.accounts import audit
from monitor.alarms.engine import Worker
from monitor.alarms.model import event_from_fields
from monitor.app.cli import main
from monitor.model.codec import to_fields
from monitor.model.config import load_config, parse_config
from monitor.model.readings import Reading
from monitor.sessions import lifecycle as sessions
from monitor.sessions.limits import apply_limit, describe, effective_limits, limit_spec, read_raw
from monitor.store import heartbeat
from monitor.store.status import publish_status
from tests.configs import config_mapping, room_entry, serial_device, write_config

T0 = 1_795_813_200_000


# --- pure: what a person may type ------------------------------------------------------
@pytest.mark.parametrize(("args", "want"), [
    (("sbp", None, 190), {"high": 190.0}),
    (("spo2", 85), {"low": 85.0}),
    (("hr", 40, 140, "high", 10), {"low": 40.0, "high": 140.0, "priority": "high", "delay_s": 10.0}),
    (("sbp", None, None, "low"), {"priority": "low"}),
    (("rr", 0, 80), {"low": 0.0, "high": 80.0}),  # the accepted range's edges are allowed
    (("sbp", None, None, None, 0), {"delay_s": 0.0}),
])
def test_limit_spec_accepts(args, want):
    assert limit_spec(*args) == want


@pytest.mark.parametrize(("args", "message"), [
    (("xyz", None, 100), "unknown metric 'xyz'"),
    (("sbp", 200, 100), "low (200) must be below high (100)"),
    (("sbp", 150, 150), "low (150) must be below high (150)"),
    (("spo2", None, 101), "spo2 high 101 is outside the accepted range 50–100 %"),
    (("hr", 10), "hr low 10 is outside the accepted range 20–300 beats/min"),
    (("sbp", None, float("nan")), "not a finite number"),
    (("sbp", None, "abc"), "is not a number"),
    (("sbp", None, None, "urgent"), "unknown priority 'urgent'"),
    (("sbp", None, None, None, -1), "between 0 and 300 s"),
    (("sbp", None, None, None, 301), "between 0 and 300 s"),
    (("sbp",), "nothing to set for sbp"),
])
def test_limit_spec_refuses_with_a_clear_message(args, message):
    with pytest.raises(sessions.InvalidEvent) as e:
        limit_spec(*args)
    assert message in str(e.value)


def test_effective_limits_layers_and_marks_session_fields():
    cfg = parse_config(config_mapping("x", alarms={"defaults": {"sbp": {"priority": "medium"}},
                                                "rooms": {"room-1": {"sbp": {"high": 170}}}}), source="t.toml")
    eff = effective_limits(cfg, "room-1", {})
    assert (eff["sbp"]["low"], eff["sbp"]["high"], eff["sbp"]["priority"]) == (90, 170, "medium")
    assert eff["sbp"]["session"] == [] and "temp" not in eff
    eff = effective_limits(cfg, "room-1", {"sbp": json.dumps({"high": 190, "delay_s": 5}),
                                           "temp": json.dumps({"high": 38.5}),
                                           "hr": json.dumps({"low": 130})})  # 130 ≥ the room's high 120
    assert eff["sbp"]["high"] == 190 and eff["sbp"]["low"] == 90 and eff["sbp"]["delay_s"] == 5
    assert eff["sbp"]["session"] == ["high", "delay_s"]
    assert eff["temp"]["high"] == 38.5 and eff["temp"]["session"] == ["high"]
    assert eff["hr"]["low"] == 50 and eff["hr"]["session"] == [] and "130" in eff["hr"]["ignored"]
    assert describe("sbp", eff["sbp"]) == ("sbp: low 90 · high 190* · medium priority · delay 5 s*"
                                           "  (* = session override)")
    assert "ignored" in describe("hr", eff["hr"])


# --- against Redis ----------------------------------------------------------------------
@pytest.fixture
def cfg(make_config):
    return make_config(rooms=[{"id": "room-1", "devices": [
        {"id": "oxi-1", "protocol": "masimo-ascii", "transport": "serial", "port": "/dev/null"},
        {"id": "nibp-1", "protocol": "nibp-un300", "transport": "serial", "port": "/dev/null"}]}])


def test_apply_and_clear_are_audited_and_end_with_the_session(rclient, keys, cfg):
    sid = sessions.start_session(rclient, keys, cfg, "room-1", "P", "iv", "amy")
    assert apply_limit(rclient, keys, cfg, sid, "amy", "sbp", high=190) == {"high": 190.0}
    assert json.loads(read_raw(rclient, keys, sid)["sbp"]) == {"high": 190.0}
    with pytest.raises(sessions.InvalidEvent, match=r"low \(195\) must be below high \(190\)"):
        apply_limit(rclient, keys, cfg, sid, "amy", "sbp", low=195)  # merged with the session's high 190
    with pytest.raises(sessions.InvalidEvent, match=r"low \(185\) must be below high \(180\)"):
        apply_limit(rclient, keys, cfg, sid, "amy", "sbp", low=185, high="none")  # over the room's high 180
    assert apply_limit(rclient, keys, cfg, sid, "bob", "sbp", clear=True) == {}
    assert apply_limit(rclient, keys, cfg, sid, "bob", "sbp", clear=True) is None  # nothing written
    rows = [(a["user"], a["details"]["metric"], a["details"]["limit"])
            for a in reversed(audit.entries(rclient, keys)) if a["action"] == "session.limit"]
    assert rows == [("amy", "sbp", {"high": 190.0}), ("bob", "sbp", {})]
    limit_events = [e for e in sessions.session_events(rclient, keys, sid) if e["type"] == "limit"]
    assert [(e["user"], e["limit"]) for e in limit_events] == [("amy", {"high": 190.0}), ("bob", {})]
    apply_limit(rclient, keys, cfg, sid, "amy", "spo2", low=85)
    sessions.end_session(rclient, keys, cfg, sid, "amy")
    assert read_raw(rclient, keys, sid) == {}
    with pytest.raises(sessions.SessionClosed):
        apply_limit(rclient, keys, cfg, sid, "amy", "spo2", low=88)
    with pytest.raises(sessions.UnknownSession):
        apply_limit(rclient, keys, cfg, "nope", "amy", "spo2", low=88)


class Clock:
    """A settable clock in ms."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_engine_raises_and_holds_by_the_session_override(rclient, keys, cfg):
    """SBP high 180 by config; the nurse raises it to 190, later lowers it to 150 (medium)."""
    clock = Clock(T0)
    w = Worker(cfg, rclient, keys, owner="w1", outbound=None, clock=clock)
    for dev in ("oxi-1", "nibp-1"):
        publish_status(rclient, keys, dev, {"room": "room-1", "state": "online", "last_ts": T0, "since_ms": T0})
    heartbeat.beat(rclient, keys, "ingest", "i1", T0)
    w.housekeeping(T0)
    sid = sessions.start_session(rclient, keys, cfg, "room-1", "P", "iv", "amy", now_ms=T0)
    apply_limit(rclient, keys, cfg, sid, "amy", "sbp", high=190)
    w.tick(clock.ms)
    assert w.rooms["room-1"].rules["sbp"].high == 190

    def feed(t_s: int, sbp: float) -> None:
        r = Reading("room-1", "nibp-1", T0 + t_s * 1000, {"sbp": sbp, "dbp": 80, "map": 100}, frozenset())
        rclient.xadd(keys.vitals("room-1"), to_fields(r), id=f"{r.ts_ms}-*")  # received at its ts
        while w.poll(5):
            pass

    def phys() -> list[tuple[str, str, str, float]]:
        evs = [event_from_fields(f) for _i, f in rclient.xrange(keys.alerts)]
        return [(e.event, e.metric, e.priority, e.limit) for e in evs if e.kind == "physiological"]

    feed(1, 185)  # above the room's 180 but inside the session's 190
    assert phys() == []
    feed(2, 195)
    assert phys() == [("raised", "sbp", "high", 190.0)]
    feed(3, 120)  # back inside; high priority latches
    apply_limit(rclient, keys, cfg, sid, "amy", "sbp", high=150, priority="medium")
    clock.ms = T0 + 4000
    w.tick(clock.ms)
    assert (w.rooms["room-1"].rules["sbp"].high, w.rooms["room-1"].rules["sbp"].priority) == (150, "medium")
    feed(5, 160)
    assert phys()[-1] == ("raised", "sbp", "medium", 150.0)
    # the session ends: the room's limits come back on their own
    sessions.end_session(rclient, keys, cfg, sid, "amy")
    clock.ms = T0 + 6000
    w.tick(clock.ms)
    assert w.rooms["room-1"].rules["sbp"].high == 180


# --- CLI --------------------------------------------------------------------------------
def _write_cfg(tmp_path: Path, clinic_id: str, redis_url: str) -> str:
    return str(write_config(tmp_path / "vw.toml", config_mapping(
        {"id": clinic_id}, redis_url=redis_url, mqtt_url="mqtt://127.0.0.1:1883",
        archive_url=f"sqlite:///{tmp_path / 'archive.db'}", alarms={"rooms": {"room-1": {"sbp": {"high": 170}}}},
        rooms=[room_entry("room-1", serial_device("oxi-1"))])))


def test_cli_session_limit_set_clear_and_errors(rclient, keys, clinic_id, redis_url, tmp_path, capsys):
    conf = _write_cfg(tmp_path, clinic_id, redis_url)
    base = ["-c", conf, "--user", "amy"]
    assert main(["session", "start", *base, "--room", "room-1", "--patient", "P-1", "--route", "iv"]) == 0
    sid = capsys.readouterr().out.strip().splitlines()[-1]
    lim = ["session", "limit", *base, "--session", sid]

    assert main([*lim, "--metric", "sbp", "--high", "190", "--delay-s", "5"]) == 0
    out = capsys.readouterr().out
    assert "session override for sbp is now: delay_s=5, high=190" in out
    assert "in force: sbp: low 90 · high 190* · high priority · delay 5 s*" in out
    assert sessions.session_limits(rclient, keys, sid) == {"sbp": {"high": 190.0, "delay_s": 5.0}}
    (entry,) = [a for a in audit.entries(rclient, keys) if a["action"] == "session.limit"]
    assert entry["user"] == "amy" and entry["details"] == {"session": sid, "metric": "sbp",
                                                          "limit": {"high": 190.0, "delay_s": 5.0}}
    assert main([*lim, "--metric", "spo2", "--low", "85", "--priority", "medium"]) == 0
    assert main([*lim, "--metric", "sbp", "--clear", "--user", "bob"]) == 0
    assert "cleared" in capsys.readouterr().out
    assert main([*lim, "--metric", "sbp", "--clear"]) == 0
    assert "nothing to clear" in capsys.readouterr().out
    assert sessions.session_limits(rclient, keys, sid) == {"spo2": {"low": 85.0, "priority": "medium"}}
    assert [a["user"] for a in audit.entries(rclient, keys) if a["action"] == "session.limit"] == ["bob", "amy", "amy"]

    errors = [
        ([*lim, "--metric", "sbp", "--low", "200", "--high", "100"], "low (200) must be below high (100)"),
        ([*lim, "--metric", "sbp", "--low", "175"], "low (175) must be below high (170)"),  # room high 170
        ([*lim, "--metric", "spo2", "--high", "101"], "spo2 high 101 is outside the accepted range 50–100 %"),
        ([*lim, "--metric", "sbp", "--high", "400"], "outside the accepted range 40–300 mmHg"),
        ([*lim, "--metric", "glucose", "--high", "10"], "unknown metric 'glucose'"),
        ([*lim, "--metric", "sbp", "--delay-s", "900"], "between 0 and 300 s"),
        ([*lim, "--metric", "sbp"], "nothing to set for sbp"),
        ([*lim, "--metric", "sbp", "--clear", "--high", "190"], "give no values with it"),
        (["session", "limit", *base, "--session", "nope", "--metric", "sbp", "--high", "190"],
         "unknown session 'nope'"),
    ]
    for argv, message in errors:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("vitalwatch session limit: ") and message in err, (argv, err)
    with pytest.raises(SystemExit) as e:  # argparse: a priority that does not exist
        main([*lim, "--metric", "sbp", "--priority", "urgent"])
    assert e.value.code == 2 and "invalid choice: 'urgent'" in capsys.readouterr().err
    assert sessions.session_limits(rclient, keys, sid) == {"spo2": {"low": 85.0, "priority": "medium"}}

    assert main(["session", "end", *base, "--session", sid]) == 0
    capsys.readouterr()
    assert main([*lim, "--metric", "sbp", "--high", "190"]) == 2
    assert "has ended" in capsys.readouterr().err


def test_cli_session_limit_redis_down_exit_1(clinic_id, tmp_path, capsys):
    from monitor.store.embedded import free_port

    conf = _write_cfg(tmp_path, clinic_id, f"redis://127.0.0.1:{free_port()}/0")
    assert main(["session", "limit", "-c", conf, "--session", "x", "--metric", "sbp", "--high", "190"]) == 1
    assert "Redis unreachable" in capsys.readouterr().err


def test_cli_session_limit_merges_field_by_field_and_none_removes_one(rclient, keys, clinic_id, redis_url,
                                                                        tmp_path, capsys):
    # a nurse raising SBP high to 190 and then setting the low must not lose the 190
    conf = _write_cfg(tmp_path, clinic_id, redis_url)
    base = ["-c", conf, "--user", "amy"]
    assert main(["session", "start", *base, "--room", "room-1", "--patient", "P-1", "--route", "iv"]) == 0
    sid = capsys.readouterr().out.strip().splitlines()[-1]
    lim = ["session", "limit", *base, "--session", sid, "--metric", "sbp"]
    assert main([*lim, "--high", "190"]) == 0
    assert main([*lim, "--low", "100"]) == 0
    out = capsys.readouterr().out
    assert sessions.session_limits(rclient, keys, sid) == {"sbp": {"low": 100.0, "high": 190.0}}
    assert "session override for sbp is now: high=190, low=100" in out
    assert "in force: sbp: low 100* · high 190* · high priority" in out
    # the merged whole is checked: a low above the kept high is refused, nothing changes
    assert main([*lim, "--low", "195"]) == 2
    assert "low (195) must be below high (190)" in capsys.readouterr().err
    # 'none' removes one field: the room's high (170) applies again, the low stays
    assert main([*lim, "--high", "none"]) == 0
    assert "in force: sbp: low 100* · high 170 ·" in capsys.readouterr().out
    assert sessions.session_limits(rclient, keys, sid) == {"sbp": {"low": 100.0}}
    # the dashboard form goes through the same call
    apply_limit(rclient, keys, load_config(conf), sid, "bob", "sbp", priority="medium")
    assert sessions.session_limits(rclient, keys, sid) == {"sbp": {"low": 100.0, "priority": "medium"}}
    assert main([*lim, "--low", "none", "--priority", "none"]) == 0
    assert "cleared" in capsys.readouterr().out and sessions.session_limits(rclient, keys, sid) == {}
