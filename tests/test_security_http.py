"""The dashboard over real HTTP and WebSockets under hostile use: security headers on every
answer, body limits (a 50 MB sign-in body against a dashboard process, memory measured),
a 200-request sign-in flood with a nurse's API latency measured alongside (printed, not
asserted), WebSocket Origin, message-rate and presence limits, and live sockets that close
within seconds of an account change — cookie and token alike."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import websocket

from dashboard.auth import session_digest
from monitor.accounts import tokens, users
from monitor.model.keys import Keys
from monitor.store.embedded import free_port
from tests import dashboard_support
from tests.configs import config_mapping, write_config
from tests.dashboard_support import Beats, http_login, served_api
from tests.servers import delete_clinic_keys
from tests.test_dashboard_browser import make_cfg
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
PW = {"nina": "nurse-pass-1", "dora": "director-pass-1", "adam": "admin-pass-1"}
STATIC = ("/assets/", "/_dash-component-suites/")


@pytest.fixture(scope="module")
def env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cfg = make_cfg("t-" + uuid.uuid4().hex[:10], redis_url, str(tmp_path_factory.mktemp("sechttp")))
    with served_api(cfg, redis_url, {n: (role, PW[n]) for n, role in (("nina", "nurse"), ("dora", "director"), ("adam", "admin"))}) as e:
        yield e


def signed_in(env: dict[str, Any], name: str) -> requests.Session:
    return dashboard_support.signed_in(env["url"], name, PW[name])


def check_headers(path: str, r: requests.Response) -> None:
    h = r.headers
    csp = h.get("Content-Security-Policy", "")
    script_src = next(p for p in csp.split(";") if p.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src, path
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, path
    assert h.get("X-Frame-Options") == "DENY" and h.get("X-Content-Type-Options") == "nosniff", path
    if not path.startswith(STATIC):
        assert h.get("Cache-Control") == "no-store", (path, h.get("Cache-Control"))


def test_every_answer_carries_the_security_headers(env: dict[str, Any]) -> None:
    url = env["url"]
    anon = requests.Session()
    seen = 0
    for method, path in (("GET", "/login"), ("GET", "/logout"), ("GET", "/health"), ("GET", "/"),
                         ("GET", "/room/room-1"), ("GET", "/api/v1/rooms"), ("GET", "/assets/live.js"),
                         ("POST", "/_dash-update-component"), ("POST", "/login")):
        r = anon.request(method, url + path, allow_redirects=False, timeout=10)
        check_headers(path, r)
        seen += 1
    nurse = signed_in(env, "nina")
    nurse.headers["X-VW-Request"] = "1"
    for method, path, body in (
            ("GET", "/", None), ("GET", "/room/room-1", None), ("GET", "/review", None), ("GET", "/account", None),
            ("GET", "/api/v1/rooms", None), ("GET", "/api/v1/me", None), ("GET", "/api/v1/alerts?since=0", None),
            ("GET", "/api/v1/sessions/nope", None), ("GET", "/api/v1/nothing-here", None),
            ("GET", "/_dash-layout", None), ("GET", "/_dash-dependencies", None), ("GET", "/assets/live.js", None),
            ("GET", "/assets/style.css", None),
            ("POST", "/_dash-update-component", {"output": "..app-page.children...app-nav.children..", "outputs": [
                {"id": "app-page", "property": "children"}, {"id": "app-nav", "property": "children"}],
                "inputs": [{"id": "app-url", "property": "pathname", "value": "/"}],
                "changedPropIds": ["app-url.pathname"]}),
            ("POST", "/api/v1/alerts/nope/acknowledge", {})):
        r = nurse.request(method, url + path, json=body, allow_redirects=False, timeout=20)
        assert r.status_code < 500, (path, r.status_code)
        check_headers(path, r)
        seen += 1
    big = nurse.post(url + "/_dash-update-component", data=b"x" * (2 * 1024 * 1024), timeout=20)
    assert big.status_code == 413
    check_headers("/_dash-update-component", big)
    assert seen > 20


def _vm(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0])
    return out


@pytest.fixture(scope="module")
def dash_proc(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`vitalwatch dashboard` as its own process (so its memory is its own)."""
    tmp = tmp_path_factory.mktemp("dashproc")
    clinic = "t-" + uuid.uuid4().hex[:10]
    keys = Keys(clinic)
    port = free_port()
    conf = write_config(tmp / "vw.toml", config_mapping(
        {"id": clinic}, redis_url=redis_url, data_dir=tmp / "data", archive_url=f"sqlite:///{tmp / 'archive.db'}"))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    users.create_user(client, keys, "nina", "nurse", PW["nina"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALWATCH_")}
    log = open(tmp / "dashboard.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "dashboard", "-c", str(conf), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    beats = Beats(client, keys).start()
    try:
        wait_for(lambda: _answers(url), 60, "dashboard process")
        yield {"proc": proc, "url": url, "client": client, "keys": keys, "log": tmp / "dashboard.log"}
    finally:
        beats.stop()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        log.close()
        delete_clinic_keys(client, keys)
        client.close()


def _answers(url: str) -> bool:
    try:
        requests.get(url + "/health", timeout=2)
        return True
    except requests.RequestException:
        return False


def _send_body(port: int, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send a request head and then body chunks until the server stops reading; its answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(head)
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        s.settimeout(10)
        try:
            return s.recv(4096)
        except (ConnectionResetError, TimeoutError):
            return b""
    finally:
        s.close()


def test_a_50_mb_sign_in_body_is_refused_without_memory_growth(dash_proc: dict[str, Any]) -> None:
    pid, url = dash_proc["proc"].pid, dash_proc["url"]
    port = int(url.rsplit(":", 1)[1])
    http_login(url, "nina", PW["nina"])  # warm up: routes, Redis pool, the first argon2 check
    before = _vm(pid)
    size, block = 50 * 1024 * 1024, b"a" * 65536
    sized = _send_body(port, (f"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                              f"application/x-www-form-urlencoded\r\nContent-Length: {size}\r\n\r\n").encode(),
                       (block for _ in range(size // len(block))))
    chunked = _send_body(port, b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                               b"application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n",
                         (b"%x\r\n%s\r\n" % (len(block), block) for _ in range(size // len(block))))
    after = _vm(pid)
    assert sized.startswith(b"HTTP/1.1 413"), sized[:200]
    assert chunked.startswith(b"HTTP/1.1 413"), chunked[:200]
    grew_kb = after["VmHWM"] - before["VmHWM"]
    print(f"\n50 MB sign-in body: dashboard peak RSS {before['VmHWM'] / 1024:.1f} → {after['VmHWM'] / 1024:.1f} MiB "
          f"(+{grew_kb / 1024:.1f} MiB), RSS now {after['VmRSS'] / 1024:.1f} MiB")
    assert grew_kb < 16 * 1024  # two 50 MB bodies, and not even one of them was held
    assert http_login(url, "nina", PW["nina"])[0].status_code == 303  # still serving


def test_sign_in_flood_leaves_the_nurse_api_responsive(dash_proc: dict[str, Any]) -> None:
    url = dash_proc["url"]
    nurse = http_login(url, "nina", PW["nina"])[1]

    def nurse_median(stop: threading.Event, out: list[float], codes: list[int]) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            codes.append(nurse.get(url + "/api/v1/rooms", timeout=30).status_code)
            out.append(time.perf_counter() - t0)
            stop.wait(0.05)

    def measure(seconds: float) -> list[float]:
        stop, lat, codes = threading.Event(), [], []
        t = threading.Thread(target=nurse_median, args=(stop, lat, codes))
        t.start()
        time.sleep(seconds)
        stop.set()
        t.join(30)
        assert codes and set(codes) == {200}
        return lat

    quiet = measure(3)

    def one(i: int) -> int:  # every attempt from its own address with its own name: the worst case
        s = requests.Session()
        s.headers["X-Forwarded-For"] = f"10.77.{i // 250}.{i % 250}"
        return http_login(url, f"flood-{i}", "wrong-password", session=s)[0].status_code

    stop, lat, codes = threading.Event(), [], []
    watcher = threading.Thread(target=nurse_median, args=(stop, lat, codes))
    watcher.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(50) as pool:
        flood = list(pool.map(one, range(200)))
    flood_s = time.perf_counter() - t0
    stop.set()
    watcher.join(30)
    assert codes and set(codes) == {200}  # every nurse request answered, throughout
    assert set(flood) <= {401, 429, 503}
    print(f"\nsign-in flood: 200 attempts in {flood_s:.1f} s → "
          f"{flood.count(401)} checked (401), {flood.count(503)} refused busy (503), {flood.count(429)} throttled; "
          f"nurse GET /api/v1/rooms median {statistics.median(quiet) * 1000:.0f} ms quiet, "
          f"{statistics.median(lat) * 1000:.0f} ms during the flood (p95 "
          f"{sorted(lat)[int(len(lat) * 0.95) - 1] * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms, n={len(lat)})")


def ws_connect(env: dict[str, Any], *, cookie: str = "", token: str = "", origin: str | None = "self"
               ) -> websocket.WebSocket:
    hdr = []
    if cookie:
        hdr.append(f"Cookie: vw_session={cookie}")
    if token:
        hdr.append(f"Authorization: Bearer {token}")
    opts: dict[str, Any] = {"suppress_origin": True} if origin is None else {
        "origin": env["url"] if origin == "self" else origin}
    ws = websocket.create_connection(env["url"].replace("http", "ws") + "/ws/live", timeout=15, header=hdr, **opts)
    assert json.loads(ws.recv())["t"] == "hello"
    return ws


def closed_within(ws: websocket.WebSocket, seconds: float) -> float:
    """Read until the server closes the socket; how long that took (fails after `seconds`)."""
    t0 = time.monotonic()
    ws.settimeout(1)
    while time.monotonic() - t0 < seconds:
        try:
            op, _data = ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return time.monotonic() - t0
        if op == websocket.ABNF.OPCODE_CLOSE:
            return time.monotonic() - t0
    raise AssertionError(f"socket still open after {seconds} s")


def test_websocket_origin_is_checked(env: dict[str, Any]) -> None:
    cookie = signed_in(env, "nina").cookies["vw_session"]
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        ws_connect(env, cookie=cookie, origin="https://evil.example")
    assert e.value.status_code == 403
    ws_connect(env, cookie=cookie).close()  # its own page
    ws_connect(env, cookie=cookie, origin=None).close()  # no Origin: not a browser (a pager script)


@pytest.mark.parametrize("change", ["disable", "role", "password", "revoke"])
def test_account_changes_close_live_sockets_within_seconds(env: dict[str, Any], change: str) -> None:
    c, k = env["client"], env["keys"]
    name = f"sock-{change}"
    users.create_user(c, k, name, "nurse", "sock-pass-1")
    cookie = http_login(env["url"], name, "sock-pass-1")[1].cookies["vw_session"]
    token = tokens.issue_token(c, k, name, scopes="read")
    by_cookie, by_token = ws_connect(env, cookie=cookie), ws_connect(env, token=token, origin=None)
    t0 = time.monotonic()
    if change == "disable":
        users.set_disabled(c, k, name, True, actor="adam")
    elif change == "role":
        users.set_role(c, k, name, "director", actor="adam")
    elif change == "password":
        users.set_password(c, k, name, "sock-pass-2", actor="adam")
    else:
        tokens.revoke_tokens(c, k, name, actor="adam")
    cookie_s = closed_within(by_cookie, 10) if change != "revoke" else None
    token_s = closed_within(by_token, 10) if change != "password" else None
    print(f"\n{change}: cookie socket closed after {cookie_s}, token socket after {token_s} "
          f"(s since the change {time.monotonic() - t0:.1f})")
    if change == "password":  # a password change does not void API tokens (separate credentials)
        by_token.ping()
        by_token.close()
    if change == "revoke":
        by_cookie.ping()
        by_cookie.close()


def test_websocket_message_rate_presence_and_socket_limits(env: dict[str, Any]) -> None:
    c, k, dcfg = env["client"], env["keys"], env["cfg"].dashboard
    cookie = signed_in(env, "nina").cookies["vw_session"]
    ws = ws_connect(env, cookie=cookie)
    for i in range(40):  # 40 made-up screen ids from one sign-in, slowly enough for the rate limit
        ws.send(json.dumps({"t": "screen", "id": f"screen-{i}", "sound_on": True}))
        time.sleep(1.0 / dcfg.ws_messages_per_s)
    wait_for(lambda: len(c.hkeys(k.screens)) >= dcfg.ws_per_session, 10, "screens written")
    # barrier: one socket's messages are handled in order, so an "activity" sent last is handled
    # after every screen message; it restarts the sign-in's idle clock, shortened here to see it
    session_key = k.web_session(session_digest(cookie))
    c.expire(session_key, 100)
    ws.send(json.dumps({"t": "activity"}))
    wait_for(lambda: c.ttl(session_key) > 100, 10, "the activity sent after the screens handled")
    assert len(c.hkeys(k.screens)) == dcfg.ws_per_session  # not 40
    # a burst beyond the message rate closes the socket
    for _ in range(int(dcfg.ws_messages_per_s * 8)):
        try:
            ws.send(json.dumps({"t": "activity"}))
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            break
    closed_within(ws, 10)
    # more open sockets than the limit for one sign-in: the extra one is refused
    cookie2 = signed_in(env, "nina").cookies["vw_session"]
    socks = [ws_connect(env, cookie=cookie2) for _ in range(dcfg.ws_per_session)]
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws_connect(env, cookie=cookie2)
    assert refused.value.status_code == 403
    for s in socks:
        s.close()


def test_activity_cannot_revive_a_disabled_sign_in(env: dict[str, Any]) -> None:
    c, k = env["client"], env["keys"]
    users.create_user(c, k, "ivy", "nurse", "ivy-pass-12")
    s = http_login(env["url"], "ivy", "ivy-pass-12")[1]
    ws = ws_connect(env, cookie=s.cookies["vw_session"])
    users.set_disabled(c, k, "ivy", True, actor="adam")
    users.set_disabled(c, k, "ivy", False, actor="adam")  # enabled again: the old sign-in stays void
    try:
        ws.send(json.dumps({"t": "activity"}))
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        pass
    closed_within(ws, 10)
    assert s.get(env["url"] + "/api/v1/me", timeout=10).status_code == 401
