"""The Content-Security-Policy in a real headless Chromium: every page works with no CSP
violation (Dash's own inline scripts pass by their hashes), an injected inline script does
not run, and signing out is a POST from the nav bar."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.dashboard_support import click_css, login, served_dashboard, wait_page
from tests.test_dashboard_browser import make_cfg

pytestmark = pytest.mark.browser
PW = {"nina": "nurse-pass-1", "adam": "admin-pass-1"}


@pytest.fixture(scope="module")
def env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cfg = make_cfg("t-" + uuid.uuid4().hex[:10], redis_url, str(tmp_path_factory.mktemp("csp")))
    with served_dashboard(cfg, redis_url, {"nina": ("nurse", PW["nina"]), "adam": ("admin", PW["adam"])}) as e:
        yield e


def csp_violations(d: Any) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if "Content Security Policy" in e["message"]]


def test_pages_run_under_the_csp_and_inline_scripts_do_not(env: dict[str, Any]) -> None:
    d, url = env["driver"], env["url"]
    d.get_log("browser")  # start clean
    login(d, url, "adam", PW["adam"])
    for path, ready in (("/", "#ov-tile-room-1"), ("/room/room-2", "#room-trend .js-plotly-plot .main-svg"),
                        ("/admin/users", "#users-table"), ("/account", "#acct-form"), ("/review", "#review-list"),
                        ("/audit", "#audit-table")):
        d.get(url + path)
        wait_page(lambda ready=ready: d.find_elements(By.CSS_SELECTOR, ready), 20, f"{path} rendered")
        wait_page(lambda: d.execute_script("return !!(window.VW && VW.connected)"), 20, f"{path} live socket")
    assert csp_violations(d) == []
    # a script someone managed to put into the page as markup is not run
    ran = d.execute_script("var s = document.createElement('script'); s.textContent = 'window.__vwInjected = 1';"
                           "document.body.appendChild(s); return window.__vwInjected === 1;")
    assert ran is False
    assert wait_page(lambda: csp_violations(d), 5, "the browser reporting the blocked script")


def test_sign_out_is_a_post_from_the_nav_bar(env: dict[str, Any]) -> None:
    d, url, c, k = env["driver"], env["url"], env["client"], env["keys"]
    login(d, url, "nina", PW["nina"])
    before = len(list(c.scan_iter(match=k.prefix.replace("{", "\\{").replace("}", "\\}") + "web-session:*")))
    click_css(d, "#app-logout")
    wait_page(lambda: "/login" in d.current_url, 10, "the sign-in page")
    after = len(list(c.scan_iter(match=k.prefix.replace("{", "\\{").replace("}", "\\}") + "web-session:*")))
    assert after == before - 1
    d.get(url + "/")
    assert "/login" in d.current_url
