"""Pure pieces of the hardening (tables) and the small Redis-backed ones: backoff, sources,
token scopes per route, passive callbacks, origins, the CSP, presence, the message budget,
who counts as listening, the broker ACL, audit trimming and held summaries, the trend
window and the measure-now button."""

from __future__ import annotations

import json
import time

import pytest
import redis

from dashboard.api import TokenBucket
from dashboard.auth import passive_callback, token_scope
from dashboard.security import csp, header_list, origin_ok
from monitor.accounts import audit
from monitor.accounts.throttle import LoginPolicy, backoff_wait_ms, ip_source, login_state
from monitor.alarms.outbound import unattended
from monitor.model.config import parse_config
from monitor.model.keys import Keys
from monitor.model.mqtt_acl import acl_users, amqtt_acl, mosquitto_acl, mosquitto_hash

NOW = 1_800_000_000_000


@pytest.mark.parametrize(("count", "last", "wait"), [
    (4, NOW, 0), (5, NOW, 30_000), (5, NOW - 10_000, 20_000), (6, NOW, 60_000), (7, NOW, 120_000),
    (40, NOW, 900_000), (5, NOW - 31_000, 0),
])
def test_backoff_doubles_up_to_its_cap(count: int, last: int, wait: int) -> None:
    assert backoff_wait_ms(count, last, threshold=5, base_s=30, max_s=900, now_ms=NOW) == wait


@pytest.mark.parametrize(("host", "source"), [
    ("10.1.2.3", "ip:10.1.2.3"), ("::ffff:10.1.2.3", "ip:10.1.2.3"),
    ("2001:db8:1:2:aaaa::1", "ip:2001:db8:1:2::/64"), ("2001:db8:1:2:bbbb::9", "ip:2001:db8:1:2::/64"),
    (None, "ip:unknown"),
])
def test_sources_are_addresses_and_ipv6_by_64(host: str | None, source: str) -> None:
    assert ip_source(host) == source


def test_login_state_shows_the_worst_wait() -> None:
    p = LoginPolicy(pair_failures=3, account_failures=20, backoff_s=30)
    raw = {"n": "9", "r": "2", "c": "7", "t": str(NOW), "c:ip:a": "4", "t:ip:a": str(NOW - 1000), "c:ip:b": "1",
           "t:ip:b": str(NOW)}
    assert login_state(raw, p, NOW) == {"failures": 9, "refused": 2, "locked_until_ms": NOW - 1000 + 60_000}
    assert login_state({}, p, NOW)["locked_until_ms"] == 0


@pytest.mark.parametrize(("kind", "method", "path", "scope"), [
    ("http", "GET", "/api/v1/me", ""),
    ("http", "GET", "/api/v1/rooms", "read"),
    ("http", "GET", "/api/v1/alerts", "read"),
    ("http", "GET", "/api/v1/sessions/s-1", "sessions"),
    ("http", "GET", "/api/v1/sessions/s-1/fhir", "sessions"),
    ("http", "GET", "/api/v1/report", "sessions"),
    ("http", "GET", "/api/v1/research.csv", "sessions"),
    ("http", "GET", "/api/v1/patients/MRN-1/course", "sessions"),
    ("http", "GET", "/api/v1/rems/due", "sessions"),
    ("http", "POST", "/api/v1/sessions/s-1/rems", None),
    ("http", "POST", "/api/v1/alerts/a-1/acknowledge", "acknowledge"),
    ("http", "POST", "/api/v1/alerts/a-1/pause", "acknowledge"),
    ("http", "POST", "/api/v1/alerts/a-1/reset", "acknowledge"),
    ("http", "POST", "/api/v1/users", None),
    ("http", "DELETE", "/api/v1/rooms", None),
    ("http", "GET", "/room/room-1", None),
    ("http", "POST", "/_dash-update-component", None),
    ("websocket", "GET", "/ws/live", "read"),
    ("websocket", "GET", "/_dash-ws-callback", None),
])
def test_token_scope_per_route(kind: str, method: str, path: str, scope: str | None) -> None:
    assert token_scope(method, path, kind) == scope


@pytest.mark.parametrize(("changed", "passive"), [
    ([], True), (["room-ev-tick.n_intervals"], True), (["a.n_intervals", "b.n_intervals"], True),
    (["room-dose.n_clicks"], False), (["room-ev-tick.n_intervals", "room-window.value"], False),
    (["app-url.pathname"], False), (None, True),
])
def test_only_a_person_s_input_counts_as_activity(changed: list[str] | None, passive: bool) -> None:
    assert passive_callback({"changedPropIds": changed}) is passive


@pytest.mark.parametrize(("headers", "allowed", "ok"), [
    ({"host": "vw.clinic:8443", "origin": "https://vw.clinic:8443"}, (), True),
    ({"host": "vw.clinic:8443", "origin": "https://evil.example"}, (), False),
    ({"host": "vw.clinic", "origin": "https://vw.clinic.evil.example"}, (), False),
    ({"host": "vw.clinic"}, (), True),
    ({"host": "10.0.0.5:8050", "origin": "https://vw.clinic"}, ("https://vw.clinic",), True),
    ({"host": "vw.clinic", "origin": "null"}, (), False),
])
def test_websocket_origin(headers: dict[str, str], allowed: tuple[str, ...], ok: bool) -> None:
    assert origin_ok(headers, allowed) is ok


def test_csp_and_headers() -> None:
    policy = csp(["'sha256-abc='", "'sha256-abc='"])
    assert "script-src 'self' 'sha256-abc='" in policy and policy.count("sha256-abc") == 1
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    page = dict(header_list("/room/room-1", policy, hsts=True))
    assert page[b"cache-control"] == b"no-store" and b"strict-transport-security" in page
    asset = dict(header_list("/assets/live.js", policy, hsts=False))
    assert b"cache-control" not in asset and asset[b"x-content-type-options"] == b"nosniff"


def test_message_budget() -> None:
    b = TokenBucket(rate_per_s=5, burst=20)
    assert sum(b.take(100.0) for _ in range(30)) == 20  # the burst, then nothing
    assert not b.take(100.1)
    assert b.take(100.2)  # a fifth of a second later: one more
    assert sum(b.take(110.0 + i * 0.2) for i in range(50)) == 50  # 5/s goes on forever


def test_only_stations_and_nurses_count_as_listening() -> None:
    def screen(role: str | None, sound: bool = True, age_s: float = 1) -> str:
        rec = {"ts_ms": NOW - int(age_s * 1000), "sound_on": sound}
        return json.dumps(rec if role is None else {**rec, "role": role})

    assert not unattended({"a": screen("station")}, NOW, 15)
    assert not unattended({"a": screen("nurse")}, NOW, 15)
    assert unattended({"a": screen("director"), "b": screen("admin")}, NOW, 15)
    assert unattended({"a": screen("nurse", sound=False)}, NOW, 15)
    assert unattended({"a": screen("station", age_s=60)}, NOW, 15)
    assert not unattended({"a": screen(None)}, NOW, 15)  # an older dashboard's entry: as before


def test_broker_acl_one_user_per_device_without_wildcards() -> None:
    cfg = parse_config({"clinic": {"id": "c"}, "mqtt": {"shared_group": "g"}, "rooms": [
        {"id": "room-1", "devices": [
            {"id": "mon-1", "protocol": "json", "transport": "mqtt", "topic": "vw/room-1/mon-1",
             "status_topic": "vw/room-1/mon-1/status"},
            {"id": "oxi-1", "protocol": "masimo-ascii", "transport": "serial", "port": "/dev/null"}]},
        {"id": "room-2", "devices": [{"id": "bp-2", "protocol": "senml", "transport": "mqtt",
                                      "topic": "other/bp-2"}]}]})
    by = {u.name: u for u in acl_users(cfg)}
    assert set(by) == {"vitalwatch-ingest", "vitalwatch-alerts", "mon-1", "bp-2"}
    assert by["mon-1"].write == ("vw/room-1/mon-1", "vw/room-1/mon-1/status") and not by["mon-1"].read
    assert by["bp-2"].write == ("other/bp-2",)
    assert by["vitalwatch-ingest"].read == ("other/#", "vw/#", "$share/g/other/#", "$share/g/vw/#")
    assert by["vitalwatch-alerts"].write == ("vitalwatch/alerts", "vitalwatch/alerts/#")
    text = mosquitto_acl(acl_users(cfg, simulate=True))
    assert "user vitalwatch-simulate\ntopic write other/bp-2\ntopic write vw/room-1/mon-1\n" in text
    assert amqtt_acl(acl_users(cfg))["publish_acl"]["mon-1"] == ["vw/room-1/mon-1", "vw/room-1/mon-1/status"]
    clash = parse_config({"clinic": {"id": "c"}, "rooms": [{"id": "r", "devices": [
        {"id": "vitalwatch-ingest", "protocol": "json", "transport": "mqtt", "topic": "t/x"}]}]})
    with pytest.raises(ValueError, match="clash"):
        acl_users(clash)


def test_mosquitto_hash_format() -> None:
    h = mosquitto_hash("pw", salt=b"0123456789ab")
    assert h.startswith("$7$101$MDEyMzQ1Njc4OWFi$") and len(h.split("$")[-1]) == 88


def test_audit_trim_keeps_what_the_archive_lacks_and_the_retention(rclient: redis.Redis, keys: Keys) -> None:
    now = int(time.time() * 1000)
    hour = 3_600_000
    ids = [rclient.xadd(keys.audit, {"ts": "0", "user": "u", "action": "a", "details": "{}"}, id=f"{now - h * hour}-0")
           for h in (50, 40, 30, 20, 10)]
    # archived up to the 30-hour-old entry; retention 24 h: only entries older than both go
    assert audit.trim_archived(rclient, keys, ids[2], retention_ms=24 * hour, now_ms=now) == 2
    assert [i for i, _f in rclient.xrange(keys.audit)] == ids[2:]
    # archived everything: the retention still keeps the last 24 h
    assert audit.trim_archived(rclient, keys, ids[4], retention_ms=24 * hour, now_ms=now) == 1
    assert [i for i, _f in rclient.xrange(keys.audit)] == ids[3:]
    assert audit.trim_archived(rclient, keys, None, retention_ms=0) == 0  # never archived: kept


def test_held_audit_entries_become_one_summary_each(rclient: redis.Redis, keys: Keys) -> None:
    for _ in range(audit.PER_SOURCE_PER_MIN + 7):
        audit.record_limited(rclient, keys, "ip:10.9.9.9", "?", "login_failed", reason="unknown")
    if rclient.hlen(keys.audit_held) == 0:  # the minute turned over mid-loop: try once more
        for _ in range(audit.PER_SOURCE_PER_MIN + 7):
            audit.record_limited(rclient, keys, "ip:10.9.9.9", "?", "login_failed", reason="unknown")
    assert audit.flush_held(rclient, keys) == 1
    assert audit.flush_held(rclient, keys) == 0  # taken once
    rows = [(f["action"], json.loads(f["details"])) for _i, f in rclient.xrange(keys.audit)]
    written = sum(1 for a, _d in rows if a == "login_failed")
    summary = next(d for a, d in rows if a == "audit_suppressed")
    assert summary["source"] == "ip:10.9.9.9" and summary["held_action"] == "login_failed"
    assert written + summary["count"] in (audit.PER_SOURCE_PER_MIN + 7, 2 * (audit.PER_SOURCE_PER_MIN + 7))
    assert summary["first_ms"] <= summary["last_ms"]


def test_trend_window_is_one_of_the_choices(make_config, rclient: redis.Redis, keys: Keys,  # noqa: ANN001
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard.context import AppContext
    from dashboard.data import Data
    from dashboard.pages import room

    cfg = make_config()
    app = AppContext(cfg=cfg, keys=keys, data=Data(rclient, keys, cfg))
    starts: list[int] = []
    real = app.data.history
    monkeypatch.setattr(app.data, "history", lambda r, start, end=None: (starts.append(start), real(r, start, end))[1])
    room.build_figure(app, "room-1", 10**9, NOW)  # a forged "window" of two thousand years
    room.build_figure(app, "room-1", 60, NOW)
    assert starts == [NOW - 15 * 60_000, NOW - 60 * 60_000]


def test_measure_now_needs_a_nurse_and_a_real_nibp_device(make_config, rclient: redis.Redis,  # noqa: ANN001
                                                          keys: Keys) -> None:
    from dash import Dash

    from dashboard.context import CURRENT_USER, AppContext, User
    from dashboard.data import Data
    from dashboard.pages import room

    cfg = make_config(rooms=[{"id": "room-1", "devices": [
        {"id": "bp-1", "protocol": "nibp-un300", "transport": "serial", "port": "/dev/null"}]}])
    actx = AppContext(cfg=cfg, keys=keys, data=Data(rclient, keys, cfg))
    app = Dash(__name__)
    room.register_callbacks(app, actx)
    nibp = next(cb for key, cb in app.callback_map.items() if "room-nibp-msg" in key)["callback"]

    def press(user: User, dev: str) -> str:
        from dash._callback_context import context_value
        from dash._utils import AttributeDict

        token = CURRENT_USER.set(user)
        ctx = context_value.set(AttributeDict(triggered_inputs=[{"prop_id": json.dumps(
            {"dev": dev, "kind": "nibp", "page": "room"}, separators=(",", ":")) + ".n_clicks", "value": 1}]))
        try:
            out = nibp.__wrapped__([1])
        finally:
            context_value.reset(ctx)
            CURRENT_USER.reset(token)
        return str(out)

    assert "needs a nurse" in press(User("sta", "station"), "bp-1")
    assert "not an NIBP device" in press(User("nina", "nurse"), "made-up-key")
    assert not rclient.exists(keys.nibp_requests("made-up-key")) and not rclient.exists(keys.nibp_requests("bp-1"))
    assert "requested from bp-1" in press(User("nina", "nurse"), "bp-1")
    for _ in range(10):
        press(User("nina", "nurse"), "bp-1")
    assert rclient.llen(keys.nibp_requests("bp-1")) == 3 and rclient.ttl(keys.nibp_requests("bp-1")) > 0
