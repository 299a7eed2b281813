"""Accounts under attack, against a real Redis and a served dashboard: parallel guessing,
guesses racing an admin's change, an anonymous attacker against a nurse's station, session
and token lifetimes, scopes, and the audit log's limit per anonymous source.

Sources: the served dashboard believes X-Forwarded-For from 127.0.0.1 (uvicorn's default),
so each test speaks from addresses of its own and tests do not share a source's budget.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from dashboard.auth import Sessions, session_digest
from monitor.accounts import audit, tokens, users
from monitor.accounts.throttle import LoginPolicy
from tests.dashboard_support import http_login, inject_alert, now_ms, served_api
from tests.test_dashboard_browser import make_cfg
from tests.waiting import wait_for

PW = "right-password-1"


@pytest.fixture(scope="module")
def env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cfg = make_cfg("t-" + uuid.uuid4().hex[:10], redis_url, str(tmp_path_factory.mktemp("sec")))
    with served_api(cfg, redis_url, {"sta": ("station", "station-pass-1")}) as e:
        yield e


def from_ip(ip: str) -> requests.Session:
    """A client at address `ip` (as the trusted local proxy reports it)."""
    s = requests.Session()
    s.headers["X-Forwarded-For"] = ip
    return s


def attempt(env: dict[str, Any], ip: str, name: str, password: str) -> requests.Response:
    return http_login(env["url"], name, password, session=from_ip(ip))[0]


def parallel_attempts(env: dict[str, Any], ip: str, name: str, n: int) -> list[requests.Response]:
    """`n` wrong-password sign-ins for `name` from `ip`, all POSTed at the same moment."""
    sessions = [from_ip(ip) for _ in range(n)]
    forms = []
    for s in sessions:
        page = s.get(env["url"] + "/login", timeout=10).text
        forms.append(re.search(r'name="csrf" value="([^"]*)"', page).group(1))  # type: ignore[union-attr]
    barrier = threading.Barrier(n)
    out: list[requests.Response | None] = [None] * n

    def one(i: int) -> None:
        barrier.wait()
        out[i] = sessions[i].post(env["url"] + "/login", allow_redirects=False, timeout=60,
                                  data={"username": name, "password": f"wrong-{i}", "csrf": forms[i]})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert all(r is not None for r in out)
    return out  # type: ignore[return-value]


def failures(env: dict[str, Any], name: str) -> int:
    row = next(r for r in users.list_users(env["client"], env["keys"]) if r["name"] == name)
    return int(row["failures"])


def comparable(r: requests.Response) -> tuple[int, str]:
    """Status and page text, without the per-browser CSRF token."""
    return r.status_code, re.sub(r'name="csrf" value="[^"]*"', "", r.text)


def test_forty_parallel_wrong_passwords_are_all_counted_and_the_right_one_waits(env: dict[str, Any]) -> None:
    c, k = env["client"], env["keys"]
    users.create_user(c, k, "nell", "nurse", PW)
    free = env["cfg"].dashboard.lockout_failures
    got = parallel_attempts(env, "10.40.0.1", "nell", 40)
    statuses = sorted(r.status_code for r in got)
    # exactly the free attempts were checked; the other 35 were refused without a check
    assert statuses == [401] * free + [429] * (40 - free)
    assert failures(env, "nell") == 40
    right = attempt(env, "10.40.0.1", "nell", PW)
    assert right.status_code == 429 and "Retry-After" in right.headers
    # an unknown name, the same history: the same answers, word for word
    ghost = parallel_attempts(env, "10.40.0.2", "nobody-here", 40)
    assert sorted(r.status_code for r in ghost) == statuses
    assert comparable(attempt(env, "10.40.0.2", "nobody-here", PW)) == comparable(right)
    assert comparable(next(r for r in got if r.status_code == 401)) == \
        comparable(next(r for r in ghost if r.status_code == 401))


def test_failed_sign_ins_racing_an_admin_change_never_undo_it(env: dict[str, Any]) -> None:
    c, k = env["client"], env["keys"]
    loose = LoginPolicy(pair_failures=10_000, account_failures=10_000, source_failures=10_000)
    for trial in range(5):
        name = f"race-{trial}"
        users.create_user(c, k, name, "nurse", PW)
        stop = threading.Event()

        def guess(i: int, name: str, stop: threading.Event, trial: int) -> None:
            while not stop.is_set():  # real argon2 checks, each from its own source
                users.authenticate(c, k, name, "wrong-guess", source=f"ip:10.41.{trial}.{i}", policy=loose)

        threads = [threading.Thread(target=guess, args=(i, name, stop, trial)) for i in range(6)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda name=name: failures(env, name) > 3, 10, "guesses under way")
            users.set_disabled(c, k, name, True, actor="admin")
            users.set_password(c, k, name, "new-password-1", actor="admin")
            users.set_role(c, k, name, "director", actor="admin")
            n0 = failures(env, name)
            wait_for(lambda name=name, n0=n0: failures(env, name) > n0 + 3, 10, "guesses after the change")
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        rec = users.get_user(c, k, name)
        assert rec["disabled"] and rec["role"] == "director", trial
        assert users.authenticate(c, k, name, "new-password-1", source="ip:10.41.99.1").reason == "disabled"
        users.set_disabled(c, k, name, False, actor="admin")
        assert users.authenticate(c, k, name, "new-password-1", source="ip:10.41.99.2").ok
        assert users.authenticate(c, k, name, PW, source="ip:10.41.99.3").reason == "bad_password"


def test_an_anonymous_attacker_cannot_keep_a_nurse_out(env: dict[str, Any]) -> None:
    c, k = env["client"], env["keys"]
    users.create_user(c, k, "nadia", "nurse", PW)
    assert attempt(env, "10.42.0.1", "nadia", PW).status_code == 303  # her usual workstation
    # guesses from 20 addresses (one each): the account limit now holds back new addresses...
    account_free = env["cfg"].dashboard.login_account_failures
    for i in range(account_free):
        assert attempt(env, f"10.42.1.{i}", "nadia", "a-guess").status_code == 401
    assert attempt(env, "10.42.1.200", "nadia", "a-guess").status_code == 429
    assert attempt(env, "10.42.2.1", "nadia", PW).status_code == 429
    # ...but not where she signed in before
    assert attempt(env, "10.42.0.1", "nadia", PW).status_code == 303
    # and the attacker's own address backs off after its free attempts
    for _ in range(env["cfg"].dashboard.lockout_failures):
        attempt(env, "10.42.3.1", "nadia", "a-guess")
    assert attempt(env, "10.42.3.1", "nadia", PW).status_code == 429
    # the station's acting-nurse check is counted per station: it still works for her
    rec = inject_alert(c, k, "room-1", "spo2", "high", 85, 90, dev="oxi-1")
    station = http_login(env["url"], "sta", "station-pass-1", session=from_ip("10.42.3.1"))[1]
    r = station.post(env["url"] + f"/api/v1/alerts/{rec['alert']}/acknowledge", timeout=30,
                     headers={"X-VW-Request": "1"}, json={"username": "nadia", "password": PW})
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "nadia"


def test_account_changes_end_sign_ins_but_a_password_change_keeps_its_own(env: dict[str, Any]) -> None:
    c, k, cfg = env["client"], env["keys"], env["cfg"]
    users.create_user(c, k, "nick", "nurse", PW)
    store = Sessions(c, k, cfg.dashboard.idle_logoff_min)

    def sign_in() -> str:
        return store.create(users.get_user(c, k, "nick"), now_ms())

    a, b = sign_in(), sign_in()
    users.set_password(c, k, "nick", "nick-new-pass", actor="nick", keep_session=session_digest(a))
    assert store.load(a) is not None and store.load(b) is None  # the changer stays; the other is out
    assert not c.exists(k.web_session(session_digest(b)))
    for change in (lambda: users.set_role(c, k, "nick", "director"),
                   lambda: users.set_disabled(c, k, "nick", True),
                   lambda: users.set_password(c, k, "nick", "nick-newer-pass")):
        users.set_disabled(c, k, "nick", False)
        s = sign_in()
        assert store.load(s) is not None
        change()
        assert store.load(s) is None


def test_token_scopes_expiry_role_and_paths(env: dict[str, Any]) -> None:
    c, k, url = env["client"], env["keys"], env["url"]
    users.create_user(c, k, "tom", "nurse", PW)
    pager = tokens.issue_token(c, k, "tom", scopes="acknowledge", label="pager")
    reader = tokens.issue_token(c, k, "tom", scopes="read")
    sid = __import__("monitor.sessions.lifecycle", fromlist=["x"]).start_session(
        c, k, env["cfg"], "room-2", "p-77", "intranasal", "tom")

    def get(tok: str, path: str) -> int:
        return requests.get(url + path, headers={"Authorization": f"Bearer {tok}"}, timeout=10,
                            allow_redirects=False).status_code

    rec = inject_alert(c, k, "room-3", "hr", "medium", 131, 120, dev="mon-3")
    ack = f"/api/v1/alerts/{rec['alert']}/acknowledge"
    assert get(pager, "/api/v1/me") == 200
    assert get(pager, "/api/v1/rooms") == 403 and get(pager, f"/api/v1/sessions/{sid}") == 403
    assert requests.post(url + ack, headers={"Authorization": f"Bearer {reader}"}, timeout=10).status_code == 403
    r = requests.post(url + ack, headers={"Authorization": f"Bearer {pager}"}, timeout=10)
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "tom"
    assert get(reader, "/api/v1/rooms") == 200 and get(reader, f"/api/v1/sessions/{sid}") == 403
    # a token is not a browser sign-in: pages and Dash callbacks refuse it
    assert get(reader, "/room/room-1") == 303
    assert requests.post(url + "/_dash-update-component", json={}, timeout=10,
                         headers={"Authorization": f"Bearer {reader}"}).status_code == 401
    # expired, old-format (no expiry, no scopes) and role-changed tokens are refused
    old = tokens.issue_token(c, k, "tom", scopes="read", days=1, now_ms=now_ms() - 2 * 86_400_000)
    assert get(old, "/api/v1/me") == 401
    legacy = tokens.TOKEN_PREFIX + "legacy-" + uuid.uuid4().hex
    c.hset(k.tokens, tokens.token_digest(legacy), "tom")
    assert get(legacy, "/api/v1/me") == 401
    assert {t["state"] for t in tokens.list_tokens(c, k, "tom")} == {"active", "expired", "legacy"}
    users.set_role(c, k, "tom", "director")
    assert get(reader, "/api/v1/me") == 401


def test_failed_sign_ins_audit_at_most_ten_a_minute_per_address_and_count_the_rest(env: dict[str, Any]) -> None:
    c, k = env["client"], env["keys"]
    for i in range(40):
        attempt(env, "10.43.0.1", f"spray-{i}", "whatever")
    src = "ip:10.43.0.1"

    def mine() -> tuple[int, int]:
        entries = [(f["action"], json.loads(f["details"])) for _i, f in c.xrange(k.audit)]
        written = sum(1 for a, d in entries if a == "login_failed" and d.get("source") == src)
        held = sum(d["count"] for a, d in entries if a == "audit_suppressed" and d.get("source") == src)
        return written, held

    # the dashboard's loop writes the summary within its housekeeping period (10 s)
    written, held = wait_for(lambda: (lambda w, h: (w, h) if w + h == 40 else None)(*mine()), 30,
                             "every attempt accounted for")
    assert written <= 2 * audit.PER_SOURCE_PER_MIN  # (the run may straddle a minute)
    assert held >= 40 - 2 * audit.PER_SOURCE_PER_MIN
    typed = json.dumps([f for _i, f in c.xrange(k.audit)])
    assert "spray-" not in typed  # names that are no account are kept as digests only
