"""Dashboard over HTTP and WebSocket: anonymous refusal on every route, roles, tokens, the
JSON API, acknowledge/pause for pagers, station acknowledgement, lockout, idle logoff."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket

from dashboard.auth import session_digest
from monitor.accounts import tokens, users
from monitor.sessions import lifecycle as sessions
from monitor.store.status import publish_status
from tests import dashboard_support
from tests.dashboard_support import csrf_of, http_login, inject_alert, now_ms, served_api
from tests.test_dashboard_browser import make_cfg
from tests.waiting import wait_for

PW = {"nina": "nurse-pass-1", "dora": "director-pass-1", "sta": "station-pass-1", "adam": "admin-pass-1"}


@pytest.fixture(scope="module")
def env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cfg = make_cfg("t-" + uuid.uuid4().hex[:10], redis_url, str(tmp_path_factory.mktemp("api")))
    with served_api(cfg, redis_url, {n: (role, PW[n]) for n, role in (("nina", "nurse"), ("dora", "director"), ("sta", "station"), ("adam", "admin"))}) as e:
        yield e


def signed_in(env: dict[str, Any], name: str) -> requests.Session:
    """Signed in as `name`, sending the header the API asks of scripts."""
    s = dashboard_support.signed_in(env["url"], name, PW[name])
    s.headers["X-VW-Request"] = "1"
    return s


def concrete(path: str) -> str:
    return "/" + re.sub(r"\{[^}]+\}", "x", path).lstrip("/")


def test_every_route_refuses_anonymous_requests(env: dict[str, Any]) -> None:
    server = env["served"].dash_app.server
    public = {"/login", "/logout", "/health", "/manifest.webmanifest"}  # the manifest: no patient data
    public.add("/metrics")  # loopback (this test) or a `metrics` token: tests/test_metrics.py
    seen = 0
    for route in server.routes:
        path = getattr(route, "path", "")
        if not path or path in public:
            continue
        methods = getattr(route, "methods", None) or {"GET"}
        for method in methods - {"HEAD"}:
            r = requests.request(method, env["url"] + concrete(path), allow_redirects=False, timeout=10)
            seen += 1
            if method == "GET" and not path.startswith(("/api/", "/_dash", "/ws/", "/_reload")):
                assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, path)
            else:
                assert r.status_code in (401, 403), (method, path, r.status_code)
    for path in ("/", "/room/room-1", "/review", "/review/s1", "/audit", "/assets/live.js",
                 "/_dash-component-suites/dash/dcc/dash_core_components.js"):
        r = requests.get(env["url"] + path, allow_redirects=False, timeout=10)
        assert r.status_code in (303, 401), path
    assert requests.get(env["url"] + "/api/v1/rooms", timeout=10).status_code == 401
    assert seen > 10
    ws_url = env["url"].replace("http", "ws") + "/ws/live"
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(ws_url, timeout=5)
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(env["url"].replace("http", "ws") + "/_dash-ws-callback", timeout=5,
                                    header=["Origin: " + env["url"]])


def test_health_is_public_json(env: dict[str, Any]) -> None:
    r = requests.get(env["url"] + "/health", timeout=10)
    body = r.json()
    assert body["redis"] is True
    assert set(body["devices"]) == {"oxi-1", "nibp-2", "mon-3", "mon-4", "nibp-4"}
    assert "alert_engine_heartbeat_age_s" in body
    assert r.status_code == 503 and body["monitoring"] is False  # no engine is running in this test


def test_health_names_an_unreachable_mqtt_broker(env: dict[str, Any]) -> None:
    """mon-3's adapter (alive: its status is fresh) says its broker link has been down 5 s:
    /health is 503 naming the broker and room-3 (the clinic-wide `broker` cause)."""
    c, k = env["client"], env["keys"]
    now = now_ms()
    c.hset(k.heartbeats, mapping={"alerts:t": now, "ingest:t": now})
    publish_status(c, k, "mon-3", {"room": "room-3", "transport": "mqtt", "state": "connecting",
                                   "updated_ms": now, "since_ms": now - 5000, "broker_down_ms": now - 5000})
    try:
        r = requests.get(env["url"] + "/health", timeout=10)
        assert r.status_code == 503
        assert "MQTT broker unreachable: no readings from 1 room (room-3)" in r.json()["problems"], r.json()
    finally:
        c.hdel(k.heartbeats, "alerts:t", "ingest:t")
        c.delete(k.device_status("mon-3"))


def test_roles_on_pages_and_callbacks(env: dict[str, Any]) -> None:
    nurse, director = signed_in(env, "nina"), signed_in(env, "dora")
    assert nurse.get(env["url"] + "/review", allow_redirects=False).status_code == 403
    assert nurse.get(env["url"] + "/review/abc", allow_redirects=False).status_code == 403
    assert nurse.get(env["url"] + "/audit", allow_redirects=False).status_code == 403
    assert director.get(env["url"] + "/review", allow_redirects=False).status_code == 200
    assert nurse.get(env["url"] + "/room/room-1", allow_redirects=False).status_code == 200
    body = {"output": "review-list.children", "outputs": {"id": "review-list", "property": "children"},
            "inputs": [], "changedPropIds": []}
    r = nurse.post(env["url"] + "/_dash-update-component", json=body)
    assert r.status_code == 403
    body = {"output": "nobody-owns-this.children", "outputs": {"id": "nobody-owns-this", "property": "children"},
            "inputs": [], "changedPropIds": []}
    assert director.post(env["url"] + "/_dash-update-component", json=body).status_code == 403


def test_api_token_rooms_alerts_and_acknowledge(env: dict[str, Any]) -> None:
    c, k = env["client"], env["keys"]
    token = tokens.issue_token(c, k, "nina", actor="test")
    assert c.hget(k.tokens, token) is None  # only the digest is stored
    hdr = {"Authorization": f"Bearer {token}"}
    c.xadd(k.vitals("room-3"), {"ts": str(now_ms()), "dev": "mon-3", "hr": "77", "spo2": "96"})

    def room3() -> Any:  # the hub's cache, fed by the push loop: the reading arrives within a moment
        rooms = requests.get(env["url"] + "/api/v1/rooms", headers=hdr, timeout=10).json()["rooms"]
        r3 = next(r for r in rooms if r["id"] == "room-3")
        return r3 if r3["latest"].get("hr", {}).get("value") == 77 else None

    r3 = wait_for(room3, 10, "room-3 HR 77 in /api/v1/rooms")
    assert r3["latest"]["spo2"]["value"] == 96
    assert requests.get(env["url"] + "/api/v1/rooms", headers={"Authorization": "Bearer vwt_nope"},
                        timeout=10).status_code == 401
    since = now_ms()
    rec = inject_alert(c, k, "room-3", "hr", "medium", 131, 120, dev="mon-3")
    ev = requests.get(env["url"] + f"/api/v1/alerts?since={since}", headers=hdr, timeout=10).json()
    assert any(e["alert"] == rec["alert"] and e["event"] == "raised" for e in ev["events"])
    r = requests.post(env["url"] + f"/api/v1/alerts/{rec['alert']}/pause", headers=hdr, json={"seconds": 60},
                      timeout=10)
    assert r.status_code == 200 and r.json()["paused_until_ms"] > now_ms()
    r = requests.post(env["url"] + f"/api/v1/alerts/{rec['alert']}/acknowledge", headers=hdr, timeout=10)
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "nina"
    assert requests.post(env["url"] + "/api/v1/alerts/room-3.x.y.1/acknowledge", headers=hdr,
                         timeout=10).status_code == 404
    users.set_disabled(c, k, "nina", True, actor="test")
    assert requests.get(env["url"] + "/api/v1/rooms", headers=hdr, timeout=10).status_code == 401
    users.set_disabled(c, k, "nina", False, actor="test")


def test_station_needs_nurse_credentials_and_cookie_posts_need_header(env: dict[str, Any]) -> None:
    c, k = env["client"], env["keys"]
    rec = inject_alert(c, k, "room-1", "spo2", "high", 85, 90, dev="oxi-1")
    station = signed_in(env, "sta")
    url = env["url"] + f"/api/v1/alerts/{rec['alert']}/acknowledge"
    assert station.post(url, json={}).status_code == 401
    assert station.post(url, json={"username": "sta", "password": PW["sta"]}).status_code == 403
    r = station.post(url, json={"username": "nina", "password": PW["nina"]})
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "nina"
    nurse = signed_in(env, "nina")
    del nurse.headers["X-VW-Request"]
    assert nurse.post(env["url"] + f"/api/v1/alerts/{rec['alert']}/pause", json={}).status_code == 403


def test_session_api_and_websocket_hello(env: dict[str, Any]) -> None:
    c, k = env["client"], env["keys"]
    sid = sessions.start_session(c, k, env["cfg"], "room-4", "p-123", "intranasal", "nina")
    c.xadd(k.vitals("room-4"), {"ts": str(now_ms()), "dev": "mon-4", "hr": "70"})
    nurse = signed_in(env, "nina")
    body = nurse.get(env["url"] + f"/api/v1/sessions/{sid}").json()
    assert body["session"]["id"] == sid and any(r.get("hr") == 70 for r in body["readings"])
    assert nurse.get(env["url"] + "/api/v1/sessions/nope").status_code == 404
    cookie = "vw_session=" + nurse.cookies["vw_session"]
    ws = websocket.create_connection(env["url"].replace("http", "ws") + "/ws/live", timeout=10,
                                     header=[f"Cookie: {cookie}"])
    try:
        msg = json.loads(ws.recv())
        assert msg["t"] == "hello" and msg["user"] == {"name": "nina", "role": "nurse"}
        assert set(msg["rooms"]) == {"room-1", "room-2", "room-3", "room-4"}
    finally:
        ws.close()


def test_open_session_reads_to_the_stream_end_whatever_this_host_clock_says(env: dict[str, Any]) -> None:
    """Stream ids are the Redis host's clock: one 60 s ahead of the dashboard's must not hide the
    newest readings of an open session."""
    c, k = env["client"], env["keys"]
    sid = sessions.start_session(c, k, env["cfg"], "room-3", "p-456", "iv", "nina")
    ahead = now_ms() + 60_000
    c.xadd(k.vitals("room-3"), {"ts": str(ahead), "dev": "mon-3", "hr": "81"}, id=f"{ahead}-0")
    body = signed_in(env, "nina").get(env["url"] + f"/api/v1/sessions/{sid}").json()
    assert [r["ts"] for r in body["readings"] if r.get("hr") == 81] == [ahead]
    sessions.end_session(c, k, env["cfg"], sid, "nina")


def test_login_backoff_one_answer_and_audit(env: dict[str, Any]) -> None:
    c, k = env["client"], env["keys"]
    users.create_user(c, k, "lou", "nurse", "lou-password-1")
    answers = {}
    for name in ("lou", "nobody-by-this-name"):
        for _ in range(env["cfg"].dashboard.lockout_failures):
            r, _s = http_login(env["url"], name, "bad-password")
            assert r.status_code == 401 and "Wrong user name or password." in r.text
        r, _s = http_login(env["url"], name, "lou-password-1")  # even the right one waits now
        answers[name] = (r.status_code, re.sub(r'value="[^"]*"', "", r.text))
    assert answers["lou"][0] == 429 and "Too many failed attempts" in answers["lou"][1]
    assert answers["lou"] == answers["nobody-by-this-name"]  # nothing tells who exists
    audit_rows = [(f["user"], f["action"], json.loads(f["details"])) for _i, f in c.xrange(k.audit)]
    assert any(u == "lou" and a == "login_failed" and d["reason"] == "bad_password" for u, a, d in audit_rows)
    unknown = [d for u, a, d in audit_rows if u == "?" and a == "login_failed"]
    assert unknown and all("nobody" not in json.dumps(d) for d in unknown)  # typed names are not kept
    signed_in(env, "dora")
    assert ("dora", "login") in [(f["user"], f["action"]) for _i, f in c.xrange(k.audit)]


def test_login_form_needs_its_csrf_token(env: dict[str, Any]) -> None:
    s = requests.Session()
    r = s.post(env["url"] + "/login", data={"username": "dora", "password": PW["dora"]}, allow_redirects=False,
               timeout=10)
    assert r.status_code == 403 and "vw_session" not in s.cookies  # no token: no sign-in
    token = csrf_of(s.get(env["url"] + "/login", timeout=10).text)
    r = s.post(env["url"] + "/login", data={"username": "dora", "password": PW["dora"], "csrf": token + "x"},
               allow_redirects=False, timeout=10)
    assert r.status_code == 403 and "vw_session" not in s.cookies  # another page's token: refused


def test_idle_logoff_for_people_but_not_for_stations(env: dict[str, Any]) -> None:
    c, k = env["client"], env["keys"]
    nurse, station = signed_in(env, "nina"), signed_in(env, "sta")
    nurse_key = k.web_session(session_digest(nurse.cookies["vw_session"]))
    station_key = k.web_session(session_digest(station.cookies["vw_session"]))
    assert not c.exists(k.web_session(nurse.cookies["vw_session"]))  # Redis holds a digest, not the id
    idle_s = env["cfg"].dashboard.idle_logoff_min * 60
    assert 0 < c.ttl(nurse_key) <= idle_s
    assert c.ttl(station_key) > 7 * 24 * 3600
    c.expire(nurse_key, 3)  # as if the nurse had been idle until 3 s before logoff
    assert nurse.get(env["url"] + "/api/v1/me").status_code == 200  # an API read is not a person's input
    assert c.ttl(nurse_key) <= 3
    timer = {"changedPropIds": ["room-ev-tick.n_intervals"], "output": "room-events.children",
             "outputs": {"id": "room-events", "property": "children"}, "inputs": [], "state": []}
    nurse.post(env["url"] + "/_dash-update-component", json=timer)  # a page's timer is not either
    assert c.ttl(nurse_key) <= 3
    assert nurse.get(env["url"] + "/room/room-1").status_code == 200  # opening a page is
    assert c.ttl(nurse_key) > 3
    c.delete(nurse_key)  # the idle time ran out
    r = nurse.get(env["url"] + "/", allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert station.get(env["url"] + "/logout", allow_redirects=False).status_code == 200  # a question only
    assert c.exists(station_key)
    r = station.post(env["url"] + "/logout", allow_redirects=False)
    assert r.status_code == 303 and not c.exists(station_key)


def test_reset_api_409_while_present_then_resets_and_audits(env: dict[str, Any]) -> None:
    """POST /api/v1/alerts/<alert>/reset (CONTRACT): 409 while the condition is present, then
    the latched alarm is removed, a `reset` event with the user is written, and it is audited."""
    c, k = env["client"], env["keys"]
    rec = inject_alert(c, k, "room-2", "spo2", "high", 84, 90, dev="nibp-2")
    nurse = signed_in(env, "nina")
    url = env["url"] + f"/api/v1/alerts/{rec['alert']}/reset"
    r = nurse.post(url, json={})
    assert r.status_code == 409 and "still present" in r.json()["detail"]
    assert c.hget(k.active_alerts("room-2"), rec["alert"]) is not None
    c.hset(k.active_alerts("room-2"), rec["alert"], json.dumps({**rec, "state": "latched", "cleared_ms": now_ms()}))
    station = signed_in(env, "sta")
    assert station.post(url, json={}).status_code == 401  # a station names the acting nurse
    r = station.post(url, json={"username": "nina", "password": PW["nina"]})
    assert r.status_code == 200 and r.json()["state"] == "reset"
    assert c.hget(k.active_alerts("room-2"), rec["alert"]) is None
    ev = [f for _i, f in c.xrange(k.alerts) if f["alert"] == rec["alert"]]
    assert ev[-1]["event"] == "reset" and ev[-1]["user"] == "nina"
    assert any(f["action"] == "alert.reset" and f["user"] == "nina" for _i, f in c.xrange(k.audit))
    assert nurse.post(url, json={}).status_code == 404  # gone


def test_dismiss_reminder_undo_acknowledge_and_public_manifest(env: dict[str, Any]) -> None:
    c, k = env["client"], env["keys"]
    nurse = signed_in(env, "nina")
    alarm = inject_alert(c, k, "room-4", "hr", "medium", 131, 120, dev="mon-4")
    reminder = {**alarm, "alert": "room-4.-.bp-40min.1", "kind": "reminder", "priority": "low", "metric": None,
                "message": "BP check due (40 min after dose)", "cond": "r:bp-40min"}
    c.hset(k.active_alerts("room-4"), reminder["alert"], json.dumps(reminder))
    base = env["url"] + "/api/v1/alerts/"
    assert nurse.post(base + f"{alarm['alert']}/dismiss", json={}).status_code == 409  # an alarm is acknowledged
    r = nurse.post(base + f"{reminder['alert']}/dismiss", json={})
    assert r.status_code == 200 and r.json()["state"] == "dismissed"
    assert all(a["alert"] != reminder["alert"] for a in nurse.get(env["url"] + "/api/v1/alerts").json()["active"])
    # undo: only one's own acknowledge, only while the window is open
    assert nurse.post(base + f"{alarm['alert']}/unacknowledge", json={}).status_code == 409  # not acknowledged
    assert nurse.post(base + f"{alarm['alert']}/acknowledge", json={}).status_code == 200
    dora = signed_in(env, "dora")
    assert dora.post(base + f"{alarm['alert']}/unacknowledge", json={}).status_code == 409  # not hers
    r = nurse.post(base + f"{alarm['alert']}/unacknowledge", json={})
    assert r.status_code == 200 and r.json()["acknowledged_by"] is None
    events = [f["event"] for _i, f in c.xrange(k.alerts) if f["alert"] == alarm["alert"]]
    assert events[-2:] == ["acknowledged", "unacknowledged"]
    stored = json.loads(c.hget(k.active_alerts("room-4"), alarm["alert"]))
    c.hset(k.active_alerts("room-4"), alarm["alert"],
           json.dumps({**stored, "acknowledged_by": "nina", "acknowledged_ms": now_ms() - 60_000}))
    assert nurse.post(base + f"{alarm['alert']}/unacknowledge", json={}).status_code == 409  # too late
    # the phone view installs: manifest and icons without a sign-in, nothing else
    m = requests.get(env["url"] + "/manifest.webmanifest", timeout=10)
    assert m.status_code == 200 and m.headers["content-type"].startswith("application/manifest+json")
    assert m.json()["start_url"] == "/m"
    for icon in m.json()["icons"]:
        got = requests.get(env["url"] + icon["src"], timeout=10)
        assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"
    for private in ("/assets/live.js", "/assets/icons/../live.js", "/assets/icons/%2e%2e/live.js"):
        got = requests.get(env["url"] + private, timeout=10, allow_redirects=False)
        assert got.status_code in (303, 401, 404) and "use strict" not in got.text, private
    c.delete(k.active_alerts("room-4"))
