"""Acceptance, on a signed-in screen: Redis refusing writes (OOM, READONLY) for 6 s puts
NOT MONITORING with the cause on the screen and makes /health non-200 with the reason, within
a few seconds; both clear after recovery, with no restart of anything.

A real served dashboard, a real headless Chromium signed in through the form, a redis-server
of our own made to refuse writes. The alert engine's and ingest's heartbeats come from the
test (tests/dashboard_support.py Beats) — its writes are refused by the fault like everyone's.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import requests

from monitor.model.clock import now_ms
from tests.dashboard_support import login, served_dashboard, wait_page
from tests.fault_support import oom, readonly
from tests.servers import RedisProc
from tests.test_dashboard_browser import make_cfg

pytestmark = pytest.mark.browser
HOLD_S = 6.0


def banner(driver) -> str:  # noqa: ANN001
    return driver.execute_script("var b=document.getElementById('vw-banner');"
                                 "return b && b.style.display !== 'none' ? b.textContent : ''")


def health(url: str) -> tuple[int, dict]:
    r = requests.get(f"{url}/health", timeout=10)
    return r.status_code, r.json()


@pytest.mark.parametrize(("fault", "words"), [(oom, "Redis out of memory"), (readonly, "Redis is a read-only replica")])
def test_redis_refusing_writes_shows_not_monitoring_with_its_cause(fault, words: str, tmp_path: Path,  # noqa: ANN001
                                                                   redis_proc: RedisProc) -> None:
    cfg = make_cfg("t-" + uuid.uuid4().hex[:10], redis_proc.url, str(tmp_path))
    with served_dashboard(cfg, redis_proc.url, {"nina": ("nurse", "nurse-pass-1")}) as env:
        d, url = env["driver"], env["url"]
        login(d, url, "nina", "nurse-pass-1")
        wait_page(lambda: banner(d) == "" and health(url)[0] == 200, 15, "monitoring before the fault")
        t0 = time.monotonic()
        with fault(redis_proc):
            wait_page(lambda: banner(d).startswith("NOT MONITORING"), 10, "NOT MONITORING on the screen")
            first_s = time.monotonic() - t0  # the first words may be a dropped connection's
            wait_page(lambda: f"readings are not being stored: {words}" in banner(d), 10, "the cause on the screen")
            on_screen_s = time.monotonic() - t0
            status, body = wait_page(lambda: (h := health(url))[0] != 200 and h, 10, "/health failing")
            health_s = time.monotonic() - t0
            assert status == 503 and any(f"readings are not being stored: {words}" in p for p in body["problems"])
            assert body["writes"]["ok"] is False
            time.sleep(max(0.0, HOLD_S - (time.monotonic() - t0)))  # the fault lasts 6 s
        t1 = time.monotonic()
        wait_page(lambda: banner(d) == "", 15, "the banner clearing after recovery")
        wait_page(lambda: health(url)[0] == 200, 15, "/health 200 after recovery")
        print(f"\n{fault.__name__}: NOT MONITORING on screen {first_s:.1f} s, with the cause {on_screen_s:.1f} s, "
              f"/health 503 {health_s:.1f} s "
              f"after the fault; clear {time.monotonic() - t1:.1f} s after recovery")
        # the same page, never reloaded: still live afterwards
        env["client"].xadd(env["keys"].vitals("room-1"), {"ts": str(now_ms()), "dev": "oxi-1", "spo2": "93"})
        wait_page(lambda: d.execute_script(
            "var e=document.querySelector('[data-vw-part=value][data-vw-room=\"room-1\"][data-vw-metric=\"spo2\"]');"
            "return e && e.textContent.indexOf('93') >= 0"), 10, "a reading on the screen after recovery")
