"""No secret in a log line, a page or an error message: the roles run against a Redis that
needs a password and an archive URL with a password (PostgreSQL, unreachable), and every
output they produce is searched for both passwords. Plus the redaction rules themselves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
import requests

from monitor.accounts import users
from monitor.model.keys import Keys
from monitor.model.redact import redact_text, redact_url
from monitor.store.embedded import free_port
from tests.configs import config_mapping
from tests.configs import write_config as write_config_file
from tests.dashboard_support import http_login
from tests.servers import RedisProc
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
REDIS_PW = "RedisPw-" + uuid.uuid4().hex[:12]
PG_PW = "PgPw-" + uuid.uuid4().hex[:12]


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://user:pa:ss@h/0", "redis://user:***@h/0"),
    ("redis://s3cret@h", "redis://***@h"),
    ("rediss://h:1?ssl_keyfile=/k&password=abc", "rediss://h:1?ssl_keyfile=/k&password=***"),
    ("postgresql://vw:pgpw@db/x", "postgresql://vw:***@db/x"),
    ("redis+sentinel://u:pw@a:1,b:2/m", "redis+sentinel://u:***@a:1,b:2/m"),
    ("unix:///tmp/x.sock", "unix:///tmp/x.sock"),
    ("mqtt://h:1883", "mqtt://h:1883"),
    ("embedded", "embedded"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_finds_urls_inside_messages() -> None:
    text = "connect to postgresql://vw:pgpw@db:5432/x failed; redis://:rpw@h:1/0 too; https://x/?token=abc&a=1"
    out = redact_text(text)
    assert "pgpw" not in out and "rpw" not in out and "abc" not in out
    assert "postgresql://vw:***@db:5432/x" in out and "a=1" in out


@pytest.fixture
def locked_redis(tmp_path: Path):
    proc = RedisProc(tmp_path / "redis", password=REDIS_PW).start()
    yield proc
    proc.kill()


def write_config(tmp: Path, clinic: str) -> Path:
    return write_config_file(tmp / "vw.toml", config_mapping({"id": clinic}, data_dir=tmp / "data",
                                                          logging={"level": "debug"}))


def answers(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).status_code in (200, 503)
    except requests.RequestException:
        return False


def page_via_callback(s: requests.Session, url: str, path: str) -> str:
    """What the browser gets for `path`: the router callback's answer (the page's content)."""
    body = {"output": "..app-page.children...app-nav.children..",
            "outputs": [{"id": "app-page", "property": "children"}, {"id": "app-nav", "property": "children"}],
            "inputs": [{"id": "app-url", "property": "pathname", "value": path}],
            "changedPropIds": ["app-url.pathname"]}
    r = s.post(url + "/_dash-update-component", json=body, timeout=30)
    return json.dumps(r.json(), ensure_ascii=False)  # Dash escapes "/" as \u002f


def test_no_password_in_any_log_page_or_error(locked_redis: RedisProc, tmp_path: Path) -> None:
    clinic = "t-" + uuid.uuid4().hex[:10]
    keys = Keys(clinic)
    dead_pg = f"postgresql://vw:{PG_PW}@127.0.0.1:{free_port()}/vitalwatch"
    conf = write_config(tmp_path, clinic)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALWATCH_")}
    env.update(VITALWATCH_REDIS_URL=locked_redis.url, VITALWATCH_ARCHIVE_URL=dead_pg,
               VITALWATCH_MQTT_URL=f"mqtt://127.0.0.1:{free_port()}")
    client = redis.Redis.from_url(locked_redis.url, decode_responses=True)
    users.create_user(client, keys, "dora", "director", "director-pass-1")
    users.create_user(client, keys, "adam", "admin", "admin-pass-12")
    seen: dict[str, str] = {}

    def cli(label: str, *args: str, env_over: dict[str, str] | None = None) -> None:
        out = subprocess.run([sys.executable, "-m", "monitor", *args, "-c", str(conf)], cwd=ROOT,
                             env={**env, **(env_over or {})}, capture_output=True, text=True, timeout=120)
        seen[label] = out.stdout + out.stderr

    cli("check-config", "check-config")
    cli("export", "export", "--session", "s-1", "--format", "csv", "-o", str(tmp_path / "x.csv"))
    cli("session list", "session", "list")
    cli("user list, wrong Redis password", "user", "list",
        env_over={"VITALWATCH_REDIS_URL": locked_redis.url.replace(REDIS_PW, REDIS_PW + "x")})
    cli("user list, Redis down", "user", "list",
        env_over={"VITALWATCH_REDIS_URL": f"redis://:{REDIS_PW}@127.0.0.1:{free_port()}/0"})
    cli("archive backup", "archive", "backup", "-o", str(tmp_path / "b.db"))
    # each of these names the URL it could not use (redacted), so the check below means something
    assert "postgresql://vw:***@" in seen["check-config"] and "redis://:***@" in seen["check-config"]
    assert "postgresql://vw:***@" in seen["export"]
    assert "redis://:***@" in seen["user list, Redis down"]

    port = free_port()
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as fh:
        dash = subprocess.Popen([sys.executable, "-m", "monitor", "dashboard", "-c", str(conf), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    alerts_log = tmp_path / "alerts.log"
    with open(alerts_log, "wb") as fh:
        alerts = subprocess.Popen([sys.executable, "-m", "monitor", "alerts", "-c", str(conf)], cwd=ROOT, env=env,
                                  stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url), 60, "dashboard")
        seen["/health"] = requests.get(url + "/health", timeout=10).text
        for name, pw, paths in (("dora", "director-pass-1", ("/review", "/review/s-1")),
                                ("adam", "admin-pass-12", ("/audit", "/admin/users"))):
            r, s = http_login(url, name, pw)
            assert r.status_code == 303
            for path in paths:
                seen[path + " (page)"] = s.get(url + path, timeout=30).text
                seen[path] = page_via_callback(s, url, path)
        assert "ARCHIVE UNAVAILABLE" in seen["/review"] and "postgresql://vw:***@" in seen["/review"]
        wait_for(lambda: "alert worker" in alerts_log.read_text(), 30, "the alert worker's start")
    finally:
        for p in (dash, alerts):
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(30)
        client.close()
    seen["dashboard log"] = log.read_text()
    seen["alerts log"] = alerts_log.read_text()
    for where, text in seen.items():
        assert REDIS_PW not in text, f"Redis password in {where}"
        assert PG_PW not in text, f"PostgreSQL password in {where}"
    assert "dashboard on http" in seen["dashboard log"]  # the start line with its (redacted) URL
