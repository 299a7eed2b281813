"""Session limits on the room page, in a real headless Chromium against a real Redis.

A nurse sets SBP high 190 for the room's open session: Redis holds the override, the audit
log has her name, the alert engine's rules for the room use it, the trend's limit line moves.
Bad values are refused on screen. A station screen and an anonymous client replaying the
very callback request the nurse's browser sent are refused on the server.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By

from monitor.accounts import audit
from monitor.alarms.engine import Worker
from monitor.model.config import Config
from monitor.sessions import lifecycle as sessions
from tests.configs import config_mapping, parsed, room_entry, serial_device
from tests.dashboard_support import (
    CAPTURE_JS,
    captured_bodies,
    click,
    fill,
    login,
    now_ms,
    served_dashboard,
    signed_in,
    wait_page,
)
from tests.overview_support import viewport

pytestmark = pytest.mark.browser
PW = {"nina": "nurse-pass-1", "sta": "station-pass-1"}
ROOM = "room-1"


def make_cfg(clinic: str, redis_url: str, tmp: str) -> Config:
    """One room with an oximeter and an NIBP; SBP high 180 by default."""
    return parsed(config_mapping(clinic, redis_url=redis_url, mqtt_url="mqtt://127.0.0.1:1883", data_dir=tmp,
                                 archive_url=f"sqlite:///{tmp}/archive.db", rooms=[room_entry(
                                     ROOM, serial_device("oxi-1"), serial_device("nibp-1", "nibp-un300", cycle_s=300),
                                     name="Room 1")]))


@pytest.fixture(scope="module")
def env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    clinic = "t-" + uuid.uuid4().hex[:10]
    cfg = make_cfg(clinic, redis_url, str(tmp_path_factory.mktemp("limits")))
    with served_dashboard(cfg, redis_url, {"nina": ("nurse", PW["nina"]), "sta": ("station", PW["sta"])}) as e:
        yield e


def limit_line(d: Any, name: str) -> float | None:
    """y of a trend limit line (shape named e.g. limit-sbp-high), None when absent."""
    return d.execute_script(
        "var gd=document.querySelector('#room-trend .js-plotly-plot'); if(!gd) return null;"
        "var s=(gd.layout.shapes||[]).filter(function(s){return s.name===arguments[0]})[0];"
        "return s ? s.y0 : null;".replace("arguments[0]", json.dumps(name)))


def table_cell(d: Any, metric: str, field: str) -> tuple[str, str]:
    """(text, data-vw-override) of one cell of the effective-limits table."""
    el = d.find_element(By.CSS_SELECTOR, f"#room-lim-table tr[data-vw-limit-metric={metric}] "
                                         f"td[data-vw-limit-field={field}]")
    return el.text, el.get_attribute("data-vw-override")


def message(d: Any) -> tuple[str, str]:
    el = d.find_element(By.ID, "room-lim-msg")
    return el.text, el.get_attribute("style") or ""


def with_state(body: dict[str, Any], **values: Any) -> dict[str, Any]:
    """A copy of a captured callback body with some State values replaced (by component id)."""
    out = copy.deepcopy(body)
    for st in out["state"]:
        key = st["id"].removeprefix("room-lim-")
        if key in values:
            st["value"] = values[key]
    return out


def test_nurse_sets_sbp_high_190_engine_uses_it_and_others_cannot(env: dict[str, Any]) -> None:
    d, c, k, cfg = env["driver"], env["client"], env["keys"], env["cfg"]
    sid = sessions.start_session(c, k, cfg, ROOM, "P-1", "intranasal", "nina")
    c.xadd(k.vitals(ROOM), {"ts": str(now_ms() - 2000), "dev": "nibp-1", "sbp": "150", "dbp": "90", "map": "110"})
    viewport(d, 1920, 1080)  # a station screen: Dash shows the number fields' −/+ steppers
    login(d, env["url"], "nina", PW["nina"])
    d.get(env["url"] + f"/room/{ROOM}")
    wait_page(lambda: d.find_element(By.ID, "room-lim-form").is_displayed(), 15, "session limits form")
    wait_page(lambda: limit_line(d, "limit-sbp-high") == 180, 15, "trend limit line at the config's 180")
    assert table_cell(d, "sbp", "high") == ("180", "0")
    # every number field shows its whole placeholder ("low" read "lov", "delay s" "de": the
    # −/+ steppers took most of a 6em field), the manual BP fields too
    fit = d.execute_script(
        "var out={}; for (const id of arguments[0]) { var e=document.getElementById(id);"
        " var i=e.tagName==='INPUT'?e:e.querySelector('input'); var s=getComputedStyle(i);"
        " var g=document.createElement('canvas').getContext('2d'); g.font=s.font;"
        " out[id]=[g.measureText(i.placeholder).width,"
        "          i.clientWidth-parseFloat(s.paddingLeft)-parseFloat(s.paddingRight)]; } return out;",
        ["room-lim-low", "room-lim-high", "room-lim-delay", "room-bp-sbp", "room-bp-dbp"])
    assert all(need <= room for need, room in fit.values()), fit
    d.execute_script(CAPTURE_JS)

    # bad values are refused on screen, in red, and nothing is stored
    fill(d, "room-lim-low", "200")
    fill(d, "room-lim-high", "100")
    click(d, "room-lim-apply")
    wait_page(lambda: "low (200) must be below high (100)" in message(d)[0], 10, "low ≥ high refused")
    assert message(d)[0].startswith("Refused:") and "color: rgb(198, 40, 40)" in message(d)[1]
    fill(d, "room-lim-low", "")
    fill(d, "room-lim-high", "400")
    click(d, "room-lim-apply")
    wait_page(lambda: "sbp high 400 is outside the accepted range 40–300 mmHg" in message(d)[0], 10, "range refused")
    assert c.hgetall(k.session_limits(sid)) == {}

    # SBP high 190 for this session
    fill(d, "room-lim-high", "190")
    click(d, "room-lim-apply")
    wait_page(lambda: message(d)[0].startswith("Set by nina: sbp: low 90 · high 190*"), 10, "applied")
    assert json.loads(c.hget(k.session_limits(sid), "sbp")) == {"high": 190.0}
    wait_page(lambda: table_cell(d, "sbp", "high") == ("190 session", "1"), 10, "table marks the override")
    assert table_cell(d, "sbp", "low") == ("90", "0")
    wait_page(lambda: limit_line(d, "limit-sbp-high") == 190, 10, "trend limit line moved to 190")
    entry = next(a for a in audit.entries(c, k) if a["action"] == "session.limit")
    assert entry["user"] == "nina" and entry["details"] == {"session": sid, "metric": "sbp", "limit": {"high": 190.0}}
    assert entry["ts"] > 0
    # the alert engine's rules for the room use it
    w = Worker(cfg, c, k, owner="w-limits", outbound=None)
    w.housekeeping(now_ms())
    w.tick(now_ms())
    assert w.rooms[ROOM].rules["sbp"].high == 190 and w.rooms[ROOM].rules["sbp"].low == 90
    w.release_all()

    # replay the nurse's own callback request as others, asking for SBP high 150
    bodies = captured_bodies(d)
    body = next(b for b in bodies if "room-lim-msg.children" in b.get("output", ""))
    asking = with_state(body, low=None, high=150)
    url = env["url"] + "/_dash-update-component"
    anon = requests.post(url, json=asking, timeout=10)
    assert anon.status_code == 401
    station = signed_in(env["url"], "sta", PW["sta"]).post(url, json=asking, timeout=10)
    assert station.status_code == 200 and "Refused: changing a session's limits needs the nurse role" in station.text
    assert json.loads(c.hget(k.session_limits(sid), "sbp")) == {"high": 190.0}
    nurse = signed_in(env["url"], "nina", PW["nina"])
    bad = nurse.post(url, json=with_state(body, metric="glucose", low=None, high=10), timeout=10)
    assert bad.status_code == 200 and "Refused: unknown metric 'glucose'" in bad.text
    assert [a["user"] for a in audit.entries(c, k) if a["action"] == "session.limit"] == ["nina"]

    # the station screen: sees the limits in force, not the form; a forced click is refused
    login(d, env["url"], "sta", PW["sta"])
    d.get(env["url"] + f"/room/{ROOM}")
    wait_page(lambda: d.find_element(By.ID, "room-lim-note").text.startswith("Changing this session's limits needs"),
             15, "station note")
    assert not d.find_element(By.ID, "room-lim-form").is_displayed()
    assert table_cell(d, "sbp", "high") == ("190 session", "1")
    d.execute_script("document.getElementById('room-lim-apply').click()")
    wait_page(lambda: message(d)[0].startswith("Refused: changing a session's limits needs the nurse role"),
             10, "station refused")
    assert json.loads(c.hget(k.session_limits(sid), "sbp")) == {"high": 190.0}

    # back as the nurse: clear the override; the room's limits come back
    login(d, env["url"], "nina", PW["nina"])
    d.get(env["url"] + f"/room/{ROOM}")
    wait_page(lambda: d.find_element(By.ID, "room-lim-form").is_displayed(), 15, "form again")
    # a second change merges into the override: setting the low keeps the session's high 190
    fill(d, "room-lim-low", "100")
    click(d, "room-lim-apply")
    wait_page(lambda: message(d)[0].startswith("Set by nina: sbp: low 100* · high 190*"), 10, "merged")
    assert json.loads(c.hget(k.session_limits(sid), "sbp")) == {"high": 190.0, "low": 100.0}
    # "high back to room" removes that one field: the room's 180 applies again, the low stays
    fill(d, "room-lim-low", "")
    d.find_element(By.CSS_SELECTOR, "#room-lim-unset input[value=high]").click()
    click(d, "room-lim-apply")
    wait_page(lambda: message(d)[0].startswith("Set by nina: sbp: low 100* · high 180 ·"), 10, "high unset")
    assert json.loads(c.hget(k.session_limits(sid), "sbp")) == {"low": 100.0}
    click(d, "room-lim-clear")
    wait_page(lambda: "cleared by nina" in message(d)[0], 10, "cleared")
    assert c.hgetall(k.session_limits(sid)) == {}
    wait_page(lambda: limit_line(d, "limit-sbp-high") == 180, 10, "trend back at 180")

    # ending the session from the page hides the form (the overrides end with the session)
    click(d, "room-end")  # asks first (tests/test_overview_browser.py checks the dialog itself)
    click(d, "room-end-confirm")
    wait_page(lambda: not d.find_element(By.ID, "room-lim-form").is_displayed(), 20, "form hidden after end")
    assert "no open session" in d.find_element(By.ID, "room-lim-note").text
