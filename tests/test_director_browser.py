"""The director's features in headless Chromium against the real dashboard, Redis and archive.

A nurse finds the REMS forms not yet submitted, completes one (text fields, yes/no answers,
attestation) and saves it: the page says "Ready to submit". She cannot open a patient's
course. The director sees the forms due / overdue on the review list ("form incomplete" for
the others), opens the quality report (the session count, the surge count and the table
follow the archive), follows a session's link to the patient's course and sees that
patient's sessions only, with their peak BP.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys as KeyPress

from monitor.model.clock import now_ms
from monitor.sessions import archive, summaries
from tests.archive_fixtures import sqlite_url  # noqa: F401
from tests.course_seed import Alarm, Plan, seed_all, two_room_config
from tests.dashboard_support import click, click_css, login, served_dashboard, wait_page
from tests.test_rems_form import COMPLETE

pytestmark = pytest.mark.browser
DAY = 86_400_000
PW = "browser-pass-123"
TZ = "America/Denver"


def fid(key: str) -> str:
    """The DOM id Dash gives a pattern-matching id {"page": "rems", "field": key}."""
    return json.dumps({"field": key, "page": "rems"}, separators=(",", ":"))


def fill_field(d: Any, key: str, text: str) -> None:
    """Type into a form field like a person (selenium's By.ID cannot take a JSON id)."""
    sel = f"[id='{fid(key)}']"
    el = d.find_element(By.CSS_SELECTOR, sel)
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    el.send_keys(KeyPress.CONTROL, "a")
    el.send_keys(KeyPress.BACKSPACE)
    el.send_keys(text)
    wait_page(lambda: d.find_element(By.CSS_SELECTOR, sel).get_attribute("value") == text, 5, f"{key} = {text!r}")


def text_of(d: Any, element_id: str) -> str:
    return d.find_element(By.ID, element_id).text


@pytest.fixture
def site(make_config, keys, sqlite_url, redis_url):  # noqa: F811
    cfg = two_room_config(make_config, sqlite_url, clinic={"id": keys.clinic, "name": "Browser Clinic",
                                                            "timezone": TZ})
    now = now_ms()
    plans = [Plan("MRN-A", "room-1", now - 9 * DAY, dose_mg=56, rise_sbp=22, observations=[(10, "dissociation")],
                  alarms=[Alarm(30, ack_after_s=25)]),
             Plan("MRN-A", "room-1", now - 2 * DAY, dose_mg=84, rise_sbp=47, manual_bp=[(-3, 128, 80)]),
             Plan("MRN-B", "room-2", now - 1 * DAY, dose_mg=56, rise_sbp=15)]
    out: dict[str, Any] = {}

    def before(client, k) -> None:  # noqa: ANN001
        out["seeded"] = seed_all(client, k, cfg, plans)

    accounts = {"nina": ("nurse", PW), "dora": ("director", PW)}
    with served_dashboard(cfg, redis_url, accounts, before_serve=before) as env:
        yield {**env, **out, "arch": archive.open_archive(sqlite_url)}


def test_nurse_completes_a_rems_form(site):
    d, base = site["driver"], site["url"]
    a1, a2, b1 = site["seeded"]
    login(d, base, "nina", PW, "/rems")
    wait_page(lambda: d.find_elements(By.ID, f"rems-due-row-{a2.sid}"), 20, "the forms-due list")
    assert "form incomplete" in text_of(d, f"rems-due-row-{a1.sid}") and "OVERDUE" in text_of(d, f"rems-due-row-{a1.sid}")
    assert "3 form(s) not yet submitted, 1 overdue" in text_of(d, "rems-due-count")
    # a narrow window (a tablet, half a screen): no date breaks at its hyphens or its space —
    # an inline span the browser wrapped has more than one client rectangle
    d.set_window_size(480, 1000)
    try:
        lines = d.execute_script("return [...document.querySelectorAll('#rems-due .vw-date')]"
                                 ".map(e => e.getClientRects().length)")
        assert lines == [1] * 6, lines  # treatment and due date of each of the 3 forms
    finally:
        d.set_window_size(1400, 1000)
    click_css(d, f"#rems-due-row-{a2.sid} a")
    wait_page(lambda: "Form incomplete" in text_of(d, "rems-status"), 20, "the form")
    assert text_of(d, "rems-value-bp_pre").startswith("128/80 mmHg at")  # the manual pre-dose check
    assert text_of(d, "rems-value-dose") == "84 mg"
    for key, value in COMPLETE.items():
        if key == "hcp_attestation":
            click_css(d, f"[id='{fid(key)}'] input")
        elif value in ("yes", "no"):
            click_css(d, f"[id='{fid(key)}'] input[value='{value}']")
        elif key == "setting_name":
            continue
        else:
            fill_field(d, key, value)
    click(d, "rems-save")
    wait_page(lambda: text_of(d, "rems-status").startswith("Ready to submit"), 20, "saved and complete")
    assert text_of(d, "rems-value-lot_number") == "LOT-77A"
    assert "Saved" in text_of(d, "rems-message")
    # the same nurse may not open a patient's course (director and admin only)
    d.get(f"{base}/review/patient/MRN-A")
    wait_page(lambda: "director" in d.find_element(By.TAG_NAME, "body").text, 20, "refusal")
    assert not d.find_elements(By.ID, "patient-table")


def test_director_due_list_report_and_patient_course(site):
    d, base, arch, cfg = site["driver"], site["url"], site["arch"], site["cfg"]
    a1, a2, b1 = site["seeded"]
    login(d, base, "dora", PW, "/review")
    wait_page(lambda: d.find_elements(By.ID, f"review-rems-due-row-{b1.sid}"), 20, "REMS forms due on /review")
    for sd in (a1, a2, b1):
        assert "form incomplete" in text_of(d, f"review-rems-due-row-{sd.sid}")
    d.get(f"{base}/report")
    wait_page(lambda: text_of(d, "report-sessions") == "3", 20, "the report")
    rows = summaries.in_range(arch, cfg.clinic.id)
    surges = sum(1 for s in rows if s["surge"])
    assert text_of(d, "report-surge").startswith(f"{surges} of 3")
    assert len(d.find_elements(By.CSS_SELECTOR, "#report-table .report-row")) == 3
    # the room filter
    click(d, "report-room")  # Dash 4's dropdown: a button opening a list of options
    click_css(d, ".dash-dropdown-option:has(input[value='room-2'])")
    wait_page(lambda: text_of(d, "report-room") == "room-2", 10, "room-2 chosen")
    click(d, "report-run")
    wait_page(lambda: text_of(d, "report-sessions") == "1", 20, "report for room-2")
    assert "room room-2" in text_of(d, "report-scope")
    # a session's review links to its patient's course
    d.get(f"{base}/review/{a2.sid}")
    wait_page(lambda: d.find_elements(By.ID, "review-patient-course"), 20, "review page")
    assert text_of(d, "review-rems-status").startswith("Form incomplete")
    click(d, "review-patient-course")
    wait_page(lambda: d.find_elements(By.ID, "patient-table"), 20, "patient course")
    assert text_of(d, "patient-id") == "MRN-A"
    assert len(d.find_elements(By.CSS_SELECTOR, "#patient-table .patient-row")) == 2  # MRN-A's sessions only
    assert not d.find_elements(By.ID, f"patient-row-{b1.sid}")
    for sd in (a1, a2):
        s = next(r for r in rows if r["session"] == sd.sid)
        peak = text_of(d, f"patient-{sd.sid}-peak-sbp")
        assert peak.startswith(f"{s['peak_sbp']:g} (")
    assert d.find_elements(By.CSS_SELECTOR, "#patient-trends .main-svg")
    assert d.find_elements(By.CSS_SELECTOR, "#patient-curves .main-svg")
