"""The overview a nurse trusts at a glance, in a real headless Chromium, with the real alert
engine (an in-process Worker) on a real Redis and a stand-in ingest (heartbeat + device
status, tests/overview_support.py FakeIngest) that can be "killed".

Issue 14's acceptance, as a new user would try it: a latched SpO2 alarm acknowledged, recovered
and reset goes back to normal on every open screen; ingest killed with 10 rooms gives exactly
one clinic-wide alarm and every tile's top edge stays visible at 1920×1080; a room with an open
session and no alarm has a normal tile with its reminders as chips; 10 rooms with a high BP
alarm at 1920×1080 have no clipped text, numerals ≥ 48 px, every text ≥ 4.5:1 in both flash
phases and the SBP value marked; End session asks before it ends. Figures measured here are
printed (pytest -s) for the report: numeral sizes, the worst contrast ratio per phase.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys as KeyPress

from monitor.alarms.engine import Worker
from monitor.alarms.text import alarm_line
from monitor.model.config import Config, parse_config
from monitor.sessions import lifecycle as sessions
from tests.configs import alarm_defaults, alarm_rule
from tests.dashboard_support import click, click_css, inject_alert, login, now_ms, served_dashboard
from tests.dashboard_support import wait_page as wait_for  # a page redrawn under a check is "not yet"
from tests.overview_support import LAYOUT_JS, FakeIngest, contrast, viewport

pytestmark = pytest.mark.browser
PW = {"nina": "nurse-pass-1", "olga": "nurse-pass-2"}
ROOMS = 10


def make_cfg(clinic: str, redis_url: str, tmp: str, rooms: int) -> Config:
    """`rooms` rooms, each an MQTT monitor (HR, SpO2, RR) and an MQTT NIBP."""
    return parse_config({
        "clinic": {"id": clinic, "name": "Test"},
        "redis": {"url": redis_url}, "mqtt": {"url": "mqtt://127.0.0.1:1883"}, "data": {"dir": tmp},
        "archive": {"url": f"sqlite:///{tmp}/archive.db"},
        # a short heartbeat period: the engine's start-up grace and "ingest stopped" within seconds
        "alerts": {"heartbeat_stale_s": 2, "owner_ttl_s": 2},
        "alarms": alarm_defaults(spo2=alarm_rule(low=90), sbp=alarm_rule(low=90, high=180)),
        "rooms": [{"id": f"room-{i}", "name": f"Room {i}", "devices": [
            {"id": f"mon-{i}", "protocol": "json", "transport": "mqtt", "topic": f"vw-test/{i}/mon"},
            {"id": f"bp-{i}", "protocol": "json", "transport": "mqtt", "topic": f"vw-test/{i}/bp",
             "silence_s": 900}]} for i in range(1, rooms + 1)],
    }, source="test.toml")


def feed(env: dict[str, Any], room: str, ts_ms: int | None = None, **vals: float) -> None:
    dev = f"bp-{room.split('-')[1]}" if "sbp" in vals else f"mon-{room.split('-')[1]}"
    fields = {"ts": str(ts_ms if ts_ms is not None else now_ms()), "dev": dev}
    fields.update({k: f"{v:g}" for k, v in vals.items()})
    env["client"].xadd(env["keys"].vitals(room), fields)


def fill_all(env: dict[str, Any]) -> None:
    for i in range(1, ROOMS + 1):
        feed(env, f"room-{i}", hr=70 + i, spo2=97, rr=14)
        feed(env, f"room-{i}", sbp=121, dbp=79, map=93)


class Engine:
    """The real alert engine, in-process, until stop()."""

    def __init__(self, cfg: Config, client: Any, keys: Any) -> None:
        self.worker = Worker(cfg, client, keys, owner="w-test")
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop_event,), daemon=True)

    def start(self) -> Engine:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)


@pytest.fixture(scope="module")
def env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    clinic = "t-" + uuid.uuid4().hex[:10]
    cfg = make_cfg(clinic, redis_url, str(tmp_path_factory.mktemp("ov")), ROOMS)
    devices = {d.id: r.id for r, d in cfg.devices()}
    with served_dashboard(cfg, redis_url, {n: ("nurse", p) for n, p in PW.items()}, beat_roles=()) as e:
        ingest = FakeIngest(e["client"], e["keys"], devices).start()
        engine = Engine(cfg, e["client"], e["keys"]).start()
        e.update(ingest=ingest, engine=engine, devices=devices)
        fill_all(e)
        try:
            yield e
        finally:
            engine.stop()
            e["ingest"].stop()


def rows(d: Any, css: str = "#ov-alerts [data-alert-id]") -> list[Any]:
    return d.find_elements(By.CSS_SELECTOR, css)


def tile_alert(d: Any, room: str) -> str:
    return d.find_element(By.ID, f"ov-tile-{room}").get_attribute("data-alert")


def active(env: dict[str, Any], room: str) -> list[dict[str, Any]]:
    return [json.loads(v) for v in env["client"].hvals(env["keys"].active_alerts(room))]


def test_ten_rooms_high_bp_at_1920_readable_marked_and_contrast_in_both_phases(env: dict[str, Any]) -> None:
    d = env["driver"]
    viewport(d, 1920, 1080)
    login(d, env["url"], "nina", PW["nina"])
    fill_all(env)
    feed(env, "room-2", sbp=197, dbp=101, map=133)  # the engine raises SBP high (delay 0)
    wait_for(lambda: tile_alert(d, "room-2") == "high", 15, "room-2 tile in high alarm")
    row = wait_for(lambda: next((r for r in rows(d) if "SBP 197 > 180 mmHg" in r.text), None), 10, "the SBP row")
    assert row.text.startswith("HIGH") and "Room 2" in row.text
    # the value itself is marked: colour, outline, arrow, and what a screen reader hears
    sbp = d.find_element(By.CSS_SELECTOR, "#ov-tile-room-2 [data-vw-part=value][data-vw-metric=sbp]")
    wait_for(lambda: sbp.get_attribute("data-vw-alarm") == "high", 10, "SBP marked")
    mark = d.execute_script("var s=getComputedStyle(arguments[0]), b=getComputedStyle(arguments[0], '::before');"
                            "return [s.color, s.outlineStyle, b.content]", sbp)
    assert mark == ["rgb(183, 28, 28)", "solid", '"▲"']
    assert sbp.get_attribute("aria-label") == "SBP 197 mmHg, above high limit 180 (high alarm)"
    # the outline around the marked value stays below its label ("BP mmHg"): it covered the
    # label's lower half (the inline box and its outline are taller than the 1.05 line)
    gap = d.execute_script(
        "var v=arguments[0], h=v.closest('.vw-cell').querySelector('.vw-cellhead'), s=getComputedStyle(v);"
        "var o=parseFloat(s.outlineWidth)+parseFloat(s.outlineOffset);"
        "return v.getBoundingClientRect().top - o - h.getBoundingClientRect().bottom", sbp)
    assert gap >= 0, f"the marked value's outline covers its label by {-gap:.1f} px"
    dbp = d.find_element(By.CSS_SELECTOR, "#ov-tile-room-2 [data-vw-part=value][data-vw-metric=dbp]")
    assert dbp.get_attribute("data-vw-alarm") is None  # only what is out of range
    lay = d.execute_script(LAYOUT_JS)
    assert lay["tiles"] == ROOMS and lay["clipped"] == [] and lay["scroll"] <= 1
    assert min(lay["numeral_px"]) >= 48, lay["numeral_px"]
    phases = {p: contrast(d, ".vw-overview, .vw-nav", p) for p in ("0", "1")}
    for p, c in phases.items():
        assert c["fails"] == [] and c["texts"] > 100, (p, c["fails"][:5])
    print(f"\n[figures] 10 rooms 1920x1080: numerals {min(lay['numeral_px']):.1f} px; worst contrast "
          f"phase 0 {phases['0']['worst']:.2f}:1, phase 1 {phases['1']['worst']:.2f}:1 over {phases['0']['texts']} texts")
    env["client"].delete(env["keys"].active_alerts("room-2"))
    feed(env, "room-2", sbp=121, dbp=79, map=93)


def test_latched_spo2_ack_recover_reset_goes_normal_on_every_screen(env: dict[str, Any]) -> None:
    """Acknowledged on one screen (by keyboard), reset from another after recovery."""
    d = env["driver"]
    viewport(d, 1920, 1080)
    login(d, env["url"], "nina", PW["nina"])
    first = d.current_window_handle
    d.switch_to.new_window("tab")  # a second screen (the same sign-in: tabs share the cookie)
    d.get(env["url"] + "/")
    wait_for(lambda: d.execute_script("return !!(window.VW && VW.connected && VW.user)"), 20, "second screen live")
    second = d.current_window_handle
    for _ in range(3):
        feed(env, "room-3", spo2=84, hr=88, rr=12)
        time.sleep(0.05)
    wait_for(lambda: tile_alert(d, "room-3") == "high", 15, "room-3 red on screen 2")
    d.switch_to.window(first)
    wait_for(lambda: tile_alert(d, "room-3") == "high", 15, "room-3 red on screen 1")
    row = wait_for(lambda: next((r for r in rows(d) if "SpO2 84 < 90 %" in r.text), None), 10, "SpO2 row")
    aid = row.get_attribute("data-alert-id")
    # keyboard: focus the row's Acknowledge and press Enter
    ack = row.find_element(By.CSS_SELECTOR, "button[data-act=acknowledge]")
    d.execute_script("arguments[0].focus()", ack)
    ack.send_keys(KeyPress.ENTER)
    wait_for(lambda: next((a for a in active(env, "room-3") if a["alert"] == aid), {}).get("acknowledged_by") == "nina",
             10, "acknowledged as nina")
    d.switch_to.window(second)
    wait_for(lambda: "acknowledged by nina" in d.find_element(By.CSS_SELECTOR, f"[data-alert-id='{aid}']").text, 10,
             "acknowledged on the other screen")
    # the patient recovers: the high alarm latches (red stays: it must be seen), Reset appears
    feed(env, "room-3", spo2=96, hr=80, rr=14)
    reset = wait_for(lambda: d.find_element(By.CSS_SELECTOR, f"[data-alert-id='{aid}'] button[data-act=reset]"), 15,
                     "Reset on the latched row")
    assert "latched" in d.find_element(By.CSS_SELECTOR, f"[data-alert-id='{aid}']").text
    assert tile_alert(d, "room-3") == "high"
    d.execute_script("arguments[0].focus()", reset)
    reset.send_keys(KeyPress.SPACE)
    wait_for(lambda: tile_alert(d, "room-3") == "none", 10, "tile normal on screen 2")
    assert not d.find_elements(By.CSS_SELECTOR, f"[data-alert-id='{aid}']")
    d.switch_to.window(first)
    wait_for(lambda: tile_alert(d, "room-3") == "none", 10, "tile normal on screen 1")
    events = [f for _i, f in env["client"].xrange(env["keys"].alerts) if f["alert"] == aid]
    assert [(e["event"], e.get("user", "")) for e in events] == [
        ("raised", ""), ("acknowledged", "nina"), ("cleared", ""), ("reset", "nina")]
    d.switch_to.window(second)
    d.close()
    d.switch_to.window(first)


def test_undo_an_acknowledge_by_mistake(env: dict[str, Any]) -> None:
    d = env["driver"]
    login(d, env["url"], "nina", PW["nina"])
    rec = inject_alert(env["client"], env["keys"], "room-5", "hr", "medium", 131, 120, dev="mon-5")
    row_css = f"[data-alert-id='{rec['alert']}']"
    click_css(d, row_css + " button[data-act=acknowledge]")
    undo = wait_for(lambda: d.find_element(By.CSS_SELECTOR, row_css + " button[data-act=unacknowledge]"), 10, "Undo")
    undo.click()
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, row_css + " button[data-act=acknowledge]"), 10, "audible again")
    wait_for(lambda: d.execute_script("return VW.audio.playing") == "medium", 5, "sounding again")
    stored = json.loads(env["client"].hget(env["keys"].active_alerts("room-5"), rec["alert"]))
    assert stored["acknowledged_by"] is None
    env["client"].delete(env["keys"].active_alerts("room-5"))
    wait_for(lambda: d.execute_script("return VW.rooms['room-5'].alerts.length") == 0, 5, "gone from the screen")


def test_session_room_has_a_normal_tile_with_reminders_apart(env: dict[str, Any]) -> None:
    d = env["driver"]
    c, k, cfg = env["client"], env["keys"], env["cfg"]
    sid = sessions.start_session(c, k, cfg, "room-6", "p-66", "intranasal", "nina")
    login(d, env["url"], "nina", PW["nina"])
    chip = wait_for(lambda: d.find_element(By.CSS_SELECTOR, "#ov-tile-room-6 .vw-chip"), 15, "reminder chip")
    assert chip.text == "BP check due before dosing"
    assert tile_alert(d, "room-6") == "none"  # a reminder is not an alarm: no colour
    band = d.find_element(By.CSS_SELECTOR, "#ov-tile-room-6 .vw-band")
    assert d.execute_script("return getComputedStyle(arguments[0]).backgroundColor", band) == "rgb(236, 239, 241)"
    rem = wait_for(lambda: d.find_element(By.CSS_SELECTOR, "#ov-reminders [data-room='room-6']"), 10, "reminder row")
    assert "BP check due before dosing" in rem.text and not rows(d, "#ov-alerts [data-room='room-6']")
    # the message begins with its words, not with a separator left at the start of its line
    assert rem.find_element(By.CSS_SELECTOR, ".vw-msg").text == "BP check due before dosing"
    assert d.execute_script("return VW.audio.playing") is None, d.execute_script(
        "return JSON.stringify([VW.clinic, Object.keys(VW.rooms).map(function(r){return VW.rooms[r].alerts})])") \
        + str(c.hgetall(k.active_alerts("room-5")))  # never sounds
    # done by doing the task: a BP recorded ends it
    sessions.record_bp(c, k, sid, "nina", 128, 82)
    wait_for(lambda: not d.find_elements(By.CSS_SELECTOR, "#ov-tile-room-6 .vw-chip"), 15, "chip gone after the BP")
    # ... or dismissed (a dose starts the observation timer, shown as a countdown chip)
    sessions.record_dose(c, k, sid, "nina", dose_mg=56)
    chip = wait_for(lambda: d.find_element(By.CSS_SELECTOR, "#ov-tile-room-6 .vw-chip"), 15, "observation chip")
    assert chip.text == "Observation: 120 min left"
    click_css(d, "#ov-reminders [data-room='room-6'] button[data-act=dismiss]")
    wait_for(lambda: not d.find_elements(By.CSS_SELECTOR, "#ov-tile-room-6 .vw-chip"), 10, "dismissed")
    time.sleep(1.5)  # several engine ticks: a dismissed reminder is not raised again
    assert not d.find_elements(By.CSS_SELECTOR, "#ov-tile-room-6 .vw-chip")
    sessions.end_session(c, k, cfg, sid, "nina")


def test_end_session_asks_and_offers_to_reset_latched_alarms(env: dict[str, Any]) -> None:
    d = env["driver"]
    c, k, cfg = env["client"], env["keys"], env["cfg"]
    sid = sessions.start_session(c, k, cfg, "room-7", "p-77", "iv", "nina")
    rec = inject_alert(c, k, "room-7", "spo2", "high", 85, 90, dev="mon-7")
    c.hset(k.active_alerts("room-7"), rec["alert"], json.dumps({**rec, "state": "latched", "cleared_ms": now_ms()}))
    login(d, env["url"], "nina", PW["nina"], path="/room/room-7")
    d.get(env["url"] + "/room/room-7")
    click(d, "room-end")
    dialog = wait_for(lambda: d.find_element(By.ID, "room-end-dialog").is_displayed()
                      and d.find_element(By.ID, "room-end-dialog"), 10, "the dialog")
    assert f"Session {sid} will end now and be archived" in dialog.text
    assert "Also reset: HIGH · Room 7 · SpO2 85 < 90 %" in dialog.text
    assert c.hget(k.open_sessions, "room-7") == sid  # nothing happened yet
    click(d, "room-end-cancel")
    wait_for(lambda: not d.find_element(By.ID, "room-end-dialog").is_displayed(), 10, "cancelled")
    assert c.hget(k.open_sessions, "room-7") == sid
    click(d, "room-end")
    click(d, "room-end-confirm")
    wait_for(lambda: "1 latched alarm reset" in d.find_element(By.ID, "room-session-msg").text, 20, "ended + reset")
    assert c.hget(k.open_sessions, "room-7") is None and c.hget(k.active_alerts("room-7"), rec["alert"]) is None


def test_phone_view_alarms_first_with_actions(env: dict[str, Any]) -> None:
    d = env["driver"]
    viewport(d, 390, 844, phone=True)
    try:
        login(d, env["url"], "nina", PW["nina"], path="/m")
        d.get(env["url"] + "/m")
        rec = inject_alert(env["client"], env["keys"], "room-8", "sbp", "high", 190, 180, dev="bp-8")
        row = wait_for(lambda: d.find_element(By.CSS_SELECTOR, f"[data-alert-id='{rec['alert']}']"), 15, "alarm row")
        tile = d.find_element(By.ID, "ov-tile-room-1")
        assert row.rect["y"] < tile.rect["y"]  # alarms first
        assert d.find_element(By.CSS_SELECTOR, "[data-vw-overview]").get_attribute("data-vw-layout") == "phone"
        lay = d.execute_script(LAYOUT_JS)
        assert lay["clipped"] == [] and lay["tiles"] == ROOMS
        assert d.execute_script("return document.scrollingElement.scrollWidth") <= 390  # no sideways scroll
        wait_for(lambda: d.find_element(By.CSS_SELECTOR, "#ov-tile-room-1 [data-vw-part=age][data-vw-metric=hr]").text,
                 10, "ages shown")
        assert d.find_element(By.CSS_SELECTOR, "link[rel=manifest]").get_attribute("href").endswith("/manifest.webmanifest")
        row.find_element(By.CSS_SELECTOR, "button[data-act=acknowledge]").click()
        wait_for(lambda: json.loads(env["client"].hget(env["keys"].active_alerts("room-8"), rec["alert"]))
                 .get("acknowledged_by") == "nina", 10, "acknowledged from the phone")
        env["client"].delete(env["keys"].active_alerts("room-8"))
    finally:
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_high_and_medium_alarm_sounds_differ(env: dict[str, Any]) -> None:
    d = env["driver"]
    login(d, env["url"], "nina", PW["nina"])
    wait_for(lambda: d.find_element(By.ID, "app-sound"), 10, "nav").click()
    wait_for(lambda: d.execute_script("return VW.audio.ctx && VW.audio.ctx.state") == "running", 5, "audio on")
    pulses = d.execute_script(
        "var log = []; var ctx = VW.audio.ctx, orig = ctx.createOscillator.bind(ctx);"
        "ctx.createOscillator = function () { var o = orig(); var start = o.start.bind(o);"
        "  o.start = function (t) { log.push([o.frequency.value, t]); start(t); }; return o; };"
        "VW.beep(VW.sound.high); var high = log.splice(0); VW.beep(VW.sound.medium);"
        "var med = log.splice(0); ctx.createOscillator = orig; return [high, med];")
    high, med = pulses
    assert {f for f, _t in high} == {960} and {f for f, _t in med} == {700}
    assert len(high) == 5 and len(med) == 3  # more pulses, higher pitch for high priority
    spec = d.execute_script("return [VW.sound.high.every_ms, VW.sound.medium.every_ms]")
    assert spec[0] < spec[1]  # and it repeats sooner


def test_alarm_text_is_the_same_in_the_browser_and_in_python(env: dict[str, Any]) -> None:
    """One format everywhere: the row the screens build (live.js alarmLine) equals
    monitor/alarms/text.py alarm_line (review, PDF, pager payloads) for the same inputs."""
    d = env["driver"]
    login(d, env["url"], "nina", PW["nina"])
    now = 1_795_813_200_000
    cases = [
        ({"priority": "high", "room": "room-2", "message": "SBP 186 > 180 mmHg", "metric": "sbp",
          "raised_ms": now - 125_000, "state": "active"}, "Room 2", 161),
        ({"priority": "high", "room": "room-3", "message": "SpO2 84 < 90 %", "metric": "spo2",
          "raised_ms": now - 3_000, "state": "latched"}, "Room 3", 96),
        ({"priority": "medium", "room": "room-1", "message": "oxi-1 offline: cannot open its port", "metric": None,
          "raised_ms": now - 7_200_000, "state": "active"}, "Room 1", None),
        ({"priority": "high", "room": "*", "message": "Ingest not running: no readings from 10 rooms",
          "raised_ms": now - 40_000, "state": "active", "rooms": ",".join(f"room-{i}" for i in range(1, 11))},
         "All rooms", None),
    ]
    for rec, name, current in cases:
        js = d.execute_script("return VW.fmt.alarmLine(arguments[0], arguments[1], arguments[2], arguments[3])",
                              rec, name, now, current)
        assert js == alarm_line(rec, name, now_ms=now, current=current)
    assert alarm_line(cases[0][0], "Room 2", now_ms=now, current=161) == \
        "HIGH · Room 2 · SBP 186 > 180 mmHg · 2 min ago · now 161"


def test_ingest_killed_gives_one_clinic_wide_alarm_and_tiles_stay_visible(env: dict[str, Any]) -> None:
    """Last in this module: it stops the stand-in ingest (and starts it again)."""
    d = env["driver"]
    viewport(d, 1920, 1080)
    login(d, env["url"], "nina", PW["nina"])
    fill_all(env)
    wait_for(lambda: not d.execute_script("return VW.notMonitored('room-1')"), 10, "monitoring")
    env["ingest"].stop()
    row = wait_for(lambda: next((r for r in rows(d) if "Ingest" in r.text), None), 20, "the clinic-wide row")
    assert "All rooms" in row.text and row.text.startswith("HIGH")
    time.sleep(2)  # the devices fall silent meanwhile: none of them may add a row of its own
    assert len(rows(d)) == 1
    for i in range(1, ROOMS + 1):
        assert d.find_element(By.CSS_SELECTOR, f"#ov-tile-room-{i} .vw-notmon").text == \
            "NOT MONITORED: ingest not running"
    lay = d.execute_script(LAYOUT_JS)
    assert all(0 <= top < lay["vh"] for top in lay["tops"]) and lay["clipped"] == []
    clinic = [json.loads(v) for v in env["client"].hvals(env["keys"].active_alerts("*"))]
    assert len(clinic) == 1 and clinic[0]["rooms"] == ",".join(f"room-{i}" for i in range(1, ROOMS + 1))
    per_room = [a for i in range(1, ROOMS + 1) for a in active(env, f"room-{i}") if a["kind"] == "technical"]
    assert per_room == []
    env["ingest"] = FakeIngest(env["client"], env["keys"], env["devices"]).start()
    wait_for(lambda: not rows(d), 20, "clinic-wide alarm cleared when ingest is back")
    assert d.find_element(By.CSS_SELECTOR, "#ov-tile-room-1 .vw-notmon").text == ""


LAYOUT_CASES = [(1280, 800, 1), (1280, 800, 30), (1920, 1080, 1), (1920, 1080, 12), (1920, 1080, 30),
                (3840, 2160, 1), (3840, 2160, 12), (3840, 2160, 30)]


@pytest.fixture(scope="module")
def sized(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, dict[str, Any]]]:
    """Three clinics (1, 12, 30 rooms) on three dashboards, one browser."""
    from contextlib import ExitStack

    out: dict[int, dict[str, Any]] = {}
    with ExitStack() as stack:
        for n in (1, 12, 30):
            cfg = make_cfg("t-" + uuid.uuid4().hex[:10], redis_url, str(tmp_path_factory.mktemp(f"s{n}")), n)
            e = stack.enter_context(served_dashboard(cfg, redis_url, {"nina": ("nurse", PW["nina"])}))
            for i in range(1, n + 1):
                e["client"].xadd(e["keys"].vitals(f"room-{i}"), {"ts": str(now_ms()), "dev": f"mon-{i}",
                                                                 "hr": "100", "spo2": "97", "rr": "18"})
                e["client"].xadd(e["keys"].vitals(f"room-{i}"), {"ts": str(now_ms() - 400_000), "dev": f"bp-{i}",
                                                                 "sbp": "188", "dbp": "110", "map": "136"})
            out[n] = e
        yield out


@pytest.mark.parametrize("width,height,n", LAYOUT_CASES, ids=[f"{w}x{h}-{n}" for w, h, n in LAYOUT_CASES])
def test_tiles_fill_the_screen_without_clipping(sized: dict[int, dict[str, Any]], width: int, height: int, n: int) -> None:
    e = sized[n]
    d = e["driver"]
    viewport(d, width, height)
    login(d, e["url"], "nina", PW["nina"])
    wait_for(lambda: len(d.find_elements(By.CSS_SELECTOR, ".vw-tile")) == n, 10, f"{n} tiles")
    # the worst case for width: a 3-digit BP with an alarm arrow and values gone stale ("… old")
    rec = inject_alert(e["client"], e["keys"], f"room-{n}", "sbp", "high", 188, 180, dev=f"bp-{n}")
    wait_for(lambda: d.find_element(By.CSS_SELECTOR, f"#ov-tile-room-{n} [data-vw-metric=sbp][data-vw-part=value]")
             .get_attribute("data-vw-alarm") == "high", 10, "marked")
    time.sleep(0.3)
    lay = d.execute_script(LAYOUT_JS)
    assert lay["tiles"] == n and lay["clipped"] == [], lay["clipped"][:5]
    assert lay["scroll"] <= 1  # 1–30 rooms fill the screen: nothing below the fold
    assert all(b <= lay["vh"] + 1 for b in lay["bottoms"])
    grid = d.execute_script("var g=document.querySelector('[data-vw-grid]').getBoundingClientRect();"
                            "return [g.width, innerWidth]")
    assert grid[0] > 0.6 * grid[1]  # the tiles use the screen, not a 300-px column
    if (width, height) == (1920, 1080) and n <= 12:
        assert min(lay["numeral_px"]) >= 48, lay["numeral_px"]
    print(f"\n[figures] {width}x{height} {n} rooms: numerals {min(lay['numeral_px']):.1f} px")
    e["client"].delete(e["keys"].active_alerts(f"room-{n}"))
    assert rec
