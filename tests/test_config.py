"""Config validation: the shipped file is valid; each kind of bad file exits 2 naming the field."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.model.config import ConfigError, load_config, parse_config
from tests.configs import config_mapping

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_is_valid() -> None:
    cfg = load_config(str(ROOT / "config/vitalwatch.toml"), env={})
    assert len(cfg.rooms) == 4
    assert cfg.alarm_spec("room-1", "sbp").high == 170  # per-room override
    assert cfg.alarm_spec("room-2", "sbp").high == 180  # clinic default
    assert cfg.alarm_spec("room-1", "sbp").priority == "high"  # merged field by field


def _mqtt_dev(**kw: Any) -> dict[str, Any]:
    return {"id": "m1", "protocol": "json", "transport": "mqtt", "topic": "t/1", **kw}


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("unknown key", lambda d: d["clinic"].update(colour="blue"), "clinic.colour", "unknown key"),
    ("unknown top-level", lambda d: d.update(extras={}), "extras", "unknown key"),
    ("wrong type", lambda d: d["rooms"][0]["devices"][0].update(baudrate="9600"),
     "rooms[0].devices[0].baudrate", "wrong type"),
    ("wrong type bool", lambda d: d.update(redis={"retention_hours": "long"}), "redis.retention_hours", "wrong type"),
    ("duplicate room", lambda d: d["rooms"].append({"id": "room-1"}), "rooms[1].id", "duplicate"),
    ("duplicate device", lambda d: d["rooms"].append({"id": "room-2", "devices": [_mqtt_dev(id="oxi-1")]}),
     "rooms[1].devices[0].id", "duplicate"),
    ("unknown protocol", lambda d: d["rooms"][0]["devices"][0].update(protocol="philips-mib"),
     "rooms[0].devices[0].protocol", "unknown serial protocol"),
    ("unknown mqtt protocol", lambda d: d["rooms"][0]["devices"].append(_mqtt_dev(protocol="xml")),
     "rooms[0].devices[1].protocol", "unknown MQTT protocol"),
    ("serial without port", lambda d: d["rooms"][0]["devices"][0].pop("port"),
     "rooms[0].devices[0].port", "needs a port"),
    ("mqtt without topic", lambda d: d["rooms"][0]["devices"].append({"id": "m1", "protocol": "json", "transport": "mqtt"}),
     "rooms[0].devices[1].topic", "needs a topic"),
    ("low >= high", lambda d: d.update(alarms={"defaults": {"hr": {"low": 120, "high": 50}}}),
     "alarms.defaults.hr.low", "must be below"),
    ("low >= high after merge", lambda d: d.update(alarms={"rooms": {"room-1": {"sbp": {"low": 200}}}}),
     "alarms.rooms.room-1.sbp", "must be below"),
    ("unknown priority", lambda d: d.update(alarms={"defaults": {"spo2": {"priority": "urgent"}}}),
     "alarms.defaults.spo2.priority", "unknown priority"),
    ("unknown metric", lambda d: d.update(alarms={"defaults": {"glucose": {"low": 3}}}),
     "alarms.defaults.glucose", "unknown metric"),
    ("override for unknown room", lambda d: d.update(alarms={"rooms": {"room-9": {}}}),
     "alarms.rooms.room-9", "no room"),
    ("bad clinic id", lambda d: d["clinic"].update(id="Lone Rock"), "clinic.id", "pattern"),
    ("bad redis url", lambda d: d.update(redis={"url": "http://x"}), "redis.url", "redis://"),
    ("redis url bad port", lambda d: d.update(redis={"url": "redis://h:notaport"}), "redis.url", "bad port"),
    ("mqtt url bad port", lambda d: d.update(mqtt={"url": "mqtt://h:99999"}), "mqtt.url", "bad port '99999'"),
    ("missing clinic", lambda d: d.pop("clinic"), "clinic", "missing"),
    ("cycle on oximeter", lambda d: d["rooms"][0]["devices"][0].update(cycle_s=60),
     "rooms[0].devices[0].cycle_s", "cycle"),
    ("duplicate topic", lambda d: d["rooms"][0]["devices"].extend([_mqtt_dev(), _mqtt_dev(id="m2")]),
     "rooms", "share the MQTT topic"),
]


@pytest.mark.parametrize(("name", "mutate", "path", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_field(name: str, mutate: Callable[[dict[str, Any]], None], path: str, words: str) -> None:
    data = copy.deepcopy(config_mapping())
    mutate(data)
    with pytest.raises(ConfigError) as exc:
        parse_config(data, source="clinic.toml")
    assert exc.value.file == "clinic.toml"
    assert exc.value.path == path, str(exc.value)
    assert words in str(exc.value)


def test_env_overrides_urls(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[clinic]\nid = "c"\n')
    cfg = load_config(str(f), env={"VITALWATCH_REDIS_URL": "redis://h:1/0", "VITALWATCH_MQTT_URL": "mqtt://b:1883",
                                   "VITALWATCH_ARCHIVE_URL": "postgresql://x/y"})
    assert (cfg.redis.url, cfg.mqtt.url, cfg.archive.url) == ("redis://h:1/0", "mqtt://b:1883", "postgresql://x/y")


@pytest.mark.parametrize(("text", "words"), [
    ("[clinic\nid=", "not valid TOML"),
    ('[clinic]\nid = "c"\n[[rooms]]\nid = "r"\n[[rooms.devices]]\nid = "d"\nprotocol = "nonin-df7"\ntransport = "serial"\n',
     "rooms[0].devices[0].port: a serial device needs a port"),
])
def test_cli_exit_2_names_file_and_field(tmp_path: Path, text: str, words: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    res = subprocess.run([sys.executable, "-m", "monitor", "check-config", "-c", str(f)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2
    assert str(f) in res.stderr and words in res.stderr


def test_cli_missing_file_exit_2(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "monitor", "check-config", "-c", str(tmp_path / "nope.toml")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "cannot read" in res.stderr


def test_check_config_summary() -> None:
    res = subprocess.run([sys.executable, "-m", "monitor", "check-config", "-c", "config/vitalwatch.toml"],
                         capture_output=True, text=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert "4 room(s)" in res.stdout and "oxi-1" in res.stdout and "nonin-df7" in res.stdout


def test_usage_error_exit_2() -> None:
    res = subprocess.run([sys.executable, "-m", "monitor", "ingest", "--bogus"], capture_output=True, cwd=ROOT)
    assert res.returncode == 2
