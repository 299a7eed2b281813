"""Session lifecycle against real Redis: events, one open session per room, audit, CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.accounts import audit
from monitor.app.cli import main
from monitor.model.clock import now_ms
from monitor.sessions import lifecycle as sessions
from monitor.store.status import publish_status
from tests.archive_fixtures import sqlite_url  # noqa: F401
from tests.configs import config_mapping, room_entry, serial_device, write_config
from tests.session_seed import room_config


@pytest.fixture
def cfg(make_config, sqlite_url):  # noqa: F811
    c = room_config(make_config)
    return c.model_copy(update={"archive": c.archive.model_copy(update={"url": sqlite_url})})


def test_start_records_devices_confirmed_and_header(rclient, keys, cfg):
    publish_status(rclient, keys, "oxi-1", {"state": "online", "last_ts": 1234})
    sid = sessions.start_session(rclient, keys, cfg, "room-1", " MRN-1 ", "intranasal", "amy",
                                 dose_mg=56, weight_kg=70, now_ms=1_000)
    head = sessions.get_session(rclient, keys, sid)
    assert head["patient"] == "MRN-1" and head["protocol"] == "esketamine" and head["state"] == "open"
    assert head["started_ms"] == 1_000 and head["dose_mg"] == 56.0 and "first_dose_ms" not in head
    assert sessions.open_session_for_room(rclient, keys, "room-1") == sid
    assert rclient.zscore(keys.sessions_index, sid) == 1_000
    evs = sessions.session_events(rclient, keys, sid)
    assert [e["type"] for e in evs] == ["start", "devices_confirmed"]
    devs = {d["id"]: d for d in evs[1]["devices"]}
    assert devs["oxi-1"]["state"] == "online" and devs["oxi-1"]["last_ts"] == 1234
    assert devs["nibp-1"]["state"] == "unknown"
    actions = [a["action"] for a in audit.entries(rclient, keys)]
    assert actions == ["session.start"]


@pytest.mark.parametrize("route,protocol", [("iv", "iv-ketamine"), ("im", "iv-ketamine"),
                                             ("intranasal", "esketamine")])
def test_default_protocol_by_route(rclient, keys, cfg, route, protocol):
    sid = sessions.start_session(rclient, keys, cfg, "room-1", "P", route, "amy")
    assert sessions.get_session(rclient, keys, sid)["protocol"] == protocol


def test_one_open_session_per_room(rclient, keys, cfg):
    sid = sessions.start_session(rclient, keys, cfg, "room-1", "P1", "iv", "amy")
    with pytest.raises(sessions.RoomBusy) as e:
        sessions.start_session(rclient, keys, cfg, "room-1", "P2", "iv", "amy")
    assert e.value.session_id == sid
    sessions.end_session(rclient, keys, cfg, sid, "amy")
    sid2 = sessions.start_session(rclient, keys, cfg, "room-1", "P2", "iv", "amy")
    assert sid2 != sid


def test_events_and_first_dose(rclient, keys, cfg):
    sid = sessions.start_session(rclient, keys, cfg, "room-1", "P", "intranasal", "amy", now_ms=1_000)
    sessions.record_dose(rclient, keys, sid, "amy", at_ms=5_000, dose_mg=28)
    sessions.record_dose(rclient, keys, sid, "amy", at_ms=3_000, note="back-dated")
    sessions.record_bp(rclient, keys, sid, "amy", 140, 90, now_ms=6_000)
    sessions.add_note(rclient, keys, sid, "amy", "calm", now_ms=7_000)
    sessions.observe(rclient, keys, sid, "amy", "respiratory-depression", now_ms=8_000)
    sessions.observe(rclient, keys, sid, "amy", "ready_to_leave", now_ms=9_000)
    stored = sessions.set_limit(rclient, keys, sid, "amy", "sbp", {"high": 190}, cfg=cfg, now_ms=9_500)
    assert stored == {"high": 190.0}
    assert sessions.session_limits(rclient, keys, sid) == {"sbp": {"high": 190.0}}
    head = sessions.get_session(rclient, keys, sid)
    assert head["first_dose_ms"] == 3_000 and head["ready_ms"] == 9_000
    types = [(e["type"], e.get("observation")) for e in sessions.session_events(rclient, keys, sid)]
    assert types[2:] == [("dose", None), ("dose", None), ("bp", None), ("note", None),
                         ("observe", "respiratory_depression"), ("observe", "ready_to_leave"), ("limit", None)]
    sessions.record_bp(rclient, keys, sid, "amy", 300, 80, now_ms=9_600)  # the range's edge is accepted
    assert len([a for a in audit.entries(rclient, keys) if a["details"].get("session") == sid]) == 9


@pytest.mark.parametrize("call,exc", [
    (lambda c, k, s: sessions.record_bp(c, k, s, "a", 80, 90), sessions.InvalidEvent),
    (lambda c, k, s: sessions.record_bp(c, k, s, "a", 400, 90), sessions.InvalidEvent),
    (lambda c, k, s: sessions.observe(c, k, s, "a", "hiccups"), sessions.InvalidEvent),
    (lambda c, k, s: sessions.add_note(c, k, s, "a", "  "), sessions.InvalidEvent),
    (lambda c, k, s: sessions.set_limit(c, k, s, "a", "sbp", {"low": 200, "high": 100}), sessions.InvalidEvent),
    (lambda c, k, s: sessions.set_limit(c, k, s, "a", "xyz", {"high": 1}), sessions.InvalidEvent),
    (lambda c, k, s: sessions.record_dose(c, k, "nope", "a"), sessions.UnknownSession),
])
def test_invalid_events_refused(rclient, keys, cfg, call, exc):
    sid = sessions.start_session(rclient, keys, cfg, "room-1", "P", "iv", "amy")
    with pytest.raises(exc):
        call(rclient, keys, sid)


def test_limit_override_removed_and_merged_check(rclient, keys, cfg):
    sid = sessions.start_session(rclient, keys, cfg, "room-1", "P", "iv", "amy")
    with pytest.raises(sessions.InvalidEvent):  # room low 90 vs override high 80 → low ≥ high
        sessions.set_limit(rclient, keys, sid, "amy", "sbp", {"high": 80}, cfg=cfg)
    sessions.set_limit(rclient, keys, sid, "amy", "sbp", {"high": 200}, cfg=cfg)
    sessions.set_limit(rclient, keys, sid, "amy", "sbp", {}, cfg=cfg)
    assert sessions.session_limits(rclient, keys, sid) == {}


def test_unknown_room_and_route(rclient, keys, cfg):
    with pytest.raises(sessions.UnknownRoom):
        sessions.start_session(rclient, keys, cfg, "room-9", "P", "iv", "amy")
    with pytest.raises(sessions.InvalidEvent):
        sessions.start_session(rclient, keys, cfg, "room-1", "P", "oral", "amy")


def test_end_archives_frees_room_and_refuses_later_events(rclient, keys, cfg):
    sid = sessions.start_session(rclient, keys, cfg, "room-1", "P", "iv", "amy", now_ms=1_000)
    sessions.set_limit(rclient, keys, sid, "amy", "hr", {"high": 130})
    res = sessions.end_session(rclient, keys, cfg, sid, "bob", now_ms=2_000)
    assert res["state"] == "archived"
    head = sessions.get_session(rclient, keys, sid)
    assert head["state"] == "archived" and head["ended_ms"] == 2_000 and head["ended_by"] == "bob"
    assert sessions.open_session_for_room(rclient, keys, "room-1") is None
    assert not rclient.exists(keys.session_limits(sid))
    assert rclient.ttl(keys.session(sid)) > 0  # Redis keeps it only as long as retention
    with pytest.raises(sessions.SessionClosed):
        sessions.add_note(rclient, keys, sid, "amy", "late")
    again = sessions.end_session(rclient, keys, cfg, sid, "bob")  # idempotent
    assert again["state"] == "archived" and again["events"] == 0


def _write_cfg(tmp_path: Path, clinic_id: str, redis_url: str, archive_url: str) -> str:
    return str(write_config(tmp_path / "vw.toml", config_mapping(
        {"id": clinic_id}, redis_url=redis_url, mqtt_url="mqtt://127.0.0.1:1883", archive_url=archive_url,
        rooms=[room_entry("room-1", serial_device("oxi-1"))])))


def test_cli_lifecycle_and_exit_codes(rclient, keys, clinic_id, redis_url, sqlite_url, tmp_path, capsys):  # noqa: F811
    conf = _write_cfg(tmp_path, clinic_id, redis_url, sqlite_url)
    base = ["-c", conf, "--user", "amy"]
    assert main(["session", "start", *base, "--room", "room-1", "--patient", "P-1", "--route", "intranasal",
                 "--dose-mg", "56"]) == 0
    sid = capsys.readouterr().out.strip().splitlines()[-1]
    assert sessions.get_session(rclient, keys, sid)["room"] == "room-1"
    dose_ms = (now_ms() - 10 * 60_000) // 1000 * 1000  # ten minutes ago, whole seconds
    dose_iso = datetime.fromtimestamp(dose_ms / 1000, UTC).isoformat()
    assert main(["session", "dose", *base, "--session", sid, "--at", dose_iso]) == 0
    assert sessions.get_session(rclient, keys, sid)["first_dose_ms"] == dose_ms
    assert main(["session", "bp", *base, "--session", sid, "--sbp", "130", "--dbp", "80"]) == 0
    assert main(["session", "note", *base, "--session", sid, "feels fine"]) == 0
    assert main(["session", "observe", *base, "--session", sid, "--ready-to-leave"]) == 0
    assert main(["session", "start", *base, "--room", "room-1", "--patient", "P-2", "--route", "iv"]) == 2
    assert main(["session", "start", *base, "--room", "room-7", "--patient", "P-2", "--route", "iv"]) == 2
    assert main(["session", "bp", *base, "--session", "nope", "--sbp", "130", "--dbp", "80"]) == 2
    err = capsys.readouterr().err
    assert "already has an open session" in err and "unknown room 'room-7'" in err and "unknown session 'nope'" in err
    assert main(["session", "end", *base, "--session", sid]) == 0
    assert "archived" in capsys.readouterr().out
    from monitor.sessions.archive import list_sessions, open_archive
    assert [s["id"] for s in list_sessions(open_archive(sqlite_url))] == [sid]
    assert main(["session", "list", *base]) == 0
    assert sid in capsys.readouterr().out
    assert main(["session", "note", *base, "--session", sid, "too late"]) == 2


def test_cli_redis_down_exit_1(clinic_id, tmp_path, sqlite_url, capsys):  # noqa: F811
    from monitor.store.embedded import free_port

    conf = _write_cfg(tmp_path, clinic_id, f"redis://127.0.0.1:{free_port()}/0", sqlite_url)
    assert main(["session", "note", "-c", conf, "--session", "x", "hello"]) == 1
    assert "Redis unreachable" in capsys.readouterr().err


def test_decode_event_roundtrip():
    f = sessions.event_fields("limit", 5, "amy", metric="sbp", limit={"high": 190})
    assert f == {"ts": "5", "type": "limit", "user": "amy", "metric": "sbp", "limit": json.dumps({"high": 190})}
    assert sessions.decode_event("1-0", f)["limit"] == {"high": 190}
    with pytest.raises(sessions.InvalidEvent):
        sessions.event_fields("party", 5, "amy")
