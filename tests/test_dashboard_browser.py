"""The dashboard in a real headless Chromium against a real Redis.

One dashboard and one browser per module (start-up is the slow part); each test uses its
own rooms' data. Values are injected as the ingest and the alert engine write them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from monitor.model.config import Config
from tests.configs import config_mapping, mqtt_device, parsed, room_entry, serial_device
from tests.dashboard_support import (
    dom_value,
    inject_alert,
    login,
    now_ms,
    served_dashboard,
    wait_page,
)

pytestmark = pytest.mark.browser
PASSWORDS = {"nina": "nurse-pass-1", "dora": "director-pass-1", "sta": "station-pass-1"}


def make_cfg(clinic: str, redis_url: str, tmp: str) -> Config:
    """Three rooms: a serial oximeter, a serial NIBP (cycle 300 s), an MQTT monitor."""
    return parsed(config_mapping(clinic, redis_url=redis_url, mqtt_url="mqtt://127.0.0.1:1883", data_dir=tmp, rooms=[
        room_entry("room-1", serial_device("oxi-1"), name="Room 1"),
        room_entry("room-2", serial_device("nibp-2", "nibp-un300", cycle_s=300), name="Room 2"),
        room_entry("room-3", mqtt_device("mon-3", "json", "vw-test/room-3/mon-3"), name="Room 3"),
        room_entry("room-4", mqtt_device("mon-4", "json", "vw-test/room-4/mon-4"),
             serial_device("nibp-4", "nibp-un300", cycle_s=300), name="Room 4")]))


@pytest.fixture(scope="module")
def env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    clinic = "t-" + uuid.uuid4().hex[:10]
    cfg = make_cfg(clinic, redis_url, str(tmp_path_factory.mktemp("dash")))
    with served_dashboard(cfg, redis_url, {"nina": ("nurse", PASSWORDS["nina"]), "dora": ("director", PASSWORDS["dora"]), "sta": ("station", PASSWORDS["sta"])}) as e:
        yield e


def xadd(env: dict[str, Any], room: str, dev: str, ts_ms: int | None = None, **vals: float) -> None:
    fields = {"ts": str(ts_ms if ts_ms is not None else now_ms()), "dev": dev}
    fields.update({k: f"{v:g}" for k, v in vals.items()})
    env["client"].xadd(env["keys"].vitals(room), fields)


def latest_in_redis(env: dict[str, Any], room: str, metric: str) -> str:
    for _id, f in env["client"].xrevrange(env["keys"].vitals(room), count=100):
        if metric in f:
            return f"{float(f[metric]):.0f}"
    return "--"


def test_login_then_overview_values_equal_redis(env: dict[str, Any]) -> None:
    d = env["driver"]
    d.delete_all_cookies()
    d.get(env["url"] + "/")
    assert "/login" in d.current_url  # anonymous → the sign-in form
    login(d, env["url"], "nina", PASSWORDS["nina"])
    xadd(env, "room-1", "oxi-1", hr=72, spo2=97)
    xadd(env, "room-2", "nibp-2", sbp=121, dbp=79, map=93)
    xadd(env, "room-3", "mon-3", hr=64, spo2=99, rr=14)
    for room, metric in (("room-1", "hr"), ("room-1", "spo2"), ("room-2", "sbp"), ("room-2", "dbp"),
                         ("room-2", "map"), ("room-3", "hr"), ("room-3", "rr")):
        want = latest_in_redis(env, room, metric)
        wait_page(lambda r=room, m=metric, w=want: dom_value(d, r, m) == w, 10, f"{room} {metric} = {want}")
    # live: a new value replaces the old one without reloading
    xadd(env, "room-1", "oxi-1", hr=101)
    wait_page(lambda: dom_value(d, "room-1", "hr") == "101", 10, "pushed HR 101")
    assert "nina (nurse)" in d.find_element(By.ID, "app-who").text


def test_breach_turns_tile_red_lists_alert_and_acknowledge_records_user(env: dict[str, Any]) -> None:
    d = env["driver"]
    login(d, env["url"], "nina", PASSWORDS["nina"])
    xadd(env, "room-2", "nibp-2", sbp=196, dbp=101, map=133)
    rec = inject_alert(env["client"], env["keys"], "room-2", "sbp", "high", 196, 180, dev="nibp-2")
    tile = wait_page(lambda: d.find_element(By.ID, "ov-tile-room-2").get_attribute("data-alert") == "high"
                    and d.find_element(By.ID, "ov-tile-room-2"), 10, "red tile")
    assert d.execute_script("return VW.blinkHalfMs.high") == 250  # 2 Hz flashing
    # the flash is the tile's band and border (its text changes with it: tests/test_overview_browser.py)
    band = tile.find_element(By.CSS_SELECTOR, ".vw-band")
    bg = "return getComputedStyle(arguments[0]).backgroundColor"
    wait_page(lambda: d.execute_script(bg, band) == "rgb(62, 0, 0)", 5, "flash dark")
    wait_page(lambda: d.execute_script(bg, band) == "rgb(198, 40, 40)", 5, "flash bright")
    row = wait_page(lambda: d.find_element(By.CSS_SELECTOR, f"[data-alert-id='{rec['alert']}']"), 10, "alert row")
    assert "SBP 196 > 180 mmHg" in row.text and "HIGH" in row.text
    row.find_element(By.CSS_SELECTOR, "button[data-act=acknowledge]").click()
    stored = wait_page(lambda: json.loads(env["client"].hget(env["keys"].active_alerts("room-2"), rec["alert"]))
                      if json.loads(env["client"].hget(env["keys"].active_alerts("room-2"), rec["alert"]))
                      .get("acknowledged_by") else None, 10, "acknowledged in Redis")
    assert stored["acknowledged_by"] == "nina"
    events = [f for _i, f in env["client"].xrange(env["keys"].alerts) if f.get("alert") == rec["alert"]]
    assert any(e["event"] == "acknowledged" and e["user"] == "nina" for e in events)
    audit_rows = [f for _i, f in env["client"].xrange(env["keys"].audit) if f["action"] == "alert.acknowledge"]
    assert any(a["user"] == "nina" and rec["alert"] in a["details"] for a in audit_rows)
    wait_page(lambda: "acknowledged by nina" in d.find_element(
        By.CSS_SELECTOR, f"[data-alert-id='{rec['alert']}']").text, 10, "ack shown")
    env["client"].delete(env["keys"].active_alerts("room-2"))


def test_stale_values_look_stale(env: dict[str, Any]) -> None:
    d = env["driver"]
    login(d, env["url"], "nina", PASSWORDS["nina"])
    # a continuous value 30 s old is stale; a BP 100 s old is fresh within its 300 s NIBP cycle
    xadd(env, "room-4", "mon-4", ts_ms=now_ms() - 30_000, hr=66, rr=15)
    xadd(env, "room-4", "nibp-4", ts_ms=now_ms() - 100_000, sbp=118, dbp=76, map=90)
    xadd(env, "room-1", "oxi-1", hr=70, spo2=98)

    def stale(room: str, metric: str) -> str:
        return d.execute_script(
            "return document.querySelector('[data-vw-part=value][data-vw-room=\"'+arguments[0]+'\"]"
            "[data-vw-metric=\"'+arguments[1]+'\"]').getAttribute('data-vw-stale')", room, metric)

    wait_page(lambda: dom_value(d, "room-4", "rr") == "15" and stale("room-4", "hr") == "1", 10, "stale HR")
    wait_page(lambda: dom_value(d, "room-4", "sbp") == "118", 10, "BP shown")
    assert stale("room-4", "sbp") == "0"
    assert stale("room-1", "hr") == "0"
    style = d.execute_script("var e=document.querySelector('[data-vw-room=\"room-4\"][data-vw-metric=\"hr\"]"
                             "[data-vw-part=value]'); var s=getComputedStyle(e); return [s.color, s.textDecorationLine]")
    # grey and struck through, still readable (4.5:1: tests/test_overview_browser.py); the age says "old"
    assert style[0] == "rgb(97, 97, 97)" and "line-through" in style[1]
    # the age text is written on its own animation frame, after the value: wait for it
    wait_page(lambda: d.execute_script("return document.querySelector('[data-vw-room=\"room-4\"]"
                                       "[data-vw-metric=\"hr\"][data-vw-part=age]').textContent").endswith(" old"),
              10, "the stale HR's age to say 'old'")


def test_station_acknowledge_asks_for_a_nurse(env: dict[str, Any]) -> None:
    d = env["driver"]
    login(d, env["url"], "sta", PASSWORDS["sta"])
    rec = inject_alert(env["client"], env["keys"], "room-1", "spo2", "high", 84, 90, dev="oxi-1")
    row = wait_page(lambda: d.find_element(By.CSS_SELECTOR, f"[data-alert-id='{rec['alert']}']"), 10, "alert row")
    row.find_element(By.CSS_SELECTOR, "button[data-act=acknowledge]").click()
    wait_page(lambda: d.find_element(By.ID, "vw-modal").is_displayed(), 5, "who-is-acting prompt")
    d.find_element(By.ID, "vw-ack-user").send_keys("nina")
    d.find_element(By.ID, "vw-ack-pass").send_keys("wrong-password")
    d.find_element(By.ID, "vw-ack-submit").click()
    wait_page(lambda: "Wrong" in d.find_element(By.ID, "vw-ack-msg").text, 5, "refusal shown")
    assert json.loads(env["client"].hget(env["keys"].active_alerts("room-1"), rec["alert"]))["acknowledged_by"] is None
    d.find_element(By.ID, "vw-ack-pass").clear()
    d.find_element(By.ID, "vw-ack-pass").send_keys(PASSWORDS["nina"])
    d.find_element(By.ID, "vw-ack-submit").click()
    wait_page(lambda: json.loads(env["client"].hget(env["keys"].active_alerts("room-1"), rec["alert"]))
             .get("acknowledged_by") == "nina", 10, "acknowledged as the nurse, not the station")
    env["client"].delete(env["keys"].active_alerts("room-1"))


def test_nurse_cannot_open_director_pages(env: dict[str, Any]) -> None:
    d = env["driver"]
    login(d, env["url"], "nina", PASSWORDS["nina"])
    d.get(env["url"] + "/review")
    body = d.find_element(By.TAG_NAME, "body").text
    assert "director" in body and ("403" in body or "needs the director role" in body)


def test_room_page_trend_limits_and_live_extend(env: dict[str, Any]) -> None:
    d = env["driver"]
    login(d, env["url"], "nina", PASSWORDS["nina"], path="/room/room-1")
    for i in range(5):
        xadd(env, "room-1", "oxi-1", ts_ms=now_ms() - (5 - i) * 1000, hr=80 + i, spo2=96)
    d.get(env["url"] + "/room/room-1")
    wait_page(lambda: d.execute_script("return !!document.querySelector('#room-trend .js-plotly-plot')"), 15, "trend")
    names = d.execute_script("var gd=document.querySelector('#room-trend .js-plotly-plot');"
                             "return (gd.layout.shapes||[]).map(function(s){return s.name||''})")
    assert "limit-hr-high" in names and "limit-spo2-low" in names
    n0 = d.execute_script("return document.querySelector('#room-trend .js-plotly-plot').data[0].x.length")
    xadd(env, "room-1", "oxi-1", hr=91, spo2=97)
    wait_page(lambda: d.execute_script(
        "return document.querySelector('#room-trend .js-plotly-plot').data[0].x.length") > n0, 10, "extendData")
    assert d.execute_script("return document.querySelector('#room-trend .js-plotly-plot').layout.uirevision") == "room-1-15"


def test_sound_starts_on_click_repeats_until_acknowledged_and_is_reported(env: dict[str, Any]) -> None:
    d = env["driver"]
    login(d, env["url"], "nina", PASSWORDS["nina"])
    button = wait_page(lambda: d.find_element(By.ID, "app-sound"), 10, "nav")
    # visible before the autoplay click, and it says what it is: the alarm sound, not monitoring
    assert button.text == "Sound off — click to enable alarm sound"
    button.click()
    wait_page(lambda: d.execute_script("return VW.audio.ctx && VW.audio.ctx.state") == "running", 5, "audio on")
    wait_page(lambda: d.find_element(By.ID, "app-sound").text == "Alarm sound on", 5, "sound-on label")
    screens = wait_page(lambda: [json.loads(v) for v in env["client"].hvals(env["keys"].screens)
                                if json.loads(v).get("sound_on")], 10, "screen reported with sound on")
    assert screens[0]["user"] == "nina"
    rec = inject_alert(env["client"], env["keys"], "room-3", "rr", "medium", 5, 8, dev="mon-3")
    wait_page(lambda: d.execute_script("return VW.audio.playing") == "medium", 10, "medium alarm sounding")
    plays = wait_page(lambda: d.execute_script("return VW.audio.plays"), 10, "a play")
    d.execute_script("VW.audio.lastPlayMs = {}")  # skip the 8 s wait between medium bursts
    wait_page(lambda: d.execute_script("return VW.audio.plays") > plays, 5, "the pattern repeats")
    row = wait_page(lambda: d.find_element(By.CSS_SELECTOR, f"[data-alert-id='{rec['alert']}']"), 10, "row")
    row.find_element(By.CSS_SELECTOR, "button[data-act=pause]").click()
    wait_page(lambda: d.execute_script("return VW.audio.playing") is None, 10, "silent while paused")
    env["client"].delete(env["keys"].active_alerts("room-3"))
