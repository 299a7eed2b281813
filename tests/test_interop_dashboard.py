"""The dashboard's interop parts: GET /api/v1/sessions/<id>/fhir (director and up) and the
admin's /outbox page, where a refused ORU^R01 is shown with the EHR's answer and resent."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from selenium.webdriver.common.by import By

from monitor.sessions import outbound
from monitor.store.outbox import Outbox
from tests.configs import config_mapping, parsed, room_entry
from tests.dashboard_support import click_css, http_login, login, served_dashboard, wait_page
from tests.test_hl7_outbound import Ehr, ended_session, run_until

PW = {"dora": ("director", "director-pass-1"), "nina": ("nurse", "nurse-pass-1"), "adam": ("admin", "admin-pass-1")}


@pytest.fixture(scope="module")
def env(redis_url: str, tmp_path_factory: pytest.TempPathFactory):
    ehr = Ehr(["AE"])
    tmp = tmp_path_factory.mktemp("interop")
    cfg = parsed(config_mapping(
        {"id": "t-" + uuid.uuid4().hex[:10]}, redis_url=redis_url, mqtt_url="mqtt://127.0.0.1:1883", data_dir=tmp,
        archive_url=f"sqlite:///{tmp / 'archive.db'}",
        hl7={"listen": "127.0.0.1:0", "outbound": {"url": f"mllp://127.0.0.1:{ehr.port}", "timeout_s": 1}},
        rooms=[room_entry("room-1", {"id": "mon-1", "protocol": "hl7", "transport": "mllp", "source": "ABC"})]))
    with served_dashboard(cfg, redis_url, PW) as e:
        e["ehr"] = ehr
        yield e
    ehr.close()


def session_as(env: dict[str, Any], name: str) -> requests.Session:
    r, s = http_login(env["url"], name, PW[name][1])
    assert r.status_code == 303
    s.headers["X-VW-Request"] = "1"
    return s


def test_fhir_route_for_directors(env: dict[str, Any]) -> None:
    sid, readings = ended_session(env["client"], env["keys"], env["cfg"], n=8)
    r = session_as(env, "dora").get(f"{env['url']}/api/v1/sessions/{sid}/fhir")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(r.json())
    assert bundle.type == "collection" and len(bundle.entry) > len(readings)
    assert session_as(env, "nina").get(f"{env['url']}/api/v1/sessions/{sid}/fhir").status_code == 403
    assert requests.get(f"{env['url']}/api/v1/sessions/{sid}/fhir").status_code == 401
    assert session_as(env, "dora").get(f"{env['url']}/api/v1/sessions/nope/fhir").status_code == 404
    exports = [json.loads(f["details"]) for _i, f in env["client"].xrange(env["keys"].audit)
               if f["action"] == "session.export" and f["user"] == "dora"]
    assert exports and exports[-1]["format"] == "fhir"


def test_admin_sees_the_refused_message_and_resends_it(env: dict[str, Any]) -> None:
    client, keys, cfg = env["client"], env["keys"], env["cfg"]
    runner = outbound.InteropRunner(cfg, client, keys, "w-test")
    ended_session(client, keys, cfg, patient="MRN-55", n=4)
    box = Outbox(client, keys, "hl7")
    # every archived session goes to the EHR; it answers the first with AE, the rest with AA
    run_until(runner, lambda: box.failed() and box.pending_count() == 0, what="the AE kept")
    sid = box.failed()[0].message.key
    d = env["driver"]
    login(d, env["url"], "adam", PW["adam"][1], "/outbox")
    wait_page(lambda: d.find_elements(By.CSS_SELECTOR, ".outbox-failed-row"), 15, "the refused row")
    row = d.find_element(By.CSS_SELECTOR, ".outbox-failed-row").text
    assert sid in row and "AE" in row and "unknown patient" in row
    click_css(d, ".outbox-resend")
    wait_page(lambda: "queued again" in d.find_element(By.ID, "outbox-msg").text, 15, "resend confirmed")
    sent_before = len(env["ehr"].received)
    run_until(runner, lambda: len(env["ehr"].received) > sent_before and box.pending_count() == 0,
              what="the EHR took the resend")
    assert env["ehr"].received[-1] == env["ehr"].received[0]
    wait_page(lambda: not box.failed(), 5, "no refused message left")
    audit = [f for _i, f in client.xrange(keys.audit) if f["action"] == "outbox.resend"]
    assert audit and audit[-1]["user"] == "adam" and json.loads(audit[-1]["details"])["session"] == sid
    # a nurse may not open it
    login(d, env["url"], "nina", PW["nina"][1], "/")
    d.get(env["url"] + "/outbox")
    wait_page(lambda: "403" in d.find_element(By.TAG_NAME, "body").text, 15, "the outbox refused to a nurse")
    assert "Outbound to the EHR" not in d.page_source
