"""Accessibility as a test: axe-core (axe-playwright-python, driving the Debian Chromium) on the
sign-in page, the overview (with an alarm, a latched alarm and a reminder on screen), a room
page with an open session, the review list and a session's review, and the phone view — no
critical or serious violation on any of them. And the alarm actions work from the keyboard
alone: Tab reaches Acknowledge, Enter acknowledges."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from monitor.accounts import users
from monitor.sessions import lifecycle as sessions
from tests.archive_fixtures import sqlite_url  # noqa: F401
from tests.dashboard_support import Beats, inject_alert, now_ms
from tests.session_seed import seed_session

pytestmark = pytest.mark.browser
axe_sync = pytest.importorskip("axe_playwright_python.sync_playwright")
sync_api = pytest.importorskip("playwright.sync_api")
PASSWORD = "correct-horse-battery"
SERIOUS = ("critical", "serious")


@pytest.fixture
def served(rclient, keys, make_config, sqlite_url, redis_url) -> Iterator[dict[str, Any]]:  # noqa: F811
    from dashboard.app import Served

    cfg = make_config(rooms=[
        {"id": f"room-{i}", "name": f"Treatment Room {i}", "devices": [
            {"id": f"oxi-{i}", "protocol": "masimo-ascii", "transport": "serial", "port": "/dev/null"},
            {"id": f"nibp-{i}", "protocol": "json", "transport": "mqtt", "topic": f"vw/room-{i}/nibp"}]}
        for i in (1, 2, 3)])
    cfg = cfg.model_copy(update={"archive": cfg.archive.model_copy(update={"url": sqlite_url})})
    sd = seed_session(rclient, keys, cfg, duration_min=60, end=True)  # archived: for the review pages
    users.create_user(rclient, keys, "dora", "director", PASSWORD)
    for i in (1, 2, 3):
        rclient.xadd(keys.vitals(f"room-{i}"), {"ts": str(now_ms()), "dev": f"oxi-{i}", "hr": "72", "spo2": "97"})
    sid = sessions.start_session(rclient, keys, cfg, "room-3", "p-3", "intranasal", "dora")
    alarm = inject_alert(rclient, keys, "room-2", "sbp", "high", 186, 180, dev="nibp-2")
    latched = inject_alert(rclient, keys, "room-1", "spo2", "high", 84, 90, dev="oxi-1")
    rclient.hset(keys.active_alerts("room-1"), latched["alert"],
                 json.dumps({**latched, "state": "latched", "cleared_ms": now_ms()}))
    reminder = {**alarm, "alert": "room-3.-.bp-pre.1", "kind": "reminder", "priority": "low", "metric": None,
                "message": "BP check due before dosing", "cond": "r:bp-pre", "session": sid}
    rclient.hset(keys.active_alerts("room-3"), reminder["alert"], json.dumps(reminder))
    beats = Beats(rclient, keys).start()
    srv = Served(cfg, redis_url).start()
    try:
        yield {"url": srv.url, "sid": sd.sid, "alarm": alarm, "client": rclient, "keys": keys}
    finally:
        srv.stop()
        beats.stop()


@pytest.fixture
def page() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        # bypass_csp: Playwright waits by evaluating expressions, which the CSP (rightly) forbids;
        # the CSP itself is tested in the security tests
        ctx = browser.new_context(viewport={"width": 1600, "height": 1000}, bypass_csp=True)
        yield ctx.new_page()
        browser.close()


def violations(page: Any) -> list[str]:
    res = axe_sync.Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
            for v in res.response["violations"] if v["impact"] in SERIOUS]


def test_no_critical_or_serious_violations_and_keyboard_actions(served: dict[str, Any], page: Any) -> None:
    url = served["url"]
    page.goto(url + "/login")
    login = violations(page)
    page.fill("#username", "dora")
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_function("window.VW && VW.connected && document.querySelectorAll('.vw-tile').length === 3")
    page.wait_for_selector("#ov-alerts [data-alert-id] button[data-act=reset]")
    page.wait_for_selector("#ov-reminders [data-alert-id]")
    checked = {"login": login, "overview": violations(page)}
    # keyboard alone: Tab until Acknowledge of the SBP alarm has the focus, then Enter
    aid = served["alarm"]["alert"]
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.getAttribute('data-act') === "
                         "'acknowledge' && document.activeElement.closest('[data-alert-id]')"
                         ".getAttribute('data-alert-id') === " + json.dumps(aid)):
            break
    else:
        pytest.fail("Tab never reached the Acknowledge button")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector(" + json.dumps(f"[data-alert-id='{aid}']") + ")"
                           ".textContent.indexOf('acknowledged by dora') >= 0")
    stored = json.loads(served["client"].hget(served["keys"].active_alerts("room-2"), aid))
    assert stored["acknowledged_by"] == "dora"
    page.goto(url + "/room/room-3")
    page.wait_for_selector("#room-trend .js-plotly-plot")
    page.wait_for_selector("#room-open-form", state="visible")
    # the room is named once, by the page's heading, in its alarm-coloured band (it was named
    # twice: a heading above the band and the band's own name)
    names = page.evaluate("[...document.querySelectorAll('h1, h2, .vw-roomname')]"
                          ".filter(e => e.offsetParent !== null).map(e => e.tagName + ' ' + e.textContent)")
    assert names == ["H2 Treatment Room 3"], names
    assert page.locator(".vw-roomtop .vw-band h2").inner_text() == "Treatment Room 3"
    checked["room"] = violations(page)
    page.goto(url + "/review")
    page.wait_for_selector("#review-table")
    checked["review list"] = violations(page)
    page.goto(url + f"/review/{served['sid']}")
    page.wait_for_selector("#review-chart .main-svg")
    checked["review"] = violations(page)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(url + "/m")
    page.wait_for_function("document.querySelectorAll('.vw-tile').length === 3")
    checked["phone"] = violations(page)
    for name, found in checked.items():
        print(f"\n[axe] {name}: {len(found)} critical/serious", *found, sep="\n  ")
    assert checked == {k: [] for k in checked}
