"""What an MQTT ingest process subscribes to and who it is (pure; no network).

- Routes: data topic → (room, device, protocol); status topic → device.
- Watch filters catch topics no device owns (→ rejects `unknown_topic`). Default: the first
  level of each device topic + "/#", but only when this process runs every MQTT device of
  the config (a process running a subset would take other processes' devices for unknown).
- Subscriptions are the smallest set covering data, status and watch topics: a topic already
  matched by a watch filter is not subscribed again (overlapping subscriptions make brokers
  deliver a message twice).
- With `mqtt.shared_group`, every filter is subscribed as `$share/<group>/<filter>`.
- The client id is stable across restarts (the persistent session is found again) and
  distinct per running copy: `mqtt.client_id`, or `vitalwatch-ingest-<clinic>-<hash of the
  subscription set>`; copy N>0 on the same data directory appends `-N` (see slot locks in
  mqtt_adapter). A changed subscription set gets a new id, so an old session's
  subscriptions never linger on it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from paho.mqtt.client import topic_matches_sub

from monitor.model.config import Config, DeviceConfig, RoomConfig

STATUS_WORDS = ("online", "offline")


@dataclass(frozen=True, slots=True)
class Route:
    """Where a device's messages go."""

    room: str
    device: str
    protocol: str
    topic: str
    status_topic: str | None = None


@dataclass(frozen=True)
class Plan:
    """Subscriptions and routing for one ingest process."""

    routes: dict[str, Route]  # data topic → route
    status_routes: dict[str, Route]  # status topic → route
    ignored: frozenset[str]  # topics owned by devices of other processes, our own outbound topic
    watch: tuple[str, ...]  # watch filters (without the $share prefix)
    filters: tuple[str, ...]  # what to subscribe (with the $share prefix when shared)
    client_id: str  # slot 0's client id


def plan_subscriptions(cfg: Config, devices: list[tuple[RoomConfig, DeviceConfig]]) -> Plan:
    """The subscription plan for running `devices` (MQTT ones) under `cfg`."""
    mine = [(r, d) for r, d in devices if d.transport == "mqtt"]
    routes = {d.topic: Route(r.id, d.id, d.protocol, d.topic, d.status_topic)
              for r, d in mine if d.topic}
    status_routes = {d.status_topic: routes[d.topic] for r, d in mine if d.status_topic and d.topic}
    every = [d for _r, d in cfg.devices() if d.transport == "mqtt"]
    all_selected = {d.id for d in every} == {d.id for _r, d in mine}
    others = {t for d in every if d.id not in {x.id for _r, x in mine}
              for t in (d.topic, d.status_topic) if t}
    own_topics = sorted(set(routes) | set(status_routes))
    if cfg.mqtt.watch_topics is not None:
        watch = tuple(cfg.mqtt.watch_topics)
    elif all_selected and own_topics:
        watch = tuple(sorted({t.split("/", 1)[0] + "/#" for t in own_topics}))
    else:
        watch = ()
    plain = list(watch) + [t for t in own_topics if not any(topic_matches_sub(w, t) for w in watch)]
    group = cfg.mqtt.shared_group
    filters = tuple(f"$share/{group}/{f}" if group else f for f in plain)
    ident = json.dumps({"filters": sorted(filters)}, sort_keys=True).encode()
    client_id = cfg.mqtt.client_id or (
        f"vitalwatch-ingest-{cfg.clinic.id}-{hashlib.sha256(ident).hexdigest()[:10]}")
    return Plan(routes, status_routes, frozenset(others | {cfg.mqtt.alerts_topic}),
                watch, filters, client_id)


def slot_client_id(base: str, slot: int) -> str:
    """The client id of running copy `slot` (0 keeps the base id)."""
    return base if slot == 0 else f"{base}-{slot}"


def parse_status(payload: bytes) -> str | None:
    """A status/last-will payload → "online" | "offline", or None if not understood.

    Accepts the words themselves (any case, surrounding space) or JSON {"state": "..."}.
    """
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if text.lower() in STATUS_WORDS:
        return text.lower()
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    state = obj.get("state") if isinstance(obj, dict) else None
    if isinstance(state, str) and state.lower() in STATUS_WORDS:
        return state.lower()
    return None
