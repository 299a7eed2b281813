"""A real Prometheus against the real roles (docs/operations.md, "Metrics").

`promtool check metrics` lints every role's /metrics; a real `prometheus` (Debian's package,
installed by scripts/install-system-deps.sh) scrapes ingest, alerts and the dashboard with the
job names and metric paths of deploy/prometheus/prometheus.yml, and every PromQL expression of
the Grafana dashboard (deploy/grafana/dashboards/vitalwatch.json) is evaluated through its HTTP
API: each must parse, and the core panels (readings stored, storage state, devices online) must
show data. A scrape from a non-loopback address goes through with the `authorization:
credentials_file:` of the deploy file holding a `metrics` token, and is refused without it.
Grafana itself is not run: only its dashboard's queries are.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.accounts import tokens
from monitor.model.clock import now_ms
from monitor.store.embedded import free_port
from tests.dashboard_support import served_api
from tests.mqtt_support import T_MON1, T_MON2, mosquitto_pub
from tests.servers import kill_quietly
from tests.test_metrics import local_address, login, roles, scrape  # noqa: F401 - `roles` is a fixture
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy/prometheus/prometheus.yml"
BOARD = ROOT / "deploy/grafana/dashboards/vitalwatch.json"
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
ONLY_WHILE = {"vitalwatch_storage_cause": "writes fail"}  # exported only under a condition


def binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"`{name}` not found: run scripts/install-system-deps.sh (Debian package `prometheus`)"
    return found


def board_exprs() -> list[str]:
    """Every PromQL expression of the Grafana dashboard, its Grafana macros replaced."""
    out: list[str] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "expr" and isinstance(v, str):
                    out.append(v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for x in o:
                walk(x)

    walk(json.loads(BOARD.read_text()))
    exprs = []
    for e in out:
        for macro, val in GRAFANA_MACROS.items():
            e = e.replace(macro, val)
        assert "$" not in e, f"a Grafana variable this test cannot resolve: {e}"
        exprs.append(e)
    return exprs


def doc_queries() -> list[str]:
    """The PromQL of docs/operations.md's "Useful queries" paragraph."""
    text = (ROOT / "docs/operations.md").read_text()
    para = text[text.index("Useful queries:"):].split("\n\n", 1)[0]
    return [q for q in re.findall(r"`([^`]+)`", para) if "vitalwatch_" in q]


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:  # a PromQL error comes back as 400/422 with a JSON body
        return json.loads(e.read())


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=30)


def scrape_config(ports: dict[str, int], extra: list[dict[str, Any]]) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with this test's targets: same jobs and metric paths,
    on loopback (no token), scraped every second; plus `extra` jobs."""
    cfg = yaml.safe_load(DEPLOY.read_text())
    cfg["global"] = {**cfg["global"], "scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    for job in cfg["scrape_configs"]:
        job.pop("authorization", None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    cfg["scrape_configs"] += extra
    return cfg


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """start(config) → the base URL of a real `prometheus` on a free loopback port (starting:
    see `ready`)."""
    procs: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "prometheus.log").open("w")  # its own log, for a failing run

    def start(config: dict[str, Any]) -> str:
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        checked = promtool("check", "config", str(path))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        port = free_port()
        procs.append(subprocess.Popen(
            [binary("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=log))
        return f"http://127.0.0.1:{port}"

    yield start
    for p in procs:
        kill_quietly(p)
    log.close()


def ready(base: str) -> None:
    """Wait until Prometheus serves its API (before, it answers 503 in plain text)."""
    wait_for(lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=5).status == 200, timeout_s=20,
             what="prometheus ready", ignoring=(OSError,))


def test_deploy_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """The deploy file as shipped, its token path pointed at a temporary file (promtool
    checks the file exists; in compose it is mounted)."""
    token = tmp_path / "metrics-token"
    token.write_text("vwt_placeholder\n")
    text = DEPLOY.read_text()
    assert text.count("/etc/prometheus/metrics-token") == 3  # every job scrapes with the token
    copy = tmp_path / "prometheus.yml"
    copy.write_text(text.replace("/etc/prometheus/metrics-token", str(token)))
    checked = promtool("check", "config", str(copy))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_real_prometheus_scrapes_every_role_and_runs_every_dashboard_query(
        roles: dict[str, Any], prometheus: Any, redis_url: str, tmp_path: Path) -> None:  # noqa: F811
    client, keys = roles["client"], roles["keys"]
    addr = local_address()
    # the dashboard on every interface, so that a non-loopback address reaches it too
    with served_api(roles["cfg"], redis_url, {}, beats=True, host="0.0.0.0" if addr else "127.0.0.1") as env:
        ports = {**roles["ports"], "dashboard": env["served"].port}
        urls = {**roles["url"], "dashboard": f"http://127.0.0.1:{ports['dashboard']}/metrics"}

        # 1. a real Prometheus: the deploy jobs on loopback; the token path from another address
        extra: list[dict[str, Any]] = []
        if addr:
            token_file = tmp_path / "metrics-token"
            token_file.write_text(tokens.issue_token(client, keys, "prom", scopes="metrics") + "\n")
            remote = {"static_configs": [{"targets": [f"{addr}:{ports['dashboard']}"]}]}
            extra = [{"job_name": "dashboard-token", "authorization": {"credentials_file": str(token_file)}, **remote},
                     {"job_name": "dashboard-no-token", **remote}]
        base = prometheus(scrape_config(ports, extra))  # starts while the roles are linted

        # 2. promtool lints each role's exposition
        for role, url in urls.items():
            text: str = wait_for(lambda u=url: (r := scrape(u))[0] == 200 and r[1],  # type: ignore[misc,assignment]
                                 what=f"{role} /metrics", ignoring=(OSError,))
            with urllib.request.urlopen(url, timeout=5) as resp:  # Prometheus 3 needs a valid one
                ctype = resp.headers.get_content_type(), resp.headers["Content-Type"]
                assert ctype[0] in ("text/plain", "application/openmetrics-text"), (role, ctype)
            linted = promtool("check", "metrics", stdin=text)
            assert linted.returncode == 0 and not linted.stdout.strip(), (role, linted.stdout, linted.stderr)

        ready(base)

        want_up = {"ingest", "alerts", "dashboard"} | ({"dashboard-token"} if addr else set())
        health: dict[str, tuple[str, str]] = {}

        def targets_up() -> bool:
            got = api(base, "targets")["data"]["activeTargets"]
            health.clear()
            health.update({t["labels"]["job"]: (t["health"], t["lastError"]) for t in got})
            return all(health.get(j, ("",))[0] == "up" for j in want_up) and (
                not addr or health.get("dashboard-no-token", ("unknown",))[0] != "unknown")

        try:
            wait_for(targets_up, timeout_s=20, what="every target up", ignoring=(OSError,))
        except AssertionError as timeout:
            raise AssertionError(f"{timeout}; targets: {health}") from None
        if addr:  # the same dashboard from another address without the token file: refused
            assert health["dashboard-no-token"][0] == "down", health
            assert "401" in health["dashboard-no-token"][1], health
        else:
            warnings.warn("bearer-token scrape through Prometheus not checked: this host has no non-loopback "
                          "IPv4 address", stacklevel=1)

        # readings stored (mon-1 online), a payload refused, a sign-in refused: every panel has
        # a series to show (a labelled counter has none until its first event)
        mosquitto_pub(roles["mqtt_port"], T_MON2, "{not json")
        login(f"http://127.0.0.1:{ports['dashboard']}", "prom", "wrong-password-1")

        def query(expr: str) -> Any:
            return api(base, "query", query=expr)

        missing: list[str] = []

        def core_ready() -> bool:
            # a reading each poll: mon-1 stays online (silent after 10 s without one)
            mosquitto_pub(roles["mqtt_port"], T_MON1, json.dumps({"ts": now_ms(), "hr": 72, "spo2": 97}))
            stored = query("sum(rate(vitalwatch_readings_stored_total[1m]))")["data"]["result"]
            online = query('sum(vitalwatch_device_state{state="online"})')["data"]["result"]
            seen = set(api(base, "label/__name__/values")["data"])
            missing[:] = [what for what, ok in (("a stored-readings rate", stored),
                                                ("a device online", online and float(online[0]["value"][1]) >= 1),
                                                ("a refused payload", "vitalwatch_readings_rejected_total" in seen),
                                                ("a refused sign-in", "vitalwatch_login_failures_total" in seen))
                          if not ok]
            return not missing

        try:
            wait_for(core_ready, timeout_s=20, what="two scrapes with mon-1 online, a reject and a refused sign-in",
                     ignoring=(OSError, KeyError), interval_s=0.5)
        except AssertionError as timeout:
            raise AssertionError(f"{timeout}; still missing in Prometheus: {missing}") from None

        # 3. every query of the Grafana dashboard parses and runs
        exprs = board_exprs()
        assert len(exprs) >= 30
        results = {}
        for e in exprs:
            r = query(e)
            assert r["status"] == "success", (e, r.get("errorType"), r.get("error"))
            results[e] = r["data"]["result"]
        core = {"sum(rate(vitalwatch_readings_stored_total[1m]))": None,
                "min(vitalwatch_storage_storing)": 1.0,
                "sum by (state) (vitalwatch_device_state)": None}
        for e, want in core.items():
            assert e in results, f"the dashboard lost its core query {e}"
            assert results[e], f"no data for {e}"
            if want is not None:
                assert float(results[e][0]["value"][1]) == want, (e, results[e])
        states = {s["metric"]["state"]: float(s["value"][1]) for s in results["sum by (state) (vitalwatch_device_state)"]}
        assert states.get("online", 0) >= 1, states

        assert len(doc_queries()) >= 5
        for e in doc_queries():  # the operator's guide's queries too
            r = query(e)
            assert r["status"] == "success", (e, r.get("errorType"), r.get("error"))

        # every metric a query names is one Prometheus has really scraped
        scraped = set(api(base, "label/__name__/values")["data"])
        used = {n for e in exprs for n in re.findall(r"\b(?:vitalwatch|process)_[a-z0-9_]+", e)}
        assert used - scraped <= set(ONLY_WHILE), used - scraped - set(ONLY_WHILE)
