"""Account pages in a real headless Chromium against a real Redis and a served dashboard.

A nurse changes her own password on /account (the old one stops working at the sign-in
form); an admin on /admin/users adds a user, resets a password, changes a role, disables
and re-enables, unlocks an account locked by real failed sign-ins, issues a token, and is
refused when she tries to disable or demote herself as the last admin. Every change is in
the audit log once, under the admin. A nurse and a station cannot open /admin/users, and
replaying the admin's own captured callback request as them is refused by the server.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from selenium.webdriver.common.by import By

from monitor.accounts import audit, tokens, users
from monitor.model.config import Config
from monitor.model.keys import Keys as ClinicKeys
from tests.configs import config_mapping, parsed, room_entry, serial_device
from tests.dashboard_support import (
    CAPTURE_JS,
    captured_bodies,
    click_css,
    fill,
    http_login,
    login,
    served_dashboard,
    wait_page,
)

pytestmark = pytest.mark.browser
PW = {"nina": "nurse-pass-1", "sta": "station-pass-1", "ada": "admin-pass-1"}


def make_cfg(clinic: str, redis_url: str, tmp: str) -> Config:
    """One room; lockout after 3 wrong passwords."""
    return parsed(config_mapping(clinic, redis_url=redis_url, mqtt_url="mqtt://127.0.0.1:1883", data_dir=tmp,
                                 dashboard={"lockout_failures": 3},
                                 rooms=[room_entry("room-1", serial_device("oxi-1"), name="Room 1")]))


@pytest.fixture(scope="module")
def env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    clinic = "t-" + uuid.uuid4().hex[:10]
    cfg = make_cfg(clinic, redis_url, str(tmp_path_factory.mktemp("accounts")))
    with served_dashboard(cfg, redis_url, {"nina": ("nurse", PW["nina"]), "sta": ("station", PW["sta"]), "ada": ("admin", PW["ada"])}) as e:
        yield e


def text_of(d: Any, element_id: str) -> str:
    return d.find_element(By.ID, element_id).text


def sign_in(env: dict[str, Any], name: str, password: str) -> tuple[int, requests.Session]:
    """POST the sign-in form; (status, session holding the cookie)."""
    r, s = http_login(env["url"], name, password)
    return r.status_code, s


def cell(d: Any, user: str, field: str) -> str:
    return d.find_element(By.CSS_SELECTOR, f"#users-table tr[data-vw-user='{user}'] td[data-vw-field={field}]").text


def account(c: redis.Redis, k: ClinicKeys, name: str) -> dict[str, Any]:
    rec = users.get_user(c, k, name)
    assert rec is not None, name
    return rec


def act(d: Any, button: str, expect: str) -> None:
    """Press one of the admin page's buttons and wait for its message."""
    click_css(d, f"#{button}")
    wait_page(lambda: expect in text_of(d, "users-msg"), 10, f"message {expect!r}")


def test_nurse_changes_own_password(env: dict[str, Any]) -> None:
    d, c, k = env["driver"], env["client"], env["keys"]
    login(d, env["url"], "nina", PW["nina"], path="/account")
    d.get(env["url"] + "/account")
    wait_page(lambda: d.find_element(By.ID, "acct-form").is_displayed(), 15, "account page")
    assert text_of(d, "acct-name") == "nina" and text_of(d, "acct-role") == "nurse"
    assert text_of(d, "acct-logins").startswith("this sign-in ")
    nav = wait_page(lambda: d.find_element(By.CLASS_NAME, "vw-nav").text, 15, "nav bar")
    assert "My account" in nav and "Users" not in nav

    def submit(current: str, new: str, again: str, expect: str) -> None:
        fill(d, "acct-current", current)
        fill(d, "acct-new", new)
        fill(d, "acct-new2", again)
        click_css(d, "#acct-submit")
        wait_page(lambda: expect in text_of(d, "acct-msg"), 10, f"message {expect!r}")

    submit("not-my-password", "nina-new-pass", "nina-new-pass", "Refused: the current password is wrong.")
    submit(PW["nina"], "nina-new-pass", "nina-other-pass", "Refused: the new passwords do not match.")
    submit(PW["nina"], "short", "short", "Refused: password too short: at least 8 characters.")
    assert sign_in(env, "nina", PW["nina"])[0] == 303  # nothing changed so far
    submit(PW["nina"], "nina-new-pass", "nina-new-pass", "Password changed.")
    assert d.find_element(By.ID, "acct-current").get_attribute("value") == ""  # fields cleared

    assert sign_in(env, "nina", PW["nina"])[0] == 401  # the old password no longer works
    assert sign_in(env, "nina", "nina-new-pass")[0] == 303
    changes = [e for e in audit.entries(c, k) if e["action"] == "user_passwd" and e["details"]["name"] == "nina"]
    assert [e["user"] for e in changes] == ["nina"]
    refused = [e for e in audit.entries(c, k) if e["action"] == "user_passwd_refused"]
    assert [(e["user"], e["details"]["reason"]) for e in refused] == [("nina", "bad_password")]
    PW["nina"] = "nina-new-pass"


def test_admin_manages_accounts(env: dict[str, Any]) -> None:
    d, c, k = env["driver"], env["client"], env["keys"]
    login(d, env["url"], "ada", PW["ada"], path="/admin/users")
    d.get(env["url"] + "/admin/users")
    wait_page(lambda: cell(d, "nina", "role") == "nurse", 15, "users table")
    nav = wait_page(lambda: d.find_element(By.CLASS_NAME, "vw-nav").text, 15, "nav bar")
    assert "Users" in nav and "My account" in nav
    d.execute_script(CAPTURE_JS)

    # add a user
    fill(d, "users-add-name", "neo")
    fill(d, "users-add-pw", "neo-pass-1")
    act(d, "users-add", "Added neo (nurse).")
    wait_page(lambda: cell(d, "neo", "state") == "enabled", 10, "neo in the table")
    assert account(c, k, "neo")["role"] == "nurse"
    assert sign_in(env, "neo", "neo-pass-1")[0] == 303
    # a duplicate is refused with the reason
    fill(d, "users-add-name", "neo")
    fill(d, "users-add-pw", "neo-pass-x")
    act(d, "users-add", "Refused: user 'neo' already exists.")

    # pick neo from the table; reset the password
    click_css(d, "#users-table tr[data-vw-user='neo'] button")
    wait_page(lambda: d.find_element(By.ID, "users-target").get_attribute("value") == "neo", 10, "neo selected")
    fill(d, "users-pw", "neo-pass-2")
    act(d, "users-reset", "Password reset for neo")
    assert sign_in(env, "neo", "neo-pass-1")[0] == 401
    assert sign_in(env, "neo", "neo-pass-2")[0] == 303

    # role change
    click_css(d, "#users-role input[value=director]")
    act(d, "users-setrole", "neo is now director.")
    wait_page(lambda: cell(d, "neo", "role") == "director", 10, "role in the table")
    assert account(c, k, "neo")["role"] == "director"

    # disable: sign-in refused and an existing sign-in stops at once; enable: works again
    status, neo_web = sign_in(env, "neo", "neo-pass-2")
    assert status == 303 and neo_web.get(env["url"] + "/api/v1/me", timeout=10).json()["name"] == "neo"
    act(d, "users-disable", "neo disabled")
    wait_page(lambda: cell(d, "neo", "state") == "disabled", 10, "disabled in the table")
    assert sign_in(env, "neo", "neo-pass-2")[0] == 401
    assert neo_web.get(env["url"] + "/api/v1/me", timeout=10).status_code == 401
    act(d, "users-enable", "neo enabled.")
    wait_page(lambda: cell(d, "neo", "state") == "enabled", 10, "enabled in the table")
    assert sign_in(env, "neo", "neo-pass-2")[0] == 303

    # real failed sign-ins (lockout_failures = 3) make this place back off; the table shows
    # it; clearing the failures lets the right password in at once
    for _ in range(3):
        assert sign_in(env, "neo", "wrong-guess")[0] == 401
    assert sign_in(env, "neo", "neo-pass-2")[0] == 429  # backing off: even the right password
    d.get(env["url"] + "/admin/users")
    wait_page(lambda: cell(d, "neo", "lock").startswith("backing off until"), 15, "backoff shown")
    assert cell(d, "neo", "failures") == "4"  # three checked, one refused unchecked
    d.execute_script(CAPTURE_JS)
    fill(d, "users-target", "neo")
    act(d, "users-unlock", "neo: sign-in failures cleared.")
    wait_page(lambda: cell(d, "neo", "lock") == "—", 10, "backoff cleared in the table")
    assert sign_in(env, "neo", "neo-pass-2")[0] == 303

    # an API token (scopes, lifetime, label), shown once, works as a Bearer token; it is
    # listed by id and revoked from the table
    click_css(d, "#users-token-scopes input[value=acknowledge]")  # read only
    fill(d, "users-token-label", "wall display")
    act(d, "users-token", "API token issued for neo")
    token = text_of(d, "users-tokenval")
    assert token.startswith(tokens.TOKEN_PREFIX)
    me = requests.get(env["url"] + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert me.status_code == 200 and me.json()["name"] == "neo"
    assert token not in json.dumps(c.hgetall(k.tokens))  # only its digest is stored
    tid = tokens.token_digest(token)[:12]
    row = f"#users-tokens tr[data-vw-token='{tid}']"
    wait_page(lambda: "wall display" in d.find_element(By.CSS_SELECTOR, row).text, 10, "token listed")
    assert "read" in d.find_element(By.CSS_SELECTOR, row + " td[data-vw-field=scopes]").text
    assert "acknowledge" not in d.find_element(By.CSS_SELECTOR, row + " td[data-vw-field=scopes]").text
    click_css(d, row + " button")
    wait_page(lambda: f"Token {tid} revoked." in text_of(d, "users-msg"), 10, "revoked")
    assert requests.get(env["url"] + "/api/v1/me", headers={"Authorization": f"Bearer {token}"},
                        timeout=10).status_code == 401
    act(d, "users-token", "API token issued for neo")  # one more, for the audit order below

    # the last enabled admin may not disable or demote herself
    fill(d, "users-target", "ada")
    act(d, "users-disable", "Refused: ada is the last enabled admin")
    click_css(d, "#users-role input[value=nurse]")
    act(d, "users-setrole", "Refused: ada is the last enabled admin")
    ada = account(c, k, "ada")
    assert ada["role"] == "admin" and not ada["disabled"]

    # every change once in the audit log, under the acting admin
    mine = [(e["action"], e["user"]) for e in reversed(audit.entries(c, k))
            if e["details"].get("name") == "neo" and e["action"].startswith(("user_", "token_"))]
    assert mine == [("user_add", "ada"), ("user_passwd", "ada"), ("user_role", "ada"), ("user_disable", "ada"),
                    ("user_enable", "ada"), ("user_unlock", "ada"), ("token_issue", "ada"), ("token_revoke", "ada"),
                    ("token_issue", "ada")]
    env["bodies"] = captured_bodies(d)


def test_nurse_and_station_cannot_manage_users(env: dict[str, Any]) -> None:
    d, c, k = env["driver"], env["client"], env["keys"]
    url = env["url"]
    # the admin's own "Issue API token" request (captured above), replayed as others
    body = next(b for b in env["bodies"] if "users-token.n_clicks" in b.get("changedPropIds", []))
    assert requests.post(url + "/_dash-update-component", json=body, timeout=10).status_code == 401
    before = c.hlen(k.tokens)
    for name in ("nina", "sta"):
        status, web = sign_in(env, name, PW[name])
        assert status == 303
        page = web.get(url + "/admin/users", allow_redirects=False, timeout=10)
        assert page.status_code == 403 and "needs the admin role" in page.text
        replay = web.post(url + "/_dash-update-component", json=body, timeout=10)
        assert replay.status_code == 403 and "needs the admin role" in replay.text
        # as is the table's Select button (a pattern-matching id of the page)
        sel = web.post(url + "/_dash-update-component", timeout=10, json={
            "output": "users-target.value", "outputs": {"id": "users-target", "property": "value"},
            "inputs": [[{"id": {"page": "users", "sel": "neo"}, "property": "n_clicks", "value": 1}]],
            "changedPropIds": ['{"page":"users","sel":"neo"}.n_clicks'], "state": []})
        assert sel.status_code == 403
    assert c.hlen(k.tokens) == before  # no token was issued by the replays
    # a station screen cannot open /account either (shared screen, not a person)
    status, web = sign_in(env, "sta", PW["sta"])
    assert web.get(url + "/account", allow_redirects=False, timeout=10).status_code == 403

    # in the browser: the nurse gets the refusal page, and no Users link
    login(d, url, "nina", PW["nina"])
    nav = wait_page(lambda: d.find_element(By.CLASS_NAME, "vw-nav").text, 15, "nav bar")
    assert "My account" in nav and "Users" not in nav
    d.get(url + "/admin/users")
    body_text = d.find_element(By.TAG_NAME, "body").text
    assert "403" in body_text and "needs the admin role" in body_text
