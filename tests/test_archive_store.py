"""The durable archive on SQLite and on the local PostgreSQL: content, idempotence,
crash mid-archive and resume, audit log, sign-off lock, addenda, purge, backup."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from monitor.accounts import audit
from monitor.model.clock import now_ms
from monitor.sessions import archive
from monitor.sessions import lifecycle as sessions
from monitor.sessions.archive_schema import LATEST, readings, schema_version
from tests.archive_fixtures import archive_url, pg_url, sqlite_url  # noqa: F401
from tests.configs import config_mapping, write_config
from tests.servers import delete_clinic_keys
from tests.session_seed import room_config, seed_session


class Crash(RuntimeError):
    """Injected failure after N committed batches."""


@pytest.fixture
def cfg(make_config, archive_url):  # noqa: F811
    c = room_config(make_config)
    return c.model_copy(update={"archive": c.archive.model_copy(update={"url": archive_url})})


def _in_span(seeded) -> list[dict[str, str]]:
    return [f for f in seeded.readings if seeded.t0_ms <= int(f["ts"]) <= seeded.end_ms]


def _row_count(arch, table, sid) -> int:
    with arch.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.session_id == sid)).scalar_one()


def test_archive_holds_everything_and_rerun_adds_nothing(rclient, keys, cfg):
    sd = seed_session(rclient, keys, cfg, duration_min=60)
    res = sessions.end_session(rclient, keys, cfg, sd.sid, "amy", now_ms=sd.end_ms)
    expected = _in_span(sd)
    assert res["readings"] == len(expected) and res["alert_events"] == 3 and res["skipped"] == 0
    arch = archive.open_archive(cfg.archive.url)
    rec = archive.load_session(arch, sd.sid)
    # every reading of the span, exactly once, same values (the two outside it are not)
    got = [(ts, dev, flags, [v for v in vals]) for ts, dev, flags, vals in rec.readings]
    assert [(g[0], g[1]) for g in got] == [(int(f["ts"]), f["dev"]) for f in expected]
    for g, f in zip(got, expected, strict=True):
        assert g[2] == f.get("flags")
        assert {m: v for m, v in zip(archive.READING_METRICS, g[3], strict=True) if v is not None} == \
            {m: float(f[m]) for m in archive.READING_METRICS if m in f}
    assert {a["room"] for a in rec.alert_events} == {"room-1"}
    assert [a["event"] for a in rec.alert_events] == ["raised", "acknowledged", "cleared"]
    types = [e["type"] for e in rec.events]
    assert types[:2] == ["start", "devices_confirmed"] and types[-1] == "end" and types.count("bp") == 2
    assert {a["action"] for a in rec.audit} >= {"session.start", "session.dose", "session.end"}
    assert rec.header["state"] == "archived" and rec.header["alerts_high"] == 1
    assert rec.base_limits["sbp"]["high"] == 180
    # rerun, and a rerun with the progress markers lost: unique keys prevent duplicates
    archive.archive_session(rclient, keys, cfg, sd.sid)
    with arch.engine.begin() as conn:
        conn.execute(archive.progress.delete().where(archive.progress.c.scope == sd.sid))
    again = archive.archive_session(rclient, keys, cfg, sd.sid)
    assert again["readings"] == len(expected)
    assert _row_count(arch, readings, sd.sid) == len(expected)
    assert len(archive.load_session(arch, sd.sid).events) == len(rec.events)
    with arch.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar_one() == LATEST


def test_crash_mid_archive_resumes_without_duplicates(rclient, keys, cfg):
    sd = seed_session(rclient, keys, cfg, duration_min=30)
    calls: list[tuple[str, int]] = []

    def crash_after_3_reading_batches(part: str, n: int) -> None:
        calls.append((part, n))
        if part == "readings" and n == 3:
            raise Crash("power cut")

    with pytest.raises(Crash):
        rclient.hset(keys.session(sd.sid), mapping={"state": "ended", "ended_ms": str(sd.end_ms)})
        rclient.hdel(keys.open_sessions, "room-1")
        archive.archive_session(rclient, keys, cfg, sd.sid, batch_size=500, on_batch=crash_after_3_reading_batches)
    arch = archive.open_archive(cfg.archive.url)
    assert _row_count(arch, readings, sd.sid) == 3 * 500 - 1  # the pre-session reading is outside
    assert archive.list_sessions(arch)[0]["state"] == "archiving"  # visibly incomplete
    resumed: list[tuple[str, int]] = []
    res = archive.archive_session(rclient, keys, cfg, sd.sid, batch_size=500,
                                  on_batch=lambda p, n: resumed.append((p, n)))
    assert ("events", 1) not in resumed  # finished parts are not redone
    assert res["readings"] == len(_in_span(sd)) == _row_count(arch, readings, sd.sid)
    assert archive.list_sessions(arch)[0]["state"] == "archived"
    # `vitalwatch session end` on the half-archived session resumes too (no-op now)
    assert sessions.end_session(rclient, keys, cfg, sd.sid, "amy")["readings"] == res["readings"]


def test_reviewable_after_redis_is_emptied_and_audit_archived(rclient, keys, cfg):
    sd = seed_session(rclient, keys, cfg, duration_min=20, end=True)
    arch = archive.open_archive(cfg.archive.url)
    audit.record(rclient, keys, "admin", "user.add", name="zed")
    archive.archive_audit(rclient, keys, arch)
    archive.archive_audit(rclient, keys, arch)  # incremental: nothing twice
    n_audit = rclient.xlen(keys.audit)
    delete_clinic_keys(rclient, keys)
    rec = archive.load_session(arch, sd.sid)
    assert len(rec.readings) == len(_in_span(sd))
    entries = archive.audit_entries(arch, clinic=keys.clinic, limit=1000)
    assert len(entries) == n_audit and entries[0]["action"] == "user.add"
    assert archive.audit_entries(arch, clinic=keys.clinic, action="session.")[0]["session"] == sd.sid
    # the archive survives when Redis no longer has the session
    assert archive.archive_session(rclient, keys, cfg, sd.sid)["state"] == "archived"


def test_signoff_locks_and_addenda(rclient, keys, cfg):
    sd = seed_session(rclient, keys, cfg, duration_min=15, end=True)
    out = sessions.sign_off(rclient, keys, cfg, sd.sid, "dr-who", now_ms=sd.end_ms + 60_000)
    assert out["signed_by"] == "dr-who"
    with pytest.raises(archive.Locked):
        sessions.sign_off(rclient, keys, cfg, sd.sid, "dr-no")
    res = archive.archive_session(rclient, keys, cfg, sd.sid)
    assert res["state"] == "locked"
    sessions.add_addendum(rclient, keys, cfg, sd.sid, "dr-who", "BP re-checked by phone: fine")
    arch = archive.open_archive(cfg.archive.url)
    rec = archive.load_session(arch, sd.sid)
    assert rec.header["signed_by"] == "dr-who" and rec.header["signed_ms"] == sd.end_ms + 60_000
    assert [e["type"] for e in rec.events][-2:] == ["signoff", "addendum"]
    assert rec.events[-1]["text"] == "BP re-checked by phone: fine"
    actions = [a["action"] for a in audit.entries(rclient, keys)]
    assert "session.signoff" in actions and "session.addendum" in actions
    with pytest.raises(archive.NotArchived):
        sessions.sign_off(rclient, keys, cfg, "nope", "dr-who")


def test_list_filters(rclient, keys, cfg):
    a = seed_session(rclient, keys, cfg, duration_min=10, patient="MRN-A", end=True,
                     t0_ms=now_ms() - 5 * 3_600_000)
    b = seed_session(rclient, keys, cfg, duration_min=60, patient="MRN-B", end=True,
                     t0_ms=a.end_ms + 3_600_000)
    arch = archive.open_archive(cfg.archive.url)
    assert [s["id"] for s in archive.list_sessions(arch)] == [b.sid, a.sid]
    assert [s["id"] for s in archive.list_sessions(arch, patient="MRN-A")] == [a.sid]
    assert [s["id"] for s in archive.list_sessions(arch, high_only=True)] == [b.sid]  # a ended before the episode
    assert [s["id"] for s in archive.list_sessions(arch, since_ms=b.t0_ms)] == [b.sid]
    assert [s["id"] for s in archive.list_sessions(arch, until_ms=a.t0_ms)] == [a.sid]
    assert archive.list_sessions(arch, room="room-2") == []


def test_purge_and_backup(rclient, keys, cfg, tmp_path):
    old = seed_session(rclient, keys, cfg, duration_min=5, end=True)
    arch = archive.open_archive(cfg.archive.url)
    counts = archive.backup(arch, tmp_path / "bk" / "backup.db")
    assert counts["readings"] == len(_in_span(old)) and counts["sessions"] == 1
    restored = archive.open_archive(f"sqlite:///{tmp_path / 'bk' / 'backup.db'}")
    assert len(archive.load_session(restored, old.sid).readings) == counts["readings"]
    archive.close_archive(f"sqlite:///{tmp_path / 'bk' / 'backup.db'}")
    assert archive.purge(arch, old.end_ms)["sessions"] == 0  # ended exactly at the cutoff: kept
    out = archive.purge(arch, old.end_ms + 1)
    assert out["sessions"] == 1 and out["readings"] == counts["readings"]
    with pytest.raises(archive.NotArchived):
        archive.load_session(arch, old.sid)


def test_archive_cli_backup_and_purge(rclient, keys, redis_url, sqlite_url, tmp_path, capsys):  # noqa: F811
    from monitor.app.cli import main

    conf = write_config(tmp_path / "vw.toml", config_mapping(
        keys.clinic, redis_url=redis_url, mqtt_url="mqtt://127.0.0.1:1883", archive_url=sqlite_url,
        archive={"retention_days": 1}, rooms=[]))
    archive.open_archive(sqlite_url)
    assert main(["archive", "backup", "-c", str(conf), "--user", "admin", "-o", str(tmp_path / "b.db")]) == 0
    assert (tmp_path / "b.db").exists()
    assert main(["archive", "purge", "-c", str(conf), "--user", "admin"]) == 0
    assert "purged data older than 1 days" in capsys.readouterr().out
    assert {a["action"] for a in audit.entries(rclient, keys)} == {"archive.backup", "archive.purge"}


def test_open_session_cannot_be_archived(rclient, keys, cfg):
    sid = sessions.start_session(rclient, keys, cfg, "room-1", "P", "iv", "amy")
    with pytest.raises(archive.ArchiveError):
        archive.archive_session(rclient, keys, cfg, sid)
    with pytest.raises(archive.NotArchived):
        archive.archive_session(rclient, keys, cfg, "nope")
