"""The room page's session panel in a real headless Chromium against a real Redis.

A nurse confirms the room's devices and starts a session, records a dose, a manual BP
150/95 and "ready to leave": Redis session events and the audit log have them with her
name, the trend gets the markers, the events list and the engine's reminders show. Bad BPs
are refused on screen and nothing is written. A station screen (and an anonymous client)
replaying the nurse's own callback requests is refused on the server.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from selenium.webdriver.common.by import By

from monitor.accounts import audit
from monitor.alarms.engine import Worker
from monitor.model.keys import Keys as ClinicKeys
from monitor.sessions import lifecycle as sessions
from monitor.store.status import publish_status
from tests.dashboard_support import (
    CAPTURE_JS,
    captured_bodies,
    click,
    click_css,
    fill,
    login,
    now_ms,
    served_dashboard,
    signed_in,
    wait_page,
)
from tests.test_session_limits_browser import PW, ROOM, make_cfg  # the same clinic

pytestmark = pytest.mark.browser


def _seed(client: redis.Redis, keys: ClinicKeys) -> None:
    # the oximeter is online, the NIBP module was never seen (a portable one not plugged in)
    publish_status(client, keys, "oxi-1", {"room": ROOM, "state": "online", "since_ms": now_ms(),
                                            "last_ts": now_ms(), "updated_ms": now_ms()})


@pytest.fixture(scope="module")
def env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    clinic = "t-" + uuid.uuid4().hex[:10]
    cfg = make_cfg(clinic, redis_url, str(tmp_path_factory.mktemp("panel")))
    with served_dashboard(cfg, redis_url, {"nina": ("nurse", PW["nina"]), "sta": ("station", PW["sta"])}, before_serve=_seed) as e:
        yield e


def msg(d: Any) -> tuple[str, str]:
    el = d.find_element(By.ID, "room-session-msg")
    return el.text, el.get_attribute("style") or ""


def shape_names(d: Any) -> list[str]:
    return d.execute_script(
        "var gd=document.querySelector('#room-trend .js-plotly-plot'); if(!gd) return [];"
        "return (gd.layout.shapes||[]).map(function(s){return s.name||''});")


def trend_annotations(d: Any) -> list[str]:
    return d.execute_script(
        "var gd=document.querySelector('#room-trend .js-plotly-plot'); if(!gd) return [];"
        "return (gd.layout.annotations||[]).map(function(a){return a.text||''});")


def event_rows(d: Any) -> list[str]:
    return [r.text for r in d.find_elements(By.CSS_SELECTOR, "#room-events tr[data-vw-event]")]


def events(c: redis.Redis, k: ClinicKeys, sid: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in sessions.session_events(c, k, sid) if e["type"] == kind]


def engine_tick(cfg: Any, c: redis.Redis, k: ClinicKeys) -> None:
    """One pass of the real alert engine (raises/clears the session's reminders)."""
    w = Worker(cfg, c, k, owner="w-panel", outbound=None)
    w.housekeeping(now_ms())
    w.tick(now_ms())
    w.release_all()


def callback_body(d: Any, output: str) -> dict[str, Any]:
    bodies = captured_bodies(d)
    return next(b for b in reversed(bodies) if output in b.get("output", "")
                and any(i.get("value") for i in b.get("inputs", []) if isinstance(i, dict)))


def with_state(body: dict[str, Any], **values: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    for st in out["state"]:
        key = st["id"].removeprefix("room-") if isinstance(st["id"], str) else None
        if key in values:
            st["value"] = values[key]
    return out


def test_nurse_runs_a_session_from_the_room_page_station_cannot(env: dict[str, Any]) -> None:
    d, c, k, cfg = env["driver"], env["client"], env["keys"], env["cfg"]
    login(d, env["url"], "nina", PW["nina"])
    d.get(env["url"] + f"/room/{ROOM}")
    wait_page(lambda: d.find_element(By.ID, "room-start-form").is_displayed(), 15, "start form")
    d.execute_script(CAPTURE_JS)

    # the start form lists the room's devices with their status; Start waits for the tick
    listed = [li.get_attribute("data-vw-confirm-dev") for li in d.find_elements(By.CSS_SELECTOR, "#room-confirm-devs li")]
    assert listed == ["oxi-1", "nibp-1"]
    chips = d.find_element(By.CSS_SELECTOR, "#room-start-form [data-vw-part=devices]")
    wait_page(lambda: "oxi-1 online" in chips.text and "nibp-1 unknown" in chips.text, 10, "device status chips")
    start = d.find_element(By.ID, "room-start")
    assert start.get_attribute("disabled") is not None
    fill(d, "room-patient", "MRN-77")
    d.find_element(By.CSS_SELECTOR, "#room-devices-ok input[type=checkbox]").click()
    wait_page(lambda: start.get_attribute("disabled") is None, 5, "Start enabled after the tick")
    click(d, "room-start")
    wait_page(lambda: "started by nina; devices confirmed: oxi-1 (online), nibp-1 (unknown)" in msg(d)[0],
             15, "started")
    sid = sessions.open_session_for_room(c, k, ROOM)
    assert sid and sid in msg(d)[0]
    conf = events(c, k, sid, "devices_confirmed")
    assert len(conf) == 1 and conf[0]["user"] == "nina"
    assert [(x["id"], x["state"]) for x in conf[0]["devices"]] == [("oxi-1", "online"), ("nibp-1", "unknown")]
    wait_page(lambda: d.find_element(By.ID, "room-open-form").is_displayed(), 10, "open-session controls")
    wait_page(lambda: any(r.startswith(tuple("0123456789")) and "Devices confirmed" in r and "nina" in r
                         for r in event_rows(d)), 10, "devices_confirmed in the events list")

    # the engine's reminder for this session shows beside the controls
    engine_tick(cfg, c, k)
    rem = d.find_element(By.ID, "room-reminders")
    wait_page(lambda: "BP check due before dosing" in rem.text, 10, "pre-dose BP reminder")

    # dose
    fill(d, "room-dose-mg", "56")
    click(d, "room-dose")
    wait_page(lambda: msg(d)[0] == "Dose recorded by nina.", 10, "dose recorded")
    assert [(e["dose_mg"], e["user"]) for e in events(c, k, sid, "dose")] == [(56.0, "nina")]
    wait_page(lambda: "marker-dose" in shape_names(d) and "dose 56 mg" in trend_annotations(d), 10, "dose marker")

    # bad BPs are refused on screen, in red, and nothing is stored
    for sbp, dbp, reason in (("90", "95", "diastolic (95) must be below systolic (90)"),
                             ("120", "120", "diastolic (120) must be below systolic (120)"),
                             ("400", "95", "sbp 400 outside 40–300 mmHg"),
                             ("150", "10", "dbp 10 outside 15–200 mmHg"),
                             ("150", "", "enter both systolic (SBP) and diastolic (DBP)")):
        fill(d, "room-bp-sbp", sbp)
        fill(d, "room-bp-dbp", dbp)
        click(d, "room-bp")
        wait_page(lambda: reason in msg(d)[0], 10, f"refused: {reason}")  # noqa: B023 (waited on here)
        assert msg(d)[0].startswith("Refused:") and "color: rgb(198, 40, 40)" in msg(d)[1]
    assert events(c, k, sid, "bp") == []

    # manual BP 150/95: a session event, an audit entry, a BP-check marker on the trend
    fill(d, "room-bp-sbp", "150")
    fill(d, "room-bp-dbp", "95")
    click(d, "room-bp")
    wait_page(lambda: msg(d)[0] == "BP 150/95 mmHg recorded by nina.", 10, "BP recorded")
    assert "color: rgb(46, 125, 50)" in msg(d)[1]
    assert [(e["sbp"], e["dbp"], e["user"]) for e in events(c, k, sid, "bp")] == [(150, 95, "nina")]
    wait_page(lambda: "marker-bp" in shape_names(d) and "BP 150/95" in trend_annotations(d), 10, "BP-check marker")
    wait_page(lambda: any("BP check" in r and "150/95 mmHg (manual)" in r and r.endswith("nina")
                         for r in event_rows(d)), 10, "BP in the events list")
    # the reminder engine sees the BP too: the pre-dose reminder is gone, the observation one runs
    engine_tick(cfg, c, k)
    wait_page(lambda: "Minimum observation" in rem.text and "before dosing" not in rem.text, 10, "reminders updated")

    # ready to leave (with a detail)
    fill(d, "room-obs-text", "steady gait")
    click_css(d, "button[data-vw-obs=ready_to_leave]")
    wait_page(lambda: msg(d)[0] == "Ready to leave recorded by nina.", 10, "observation recorded")
    obs = events(c, k, sid, "observe")
    assert [(e["observation"], e.get("text"), e["user"]) for e in obs] == [("ready_to_leave", "steady gait", "nina")]
    head = sessions.get_session(c, k, sid)
    assert head is not None and head["ready_ms"] == obs[0]["ts"]
    wait_page(lambda: "Ready to leave" in d.find_element(By.ID, "room-obs-summary").text
             and "(nina)" in d.find_element(By.ID, "room-obs-summary").text, 10, "observation summary")
    wait_page(lambda: any("Observation" in r and "Ready to leave · steady gait" in r for r in event_rows(d)),
             10, "observation in the events list")

    # the audit log has every action with the nurse's name
    acts = {(a["action"], a["user"]) for a in audit.entries(c, k) if a["action"].startswith("session.")}
    assert {("session.start", "nina"), ("session.dose", "nina"), ("session.bp", "nina"),
            ("session.observe", "nina")} <= acts
    bp_audit = next(a for a in audit.entries(c, k) if a["action"] == "session.bp")
    assert bp_audit["details"] == {"session": sid, "sbp": 150, "dbp": 95}

    # a note added elsewhere (the CLI's core) appears in the list without a reload
    sessions.add_note(c, k, sid, "oscar", "family called")
    wait_page(lambda: any("family called" in r and r.endswith("oscar") for r in event_rows(d)), 15, "polled events")

    # replays: the start form's tick is checked on the server; station and anonymous refused
    url = env["url"] + "/_dash-update-component"
    bp_body = with_state(callback_body(d, "room-session-msg.children"), **{"bp-sbp": 170, "bp-dbp": 100})
    assert requests.post(url, json=bp_body, timeout=10).status_code == 401
    station = signed_in(env["url"], "sta", PW["sta"]).post(url, json=bp_body, timeout=10)
    assert station.status_code == 200 and "Refused: session actions need the nurse role." in station.text
    assert len(events(c, k, sid, "bp")) == 1
    start_body = copy.deepcopy(bp_body)
    for i in start_body["inputs"]:
        if isinstance(i, dict) and i.get("id") == "room-start":
            i["value"] = 1
    start_body["changedPropIds"] = ["room-start.n_clicks"]
    no_tick = signed_in(env["url"], "nina", PW["nina"]).post(url, json=with_state(start_body, **{"devices-ok": []}), timeout=10)
    assert no_tick.status_code == 200 and "confirm the room" in no_tick.text

    # the station screen: events and reminders, no controls; a forced click is refused
    login(d, env["url"], "sta", PW["sta"])
    d.get(env["url"] + f"/room/{ROOM}")
    wait_page(lambda: "Session controls need a nurse sign-in" in d.find_element(By.ID, "room-session-status").text,
             15, "station note")
    assert not d.find_element(By.ID, "room-open-form").is_displayed()
    assert any("150/95" in r for r in event_rows(d))
    wait_page(lambda: "Minimum observation" in d.find_element(By.ID, "room-reminders").text, 10, "station reminders")
    d.execute_script("document.getElementById('room-bp').click()")
    wait_page(lambda: msg(d)[0] == "Refused: session actions need the nurse role.", 10, "station refused")
    assert len(events(c, k, sid, "bp")) == 1
    sessions.end_session(c, k, cfg, sid, "nina")
