"""Prometheus /metrics on every long-running role (docs/operations.md, "Metrics").

The real processes are scraped: `vitalwatch ingest` and `vitalwatch alerts` with
`--metrics-port`, against a real mosquitto and Redis, and the dashboard's own port. Counters
must move when readings are stored and when a payload is refused; an alarm must show in the
raise-latency histogram; a scrape from another address needs a `metrics` token; no label
carries a session id or a patient id.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from monitor.accounts import tokens, users
from monitor.model.clock import now_ms
from monitor.model.keys import Keys
from monitor.observe.access import Access, is_loopback
from monitor.observe.catalogue import ALERTS, DASHBOARD, INGEST, LABELS, for_role
from monitor.sessions.lifecycle import start_session
from monitor.store.embedded import free_port
from tests.configs import config_mapping, parsed, room_entry, write_config
from tests.dashboard_support import served_api
from tests.mqtt_support import T_MON1, T_MON2, mosquitto_pub, mqtt_rooms
from tests.servers import kill_quietly
from tests.waiting import wait_for

PATIENT = "PAT-7731-metrics"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in got.items() if n == name and set(labels.items()) <= set(ls))


def names(got: Samples) -> set[str]:
    return {n for n, _ls in got}


def local_address() -> str | None:
    """A non-loopback address of this host (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if is_loopback(addr) else addr


def check_labels(got: Samples, rooms: set[str], devices: set[str], secrets: set[str]) -> None:
    for (name, ls), _v in got.items():
        if not name.startswith("vitalwatch_"):
            assert not ls, name  # process_* metrics carry no labels
            continue
        for k, v in ls:
            assert k in LABELS | {"le"}, (name, k)
            assert not any(s in v for s in secrets), (name, k, v)
            if k == "room":
                assert v in rooms, (name, v)
            if k == "device":
                assert v in devices, (name, v)


@pytest.fixture
def roles(mosquitto_proc: Any, redis_url: str, clinic_id: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """ingest and alerts as `vitalwatch` subprocesses with /metrics on all interfaces, an open
    session in room-1, and a `metrics` token."""
    hl7_port = free_port()
    rooms = [*mqtt_rooms(), room_entry("room-3", {"id": "hl7-3", "protocol": "hl7", "transport": "mllp",
                                                  "source": "MON3"})]
    data = config_mapping(clinic_id, rooms=rooms, redis_url=redis_url, mqtt_url=mosquitto_proc.url,
                          data_dir=tmp_path / "data", metrics={"host": "0.0.0.0"},
                          hl7={"listen": f"127.0.0.1:{hl7_port}"})
    cfg_path = write_config(tmp_path / "vw.toml", data)
    cfg = parsed(data)
    keys = Keys(clinic_id)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    users.create_user(client, keys, "prom", "admin", "prom-pass-123456")
    sid = start_session(client, keys, cfg, "room-1", PATIENT, "iv", "prom")
    env = {"metrics": tokens.issue_token(client, keys, "prom", scopes="metrics"),
           "read": tokens.issue_token(client, keys, "prom", scopes="read")}
    ports = {"ingest": free_port(), "alerts": free_port()}
    procs = [subprocess.Popen([sys.executable, "-m", "monitor", role, "-c", str(cfg_path),
                               "--metrics-port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for role, port in ports.items()]
    try:
        yield {"cfg": cfg, "keys": keys, "client": client, "sid": sid, "tokens": env,
               "url": {r: f"http://127.0.0.1:{p}/metrics" for r, p in ports.items()}, "ports": ports,
               "mqtt_port": mosquitto_proc.port, "hl7_port": hl7_port}
    finally:
        for p in procs:
            kill_quietly(p)
        from tests.servers import delete_clinic_keys
        delete_clinic_keys(client, keys)
        client.close()


def test_ingest_and_alerts_metrics_move_with_readings_rejects_and_alarms(roles: dict[str, Any]) -> None:
    url, port = roles["url"], roles["mqtt_port"]

    def ingest() -> Samples:
        status, text = scrape(url["ingest"])
        return samples(text) if status == 200 else {}

    def alerts() -> Samples:
        status, text = scrape(url["alerts"])
        return samples(text) if status == 200 else {}

    got = wait_for(lambda: (s := ingest()) and value(s, "vitalwatch_mqtt_connected") == 1 and s,
                   what="ingest /metrics with the MQTT client connected", ignoring=(OSError,))
    stored0 = value(got, "vitalwatch_readings_stored_total")
    rejected0 = value(got, "vitalwatch_readings_rejected_total", reason="invalid_json")
    wait_for(lambda: value(alerts(), "vitalwatch_alert_rooms_owned") == 3, what="the worker owning every room",
             ignoring=(OSError,))
    hl7_peer = socket.create_connection(("127.0.0.1", roles["hl7_port"]), timeout=5)  # a monitor connects

    t0 = now_ms()
    mosquitto_pub(port, T_MON1, json.dumps({"ts": t0, "hr": 72, "sbp": 70}))  # sbp < 90: raised at once
    mosquitto_pub(port, T_MON2, "{not json")
    got = wait_for(lambda: (s := ingest()) and value(s, "vitalwatch_readings_stored_total") > stored0
                   and value(s, "vitalwatch_readings_rejected_total", reason="invalid_json") > rejected0
                   and value(s, "vitalwatch_device_state", device="mon-1", state="online") == 1
                   and value(s, "vitalwatch_hl7_connections") == 1 and s,
                   what="stored and rejected counters moving, mon-1 online, the HL7 connection counted")
    hl7_peer.close()
    assert value(got, "vitalwatch_hl7_inflight_messages") == 0
    assert value(got, "vitalwatch_readings_accepted_total") >= value(got, "vitalwatch_readings_stored_total")
    assert value(got, "vitalwatch_device_state", device="mon-1", state="offline") == 0
    assert value(got, "vitalwatch_storage_storing") == 1
    al = wait_for(lambda: (s := alerts()) and value(s, "vitalwatch_alert_raise_latency_seconds_count") >= 1 and s,
                  what="the raised alarm in the raise-latency histogram")
    assert value(al, "vitalwatch_alert_evaluation_seconds_count") >= 1
    assert value(al, "vitalwatch_alert_events_total") >= 1

    # every metric of the catalogue for the role is exported (HL7 ones need an HL7 listener)
    got = ingest()
    want_ingest = {n for s in for_role(INGEST) for n in s.samples()
                   if n != "vitalwatch_storage_cause"}  # only while writes fail
    assert want_ingest <= names(got), want_ingest - names(got)
    assert {n for s in for_role(ALERTS) for n in s.samples()} <= names(al)
    cfg = roles["cfg"]
    secrets = {roles["sid"], PATIENT}
    for s in (got, al):
        check_labels(s, {r.id for r in cfg.rooms}, {d.id for _r, d in cfg.devices()}, secrets)


def test_ingest_metrics_from_another_address_need_a_metrics_token(roles: dict[str, Any]) -> None:
    addr = local_address()
    if addr is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    url = f"http://{addr}:{roles['ports']['ingest']}/metrics"
    wait_for(lambda: scrape(roles["url"]["ingest"])[0] == 200, what="ingest /metrics", ignoring=(OSError,))
    assert scrape(url)[0] == 401
    assert scrape(url, "vwt_not-a-token")[0] == 403
    assert scrape(url, roles["tokens"]["read"])[0] == 403  # a token without the metrics scope
    status, text = scrape(url, roles["tokens"]["metrics"])
    assert status == 200 and "vitalwatch_readings_stored_total" in text


def asgi_get(app: Any, path: str, client_host: str, token: str | None = None,
             extra: list[tuple[bytes, bytes]] | None = None) -> tuple[int, str]:
    """One GET through the whole ASGI stack (middlewares included) from `client_host`."""
    headers = [(b"host", b"dashboard"), *(extra or [])]
    headers += [(b"authorization", f"Bearer {token}".encode())] if token else []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": (client_host, 40000), "server": ("127.0.0.1", 8050)}
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    return out["status"], out["body"].decode()


def login(base: str, name: str, password: str) -> None:
    """Sign in through the real form (its CSRF cookie and field)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(base + "/login", timeout=5).read()
    csrf = next(c.value for c in jar if c.name == "vw_csrf")
    body = urllib.parse.urlencode({"username": name, "password": password, "csrf": csrf}).encode()
    try:
        opener.open(base + "/login", data=body, timeout=10).read()
    except urllib.error.HTTPError:
        pass  # refused: 401


def test_dashboard_metrics_loopback_token_login_failures(redis_url: str, clinic_id: str, tmp_path: Path) -> None:
    cfg = parsed(config_mapping(clinic_id, redis_url=redis_url, data_dir=tmp_path / "data"))
    with served_api(cfg, redis_url, {"nina": ("nurse", "nina-pass-123456"), "prom": ("admin", "prom-pass-123456")},
                    beats=True) as env:
        client, keys, app, url = env["client"], env["keys"], env["served"].asgi, env["url"] + "/metrics"
        sid = start_session(client, keys, cfg, "room-1", PATIENT, "iv", "nina")
        good = tokens.issue_token(client, keys, "prom", scopes="metrics")
        read_only = tokens.issue_token(client, keys, "prom", scopes="read")
        # from another address: a token with the metrics scope, nothing less
        assert asgi_get(app, "/metrics", "10.0.0.7")[0] == 401
        assert asgi_get(app, "/metrics", "127.0.0.1")[0] == 200
        # a proxy on this host forwarding someone else's request: not loopback
        assert asgi_get(app, "/metrics", "127.0.0.1", extra=[(b"x-forwarded-for", b"127.0.0.1")])[0] == 401
        assert asgi_get(app, "/metrics", "10.0.0.7", read_only)[0] == 403
        status, text = asgi_get(app, "/metrics", "10.0.0.7", good)
        assert status == 200 and "vitalwatch_ws_clients" in text
        # a refused sign-in is counted by its reason; loopback needs no token
        before = value(samples(scrape(url)[1]), "vitalwatch_login_failures_total", reason="bad_password")
        login(env["url"], "nina", "wrong-password-1")
        got = wait_for(lambda: (s := samples(scrape(url)[1])) and "vitalwatch_push_lag_seconds" in names(s) and s,
                       what="dashboard metrics with the push lag")
        assert value(got, "vitalwatch_login_failures_total", reason="bad_password") == before + 1
        assert {n for s in for_role(DASHBOARD) for n in s.samples()} <= names(got)
        check_labels(got, {"room-1"}, {"oxi-1"}, {sid, PATIENT})


def test_access_rule() -> None:
    calls: list[str] = []
    up = {"redis": True}

    def token_ok(token: str) -> bool:
        calls.append(token)
        if not up["redis"]:
            raise redis.ConnectionError("down")
        return token == "vwt_good"

    clock = [0.0]
    a = Access(token_ok, remember_s=60, mono=lambda: clock[0])
    for host in ("127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"):
        assert a.decide(host, None).ok, host
        assert a.decide(host, None, proxied=True).status == 401  # through a proxy: not this host
    for host in ("10.0.0.7", "::ffff:10.0.0.7", "fd00::2", "testclient", None):
        assert a.decide(host, None).status == 401, host
    assert a.decide("10.0.0.7", "Basic abc").status == 401
    assert a.decide("10.0.0.7", "Bearer vwt_bad").status == 403
    up["redis"] = False
    assert a.decide("10.0.0.7", "Bearer vwt_good").status == 503  # cannot check it now
    up["redis"] = True
    assert a.decide("10.0.0.7", "Bearer vwt_good").ok
    up["redis"] = False
    clock[0] = 59
    assert a.decide("10.0.0.7", "Bearer vwt_good").ok  # believed for a minute through an outage
    clock[0] = 61
    assert a.decide("10.0.0.7", "Bearer vwt_good").status == 503


def test_operations_doc_lists_every_metric() -> None:
    from monitor.observe.catalogue import SPECS

    doc = (Path(__file__).resolve().parents[1] / "docs/operations.md").read_text()
    for s in SPECS:
        assert f"| `{s.name}` | {s.kind} |" in doc, s.name


def test_label_check_catches_a_session_id() -> None:
    ok: Samples = {("vitalwatch_device_state", (("device", "oxi-1"), ("room", "room-1"), ("state", "online"))): 1.0}
    check_labels(ok, {"room-1"}, {"oxi-1"}, {"room-1-1796000000000"})
    for bad in ({("vitalwatch_x", (("session", "s1"),)): 1.0},  # a label no metric may have
                {("vitalwatch_x", (("reason", "room-1-1796000000000"),)): 1.0},  # a session id as a value
                {("vitalwatch_x", (("room", "room-9"),)): 1.0}):  # a room not in the config
        with pytest.raises(AssertionError):
            check_labels(bad, {"room-1"}, {"oxi-1"}, {"room-1-1796000000000"})


def test_storage_metrics_say_why_writes_fail() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    from monitor.model.storage import FAILING, StorageState
    from monitor.observe.collectors import storage_metrics

    st = StorageState(state=FAILING, cause="Redis out of memory (OOM …)", code="oom", since_ms=10_000, pending=340,
                      oldest_pending_ms=9_000, spooled=300, counters={"readings_accepted": 400, "readings_stored": 60})

    class Fixed(Collector):
        def collect(self) -> Any:
            return storage_metrics(st, 22_000)

    reg = CollectorRegistry()
    reg.register(Fixed())
    got = samples(generate_latest(reg).decode())
    assert value(got, "vitalwatch_storage_storing") == 0
    assert value(got, "vitalwatch_storage_cause", code="oom") == 1
    assert value(got, "vitalwatch_storage_failing_seconds") == 12
    assert value(got, "vitalwatch_writer_oldest_pending_seconds") == 13
    assert (value(got, "vitalwatch_writer_pending_entries"), value(got, "vitalwatch_writer_spool_entries")) == (340, 300)
    assert value(got, "vitalwatch_readings_accepted_total") - value(got, "vitalwatch_readings_stored_total") == 340
