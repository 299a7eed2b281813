"""Helpers for dashboard tests and the screen-latency benchmark: a served dashboard, a
headless Chromium, heartbeats, injected readings and alerts (CONTRACT/brief schemas)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
import requests
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    JavascriptException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys as KeyPress

from monitor.alarms.model import alert_id
from monitor.alarms.text import condition_text
from monitor.model.clock import now_ms
from monitor.model.keys import Keys
from monitor.store import heartbeat
from tests.servers import delete_clinic_keys
from tests.waiting import wait_for

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                "--autoplay-policy=no-user-gesture-required")


def chromium() -> webdriver.Chrome:
    """Headless Chromium driven by Debian's chromedriver."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService("/usr/bin/chromedriver"), options=opts)


PAGE_FLUX = (JavascriptException, WebDriverException, KeyError, IndexError)
"""What a page being redrawn under a check raises: in a browser wait it means "not yet"."""


def wait_page(fn: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    """`wait_for` for the browser: the page renders on its own schedule and may be redrawn
    under the check, so PAGE_FLUX exceptions count as not yet."""
    return wait_for(fn, timeout_s, what, ignoring=PAGE_FLUX)


def login(driver: webdriver.Chrome, base: str, user: str, password: str, path: str = "/") -> None:
    """Sign in through the form and wait for the page and its live socket."""
    driver.delete_all_cookies()
    driver.get(f"{base}/login?next={path}")
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    wait_page(lambda: driver.execute_script("return !!(window.VW && VW.connected && VW.user)"), 20, "live socket")


def csrf_of(page: str) -> str:
    """The sign-in form's CSRF token (hidden field) in the /login page's HTML."""
    m = re.search(r'name="csrf" value="([^"]*)"', page)
    assert m, "no CSRF field on the sign-in page"
    return m.group(1)


def http_login(base: str, user: str, password: str, next_path: str = "/",
               session: requests.Session | None = None) -> tuple[requests.Response, requests.Session]:
    """Sign in over HTTP as the form does (GET /login for its CSRF token, then POST);
    (the POST's response, the session holding the cookie)."""
    s = session or requests.Session()
    token = csrf_of(s.get(f"{base}/login", timeout=10).text)
    r = s.post(f"{base}/login", data={"username": user, "password": password, "next": next_path, "csrf": token},
               allow_redirects=False, timeout=10)
    return r, s


class Beats:
    """Keeps `alerts` and `ingest` heartbeats fresh (so the screen says it is monitoring)."""

    def __init__(self, client: redis.Redis, keys: Keys, roles: tuple[str, ...] = ("alerts", "ingest")) -> None:
        self.client, self.keys, self.roles = client, keys, roles
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                for role in self.roles:
                    heartbeat.beat(self.client, self.keys, role, "test", now_ms())
            except (redis.RedisError, OSError):
                pass  # the test stopped this Redis, or made it refuse writes, on purpose
            self.stop_event.wait(0.5)

    def start(self) -> Beats:
        """Start beating."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop beating."""
        self.stop_event.set()
        self.thread.join(2)


def inject_alert(client: redis.Redis, keys: Keys, room: str, metric: str = "sbp", priority: str = "high",
                 value: float = 196, limit: float = 180, dev: str = "nibp-1") -> dict[str, Any]:
    """An active alert + its `raised` event, as the alert engine writes them."""
    ts = now_ms()
    aid = alert_id(room, dev, f"{metric}_high", ts)
    rec = {"alert": aid, "room": room, "dev": dev, "metric": metric, "kind": "physiological",
           "priority": priority, "state": "active", "value": value, "limit": limit,
           "message": condition_text(metric, "high" if value > limit else "low", value, limit), "raised_ms": ts,
           "acknowledged_by": None, "acknowledged_ms": None, "paused_until_ms": None, "escalated": False}
    client.hset(keys.active_alerts(room), aid, json.dumps(rec))
    client.xadd(keys.alerts, {"ts": str(ts), "room": room, "alert": aid, "event": "raised",
                              "kind": "physiological", "priority": priority, "metric": metric, "dev": dev,
                              "value": f"{value:g}", "limit": f"{limit:g}", "message": rec["message"], "user": ""})
    return rec


def dom_value(driver: webdriver.Chrome, room: str, metric: str) -> str:
    """Text of a room's value element for a metric (first on the page)."""
    return driver.execute_script(
        "var e=document.querySelector('[data-vw-part=value][data-vw-room=\"'+arguments[0]+'\"][data-vw-metric=\"'"
        "+arguments[1]+'\"]'); return e ? e.textContent : null;", room, metric)


@contextmanager
def served_api(cfg: Any, redis_url: str, accounts: dict[str, tuple[str, str]],
               before_serve: Callable[[redis.Redis, Keys], None] | None = None,
               beats: bool | tuple[str, ...] = False, host: str = "127.0.0.1") -> Iterator[dict[str, Any]]:
    """The dashboard's server for `cfg` with `accounts` (name → (role, password)), in-process
    on `host`;
    yields {cfg, keys, client, url, served}; removes the clinic's keys afterwards.
    `before_serve(client, keys)` seeds Redis first (device status…); `beats` keeps the
    `alerts` and `ingest` heartbeats fresh so the screen says it is monitoring (or those of the
    roles it names)."""
    from dashboard.app import Served
    from monitor.accounts import users

    keys = Keys(cfg.clinic.id)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for name, (role, password) in accounts.items():
        users.create_user(client, keys, name, role, password)
    if before_serve is not None:
        before_serve(client, keys)
    roles = ("alerts", "ingest") if beats is True else tuple(beats or ())
    beating = Beats(client, keys, roles).start() if roles else None
    served = Served(cfg, redis_url, host=host).start()
    try:
        yield {"cfg": cfg, "keys": keys, "client": client, "url": served.url, "served": served}
    finally:
        served.stop()
        if beating is not None:
            beating.stop()
        delete_clinic_keys(client, keys)
        client.close()


@contextmanager
def served_dashboard(cfg: Any, redis_url: str, accounts: dict[str, tuple[str, str]],
                     before_serve: Callable[[redis.Redis, Keys], None] | None = None,
                     beat_roles: tuple[str, ...] = ("alerts", "ingest")) -> Iterator[dict[str, Any]]:
    """`served_api` with heartbeats (of `beat_roles`) and one headless Chromium: env["driver"]."""
    with served_api(cfg, redis_url, accounts, before_serve, beats=beat_roles) as env:
        env["driver"] = driver = chromium()
        try:
            yield env
        finally:
            driver.quit()


# Records the body of every Dash callback request the page sends (to replay it as others).
CAPTURE_JS = """
if (!window.__vwBodies) {
  window.__vwBodies = [];
  const orig = window.fetch;
  window.fetch = function(url, opts) {
    if (String(url).indexOf('_dash-update-component') >= 0 && opts && opts.body) window.__vwBodies.push(opts.body);
    return orig.apply(this, arguments);
  };
}
"""


def captured_bodies(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The Dash callback request bodies recorded since `CAPTURE_JS` ran on this page."""
    return [json.loads(b) for b in driver.execute_script("return window.__vwBodies")]


def signed_in(base: str, user: str, password: str) -> requests.Session:
    """An HTTP session signed in through the form (`http_login`), to call routes as that user."""
    r, s = http_login(base, user, password)
    assert r.status_code == 303, f"{user} could not sign in: HTTP {r.status_code}"
    return s


def fill(d: Any, element_id: str, text: str) -> None:
    """Type into an input like a person (select all, delete, type): WebElement.clear()
    bypasses React's onChange, so Dash would never see the change."""
    el = d.find_element(By.ID, element_id)
    el.send_keys(KeyPress.CONTROL, "a")
    el.send_keys(KeyPress.BACKSPACE)
    if text:
        el.send_keys(text)
    wait_page(lambda: el.get_attribute("value") == text, 5, f"#{element_id} = {text!r}")


def click_css(d: Any, selector: str) -> None:
    """A real click on the element matching `selector`, scrolled to mid-screen, retried while
    the page is still moving (trend drawn, banner appearing)."""
    def attempt() -> bool:
        el = d.find_element(By.CSS_SELECTOR, selector)
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
        try:
            el.click()
        except ElementClickInterceptedException:
            return False
        return True

    wait_page(attempt, 10, f"clickable {selector}")


def click(d: Any, element_id: str) -> None:
    """`click_css` by element id."""
    click_css(d, f"#{element_id}")
