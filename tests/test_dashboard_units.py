"""Pure dashboard pieces (figures, auth helpers, routing) and the accounts module."""

from __future__ import annotations

import argparse
import types

import pytest
import redis

from dashboard import auth, figures
from dashboard.app import Router, compile_route, discover_pages
from monitor.accounts import tokens, users
from monitor.accounts.throttle import LoginPolicy
from monitor.app import users_cli
from monitor.model.keys import Keys
from monitor.sessions.phase import session_phase

NOW = 1_800_000_000_000


@pytest.mark.parametrize(("session", "phase", "label"), [
    (None, "none", "no session"),
    ({"state": "open", "started_ms": NOW - 60_000}, "pre-dose", "pre-dose"),
    ({"state": "open", "first_dose_ms": NOW - 25 * 60_000}, "post-dose", "25 min since dose"),
    ({"state": "open", "first_dose_ms": NOW - 90 * 60_000, "ready_ms": NOW}, "ready", "ready to leave"),
    ({"state": "ended", "first_dose_ms": NOW - 60_000}, "ended", "session ended"),
])
def test_session_phase(session, phase, label) -> None:  # noqa: ANN001
    out = session_phase(session, NOW)
    assert (out.stage, out.label) == (phase, label)


@pytest.mark.parametrize(("metric", "cycle", "stale_s", "expect"), [
    ("hr", None, 5, 5), ("spo2", 300, 5, 5), ("sbp", None, 5, 360), ("dbp", 600, 5, 660), ("map", 120, 8, 180),
])
def test_stale_after(metric, cycle, stale_s, expect) -> None:  # noqa: ANN001
    assert figures.stale_after_s(metric, cycle, stale_s) == expect


@pytest.mark.parametrize(("age", "text"), [(-1, "0 s"), (4.9, "4 s"), (89, "89 s"), (120, "2 min"), (7300, "2 h")])
def test_fmt_age(age, text) -> None:  # noqa: ANN001
    assert figures.fmt_age(age) == text


@pytest.mark.parametrize(("prios", "best"), [
    ([], None), (["low"], "low"), (["low", "medium"], "medium"), (["medium", "high", "low"], "high"),
])
def test_highest_priority(prios, best) -> None:  # noqa: ANN001
    assert figures.highest_priority({"priority": p} for p in prios) == best


def test_alert_episodes_from_events() -> None:
    ev = [
        {"alert": "a", "event": "raised", "ts": "100", "metric": "sbp", "priority": "high", "kind": "physiological"},
        {"alert": "a", "event": "acknowledged", "ts": "150"},
        {"alert": "b", "event": "raised", "ts": "200", "metric": "hr", "priority": "medium", "kind": "physiological"},
        {"alert": "a", "event": "cleared", "ts": "300"},
        {"alert": "r", "event": "raised", "ts": "250", "kind": "reminder", "priority": "low"},
    ]
    eps = figures.alert_episodes(ev, NOW)
    assert [(e["alert"], e["start_ms"], e["end_ms"]) for e in eps] == [("a", 100, 300), ("b", 200, NOW)]


def test_sparkline_buckets_and_thin() -> None:
    hist = [(10_000 * i + j * 1000, "d", {"hr": 60 + i}, []) for i in range(3) for j in range(10)]
    pts = figures.sparkline_points(hist, "hr", 10)
    assert pts == [[5000, 60.0], [15000, 61.0], [25000, 62.0]]
    thinned = figures.thin([(i, float(i)) for i in range(100)], 10)
    assert len(thinned) <= 10 and thinned[-1] == (99, 99.0)


def test_trend_figure_traces_limits_markers_episodes() -> None:
    hist = [(NOW - 60_000 + i * 1000, "oxi", {"hr": 70.0 + i % 3, "spo2": 97.0}, []) for i in range(60)]
    hist.append((NOW - 30_000, "nibp", {"sbp": 190.0, "dbp": 95.0, "map": 127.0}, []))
    limits = {"hr": {"low": 50, "high": 120}, "sbp": {"low": 90, "high": 180}}
    events = [{"type": "dose", "ts": NOW - 45_000, "dose_mg": 56.0}, {"type": "bp", "ts": NOW - 20_000, "sbp": 150, "dbp": 90},
              {"type": "note", "ts": NOW - 10_000}]
    eps = [{"alert": "x", "metric": "sbp", "priority": "high", "start_ms": NOW - 30_000, "end_ms": NOW}]
    fig = figures.trend_figure(hist, limits, events, eps, NOW - 60_000, NOW, "room-1-15", shift_ms=3_600_000)
    assert [t.name for t in fig.data] == ["HR", "SpO2", "SBP", "DBP", "MAP", "RR"]
    assert len(fig.data[0].x) == 60 and fig.data[0].x[0] == NOW - 60_000 + 3_600_000
    assert len(fig.data[5].x) == 0  # RR absent but its trace kept: extendData indices stay fixed
    names = [s.name for s in fig.layout.shapes]
    assert {"limit-hr-low", "limit-hr-high", "limit-sbp-high", "episode-x", "marker-dose", "marker-bp"} <= set(names)
    assert fig.layout.uirevision == "room-1-15"
    ep = next(s for s in fig.layout.shapes if s.name == "episode-x")
    assert ep.x0 == NOW - 30_000 + 3_600_000 and ep.fillcolor == figures.PRIORITY_COLORS["high"]


def test_tz_shift() -> None:
    assert figures.tz_shift_ms("UTC", NOW) == 0
    assert figures.tz_shift_ms("America/Denver", 1_800_000_000_000) in (-7 * 3_600_000, -6 * 3_600_000)


def test_auth_helpers() -> None:
    assert auth.bearer_token({"authorization": "Bearer abc"}) == "abc"
    assert auth.bearer_token({"authorization": "Basic abc"}) is None
    assert auth.cookie_value({"cookie": "a=1; vw_session=xyz; b=2"}) == "xyz"
    assert auth.cookie_value({}) is None
    for bad in ("//evil.example", "https://evil.example", "", None, "/\\evil"):
        assert auth.safe_next(bad) == "/"
    assert auth.safe_next("/room/room-1") == "/room/room-1"
    assert auth.session_ttl_s("station", 15) == auth.STATION_TTL_S
    assert auth.session_ttl_s("nurse", 15) == 900


@pytest.mark.parametrize(("body", "ids"), [
    ({"output": "a.children", "outputs": {"id": "a", "property": "children"}}, ["a"]),
    ({"output": "..a.children...b.value..", "outputs": [{"id": "a", "property": "children"},
                                                       {"id": "b", "property": "value"}]}, ["a", "b"]),
    ({"outputs": [[{"id": {"page": "room", "dev": "x"}, "property": "children"}]]}, ['{"dev": "x", "page": "room"}']),
    ({"output": "..a.children...b.value.."}, ["a", "b"]),
])
def test_output_ids(body, ids) -> None:  # noqa: ANN001
    assert auth.output_ids(body) == ids


def test_router_and_convention() -> None:
    assert compile_route("/review/<session>").match("/review/s-1").groupdict() == {"session": "s-1"}
    assert compile_route("/").match("/") and not compile_route("/").match("/x")
    pages = discover_pages()
    assert {"dashboard.pages.overview", "dashboard.pages.room"} <= {p.__name__ for p in pages}
    director = types.SimpleNamespace(ROUTES=("/review", "/review/<session>"), MIN_ROLE="director",
                                     ID_PREFIX="review-", __name__="fake.review")
    station = types.SimpleNamespace(ROUTES=("/",), MIN_ROLE="station", ID_PREFIX="ov-", __name__="fake.ov")
    r = Router([station, director])
    assert r.page_role("/review/abc") == "director" and r.page_role("/") == "station"
    assert r.page_role("/nowhere") is None
    assert r.match("/review/abc")[1] == {"session": "abc"}
    assert r.callback_role(["ov-x", "app-page"]) == "station"
    assert r.callback_role(["ov-x", "review-table"]) == "director"
    assert r.callback_role(['{"kind": "sign", "page": "review"}']) == "director"
    assert r.callback_role(["unclaimed"]) == "admin"


# --- accounts ---------------------------------------------------------------------------
def test_users_lifecycle_backoff_tokens(rclient: redis.Redis, keys: Keys) -> None:
    rec = users.create_user(rclient, keys, "nina", "nurse", "secret-pass")
    assert "pw_hash" not in rec and rec["role"] == "nurse"
    stored = users.get_user(rclient, keys, "nina")
    assert stored["pw_hash"].startswith("$argon2id$") and "secret-pass" not in stored["pw_hash"]
    with pytest.raises(users.UserError):
        users.create_user(rclient, keys, "nina", "nurse", "another-pass")
    with pytest.raises(users.UserError):
        users.create_user(rclient, keys, "x", "janitor", "long-enough")
    with pytest.raises(users.UserError):
        users.create_user(rclient, keys, "y", "nurse", "short")
    assert users.verify_password(rclient, keys, "nina", "secret-pass")["name"] == "nina"
    assert users.authenticate(rclient, keys, "ghost", "whatever").reason == "unknown"
    policy = LoginPolicy(pair_failures=3, backoff_s=60)
    for _ in range(3):
        assert users.authenticate(rclient, keys, "nina", "bad", policy=policy, now_ms=NOW).reason == "bad_password"
    res = users.authenticate(rclient, keys, "nina", "secret-pass", policy=policy, now_ms=NOW + 59_000)
    assert res.reason == "throttled" and res.retry_after_ms == 1000  # 60 s after the last failure
    assert users.authenticate(rclient, keys, "nina", "secret-pass", policy=policy, now_ms=NOW + 60_000).ok
    # another source was never slowed down
    assert users.authenticate(rclient, keys, "nina", "secret-pass", source="ip:10.0.0.9", policy=policy,
                              now_ms=NOW + 1).ok
    users.set_disabled(rclient, keys, "nina", True)
    assert users.authenticate(rclient, keys, "nina", "secret-pass").reason == "disabled"
    users.set_disabled(rclient, keys, "nina", False)
    users.set_role(rclient, keys, "nina", "director")
    tok = tokens.issue_token(rclient, keys, "nina")
    assert tokens.user_for_token(rclient, keys, tok)["role"] == "director"
    assert tokens.user_for_token(rclient, keys, tok + "x") is None
    assert tokens.revoke_tokens(rclient, keys, "nina") == 1 and tokens.user_for_token(rclient, keys, tok) is None
    actions = [f["action"] for _i, f in rclient.xrange(keys.audit)]
    assert {"user_add", "user_disable", "user_enable", "user_role", "token_issue", "token_revoke"} <= set(actions)


def test_has_role_order() -> None:
    assert users.has_role("admin", "director") and users.has_role("nurse", "station")
    assert not users.has_role("nurse", "director") and not users.has_role(None, "station")
    assert not users.has_role("janitor", "station")


def test_ensure_demo_accounts(rclient: redis.Redis, keys: Keys) -> None:
    first = dict(users.ensure_demo_accounts(rclient, keys))
    assert set(first) == {"nurse", "director", "admin"}
    for name, pw in first.items():
        assert users.verify_password(rclient, keys, name, pw)["role"] == name
    again = dict(users.ensure_demo_accounts(rclient, keys))  # a second demo run resets the passwords
    for name in first:
        assert again[name] != first[name]
        assert users.verify_password(rclient, keys, name, again[name])["role"] == name
        assert users.verify_password(rclient, keys, name, first[name]) is None


def test_user_cli(make_config, rclient: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config()
    monkeypatch.setenv("VITALWATCH_PASSWORD", "cli-password-1")

    def run(action: str, **kw: object) -> int:
        return users_cli.run(argparse.Namespace(action=action, user="ops", **kw), cfg)

    assert run("add", name="nora", role="nurse") == 0
    assert run("add", name="nora", role="nurse") == 2
    assert users.verify_password(rclient, keys, "nora", "cli-password-1")
    assert run("role", name="nora", role="admin") == 0
    assert run("disable", name="nora") == 0 and users.get_user(rclient, keys, "nora")["disabled"]
    assert run("enable", name="nora") == 0
    monkeypatch.setenv("VITALWATCH_PASSWORD", "cli-password-2")
    assert run("passwd", name="nora") == 0 and users.verify_password(rclient, keys, "nora", "cli-password-2")
    capsys.readouterr()
    assert run("token", name="nora", scope=["acknowledge"], days=7, label="pager 3") == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert tokens.user_for_token(rclient, keys, token)["scopes"] == frozenset({"acknowledge"})
    assert run("token", name="nora", scope=["everything"], days=7, label="") == 2  # unknown scope
    capsys.readouterr()
    assert run("tokens", name="nora") == 0
    listing = capsys.readouterr().out
    tid = tokens.token_digest(token)[:12]
    assert tid in listing and "acknowledge" in listing and "pager 3" in listing and token not in listing
    assert run("revoke", name="nora", token=tid) == 0 and tokens.user_for_token(rclient, keys, token) is None
    assert run("revoke", name="nora", token=tid) == 2
    assert run("list") == 0 and "nora" in capsys.readouterr().out
    assert run("passwd", name="ghost") == 2
    assert any(f["user"] == "ops" and f["action"] == "user_add" for _i, f in rclient.xrange(keys.audit))
    for _ in range(5):  # five wrong passwords from one place: that place backs off
        users.authenticate(rclient, keys, "nora", "wrong-password")
    capsys.readouterr()
    assert run("list") == 0 and "backs off" in capsys.readouterr().out
    assert run("unlock", name="nora") == 0 and "nora unlocked" in capsys.readouterr().out
    assert run("list") == 0 and "backs off" not in capsys.readouterr().out
    assert any(f["user"] == "ops" and f["action"] == "user_unlock" for _i, f in rclient.xrange(keys.audit))


def test_read_password_prompt_must_match() -> None:
    answers = iter(["one-password", "two-password"])
    with pytest.raises(users.UserError):
        users_cli.read_password({}, prompt=lambda _p: next(answers))
    assert users_cli.read_password({"VITALWATCH_PASSWORD": "from-env-1"}) == "from-env-1"


def test_latest_from_the_summary_and_the_entries_after_it(rclient: redis.Redis, keys: Keys, make_config) -> None:  # noqa: ANN001
    """No history scan: the engine's summary, then only what came after the id it folded in;
    a metric the room never reports costs nothing; an engine far behind still shows the newest."""
    import json

    from dashboard import data as data_mod
    from dashboard.data import Data

    cfg = make_config()
    d = Data(rclient, keys, cfg)
    old = rclient.xadd(keys.vitals("room-1"), {"ts": "1000", "dev": "oxi-1", "hr": "60", "spo2": "95"})
    rclient.hset(keys.room_latest("room-1"), mapping={"hr": json.dumps([60, 1000, "oxi-1"]),
                                                     "sbp": json.dumps([150, 900, "nibp-1"]), "_id": old})
    rclient.xadd(keys.vitals("room-1"), {"ts": "2000", "dev": "oxi-1", "hr": "70"})
    got = d.latest("room-1")
    assert got["hr"] == {"v": 70.0, "ts": 2000, "dev": "oxi-1"}  # after the summary
    assert got["sbp"]["v"] == 150 and "spo2" not in got  # from the summary; spo2 only before it
    # engine far behind: more entries after the summary than the tail cap → the newest are read too
    old_max = data_mod.LATEST_TAIL_MAX
    data_mod.LATEST_TAIL_MAX = 3
    try:
        for i in range(6):
            rclient.xadd(keys.vitals("room-1"), {"ts": str(3000 + i), "dev": "oxi-1", "hr": str(80 + i)})
        assert d.latest("room-1")["hr"]["v"] == 85
    finally:
        data_mod.LATEST_TAIL_MAX = old_max
