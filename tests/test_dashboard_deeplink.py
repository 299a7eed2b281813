"""A deep link as the first page after the dashboard starts still gets the app's assets.

Found by the whole-system test (tests/test_e2e_director.py): Dash runs its first-request
setup (which collects assets/style.css and assets/live.js) only on its own routes, so a
director opening /review/<id> — or a station screen reloading /room/<id> — right after a
dashboard (re)start got a page without styles and without the live socket (no alarm sound,
no NOT MONITORING banner) until some later page load.
"""

from __future__ import annotations

from dashboard.app import Served
from monitor.accounts import users
from tests.dashboard_support import http_login


def test_first_page_after_start_is_a_deep_link_and_has_the_assets(make_config, rclient, keys, redis_url):
    cfg = make_config()
    users.create_user(rclient, keys, "dr-deep", "director", "director-pass-1")
    served = Served(cfg, redis_url).start()
    try:
        r, s = http_login(served.url, "dr-deep", "director-pass-1", "/review/nope")
        assert r.status_code == 303
        for path in ("/review/nope", "/review", "/room/room-1"):
            page = s.get(served.url + path).text
            assert "/assets/style.css" in page and "/assets/live.js" in page, path
    finally:
        served.stop()
