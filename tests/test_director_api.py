"""Roles and the HTTP API of the director's features, against a served dashboard, real Redis
and a seeded archive: the quality report, a patient's course and the research CSV for
directors and admins only (a nurse, a station and anonymous callers are refused, on the API,
the pages and the pages' callbacks); the REMS forms for nurses and up."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from dashboard.app import Served
from monitor.accounts import audit, users
from monitor.accounts.tokens import issue_token
from monitor.model.clock import now_ms
from tests.archive_fixtures import sqlite_url  # noqa: F401
from tests.course_seed import Alarm, Plan, seed_all, two_room_config
from tests.dashboard_support import http_login
from tests.test_rems_form import COMPLETE

DAY = 86_400_000
TZ = "America/Denver"
PW = "a-long-enough-password"
ACCOUNTS = {"nina": "nurse", "dora": "director", "adam": "admin", "sta": "station"}


@pytest.fixture
def env(rclient, keys, make_config, sqlite_url, redis_url) -> Iterator[dict[str, Any]]:  # noqa: F811
    cfg = two_room_config(make_config, sqlite_url, clinic={"id": keys.clinic, "name": "API Clinic", "timezone": TZ})
    now = now_ms()
    seeded = seed_all(rclient, keys, cfg, [
        Plan("MRN-A", "room-1", now - 9 * DAY, dose_mg=56, rise_sbp=25,
             alarms=[Alarm(30, ack_after_s=20)]),
        Plan("MRN-A", "room-1", now - 2 * DAY, dose_mg=84, rise_sbp=48),
        Plan("MRN-B", "room-2", now - 1 * DAY, dose_mg=56, rise_sbp=12),
        Plan("MRN-C", "room-1", now - 5 * DAY, route="iv", dose_mg=35),
    ])
    tokens = {}
    for name, role in ACCOUNTS.items():
        users.create_user(rclient, keys, name, role, PW)
        tokens[name] = issue_token(rclient, keys, name, scopes=["read", "sessions"])
    tokens["dora-read"] = issue_token(rclient, keys, "dora", scopes=["read"])
    served = Served(cfg, redis_url).start()
    days = [datetime.fromtimestamp(sd.plan.t0_ms / 1000, ZoneInfo(TZ)).date() for sd in seeded]
    try:
        yield {"cfg": cfg, "url": served.url, "seeded": seeded, "tokens": tokens,
               "range": f"from={min(days)}&to={max(days)}"}
    finally:
        served.stop()


def api(env: dict[str, Any], who: str | None, method: str, path: str, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {env['tokens'][who]}"} if who else {}
    return requests.request(method, env["url"] + path, headers=headers, timeout=30, allow_redirects=False, **kw)


def signed_in(env: dict[str, Any], name: str) -> requests.Session:
    r, s = http_login(env["url"], name, PW)
    assert r.status_code == 303, r.text
    return s


def test_report_course_research_for_directors_and_admins_only(env):
    a_sid = env["seeded"][0].sid
    paths = [f"/api/v1/report?{env['range']}", f"/api/v1/report?{env['range']}&format=csv",
             f"/api/v1/research.csv?{env['range']}", "/api/v1/patients/MRN-A/course"]
    for path in paths:
        assert api(env, None, "GET", path).status_code == 401, path
        for who in ("nina", "sta"):
            assert api(env, who, "GET", path).status_code == 403, (who, path)
        for who in ("dora", "adam"):
            assert api(env, who, "GET", path).status_code == 200, (who, path)
    # they carry patient ids and readings: a token needs the "sessions" scope, as for a session
    for path in paths:
        assert api(env, "dora-read", "GET", path).status_code == 403, path
    rep = api(env, "dora", "GET", f"/api/v1/report?{env['range']}").json()
    assert rep["totals"]["sessions"] == 4 and {s["session"] for s in rep["sessions"]} == {
        sd.sid for sd in env["seeded"]}
    rows = list(csv.DictReader(io.StringIO(api(env, "adam", "GET", f"/api/v1/report?{env['range']}&format=csv&room="
                                               "room-2").text)))
    assert [r["patient"] for r in rows] == ["MRN-B"]
    course = api(env, "dora", "GET", "/api/v1/patients/MRN-A/course").json()
    assert [s["session"] for s in course["sessions"]] == [env["seeded"][0].sid, env["seeded"][1].sid]
    assert course["sessions"][0]["peak_sbp"] is not None and a_sid == course["sessions"][0]["session"]
    assert api(env, "dora", "GET", "/api/v1/patients/NOBODY/course").status_code == 404
    assert api(env, "dora", "GET", "/api/v1/report?from=2026-02-30&to=2026-03-01").status_code == 400
    assert api(env, "dora", "GET", f"/api/v1/report?{env['range']}&room=nope").status_code == 400
    assert api(env, "dora", "GET", "/api/v1/report").status_code == 400
    research = api(env, "dora", "GET", f"/api/v1/research.csv?{env['range']}&pseudonymize=1").text
    assert "MRN-" not in research and research.startswith("session,patient,")


def test_pages_refuse_a_nurse(env):
    nurse, director = signed_in(env, "nina"), signed_in(env, "dora")
    for path in ("/report", "/review/patient/MRN-A"):
        r = nurse.get(env["url"] + path, allow_redirects=False)
        assert r.status_code == 403 and "director" in r.text, path
        assert director.get(env["url"] + path, allow_redirects=False).status_code == 200, path
    assert nurse.get(env["url"] + "/rems", allow_redirects=False).status_code == 200
    # the pages' callbacks too: a nurse cannot run the report's download callback
    body = {"output": "..report-download.data...report-message.children..", "outputs": [
        {"id": "report-download", "property": "data"}, {"id": "report-message", "property": "children"}],
        "inputs": [{"id": "report-csv", "property": "n_clicks", "value": 1}], "changedPropIds": ["report-csv.n_clicks"]}
    assert nurse.post(env["url"] + "/_dash-update-component", json=body).status_code == 403


def test_rems_api_for_nurses(env, rclient, keys):
    a2 = env["seeded"][1].sid
    assert api(env, "sta", "GET", f"/api/v1/sessions/{a2}/rems").status_code == 403
    form = api(env, "nina", "GET", f"/api/v1/sessions/{a2}/rems").json()
    assert form["status"] == "incomplete" and "lot number" in form["missing"]
    due = api(env, "nina", "GET", "/api/v1/rems/due").json()
    assert due["total"] == 3 and due["overdue"] == 1  # the IV session has no form; the 9-day-old one is overdue
    # entries are written by a signed-in person (a cookie and the X-VW-Request header); API
    # tokens only read and acknowledge (docs/security.md)
    assert api(env, "nina", "POST", f"/api/v1/sessions/{a2}/rems", json={"lot_number": "L0"}).status_code in (401, 403)
    s = signed_in(env, "nina")
    url = env["url"] + f"/api/v1/sessions/{a2}/rems"
    assert s.post(url, json={"lot_number": "L2"}).status_code == 403  # no CSRF header
    s.headers["X-VW-Request"] = "1"
    r = s.post(url + "/submitted", json={"method": "portal"})
    assert r.status_code == 409 and "missing" in r.json()["detail"]
    r = s.post(url, json={"lot_number": "L1", "maois": "perhaps"})
    assert r.status_code == 400 and "yes or no" in r.json()["detail"]
    assert api(env, "nina", "GET", f"/api/v1/sessions/{a2}/rems").json()["status"] == "incomplete"  # nothing stored
    r = s.post(url, json=COMPLETE)
    assert r.status_code == 200 and r.json()["status"] == "ready to submit"
    assert audit.entries(rclient, keys)[0]["action"] == "rems.update"
    r = s.post(url + "/submitted", json={"method": "fax", "reference": "F1"})
    assert r.status_code == 200 and r.json()["status"] == "submitted"
    assert audit.entries(rclient, keys)[0]["action"] == "rems.submitted"
    assert api(env, "nina", "GET", "/api/v1/rems/due").json()["total"] == 2
    pdf = api(env, "nina", "GET", f"/api/v1/sessions/{a2}/rems?format=pdf")
    assert pdf.status_code == 200 and pdf.content[:5] == b"%PDF-"
    iv = env["seeded"][3].sid
    assert api(env, "nina", "GET", f"/api/v1/sessions/{iv}/rems").status_code == 409
    assert s.post(env["url"] + f"/api/v1/sessions/{iv}/rems", json={"lot_number": "x"}).status_code == 409
    assert api(env, "nina", "GET", "/api/v1/sessions/nope/rems").status_code == 404
