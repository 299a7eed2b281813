"""The one way tests make a config: a mapping, parsed in-process or written as TOML for a
`vitalwatch` subprocess. Tests say only what their case needs; the rest is a small valid clinic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

from monitor.model.config import Config, parse_config


def serial_device(dev_id: str, protocol: str = "masimo-ascii", port: str | Path = "/dev/null", **extra: Any) -> dict[str, Any]:
    """A serial device entry (`port` may be a pty path or a `socket://` URL)."""
    return {"id": dev_id, "protocol": protocol, "transport": "serial", "port": str(port), **extra}


def mqtt_device(dev_id: str, protocol: str, topic: str, **extra: Any) -> dict[str, Any]:
    """An MQTT device entry."""
    return {"id": dev_id, "protocol": protocol, "transport": "mqtt", "topic": topic, **extra}


def room_entry(room_id: str, *devices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A room entry with its devices."""
    return {"id": room_id, **extra, "devices": list(devices)}


def alarm_rule(*, low: float | None = None, high: float | None = None, priority: str = "high",
               delay_s: float = 0, **extra: Any) -> dict[str, Any]:
    """One metric's alarm limits: high priority and no delay unless said (`extra`: hysteresis, …)."""
    bounds = {k: v for k, v in (("low", low), ("high", high)) if v is not None}
    return {**bounds, "priority": priority, "delay_s": delay_s, **extra}


def alarm_defaults(**rules: dict[str, Any]) -> dict[str, Any]:
    """An [alarms] section of clinic-wide defaults, one `alarm_rule` per metric:
    `alarms=alarm_defaults(spo2=alarm_rule(low=90))`."""
    return {"defaults": rules}


def config_mapping(clinic: str | dict[str, Any] = "test", *, rooms: list[dict[str, Any]] | None = None,
                   redis_url: str | None = None, mqtt_url: str | None = None, data_dir: str | Path | None = None,
                   archive_url: str | None = None, **sections: Any) -> dict[str, Any]:
    """A valid config mapping: `clinic` is an id or the whole [clinic] table; `rooms` default to
    one room with one serial oximeter on /dev/null; URLs and the data directory are set only
    when given. Other `sections` (alarms, alerts, dashboard, …) are added as given, and merged
    into [mqtt] / [archive] when those are set from a URL too."""
    data: dict[str, Any] = {"clinic": {"id": clinic, "name": "Test"} if isinstance(clinic, str) else clinic}
    if redis_url is not None:
        data["redis"] = {"url": redis_url}
    if mqtt_url is not None:
        data["mqtt"] = {"url": mqtt_url}
    if data_dir is not None:
        data["data"] = {"dir": str(data_dir)}
    if archive_url is not None:
        data["archive"] = {"url": archive_url}
    for name, section in sections.items():
        data[name] = {**data[name], **section} if isinstance(data.get(name), dict) else section
    data["rooms"] = rooms if rooms is not None else [room_entry("room-1", serial_device("oxi-1"))]
    return data


def parsed(data: dict[str, Any], source: str = "test.toml") -> Config:
    """The mapping validated as `vitalwatch` would validate the file."""
    return parse_config(data, source=source)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """The mapping as a TOML file (for subprocesses and `-c`); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(data))
    return path
