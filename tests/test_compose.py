"""docker-compose.yml cannot run here (no Docker engine): check what can be checked —
it parses, names real services, each role's command is a real `vitalwatch` subcommand,
the config and files it mounts exist, and the config validates."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from monitor.app.cli import build_parser, main
from monitor.model.config import load_config
from monitor.model.mqtt_acl import acl_users, mosquitto_acl

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_and_commands() -> None:
    services = _compose()["services"]
    assert {"redis", "mosquitto", "ingest", "alerts", "dashboard", "proxy", "simulate"} <= set(services)
    parser = build_parser()
    for role in ("ingest", "alerts", "dashboard", "simulate"):
        svc = services[role]
        assert svc["build"] == "." and Path(ROOT / "Dockerfile").exists()
        args = parser.parse_args([*svc["command"], "-c", "config/compose.toml"])  # a real subcommand
        assert args.command == svc["command"][0]
        env = svc["environment"]
        assert env["VITALWATCH_CONFIG"] == "/app/config/compose.toml"
        assert env["VITALWATCH_REDIS_URL"].startswith("redis://:")  # password required
    assert services["simulate"]["profiles"] == ["simulate"]


def test_redis_is_durable_and_password_protected() -> None:
    cmd = _compose()["services"]["redis"]["command"]
    for word in ("--appendonly yes", "--appendfsync always", "--requirepass"):
        assert word in cmd


def test_mosquitto_files_exist_tls_listener_and_acl_per_device() -> None:
    svc = _compose()["services"]["mosquitto"]
    for vol in svc["volumes"]:
        src = vol.split(":")[0]
        if src.startswith("./"):
            assert (ROOT / src).exists(), src
    assert svc["ports"] == ["8883:8883"]  # only TLS is published; 1883 stays inside
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "acl_file" in conf and "password_file" in conf
    tls = conf[conf.index("listener 8883"):]
    assert "certfile /mosquitto/certs/" in tls and "keyfile /mosquitto/certs/" in tls
    acl = (ROOT / "deploy/mosquitto/acl").read_text()
    # the committed ACL is what `vitalwatch mqtt-acl` writes for config/compose.toml
    cfg = load_config(str(ROOT / "config/compose.toml"), env={})
    assert acl == mosquitto_acl(acl_users(cfg))
    for line in acl.splitlines():
        if line.startswith("topic write") and "alerts" not in line:
            assert "+" not in line and "#" not in line and "%" not in line, line  # no wildcard room level
    assert "pattern" not in acl and "vitalwatch-simulate" not in acl  # simulator only with --simulate
    assert "user vitalwatch-simulate" in mosquitto_acl(acl_users(cfg, simulate=True))


def test_mqtt_acl_command_writes_the_same(tmp_path: Path) -> None:
    out = tmp_path / "acl"
    assert main(["mqtt-acl", "-c", str(ROOT / "config/compose.toml"), "-o", str(out)]) == 0
    assert out.read_text() == (ROOT / "deploy/mosquitto/acl").read_text()


def test_nothing_starts_before_the_secrets_check() -> None:
    services = _compose()["services"]
    pre = services["preflight"]
    assert pre["entrypoint"][-1] == "/deploy/check-secrets.sh"
    assert set(pre["command"]) == {"REDIS_PASSWORD", "MQTT_INGEST_PASSWORD", "MQTT_ALERTS_PASSWORD"}
    for name in ("redis", "mosquitto", "ingest", "alerts", "dashboard"):
        assert services[name]["depends_on"]["preflight"] == {"condition": "service_completed_successfully"}, name
    sim = services["simulate"]
    assert sim["depends_on"]["preflight-simulate"] == {"condition": "service_completed_successfully"}
    assert services["preflight-simulate"]["profiles"] == ["simulate"]
    assert services["preflight-simulate"]["command"] == ["MQTT_SIMULATE_PASSWORD"]


@pytest.mark.parametrize(("value", "ok"), [
    ("", False), ("short-1", False), ("change-me-long-random", False), ("CHANGEME-CHANGEME-1", False),
    ("my-password-is-long", False), ("secret-secret-secret", False),
    ("kP3v9XqL2mZt8RwY5nBc", True),
])
def test_check_secrets_refuses_placeholders(value: str, ok: bool) -> None:
    env = {"PATH": "/usr/bin:/bin", "REDIS_PASSWORD": value}
    out = subprocess.run(["sh", str(ROOT / "deploy/check-secrets.sh"), "REDIS_PASSWORD"], env=env,
                         capture_output=True, text=True, timeout=10)
    assert (out.returncode == 0) is ok, (value, out.stderr)
    assert value not in out.stderr or not value  # the refusal never echoes the secret


def test_env_example_has_no_usable_values() -> None:
    for line in (ROOT / "deploy/env.example").read_text().splitlines():
        if line.endswith("_PASSWORD=") or not line.strip() or line.startswith("#"):
            continue
        assert "PASSWORD" not in line.split("=", 1)[0], line


def test_caddy_sends_hsts() -> None:
    assert "Strict-Transport-Security" in (ROOT / "deploy/caddy/Caddyfile").read_text()


def test_compose_config_validates_with_env_overrides() -> None:
    cfg = load_config(str(ROOT / "config/compose.toml"),
                      env={"VITALWATCH_REDIS_URL": "redis://:pw@redis:6379/0", "VITALWATCH_MQTT_URL": "mqtt://mosquitto:1883"})
    assert cfg.redis.url == "redis://:pw@redis:6379/0"
    assert cfg.rooms and all(d.transport in ("serial", "mqtt") for _, d in cfg.devices())


def test_dockerfile_copies_every_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for pkg in ("monitor", "devices", "dashboard", "config"):
        assert f"COPY {pkg}" in text


def test_observability_profile_runs_prometheus_and_grafana_with_their_files() -> None:
    services = _compose()["services"]
    for name in ("prometheus", "grafana", "preflight-observability"):
        assert services[name]["profiles"] == ["observability"], name
    assert services["preflight-observability"]["command"] == ["GRAFANA_ADMIN_PASSWORD"]
    for name in ("prometheus", "grafana"):
        svc = services[name]
        assert svc["depends_on"]["preflight-observability"] == {"condition": "service_completed_successfully"}
        for port in svc["ports"]:
            assert port.startswith("127.0.0.1:"), port  # this host only
        for vol in svc["volumes"]:
            src = vol.split(":")[0]
            if src.startswith("./") and not src.endswith("metrics-token"):  # the token is the operator's
                assert (ROOT / src).exists(), src
    prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/vitalwatch.yml").read_text())
    mounted = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert prov["providers"][0]["options"]["path"] in mounted
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


def test_prometheus_scrapes_every_role_where_it_serves_metrics() -> None:
    services = _compose()["services"]
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    cfg = load_config(str(ROOT / "config/compose.toml"), env={})
    dash = build_parser().parse_args([*services["dashboard"]["command"], "-c", "config/compose.toml"])
    want = {"ingest": f"ingest:{cfg.metrics.ingest_port}", "alerts": f"alerts:{cfg.metrics.alerts_port}",
            "dashboard": f"dashboard:{dash.port}"}
    assert cfg.metrics.host == "0.0.0.0" and cfg.metrics.ingest_port and cfg.metrics.alerts_port
    for role, target in want.items():
        job = jobs[role]
        assert job["static_configs"][0]["targets"] == [target], role
        assert job.get("metrics_path", "/metrics") == "/metrics"
        # another container is not loopback: every scrape carries the metrics token
        assert job["authorization"]["credentials_file"] == "/etc/prometheus/metrics-token"
        assert role in services
    mounted = {v.split(":")[1] for v in services["prometheus"]["volumes"]}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/metrics-token"} <= mounted


def test_grafana_dashboard_uses_only_metrics_the_code_exports() -> None:
    """A renamed or removed metric fails here: every `vitalwatch_…` name in the dashboard's
    queries must be one the catalogue (monitor/observe/catalogue.py) — which the collectors
    are built from and tests/test_metrics.py scrapes — says is exported."""
    import json
    import re

    from monitor.observe.catalogue import SPECS, sample_names

    board = json.loads((ROOT / "deploy/grafana/dashboards/vitalwatch.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert exprs
    used = {m for e in exprs for m in re.findall(r"\bvitalwatch_[a-z0-9_]+", e)}
    assert used and used <= sample_names(), used - sample_names()
    for p in board["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "vitalwatch-prometheus", p["title"]
    # every metric family appears on the board
    shown = {s.name for s in SPECS if set(s.samples()) & used}
    assert shown == {s.name for s in SPECS}, {s.name for s in SPECS} - shown


def _ha() -> dict:
    return yaml.safe_load((ROOT / "deploy/compose-ha.yml").read_text())


def test_ha_profile_primary_replica_three_sentinels() -> None:
    ha, base = _ha()["services"], _compose()["services"]
    sentinels = [f"sentinel-{i}" for i in (1, 2, 3)]
    for name in ("redis-replica", *sentinels):
        assert ha[name]["profiles"] == ["ha"], name
    primary = ha["redis"]["command"]
    for word in ("--appendfsync always", "--requirepass", "--min-replicas-to-write 1"):
        assert word in primary and word in ha["redis-replica"]["command"], word
    assert "--replicaof redis 6379" in ha["redis-replica"]["command"]
    script = ha["sentinel-1"]["command"][-1]
    assert "sentinel monitor vitalwatch redis 6379 2" in script and "--sentinel" in script
    assert "auth-pass vitalwatch" in script and "requirepass" in script
    # every role that talks to Redis names the three Sentinels, and waits for a replica
    roles = [n for n, s in base.items() if "VITALWATCH_REDIS_URL" in s.get("environment", {})]
    assert {"ingest", "alerts", "dashboard"} <= set(roles)
    for role in roles:
        env = {**base[role]["environment"], **ha[role]["environment"]}
        cfg = load_config(str(ROOT / "config/compose.toml"),
                          env={k: v.replace("${REDIS_PASSWORD}", "pw") for k, v in env.items()})
        assert cfg.redis.url.startswith("redis+sentinel://:pw@"), role
        assert all(f"{s}:26379" in cfg.redis.url for s in sentinels), role
        assert cfg.redis.url.endswith("/vitalwatch/0") and cfg.redis.min_replicas == 1, role
    assert set(_ha()["volumes"]) >= {"redis-replica-data", *(f"{s}-data" for s in sentinels)}
