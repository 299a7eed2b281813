"""Who may read and write which MQTT topics, from the config (pure) — for Mosquitto and amqtt.

One broker user per device, allowed to publish only its own topic and status topic (exact
topics: no wildcard, so a device cannot publish as another room's); `vitalwatch-ingest`
reads the device topics; `vitalwatch-alerts` writes the outbound alerts topic;
`vitalwatch-simulate` (only when asked: the simulator profile) writes every device topic.
The same rules feed the production ACL file (`vitalwatch mqtt-acl`) and the embedded
broker. `mosquitto_hash` writes Mosquitto 2's PBKDF2-SHA512 password-file format.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from monitor.model.config import Config

INGEST_USER = "vitalwatch-ingest"
ALERTS_USER = "vitalwatch-alerts"
SIMULATE_USER = "vitalwatch-simulate"
SERVICE_USERS = (INGEST_USER, ALERTS_USER, SIMULATE_USER)
ROLE_USERS = {"ingest": INGEST_USER, "alerts": ALERTS_USER, "simulate": SIMULATE_USER}


@dataclass(frozen=True, slots=True)
class AclUser:
    """One broker account and the topic filters it may read (subscribe to) and write."""

    name: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


def device_topics(cfg: Config) -> dict[str, tuple[str, ...]]:
    """MQTT device id → the topics it publishes (data, and status when configured)."""
    return {d.id: tuple(t for t in (d.topic, d.status_topic) if t)
            for _r, d in cfg.devices() if d.transport == "mqtt" and d.topic}


def acl_users(cfg: Config, simulate: bool = False) -> list[AclUser]:
    """Every broker account the config needs, with its topics (ValueError when a device id
    is also a service account's name)."""
    devices = device_topics(cfg)
    clash = sorted(set(devices) & set(SERVICE_USERS))
    if clash:
        raise ValueError(f"device id(s) {', '.join(clash)} clash with VitalWatch's own MQTT accounts")
    all_topics = sorted({t for ts in devices.values() for t in ts})
    reads = set(cfg.mqtt.watch_topics or []) | {t.split("/", 1)[0] + "/#" for t in all_topics}
    group = cfg.mqtt.shared_group
    read = sorted(reads) + ([f"$share/{group}/{f}" for f in sorted(reads)] if group else [])
    alerts = cfg.mqtt.alerts_topic
    out = [AclUser(INGEST_USER, read=tuple(read)),
           AclUser(ALERTS_USER, write=(alerts, f"{alerts}/#"))]
    if simulate:
        out.append(AclUser(SIMULATE_USER, write=tuple(all_topics)))
    out += [AclUser(dev, write=topics) for dev, topics in sorted(devices.items())]
    return out


def mosquitto_acl(users: list[AclUser]) -> str:
    """A Mosquitto `acl_file` granting exactly `users` (anything not listed is refused)."""
    lines = ["# VitalWatch MQTT ACL — written by `vitalwatch mqtt-acl` from the config; do not edit by hand.",
             "# One user per device, publishing only its own topics (no wildcard room level).", ""]
    for u in users:
        lines.append(f"user {u.name}")
        lines += [f"topic read {t}" for t in u.read]
        lines += [f"topic write {t}" for t in u.write]
        lines.append("")
    return "\n".join(lines)


def amqtt_acl(users: list[AclUser]) -> dict[str, dict[str, list[str]]]:
    """The same rules as amqtt's TopicAccessControlListPlugin config (subscribe, publish)."""
    return {"acl": {u.name: list(u.read) for u in users if u.read},
            "publish_acl": {u.name: list(u.write) for u in users if u.write}}


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = 101) -> str:
    """A Mosquitto 2 password-file hash (`$7$`: PBKDF2-SHA512, as mosquitto_passwd writes)."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
