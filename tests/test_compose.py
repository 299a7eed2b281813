"""docker-compose.yml cannot run here (no Docker engine): check what can be checked —
it parses, names real services, each role's command is a real `vitalwatch` subcommand,
the config and files it mounts exist, and the config validates."""

from __future__ import annotations

from pathlib import Path

import yaml

from monitor.app.cli import build_parser
from monitor.model.config import load_config

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


def test_mosquitto_files_exist_and_acl_limits_devices() -> None:
    svc = _compose()["services"]["mosquitto"]
    for vol in svc["volumes"]:
        src = vol.split(":")[0]
        if src.startswith("./"):
            assert (ROOT / src).exists(), src
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "acl_file" in conf and "password_file" in conf
    acl = (ROOT / "deploy/mosquitto/acl").read_text()
    assert "pattern write vitalwatch/+/%u" in acl


def test_compose_config_validates_with_env_overrides() -> None:
    cfg = load_config(str(ROOT / "config/compose.toml"),
                      env={"VITALWATCH_REDIS_URL": "redis://:pw@redis:6379/0", "VITALWATCH_MQTT_URL": "mqtt://mosquitto:1883"})
    assert cfg.redis.url == "redis://:pw@redis:6379/0"
    assert cfg.rooms and all(d.transport in ("serial", "mqtt") for _, d in cfg.devices())


def test_dockerfile_copies_every_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for pkg in ("monitor", "devices", "dashboard", "config"):
        assert f"COPY {pkg}" in text
