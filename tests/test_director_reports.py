"""The clinic quality report, a patient's course, the research CSV and the session summaries,
on a seeded archive of many sessions, on SQLite and on PostgreSQL.

Every expected number is computed here from the raw readings and alarm episodes the seed
wrote (tests/course_seed.py), never by calling the code under test: the medians and the
90th percentile by this file's own interpolation, baselines and peaks by scanning the
readings, nuisance alarms by comparing each episode with its metric's configured delay.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from monitor.accounts import audit
from monitor.app.cli import main
from monitor.model.clock import now_ms
from monitor.model.config import DEFAULT_ALARMS
from monitor.sessions import archive, quality, report, research, review, summaries
from monitor.sessions.archive_schema import session_summaries
from tests.archive_fixtures import archive_url, pg_url, sqlite_url  # noqa: F401
from tests.configs import config_mapping, mqtt_device, room_entry, serial_device, write_config
from tests.course_seed import Alarm, Plan, Seeded, seed_all, two_room_config

DAY = 86_400_000
TZ = "America/Denver"


# --- the seeded clinic ---------------------------------------------------------------------------
def clinic_plans(now_ms: int) -> list[Plan]:
    """Two patients over two rooms, one IV session; BP responses that grow with dose for MRN-A."""
    def t(days_ago: float, hour: int = 0) -> int:
        return now_ms - int(days_ago * DAY) + hour * 3_600_000

    return [
        Plan("MRN-A", "room-1", t(20), dose_mg=56, rise_sbp=20, rise_dbp=10, observations=[(15, "dissociation")],
             manual_bp=[(-3, 130, 82)], alarms=[Alarm(35, "spo2", "high", ack_after_s=40, clear_after_s=90)]),
        Plan("MRN-A", "room-1", t(16), dose_mg=56, rise_sbp=32, rise_dbp=14, ready_at_min=95,
             alarms=[Alarm(20, "hr", "medium", ack_after_s=None, clear_after_s=4),  # nuisance: hr delay 6 s
                     Alarm(42, "spo2", "high", ack_after_s=100, clear_after_s=200)]),
        Plan("MRN-A", "room-1", t(12), dose_mg=84, rise_sbp=46, rise_dbp=22, hr_peak=118,
             observations=[(10, "sedation"), (25, "nausea")],
             alarms=[Alarm(30, "spo2", "high", ack_after_s=12, clear_after_s=30),
                     Alarm(60, kind="technical", cond="offline", dev="nibp-1", priority="medium",
                           ack_after_s=None, clear_after_s=120),
                     Alarm(70, kind="technical", cond="sensor_off", dev="oxi-1", priority="medium",
                           ack_after_s=8, clear_after_s=20)]),
        Plan("MRN-A", "room-1", t(3), dose_mg=84, rise_sbp=52, rise_dbp=30, spo2_min=91, ready_at_min=None,
             alarms=[Alarm(44, "spo2", "high", ack_after_s=75, clear_after_s=None),
                     Alarm(80, kind="technical", cond="offline", dev="nibp-1", priority="medium", clear_after_s=60)]),
        Plan("MRN-B", "room-2", t(14), dose_mg=56, rise_sbp=10, rise_dbp=5, observations=[(12, "dissociation")],
             alarms=[Alarm(25, "spo2", "medium", dev="oxi-2", ack_after_s=20, clear_after_s=30),
                     Alarm(55, "spo2", "medium", dev="oxi-2", ack_after_s=None, clear_after_s=10)]),  # nuisance
        Plan("MRN-B", "room-2", t(1), dose_mg=56, rise_sbp=61, rise_dbp=34, duration_min=110, ready_at_min=80,
             observations=[(30, "respiratory_depression")],
             alarms=[Alarm(38, "sbp", "high", dev="nibp-2", cond="sbp_high", ack_after_s=33, clear_after_s=300)]),
        Plan("MRN-C", "room-1", t(8), dose_mg=35, route="iv", rise_sbp=15, rise_dbp=8, ready_at_min=70),
    ]


@pytest.fixture
def clinic(rclient, keys, make_config, archive_url, tmp_path):  # noqa: F811
    cfg = two_room_config(make_config, archive_url, clinic={"id": keys.clinic, "name": "Test Clinic",
                                                             "timezone": TZ})
    now = now_ms()
    seeded = seed_all(rclient, keys, cfg, clinic_plans(now))
    conf = config_file(tmp_path / "vw.toml", cfg, keys.clinic)
    return {"cfg": cfg, "seeded": seeded, "now": now, "conf": str(conf), "arch": archive.open_archive(archive_url)}


def config_file(path: Path, cfg: Any, clinic: str) -> Path:
    """`cfg`'s clinic, Redis, data, archive and rooms as a TOML file for the CLI."""
    rooms = [room_entry(r.id, *(serial_device(d.id, d.protocol, d.port) if d.transport == "serial"
                                else mqtt_device(d.id, d.protocol, d.topic) for d in r.devices)) for r in cfg.rooms]
    return write_config(path, config_mapping(
        {"id": clinic, "name": cfg.clinic.name, "timezone": TZ}, redis_url=cfg.redis.url,
        mqtt_url="mqtt://127.0.0.1:1883", data_dir=cfg.data.dir, archive_url=cfg.archive.url, rooms=rooms))


# --- independent arithmetic ------------------------------------------------------------------------
def interp(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, written out independently of quality.percentile."""
    if not values:
        return None
    s = sorted(values)
    rank = q * (len(s) - 1)
    below = int(rank)
    frac = rank - below
    return s[below] if below + 1 >= len(s) else s[below] * (1 - frac) + s[below + 1] * frac


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def expected(sd: Seeded) -> dict[str, Any]:
    """Every per-session number of the report, from the raw readings and episodes."""
    p, dose, t0, end = sd.plan, sd.dose_ms, sd.plan.t0_ms, sd.end_ms
    inside = [r for r in sd.readings if t0 <= int(r["ts"]) <= end]

    def vals(m: str) -> list[tuple[int, float]]:
        return [(int(r["ts"]), float(r[m])) for r in inside if m in r]

    out: dict[str, Any] = {"n_readings": len(inside)}
    for m in ("sbp", "dbp"):
        series = vals(m)
        base = median([v for ts, v in series if ts < dose])
        peak = max(v for _, v in series)
        peak_ts = next(ts for ts, v in series if v == peak)
        window = [v for ts, v in series if dose <= ts <= dose + 90 * 60_000]
        out[f"baseline_{m}"] = base
        out[f"peak_{m}"] = peak
        out[f"peak_{m}_min"] = round((peak_ts - dose) / 60_000, 1)
        out[f"{m}_rise_90"] = max(window) - base
    out["surge"] = out["sbp_rise_90"] >= 40 or out["dbp_rise_90"] >= 25
    out["max_hr"] = max(v for _, v in vals("hr"))
    out["min_spo2"] = min(v for _, v in vals("spo2"))
    phys = [a for a in sd.alarms if a["kind"] == "physiological"]
    out["alarms"] = {pr: sum(1 for a in phys if a["priority"] == pr) for pr in ("high", "medium", "low")}
    out["ack_s"] = sorted((a["ack_ms"] - a["raised_ms"]) / 1000 for a in phys if a["ack_ms"] is not None)
    out["unacknowledged"] = sum(1 for a in phys if a["ack_ms"] is None)
    out["nuisance"] = sum(1 for a in phys if a["cleared_ms"] is not None
                          and a["cleared_ms"] - a["raised_ms"] <= DEFAULT_ALARMS[a["metric"]]["delay_s"] * 1000)
    out["technical"] = sorted((a["cond"], a["dev"]) for a in sd.alarms if a["kind"] == "technical")
    out["monitored_min"] = round((end - dose) / 60_000, 1)
    out["ready_min"] = p.ready_at_min
    obs = {name for _, name in p.observations}
    out["observations"] = {o: o in obs for o in ("sedation", "dissociation", "respiratory_depression", "nausea")}
    return out


def cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def report_csv(clinic: dict[str, Any], tmp_path, *extra: str) -> list[dict[str, str]]:
    days = [datetime.fromtimestamp(sd.plan.t0_ms / 1000, ZoneInfo(TZ)).date() for sd in clinic["seeded"]]
    out = tmp_path / "report.csv"
    assert main(["report", "-c", clinic["conf"], "--user", "dr-who", "--from", str(min(days)), "--to",
                 str(max(days)), "--format", "csv", "-o", str(out), *extra]) == 0
    return list(csv.DictReader(out.open()))


# --- the report ----------------------------------------------------------------------------------------
def test_report_csv_one_row_per_session_numbers_from_raw_readings(clinic, tmp_path, rclient, keys):
    rows = report_csv(clinic, tmp_path)
    by_sid = {r["session"]: r for r in rows}
    assert len(rows) == len(clinic["seeded"]) == len(by_sid)
    assert [r["session"] for r in rows] == [sd.sid for sd in sorted(clinic["seeded"], key=lambda s: s.plan.t0_ms)]
    tz = ZoneInfo(TZ)
    for sd in clinic["seeded"]:
        r, e = by_sid[sd.sid], expected(sd)
        assert r["patient"] == sd.plan.patient and r["room"] == sd.plan.room and r["route"] == sd.plan.route
        assert r["started_local"] == datetime.fromtimestamp(sd.plan.t0_ms / 1000, tz).isoformat(timespec="seconds")
        assert r["dose_mg"] == cell(float(sd.plan.dose_mg))
        for k in ("baseline_sbp", "baseline_dbp", "peak_sbp", "peak_dbp", "max_hr", "min_spo2", "monitored_min",
                  "n_readings"):
            assert r[k] == cell(e[k]), (sd.sid, k, r[k], e[k])
        assert r["peak_sbp_min_after_dose"] == cell(e["peak_sbp_min"])
        assert r["sbp_rise_90min"] == cell(e["sbp_rise_90"]) and r["dbp_rise_90min"] == cell(e["dbp_rise_90"])
        assert r["bp_surge"] == cell(e["surge"])
        assert r["ready_min"] == ("" if e["ready_min"] is None else cell(float(e["ready_min"])))
        for pr in ("high", "medium", "low"):
            assert r[f"alarms_{pr}"] == str(e["alarms"][pr])
        assert r["alarms_acknowledged"] == str(len(e["ack_s"]))
        assert r["median_ack_s"] == cell(interp(e["ack_s"], 0.5))
        assert r["p90_ack_s"] == cell(interp(e["ack_s"], 0.9))
        assert r["never_acknowledged"] == str(e["unacknowledged"]) and r["nuisance"] == str(e["nuisance"])
        assert r["technical_alarms"] == str(len(e["technical"]))
        for o, occurred in e["observations"].items():
            assert r[o] == cell(occurred)
        assert r["rems_required"] == cell(sd.plan.route == "intranasal")
        if sd.plan.route == "intranasal":
            assert r["rems_status"] == "incomplete" and "lot number" in r["rems_missing"]
    # the seed's own intent, written out, so a wrong reading of the raw data cannot pass either
    a3 = by_sid[clinic["seeded"][2].sid]
    assert (a3["alarms_high"], a3["technical_by_cause_device"]) == ("1", "offline@nibp-1:1;sensor_off@oxi-1:1")
    assert by_sid[clinic["seeded"][1].sid]["nuisance"] == "1"  # the HR alarm that cleared after 4 s
    assert by_sid[clinic["seeded"][4].sid]["nuisance"] == "1"  # SpO2 cleared after 10 s (delay 15 s)
    assert by_sid[clinic["seeded"][5].sid]["bp_surge"] == "yes" and by_sid[clinic["seeded"][0].sid]["bp_surge"] == "no"
    assert audit.entries(rclient, keys)[0]["action"] == "report.generate"


def test_report_numbers_agree_with_each_sessions_review(clinic, tmp_path):
    rows = {r["session"]: r for r in report_csv(clinic, tmp_path)}
    for sd in clinic["seeded"]:
        s = review.summarize(archive.load_session(clinic["arch"], sd.sid))
        r = rows[sd.sid]
        for m in ("sbp", "dbp"):
            assert r[f"baseline_{m}"] == cell(round(s["vitals"][m]["baseline"], 1))
            assert r[f"peak_{m}"] == cell(s["vitals"][m]["max"])
        assert r["max_hr"] == cell(s["vitals"]["hr"]["max"]) and r["min_spo2"] == cell(s["vitals"]["spo2"]["min"])
        phys = s["alerts"]["physiological"]
        assert [r[f"alarms_{p}"] for p in ("high", "medium", "low")] == [str(phys["by_priority"][p])
                                                                           for p in ("high", "medium", "low")]
        assert r["never_acknowledged"] == str(phys["unacknowledged"])
        assert r["median_ack_s"] == cell(phys["median_ack_s"])
        assert r["monitored_min"] == cell(s["rems"]["total_monitored_min"])


def test_report_room_filter(clinic, tmp_path):
    rows = report_csv(clinic, tmp_path, "--room", "room-2")
    assert {r["room"] for r in rows} == {"room-2"}
    assert sorted(r["session"] for r in rows) == sorted(sd.sid for sd in clinic["seeded"] if sd.plan.room == "room-2")


def test_report_totals_from_raw(clinic):
    seeded = clinic["seeded"]
    since = min(sd.plan.t0_ms for sd in seeded)
    rep = report.build(clinic["arch"], clinic["cfg"], since, clinic["now"], None, clinic["now"])
    t = rep.totals
    exp = [expected(sd) for sd in seeded]
    assert t["sessions"] == len(seeded)
    assert dict(t["by_route_dose"]) == {("intranasal", "56 mg"): 4, ("intranasal", "84 mg"): 2, ("iv", "35 mg"): 1}
    acks = [a for e in exp for a in e["ack_s"]]
    assert t["alarms"]["by_priority"] == {p: sum(e["alarms"][p] for e in exp) for p in ("high", "medium", "low")}
    assert t["alarms"]["median_ack_s"] == pytest.approx(interp(acks, 0.5))
    assert t["alarms"]["p90_ack_s"] == pytest.approx(interp(acks, 0.9))
    assert t["alarms"]["never_acknowledged"] == sum(e["unacknowledged"] for e in exp) == 2
    assert t["alarms"]["nuisance"] == sum(e["nuisance"] for e in exp) == 2
    assert t["alarms"]["per_session"]["high"] == round(sum(e["alarms"]["high"] for e in exp) / len(seeded), 2)
    tech = [x for e in exp for x in e["technical"]]
    assert dict(t["technical"]["by_device"]) == {"nibp-1": 2, "oxi-1": 1}
    assert dict(t["technical"]["by_cause"]) == {"offline": 2, "sensor_off": 1} and t["technical"]["total"] == len(tech)
    for o in ("sedation", "dissociation", "respiratory_depression", "nausea"):
        n = sum(1 for e in exp if e["observations"][o])
        assert t["observations"][o] == {"sessions": n, "pct": round(100 * n / len(seeded), 1)}
    surges = [e for e in exp if e["surge"]]
    assert t["bp_surge"]["surge"] == len(surges) and t["bp_surge"]["sessions_with_bp"] == len(seeded)
    assert t["bp_surge"]["sbp_40"] == sum(1 for e in exp if e["sbp_rise_90"] >= 40)
    assert t["bp_surge"]["dbp_25"] == sum(1 for e in exp if e["dbp_rise_90"] >= 25)
    rems = t["rems"]
    assert rems["required"] == 6 and rems["incomplete"] == 6 and rems["submitted"] == 0
    # overdue = treatment (first dose) more than 7 days before now
    assert rems["overdue"] == sum(1 for sd in seeded if sd.plan.route == "intranasal"
                                  and clinic["now"] > sd.dose_ms + 7 * DAY)


def test_report_pdf_has_figures_and_charts(clinic, tmp_path):
    days = [datetime.fromtimestamp(sd.plan.t0_ms / 1000, ZoneInfo(TZ)).date() for sd in clinic["seeded"]]
    out = tmp_path / "report.pdf"
    assert main(["report", "-c", clinic["conf"], "--user", "dr-who", "--from", str(min(days)), "--to",
                 str(max(days)), "--format", "pdf", "-o", str(out)]) == 0
    text = subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True, text=True,
                          check=True).stdout
    acks = [a for sd in clinic["seeded"] for a in expected(sd)["ack_s"]]
    assert "VitalWatch clinic quality report" in text and "Sessions by route and dose" in text
    assert f"{review.fmt_duration(interp(acks, 0.5))} / {review.fmt_duration(interp(acks, 0.9))}" in text
    assert "Technical alarms by device" in text and "nibp-1" in text
    assert "label 8–19 %" in text and "REMS forms" in text
    for sd in clinic["seeded"]:
        assert sd.plan.patient in text


def test_report_bad_usage_exit_2(clinic, tmp_path, capsys):
    base = ["report", "-c", clinic["conf"], "--format", "csv", "-o", str(tmp_path / "x.csv")]
    assert main([*base, "--from", "2026-13-01", "--to", "2026-12-01"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
    assert main([*base, "--from", "2026-12-02", "--to", "2026-12-01"]) == 2
    assert main([*base, "--from", "2026-12-01", "--to", "2026-12-02", "--room", "nope"]) == 2
    assert "unknown room 'nope'" in capsys.readouterr().err
    assert main([*base, "--from", "2026-12-01", "--to", "2026-12-02", "--pseudonymize"]) == 2
    assert not (tmp_path / "x.csv").exists()


# --- summaries -------------------------------------------------------------------------------------------
def test_summaries_are_stored_at_archive_time_and_backfilled(clinic):
    arch, seeded = clinic["arch"], clinic["seeded"]
    with arch.engine.connect() as conn:
        stored = {r[0]: r[1] for r in conn.execute(sa.select(session_summaries.c.session_id,
                                                             session_summaries.c.version))}
    assert set(stored) == {sd.sid for sd in seeded} and set(stored.values()) == {quality.SUMMARY_VERSION}
    # an archive from before this table (or an older definition): recomputed when read, same numbers
    first = summaries.get_many(arch, [seeded[0].sid])[seeded[0].sid]
    with arch.engine.begin() as conn:
        conn.execute(session_summaries.delete().where(session_summaries.c.session_id == seeded[0].sid))
        conn.execute(session_summaries.update().where(session_summaries.c.session_id == seeded[1].sid)
                     .values(version=0, data="{}"))
    again = summaries.in_range(arch, clinic["cfg"].clinic.id)
    assert len(again) == len(seeded) and again[0] == first
    with arch.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(session_summaries)
                            .where(session_summaries.c.version == quality.SUMMARY_VERSION)).scalar_one() == len(seeded)
    # purge removes a session's summary with the session
    out = archive.purge(arch, max(sd.end_ms for sd in seeded) + 1)
    assert out["sessions"] == len(seeded)
    with arch.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(session_summaries)).scalar_one() == 0


# --- a patient's course ----------------------------------------------------------------------------------
def _find(component: Any, cid: str) -> Any:
    if getattr(component, "id", None) == cid:
        return component
    children = getattr(component, "children", None)
    for c in children if isinstance(children, list) else [children] if children is not None else []:
        hit = _find(c, cid)
        if hit is not None:
            return hit
    return None


def _text(component: Any) -> str:
    if component is None:
        return ""
    if isinstance(component, (str, int, float)):
        return str(component)
    children = getattr(component, "children", None)
    if isinstance(children, list):
        return "".join(_text(c) for c in children)
    return _text(children)


def test_patient_course_table_from_raw(clinic):
    from dashboard.pages.patient import course_page

    mine = sorted((sd for sd in clinic["seeded"] if sd.plan.patient == "MRN-A"), key=lambda s: s.plan.t0_ms)
    rows = summaries.for_patient(clinic["arch"], clinic["cfg"].clinic.id, "MRN-A")
    assert [r["session"] for r in rows] == [sd.sid for sd in mine]  # that patient only, in order
    page = course_page("MRN-A", rows, TZ)
    for sd in mine:
        e = expected(sd)

        def n(v: float) -> str:
            return str(int(v)) if float(v).is_integer() else f"{v:.1f}"

        assert _text(_find(page, f"patient-{sd.sid}-peak-sbp")) == f"{n(e['peak_sbp'])} ({e['peak_sbp_min']:+.0f})"
        assert _text(_find(page, f"patient-{sd.sid}-peak-dbp")) == f"{n(e['peak_dbp'])} ({e['peak_dbp_min']:+.0f})"
        assert _text(_find(page, f"patient-{sd.sid}-baseline")) == f"{n(e['baseline_sbp'])}/{n(e['baseline_dbp'])}"
        assert _text(_find(page, f"patient-{sd.sid}-max-hr")) == n(e["max_hr"])
        assert _text(_find(page, f"patient-{sd.sid}-min-spo2")) == n(e["min_spo2"])
        assert _text(_find(page, f"patient-{sd.sid}-alarms")) == "/".join(
            str(e["alarms"][p]) for p in ("high", "medium", "low"))
        adverse = [o.replace("_", " ") for o, yes in e["observations"].items() if yes]
        assert _text(_find(page, f"patient-{sd.sid}-adverse")) == (", ".join(adverse) or "none")
        assert _text(_find(page, f"patient-{sd.sid}-ready")) == ("—" if e["ready_min"] is None
                                                                 else n(float(e["ready_min"])))
    for sd in clinic["seeded"]:
        if sd.plan.patient != "MRN-A":
            assert _find(page, f"patient-row-{sd.sid}") is None
    # the BP response grows with dose over this series: the small multiples carry it
    trends = _find(page, "patient-trends").figure
    peaks = next(tr for tr in trends["data"] if tr["name"] == "peak SBP")["y"]
    assert list(peaks) == [expected(sd)["peak_sbp"] for sd in mine]
    curves = _find(page, "patient-curves").figure
    assert len(curves["data"]) == 2 * len(mine)
    assert {tr["xaxis"] for tr in curves["data"]} == {"x"} | {f"x{k}" for k in range(2, len(mine) + 1)}


# --- research CSV ---------------------------------------------------------------------------------------
def test_research_csv_one_row_per_reading_and_pseudonyms(clinic, tmp_path, rclient, keys):
    days = [datetime.fromtimestamp(sd.plan.t0_ms / 1000, ZoneInfo(TZ)).date() for sd in clinic["seeded"]]
    out = tmp_path / "research.csv"
    args = ["report", "-c", clinic["conf"], "--user", "dr-who", "--from", str(min(days)), "--to", str(max(days)),
            "--format", "research", "-o", str(out)]
    assert main(args) == 0
    rows = list(csv.DictReader(out.open()))
    raw = [(sd, r) for sd in sorted(clinic["seeded"], key=lambda s: s.plan.t0_ms)
           for r in sd.readings if sd.plan.t0_ms <= int(r["ts"]) <= sd.end_ms]
    assert len(rows) == len(raw)
    for row, (sd, r) in zip(rows, raw, strict=True):
        assert (row["session"], row["patient"], row["ts_ms"], row["dev"]) == (sd.sid, sd.plan.patient, r["ts"], r["dev"])
        for m in review.READING_METRICS:
            assert row[m] == r.get(m, "")
        assert row["min_after_dose"] == f"{(int(r['ts']) - sd.dose_ms) / 60_000:.2f}"
    # pseudonymised: keyed HMAC-SHA256 with the key file, stable per patient, no MRN left anywhere
    out2 = tmp_path / "research-p.csv"
    assert main([*args[:-1], str(out2), "--pseudonymize"]) == 0
    text = out2.read_text()
    assert "MRN-" not in text and not any(sd.sid in text for sd in clinic["seeded"])
    key = research.key_path(clinic["cfg"]).read_bytes()
    assert len(key) == 32 and (research.key_path(clinic["cfg"]).stat().st_mode & 0o777) == 0o600
    prow = list(csv.DictReader(io.StringIO(text)))
    want = "P-" + hmac.new(key, b"MRN-A", hashlib.sha256).hexdigest()[:16]
    assert prow[0]["patient"] == want and len({r["patient"] for r in prow}) == 3
    assert [r["ts_ms"] for r in prow] == [r["ts_ms"] for r in rows]
    assert main([*args[:-1], str(tmp_path / "again.csv"), "--pseudonymize"]) == 0  # same key → same pseudonyms
    assert (tmp_path / "again.csv").read_text() == text
    entry = audit.entries(rclient, keys)[0]
    assert entry["action"] == "research.export" and entry["details"]["pseudonymized"] is True
    # one patient only
    out3 = tmp_path / "one.csv"
    assert main([*args[:-1], str(out3), "--patient", "MRN-B"]) == 0
    assert {r["patient"] for r in csv.DictReader(out3.open())} == {"MRN-B"}


def test_report_json_api_shape_is_json(clinic):
    """The totals serialise (tuples, Counters) for the API."""
    rep = report.build(clinic["arch"], clinic["cfg"], 0, clinic["now"], None, clinic["now"])
    json.dumps(rep.totals, default=list)


def test_an_archive_at_schema_v1_gains_the_summaries_table(archive_url):  # noqa: F811
    from pathlib import Path

    from monitor.sessions import archive_schema

    url = archive.engine_url(archive_url)
    if url.drivername.startswith("sqlite"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a database as the previous release left it
        archive_schema.schema_version.create(conn)
        archive_schema.MIGRATIONS[0][1](conn)
        conn.execute(archive_schema.schema_version.insert().values(version=1, applied_ms=0))
    assert not sa.inspect(engine).has_table("session_summaries")
    engine.dispose()
    arch = archive.open_archive(archive_url)
    assert sa.inspect(arch.engine).has_table("session_summaries")
    with arch.engine.connect() as conn:
        assert archive_schema.current_version(conn) == archive_schema.LATEST >= 2
