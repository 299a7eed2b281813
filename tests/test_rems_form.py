"""The REMS Patient Monitoring Form: prefill from the session, staff entries (validated,
append-only, addenda on a signed session), completeness, due / overdue, submission, the PDF.

Acceptance (issue 17): after three simulated sessions for two patients, the REMS PDF of each
shows its BP values and times, observations and monitored minutes; the fields nobody has
completed are blank; the sessions are listed as "form incomplete".
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from monitor.app.cli import main
from monitor.model.clock import now_ms
from monitor.sessions import archive, rems_form, rems_pdf, rems_store
from monitor.sessions import lifecycle as sessions
from monitor.sessions.archive_schema import session_events
from tests.archive_fixtures import archive_url, pg_url, sqlite_url  # noqa: F401
from tests.course_seed import Alarm, Plan, seed_all, two_room_config
from tests.test_director_reports import TZ, config_file

DAY = 86_400_000
MIN = 60_000
COMPLETE = {
    "first_treatment": "no", "benzodiazepines": "no", "non_benzo_hypnotics": "no", "psychostimulants": "yes",
    "maois": "no", "hcp_first_name": "Amy", "hcp_last_name": "Nurse", "hcp_phone": "555-0100",
    "hcp_email": "amy@clinic.example", "setting_address1": "1 Main St", "setting_city": "Lonerock",
    "setting_state": "OR", "setting_zip": "97823", "lot_number": "LOT-77A", "vitals_ok_pre": "yes",
    "vitals_ok_end": "yes", "serious_adverse_event": "no", "hcp_attestation": "yes",
}


# --- pure: entries, fold, completeness ------------------------------------------------------------
@pytest.mark.parametrize("key,value,stored", [
    ("lot_number", "  LOT-1 ", "LOT-1"),
    ("benzodiazepines", "YES", "yes"),
    ("bp_40", "150/92", "150/92"),
    ("bp_40", "150 / 92 mmHg at 10:41", "150/92 at 10:41"),
    ("ready_minutes", "95", "95"),
    ("hcp_attestation", "yes", "yes"),
    ("hcp_email", "a@b.org", "a@b.org"),
    ("lot_number", "", ""),  # clears
])
def test_valid_entries(key: str, value: str, stored: str) -> None:
    assert rems_form.validate_entry(key, value) == stored


@pytest.mark.parametrize("key,value,why", [
    ("nope", "x", "unknown REMS form field"),
    ("treatment_date", "01/01/2026", "comes from the session record"),
    ("total_minutes", "130", "comes from the session record"),
    ("patient_last_name", "Doe", "comes from the session record"),  # names are never stored
    ("benzodiazepines", "maybe", "yes or no"),
    ("hcp_attestation", "no", "answer yes"),
    ("bp_40", "150-92", "SBP/DBP"),
    ("bp_40", "92/150", "must be below systolic"),
    ("bp_40", "400/90", "outside"),
    ("ready_minutes", "-5", "whole minutes"),
    ("hcp_email", "not-an-email", "not an email"),
    ("lot_number", "x" * 501, "at most 500"),
])
def test_invalid_entries(key: str, value: str, why: str) -> None:
    with pytest.raises(rems_form.InvalidEntry, match=why):
        rems_form.validate_entry(key, value)


def _prefill(**over: Any) -> dict[str, Any]:
    base = {"required": True, "session": "s1", "patient": "P1", "start_ms": 1_000_000, "dose_ms": 1_300_000,
            "end_ms": 1_300_000 + 125 * MIN, "dose_mg": 56.0, "total_min": 125.0, "ready_min": 100.0,
            "ready_ms": 1_300_000 + 100 * MIN,
            "bp_pre": {"sbp": 126.0, "dbp": 78.0, "ts": 1_120_000, "source": "manual", "min_after_dose": -3.0},
            "bp_40": None,
            "bp_end": {"sbp": 130.0, "dbp": 80.0, "ts": 1_300_000 + 120 * MIN, "source": "nibp-1",
                       "min_after_dose": 120.0},
            "observations": {o: {"occurred": o == "dissociation", "first_min": 15.0 if o == "dissociation" else None}
                             for o in ("sedation", "dissociation", "respiratory_depression", "nausea")},
            "bp_rise": {"sbp": 45.0, "dbp": 20.0, "surge": True}}
    return {**base, **over}


def _staff(values: dict[str, str], by: str = "amy", ts: int = 2_000_000) -> dict[str, dict[str, Any]]:
    return {k: {"value": v, "by": by, "ts": ts} for k, v in values.items()}


def test_completeness_and_conditionals() -> None:
    setting = {"setting_name": "Clinic"}
    st = rems_form.build(_prefill(), {}, None, setting, "UTC", now_ms=0)
    assert st.status == "incomplete" and "BP at 40 min" in st.missing and "lot number" in st.missing
    assert not any("First name" == m or "Birthdate" in m for m in st.missing)  # names: outside VitalWatch
    assert st.value("dissociation") == "yes" and st.value("sedation") == "no" and st.value("bp_increase") == "yes"
    st = rems_form.build(_prefill(), _staff({**COMPLETE, "bp_40": "150/92"}), None, setting, "UTC", now_ms=0)
    assert st.missing == [] and st.status == "ready to submit" and st.status_text == "ready to submit"
    # conditional fields: enrolled? only for a first treatment; SAE description only with an SAE
    st = rems_form.build(_prefill(), _staff({**COMPLETE, "bp_40": "150/92", "first_treatment": "yes",
                                             "serious_adverse_event": "yes"}), None, setting, "UTC", now_ms=0)
    assert st.missing == ["patient enrolled?", "serious AE description"]
    # a session monitored < 2 h is flagged, not hidden
    st = rems_form.build(_prefill(total_min=95.0), {}, None, setting, "UTC", now_ms=0)
    assert st.value("monitored_2h") == "no" and any("less than the required 2 hours" in w for w in st.warnings)


def test_due_and_overdue_count_from_the_treatment() -> None:
    p = _prefill()
    due = p["dose_ms"] + 7 * DAY
    assert rems_form.build(p, {}, None, {}, "UTC", now_ms=due).overdue is False
    st = rems_form.build(p, {}, None, {}, "UTC", now_ms=due + 1)
    assert st.overdue and st.due_ms == due
    st = rems_form.build(p, {}, {"method": "fax", "by": "amy", "ts": due + 5}, {}, "UTC", now_ms=due + 10)
    assert not st.overdue and st.status == "submitted"
    assert rems_form.build(p, {}, None, {}, "UTC", now_ms=due + 1, due_days=10).overdue is False


def test_fold_latest_wins_and_empty_clears() -> None:
    evs = [{"ts": 3, "user": "b", "rems": {"lot_number": "L2"}},
           {"ts": 1, "user": "a", "rems": {"lot_number": "L1", "maois": "no"}},
           {"ts": 4, "user": "c", "rems": {"maois": ""}},
           {"ts": 5, "user": "d", "rems_submitted": {"method": "portal", "reference": "R1"}},
           {"ts": 6, "user": "e", "text": "an ordinary addendum"}]
    staff, sub = rems_form.fold(evs)
    assert staff == {"lot_number": {"value": "L2", "by": "b", "ts": 3}}
    assert sub == {"method": "portal", "reference": "R1", "by": "d", "ts": 5}


# --- the archive: three sessions, two patients --------------------------------------------------------
@pytest.fixture
def three(rclient, keys, make_config, archive_url, tmp_path):  # noqa: F811
    cfg = two_room_config(make_config, archive_url, clinic={"id": keys.clinic, "name": "Lonerock Clinic",
                                                             "timezone": TZ})
    now = now_ms()
    plans = [
        Plan("MRN-1", "room-1", now - 10 * DAY, dose_mg=56, rise_sbp=30, rise_dbp=12,
             manual_bp=[(-3, 126, 78), (41, 158, 92)], observations=[(12, "dissociation")], ready_at_min=95),
        Plan("MRN-1", "room-1", now - 2 * DAY, dose_mg=84, rise_sbp=44, rise_dbp=20,
             observations=[(8, "sedation"), (20, "nausea")], ready_at_min=110,
             alarms=[Alarm(40, "sbp", "high", dev="nibp-1", cond="sbp_high", ack_after_s=30)]),
        Plan("MRN-2", "room-2", now - 1 * DAY, dose_mg=56, rise_sbp=12, rise_dbp=6, duration_min=100,
             manual_bp=[(-2, 132, 84)], ready_at_min=None),
    ]
    seeded = seed_all(rclient, keys, cfg, plans)
    conf = config_file(tmp_path / "vw.toml", cfg, keys.clinic)
    return {"cfg": cfg, "seeded": seeded, "now": now, "conf": str(conf), "arch": archive.open_archive(archive_url)}


def _pdf_text(path: Path) -> str:
    """The PDF's text in drawing order (-raw keeps a wrapped table cell's lines together),
    whitespace collapsed, so a phrase can be searched whatever the column widths."""
    raw = subprocess.run(["pdftotext", "-raw", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return " ".join(raw.split())


def _pdf_lines(path: Path) -> list[str]:
    raw = subprocess.run(["pdftotext", "-raw", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return raw.splitlines()


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(TZ)).strftime("%H:%M")


def test_rems_pdf_holds_prefilled_values_and_blanks(three, tmp_path):
    a1, a2, b1 = three["seeded"]
    texts = {}
    for sd in three["seeded"]:
        out = tmp_path / f"{sd.sid}.pdf"
        assert main(["export", "-c", three["conf"], "--user", "dr-who", "--session", sd.sid, "--format", "rems",
                     "-o", str(out)]) == 0
        text = texts[sd.sid] = _pdf_text(out)
        p, dose = sd.plan, sd.dose_ms
        assert "SPRAVATO® REMS Patient Monitoring Form" in text and f"patient id {p.patient}" in text
        assert f"Treatment date (MM/DD/YYYY) {datetime.fromtimestamp(dose / 1000, ZoneInfo(TZ)):%m/%d/%Y}" in text
        assert f"other) {p.dose_mg:g} mg VitalWatch: session dose" in text
        minutes = round((sd.end_ms - dose) / MIN)
        assert f"monitoring) {minutes} VitalWatch: first dose → end of session" in text
        assert f"at least 2 hours {'yes' if minutes >= 120 else 'no'} VitalWatch: {minutes} min monitored" in text
        assert "Healthcare setting name Lonerock Clinic" in text
        assert "Form status: missing:" in text and "lot number" in text
        # every field nobody completed is a blank line: VitalWatch never fills in what staff complete
        lines = _pdf_lines(out)
        for label in ("Lot number", "Benzodiazepines", "Psychostimulants", "Serious adverse event", "First name",
                      "Last name", "Birthdate", "Sex", "Telephone", "Email", "Address 1", "City", "ZIP"):
            line = next(ln for ln in lines if ln.startswith(label))
            assert line.endswith(rems_pdf.BLANK) or rems_pdf.BLANK in line, line
    # BP values with their times (the nurse's manual checks where taken), observations
    t1 = texts[a1.sid]
    assert f"prior to administration 126/78 mmHg at {_clock(a1.dose_ms - 3 * MIN)} (-3 min) VitalWatch: " \
           "nurse's manual check" in t1
    assert f"158/92 mmHg at {_clock(a1.dose_ms + 41 * MIN)} (+41 min) VitalWatch: nurse's manual check" in t1
    assert "Dissociation yes VitalWatch: observation recorded at +12 min" in t1
    assert "Sedation no VitalWatch: no observation recorded" in t1
    assert "administration) 95 VitalWatch: ready-to-leave observation" in t1
    t2 = texts[a2.sid]
    # no manual check: the NIBP readings nearest the REMS times (the device is named as the source)
    assert "VitalWatch: device nibp-1" in t2
    assert "Sedation yes VitalWatch: observation recorded at +8 min" in t2
    assert "Other adverse events Nausea/dizziness (+20 min)" in t2
    assert "Increase in blood pressure yes" in t2  # the seeded +44 SBP rise
    t3 = texts[b1.sid]
    assert "132/84 mmHg" in t3 and "(-2 min) VitalWatch: nurse's manual check" in t3
    assert f"administration) {rems_pdf.BLANK}" in t3 and "ready-to-leave time" in t3  # no observation: blank


def test_sessions_listed_form_incomplete_then_ready_then_submitted(three, rclient, keys):
    arch, cfg, now = three["arch"], three["cfg"], three["now"]
    states, total = rems_store.forms_due(arch, cfg, now)
    assert total == 3 and {s.session for s in states} == {sd.sid for sd in three["seeded"]}
    assert all(s.status == "incomplete" for s in states)
    assert states[0].overdue and states[0].session == three["seeded"][0].sid  # 10 days ago: overdue, listed first
    assert [s.overdue for s in states] == [True, False, False]
    sid = three["seeded"][1].sid
    with pytest.raises(rems_store.FormIncomplete, match="lot number"):
        rems_store.mark_submitted(arch, cfg, sid, "amy", now, "portal")
    # an invalid value among valid ones: nothing is stored
    with pytest.raises(rems_form.InvalidEntry):
        rems_store.save_entries(arch, sid, "amy", {**COMPLETE, "maois": "perhaps"}, now)
    assert rems_store.form_state(arch, cfg, sid, now).staff == {}
    rems_store.save_entries(arch, sid, "amy", COMPLETE, now)
    st = rems_store.form_state(arch, cfg, sid, now)
    assert st.status == "ready to submit", st.missing
    assert st.value("lot_number") == "LOT-77A" and st.value("setting_name") == "Lonerock Clinic"
    assert st.value("hcp_attestation").startswith("Attested by amy")
    rems_store.mark_submitted(arch, cfg, sid, "amy", now + 1, "fax", "FAX-123")
    states, total = rems_store.forms_due(arch, cfg, now + 2)
    assert total == 2 and sid not in {s.session for s in states}
    st = rems_store.form_state(arch, cfg, sid, now + 2)
    assert st.status == "submitted" and st.submitted["reference"] == "FAX-123"
    # every entry is on record, with who and when (append-only)
    with arch.engine.connect() as conn:
        kinds = [r[0] for r in conn.execute(sa.select(session_events.c.type).where(
            session_events.c.session_id == sid, session_events.c.type.in_(["rems_form", "rems_submitted"])))]
    assert sorted(kinds) == ["rems_form", "rems_submitted"]


def test_signed_session_takes_entries_as_addenda(three, rclient, keys):
    arch, cfg, now = three["arch"], three["cfg"], three["now"]
    sid = three["seeded"][2].sid
    sessions.sign_off(rclient, keys, cfg, sid, "dr-who")
    rems_store.save_entries(arch, sid, "amy", {"lot_number": "LOT-9", "ready_minutes": "70"}, now)
    rec = archive.load_session(arch, sid)
    add = [e for e in rec.events if e["type"] == "addendum"]
    assert len(add) == 1 and add[0]["user"] == "amy" and "Lot number = LOT-9" in add[0]["text"]
    assert rec.header["signed_by"] == "dr-who"  # still locked
    st = rems_pdf.form_for_record(rec, cfg, now)
    assert st.value("lot_number") == "LOT-9" and st.value("ready_minutes") == "70"
    assert "ready-to-leave time" not in st.missing


def test_rems_export_refuses_a_non_esketamine_session(rclient, keys, make_config, sqlite_url, tmp_path, capsys):  # noqa: F811
    cfg = two_room_config(make_config, sqlite_url, clinic={"id": keys.clinic, "timezone": TZ})
    now = now_ms()
    (sd,) = seed_all(rclient, keys, cfg, [Plan("MRN-9", "room-1", now - DAY, route="iv", dose_mg=35)])
    conf = config_file(tmp_path / "vw.toml", cfg, keys.clinic)
    assert main(["export", "-c", str(conf), "--session", sd.sid, "--format", "rems", "-o",
                 str(tmp_path / "x.pdf")]) == 2
    assert "not an esketamine session" in capsys.readouterr().err and not (tmp_path / "x.pdf").exists()
    arch = archive.open_archive(sqlite_url)
    with pytest.raises(rems_store.NotRemsSession):
        rems_store.save_entries(arch, sd.sid, "amy", {"lot_number": "L"}, now)
    assert rems_store.forms_due(arch, cfg, now) == ([], 0)


def test_pdf_after_completion_has_no_blank_staff_fields(three, tmp_path):
    arch, now = three["arch"], three["now"]
    sd = three["seeded"][0]
    rems_store.save_entries(arch, sd.sid, "amy", COMPLETE, now)
    out = tmp_path / "done.pdf"
    assert main(["export", "-c", three["conf"], "--user", "amy", "--session", sd.sid, "--format", "rems",
                 "-o", str(out)]) == 0
    text = _pdf_text(out)
    assert "Form status: ready to submit" in text and "Lot number LOT-77A entered by amy" in text
    assert "Email amy@clinic.example" in text
    # what stays blank: the patient's name, birth date and sex (never stored) and the optional fields
    assert text.count(rems_pdf.BLANK) == len([f for f in rems_form.FIELDS if f.source == "outside"]) + 3
    json.dumps(rems_form.fold([])[0])
