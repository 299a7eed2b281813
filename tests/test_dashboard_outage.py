"""NOT MONITORING in the browser: Redis stopped, heartbeats stale, the server gone."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from selenium.webdriver.common.by import By

from dashboard.app import Served
from monitor.accounts import users
from monitor.model.keys import Keys
from tests.dashboard_support import Beats, chromium, login, wait_page
from tests.servers import RedisProc
from tests.test_dashboard_browser import make_cfg

pytestmark = pytest.mark.browser


def banner(driver) -> str:  # noqa: ANN001
    return driver.execute_script("var b=document.getElementById('vw-banner');"
                                 "return b && b.style.display !== 'none' ? b.textContent : ''")


def test_not_monitoring_when_redis_stops_engine_goes_silent_or_server_goes(redis_proc: RedisProc,
                                                                         tmp_path: Path) -> None:
    clinic = "t-" + uuid.uuid4().hex[:10]
    keys = Keys(clinic)
    client = redis.Redis.from_url(redis_proc.url, decode_responses=True)
    cfg = make_cfg(clinic, redis_proc.url, str(tmp_path))
    users.create_user(client, keys, "nina", "nurse", "nurse-pass-1")
    beats = Beats(client, keys).start()
    served = Served(cfg, redis_proc.url).start()
    driver = chromium()
    try:
        login(driver, served.url, "nina", "nurse-pass-1")
        wait_page(lambda: banner(driver) == "", 10, "monitoring (no banner)")
        # 1. the alert engine and ingest stop heartbeating
        beats.stop()
        text = wait_page(lambda: banner(driver), 30, "banner for stale heartbeats")
        assert text.startswith("NOT MONITORING") and "Alert engine" in text
        beats = Beats(client, keys).start()
        wait_page(lambda: banner(driver) == "", 10, "monitoring again")
        # 2. Redis stops
        redis_proc.kill()
        text = wait_page(lambda: banner(driver), 10, "banner for Redis down")
        assert "NOT MONITORING" in text and "Redis unreachable" in text
        assert driver.find_element(By.ID, "vw-banner").value_of_css_property("position") == "sticky"
        redis_proc.start()
        wait_page(lambda: banner(driver) == "", 20, "monitoring after Redis returns")
        # 3. the dashboard server goes away: the browser itself notices
        served.stop()
        text = wait_page(lambda: banner(driver), 10, "banner for a lost connection")
        assert "connection to the server lost" in text
    finally:
        driver.quit()
        served.stop()
        beats.stop()
        client.close()
