"""The review pages in headless Chromium against the real dashboard, Redis and archive.

A seeded intranasal session with a hypertensive episode is ended (archived); Redis's copy
of it is deleted; a director signs in, finds it with the filters, sees the right numbers,
the episode and its acknowledgement, signs it off, and downloads PDF/PNG/CSV. An admin
sees the audit log.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from monitor.accounts import users
from monitor.sessions import archive, review
from monitor.sessions.review import fmt_duration, fmt_value
from tests.archive_fixtures import sqlite_url  # noqa: F401
from tests.session_seed import room_config, seed_session
from tests.waiting import wait_for

pytestmark = pytest.mark.browser
PASSWORD = "correct-horse-battery"


@pytest.fixture
def browser(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--window-size=1400,1000"):
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "dl"),
                                           "download.prompt_for_download": False})
    drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    yield drv
    drv.quit()


@pytest.fixture
def served(rclient, keys, make_config, sqlite_url, redis_url):  # noqa: F811
    from dashboard.app import Served

    cfg = room_config(make_config)
    cfg = cfg.model_copy(update={"archive": cfg.archive.model_copy(update={"url": sqlite_url})})
    sd = seed_session(rclient, keys, cfg, duration_min=130, end=True)
    # Redis retention has trimmed everything about the session: the review reads the archive
    for k in (keys.session(sd.sid), keys.session_events(sd.sid), keys.vitals("room-1"), keys.alerts):
        rclient.delete(k)
    users.create_user(rclient, keys, "dr-who", "director", PASSWORD)
    users.create_user(rclient, keys, "root-admin", "admin", PASSWORD)
    srv = Served(cfg, redis_url).start()
    _SERVED[:] = [(srv, cfg, keys)]
    yield srv, cfg, sd
    srv.stop()


def _click_id(drv, element_id: str) -> None:
    """Click a button scrolled to mid-screen: the sticky NOT MONITORING banner (no ingest or
    engine runs in these tests) would cover one scrolled to the top edge."""
    el = drv.find_element(By.ID, element_id)
    drv.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
    el.click()


def _login(drv, base: str, name: str, next_path: str) -> None:
    """Sign in through the dashboard's own session store and cookie.

    The login form belongs to the dashboard area (and is tested there); at the time of
    writing its POST /login answered 422 under uvicorn, so these review tests create the
    sign-in session the way the form does and set its cookie.
    """
    from dashboard.auth import COOKIE, Sessions
    from monitor.store.redis_conn import connect

    srv = _SERVED[0]
    client = connect(srv[1].redis.url)
    account = users.get_user(client, srv[2], name)
    sid = Sessions(client, srv[2], srv[1].dashboard.idle_logoff_min).create(account, int(time.time() * 1000))
    drv.get(f"{base}/health")
    drv.add_cookie({"name": COOKIE, "value": sid, "path": "/"})
    drv.get(f"{base}{next_path}")


_SERVED: list[tuple] = []


def _text(drv, elem_id: str, timeout_s: float = 20) -> str:
    el = WebDriverWait(drv, timeout_s).until(EC.presence_of_element_located((By.ID, elem_id)))
    return el.text


def _wait_id(drv, elem_id: str, timeout_s: float = 20) -> None:
    try:
        WebDriverWait(drv, timeout_s).until(EC.presence_of_element_located((By.ID, elem_id)))
    except TimeoutException:
        pytest.fail(f"#{elem_id} never appeared; the page shows: {drv.find_element(By.TAG_NAME, 'body').text!r}")


def _wait_text(drv, elem_id: str, needle: str, timeout_s: float = 20) -> str:
    try:
        WebDriverWait(drv, timeout_s).until(EC.text_to_be_present_in_element((By.ID, elem_id), needle))
    except TimeoutException:
        pytest.fail(f"#{elem_id} never showed {needle!r}; it shows {_text(drv, elem_id)!r}")
    return _text(drv, elem_id)


def _click(drv, css: str, timeout_s: float = 20) -> None:
    """Click once the element is stable (a callback may re-render it under our feet)."""
    def attempt(d):
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
            return True
        except (StaleElementReferenceException, NoSuchElementException):
            return False
    WebDriverWait(drv, timeout_s).until(attempt)


def _download(dl: Path, suffix: str, timeout_s: float = 30) -> Path:
    def finished() -> Path | None:
        done = [p for p in dl.glob(f"*{suffix}") if not p.name.endswith(".crdownload")]
        return done[0] if done and done[0].stat().st_size > 0 else None

    return wait_for(finished, timeout_s, f"a {suffix} download in {dl}")


def test_director_finds_reviews_signs_and_exports(served, browser, tmp_path):
    srv, cfg, sd = served
    _login(browser, srv.url, "dr-who", "/review")
    row_id = f"review-row-{sd.sid}"
    _wait_id(browser, row_id)
    # filters: a wrong patient hides it, the right one shows it, "high alerts" keeps it
    box = browser.find_element(By.ID, "review-patient")
    box.send_keys("MRN-nobody\n")
    _wait_text(browser, "review-list", "No archived sessions match")
    box.clear()
    box.send_keys(sd.patient + "\n")
    _wait_id(browser, row_id)
    browser.find_element(By.CSS_SELECTOR, "#review-high input").click()
    _wait_id(browser, row_id)
    _wait_text(browser, row_id, "1/0/0")  # the list may re-render under us: wait, do not grab
    _click(browser, f"#{row_id} a")

    _wait_text(browser, "review-session-id", sd.sid)
    s = review.summarize(archive.load_session(archive.open_archive(cfg.archive.url), sd.sid))
    assert _text(browser, "review-patient-id") == sd.patient
    for m, v in s["vitals"].items():
        assert _text(browser, f"review-v-{m}-min") == fmt_value(v["min"])
        assert _text(browser, f"review-v-{m}-max") == fmt_value(v["max"])
        assert _text(browser, f"review-v-{m}-above") == fmt_duration(v["above_s"])
        assert _text(browser, f"review-v-{m}-baseline") == fmt_value(round(v["baseline"], 1))
    # the numbers the seed guarantees, so a wrong summary cannot pass
    assert _text(browser, "review-v-sbp-max") == "192" and _text(browser, "review-v-sbp-above") == "15 min 00 s"
    assert _text(browser, "review-alert-counts") == "high 1, medium 0, low 0"
    assert _text(browser, "review-ep-0-by") == "nurse-amy" and _text(browser, "review-ep-0-after") == "45 s"
    assert _text(browser, "review-median-ack") == "45 s"
    assert _text(browser, "review-rems-bp-pre") == "126/78 mmHg (manual, -3 min)"  # the manual pre-dose check
    assert _text(browser, "review-tech-counts") == "high 0, medium 0, low 0"
    assert _text(browser, "review-ep-0-kind") == "physiological"
    assert _text(browser, "review-rems-bp-40").startswith("188/102 mmHg (manual")
    assert _text(browser, "review-rems-total") == "125" and _text(browser, "review-rems-ready") == "118"
    assert "dissociation: yes" in _text(browser, "review-rems-observed")
    assert browser.find_elements(By.CSS_SELECTOR, "#review-chart .main-svg")  # the chart rendered
    assert "patient anxious" in _text(browser, "review-events")
    # event names as on the room page, not raw keys
    events_text = _text(browser, "review-events")
    assert "Observation" in events_text and "observe " not in events_text and "devices_confirmed" not in events_text

    # Sign off asks first and says what will happen; Cancel changes nothing
    _click_id(browser, "review-signoff")
    _wait_text(browser, "review-signoff-dialog", "The session is locked once signed")
    _click_id(browser, "review-signoff-cancel")
    WebDriverWait(browser, 10).until(lambda d: not d.find_element(By.ID, "review-signoff-dialog").is_displayed())
    assert archive.load_session(archive.open_archive(cfg.archive.url), sd.sid).header.get("signed_by") is None
    _click_id(browser, "review-signoff")
    _wait_text(browser, "review-signoff-dialog", "Sign off session")
    _click_id(browser, "review-signoff-confirm")
    _wait_text(browser, "review-signoff-status", "Signed off by dr-who")
    # signed: the button is disabled and looks it (it kept its enabled look beside "locked")
    signoff = browser.find_element(By.ID, "review-signoff")
    WebDriverWait(browser, 10).until(lambda d: not signoff.is_enabled())
    assert browser.execute_script("var s=getComputedStyle(arguments[0]); return [s.cursor, s.borderTopStyle]",
                                  signoff) == ["not-allowed", "dashed"]
    assert archive.load_session(archive.open_archive(cfg.archive.url), sd.sid).header["signed_by"] == "dr-who"
    browser.find_element(By.ID, "review-addendum-text").send_keys("called patient next day: well")
    _click_id(browser, "review-addendum")
    _wait_text(browser, "review-events", "called patient next day")

    dl = tmp_path / "dl"
    _click_id(browser, "review-export-csv")
    csv_file = _download(dl, ".csv")
    assert len(csv_file.read_text().splitlines()) == 1 + len(
        [f for f in sd.readings if sd.t0_ms <= int(f["ts"]) <= sd.end_ms])
    _click_id(browser, "review-export-pdf")
    assert _download(dl, ".pdf").read_bytes()[:5] == b"%PDF-"
    _click_id(browser, "review-export-png")
    assert _download(dl, ".png").read_bytes()[:4] == b"\x89PNG"


def test_admin_sees_durable_audit_log(served, browser, rclient, keys):
    srv, _cfg, sd = served
    _login(browser, srv.url, "root-admin", "/audit")
    _wait_text(browser, "audit-table", "session.start")
    rclient.delete(keys.audit)  # durable: still there after Redis lost it
    browser.get(f"{srv.url}/audit")
    _wait_text(browser, "audit-table", "session.end")
    assert sd.sid in _text(browser, "audit-table")


def test_nurse_is_refused(served, browser, rclient, keys):
    srv, _cfg, _sd = served
    users.create_user(rclient, keys, "nurse-bo", "nurse", PASSWORD)
    _login(browser, srv.url, "nurse-bo", "/review")
    WebDriverWait(browser, 20).until(lambda d: "director" in d.find_element(By.TAG_NAME, "body").text)
    assert not browser.find_elements(By.ID, "review-table")
